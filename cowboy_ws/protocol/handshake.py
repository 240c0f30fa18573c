"""The WebSocket opening handshake, sans-IO (RFC 6455 §4).

Server side: :func:`parse_request_head` reads an HTTP/1.1 request head
(RFC 7230 §3) incrementally, :func:`validate_upgrade` checks it against
RFC 6455 §4.2.1, :func:`build_response` writes the §4.2.2 answer and
:func:`build_refusal` any error reply. Client side (§4.1): :func:`make_key`,
:func:`build_request`, :func:`parse_response_head`, :func:`validate_response`.

Every refusal is a :class:`HandshakeError` carrying the HTTP status and the
headers the answer must include.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Iterable
from http import HTTPStatus

from . import limits
from .errors import HandshakeError, UsageError
from .headers import (
    Extension,
    format_extension,
    is_token,
    parse_extensions_header,
    parse_protocol_header,
    split_list,
)

__all__ = [
    "GUID",
    "Request",
    "Response",
    "parse_request_head",
    "parse_response_head",
    "validate_upgrade",
    "is_upgrade_request",
    "accept_key",
    "build_response",
    "build_refusal",
    "build_http_response",
    "parse_protocol_header",
    "parse_extensions_header",
    "format_extension",
    "make_key",
    "build_request",
    "validate_response",
]

#: RFC 6455 §1.3: the GUID appended to Sec-WebSocket-Key before hashing.
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

Headers = list[tuple[str, str]]

_VERSION_HEADER = ("Sec-WebSocket-Version", "13")  # RFC 6455 §4.4

# Byte classes for str.translate-style checks (no per-byte Python loops).
_TCHAR_BYTES = b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_VCHAR_BYTES = bytes(range(0x21, 0x7F))
_CTL_BYTES = bytes(c for c in range(0x20) if c != 0x09) + b"\x7f"  # HTAB is allowed
_DIGITS = b"0123456789"


class _Message:
    """Headers shared by requests and responses (RFC 7230 §3.2)."""

    __slots__ = ("version", "headers")

    version: str
    headers: Headers

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of header ``name`` (case-insensitive), else ``default``."""
        name = name.lower()
        for key, value in self.headers:
            if key == name:
                return value
        return default

    def get_all(self, name: str) -> list[str]:
        """Every value of header ``name`` (case-insensitive), in order."""
        name = name.lower()
        return [value for key, value in self.headers if key == name]


class Request(_Message):
    """A parsed HTTP/1.1 request head (RFC 7230 §3.1.1).

    ``headers`` holds ``(name, value)`` pairs: names lower-cased, values
    stripped of surrounding whitespace, wire order and duplicates kept.
    """

    __slots__ = ("method", "target")

    def __init__(
        self, method: str, target: str, version: str = "HTTP/1.1", headers: Iterable[tuple[str, str]] = ()
    ) -> None:
        self.method = method
        self.target = target
        self.version = version
        self.headers = [(name.lower(), value) for name, value in headers]

    def __repr__(self) -> str:
        return f"Request({self.method!r}, {self.target!r}, {self.version!r}, {self.headers!r})"


class Response(_Message):
    """A parsed HTTP/1.1 response head (RFC 7230 §3.1.2); headers as in :class:`Request`."""

    __slots__ = ("status", "reason")

    def __init__(
        self, status: int, reason: str = "", version: str = "HTTP/1.1", headers: Iterable[tuple[str, str]] = ()
    ) -> None:
        self.status = status
        self.reason = reason
        self.version = version
        self.headers = [(name.lower(), value) for name, value in headers]

    def __repr__(self) -> str:
        return f"Response({self.status!r}, {self.reason!r}, {self.version!r}, {self.headers!r})"


# ---------------------------------------------------------------------------
# The head parser (RFC 7230 §3), shared by requests and responses
# ---------------------------------------------------------------------------


def _is_http_version(v: bytes) -> bool:
    """RFC 7230 §2.6: HTTP-version = "HTTP/" DIGIT "." DIGIT."""
    return len(v) == 8 and v[:5] == b"HTTP/" and v[5] in _DIGITS and v[6] == 0x2E and v[7] in _DIGITS


