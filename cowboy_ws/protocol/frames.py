"""Frames: the base framing protocol of RFC 6455 §5.

:class:`FrameParser` is an incremental, batch parser: ``feed`` takes any chunk of
bytes (one byte up to many frames) and returns every frame completed by it, as
plain tuples ``(opcode, fin, rsv1, payload)`` with the payload already unmasked
(§5.3).  Plain tuples keep the per-frame cost to one allocation; the C mirror in
``_speedups`` returns the same shape.

Every per-frame rule of §5 is checked here, on the header, before any payload
is buffered:

* §5.2: RSV1-3 must be 0 unless an extension defines them (RSV1 for
  permessage-deflate, RFC 7692 §6.1, only on a data frame that starts a
  message); reserved opcodes 0x3-0x7 and 0xB-0xF fail the connection; a 64-bit
  length must have its most significant bit clear; the *minimal* number of bytes
  must be used to encode the length.
* §5.1/§5.3: a server fails the connection on an unmasked frame, a client on a
  masked one.
* §5.5: control frames carry at most 125 bytes and are never fragmented.
* The configured ``max_frame_size`` bounds the payload length, so an oversized
  payload is refused (1009) before a byte of it is kept.

The batch parser has a C mirror (``_speedups``): when :mod:`.kernels` selects
the C backend, ``FrameParser._parse`` is the C parser (the pure-Python one stays
as ``FrameParser._parse_py``, the reference).

Message-level rules (continuation without a start, a new start inside a
fragmented message, close payloads, UTF-8) belong to :mod:`.connection`.
"""

from __future__ import annotations

import struct
from typing import Union

from .errors import FrameError, MessageTooBig, ProtocolError, UsageError
from .limits import MAX_CONTROL_PAYLOAD
from . import kernels as _kernels
from .kernels import mask, unmask_join
from .mask import TRANSLATE_THRESHOLD

BytesLike = Union[bytes, bytearray, memoryview]

# Opcodes, RFC 6455 §5.2 / §11.8.
OP_CONT = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

OPCODE_NAMES = {
    OP_CONT: "continuation",
    OP_TEXT: "text",
    OP_BINARY: "binary",
    OP_CLOSE: "close",
    OP_PING: "ping",
    OP_PONG: "pong",
}
_KNOWN_OPCODES = frozenset(OPCODE_NAMES)
_DATA_START = frozenset({OP_TEXT, OP_BINARY})

#: A parsed frame: ``(opcode, fin, rsv1, payload)``; ``fin`` and ``rsv1`` are truthy ints.
Frame = tuple


