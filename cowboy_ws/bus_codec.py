"""What travels on the cluster bus: the message codec and the authenticated envelope.

Every bus message (a ``pid.send`` to another node, a broadcast, a group announcement, a
heartbeat) is a *body* encoded by a :class:`Codec`, wrapped in an *envelope* by :class:`Bus`.
Nothing read from the bus is ever decoded with a format that can run code unless the operator
asked for it (``codec="pickle"``, which logs a warning at start-up).

The codec (``msgpack``, the default; published schema)
    A body is one msgpack object (https://github.com/msgpack/msgpack/blob/master/spec.md) made
    of nil, bool, int (64-bit), float, str (UTF-8), bin (bytes), array (list), map (dict; keys of
    any of these types) and three extension types:

    * ext 1, empty: *tuple marker*.  An array whose first element is this marker is a tuple of
      the remaining elements (``("say", "hi")`` is ``[ext1, "say", "hi"]``); anywhere else it
      decodes to an inert placeholder.
    * ext 2: a *Pid*: 8 bytes big-endian process number, then the node id in UTF-8.
    * ext 3: an *int* outside 64 bits: big-endian two's complement.

    ``bytearray`` and ``memoryview`` travel as bin (they arrive as bytes).  Anything else (a set,
    an object, a subclass of a supported type) is refused when it is *sent*, with a
    :class:`TypeError` naming the type.  Decoding builds only these types: the
    C unpacker bounds nesting depth and lengths by the size of the input, and no extension type
    decodes recursively.

The envelope (``Bus.seal`` / ``Bus.open``), big-endian::

    "cw"  version (1)  codec ("m" | "p")  flags (bit 0: MAC follows)
    timestamp (u64, ms since the epoch)  sequence (u64)  node id length (u8)  node id (UTF-8)
    body  [MAC: 32 bytes]

With a shared secret the MAC is HMAC-SHA256, keyed with the secret, over the channel (or key)
name the message was published on, then every byte of the envelope before it: a message cannot
be altered, moved to another channel, or sent in another node's name.  A receiver drops a
message that is larger than :data:`MAX_MESSAGE_SIZE`, malformed, in the wrong codec, unsigned or
wrongly signed when it has a secret, older (or newer, for clock skew) than ``max_age`` seconds,
or whose sequence number is not above the last one it accepted from that node (a replay: one
node's messages reach a subscriber in the order it published them).  The sequence counter is
per OS process, so it keeps rising when a process starts a second backend.

Limits (this module is the one place for them): :data:`MAX_MESSAGE_SIZE` (a ``pid.send`` or
``broadcast`` whose message would not fit raises :class:`ValueError` on the sending node;
larger messages received are dropped), :data:`REPLAY_SLACK` (seconds added to the node TTL to
make ``max_age``), :data:`MIN_SECRET_BYTES` (a shorter secret is logged as weak).
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import logging
import pickle
import struct
import time
from collections.abc import Callable
from typing import Any

try:
    import msgpack
except ImportError:  # pragma: no cover - depends on the environment
    raise ImportError("the cluster bus needs msgpack: pip install 'cowboy-ws[redis]'") from None

log = logging.getLogger(__name__)

__all__ = ["MAX_MESSAGE_SIZE", "REPLAY_SLACK", "MIN_SECRET_BYTES", "Codec", "MsgpackCodec", "PickleCodec",
           "make_codec", "Bus", "Rejected", "CODECS"]

#: Largest bus message in bytes (envelope included).  A ``pid.send`` / ``broadcast`` to other
#: nodes that would exceed it raises ValueError in the sender; received ones are dropped.
MAX_MESSAGE_SIZE = 1 << 20
#: Seconds beyond the node TTL after which a message is too old (or too far in the future) to accept.
REPLAY_SLACK = 5.0
#: A secret shorter than this many bytes works but is logged as weak.
MIN_SECRET_BYTES = 16

CODECS = ("msgpack", "pickle")

_EXT_TUPLE, _EXT_PID, _EXT_BIGINT = 1, 2, 3
_TUPLE_MARK = msgpack.ExtType(_EXT_TUPLE, b"")
_PID_ID = struct.Struct(">Q")


class _Marker:
    """What a tuple marker decodes to outside the first element of an array (inert)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<bus tuple marker>"


_MARK = _Marker()


class Codec:
    """Turns a message into bytes and back (the body of a bus message)."""

    #: ``"msgpack"`` or ``"pickle"``
    name = ""
    #: the byte that names the codec in the envelope
    tag = b""

    def encode(self, obj: Any) -> bytes:
        """``obj`` as bytes; TypeError (naming the type) for what the codec cannot carry."""
        raise NotImplementedError

    def decode(self, data: bytes) -> Any:
        """The object; any Exception for bytes that are not a valid body."""
        raise NotImplementedError


