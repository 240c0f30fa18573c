"""What a handler may ask to send: Cowboy's OutFrame terms (``cow_ws:frame()``) and commands.

One place normalizes and validates them, for the connection (:mod:`cowboy_ws.websocket`)
and for broadcasts (:mod:`cowboy_ws.process`).  A call result's frames and commands are
all checked before any of them is acted on, as Cowboy builds every frame first: a bad
element anywhere in a list sends nothing of that list (the connection closes with 1011).

OutFrame forms (data: bytes-like, str, or a possibly nested list/tuple of those):
``"close"``, ``"ping"``, ``"pong"``; ``("text", data)``, ``("binary", data)``,
``("ping", data)``, ``("pong", data)``, ``("close", data)`` (code 1000),
``("close", code, data)``.  Commands: ``("active", bool)``, ``("deflate", bool)``,
``("set_options", dict)``, ``("shutdown_reason", any)``.
"""

from __future__ import annotations

import reprlib
from typing import Any

from .protocol import closecodes
from .protocol.connection import encode_close_payload
from .protocol.errors import UsageError
from .protocol.frames import OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, serialize_frame
from .protocol.limits import MAX_CONTROL_PAYLOAD

__all__ = ["BadResult", "COMMANDS", "OPCODES", "encode_broadcast", "flatten_broadcast", "iodata",
           "normalize", "normalize_frame", "short"]

OPCODES = {"text": OP_TEXT, "binary": OP_BINARY, "ping": OP_PING, "pong": OP_PONG, "close": OP_CLOSE}
COMMANDS = frozenset({"active", "deflate", "set_options", "shutdown_reason"})

#: What the error messages say a frame may be.
FRAME_FORMS = ('"close" | "ping" | "pong" | (kind, data) with kind text/binary/ping/pong/close '
               '| ("close", code, data); data: bytes, str or a list of those')

_repr = reprlib.Repr()
_repr.maxstring = 60
_repr.maxother = 60
_repr.maxlevel = 3
_repr.maxlist = _repr.maxtuple = _repr.maxdict = 6


def short(value: Any) -> str:
    """A bounded repr for error messages (a handler's whole state is never printed)."""
    return _repr.repr(value)


class BadResult(TypeError):
    """A callback returned something that is not a valid call result, frame or command."""


def iodata(data: Any) -> bytes:
    """Flatten iodata (bytes-like, str, or a nested list/tuple of those) to bytes."""
    if isinstance(data, bytes):
        return data
    if isinstance(data, str):
        return data.encode()
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    if isinstance(data, (list, tuple)):
        return b"".join([iodata(part) for part in data])
    raise BadResult(f"frame data must be bytes, str or a list of those, not {type(data).__name__}")


def normalize_frame(frame: Any) -> tuple[str, bytes, int | None]:
    """An OutFrame as ``(kind, data, close_code)``, data flattened and checked; raises BadResult.

    Control frames carry at most 125 bytes (RFC 6455 §5.5); a close code must be one an
    endpoint may send (§7.4) and its reason at most 123 bytes of UTF-8 (§5.5.1).
    """
    if isinstance(frame, str):
        if frame in ("close", "ping", "pong"):
            return frame, b"", None
        raise BadResult(f"unknown frame {short(frame)}: expected {FRAME_FORMS}")
    if isinstance(frame, tuple) and frame and frame[0] in OPCODES:
        kind = frame[0]
        if len(frame) == 2:
            data = iodata(frame[1])
            if kind == "close":
                return _close(closecodes.NORMAL, data)
            if kind in ("ping", "pong") and len(data) > MAX_CONTROL_PAYLOAD:
                raise BadResult(f"a {kind} frame carries at most {MAX_CONTROL_PAYLOAD} bytes, "
                                f"not {len(data)} (RFC 6455 §5.5)")
            return kind, data, None
        if len(frame) == 3 and kind == "close" and isinstance(frame[1], int) and not isinstance(frame[1], bool):
            return _close(frame[1], iodata(frame[2]))
    raise BadResult(f"invalid frame {short(frame)}: expected {FRAME_FORMS}")


def _close(code: int, reason: bytes) -> tuple[str, bytes, int | None]:
    try:
        encode_close_payload(code, reason)
    except UsageError as exc:
        raise BadResult(f"invalid close frame: {exc}") from None
    return "close", reason, code


def normalize(items: Any, *, commands: bool) -> list[tuple]:
    """A call result's frames (or, with ``commands``, frames and commands), every one checked first.

    Frames come back as ``(kind, data, code)``; commands as ``(name, value)``.
    """
    out: list[tuple] = []
    for item in items if isinstance(items, list) else [items]:
        if commands and isinstance(item, tuple) and item and item[0] in COMMANDS:
            if len(item) != 2:
                raise BadResult(f"invalid command {short(item)}: expected (name, value)")
            name, value = item
            if name in ("active", "deflate") and not isinstance(value, bool):
                raise BadResult(f"command {name!r} takes True or False, not {short(value)}")
            if name == "set_options" and not isinstance(value, dict):
                raise BadResult(f"command 'set_options' takes a dict, not {short(value)}")
            out.append(item)
        else:
            out.append(normalize_frame(item))
    return out


def flatten_broadcast(frame: Any) -> tuple[str, bytes]:
    """A broadcast OutFrame as ``(kind, data)``: a data or ping/pong frame, never a close."""
    kind, data, _code = normalize_frame(frame)
    if kind == "close":
        raise UsageError("cannot broadcast a close frame")
    return kind, data


def encode_broadcast(frame: Any) -> bytes:
    """Serialize an OutFrame once for :func:`cowboy_ws.broadcast` (uncompressed, server side)."""
    kind, data = flatten_broadcast(frame)
    return serialize_frame(OPCODES[kind], data)