class FrameParser:
    """Incremental RFC 6455 §5.2 frame parser for one direction of a connection.

    ``mask_required`` is True for a server (client frames must be masked, §5.1)
    and False for a client (server frames must not be).  ``rsv1_allowed`` is set
    once permessage-deflate is negotiated.  ``max_frame_size`` (None for no
    limit) bounds each frame's payload length.

    After a :class:`ProtocolError` the parser is broken and must not be fed
    again.  The frames completed before the bad one are on the exception as
    ``exc.frames`` so that none is lost.
    """

    __slots__ = ("_buf", "mask_required", "rsv1_allowed", "max_frame_size")

    def __init__(self, *, mask_required: bool, max_frame_size: int | None = None,
                 rsv1_allowed: bool = False) -> None:
        self._buf = bytearray()
        self.mask_required = mask_required
        self.rsv1_allowed = rsv1_allowed
        self.max_frame_size = max_frame_size

    @property
    def buffered(self) -> int:
        """Bytes received but not yet part of a complete frame."""
        return len(self._buf)

    def release(self) -> None:
        """Drop the receive buffer's storage if it holds nothing (hibernation)."""
        if not self._buf:
            self._buf = bytearray()

    def pending_frame(self) -> tuple[int, int] | None:
        """``(opcode, rsv1)`` of the incomplete frame at the head of the buffer, if any."""
        buf = self._buf
        return (buf[0] & 0x0F, buf[0] & 0x40) if buf else None

    def peek_partial(self, offset: int) -> bytes | None:
        """The buffered payload of the incomplete frame from ``offset`` on, unmasked (§5.3).

        None if no byte past ``offset`` is buffered yet.  The header was
        already checked by ``feed``; only the new bytes are unmasked, so
        peeking at a frame as it arrives costs O(frame size) in all.
        """
        buf = self._buf
        n = len(buf)
        if n < 2:
            return None
        length = buf[1] & 0x7F
        start = 4 if length == 126 else 10 if length == 127 else 2
        masked = buf[1] & 0x80
        if masked:
            start += 4
        start += offset
        if n <= start:
            return None
        part = buf[start:]
        if masked:
            key = buf[start - offset - 4:start - offset]
            shift = offset & 3
            part = mask(part, bytes(key[shift:] + key[:shift]))
        return bytes(part)

    def feed(self, data: BytesLike) -> list[Frame]:
        """Consume ``data``; return every frame it completes, in order (RFC 6455 §5.2)."""
        buf = self._buf
        frames: list[Frame] = []
        try:
            if buf:
                # Complete the frame begun in an earlier chunk by moving only its own missing
                # bytes into the buffer; the frames after it are parsed where they lie.
                data = self._complete_head(data, frames)
                if buf:
                    return frames
            pos = self._parse(data, frames)
        except ProtocolError as exc:
            exc.frames = frames  # type: ignore[attr-defined]
            raise
        if pos < len(data):
            buf += data[pos:]
        return frames

    def _complete_head(self, data: BytesLike, frames: list[Frame]) -> BytesLike:
        """Complete the frame begun in the buffer from ``data``; return the rest of ``data``.

        Takes at most what the buffered frame still lacks: first its header, checked by
        ``_parse`` as soon as it is whole, then its payload.  When ``data`` holds the whole
        rest of the payload, the frame is made from the two pieces where they lie (one
        unmasking pass into the payload, :func:`unmask_join`), so that a large frame split
        over two reads is copied once, not buffered whole and then copied again.
        """
        buf = self._buf
        n = len(data)
        used = 0
        while buf and used < n:
            have = len(buf)
            if have < 2:
                need = 2
            else:
                b1 = buf[1]
                length = b1 & 0x7F
                head = 2 + (2 if length == 126 else 8 if length == 127 else 0) + (4 if b1 & 0x80 else 0)
                need = head
                if have >= head:  # the header is whole (and was checked): add the payload's length
                    if length == 126:
                        length = (buf[2] << 8) | buf[3]
                    elif length == 127:
                        length = int.from_bytes(buf[2:10], "big")
                    need += length
                    limit = self.max_frame_size
                    if need - have <= n - used and (limit is None or length <= limit):
                        # the rest of the payload is here (and the limit, which set_options may
                        # have lowered since the header was checked, still holds)
                        end = used + need - have
                        tail = data[used:end]
                        payload = (unmask_join(buf, head, tail) if b1 & 0x80
                                   else bytes(buf[head:]) + bytes(tail))
                        b0 = buf[0]
                        frames.append((b0 & 0x0F, b0 & 0x80, b0 & 0x40, payload))
                        del buf[:]
                        return data[end:]
            take = min(need - have, n - used)
            buf += data[used:used + take]
            used += take
            if len(buf) == need:
                pos = self._parse(buf, frames)
                del buf[:pos]
        return data[used:] if used else data

    def _parse(self, data: BytesLike, frames: list[Frame]) -> int:
        """Append the complete frames of ``data`` to ``frames``; return the bytes used."""
        if type(data) is memoryview:  # the inlined unmask below repeats the key with `*`
            data = data.tobytes()
        n = len(data)
        pos = 0
        append = frames.append
        mask_bit = 0x80 if self.mask_required else 0
        limit = self.max_frame_size
        from_bytes = int.from_bytes
        while n - pos >= 2:
            b0 = data[pos]
            b1 = data[pos + 1]
            opcode = b0 & 0x0F
            if b0 & 0x70:
                self._check_rsv(b0, opcode)
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

    def _check_rsv(self, b0: int, opcode: int) -> None:
        """RSV bits are only allowed as a negotiated extension defines them (RFC 6455 §5.2, RFC 7692 §6.1)."""
        if b0 & 0x30:
            raise FrameError("RSV2/RSV3 set without a negotiated extension (RFC 6455 §5.2)")
        if not self.rsv1_allowed:
            raise FrameError("RSV1 set without a negotiated extension (RFC 6455 §5.2)")
        if opcode not in _DATA_START:
            raise FrameError("RSV1 set on a control or continuation frame (RFC 7692 §6.1)")


#: Headers with a 16-bit and a 64-bit extended payload length (RFC 6455 §5.2, network byte order).
_HEAD16 = struct.Struct("!BBH").pack
_HEAD64 = struct.Struct("!BBQ").pack


def frame_header(opcode: int, length: int, *, fin: bool = True, rsv1: bool = False,
                 masked: bool = False) -> bytes:
    """The header of a frame (RFC 6455 §5.2), minimal length encoding, without the masking key."""
    b0 = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    mbit = 0x80 if masked else 0
    if length < 126:
        return bytes((b0, mbit | length))
    if length < 65536:
        return _HEAD16(b0, mbit | 126, length)
    return _HEAD64(b0, mbit | 127, length)


def serialize_frame(opcode: int, payload: BytesLike = b"", *, fin: bool = True, rsv1: bool = False,
                    mask_key: bytes | None = None) -> bytes:
    """Encode one frame (RFC 6455 §5.2).

    ``mask_key`` (4 bytes) masks the payload as a client must (§5.3).
    Control frames over 125 bytes or fragmented are refused with
    :class:`UsageError`: the application, not the peer, made the mistake.
    """
    length = len(payload)
    if opcode & 0x8 and (length > MAX_CONTROL_PAYLOAD or not fin):
        raise UsageError(f"{OPCODE_NAMES.get(opcode, opcode)} frame must be unfragmented "
                         f"and at most 125 bytes (RFC 6455 §5.5), got {length}")
    if mask_key is not None:
        return frame_header(opcode, length, fin=fin, rsv1=rsv1, masked=True) + mask_key + mask(payload, mask_key)
    return frame_header(opcode, length, fin=fin, rsv1=rsv1) + payload


# -- backend selection (the one place for frames; kernels.BACKEND decides) ------------

#: The pure-Python parser, the reference, kept whichever backend is active.
FrameParser._parse_py = FrameParser._parse  # type: ignore[attr-defined]
if _kernels.BACKEND == "c":
    FrameParser._parse = _kernels.parse_frames  # type: ignore[assignment,method-assign]
