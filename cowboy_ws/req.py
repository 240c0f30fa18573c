"""The request object handed to ``init(req, state)``: Cowboy's ``cowboy_req``.

In Cowboy the Req is an immutable map threaded through the callbacks; here it
is a plain object with the same fields (``method``, ``version``, ``scheme``,
``host``, ``port``, ``path``, ``qs``, ``headers``, ``peer``, ``bindings``,
``path_info``...) and the accessors of ``cowboy_req`` as methods
(``header/2,3``, ``parse_header/2,3``, ``parse_qs/1``, ``binding/2,3``,
``set_resp_header/3``, ``reply/2,3,4``, ``uri/1,2``).

Cowboy keeps what it received: the ``path`` is the raw, still percent-encoded
path of the request-target (RFC 7230 §5.3, RFC 3986 §3.3) and ``qs`` the raw
query (RFC 3986 §3.4); only the router and :meth:`Req.parse_qs` decode.

The Req is only given to ``init/2``; ``terminate/3`` receives the *partial*
Req, a ``dict`` built by the ``req_filter`` option (default
:func:`default_req_filter`, as in Cowboy: method, version, scheme, host, port,
path, qs, peer).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol
from urllib.parse import unquote_to_bytes

from .protocol.errors import HandshakeError
from .protocol.handshake import parse_extensions_header, parse_protocol_header

__all__ = [
    "DEFAULT_REQ_FILTER_FIELDS",
    "PARSEABLE_HEADERS",
    "Req",
    "ReqFilter",
    "default_req_filter",
    "default_port",
]

#: Fields kept by the default ``req_filter`` (Cowboy 2.x ``cowboy_websocket``).
DEFAULT_REQ_FILTER_FIELDS: tuple[str, ...] = (
    "method",
    "version",
    "scheme",
    "host",
    "port",
    "path",
    "qs",
    "peer",
)

#: Header names :meth:`Req.parse_header` knows how to parse.
PARSEABLE_HEADERS: tuple[str, ...] = (
    "connection",
    "content-length",
    "sec-websocket-extensions",
    "sec-websocket-protocol",
    "sec-websocket-version",
    "upgrade",
)

_DEFAULT_PORTS: dict[str, int] = {"http": 80, "ws": 80, "https": 443, "wss": 443}

# RFC 3986 §3.2.2: reg-name = *( unreserved / pct-encoded / sub-delims ).
_REG_NAME = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=%]*")
# IP-literal: Cowboy (cow_http_hd:parse_host) accepts hex digits, ':' and '.'.
_IP_LITERAL = re.compile(r"\[[0-9A-Fa-f:.]+\]")
_PORT = re.compile(r"[0-9]*")
# A '%' not followed by two hex digits (RFC 3986 §2.1).
_BAD_PCT = re.compile(r"%(?![0-9A-Fa-f]{2})")

_FIELDS: frozenset[str] = frozenset(
    (
        "method",
        "version",
        "scheme",
        "host",
        "port",
        "path",
        "qs",
        "headers",
        "peer",
        "sock",
        "bindings",
        "path_info",
        "host_info",
        "resp_status",
        "resp_headers",
        "resp_body",
    )
)


class _RequestLike(Protocol):
    """What :meth:`Req.from_request` reads (``protocol.handshake.Request``)."""

    # read-only (properties), so that a Request's list of (str, str) pairs matches
    @property
    def method(self) -> str: ...
    @property
    def target(self) -> str: ...
    @property
    def version(self) -> Any: ...
    @property
    def headers(self) -> Sequence[tuple[str, Any]]: ...


def default_port(scheme: str) -> int:
    """The default port of ``scheme`` (RFC 7230 §2.7.1-2, RFC 6455 §3)."""
    try:
        return _DEFAULT_PORTS[scheme.lower()]
    except KeyError:
        raise ValueError(f"unknown scheme {scheme!r}; expected one of {sorted(_DEFAULT_PORTS)}") from None


def _text(value: Any) -> str:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("latin-1")
    return str(value)


def _norm_version(version: Any) -> str:
    if isinstance(version, tuple):
        return "HTTP/%d.%d" % version  # noqa: UP031 - as before: a tuple of any 2 numbers, else TypeError
    v = _text(version)
    return v if v.upper().startswith("HTTP/") else "HTTP/" + v


def _parse_host(value: str, scheme: str) -> tuple[str, int]:
    """Split a Host value / authority into ``(host, port)`` like ``cow_http_hd:parse_host``.

    RFC 7230 §5.4 and RFC 3986 §3.2.2-3.2.3: the host is lower-cased, an
    IPv6 literal keeps its brackets (``"[::1]"``, as Cowboy does), a missing or
    empty port (RFC 3986 §6.2.3) gives the scheme's default. An invalid value
    raises :class:`~cowboy_ws.protocol.errors.HandshakeError` 400.
    """
    value = value.strip()
    if value.startswith("["):
        end = value.find("]")
        if end < 0 or not _IP_LITERAL.fullmatch(value[: end + 1]):
            raise HandshakeError(400, f"invalid Host {value!r}")
        host, rest = value[: end + 1], value[end + 1 :]
        if rest and not rest.startswith(":"):
            raise HandshakeError(400, f"invalid Host {value!r}")
        port_s = rest[1:] if rest else None
    else:
        host, sep, port_s_ = value.partition(":")
        port_s = port_s_ if sep else None
        if not _REG_NAME.fullmatch(host):
            raise HandshakeError(400, f"invalid Host {value!r}")
    if port_s:
        if not _PORT.fullmatch(port_s) or int(port_s) > 65535:
            raise HandshakeError(400, f"invalid port in Host {value!r}")
        port = int(port_s)
    else:
        port = default_port(scheme)
    return host.lower(), port


def _split_target(target: str) -> tuple[str | None, str, str]:
    """Split a request-target (RFC 7230 §5.3) into ``(authority, path, qs)``.

    origin-form ``/p?q``, absolute-form ``http://a/p?q`` (the authority then
    overrides Host, §5.4) and asterisk-form ``*``. A fragment is dropped, as
    Cowboy does.
    """
    target = target.partition("#")[0]
    if target == "*":
        return None, "*", ""
    authority: str | None = None
    m = re.match(r"([A-Za-z][A-Za-z0-9+\-.]*)://", target)
    if m:
        rest = target[m.end() :]
        cut = len(rest)
        for ch in "/?":
            i = rest.find(ch)
            if 0 <= i < cut:
                cut = i
        authority, target = rest[:cut], rest[cut:]
        if not authority:
            raise HandshakeError(400, "empty authority in the request-target")
        if "@" in authority:
            # RFC 7230 §2.7.1: userinfo is not allowed in http(s) URIs.
            raise HandshakeError(400, "userinfo is not allowed in the request-target")
        if not target.startswith("/"):
            target = "/" + target
    elif not target.startswith("/"):
        raise HandshakeError(400, f"invalid request-target {target!r}")
    path, _, qs = target.partition("?")
    return authority, path, qs


def _form_decode(s: str) -> str:
    """``application/x-www-form-urlencoded`` decoding of one key or value (``cow_qs:urldecode``).

    ``+`` is a space, ``%XX`` a byte; a stray ``%`` is an error. The bytes are
    decoded as UTF-8; invalid sequences survive as lone surrogates
    (``surrogateescape``) so that nothing is lost.
    """
    if _BAD_PCT.search(s):
        raise ValueError(f"malformed percent-encoding in query string component {s!r}")
    return unquote_to_bytes(s.replace("+", " ")).decode("utf-8", "surrogateescape")


def _parse_qs(qs: str) -> list[tuple[str, str | bool]]:
    out: list[tuple[str, str | bool]] = []
    for part in qs.split("&"):
        if not part:
            continue
        key, eq, value = part.partition("=")
        if not key:
            raise ValueError(f"malformed query string {qs!r}: empty key")
        out.append((_form_decode(key), _form_decode(value) if eq else True))
    return out


def _token_list(value: str) -> list[str]:
    """RFC 7230 §7 ``1#token`` list, lower-cased (``cow_http_hd:parse_connection``)."""
    return [t.strip().lower() for t in value.split(",") if t.strip()]


