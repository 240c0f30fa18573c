"""Exceptions of the protocol core.

Protocol errors (the peer broke RFC 6455 / RFC 7692) carry the close code the
connection must be failed with (RFC 6455 §7.1.7) and the terminate reason atom.
Misuse by the local application (sending after close, a 200-byte ping) raises
:class:`UsageError` instead, which never reaches the wire.
"""

from __future__ import annotations

from . import closecodes


class WebSocketError(Exception):
    """Base class of every exception raised by :mod:`cowboy_ws.protocol`."""


class ProtocolError(WebSocketError):
    """The peer violated the protocol: fail the connection with :attr:`code`.

    ``reason`` is the terminate reason atom (``"badframe"``, ``"badencoding"``,
    ``"badsize"``); the close code is looked up in :data:`closecodes.ERROR_CODES`
    so that every error maps to a code in one place.
    """

    reason = "badframe"

    #: Only on the errors :meth:`.frames.FrameParser.feed` raises (declared, never set here): the
    #: frames ``(opcode, fin, rsv1, payload)`` completed before the bad one.
    frames: list[tuple[int, int, int, bytes]]

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.code: int = closecodes.ERROR_CODES[self.reason]


class FrameError(ProtocolError):
    """A frame or message broke a framing rule of RFC 6455 §5 (close 1002)."""

    reason = "badframe"


class InvalidUtf8(ProtocolError):
    """A text message or close reason is not valid UTF-8 (RFC 6455 §8.1, close 1007)."""

    reason = "badencoding"


class MessageTooBig(ProtocolError):
    """A frame, inflated payload or reassembled message exceeds the limit (close 1009)."""

    reason = "badsize"


class UsageError(WebSocketError):
    """The local application misused the API (never caused by the peer)."""


class HandshakeError(WebSocketError):
    """An opening handshake was refused (RFC 6455 §4.2.1).

    ``status`` is the HTTP status to answer with, ``headers`` extra response
    headers (e.g. ``Sec-WebSocket-Version: 13`` for a bad version, §4.4).
    """

    def __init__(self, status: int, message: str, headers: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or []