class MsgpackCodec(Codec):
    """msgpack with a tuple marker, Pids and big ints (the schema is in the module docstring).

    ``pid_ref(obj)`` returns ``(node, number)`` when ``obj`` is a Pid (else None);
    ``make_pid(node, number)`` builds the Pid a received one stands for.
    """

    name = "msgpack"
    tag = b"m"

    def __init__(self, pid_ref: Callable[[Any], tuple[str, int] | None],
                 make_pid: Callable[[str, int], Any]) -> None:
        self._pid_ref = pid_ref
        self._make_pid = make_pid
        self._packer = msgpack.Packer(default=self._default, strict_types=True, use_bin_type=True)

    def _default(self, obj: Any) -> Any:
        cls = obj.__class__
        if cls is tuple:
            return [_TUPLE_MARK, *obj]
        if cls is int:  # outside 64 bits
            return msgpack.ExtType(_EXT_BIGINT, obj.to_bytes(obj.bit_length() // 8 + 1, "big", signed=True))
        ref = self._pid_ref(obj)
        if ref is not None:
            return msgpack.ExtType(_EXT_PID, _PID_ID.pack(ref[1]) + ref[0].encode())
        raise TypeError(f"a {cls.__module__}.{cls.__qualname__} cannot be sent to another node: the bus "
                        "carries None, bool, int, float, str, bytes, tuple, list, dict and Pid "
                        "(exactly those types, not subclasses)")

    def encode(self, obj: Any) -> bytes:
        try:
            return self._packer.pack(obj)
        except ValueError as exc:  # msgpack's nesting limit
            self._packer.reset()
            raise ValueError(f"message cannot be sent to another node: {exc}") from None
        except BaseException:
            self._packer.reset()  # what was packed before the refused object
            raise

    def _ext(self, code: int, data: bytes) -> Any:
        if code == _EXT_TUPLE and not data:
            return _MARK
        if code == _EXT_PID and len(data) > 8:
            return self._make_pid(data[8:].decode(), _PID_ID.unpack_from(data)[0])
        if code == _EXT_BIGINT and data:
            return int.from_bytes(data, "big", signed=True)
        raise ValueError(f"unknown or malformed extension type {code}")

    @staticmethod
    def _array(items: list) -> Any:
        if items and items[0] is _MARK:
            return tuple(items[1:])
        return items

    def decode(self, data: bytes) -> Any:
        return msgpack.unpackb(data, raw=False, strict_map_key=False, ext_hook=self._ext,
                               list_hook=self._array, timestamp=0)


class PickleCodec(Codec):
    """pickle: carries any picklable object, and runs whatever code the bytes ask for when decoded.

    Only for a bus that nobody else can publish on (see docs/deployment.md, "Securing the bus").
    """

    name = "pickle"
    tag = b"p"
    WARNING = ("cluster codec 'pickle': decoding a bus message can run arbitrary code; anyone who can "
               "publish on this Redis can take over every node unless the bus has a secret "
               "(--cluster-secret) that only the nodes know. Use the default codec 'msgpack' unless "
               "messages must carry arbitrary Python objects")

    def encode(self, obj: Any) -> bytes:
        try:
            return pickle.dumps(obj, pickle.HIGHEST_PROTOCOL)
        except (pickle.PicklingError, AttributeError) as exc:
            raise TypeError(f"message cannot be pickled: {exc}") from None

    def decode(self, data: bytes) -> Any:
        return pickle.loads(data)


def make_codec(name: str, pid_ref: Callable[[Any], tuple[str, int] | None],
               make_pid: Callable[[str, int], Any]) -> Codec:
    """The codec called ``name`` (one of :data:`CODECS`)."""
    if name == "msgpack":
        return MsgpackCodec(pid_ref, make_pid)
    if name == "pickle":
        return PickleCodec()
    raise ValueError(f"unknown cluster codec {name!r}: use one of {', '.join(CODECS)}")


class Rejected(Exception):
    """A bus message that failed a check; ``reason`` is the counter it is counted under.

    ``sender`` is the node that sent it where the envelope proved that (a ``stale`` message whose
    MAC, if the bus has a secret, was good): the receiver knows it missed something of that node's.
    """

    def __init__(self, reason: str, detail: str = "", sender: str | None = None) -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.sender = sender


_HEAD = struct.Struct(">2sBcBQQB")
_MAGIC, _VERSION, _FLAG_MAC = b"cw", 1, 1
_MAC_SIZE = 32
#: One counter per OS process: sequence numbers keep rising across backends of one process.
_sequence = itertools.count(1)


class Bus:
    """Seals bodies into envelopes and opens (checks) received ones, for one node.

    ``secret`` None: messages carry no MAC and any MAC-less message is accepted (the bus is
    unauthenticated).  :meth:`seal` is for the one publishing thread (sequence order is publish
    order); :meth:`open` keeps per-sender state and is for the one receiving thread.
    """

    def __init__(self, node: str, codec: Codec, secret: bytes | None, max_age: float,
                 max_size: int = MAX_MESSAGE_SIZE, clock: Callable[[], float] = time.time) -> None:
        self.node = node
        self.codec = codec
        self.secret = secret or None
        self.max_age = float(max_age)
        self.max_size = max_size
        self._clock = clock
        self._node_bytes = node.encode()
        if len(self._node_bytes) > 255:
            raise ValueError(f"node id too long for the bus: {node!r}")
        self._flags = _FLAG_MAC if self.secret else 0
        #: bytes an envelope from this node adds to a body
        self.overhead = _HEAD.size + len(self._node_bytes) + (_MAC_SIZE if self.secret else 0)
        self._macs: dict[str | bytes, Any] = {}            # name -> HMAC already fed the name
        self._last: dict[str, tuple[int, float]] = {}      # sender -> (last sequence, when)
        self._pruned = 0.0

    def check_size(self, body: bytes) -> None:
        """ValueError if ``body`` would make a message over the size limit (raised in the sender)."""
        size = len(body) + self.overhead
        if size > self.max_size:
            raise ValueError(f"message too large for the cluster bus: {size} bytes encoded, the limit is "
                             f"{self.max_size} (cowboy_ws.bus_codec.MAX_MESSAGE_SIZE)")

    def _mac(self, name: str | bytes) -> Any:
        """A fresh HMAC that has been fed ``name`` (cached per name, as given: str or bytes)."""
        base = self._macs.get(name)
        if base is None:
            assert self.secret is not None
            if len(self._macs) >= 1024:  # nodes come and go (a restarted worker is a new node): stay bounded
                self._macs.clear()
            raw = name if isinstance(name, bytes) else name.encode()
            base = self._macs[name] = hmac.new(self.secret, raw + b"\n", hashlib.sha256)
        return base.copy()

    def seal(self, name: str | bytes, body: bytes, sequence: int | None = None) -> bytes:
        """The envelope for ``body`` published on channel (or key) ``name``."""
        seq = next(_sequence) if sequence is None else sequence
        head = _HEAD.pack(_MAGIC, _VERSION, self.codec.tag, self._flags, int(self._clock() * 1000), seq,
                          len(self._node_bytes)) + self._node_bytes
        if not self.secret:
            return head + body
        mac = self._mac(name)
        mac.update(head)
        mac.update(body)
        return head + body + mac.digest()

    def open(self, name: str | bytes, data: bytes, *, replay_check: bool = True) -> tuple[str, Any]:
        """``(sender node, decoded body)`` of a message received on ``name``; raises :class:`Rejected`.

        ``replay_check`` False skips the sequence check (heartbeat values, read by many threads).
        """
        if len(data) > self.max_size:
            raise Rejected("oversized", f"{len(data)} bytes")
        try:
            magic, version, codec, flags, stamp, seq, node_len = _HEAD.unpack_from(data)
        except struct.error:
            raise Rejected("malformed", "truncated header") from None
        if magic != _MAGIC or version != _VERSION:
            raise Rejected("malformed", "not a cowboy_ws bus message")
        body_start = _HEAD.size + node_len
        body_end = len(data) - (_MAC_SIZE if flags & _FLAG_MAC else 0)
        if body_end < body_start:
            raise Rejected("malformed", "truncated")
        if self.secret:
            if not flags & _FLAG_MAC:
                raise Rejected("unsigned")
            mac = self._mac(name)
            view = memoryview(data)
            mac.update(view[:body_end])
            if not hmac.compare_digest(mac.digest(), view[body_end:]):
                raise Rejected("bad_mac")
        if codec != self.codec.tag:
            raise Rejected("codec", f"codec {codec!r}")
        try:
            sender = data[_HEAD.size:body_start].decode()
        except UnicodeDecodeError:
            raise Rejected("malformed", "node id") from None
        now = self._clock()
        if abs(now - stamp / 1000.0) > self.max_age:
            raise Rejected("stale", f"{now - stamp / 1000.0:+.1f}s old, from {sender}", sender)
        if replay_check:
            last = self._last.get(sender)
            if last is not None and seq <= last[0]:
                raise Rejected("replay", f"sequence {seq} <= {last[0]} from {sender}")
        try:
            item = self.codec.decode(data[body_start:body_end])
        except Exception as exc:  # any malformed body; the codec builds nothing else
            raise Rejected("malformed", f"{type(exc).__name__}: {exc}") from None
        if replay_check:
            self._last[sender] = (seq, now)
            if now - self._pruned > self.max_age:  # a sequence older than max_age protects nothing
                self._pruned = now
                self._last = {n: v for n, v in self._last.items() if now - v[1] <= self.max_age}
        return sender, item
