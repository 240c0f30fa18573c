"""Opening a client connection, blocking, within one deadline (RFC 6455 §4.1).

:func:`open_connection` resolves the host, connects TCP (directly, through an HTTP CONNECT
proxy, or through SOCKS with the optional ``python-socks``), sets up TLS for ``wss://``
(verified by default: the system CAs of ``ssl.create_default_context()``, SNI, hostname
check), sends the upgrade request, reads and checks the answer, follows redirects (301, 302,
303, 307, 308, at most ``max_redirects``, never from ``wss`` to ``ws``) and negotiates
permessage-deflate (RFC 7692 §5).  It returns an :class:`Opened` whose socket the runtime then
runs on its loop, with the bytes that followed the 101 answer (they may already be frames).

Everything it does is bounded by ``open_timeout``; the one exception is the system resolver
(``getaddrinfo`` cannot be interrupted).  It runs on the caller's thread (the blocking API) or
on a short-lived helper thread (the handler API), never on a loop.
"""

from __future__ import annotations

import base64
import ipaddress
import logging
import socket
import ssl
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from ..protocol import deflate as pmd
from ..protocol import handshake
from ..protocol.errors import HandshakeError, UsageError
from .errors import InvalidHandshake, InvalidStatus, InvalidURI, OpenTimeout, ProxyError
from .options import ENV_PROXY, ClientOptions

log = logging.getLogger(__name__)

__all__ = ["Opened", "WsURL", "parse_url", "open_connection", "resolve_proxy", "REDIRECTS"]

#: Statuses that redirect the upgrade (RFC 9110 §15.4), followed up to ``max_redirects``.
REDIRECTS = frozenset((301, 302, 303, 307, 308))
#: Bytes of a refused answer's body kept for :class:`InvalidStatus` (the rest is not read).
MAX_BODY = 65536
#: A refused answer's body is read at most this long (s), within what is left of open_timeout.
BODY_TIMEOUT = 1.0
USER_AGENT = None  # set below from the package version


@dataclass(frozen=True)
class WsURL:
    """A parsed ``ws://`` / ``wss://`` URL (RFC 6455 §3)."""

    secure: bool
    host: str            # no brackets around IPv6; IDNA-encoded (ASCII)
    port: int
    resource: str        # path and query: the request target (§3 "resource-name")
    user: str | None = None
    password: str | None = None

    @property
    def host_header(self) -> str:
        """The Host header: brackets around IPv6, the port unless it is the scheme's default (§4.1 item 4)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.secure else 80
        return host if self.port == default else f"{host}:{self.port}"

    def __str__(self) -> str:
        return f"{'wss' if self.secure else 'ws'}://{self.host_header}{self.resource}"


def parse_url(url: str) -> WsURL:
    """Parse and check a WebSocket URL (RFC 6455 §3): ws or wss, a host, no fragment.

    ``http://`` and ``https://`` are accepted as ``ws://`` and ``wss://`` (a redirect's
    Location usually has them).  Raises :class:`InvalidURI` saying what is wrong.
    """
    if not isinstance(url, str):
        raise InvalidURI(f"a WebSocket URL is a str, not {type(url).__name__}")
    try:
        parts = urllib.parse.urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise InvalidURI(f"{url!r} is not a valid URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("ws", "wss", "http", "https"):
        raise InvalidURI(f"{url!r} is not a WebSocket URL: the scheme must be ws:// or wss:// (RFC 6455 §3)")
    if parts.fragment or url.rstrip().endswith("#"):
        raise InvalidURI(f"{url!r}: a WebSocket URL has no fragment (RFC 6455 §3)")
    host = parts.hostname
    if not host:
        raise InvalidURI(f"{url!r} has no host")
    try:
        host = host.encode("idna").decode("ascii") if not _is_ip(host) else host
    except UnicodeError as exc:
        raise InvalidURI(f"{url!r}: host {host!r} cannot be encoded (IDNA): {exc}") from None
    secure = scheme in ("wss", "https")
    resource = parts.path or "/"
    if parts.query:
        resource += "?" + parts.query
    resource = urllib.parse.quote(resource, safe="/?&=%:@!$'()*+,;~-._[]")  # non-ASCII in the path
    user = urllib.parse.unquote(parts.username) if parts.username is not None else None
    password = urllib.parse.unquote(parts.password) if parts.password is not None else None
    return WsURL(secure, host, port or (443 if secure else 80), resource, user, password)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@dataclass
class Opened:
    """An upgraded socket, ready for the loop (blocking, no timeout set yet)."""

    sock: socket.socket
    rest: bytes                        # bytes after the 101 answer: frames already
    url: WsURL                         # the URL that answered 101 (after redirects)
    response: handshake.Response
    subprotocol: str | None
    extensions: list                   # parsed Sec-WebSocket-Extensions of the answer
    deflate: Any                       # PerMessageDeflate or None


# -- TLS --------------------------------------------------------------------------------------

_default_context: ssl.SSLContext | None = None
_context_lock = threading.Lock()


def default_ssl_context() -> ssl.SSLContext:
    """``ssl.create_default_context()`` (system CAs, CERT_REQUIRED, hostname check), made once."""
    global _default_context
    with _context_lock:
        if _default_context is None:
            _default_context = ssl.create_default_context()
        return _default_context


# -- proxies ----------------------------------------------------------------------------------


def resolve_proxy(url: WsURL, proxy: Any) -> str | None:
    """The proxy URL to use for ``url``: ``proxy`` itself, None, or with the default (ENV_PROXY) the
    environment's ``https_proxy`` (wss) / ``http_proxy`` (ws), unless ``no_proxy`` lists the host."""
    if proxy is None:
        return None
    if proxy is not ENV_PROXY:
        return str(proxy)
    proxies = urllib.request.getproxies_environment()
    chosen = proxies.get("https" if url.secure else "http") or proxies.get("all")
    if not chosen:
        return None
    bypass = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]  # not in typeshed
    if bypass(url.host, proxies) or bypass(f"{url.host}:{url.port}", proxies):
        return None
    return chosen


