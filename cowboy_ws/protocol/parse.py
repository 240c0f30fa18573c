"""The reference frame parser (RFC 6455 §5.2), pure Python.

:func:`parse_frames` is the pure-Python backend of ``FrameParser._parse``: it
takes the complete frames at the start of a buffer, checks each one's header
against the per-frame rules of RFC 6455 §5 (listed in :mod:`.frames`) and
unmasks its payload (§5.3).  The C parser (``cw_parse_frames``, wrapped by
:mod:`._ckernels`) has the same contract and is tested against this one;
:mod:`.kernels` chooses between them.

It imports only leaf modules (errors, limits, opcodes and the pure mask), so
that every other module, :mod:`._ckernels` and :mod:`.kernels` included, can
import it without an import cycle.
"""

from __future__ import annotations

from typing import Any, Union

from .errors import FrameError, MessageTooBig
from .limits import MAX_CONTROL_PAYLOAD
from .mask import TRANSLATE_THRESHOLD, mask
from .opcodes import OP_BINARY, OP_TEXT, OPCODE_NAMES

__all__ = ["parse_frames"]

BytesLike = Union[bytes, bytearray, memoryview]

_KNOWN_OPCODES = frozenset(OPCODE_NAMES)
_DATA_START = frozenset({OP_TEXT, OP_BINARY})


def parse_frames(parser: Any, data: BytesLike, frames: list) -> int:
    """Append the complete frames at the start of ``data`` to ``frames``; return the bytes they take.

    ``parser`` (a :class:`.frames.FrameParser`) gives the settings:
    ``mask_required``, ``rsv1_allowed`` and ``max_frame_size``.  Each frame is
    appended as ``(opcode, fin, rsv1, payload)`` with the payload unmasked
    (§5.3).  The first frame that breaks a rule raises its :class:`FrameError`
    or :class:`MessageTooBig`, the frames before it already appended; an
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
            raise FrameError(f"reserved opcode {opcode:#x} (RFC 6455 §5.2)")
        length = b1 & 0x7F
        if opcode & 0x8 and (length > MAX_CONTROL_PAYLOAD or not b0 & 0x80):
            raise FrameError(
                f"{OPCODE_NAMES[opcode]} frame "
                + ("fragmented" if not b0 & 0x80 else "longer than 125 bytes")
                + " (RFC 6455 §5.5)")
        if b1 & 0x80 != mask_bit:
            raise FrameError("unmasked frame from a client (RFC 6455 §5.1)" if mask_bit
                             else "masked frame from a server (RFC 6455 §5.1)")
        start = pos + 2
        if length >= 126:
            if length == 126:
                if n - start < 2:
                    break
                length = (data[start] << 8) | data[start + 1]
                start += 2
                if length < 126:
                    raise FrameError("16-bit length not minimal (RFC 6455 §5.2)")
            else:
                if n - start < 8:
                    break
                length = int.from_bytes(data[start:start + 8], "big")
                start += 8
                if length >> 63:
                    raise FrameError("64-bit length with the top bit set (RFC 6455 §5.2)")
                if length < 65536:
                    raise FrameError("64-bit length not minimal (RFC 6455 §5.2)")
        if limit is not None and length > limit:
            raise MessageTooBig(f"frame of {length} bytes exceeds max_frame_size {limit}")
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
        raise FrameError("RSV2/RSV3 set without a negotiated extension (RFC 6455 §5.2)")
    if not rsv1_allowed:
        raise FrameError("RSV1 set without a negotiated extension (RFC 6455 §5.2)")
    if opcode not in _DATA_START:
        raise FrameError("RSV1 set on a control or continuation frame (RFC 7692 §6.1)")
