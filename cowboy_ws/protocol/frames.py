"""Frames: the base framing protocol of RFC 6455 §5.

:class:`FrameParser` is an incremental, batch parser: ``feed`` takes any chunk of
bytes (one byte up to many frames) and returns every frame completed by it, as
plain tuples ``(opcode, fin, rsv1, payload)`` with the payload already unmasked
(§5.3).  Plain tuples keep the per-frame cost to one allocation; the C mirror in
``_speedups`` returns the same shape.

Every per-frame rule of §5 is checked by the batch parse, on the header,
before any payload is buffered:

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

The batch parse itself is ``kernels.parse_frames``, chosen once by
:mod:`.kernels`: the pure-Python reference (:func:`.parse.parse_frames`) or its
C mirror (``_speedups``, wrapped by :mod:`._ckernels`); :class:`FrameParser`
keeps the buffer between feeds and completes a frame split across them.

Message-level rules (continuation without a start, a new start inside a
fragmented message, close payloads, UTF-8) belong to :mod:`.connection`.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from .errors import ProtocolError, UsageError
from .kernels import mask, parse_frames, unmask_join
from .limits import MAX_CONTROL_PAYLOAD
from .opcodes import OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, OPCODE_NAMES

BytesLike = bytes | bytearray | memoryview

__all__ = ["OPCODE_NAMES", "OP_BINARY", "OP_CLOSE", "OP_CONT", "OP_PING", "OP_PONG", "OP_TEXT", "Frame",
           "FrameParser", "frame_header", "serialize_frame"]

#: A parsed frame: ``(opcode, fin, rsv1, payload)``; ``fin`` and ``rsv1`` are truthy ints.
#: (A plain ``tuple`` at run time; its shape for type checkers.)
if TYPE_CHECKING:
    Frame = tuple[int, int, int, bytes]
else:
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

    #: Appends the complete frames at the start of the data to a list and returns the bytes
    #: they take: the backend's ``parse_frames(parser, data, frames)``, chosen by
    #: :mod:`.kernels` and called as a method.
    _parse = parse_frames

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
        part: bytes | bytearray = buf[start:]
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
            exc.frames = frames
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


#: Headers with a 16-bit and a 64-bit extended payload length (RFC 6455 §5.2, network byte order),
#: packed in one call rather than joined from two objects (measured: bench/README.md).
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