def _connect_tcp(host: str, port: int, deadline: float) -> socket.socket:
    left = deadline - time.monotonic()
    if left <= 0:
        raise OpenTimeout(f"could not connect to {host}:{port} within the open timeout")
    try:
        sock = socket.create_connection((host, port), timeout=left)
    except TimeoutError:
        raise OpenTimeout(f"TCP connection to {host}:{port} not established within the open timeout") from None
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        pass
    return sock


def _settimeout(sock: socket.socket, deadline: float, what: str) -> None:
    left = deadline - time.monotonic()
    if left <= 0:
        raise OpenTimeout(f"{what}: open timeout")
    sock.settimeout(left)


def _read_head(sock: socket.socket, deadline: float, what: str) -> tuple[handshake.Response, bytes]:
    """Read an HTTP response head (bounded by the head limits and the deadline); return it and what followed."""
    buf = bytearray()
    while True:
        try:
            parsed = handshake.parse_response_head(buf)
        except HandshakeError as exc:
            raise InvalidHandshake(f"{what}: malformed HTTP response: {exc}") from None
        if parsed is not None:
            resp, used = parsed
            return resp, bytes(buf[used:])
        _settimeout(sock, deadline, f"{what}: no complete response")
        try:
            data = sock.recv(65536)
        except TimeoutError:
            raise OpenTimeout(f"{what}: no complete HTTP response within the open timeout "
                              f"({len(buf)} bytes received)") from None
        if not data:
            raise InvalidHandshake(f"{what}: the connection closed before a complete HTTP response "
                                   f"({len(buf)} bytes received)")
        buf += data


def _tunnel_http(proxy: urllib.parse.SplitResult, url: WsURL, deadline: float) -> socket.socket:
    """HTTP CONNECT through ``proxy`` (RFC 9110 §9.3.6); Basic credentials from the proxy URL."""
    if proxy.scheme.lower() == "https":
        raise ProxyError("https:// proxies (TLS to the proxy) are not supported; use an http:// proxy URL")
    host = proxy.hostname
    if not host:
        raise ProxyError(f"proxy URL {proxy.geturl()!r} has no host")
    sock = _connect_tcp(host, proxy.port or 8080, deadline)
    try:
        target = f"[{url.host}]:{url.port}" if ":" in url.host else f"{url.host}:{url.port}"
        lines = [f"CONNECT {target} HTTP/1.1", f"Host: {target}"]
        if proxy.username is not None:
            creds = f"{urllib.parse.unquote(proxy.username)}:{urllib.parse.unquote(proxy.password or '')}"
            lines.append("Proxy-Authorization: Basic " + base64.b64encode(creds.encode()).decode("ascii"))
        sock.settimeout(max(0.001, deadline - time.monotonic()))
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        resp, rest = _read_head(sock, deadline, f"proxy {host}")
        if not 200 <= resp.status < 300:
            raise ProxyError(f"proxy {host}:{proxy.port or 8080} refused CONNECT {target}: {resp.status} {resp.reason}")
        if rest:
            raise ProxyError(f"proxy {host} sent {len(rest)} bytes after its CONNECT answer")
    except BaseException:
        sock.close()
        raise
    return sock