def _split_head(
    buf: bytes | bytearray, max_start_line: int, max_header_line: int, max_headers: int, max_head_size: int
) -> tuple[bytes, list[bytes], int] | None:
    """Find the end of the head and cut it into lines.

    Returns ``(start_line, header_lines, consumed)`` or None while incomplete.
    Lines end in CRLF or a bare LF (RFC 7230 §3.5); empty lines before the
    start line are skipped (§3.5). Limits are checked as early as the buffer
    allows: 414 for the start line, 431 for a header line, the header count or
    the whole head (counted from the first byte of ``buf``).
    """
    start, n = 0, len(buf)
    while True:  # §3.5: ignore empty lines received before the request-line
        if buf.startswith(b"\n", start):
            start += 1
        elif buf.startswith(b"\r\n", start):
            start += 2
        else:
            break
    # The blank line that ends the head: LF CRLF or LF LF, within the size limit.
    ends = [p + 3 for p in (buf.find(b"\n\r\n", start, max_head_size),) if p >= 0]
    ends += [p + 2 for p in (buf.find(b"\n\n", start, max_head_size),) if p >= 0]
    first_nl = buf.find(b"\n", start, start + max_start_line + 2)
    if first_nl < 0:
        if n - start >= max_start_line + 2:
            raise HandshakeError(414, "request line too long")
    elif first_nl - start - (buf[first_nl - 1] == 0x0D) > max_start_line:
        raise HandshakeError(414, "request line too long")
    if not ends:
        if n >= max_head_size:
            raise HandshakeError(431, "request head too large")
        if first_nl >= 0:  # fail early on what is already known to be too much
            last_nl = buf.rfind(b"\n", first_nl)
            if n - last_nl - 1 >= max_header_line + 2:
                raise HandshakeError(431, "header line too long")
            if buf.count(b"\n", first_nl + 1) > max_headers:
                raise HandshakeError(431, "too many headers")
        return None
    end = min(ends)
    lines = bytes(buf[start:end]).split(b"\n")[:-2]  # drop the blank line and what follows it
    for i, line in enumerate(lines):
        if line.endswith(b"\r"):
            line = lines[i] = line[:-1]
        if b"\r" in line:
            raise HandshakeError(400, "bare CR in the head")
    start_line, header_lines = lines[0], lines[1:]
    if len(header_lines) > max_headers:
        raise HandshakeError(431, "too many headers")
    return start_line, header_lines, end


def _parse_headers(lines: list[bytes], max_header_line: int) -> Headers:
    """RFC 7230 §3.2: header-field = field-name ":" OWS field-value OWS."""
    headers = []
    for line in lines:
        if len(line) > max_header_line:
            raise HandshakeError(431, "header line too long")
        if line[:1] in (b" ", b"\t"):
            raise HandshakeError(400, "obsolete line folding")  # §3.2.4
        name, colon, value = line.partition(b":")
        # A non-token name covers: no name, whitespace before the colon (§3.2.4), non-ASCII.
        if not colon or not name or name.translate(None, _TCHAR_BYTES):
            raise HandshakeError(400, f"malformed header line {line[:64]!r}")
        value = value.strip(b" \t")
        if len(value.translate(None, _CTL_BYTES)) != len(value):
            raise HandshakeError(400, f"control character in header {name.decode('ascii')!r}")
        headers.append((name.decode("ascii").lower(), value.decode("latin-1")))
    return headers


def parse_request_head(
    buf: bytes | bytearray,
    *,
    max_request_line: int = limits.MAX_REQUEST_LINE,
    max_header_line: int = limits.MAX_HEADER_LINE,
    max_headers: int = limits.MAX_HEADERS,
    max_head_size: int = limits.MAX_HEAD_SIZE,
) -> tuple[Request, int] | None:
    """Parse an HTTP/1.1 request head from the start of ``buf`` (RFC 7230 §3).

    Returns ``(request, consumed)`` once the empty line ending the head has
    arrived; bytes from ``consumed`` on belong to the next layer (they may
    already be WebSocket frames). Returns None while the head is incomplete,
    unless a limit is already exceeded: 414 for a long request line, 431 for a
    long header line, too many headers or a head over ``max_head_size``.
    A malformed request line or header raises a 400.
    """
    parts = _split_head(buf, max_request_line, max_header_line, max_headers, max_head_size)
    if parts is None:
        return None
    line, header_lines, consumed = parts
    # §3.1.1: request-line = method SP request-target SP HTTP-version
    fields = line.split(b" ")
    if len(fields) != 3:
        raise HandshakeError(400, f"malformed request line {line[:64]!r}")
    method, target, version = fields
    if not method or method.translate(None, _TCHAR_BYTES):
        raise HandshakeError(400, "malformed method")
    if not target or target.translate(None, _VCHAR_BYTES):
        raise HandshakeError(400, "malformed request target")
    if not _is_http_version(version):
        raise HandshakeError(400, "malformed HTTP version")
    req = Request(method.decode("ascii"), target.decode("ascii"), version.decode("ascii"))
    req.headers = _parse_headers(header_lines, max_header_line)
    return req, consumed


