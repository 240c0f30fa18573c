"""The client against independent servers and through the network's middle boxes.

* the ``websockets`` server (sync API, in a thread), with and without permessage-deflate;
* TLS: a CA made by ``trustme`` (a server certificate for localhost and 127.0.0.1), verified by
  the client; a certificate for another name is refused; the system CAs refuse it too;
* an HTTP CONNECT proxy (a small threaded one here), given or from ``https_proxy`` /
  ``http_proxy`` / ``no_proxy``; a SOCKS5 proxy through the optional ``python-socks`` (skipped
  when it is not installed);
* redirects (301/302/307/308, relative and absolute, loops, wss -> ws refused);
* IPv6 (``[::1]``, skipped without it) and host names.

Every server listens on 127.0.0.1 (or ::1) port 0 and is stopped by the test.
"""

from __future__ import annotations

import select
import socket
import ssl
import threading
import time

import pytest
from conftest import WAIT, Scripted
from test_client_hostile import RawServer, read_head, upgrade

import cowboy_ws
from cowboy_ws import client

websockets = pytest.importorskip("websockets", reason="websockets is in the test extra")
from websockets.sync.server import serve as ws_serve  # noqa: E402


@pytest.fixture
def websockets_server():
    """``start(compression=...)`` -> a websockets echo server on 127.0.0.1:0 (stopped at teardown)."""
    servers = []

    def echo(conn):
        try:
            for message in conn:
                if message == "close 4010":
                    conn.close(4010, "asked")
                    return
                conn.send(message)
        except websockets.exceptions.ConnectionClosed:
            pass

    def start(compression=None, **kwargs):
        server = ws_serve(echo, "127.0.0.1", 0, compression=compression, **kwargs)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        servers.append((server, thread))
        return server

    yield start
    for server, thread in servers:
        server.shutdown()
        thread.join(WAIT)


def port_of(server) -> int:
    return server.socket.getsockname()[1]


# -- the websockets server ------------------------------------------------------------------


@pytest.mark.parametrize("compression", [None, "deflate"])
def test_blocking_client_with_the_websockets_server(websockets_server, compression):
    server = websockets_server(compression=compression)
    url = f"ws://127.0.0.1:{port_of(server)}/"
    with client.connect(url, compress=compression is not None) as ws:
        assert bool(ws.extensions) == (compression is not None)
        for message in [("text", "héllo".encode()), ("binary", bytes(range(256)) * 300), ("text", b"")]:
            ws.send(message)
            assert ws.recv(WAIT) == message
        big = ("text", ("json " * 50_000).encode())
        ws.send(big)
        assert ws.recv(WAIT) == big
        ws.send(("text", "close 4010"))
        with pytest.raises(cowboy_ws.ConnectionClosed) as info:
            ws.recv(WAIT)
        assert (info.value.code, info.value.reason, info.value.side) == (4010, b"asked", "remote")


def test_handler_client_with_the_websockets_server(websockets_server):
    server = websockets_server(compression="deflate")
    done = threading.Event()
    seen: list = []

    class Counter:
        @staticmethod
        def websocket_init(n):
            return ("reply", [("text", str(i)) for i in range(100)], n)

        @staticmethod
        def websocket_handle(frame, n):
            seen.append(frame)
            if n + 1 == 100:
                return ("reply", ("close", 1000, b"enough"), n + 1)
            return ("ok", n + 1)

        websocket_info = staticmethod(lambda info, n: ("ok", n))
        terminate = staticmethod(lambda reason, req, n: (seen.append(("terminate", reason, n)), done.set()))

    client.start(f"ws://127.0.0.1:{port_of(server)}/", Counter, 0, {"compress": True})
    assert done.wait(WAIT)
    assert seen[:100] == [("text", str(i).encode()) for i in range(100)]
    assert seen[100] == ("terminate", "stop", 100)


