"""Shared fixtures for the runtime tests: real servers on 127.0.0.1:0, a scriptable handler, clients.

* ``rec``: a :class:`Recorder` (thread-safe) that the scriptable handler writes to:
  every callback call, every ``terminate`` reason, each connection's Pid.  At
  teardown, after the servers stopped, it checks that every connection that went
  through ``init`` got ``terminate`` exactly once.
* ``serve(routes, **server_kwargs)``: starts a :class:`cowboy_ws.Server` on a
  thread (port 0); teardown closes the test's clients then shuts the server down.
* ``app(**script)``: ``serve`` with the :class:`Scripted` handler on ``/ws``;
  ``script`` holds callables that replace the default callbacks (see Scripted).
* ``connect(server, path="/ws", **kw)``: a :class:`tests.wsclient.Client`,
  aborted at teardown.
* ``Echo``: the minimal handler (echoes every frame), for a test to subclass.
* ``tls``: (server, client) SSL contexts around a self-signed certificate made
  for the test (``cryptography``, else the ``openssl`` command; skipped if neither).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import ssl
import subprocess
import sys
import threading
import time
from typing import Any, Callable

import pytest

sys.path.insert(0, os.path.dirname(__file__))

import cowboy_ws  # noqa: E402
from wsclient import Client  # noqa: E402

WAIT = 5.0


class Recorder:
    """What the handler saw, written from the server thread, read from the test thread."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.inits = 0                                   # connections that went through init
        self.calls: list[tuple[int, str, Any]] = []      # (conn, callback, argument)
        self.terminates: dict[int, list[tuple]] = {}     # conn -> [(reason, partial_req, state)]
        self.pids: dict[int, Any] = {}                   # conn -> Pid (from websocket_init)

    def new_conn(self) -> int:
        with self._cond:
            conn = self.inits
            self.inits += 1
            return conn

    def record(self, conn: int, name: str, arg: Any) -> None:
        with self._cond:
            self.calls.append((conn, name, arg))
            if name == "websocket_init":
                self.pids[conn] = arg
            elif name == "terminate":
                self.terminates.setdefault(conn, []).append(arg)
            self._cond.notify_all()

    def wait_until(self, predicate: Callable[[], bool], timeout: float = WAIT, what: str = "condition") -> None:
        with self._cond:
            if not self._cond.wait_for(predicate, timeout):
                raise AssertionError(f"timed out after {timeout}s waiting for {what}; calls: {self.calls!r}")

    def pid(self, conn: int = 0, timeout: float = WAIT) -> cowboy_ws.Pid:
        self.wait_until(lambda: conn in self.pids, timeout, f"the Pid of connection {conn}")
        return self.pids[conn]

    def terminate(self, conn: int = 0, timeout: float = WAIT) -> tuple:
        """Wait for connection ``conn``'s terminate call; return (reason, partial_req, state)."""
        self.wait_until(lambda: conn in self.terminates, timeout, f"terminate of connection {conn}")
        return self.terminates[conn][0]

    def reason(self, conn: int = 0, timeout: float = WAIT) -> Any:
        return self.terminate(conn, timeout)[0]

    def called(self, name: str, conn: int | None = None) -> list[Any]:
        with self._cond:
            return [arg for c, n, arg in self.calls if n == name and (conn is None or c == conn)]

    def check_terminated_once(self) -> None:
        with self._cond:
            for conn in range(self.inits):
                calls = self.terminates.get(conn, [])
                assert len(calls) == 1, f"connection {conn}: terminate called {len(calls)} times: {calls!r}"