def parse_response_head(
    buf: bytes | bytearray,
    *,
    max_status_line: int = limits.MAX_REQUEST_LINE,
    max_header_line: int = limits.MAX_HEADER_LINE,
    max_headers: int = limits.MAX_HEADERS,
    max_head_size: int = limits.MAX_HEAD_SIZE,
) -> tuple[Response, int] | None:
    """Parse an HTTP/1.1 response head (RFC 7230 §3.1.2), as :func:`parse_request_head`.

    A malformed or oversized answer is the server's fault: it raises
    :class:`HandshakeError` with status 502 (Bad Gateway).
    """
    try:
        parts = _split_head(buf, max_status_line, max_header_line, max_headers, max_head_size)
        if parts is None:
            return None
        line, header_lines, consumed = parts
        # status-line = HTTP-version SP status-code SP reason-phrase (the reason may be empty;
        # "HTTP/1.1 101" without the second SP is tolerated).
        fields = line.split(b" ", 2)
        version, code = fields[0], fields[1] if len(fields) > 1 else b""
        reason = fields[2] if len(fields) > 2 else b""
        if not _is_http_version(version) or len(code) != 3 or code.translate(None, _DIGITS):
            raise HandshakeError(400, f"malformed status line {line[:64]!r}")
        if len(reason.translate(None, _CTL_BYTES)) != len(reason):
            raise HandshakeError(400, "control character in reason phrase")
        resp = Response(int(code), reason.decode("latin-1"), version.decode("ascii"))
        resp.headers = _parse_headers(header_lines, max_header_line)
    except HandshakeError as exc:
        raise HandshakeError(502, f"bad handshake response: {exc}") from exc
    return resp, consumed


# ---------------------------------------------------------------------------
# Server side (RFC 6455 §4.2)
# ---------------------------------------------------------------------------


def _has_token(values: list[str], token: str) -> bool:
    return token in (element.lower() for element in split_list(values))


def is_upgrade_request(req: Request) -> bool:
    """Whether ``req`` asks for a WebSocket upgrade (``Upgrade: websocket``, RFC 6455 §4.2.1 item 3).

    A router uses it to tell plain HTTP from WebSocket; :func:`validate_upgrade`
    then checks the rest.
    """
    return _has_token(req.get_all("upgrade"), "websocket")


def validate_upgrade(req: Request) -> str:
    """Check an opening handshake against RFC 6455 §4.2.1; return its Sec-WebSocket-Key.

    Raises :class:`HandshakeError` with:

    * 405 (``Allow: GET``) unless the method is GET (item 1);
    * 400 unless the version is HTTP/1.1 or a later HTTP/1.x (item 1);
    * 400 unless there is exactly one, non-empty Host (item 2; RFC 7230 §5.4);
    * 426 (``Upgrade: websocket``, ``Connection: Upgrade``,
      ``Sec-WebSocket-Version: 13``) when the Upgrade list lacks ``websocket`` or
      the Connection list lacks ``upgrade`` (items 3-4), i.e. a plain request;
    * 400 (``Sec-WebSocket-Version: 13``) unless Sec-WebSocket-Version is exactly
      ``13`` (item 6, §4.4);
    * 400 (``Sec-WebSocket-Version: 13``) unless there is exactly one
      Sec-WebSocket-Key that base64-decodes to 16 bytes (item 5).
    """
    if req.method != "GET":
        raise HandshakeError(405, f"method {req.method} not allowed", [("Allow", "GET")])
    version = req.version
    if not (version.startswith("HTTP/1.") and version[7:].isdigit() and int(version[7:]) >= 1):
        raise HandshakeError(400, f"{version} cannot upgrade; HTTP/1.1 is required")
    hosts = req.get_all("host")
    if len(hosts) != 1 or not hosts[0]:
        raise HandshakeError(400, "exactly one non-empty Host header is required")
    if not (_has_token(req.get_all("upgrade"), "websocket") and _has_token(req.get_all("connection"), "upgrade")):
        raise HandshakeError(
            426,
            "WebSocket upgrade required",
            [("Upgrade", "websocket"), ("Connection", "Upgrade"), _VERSION_HEADER],
        )
    if req.get_all("sec-websocket-version") != ["13"]:
        raise HandshakeError(400, "unsupported Sec-WebSocket-Version; 13 is required", [_VERSION_HEADER])
    keys = req.get_all("sec-websocket-key")
    if len(keys) != 1:
        raise HandshakeError(400, "exactly one Sec-WebSocket-Key is required", [_VERSION_HEADER])
    try:
        nonce = base64.b64decode(keys[0], validate=True)
    except ValueError:  # binascii.Error, or non-ASCII characters
        nonce = b""
    if len(nonce) != 16:
        raise HandshakeError(400, "Sec-WebSocket-Key is not 16 base64-encoded bytes", [_VERSION_HEADER])
    return keys[0]