def test_websockets_server_refusal(websockets_server):
    def refuse(conn, request):
        return conn.respond(418, "teapot\n")

    server = websockets_server(process_request=refuse)
    with pytest.raises(client.InvalidStatus) as info:
        client.connect(f"ws://127.0.0.1:{port_of(server)}/")
    assert info.value.status == 418 and info.value.body == b"teapot\n"


# -- TLS -----------------------------------------------------------------------------------


@pytest.fixture
def ca():
    trustme = pytest.importorskip("trustme", reason="trustme is in the test extra")
    return trustme.CA()


def tls_server(app, ca, *names):
    cert = ca.issue_cert(*names)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(context)
    return app(ssl_context=context)


def client_context(ca) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


def test_wss_verified_with_sni_and_hostname(app, ca, rec):
    server = tls_server(app, ca, "localhost", "127.0.0.1")
    seen_sni: list = []
    context = server.ssl_context
    context.sni_callback = lambda sock, name, ctx: seen_sni.append(name)
    with client.connect(f"wss://localhost:{server.port}/ws", ssl=client_context(ca)) as ws:
        ws.send(("text", b"over tls"))
        assert ws.recv(WAIT) == ("text", b"over tls")
        big = ("binary", b"z" * 300_000)
        ws.send(big)
        assert ws.recv(WAIT) == big
    assert seen_sni == ["localhost"]
    with client.connect(f"wss://127.0.0.1:{server.port}/ws", ssl=client_context(ca)) as ws:  # an IP SAN
        ws.send("ip")
        assert ws.recv(WAIT) == ("text", b"ip")
    rec.wait_until(lambda: len(rec.terminates) == 2, what="both server connections to end")
    assert [t[0][0] for t in rec.terminates.values()] == [("remote", 1000, b"")] * 2


def test_wss_hostname_mismatch_is_refused(app, ca):
    server = tls_server(app, ca, "other.example")
    with pytest.raises(ssl.SSLCertVerificationError, match=r"match|mismatch"):
        client.connect(f"wss://localhost:{server.port}/ws", ssl=client_context(ca))


def test_wss_unknown_ca_is_refused_by_default(app, ca):
    server = tls_server(app, ca, "localhost")
    with pytest.raises(ssl.SSLCertVerificationError):
        client.connect(f"wss://localhost:{server.port}/ws", proxy=None)  # the system CAs do not know it


def test_wss_handler_api_and_tls_failure_reason(app, ca):
    server = tls_server(app, ca, "localhost")
    results: list = []
    done = threading.Event()

    class H:
        websocket_init = staticmethod(lambda s: ("reply", ("text", b"tls"), s))
        websocket_handle = staticmethod(lambda f, s: (results.append(f), ("stop", s))[1])
        websocket_info = staticmethod(lambda i, s: ("ok", s))
        terminate = staticmethod(lambda r, req, s: (results.append(r), done.set()))

    client.start(f"wss://localhost:{server.port}/ws", H, None, {"ssl": client_context(ca)})
    assert done.wait(WAIT)
    assert results == [("text", b"tls"), "stop"]
    done.clear()
    results.clear()
    client.start(f"wss://localhost:{server.port}/ws", H, None, {})  # system CAs: refused
    assert done.wait(WAIT)
    assert results == [("error", "tls")]


# -- proxies -------------------------------------------------------------------------------