class Scripted:
    """A handler whose callbacks can be replaced per test through the route state.

    The route state is a dict: ``rec`` (a Recorder), optionally ``init`` /
    ``ws_init`` / ``handle`` / ``info`` callables that replace the defaults below,
    and ``opts`` (the fourth element of init's result).  ``init`` copies the dict
    per connection and adds ``conn`` (0, 1, ... in init order).

    Defaults: ``websocket_init`` -> ok; ``websocket_handle`` echoes text/binary,
    answers text ``state?`` with the state's ``mark`` and ignores the rest;
    ``websocket_info`` calls a callable message with the state (so a test can
    drive any result through ``pid.send(lambda s: ...)``) and ignores the rest.
    """

    @staticmethod
    def init(req, state):
        state = dict(state, conn=state["rec"].new_conn())
        custom = state.get("init")
        if custom is not None:
            return custom(req, state)
        if "opts" in state:
            return ("cowboy_websocket", req, state, state["opts"])
        return ("cowboy_websocket", req, state)

    @staticmethod
    def websocket_init(state):
        state["rec"].record(state["conn"], "websocket_init", cowboy_ws.self())
        custom = state.get("ws_init")
        return custom(state) if custom is not None else ("ok", state)

    @staticmethod
    def websocket_handle(frame, state):
        state["rec"].record(state["conn"], "websocket_handle", frame)
        custom = state.get("handle")
        if custom is not None:
            return custom(frame, state)
        return default_handle(frame, state)

    @staticmethod
    def websocket_info(info, state):
        state["rec"].record(state["conn"], "websocket_info", info)
        custom = state.get("info")
        if custom is not None:
            return custom(info, state)
        if callable(info):
            return info(state)
        return ("ok", state)

    @staticmethod
    def terminate(reason, partial_req, state):
        rec = state["rec"]
        # after init raised, terminate gets the route's state (no "conn"): the latest connection
        conn = state["conn"] if "conn" in state else rec.inits - 1
        rec.record(conn, "terminate", (reason, partial_req, state))


class Echo:
    """The minimal handler: replies with every frame it is given; subclass it to change the rest."""

    @staticmethod
    def init(req, state):
        return ("cowboy_websocket", req, state)

    @staticmethod
    def websocket_handle(frame, state):
        return ("reply", frame, state)

    @staticmethod
    def websocket_info(info, state):
        return ("ok", state)


def default_handle(frame, state):
    """Echo text and binary; ``state?`` answers the state's ``mark``."""
    if frame == ("text", b"state?"):
        return ("reply", ("text", str(state.get("mark"))), state)
    if frame[0] in ("text", "binary"):
        return ("reply", frame, state)
    return ("ok", state)


@pytest.fixture
def rec():
    recorder = Recorder()
    yield recorder
    recorder.check_terminated_once()


@pytest.fixture
def serve(rec):
    servers: list[cowboy_ws.Server] = []

    def start(routes, **kwargs) -> cowboy_ws.Server:
        kwargs.setdefault("host", "127.0.0.1")
        kwargs.setdefault("port", 0)
        server = cowboy_ws.Server(routes, **kwargs).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown(grace=0.5)
        assert server._stopped.wait(WAIT), "server did not stop"


@pytest.fixture
def app(serve, rec):
    """``app(ws_options=..., ssl_context=..., **script)`` -> a running server with Scripted on /ws."""

    def start(*, ws_options=None, ssl_context=None, path="/ws", **script) -> cowboy_ws.Server:
        return serve([(path, Scripted, dict(script, rec=rec))], ws_options=ws_options, ssl_context=ssl_context)

    return start


@pytest.fixture
def connect(serve):
    clients: list[Client] = []

    def open_client(server: cowboy_ws.Server, path: str = "/ws", **kwargs) -> Client:
        client = Client.connect(server.port, path, **kwargs)
        clients.append(client)
        return client

    yield open_client
    for client in clients:
        client.abort()


def server_processes(server) -> list:
    """The server's WebSocketProcesses, read on its loop's thread (bounded wait)."""
    from cowboy_ws.websocket import WebSocketProcess

    box: list = []
    done = threading.Event()

    def look() -> None:
        box.extend(c for c in server.connections if isinstance(c, WebSocketProcess))
        done.set()

    server.loop.call_soon_threadsafe(look)
    assert done.wait(WAIT)
    return box


def wait_for(predicate: Callable[[], bool], timeout: float = WAIT, what: str = "condition") -> None:
    """Poll ``predicate`` (for state that has no Recorder to wait on)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


# -- TLS ---------------------------------------------------------------------------------


def make_certificate(tmp_path):
    """A self-signed certificate for localhost / 127.0.0.1: (cert path, key path)."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:
        if shutil.which("openssl") is None:
            pytest.skip("neither the cryptography package nor openssl is available")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-days", "2",
                        "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True, timeout=60)
        return cert, key
    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(private, hashes.SHA256())
    )
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    return cert, key


@pytest.fixture
def tls(tmp_path):
    """(server context, client context) around a fresh self-signed certificate."""
    cert, key = make_certificate(tmp_path)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(cert))
    return server_ctx, client_ctx