def _tunnel_socks(proxy: urllib.parse.SplitResult, url: WsURL, deadline: float) -> socket.socket:
    """SOCKS through ``python-socks`` (an optional dependency: ``pip install 'cowboy-ws[socks]'``).

    ``socks5h://`` and ``socks4a://`` let the proxy resolve the host name; ``socks5://`` and
    ``socks4://`` resolve it here.  Credentials come from the proxy URL (SOCKS5).
    """
    try:
        from python_socks import ProxyError as SocksError
        from python_socks import ProxyTimeoutError, ProxyType
        from python_socks.sync import Proxy
    except ImportError:
        raise ProxyError(f"proxy {proxy.geturl()!r} needs python-socks: pip install 'cowboy-ws[socks]'") from None
    left = deadline - time.monotonic()
    if left <= 0:
        raise OpenTimeout("SOCKS proxy: open timeout")
    scheme = proxy.scheme.lower()
    kind = ProxyType.SOCKS5 if scheme.startswith("socks5") else ProxyType.SOCKS4
    user = urllib.parse.unquote(proxy.username) if proxy.username is not None else None
    password = urllib.parse.unquote(proxy.password) if proxy.password is not None else None
    if not proxy.hostname:
        raise ProxyError(f"proxy URL {proxy.geturl()!r} has no host")
    try:
        sock = Proxy(kind, proxy.hostname, proxy.port or 1080, user, password,
                     rdns=scheme in ("socks5h", "socks4a")).connect(url.host, url.port, timeout=left)
    except ProxyTimeoutError:
        raise OpenTimeout(f"SOCKS proxy {proxy.hostname}: no tunnel within the open timeout") from None
    except SocksError as exc:
        raise ProxyError(f"SOCKS proxy {proxy.hostname}:{proxy.port or 1080}: {exc}") from None
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        pass
    return sock


def _open_tcp(url: WsURL, options: ClientOptions, deadline: float) -> socket.socket:
    proxy_url = resolve_proxy(url, options.proxy)
    if proxy_url is None:
        return _connect_tcp(url.host, url.port, deadline)
    try:
        proxy = urllib.parse.urlsplit(proxy_url if "://" in proxy_url else "http://" + proxy_url)
        proxy.port  # noqa: B018  (raises ValueError for a bad port)
    except ValueError as exc:
        raise ProxyError(f"bad proxy URL {proxy_url!r}: {exc}") from None
    scheme = proxy.scheme.lower()
    log.debug("connecting to %s through proxy %s", url, proxy.hostname)
    if scheme in ("http", "https"):
        return _tunnel_http(proxy, url, deadline)
    if scheme in ("socks5", "socks5h", "socks4", "socks4a"):
        return _tunnel_socks(proxy, url, deadline)
    raise ProxyError(f"unsupported proxy scheme {scheme!r} in {proxy_url!r} (http, socks5, socks5h, socks4, socks4a)")


def _start_tls(sock: socket.socket, url: WsURL, options: ClientOptions, deadline: float) -> ssl.SSLSocket:
    context = options.ssl if options.ssl is not None else default_ssl_context()
    _settimeout(sock, deadline, "TLS handshake")
    try:
        # server_hostname: SNI (for names) and the certificate's name check (check_hostname)
        return context.wrap_socket(sock, server_hostname=url.host)
    except TimeoutError:
        raise OpenTimeout(f"TLS handshake with {url.host}:{url.port} not done within the open timeout") from None


# -- the upgrade ------------------------------------------------------------------------------


def _request(url: WsURL, options: ClientOptions, key: str, offer: str | None) -> bytes:
    extra: list[tuple[str, str]] = []
    names = {name.lower() for name, _ in options.headers}
    if options.origin is not None:
        extra.append(("Origin", options.origin))
    if url.user is not None and "authorization" not in names:
        creds = f"{url.user}:{url.password or ''}".encode()
        extra.append(("Authorization", "Basic " + base64.b64encode(creds).decode("ascii")))
    if "user-agent" not in names:
        extra.append(("User-Agent", USER_AGENT or "cowboy_ws"))
    extra.extend((name, str(value) if isinstance(value, str) else value.decode("latin-1"))
                 for name, value in options.headers)
    try:
        return handshake.build_request(url.host_header, url.resource, key, protocols=options.subprotocols,
                                       extensions=offer, headers=extra)
    except UsageError as exc:
        raise InvalidHandshake(f"cannot build the upgrade request: {exc}") from None


