"""What the client raises: a connection that ended, an upgrade that failed.

These are exported from :mod:`cowboy_ws` too (``cowboy_ws.ConnectionClosed`` ...).
"""

from __future__ import annotations

from typing import Any

from ..protocol.errors import WebSocketError

__all__ = ["ConnectionClosed", "InvalidHandshake", "InvalidStatus", "InvalidURI", "OpenTimeout", "ProxyError"]


class ConnectionClosed(WebSocketError):
    """The WebSocket connection is over: :meth:`send` and :meth:`recv` raise this from then on.

    ``code`` and ``reason`` are those of the Close frame that ended the connection (RFC 6455
    §7.1.5, §7.1.6): the peer's when it closed first (``side == "remote"``), ours when we did
    (``side == "local"``, a protocol error we failed the connection for included: 1002, 1007,
    1009, §7.1.7).  A TCP connection lost without a Close is code 1006 (§7.1.5), side
    ``"remote"``; a Close without a code is 1005.  ``terminate_reason`` is the reason a
    handler's ``terminate`` would get (docs/design.md, exit paths).
    """

    def __init__(self, code: int, reason: bytes = b"", side: str = "remote", terminate_reason: Any = None) -> None:
        self.code = code
        self.reason = reason
        self.side = side
        self.terminate_reason = terminate_reason
        text = reason.decode("utf-8", "replace") if reason else ""
        who = "the peer" if side == "remote" else "we"
        what = f"code {code}" + (f" ({text})" if text else "")
        if code == 1006:
            message = "connection lost without a Close frame (1006)"
        else:
            message = f"{who} closed the connection: {what}"
        super().__init__(message)

    @property
    def ok(self) -> bool:
        """A normal end: 1000 (normal closure) or 1001 (going away), RFC 6455 §7.4.1."""
        return self.code in (1000, 1001)

    def __reduce__(self) -> tuple:
        return (type(self), (self.code, self.reason, self.side, None))


class InvalidURI(WebSocketError, ValueError):
    """The URL is not a ``ws://`` or ``wss://`` URL this client can open (RFC 6455 §3)."""


class InvalidHandshake(WebSocketError):
    """The opening handshake failed (RFC 6455 §4.1): the server's answer, the proxy or TLS."""


class InvalidStatus(InvalidHandshake):
    """The server answered the upgrade with another status than 101 (RFC 6455 §4.1 item 1).

    ``status``, ``headers`` (``(name, value)`` pairs, names lower-cased) and ``body`` (at most
    64 KiB of it) are the server's answer; ``url`` is the URL that answered (after redirects).
    """

    def __init__(self, status: int, reason: str, headers: list[tuple[str, str]], body: bytes, url: str) -> None:
        self.status = status
        self.status_reason = reason
        self.headers = headers
        self.body = body
        self.url = url
        snippet = body[:200].decode("utf-8", "replace").strip()
        super().__init__(f"server refused the WebSocket upgrade of {url}: {status} {reason}"
                         + (f": {snippet}" if snippet else ""))

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive)."""
        name = name.lower()
        for key, value in self.headers:
            if key == name:
                return value
        return None


class OpenTimeout(InvalidHandshake, TimeoutError):
    """The connection (TCP, proxy, TLS, the HTTP upgrade, redirects) did not open within ``open_timeout``."""


class ProxyError(InvalidHandshake):
    """The proxy refused or failed the tunnel (HTTP CONNECT status, or a SOCKS error)."""