def accept_key(key: str) -> str:
    """Sec-WebSocket-Accept for ``key``: base64(SHA-1(key + GUID)) (RFC 6455 §4.2.2 item 5.4).

    The key is hashed as the bytes it had on the wire (header values are decoded as latin-1).
    """
    digest = hashlib.sha1((key + GUID).encode("latin-1")).digest()
    return base64.b64encode(digest).decode("ascii")


def _encode_headers(headers: Iterable[tuple[str, str | bytes]]) -> list[bytes]:
    """Serialize header lines, refusing what would corrupt the head (RFC 7230 §3.2)."""
    out = []
    for name, value in headers:
        if not is_token(name):
            raise UsageError(f"header name is not a token: {name!r}")
        try:
            raw = value if isinstance(value, bytes) else str(value).encode("latin-1")
        except UnicodeEncodeError:
            raise UsageError(f"header {name!r} value is not latin-1: {value!r}") from None
        if len(raw.translate(None, _CTL_BYTES)) != len(raw):
            raise UsageError(f"control character in header {name!r}")
        out.append(name.encode("ascii") + b": " + raw + b"\r\n")
    return out


def build_response(
    key: str,
    *,
    protocol: str | None = None,
    extensions: str | None = None,
    headers: Iterable[tuple[str, str]] = (),
) -> bytes:
    """The ``101 Switching Protocols`` answer to an accepted handshake (RFC 6455 §4.2.2 item 5).

    ``protocol`` is the selected subprotocol (§11.3.4), ``extensions`` the
    negotiated Sec-WebSocket-Extensions value (§9.1); ``headers`` are appended.
    """
    fields: list[tuple[str, str]] = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Accept", accept_key(key)),
    ]
    if protocol is not None:
        fields.append(("Sec-WebSocket-Protocol", protocol))
    if extensions is not None:
        fields.append(("Sec-WebSocket-Extensions", extensions))
    fields.extend(headers)
    return b"".join([b"HTTP/1.1 101 Switching Protocols\r\n", *_encode_headers(fields), b"\r\n"])


def build_http_response(
    status: int,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
    *,
    keep_alive: bool = False,
    reason: str | None = None,
) -> bytes:
    """A complete HTTP/1.1 response (RFC 7230 §3).

    The reason phrase defaults to the standard one. ``Content-Length`` is
    always computed from ``body`` (a caller's own is dropped) except for 1xx,
    204 and 304, which carry no body (§3.3.2). Unless ``keep_alive``, the
    response says ``Connection: close`` (replacing a caller's Connection).
    """
    if reason is None:
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = ""
    if not 100 <= status <= 999 or any((c < " " and c != "\t") or c == "\x7f" for c in reason):
        raise UsageError(f"bad status line: {status} {reason!r}")
    body = bytes(body)
    drop = {"content-length"} if keep_alive else {"content-length", "connection"}
    fields = [(name, value) for name, value in headers if name.lower() not in drop]
    if status < 200 or status in (204, 304):
        if body:
            raise UsageError(f"a {status} response has no body")
    else:
        fields.append(("Content-Length", str(len(body))))
    if not keep_alive:
        fields.append(("Connection", "close"))
    try:
        status_line = f"HTTP/1.1 {status} {reason}\r\n".encode("latin-1")
    except UnicodeEncodeError:
        raise UsageError(f"reason phrase is not latin-1: {reason!r}") from None
    return b"".join([status_line, *_encode_headers(fields), b"\r\n", body])