class ConnectProxy:
    """A small threaded HTTP CONNECT proxy (RFC 9110 §9.3.6) on 127.0.0.1:0 that records each request."""

    def __init__(self, refuse: int | None = None) -> None:
        self.refuse = refuse
        self.requests: list[dict] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._threads: list[threading.Thread] = []
        self._stop = False
        accept = threading.Thread(target=self._accept, daemon=True)
        accept.start()
        self._threads.append(accept)

    def _accept(self) -> None:
        self.listener.settimeout(0.1)
        while not self._stop:
            try:
                sock, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(sock,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self, sock: socket.socket) -> None:
        with sock:
            headers, rest = read_head(sock)
            self.requests.append(headers)
            _method, target, _ = headers[":request"].split(" ")
            if self.refuse:
                sock.sendall(f"HTTP/1.1 {self.refuse} Nope\r\nContent-Length: 0\r\n\r\n".encode())
                return
            host, _, port = target.rpartition(":")
            try:
                upstream = socket.create_connection((host.strip("[]"), int(port)), timeout=WAIT)
            except OSError:
                sock.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
                return
            with upstream:
                sock.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                if rest:
                    upstream.sendall(rest)
                self._relay(sock, upstream)

    def _relay(self, a: socket.socket, b: socket.socket) -> None:
        deadline = time.monotonic() + 30
        while not self._stop and time.monotonic() < deadline:
            readable, _, _ = select.select([a, b], [], [], 0.1)
            for src in readable:
                dst = b if src is a else a
                try:
                    data = src.recv(65536)
                except OSError:
                    return
                if not data:
                    try:
                        dst.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
                    return
                dst.sendall(data)

    def close(self) -> None:
        self._stop = True
        self.listener.close()
        for thread in self._threads:
            thread.join(WAIT)


@pytest.fixture
def proxy():
    proxies: list[ConnectProxy] = []

    def start(**kwargs) -> ConnectProxy:
        p = ConnectProxy(**kwargs)
        proxies.append(p)
        return p

    yield start
    for p in proxies:
        p.close()


def test_connect_proxy_ws_and_wss(app, ca, proxy):
    plain = app()
    p = proxy()
    with client.connect(f"ws://127.0.0.1:{plain.port}/ws", proxy=p.url) as ws:
        ws.send("through the proxy")
        assert ws.recv(WAIT) == ("text", b"through the proxy")
    assert p.requests[0][":request"] == f"CONNECT 127.0.0.1:{plain.port} HTTP/1.1"
    secure = tls_server(app, ca, "localhost")
    with client.connect(f"wss://localhost:{secure.port}/ws", proxy=p.url, ssl=client_context(ca)) as ws:
        ws.send("tls in the tunnel")
        assert ws.recv(WAIT) == ("text", b"tls in the tunnel")
    assert p.requests[1][":request"] == f"CONNECT localhost:{secure.port} HTTP/1.1"


def test_proxy_credentials_and_refusal(app, proxy):
    server = app()
    p = proxy(refuse=407)
    with pytest.raises(client.ProxyError, match="407"):
        client.connect(f"ws://127.0.0.1:{server.port}/ws", proxy=f"http://user:p%40ss@127.0.0.1:{p.port}")
    assert p.requests[0]["proxy-authorization"] == "Basic dXNlcjpwQHNz"  # user:p@ss


def test_proxy_from_the_environment_and_no_proxy(app, proxy, monkeypatch):
    server = app()
    p = proxy()
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY",
                 "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("http_proxy", p.url)
    with client.connect(f"ws://127.0.0.1:{server.port}/ws") as ws:
        ws.send("env")
        assert ws.recv(WAIT) == ("text", b"env")
    assert len(p.requests) == 1
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    with client.connect(f"ws://127.0.0.1:{server.port}/ws") as ws:
        ws.send("direct")
        assert ws.recv(WAIT) == ("text", b"direct")
    assert len(p.requests) == 1  # bypassed
    monkeypatch.delenv("no_proxy")
    with client.connect(f"ws://127.0.0.1:{server.port}/ws", proxy=None) as ws:  # proxy=None: none
        ws.send("none")
        assert ws.recv(WAIT) == ("text", b"none")
    assert len(p.requests) == 1
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:1")  # wss uses https_proxy, ws does not
    with client.connect(f"ws://127.0.0.1:{server.port}/ws") as ws:
        ws.send("http_proxy for ws")
        assert ws.recv(WAIT) == ("text", b"http_proxy for ws")
    assert len(p.requests) == 2


