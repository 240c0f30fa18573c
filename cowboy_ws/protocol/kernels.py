"""The one place that picks the kernel backend: masking, UTF-8 validation, batch frame parsing.

Two backends with the same contracts:

* ``"python"``: the pure-Python reference (:mod:`.mask`, :mod:`.utf8`,
  :mod:`.parse`), always there;
* ``"c"``: the C mirror compiled from ``_speedups/`` into ``cowboy_ws._speedups``
  (cffi), wrapped by :mod:`._ckernels`.

The C backend has two more kernels (None with pure Python): :data:`parse_messages`, a
server's run of small whole messages parsed, validated and turned into events in one call,
and :data:`send_many`, one buffer written to many sockets in one call (a broadcast; POSIX).

The C backend is chosen at import when ``cowboy_ws._speedups`` imports and the
environment variable ``COWBOY_WS_PURE`` is unset or ``0``; ``COWBOY_WS_PURE=1``
forces pure Python.  ``cowboy_ws.backend()`` returns :data:`BACKEND`.  Every
other module imports the kernels from here, never from their implementation
modules (``FrameParser._parse`` is :data:`parse_frames`).

Imports run one way only: this module imports the implementations, and none of
them imports this module (``tests/test_protocol_layer.py`` checks that the
whole package has no import cycle).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Protocol

from .mask import mask, unmask_join
from .parse import parse_frames
from .utf8 import Utf8Validator as _PyUtf8Validator
from .utf8 import validate_utf8

__all__ = ["BACKEND", "C_UNAVAILABLE", "Utf8Validator", "Utf8ValidatorType", "mask", "parse_frames",
           "parse_messages", "pure_forced", "send_many", "unmask_join", "validate_utf8"]


class Utf8ValidatorType(Protocol):
    """The API both backends' incremental UTF-8 validators share (for type annotations)."""

    def reset(self) -> None: ...

    def feed(self, data: bytes | bytearray | memoryview, final: bool = False) -> None: ...


#: The incremental UTF-8 validator class of the backend (RFC 6455 §8.1).
Utf8Validator: type[Utf8ValidatorType] = _PyUtf8Validator

#: ``_ckernels.parse_messages(parser, data, check_utf8, counts) -> (events, bytes used)`` with the
#: C backend; None with pure Python, whose general path is as fast (RFC 6455 §5.2, §8.1).
parse_messages: Callable[[Any, Any, bool, list[int] | None], tuple[list[tuple[str, bytes]], int]] | None = None
#: ``_ckernels.send_many(fds, data) -> [bytes taken or -errno, ...]`` with the C backend on POSIX, else None.
send_many: Callable[[list[int], bytes], list[int]] | None = None

#: ``"c"`` or ``"python"``.
BACKEND = "python"
#: Why the C backend is not active (None when it is).
C_UNAVAILABLE: str | None = None


def pure_forced() -> bool:
    """Whether ``COWBOY_WS_PURE`` asks for pure Python (set to anything but ``""``/``0``/false/no/off)."""
    return os.environ.get("COWBOY_WS_PURE", "").strip().lower() not in ("", "0", "false", "no", "off")


if pure_forced():
    C_UNAVAILABLE = "COWBOY_WS_PURE is set"
else:
    try:
        from . import _ckernels
    except ImportError as exc:  # not built (COWBOY_WS_SPEEDUPS=no, no compiler) or broken
        C_UNAVAILABLE = f"cowboy_ws._speedups does not import: {exc}"
    else:
        mask = _ckernels.mask
        unmask_join = _ckernels.unmask_join
        Utf8Validator = _ckernels.Utf8Validator
        validate_utf8 = _ckernels.validate_utf8
        parse_frames = _ckernels.parse_frames
        parse_messages = _ckernels.parse_messages
        if os.name == "posix":
            send_many = _ckernels.send_many
        BACKEND = "c"