def _to_bytes(body: Any) -> bytes:
    """Flatten iodata (bytes-like, str as UTF-8, nested lists of those)."""
    if isinstance(body, (bytes, bytearray, memoryview)):
        return bytes(body)
    if isinstance(body, str):
        return body.encode("utf-8")
    if isinstance(body, (list, tuple)):
        return b"".join(_to_bytes(b) for b in body)
    raise TypeError(f"body must be bytes, str or a list of those, not {type(body).__name__}")


class Req:
    """A WebSocket upgrade request, the Python face of ``cowboy_req:req()``.

    Attributes (Cowboy field -> Python):

    - ``method`` (``"GET"``), ``version`` (``"HTTP/1.1"``), ``scheme``
      (``"http"``/``"https"``, as the listener says);
    - ``host``: lower-case, port stripped; an IPv6 literal keeps its brackets
      like Cowboy (``"[::1]"``); ``port``: from Host or the scheme's default
      (RFC 7230 §5.4, §2.7);
    - ``path``: raw path, *not* percent-decoded; ``qs``: raw query, ``""`` if none;
    - ``headers``: ``dict`` lower-case name -> value, repeated lines joined with
      ``", "`` (``"; "`` for ``cookie``), as Cowboy does (RFC 7230 §3.2.2);
    - ``peer``/``sock``: ``(address, port)`` of the client / local socket;
    - ``bindings``, ``path_info``, ``host_info``: set by the router;
    - ``resp_headers``: headers for the response (the 101, or the reply);
      ``resp_status``/``resp_body``: the reply recorded by :meth:`reply`.
    """

    __slots__ = tuple(sorted(_FIELDS))

    method: str
    version: str
    scheme: str
    host: str
    port: int
    path: str
    qs: str
    headers: dict[str, str]
    peer: tuple[str, int] | None
    sock: tuple[str, int] | None
    bindings: dict[str, Any]
    path_info: list[str] | None
    host_info: list[str] | None
    resp_status: int | str | None
    resp_headers: dict[str, str]
    resp_body: bytes

    def __init__(
        self,
        *,
        method: str = "GET",
        version: str = "HTTP/1.1",
        scheme: str = "http",
        host: str = "",
        port: int | None = None,
        path: str = "/",
        qs: str = "",
        headers: Mapping[str, str] | None = None,
        peer: tuple[str, int] | None = None,
        sock: tuple[str, int] | None = None,
        bindings: Mapping[str, Any] | None = None,
        path_info: list[str] | None = None,
        host_info: list[str] | None = None,
    ) -> None:
        self.method = method
        self.version = version
        self.scheme = scheme
        self.host = host
        self.port = default_port(scheme) if port is None else port
        self.path = path
        self.qs = qs
        self.headers = {k.lower(): v for k, v in (headers or {}).items()}
        self.peer = peer
        self.sock = sock
        self.bindings = dict(bindings or {})
        self.path_info = path_info
        self.host_info = host_info
        self.resp_status = None
        self.resp_headers = {}
        self.resp_body = b""

    @classmethod
    def from_request(
        cls,
        request: _RequestLike,
        *,
        scheme: str,
        peer: tuple[str, int],
        sockname: tuple[str, int] | None = None,
        bindings: Mapping[str, Any] | None = None,
        path_info: list[str] | None = None,
        host_info: list[str] | None = None,
    ) -> Req:
        """Build the Req from a parsed request (``protocol.handshake.Request``).

        Raises :class:`~cowboy_ws.protocol.errors.HandshakeError` 400 where Cowboy answers 400: an
        HTTP/1.1 request without Host, with several Host lines or an invalid
        Host (RFC 7230 §5.4), or a request-target that is not origin-,
        absolute- or asterisk-form (§5.3). The authority of an absolute-form
        target overrides Host (§5.4).
        """
        version = _norm_version(request.version)
        headers: dict[str, str] = {}
        host_values: list[str] = []
        for name, value in request.headers:
            name = _text(name).lower()
            value = _text(value)
            if name == "host":
                host_values.append(value)
            if name in headers:
                headers[name] += ("; " if name == "cookie" else ", ") + value
            else:
                headers[name] = value
        authority, path, qs = _split_target(_text(request.target))
        if len(host_values) > 1:
            raise HandshakeError(400, "more than one Host header")
        if not host_values and version != "HTTP/1.0" and version != "HTTP/0.9":
            raise HandshakeError(400, "missing Host header")
        if authority is not None:
            host, port = _parse_host(authority, scheme)
        elif host_values:
            host, port = _parse_host(host_values[0], scheme)
        else:
            host, port = "", default_port(scheme)
        return cls(
            method=_text(request.method),
            version=version,
            scheme=scheme,
            host=host,
            port=port,
            path=path,
            qs=qs,
            headers=headers,
            peer=peer,
            sock=sockname,
            bindings=bindings,
            path_info=path_info,
            host_info=host_info,
        )

    # -- request -----------------------------------------------------------

    def header(self, name: str, default: str | None = None) -> str | None:
        """``cowboy_req:header/2,3``: the (joined) value of a header, or ``default``."""
        return self.headers.get(name.lower(), default)

    def parse_header(self, name: str, default: Any = None) -> Any:
        """``cowboy_req:parse_header/2,3``: a header parsed into Python values.

        - ``sec-websocket-protocol`` -> ``list[str]`` (RFC 6455 §11.3.4)
        - ``sec-websocket-extensions`` -> ``[(name, [(param, value | None)])]`` (§9.1)
        - ``sec-websocket-version`` -> ``int`` (§11.3.5)
        - ``connection``, ``upgrade`` -> lower-case tokens (RFC 7230 §6.1, §6.7)
        - ``content-length`` -> ``int`` (RFC 7230 §3.3.2)

        An absent header gives ``default`` (``None``, Cowboy's ``undefined``);
        a malformed one raises :class:`~cowboy_ws.protocol.errors.HandshakeError` 400 (Cowboy answers 400).
        Any other name raises :class:`ValueError`.
        """
        key = name.lower()
        if key not in PARSEABLE_HEADERS:
            raise ValueError(f"cannot parse header {name!r}; supported: {', '.join(PARSEABLE_HEADERS)}")
        value = self.headers.get(key)
        if value is None:
            return default
        if key == "sec-websocket-protocol":
            return list(parse_protocol_header([value]))
        if key == "sec-websocket-extensions":
            return list(parse_extensions_header([value]))
        if key in ("connection", "upgrade"):
            return _token_list(value)
        # content-length, sec-websocket-version: a single non-negative integer.
        v = value.strip()
        if not v.isdigit() or not v.isascii():
            raise HandshakeError(400, f"malformed {key} header {value!r}")
        return int(v)

    def parse_qs(self) -> list[tuple[str, str | bool]]:
        """``cowboy_req:parse_qs/1`` (``cow_qs:parse_qs``): decode the query string.

        ``application/x-www-form-urlencoded``: pairs split on ``&``, empty
        pairs skipped, ``+`` is a space, ``%XX`` decoded; a key without ``=``
        gives ``True``; ``"a="`` gives ``""``. Order and duplicates are kept.
        An empty key or a bad ``%`` escape raises :class:`ValueError` (Cowboy: 400).
        """
        return _parse_qs(self.qs)

    def binding(self, name: str, default: Any = None) -> Any:
        """``cowboy_req:binding/2,3``: the value the router bound to ``name``."""
        return self.bindings.get(name, default)

    def uri(
        self,
        *,
        scheme: Any = ...,
        host: Any = ...,
        port: Any = ...,
        path: Any = ...,
        qs: Any = ...,
        fragment: str | None = None,
    ) -> str:
        """``cowboy_req:uri/1,2``: rebuild the URI (RFC 3986 §5.3).

        Each keyword overrides the request's component; ``None`` drops it
        (Cowboy's ``undefined``): ``uri(scheme=None)`` gives ``"//host/path"``,
        ``uri(qs=None)`` no query. The port is left out when it is the
        scheme's default.
        """
        s = self.scheme if scheme is ... else scheme
        h = self.host if host is ... else host
        p = self.port if port is ... else port
        pa = self.path if path is ... else path
        q = self.qs if qs is ... else qs
        out = []
        if s is not None:
            out.append(f"{s}:")
        if h is not None:
            out.append(f"//{h}")
            if p is not None and p != _DEFAULT_PORTS.get((s or self.scheme).lower()):
                out.append(f":{p}")
        if pa is not None:
            out.append(pa)
        if q:
            out.append(f"?{q}")
        if fragment:
            out.append(f"#{fragment}")
        return "".join(out)

    # -- response ----------------------------------------------------------

    def set_resp_header(self, name: str, value: str) -> None:
        """``cowboy_req:set_resp_header/3``: a header for the response (stored lower-case).

        Used for the 101 too: ``req.set_resp_header("sec-websocket-protocol",
        "chat")`` selects a subprotocol (RFC 6455 §4.2.2).
        """
        self.resp_headers[name.lower()] = _text(value)

    def resp_header(self, name: str, default: str | None = None) -> str | None:
        """``cowboy_req:resp_header/2,3``."""
        return self.resp_headers.get(name.lower(), default)

    def has_resp_header(self, name: str) -> bool:
        """``cowboy_req:has_resp_header/2``."""
        return name.lower() in self.resp_headers

    def delete_resp_header(self, name: str) -> None:
        """``cowboy_req:delete_resp_header/2``."""
        self.resp_headers.pop(name.lower(), None)

    def reply(
        self,
        status: int | str,
        headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
        body: Any = b"",
    ) -> None:
        """``cowboy_req:reply/2,3,4``: record the response that refuses the upgrade.

        ``init`` then returns ``("ok", req, state)`` and the runtime sends
        ``resp_status`` with ``resp_headers`` (those set earlier, overridden by
        ``headers``) and ``resp_body`` (bytes, str or a list of those). A
        second reply raises :class:`RuntimeError`, as Cowboy does.
        """
        if self.resp_status is not None:
            raise RuntimeError("a reply was already sent for this request")
        if isinstance(status, bool) or not isinstance(status, (int, str)):
            raise TypeError(f"status must be an int or a str, not {type(status).__name__}")
        items = headers.items() if isinstance(headers, Mapping) else (headers or ())
        merged = dict(self.resp_headers)
        for k, v in items:
            merged[k.lower()] = _text(v)
        self.resp_body = _to_bytes(body)
        self.resp_headers = merged
        self.resp_status = status

    @property
    def has_reply(self) -> bool:
        """Whether :meth:`reply` was called (``cowboy_req:has_responded/1``)."""
        return self.resp_status is not None

    # -- terminate/3 -------------------------------------------------------

    def to_partial(self, fields: Iterable[str]) -> dict[str, Any]:
        """The partial Req kept for ``terminate/3``: ``{field: value}`` for ``fields``.

        Like ``maps:with/2`` on the Req; mutable values are copied.
        """
        out: dict[str, Any] = {}
        for f in fields:
            if f not in _FIELDS:
                raise ValueError(f"unknown Req field {f!r}; known: {', '.join(sorted(_FIELDS))}")
            v = getattr(self, f)
            out[f] = v.copy() if isinstance(v, (dict, list)) else v
        return out

    def __repr__(self) -> str:
        return (
            f"Req({self.method} {self.uri()} {self.version}, peer={self.peer!r}, "
            f"bindings={self.bindings!r})"
        )


def default_req_filter(req: Req) -> dict[str, Any]:
    """Cowboy's default ``req_filter``: method, version, scheme, host, port, path, qs, peer."""
    return req.to_partial(DEFAULT_REQ_FILTER_FIELDS)


ReqFilter = Callable[[Req], Mapping[str, Any]]
