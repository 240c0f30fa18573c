"""The connection state machine: RFC 6455 §5.4-§5.6 messages, §5.5 control frames, §7 closing.

:class:`Connection` is sans-IO: :meth:`Connection.receive_data` takes bytes and
returns events; the ``send_*`` methods queue bytes that :meth:`data_to_send`
hands over in one piece, so the runtime writes everything a batch produced in
one ``send``.

Events are plain tuples, the same shape as Cowboy's in-frames:

* ``("text", bytes)`` / ``("binary", bytes)``: a whole message, fragments
  reassembled (§5.4) and inflated (RFC 7692 §7.2.2); text is UTF-8-validated
  incrementally, failing as soon as a bad sequence arrives (§8.1).
* ``("ping", bytes)`` / ``("pong", bytes)``: a pong answering a ping is queued
  automatically before the event is returned (§5.5.2).
* ``("close", code | None, reason: bytes)``: the peer's Close frame (§5.5.1);
  if this side had not sent one, the code is echoed back (§7.1.5 / §5.5.1).
* ``("error", ProtocolError)``: always the last event; the connection is failed
  (§7.1.7) with a Close frame carrying ``exc.code``.

The automatic Close (echo or failure) is queued *behind* whatever the
application sends while handling the events of the same batch: replies to the
messages that came before the Close or the bad frame are not lost (§5.5.1: an
endpoint may finish sending its message before its Close).  Until that Close
is handed out by :meth:`Connection.data_to_send`, :attr:`Connection.can_send`
stays true.

UTF-8 fails fast even inside one frame: when a text frame is still arriving,
the part already received is validated (Autobahn 6.4.3/6.4.4 send one frame in
chunks and expect the failure at the bad chunk).

Limits: one ``max_frame_size`` bounds a frame's payload length, the inflated
payload and the reassembled message (Cowboy's ``max_frame_size``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from operator import itemgetter
from typing import TYPE_CHECKING, Any, Literal

from . import closecodes
from .deflate import PerMessageDeflate
from .errors import FrameError, InvalidUtf8, MessageTooBig, ProtocolError, UsageError
from .frames import (
    _HEAD16,
    _HEAD64,
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    Frame,
    FrameParser,
    frame_header,
    serialize_frame,
)
from .kernels import Utf8Validator, Utf8ValidatorType, parse_messages, validate_utf8
from .limits import MAX_FRAME_SIZE

BytesLike = bytes | bytearray | memoryview
#: An event (see above): a plain ``tuple`` at run time; its items depend on the kind.
if TYPE_CHECKING:
    Event = tuple[Any, ...]
else:
    Event = tuple
Role = Literal["server", "client"]

OPEN = "open"          # both directions open
CLOSING = "closing"    # this side sent a Close frame and waits for the peer's (§7.1.2)
CLOSED = "closed"      # the closing handshake is done or the connection was failed

_KIND = {OP_TEXT: "text", OP_BINARY: "binary"}
#: The header of an unmasked final text / binary frame by payload length (< 126), RFC 6455 §5.2.
_SMALL_HEAD = {"text": tuple(bytes((0x80 | OP_TEXT, n)) for n in range(126)),
               "binary": tuple(bytes((0x80 | OP_BINARY, n)) for n in range(126))}
_kinds = itemgetter(0)
_payloads = itemgetter(1)

#: Payloads of at least this many bytes are queued apart from their header (no concatenation
#: copy): the runtime writes header and payload with one sendmsg.
SEPARATE_PAYLOAD = 16384  # >= 126: such a header always has an extended length
_MAX_PARTS = 32  # fragments kept as separate objects before they are merged into one buffer


def encode_close_payload(code: int | None, reason: BytesLike | str = b"") -> bytes:
    """The body of a Close frame: 2-byte code then UTF-8 reason (RFC 6455 §5.5.1)."""
    if code is None:
        if reason:
            raise UsageError("a close reason needs a close code (RFC 6455 §5.5.1)")
        return b""
    if not closecodes.is_valid_on_wire(code):
        raise UsageError(f"close code {code} may not be sent (RFC 6455 §7.4)")
    if isinstance(reason, str):
        reason = reason.encode()
    payload = code.to_bytes(2, "big") + bytes(reason)
    if len(payload) > 125:
        raise UsageError("close reason longer than 123 bytes (RFC 6455 §5.5)")
    return payload


def parse_close_payload(payload: bytes) -> tuple[int | None, bytes]:
    """Decode and check a received Close body (RFC 6455 §5.5.1, §7.4): (code or None, reason)."""
    if not payload:
        return None, b""
    if len(payload) == 1:
        raise FrameError("close frame with a 1-byte payload (RFC 6455 §5.5.1)")
    code = int.from_bytes(payload[:2], "big")
    if not closecodes.is_valid_on_wire(code):
        raise FrameError(f"invalid close code {code} (RFC 6455 §7.4)")
    reason = payload[2:]
    if not validate_utf8(reason):
        raise InvalidUtf8("close reason is not valid UTF-8 (RFC 6455 §5.5.1)")
    return code, reason


def _as_bytes(data: BytesLike | str) -> BytesLike:
    return data.encode() if isinstance(data, str) else data


class Connection:
    """One WebSocket connection's protocol state, after the opening handshake.

    ``role`` is ``"server"`` (incoming frames must be masked, outgoing are not)
    or ``"client"`` (the reverse; outgoing masking keys come from ``mask_key``,
    default ``os.urandom``).  ``deflate`` is the negotiated permessage-deflate
    codec, if any.  ``validate_utf8=False`` skips text validation (Cowboy's
    ``validate_utf8`` option).
    """

    __slots__ = ("role", "state", "max_frame_size", "validate_utf8", "deflate", "compress",
                 "close_code", "close_reason", "_parser", "_out", "_mask_key",
                 "_msg_kind", "_msg_parts", "_msg_size", "_msg_compressed", "_utf8",
                 "_close_reply", "_close_held", "_partial_checked", "counts")

    def __init__(self, role: Role = "server", *, max_frame_size: int | None = MAX_FRAME_SIZE,
                 validate_utf8: bool = True, deflate: PerMessageDeflate | None = None,
                 mask_key: Callable[[], bytes] | None = None) -> None:
        if role not in ("server", "client"):
            raise UsageError(f"role must be 'server' or 'client', not {role!r}")
        self.role = role
        self.state = OPEN
        self.max_frame_size = max_frame_size
        self.validate_utf8 = validate_utf8
        self.deflate = deflate
        #: compress outgoing messages when deflate was negotiated (the ``deflate`` command toggles it)
        self.compress = deflate is not None
        #: set when the peer's Close frame arrives, or when the connection is failed
        self.close_code: int | None = None
        self.close_reason: bytes = b""
        self._parser: FrameParser | None = self._new_parser()  # None while hibernating (rebuilt by a read)
        self._out: list[bytes] = []
        self._mask_key = (mask_key or (lambda: os.urandom(4))) if role == "client" else None
        self._msg_kind: str | None = None   # kind of the fragmented message in progress
        self._msg_parts: list[bytes | bytearray] | tuple[()] = ()  # a list while a fragmented message arrives
        self._msg_size = 0
        self._msg_compressed = False
        self._utf8: Utf8ValidatorType | None = None
        self._close_reply: bytes | None = None  # automatic Close, queued behind the batch's replies
        self._close_held = False                # hold_close(): the automatic Close waits for the application
        self._partial_checked = 0               # payload bytes of an incomplete text frame already validated
        #: metrics, when the runtime sets it: whole messages received, added up as they are parsed,
        #: ``[text, text bytes, binary, binary bytes]`` (the runtime takes and zeroes them)
        self.counts: list[int] | None = None

    # -- receiving -----------------------------------------------------------------

    def receive_data(self, data: BytesLike) -> list[Event]:
        """Feed bytes from the peer; return the events they complete (RFC 6455 §5-§7)."""
        if self.state == CLOSED or not data:
            return []
        parser = self._parser
        if parser is None:  # hibernated
            parser = self._parser = self._new_parser()
        if (parse_messages is not None and self.state is OPEN and self._msg_kind is None
                and not self._partial_checked and not parser._buf):
            # C backend: a run of small whole messages in one call; the rest, if any, below
            events, pos = parse_messages(parser, data, self.validate_utf8, self.counts)
            if pos:
                if pos < len(data):
                    events += self._receive(parser, data[pos:])
                return events
        return self._receive(parser, data)

    def _count(self, events: list[Event], sign: int = 1) -> None:
        """Add the messages among ``events`` to :attr:`counts` (metrics, general path)."""
        counts = self.counts
        assert counts is not None
        for event in events:
            kind = event[0]
            if kind == "text":
                counts[0] += sign
                counts[1] += sign * len(event[1])
            elif kind == "binary":
                counts[2] += sign
                counts[3] += sign * len(event[1])

    def uncount(self, events: list[Event]) -> None:
        """Take the messages among ``events`` back out of :attr:`counts` (the runtime did not deliver them)."""
        if self.counts is not None:
            self._count(events, -1)

    def _receive(self, parser: FrameParser, data: BytesLike) -> list[Event]:
        """:meth:`receive_data`'s general path: any frames, through the parser and the message rules."""
        events: list[Event] = []
        try:
            frames = parser.feed(data)
        except ProtocolError as exc:
            self._handle_frames(getattr(exc, "frames", ()), events)
            if self.state != CLOSED:
                self._fail(exc, events)
            if self.counts is not None:
                self._count(events)
            return events
        self._handle_frames(frames, events)
        if self.validate_utf8 and self.state is not CLOSED:
            head = parser.pending_frame()  # None when no frame is incomplete
            if head is not None and (head[0] == OP_TEXT or head[0] == OP_CONT):
                try:
                    self._check_partial_text(parser, *head)
                except ProtocolError as exc:
                    self._fail(exc, events)
        if self.counts is not None:
            self._count(events)
        return events

    def _check_partial_text(self, parser: FrameParser, opcode: int, rsv1: int) -> None:
        """Validate the received part of an incomplete text frame (RFC 6455 §8.1: fail fast)."""
        if rsv1 or not ((opcode == OP_TEXT and self._msg_kind is None)
                        or (opcode == OP_CONT and self._msg_kind == "text" and not self._msg_compressed)):
            return
        chunk = parser.peek_partial(self._partial_checked)
        if chunk is None:
            return
        if self._utf8 is None:
            self._utf8 = Utf8Validator()
        self._utf8.feed(chunk)
        self._partial_checked += len(chunk)

    def _handle_frames(self, frames: Iterable[Frame], events: list[Event]) -> None:
        append = events.append
        try:
            for frame in frames:
                opcode, fin, rsv1, payload = frame
                # fast path: a whole data message, compressed or not, while open
                if (fin and (opcode == OP_TEXT or opcode == OP_BINARY) and self.state is OPEN
                        and self._msg_kind is None and not self._partial_checked):
                    if rsv1:  # RFC 7692 §7.2.2; bounded by max_frame_size like a reassembled message
                        payload = self.deflate.decompress(payload, True, self.max_frame_size)  # type: ignore[union-attr]
                    if opcode == OP_TEXT:
                        if self.validate_utf8 and not validate_utf8(payload):
                            raise InvalidUtf8("text message is not valid UTF-8 (RFC 6455 §8.1)")
                        append(("text", payload))
                    else:
                        append(("binary", payload))
                    continue
                if self.state is CLOSED:
                    return
                self._handle_frame(frame, events)
        except ProtocolError as exc:
            self._fail(exc, events)

    def _handle_frame(self, frame: Frame, events: list[Event]) -> None:
        opcode, fin, rsv1, payload = frame
        kind = _KIND.get(opcode)
        if kind is not None:
            if self._msg_kind is not None:
                raise FrameError("new data frame inside a fragmented message (RFC 6455 §5.4)")
            if fin and not rsv1:
                if kind == "text" and self.validate_utf8:
                    if self._partial_checked:
                        self._utf8.feed(memoryview(payload)[self._partial_checked:], True)  # type: ignore[union-attr]
                        self._partial_checked = 0
                    elif not validate_utf8(payload):
                        raise InvalidUtf8("text message is not valid UTF-8 (RFC 6455 §8.1)")
                if self.state is OPEN:  # §7.1.2: after our Close, data is still checked but dropped
                    events.append((kind, payload))
                return
            self._msg_kind = kind
            self._msg_compressed = bool(rsv1)
            self._msg_parts = []
            self._msg_size = 0
            self._add_fragment(payload, fin, events)
        elif opcode == OP_CONT:
            if self._msg_kind is None:
                raise FrameError("continuation frame without a message to continue (RFC 6455 §5.4)")
            self._add_fragment(payload, fin, events)
        elif opcode == OP_PING:
            if self.state == OPEN:
                self._out.append(self._frame(OP_PONG, payload))
                events.append(("ping", payload))
        elif opcode == OP_PONG:
            if self.state == OPEN:
                events.append(("pong", payload))
        else:  # OP_CLOSE: the parser let only known opcodes through
            self._receive_close(payload, events)

    def _add_fragment(self, payload: bytes, fin: int, events: list[Event]) -> None:
        """Append one fragment to the message in progress (RFC 6455 §5.4, RFC 7692 §7.2.2)."""
        if self._msg_compressed:
            limit = None if self.max_frame_size is None else self.max_frame_size - self._msg_size
            payload = self.deflate.decompress(payload, bool(fin), limit)  # type: ignore[union-attr]
        self._msg_size += len(payload)
        if self.max_frame_size is not None and self._msg_size > self.max_frame_size:
            raise MessageTooBig(f"message exceeds max_frame_size {self.max_frame_size}")
        if self._msg_kind == "text" and self.validate_utf8:
            if self._utf8 is None:
                self._utf8 = Utf8Validator()
            if self._partial_checked:
                self._utf8.feed(memoryview(payload)[self._partial_checked:], bool(fin))
                self._partial_checked = 0
            else:
                self._utf8.feed(payload, bool(fin))
        if payload:
            parts = self._msg_parts
            assert type(parts) is list  # set when the message began (the tuple is the idle value)
            parts.append(payload)
            if len(parts) > _MAX_PARTS:
                # A flood of tiny fragments: one growing buffer, not a list of small objects
                # (about 40 bytes of overhead each: a 1-byte fragment flood would hold 40x the limit).
                head = parts[0]
                if type(head) is not bytearray:
                    head = bytearray(head)
                for part in parts[1:]:
                    head += part
                self._msg_parts = [head]
        if fin:
            parts = self._msg_parts
            data = parts[0] if len(parts) == 1 else b"".join(parts)
            if type(data) is bytearray:
                data = bytes(data)
            if self.state is OPEN:
                events.append((self._msg_kind, data))
            self._msg_kind = None
            self._msg_parts = ()

    def _receive_close(self, payload: bytes, events: list[Event]) -> None:
        """The peer's Close frame: check it, echo it if we had not closed (RFC 6455 §5.5.1, §7.1.5)."""
        code, reason = parse_close_payload(payload)
        self.close_code, self.close_reason = code, reason
        if self.state == OPEN:
            self._close_reply = self._frame(OP_CLOSE, b"" if code is None else code.to_bytes(2, "big"))
        self.state = CLOSED
        events.append(("close", code, reason))

    def _fail(self, exc: ProtocolError, events: list[Event]) -> None:
        """Fail the WebSocket connection (RFC 6455 §7.1.7): queue a Close with the error's code."""
        if self.state == OPEN:
            self._close_reply = self._frame(OP_CLOSE, exc.code.to_bytes(2, "big"))
        self.state = CLOSED
        self.close_code = exc.code
        self._msg_kind = None
        self._msg_parts = ()
        events.append(("error", exc))

    def receive_eof(self) -> None:
        """The peer closed the TCP connection (RFC 6455 §7.1.5: no Close frame means code 1006)."""
        if self.state != CLOSED:
            self.state = CLOSED
            self.close_code = closecodes.ABNORMAL_CLOSURE

    # -- sending -------------------------------------------------------------------

    def _frame(self, opcode: int, payload: BytesLike, rsv1: bool = False) -> bytes:
        mask_key = self._mask_key
        if mask_key is None:
            return serialize_frame(opcode, payload, rsv1=rsv1)
        return serialize_frame(opcode, payload, rsv1=rsv1, mask_key=mask_key())

    @property
    def can_send(self) -> bool:
        """True while messages may still be queued: open, or the automatic Close not yet handed out."""
        return self.state is OPEN or self._close_reply is not None

    def _check_open(self) -> None:
        if self.state is not OPEN and self._close_reply is None:
            raise UsageError(f"cannot send on a connection that is {self.state} (RFC 6455 §5.5.1)")

    def send_message(self, kind: str, data: BytesLike | str | list[BytesLike | str]) -> None:
        """Queue a whole text or binary message, compressed when negotiated (RFC 7692 §6)."""
        if self.state is not OPEN and self._close_reply is None:
            self._check_open()
        opcode = OP_TEXT if kind == "text" else OP_BINARY
        if type(data) is not bytes:
            if isinstance(data, list):
                data = b"".join(_as_bytes(part) for part in data)
            else:
                data = _as_bytes(data)
        n = len(data)
        if self.compress and self.deflate.should_compress(n):  # type: ignore[union-attr]
            payload = self.deflate.compress(data)  # type: ignore[union-attr]
            if self._mask_key is not None:
                self._out.append(self._frame(opcode, payload, rsv1=True))
            elif len(payload) < 126:  # RSV1 on the (only) frame, RFC 7692 §6.1
                self._out.append(bytes((0xC0 | opcode, len(payload))) + payload)
            else:
                self._out.append(frame_header(opcode, len(payload), rsv1=True) + payload)
        elif self._mask_key is not None:
            self._out.append(self._frame(opcode, data))
        elif n < 126:  # the common small server frame: one allocation
            self._out.append(bytes((0x80 | opcode, n)) + data)
        elif n >= SEPARATE_PAYLOAD:
            # large payload: header and payload go out as two buffers (sendmsg), no copy here;
            # frame_header(opcode, n) inlined (hot path)
            out = self._out
            out.append(_HEAD16(0x80 | opcode, 126, n) if n < 65536 else _HEAD64(0x80 | opcode, 127, n))
            out.append(data if type(data) is bytes else bytes(data))
        else:
            self._out.append(frame_header(opcode, n) + data)

    def send_messages(self, frames: list[tuple[str, bytes]]) -> int | None:
        """Queue whole messages ``(kind, data)`` in order, each as :meth:`send_message` would.

        A server's small uncompressed messages of one kind (a read's replies) are framed by
        C-level iterators, headers from a table, and queued as one buffer (RFC 6455 §5.2):
        then the payload bytes queued are returned (for the metrics), else None.
        """
        payloads = list(map(_payloads, frames))
        lens = list(map(len, payloads))
        if self._mask_key is None and not self.compress and self.state is OPEN and max(lens) < 126:
            kind = frames[0][0]
            heads = _SMALL_HEAD.get(kind)
            if heads is not None and list(map(_kinds, frames)).count(kind) == len(frames):
                parts = payloads * 2  # the right length; every other item becomes a header
                parts[::2] = map(heads.__getitem__, lens)
                parts[1::2] = payloads
                data = b"".join(parts)
                self._out.append(data)
                return len(data) - 2 * len(frames)  # 2-byte headers
        for kind, data in frames:
            self.send_message(kind, data)
        return None

    def send_text(self, data: BytesLike | str) -> None:
        """Queue a text message (RFC 6455 §5.6)."""
        self.send_message("text", data)

    def send_binary(self, data: BytesLike) -> None:
        """Queue a binary message (RFC 6455 §5.6)."""
        self.send_message("binary", data)

    def serialize_message(self, kind: str, data: bytes) -> bytes:
        """The whole message as the one frame :meth:`send_message` would queue (server side), not queued.

        Compressed when negotiated and worth it (RFC 7692 §6): with
        ``deflate.standalone_key()`` not None the result may be queued on other
        connections with the same key too (:meth:`send_serialized`).
        """
        if self._mask_key is not None:
            raise UsageError("a client must mask each frame itself (RFC 6455 §5.3)")
        saved = self._out
        self._out = []
        try:
            self.send_message(kind, data)
            return b"".join(self._out)
        finally:
            self._out = saved

    def send_serialized(self, frame: bytes) -> None:
        """Queue a complete frame serialized elsewhere (a broadcast framed once for many connections).

        It keeps its place among the other queued frames.  Only for a server
        (unmasked frames); a compressed one must come from a connection whose
        deflate codec has the same ``standalone_key()``.
        """
        self._check_open()
        if self._mask_key is not None:
            raise UsageError("a client must mask each frame itself (RFC 6455 §5.3)")
        self._out.append(frame)

    def send_ping(self, data: BytesLike | str = b"") -> None:
        """Queue a Ping (RFC 6455 §5.5.2)."""
        self._check_open()
        self._out.append(self._frame(OP_PING, _as_bytes(data)))

    def send_pong(self, data: BytesLike | str = b"") -> None:
        """Queue an unsolicited Pong (RFC 6455 §5.5.3)."""
        self._check_open()
        self._out.append(self._frame(OP_PONG, _as_bytes(data)))

    def send_close(self, code: int | None = closecodes.NORMAL, reason: BytesLike | str = b"") -> None:
        """Start the closing handshake (RFC 6455 §5.5.1, §7.1.2); later sends raise UsageError."""
        if self.state is not OPEN:
            raise UsageError(f"a Close frame was already sent or is queued (connection {self.state})")
        self._out.append(self._frame(OP_CLOSE, encode_close_payload(code, reason)))
        self.state = CLOSING

    def data_to_send(self) -> bytes:
        """Everything queued since the last call, as one buffer for one ``send``."""
        out = self.buffers_to_send()
        if not out:
            return b""
        return out[0] if len(out) == 1 else b"".join(out)

    def buffers_to_send(self) -> list[bytes]:
        """Everything queued since the last call, as a list for ``sendmsg`` (no join copy)."""
        out = self._out
        self._out = []
        if self._close_reply is not None and not self._close_held:
            out.append(self._close_reply)
            self._close_reply = None
        return out

    @property
    def has_data_to_send(self) -> bool:
        return bool(self._out) or (self._close_reply is not None and not self._close_held)

    def hold_close(self, hold: bool) -> None:
        """Keep the automatic Close of a failed connection (RFC 6455 §7.1.7) back while ``hold``.

        Messages may still be queued meanwhile and leave before it (:attr:`can_send` stays true):
        for an application that answers the messages received before the bad frame later than in
        the same batch (the blocking client, whose reader takes them on another thread).
        """
        self._close_held = hold

    def _new_parser(self) -> FrameParser:
        return FrameParser(mask_required=self.role == "server", max_frame_size=self.max_frame_size,
                           rsv1_allowed=self.deflate is not None)

    def hibernate(self) -> None:
        """Release what an idle connection does not need (Cowboy's ``hibernate``): the frame parser
        when no frame is half received (the next read makes a new one), the UTF-8 validator and the
        inflater between messages."""
        parser = self._parser
        if parser is not None and not parser._buf:
            self._parser = None
        if self._msg_kind is None and not self._partial_checked:  # a text frame half received holds its state
            self._utf8 = None
        if self.deflate is not None and self._msg_kind is None:
            self.deflate.release()

    def set_max_frame_size(self, size: int | None) -> None:
        """Change the limit (the ``set_options`` command)."""
        self.max_frame_size = size
        if self._parser is not None:
            self._parser.max_frame_size = size