def _read_body(sock: socket.socket, resp: handshake.Response, rest: bytes, deadline: float) -> bytes:
    """At most MAX_BODY bytes of a refused answer's body, within BODY_TIMEOUT (never fails)."""
    try:
        length = resp.get("content-length")
        want = MAX_BODY if length is None or not length.isdigit() else min(int(length), MAX_BODY)
        body = bytearray(rest[:want])
        end = min(deadline, time.monotonic() + BODY_TIMEOUT)
        while len(body) < want:
            left = end - time.monotonic()
            if left <= 0:
                break
            sock.settimeout(left)
            data = sock.recv(want - len(body))
            if not data:
                break
            body += data
        return bytes(body)
    except (OSError, ValueError):
        return bytes(rest[:MAX_BODY])


def _redirect(url: WsURL, resp: handshake.Response) -> WsURL:
    location = resp.get("location")
    if not location:
        raise InvalidHandshake(f"{url} answered {resp.status} without a Location header")
    base = ("https://" if url.secure else "http://") + url.host_header + url.resource
    target = parse_url(urllib.parse.urljoin(base, location))  # absolute (ws, wss, http, https) or relative
    if url.secure and not target.secure:
        raise InvalidHandshake(f"{url} redirected to {target}: refusing to go from wss:// to ws://")
    return target


def open_connection(url: str | WsURL, options: ClientOptions) -> Opened:
    """Open, upgrade and check a client connection within ``options.open_timeout`` (RFC 6455 §4.1).

    Raises :class:`InvalidURI`, :class:`OpenTimeout`, :class:`InvalidStatus` (a refused upgrade:
    status, headers, body), :class:`InvalidHandshake` (a 101 that breaks §4.1, a failed
    permessage-deflate negotiation, a redirect loop or downgrade), :class:`ProxyError`,
    :class:`ssl.SSLError` (a certificate that does not verify) or :class:`OSError`.
    """
    deadline = time.monotonic() + options.open_timeout
    target = url if isinstance(url, WsURL) else parse_url(url)
    compress = options.ws.compress
    offer = pmd.client_offer(options.ws.deflate_opts) if compress else None
    for _hop in range(options.max_redirects + 1):
        sock = _open_tcp(target, options, deadline)
        try:
            if target.secure:
                sock = _start_tls(sock, target, options, deadline)
            key = handshake.make_key()
            _settimeout(sock, deadline, "sending the upgrade request")
            try:
                sock.sendall(_request(target, options, key, offer))
            except TimeoutError:
                raise OpenTimeout(f"{target}: could not send the upgrade request within the open timeout") from None
            resp, rest = _read_head(sock, deadline, str(target))
            if resp.status in REDIRECTS and resp.status != 101:
                new = _redirect(target, resp)
                log.debug("%s redirected (%d) to %s", target, resp.status, new)
                sock.close()
                target = new
                continue
            if resp.status != 101:
                body = _read_body(sock, resp, rest, deadline)
                raise InvalidStatus(resp.status, resp.reason, list(resp.headers), body, str(target))
            try:
                subprotocol, extensions = handshake.validate_response(
                    resp, key, protocols=options.subprotocols, offered_extensions=offer)
                if extensions and not compress:
                    raise HandshakeError(502, f"server answered extensions {extensions!r}, none was offered "
                                              "(RFC 6455 §4.1 item 5)")
                codec = pmd.negotiate_client(extensions, options.ws.deflate_opts) if compress else None
            except HandshakeError as exc:
                raise InvalidHandshake(f"{target}: {exc}") from None
            if isinstance(sock, ssl.SSLSocket):
                while sock.pending():  # decrypted bytes the loop's selector could not see
                    rest += sock.recv(sock.pending())
            sock.settimeout(None)
            return Opened(sock, rest, target, resp, subprotocol, extensions, codec)
        except BaseException:
            sock.close()
            raise
    raise InvalidHandshake(f"more than {options.max_redirects} redirects, last to {target}")


def _user_agent() -> str:
    import sys

    from .. import __version__
    return f"cowboy_ws/{__version__} Python/{sys.version_info[0]}.{sys.version_info[1]}"


USER_AGENT = _user_agent()
