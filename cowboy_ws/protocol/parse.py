"""The reference frame parser (RFC 6455 §5.2), pure Python.

:func:`parse_frames` is the pure-Python backend of ``FrameParser._parse``: it
takes the complete frames at the start of a buffer, checks each one's header
against the per-frame rules of RFC 6455 §5 (listed in :mod:`.frames`) and
unmasks its payload (§5.3).  The C parser (``cw_parse_frames``, wrapped by
:mod:`._ckernels`) has the same contract and is tested against this one;
:mod:`.kernels` chooses between them.

A broken frame raises the exception :func:`.frame_errors.frame_error` builds
from the one table both parsers share.  This module imports only leaf modules
(the error table, limits, opcodes and the pure mask), so that every other
module, :mod:`._ckernels` and :mod:`.kernels` included, can import it without an
import cycle.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .frame_errors import (
    E_CTRL_FRAG,
    E_CTRL_LONG,
    E_LEN16,
    E_LEN64,
    E_LEN64_TOP,
    E_MASKED,
    E_OPCODE,
    E_RSV1,
    E_RSV1_CTRL,
    E_RSV23,
    E_TOO_BIG,
    E_UNMASKED,
    frame_error,
)
from .limits import MAX_CONTROL_PAYLOAD
from .mask import TRANSLATE_THRESHOLD, mask
from .opcodes import OP_BINARY, OP_TEXT, OPCODE_NAMES

__all__ = ["parse_frames"]

BytesLike = bytes | bytearray | memoryview

if TYPE_CHECKING:  # types only: this module imports no other module of the package than its leaves
    from typing import Protocol

    #: A parsed frame, ``(opcode, fin, rsv1, payload)``: :data:`.frames.Frame` (``fin``, ``rsv1`` truthy ints).
    ParsedFrame = tuple[int, int, int, bytes]

    class ParserSettings(Protocol):
        """What a parse reads of its :class:`.frames.FrameParser`."""

        mask_required: bool
        rsv1_allowed: bool
        max_frame_size: int | None
        _buf: bytearray

_KNOWN_OPCODES = frozenset(OPCODE_NAMES)
_DATA_START = frozenset({OP_TEXT, OP_BINARY})


def parse_frames(parser: ParserSettings, data: BytesLike, frames: list[ParsedFrame]) -> int:
    """Append the complete frames at the start of ``data`` to ``frames``; return the bytes they take.

    ``parser`` (a :class:`.frames.FrameParser`) gives the settings:
    ``mask_required``, ``rsv1_allowed`` and ``max_frame_size``.  Each frame is
    appended as ``(opcode, fin, rsv1, payload)`` with the payload unmasked
    (§5.3).  The first frame that breaks a rule raises its
    :func:`.frame_errors.frame_error` (a :class:`.errors.FrameError` or
    :class:`.errors.MessageTooBig`), the frames before it already appended; an
    incomplete frame at the end is left for the caller to buffer.
    """
    if type(data) is memoryview:  # the inlined unmask below repeats the key with `*`
        data = data.tobytes()
    n = len(data)
    pos = 0
    append = frames.append
    mask_bit = 0x80 if parser.mask_required else 0
    limit = parser.max_frame_size
    from_bytes = int.from_bytes
    while n - pos >= 2:
        b0 = data[pos]
        b1 = data[pos + 1]
        opcode = b0 & 0x0F
        if b0 & 0x70:
            _check_rsv(b0, opcode, parser.rsv1_allowed)
        if opcode not in _KNOWN_OPCODES:
            raise frame_error(E_OPCODE, opcode)
        length = b1 & 0x7F
        if opcode & 0x8 and (length > MAX_CONTROL_PAYLOAD or not b0 & 0x80):
            raise frame_error(E_CTRL_LONG if b0 & 0x80 else E_CTRL_FRAG, opcode)
        if b1 & 0x80 != mask_bit:
            raise frame_error(E_UNMASKED if mask_bit else E_MASKED)
        start = pos + 2
        if length >= 126:
            if length == 126:
                if n - start < 2:
                    break
                length = (data[start] << 8) | data[start + 1]
                start += 2
                if length < 126:
                    raise frame_error(E_LEN16)
            else:
                if n - start < 8:
                    break
                length = int.from_bytes(data[start:start + 8], "big")
                start += 8
                if length >> 63:
                    raise frame_error(E_LEN64_TOP)
                if length < 65536:
                    raise frame_error(E_LEN64)
        if limit is not None and length > limit:
            raise frame_error(E_TOO_BIG, length, limit)
        if mask_bit:
            end = start + 4 + length
            if end > n:
                break
            if length < TRANSLATE_THRESHOLD:  # mask.mask's small-payload form, inlined (hot path)
                payload = (from_bytes(data[start + 4:end], "little")
                           ^ from_bytes((data[start:start + 4] * ((length >> 2) + 1))[:length], "little")
                           ).to_bytes(length, "little")
            else:
                payload = mask(data[start + 4:end], data[start:start + 4])
        else:
            end = start + length
            if end > n:
                break
            payload = bytes(data[start:end])
        append((opcode, b0 & 0x80, b0 & 0x40, payload))
        pos = end
    return pos


def _check_rsv(b0: int, opcode: int, rsv1_allowed: bool) -> None:
    """RSV bits are only allowed as a negotiated extension defines them (RFC 6455 §5.2, RFC 7692 §6.1)."""
    if b0 & 0x30:
        raise frame_error(E_RSV23)
    if not rsv1_allowed:
        raise frame_error(E_RSV1)
    if opcode not in _DATA_START:
        raise frame_error(E_RSV1_CTRL)