def test_handler_api_through_a_proxy(app, proxy):
    server = app()
    p = proxy()
    done = threading.Event()
    got: list = []

    class H:
        websocket_init = staticmethod(lambda s: ("reply", ("text", b"via proxy"), s))
        websocket_handle = staticmethod(lambda f, s: (got.append(f), ("stop", s))[1])
        websocket_info = staticmethod(lambda i, s: ("ok", s))
        terminate = staticmethod(lambda r, req, s: (got.append(r), done.set()))

    client.start(f"ws://127.0.0.1:{server.port}/ws", H, None, {"proxy": p.url})
    assert done.wait(WAIT)
    assert got == [("text", b"via proxy"), "stop"] and len(p.requests) == 1


class Socks5Proxy:
    """A minimal SOCKS5 proxy (RFC 1928: no authentication, CONNECT only) on 127.0.0.1:0."""

    def __init__(self) -> None:
        self.targets: list = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._stop = False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        self.listener.settimeout(0.1)
        while not self._stop:
            try:
                sock, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    @staticmethod
    def _exact(sock: socket.socket, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("short read")
            data += chunk
        return data

    def _serve(self, sock: socket.socket) -> None:
        with sock:
            sock.settimeout(WAIT)
            _ver, n = self._exact(sock, 2)
            self._exact(sock, n)
            sock.sendall(b"\x05\x00")
            _ver, _cmd, _rsv, atyp = self._exact(sock, 4)
            if atyp == 1:
                host = socket.inet_ntoa(self._exact(sock, 4))
            elif atyp == 3:
                host = self._exact(sock, self._exact(sock, 1)[0]).decode()
            else:
                host = socket.inet_ntop(socket.AF_INET6, self._exact(sock, 16))
            port = int.from_bytes(self._exact(sock, 2), "big")
            self.targets.append((host, port))
            with socket.create_connection((host, port), timeout=WAIT) as upstream:
                sock.sendall(b"\x05\x00\x00\x01" + socket.inet_aton("127.0.0.1") + b"\x00\x00")
                ConnectProxy._relay(self, sock, upstream)  # type: ignore[arg-type]

    def close(self) -> None:
        self._stop = True
        self.listener.close()
        self._thread.join(WAIT)


@pytest.mark.parametrize("scheme, host", [("socks5h", "localhost"), ("socks5", "127.0.0.1")])
def test_socks5_proxy_through_python_socks(app, scheme, host):
    """Needs the optional python-socks (the ``socks`` extra); skipped without it."""
    pytest.importorskip("python_socks", reason="python-socks is the optional socks extra")
    server = app()
    socks = Socks5Proxy()
    try:
        with client.connect(f"ws://{host}:{server.port}/ws", proxy=f"{scheme}://127.0.0.1:{socks.port}") as ws:
            ws.send("socks")
            assert ws.recv(WAIT) == ("text", b"socks")
        assert socks.targets == [(host, server.port)]  # socks5h: the proxy resolves the name
    finally:
        socks.close()


def test_unsupported_proxy_scheme(app):
    server = app()
    with pytest.raises(client.ProxyError, match="unsupported proxy scheme"):
        client.connect(f"ws://127.0.0.1:{server.port}/ws", proxy="ftp://127.0.0.1:21")


# -- redirects -----------------------------------------------------------------------------


def redirector(raw, status: int, location) -> RawServer:
    """Answers every upgrade with ``status`` and ``Location: location(headers)``."""

    def script(sock, headers):
        target = location(headers) if callable(location) else location
        sock.sendall(f"HTTP/1.1 {status} Moved\r\nLocation: {target}\r\nContent-Length: 0\r\n\r\n".encode())
        return headers[":request"]

    return raw(script)


@pytest.fixture
def raw():
    servers: list[RawServer] = []

    def start(script, **kwargs) -> RawServer:
        server = RawServer(script, **kwargs)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirect_is_followed(app, raw, status):
    server = app()
    hop = redirector(raw, status, f"ws://127.0.0.1:{server.port}/ws?from=redirect")
    with client.connect(hop.url) as ws:
        assert ws.url == f"ws://127.0.0.1:{server.port}/ws?from=redirect"
        ws.send("redirected")
        assert ws.recv(WAIT) == ("text", b"redirected")


def test_relative_and_http_scheme_locations(serve, rec, raw):
    server = serve([("/final", Scripted, {"rec": rec}), ("/start", Scripted, {"rec": rec})])
    hop2 = redirector(raw, 307, f"http://127.0.0.1:{server.port}/final")  # http: means ws:
    hop1 = redirector(raw, 308, lambda headers: f"ws://127.0.0.1:{hop2.port}/ignored")
    with client.connect(hop1.url) as ws:
        assert ws.url == f"ws://127.0.0.1:{server.port}/final"
    rel = redirector(raw, 301, "/elsewhere")
    with pytest.raises(client.InvalidHandshake, match="redirects"):  # relative: back to itself, a loop
        client.connect(rel.url, max_redirects=2)
    assert rel.results == ["GET /ws HTTP/1.1", "GET /elsewhere HTTP/1.1", "GET /elsewhere HTTP/1.1"]


def test_redirect_limit_and_no_downgrade(app, raw, ca):
    server = app()
    hop = redirector(raw, 302, f"ws://127.0.0.1:{server.port}/ws")
    with pytest.raises(client.InvalidHandshake, match="more than 0 redirects"):
        client.connect(hop.url, max_redirects=0)
    secure = tls_server(app, ca, "localhost")
    # a wss server that redirects to ws: refused (never from wss to ws)

    def init(req, state):
        req.reply(301, {"location": f"ws://127.0.0.1:{server.port}/ws"}, b"")
        return ("ok", req, state)

    del secure
    cert = ca.issue_cert("localhost")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(context)
    down = app(ssl_context=context, init=init, path="/down")
    with pytest.raises(client.InvalidHandshake, match="wss:// to ws://"):
        client.connect(f"wss://localhost:{down.port}/down", ssl=client_context(ca))


def test_redirect_without_location(raw):
    server = raw(lambda sock, headers: sock.sendall(b"HTTP/1.1 302 Found\r\nContent-Length: 0\r\n\r\n"))
    with pytest.raises(client.InvalidHandshake, match="Location"):
        client.connect(server.url)


# -- addresses -----------------------------------------------------------------------------


def test_host_name_and_ipv4(app):
    server = app()
    with client.connect(f"ws://localhost:{server.port}/ws", proxy=None) as ws:
        ws.send("by name")
        assert ws.recv(WAIT) == ("text", b"by name")


def test_ipv6(serve, rec):
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback")
    server = serve([("/ws", Scripted, {"rec": rec})], host="::1")
    with client.connect(f"ws://[::1]:{server.port}/ws", proxy=None) as ws:
        ws.send("v6")
        assert ws.recv(WAIT) == ("text", b"v6")
        assert ws.remote_address[0] == "::1"
    headers = rec.called("websocket_init")
    assert headers


def test_upgrade_handshake_headers(raw):
    def script(sock, headers):
        upgrade(sock, headers)
        return headers

    server = raw(script)
    with client.connect(f"ws://user:secret@127.0.0.1:{server.port}/p%20q?x=1", origin="https://o.example",
                        headers=[("X-One", "1")], subprotocols=[]):
        pass
    headers = server.results[0] if server.results else None
    assert server.done.wait(WAIT)
    headers = server.results[0]
    assert headers[":request"] == "GET /p%20q?x=1 HTTP/1.1"
    assert headers["host"] == f"127.0.0.1:{server.port}"
    assert headers["origin"] == "https://o.example" and headers["x-one"] == "1"
    assert headers["authorization"] == "Basic dXNlcjpzZWNyZXQ="
    assert headers["sec-websocket-version"] == "13" and "sec-websocket-extensions" not in headers
    assert headers["user-agent"].startswith("cowboy_ws/")