def build_refusal(
    status: int,
    *,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
    reason: str | None = None,
) -> bytes:
    """The answer to a refused handshake: ``status``, ``headers``, ``body``, then close.

    Typically ``build_refusal(err.status, headers=err.headers)`` for a
    :class:`HandshakeError` (RFC 6455 §4.2.1: "an appropriate HTTP error code").
    """
    return build_http_response(status, headers, body, keep_alive=False, reason=reason)


# ---------------------------------------------------------------------------
# Client side (RFC 6455 §4.1)
# ---------------------------------------------------------------------------


def make_key(random16: bytes | None = None) -> str:
    """A Sec-WebSocket-Key: base64 of 16 random bytes (RFC 6455 §4.1 item 7).

    Pass ``random16`` for a deterministic key; the default is ``os.urandom(16)``.
    """
    nonce = os.urandom(16) if random16 is None else bytes(random16)
    if len(nonce) != 16:
        raise UsageError(f"a key nonce is 16 bytes, not {len(nonce)}")
    return base64.b64encode(nonce).decode("ascii")


def build_request(
    host: str,
    target: str,
    key: str,
    *,
    protocols: Iterable[str] = (),
    extensions: str | None = None,
    headers: Iterable[tuple[str, str]] = (),
) -> bytes:
    """A client opening handshake (RFC 6455 §4.1).

    ``host`` is the Host value (host[:port]), ``target`` the origin-form
    request-target (``/path?query``); ``protocols`` are offered in
    Sec-WebSocket-Protocol (§11.3.4), ``extensions`` is sent as
    Sec-WebSocket-Extensions (§9.1); ``headers`` are appended.
    """
    if not target or not all(" " < c < "\x7f" for c in target):
        raise UsageError(f"bad request target: {target!r}")
    protocols = list(protocols)
    for protocol in protocols:
        if not is_token(protocol):
            raise UsageError(f"subprotocol is not a token: {protocol!r}")
    fields: list[tuple[str, str]] = [
        ("Host", host),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", key),
        _VERSION_HEADER,
    ]
    if protocols:
        fields.append(("Sec-WebSocket-Protocol", ", ".join(protocols)))
    if extensions is not None:
        fields.append(("Sec-WebSocket-Extensions", extensions))
    fields.extend(headers)
    request_line = f"GET {target} HTTP/1.1\r\n".encode("ascii")
    return b"".join([request_line, *_encode_headers(fields), b"\r\n"])


def validate_response(
    resp: Response,
    key: str,
    *,
    protocols: Iterable[str] = (),
    offered_extensions: str | None = None,
) -> tuple[str | None, list[Extension]]:
    """Check the server's handshake answer (RFC 6455 §4.1, client items 1-6).

    Returns ``(subprotocol or None, parsed Sec-WebSocket-Extensions)``. A status
    other than 101 raises :class:`HandshakeError` with that status; a 101 that
    breaks the rules (Upgrade, Connection, Sec-WebSocket-Accept, a subprotocol
    that was not offered, a malformed extension list) raises it with 502.
    When ``offered_extensions`` (the value sent in the request) is given, an
    answered extension that was not offered is refused too (item 5); otherwise
    the caller checks the returned names against its offer.
    """
    if resp.status != 101:
        raise HandshakeError(resp.status, f"server refused the upgrade: {resp.status} {resp.reason}")

    def bad(message: str) -> HandshakeError:
        return HandshakeError(502, message)

    if not _has_token(resp.get_all("upgrade"), "websocket"):
        raise bad("101 response without Upgrade: websocket")
    if not _has_token(resp.get_all("connection"), "upgrade"):
        raise bad("101 response without Connection: Upgrade")
    if resp.get_all("sec-websocket-accept") != [accept_key(key)]:
        raise bad("wrong or missing Sec-WebSocket-Accept")
    protocol = None
    answered = resp.get_all("sec-websocket-protocol")
    if answered:
        if len(answered) != 1 or answered[0] not in list(protocols):
            raise bad(f"server selected a subprotocol that was not offered: {answered!r}")
        protocol = answered[0]
    try:
        extensions = parse_extensions_header(resp.get_all("sec-websocket-extensions"))
        offered = None if offered_extensions is None else parse_extensions_header([offered_extensions])
    except HandshakeError as exc:
        raise bad(f"malformed Sec-WebSocket-Extensions: {exc}") from exc
    if offered is not None:
        names = {name for name, _ in offered}
        for name, _ in extensions:
            if name not in names:
                raise bad(f"server answered extension {name!r} that was not offered")
    return protocol, extensions
