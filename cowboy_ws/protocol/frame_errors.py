"""Frame errors in one table, shared by both parsers (RFC 6455 §5.1-§5.5, RFC 7692 §6.1).

Each rule a frame header can break has an id, the exception class it raises
and its message.  The pure-Python parser (:mod:`.parse`) and the C parser
(``cw_parse_frames`` in ``_speedups``, wrapped by :mod:`._ckernels`) both
report a broken frame as an id and a detail (the frame's opcode or payload
length), and both build the exception with :func:`frame_error`.  The same bad
input thus raises the same class (hence the same close code, looked up in
``closecodes.ERROR_CODES`` through the class's ``reason``) and the same
message on both backends.

The ids are the C parser's ``CW_E_*`` codes (``_speedups/speedups.h``); keep
the two in step (``tests/test_speedups.py`` checks them).
"""

from __future__ import annotations

from .errors import FrameError, MessageTooBig, ProtocolError
from .opcodes import OPCODE_NAMES

__all__ = ["FRAME_ERRORS", "frame_error"] + [
    "E_RSV23", "E_RSV1", "E_RSV1_CTRL", "E_OPCODE", "E_CTRL_FRAG", "E_CTRL_LONG", "E_UNMASKED", "E_MASKED",
    "E_LEN16", "E_LEN64_TOP", "E_LEN64", "E_TOO_BIG"]

E_RSV23 = 1        # RSV2 or RSV3 set (§5.2)
E_RSV1 = 2         # RSV1 set, no extension negotiated (§5.2)
E_RSV1_CTRL = 3    # RSV1 on a control or continuation frame (RFC 7692 §6.1)
E_OPCODE = 4       # reserved opcode (§5.2); detail: the opcode
E_CTRL_FRAG = 5    # fragmented control frame (§5.5); detail: the opcode
E_CTRL_LONG = 6    # control frame over 125 bytes (§5.5); detail: the opcode
E_UNMASKED = 7     # unmasked frame from a client (§5.1)
E_MASKED = 8       # masked frame from a server (§5.1)
E_LEN16 = 9        # 16-bit length not minimal (§5.2)
E_LEN64_TOP = 10   # 64-bit length with the most significant bit set (§5.2)
E_LEN64 = 11       # 64-bit length not minimal (§5.2)
E_TOO_BIG = 12     # payload over max_frame_size; detail: the length

#: id -> (exception class, message).  In the message, ``{detail}`` is the detail,
#: ``{name}`` the name of the opcode in it, ``{limit}`` the ``max_frame_size`` in force.
FRAME_ERRORS: dict[int, tuple[type[ProtocolError], str]] = {
    E_RSV23: (FrameError, "RSV2/RSV3 set without a negotiated extension (RFC 6455 §5.2)"),
    E_RSV1: (FrameError, "RSV1 set without a negotiated extension (RFC 6455 §5.2)"),
    E_RSV1_CTRL: (FrameError, "RSV1 set on a control or continuation frame (RFC 7692 §6.1)"),
    E_OPCODE: (FrameError, "reserved opcode {detail:#x} (RFC 6455 §5.2)"),
    E_CTRL_FRAG: (FrameError, "{name} frame fragmented (RFC 6455 §5.5)"),
    E_CTRL_LONG: (FrameError, "{name} frame longer than 125 bytes (RFC 6455 §5.5)"),
    E_UNMASKED: (FrameError, "unmasked frame from a client (RFC 6455 §5.1)"),
    E_MASKED: (FrameError, "masked frame from a server (RFC 6455 §5.1)"),
    E_LEN16: (FrameError, "16-bit length not minimal (RFC 6455 §5.2)"),
    E_LEN64_TOP: (FrameError, "64-bit length with the top bit set (RFC 6455 §5.2)"),
    E_LEN64: (FrameError, "64-bit length not minimal (RFC 6455 §5.2)"),
    E_TOO_BIG: (MessageTooBig, "frame of {detail} bytes exceeds max_frame_size {limit}"),
}


def frame_error(error: int, detail: int = 0, limit: int | None = None) -> ProtocolError:
    """The exception for frame error ``error`` (an ``E_*`` id), to be raised by the caller.

    ``detail`` is the frame's opcode (``E_OPCODE``, ``E_CTRL_*``) or payload
    length (``E_TOO_BIG``); ``limit`` is the parser's ``max_frame_size``.
    """
    cls, message = FRAME_ERRORS[error]
    return cls(message.format(detail=detail, name=OPCODE_NAMES.get(detail), limit=limit))
