"""The C backend of the kernels: thin wrappers around ``cowboy_ws._speedups``.

Each function here has the contract of its pure-Python reference, exceptions
(class, code, message) included; ``tests/test_speedups.py`` checks that
differentially.  Selected by :mod:`.kernels`; never import this module elsewhere.

* :func:`mask`, :func:`unmask_join`: RFC 6455 §5.3, as :mod:`.mask`;
* :class:`Utf8Validator`, :func:`validate_utf8`: RFC 3629 §4 / RFC 6455 §8.1,
  as :mod:`.utf8` (a DFA in C keeps the state between calls);
* :func:`parse_frames`: RFC 6455 §5.2, as :func:`.parse.parse_frames`, a batch in one C call.

Inputs the C code does not take (non-contiguous views, other buffer types,
odd arguments) go to the pure-Python reference, so they behave exactly alike.
The buffer exported by ``ffi.from_buffer`` is released right after each C call
(before any exception), so a caller's bytearray is never left locked.

Typing: ``cowboy_ws._speedups`` has no stub (cffi objects are ``Any``); the aliases
below declare what the C functions return.  The wrappers dispatch on ``cls =
type(data)``, which mypy cannot narrow ``data`` through: those lines carry a
``type: ignore[union-attr]`` rather than a second ``type()`` call on the hot path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

from cowboy_ws._speedups import ffi, lib  # the compiled kernels (not the runtime): absolute on purpose

from . import mask as _py_mask_mod
from .errors import InvalidUtf8
from .frame_errors import frame_error
from .parse import parse_frames as _py_parse_frames

if TYPE_CHECKING:
    from .parse import ParsedFrame, ParserSettings

__all__ = ["Utf8Validator", "mask", "parse_frames", "parse_frames_c", "parse_messages", "send_many",
           "unmask_join", "validate_utf8"]

_alloc = ffi.new_allocator(should_clear_after_alloc=False)
_from_buffer = ffi.from_buffer
_release = ffi.release
_unpack: Callable[[Any, int], bytes] = ffi.unpack  # of a char[] / char *
_unpack_ints: Callable[[Any, int], list[int]] = ffi.unpack  # of an int64_t[]
_c_mask = lib.cw_mask
_c_unmask_at = lib.cw_unmask_at
_c_unmask_join = lib.cw_unmask_join
_c_utf8_feed: Callable[[Any, int, int], int] = lib.cw_utf8_feed
_c_parse: Callable[[Any, Any, int, int, int, int, Any, int], int] = lib.cw_parse_frames
_c_send_many: Callable[[Any, int, bytes, int, Any], int] = lib.cw_send_many
_c_parse_simple: Callable[[Any, Any, int, int, int, int, Any, int], int] = lib.cw_parse_simple
_from_bytes = int.from_bytes

# ---- masking (RFC 6455 §5.3) ---------------------------------------------------------------

#: Below this many bytes :func:`mask` XORs one big integer, as the reference does:
#: there the cost of the call into C (allocating the result, releasing the GIL)
#: is more than the work.  Measured with ``python bench/bench_speedups.py``.
SMALL_MASK = 128

_py_mask = _py_mask_mod.mask
_py_unmask_join = _py_mask_mod.unmask_join


def mask(data: bytes | bytearray | memoryview, key: bytes | bytearray) -> bytes:
    """XOR ``data`` with the 4-byte ``key`` cycled over it (RFC 6455 §5.3); a new ``bytes``.

    Same contract as :func:`cowboy_ws.protocol.mask.mask`.
    """
    if len(key) != 4:
        raise ValueError(f"masking key must be 4 bytes, not {len(key)}")
    cls = type(data)
    n = data.nbytes if cls is memoryview else len(data)  # type: ignore[union-attr]
    if n < SMALL_MASK:  # the reference's own small-payload form
        return (_from_bytes(data, "little")
                ^ _from_bytes((key * ((n >> 2) + 1))[:n], "little")).to_bytes(n, "little")
    if type(key) is not bytes:
        return _py_mask(data, key)
    if cls is bytes:
        out = _alloc("char[]", n)
        _c_mask(out, data, n, key)
        return _unpack(out, n)
    if cls is not bytearray and (cls is not memoryview or not data.c_contiguous):  # type: ignore[union-attr]
        return _py_mask(data, key)
    src = _from_buffer(data)
    out = _alloc("char[]", n)
    _c_mask(out, src, n, key)
    _release(src)
    return _unpack(out, n)


def unmask_join(head: bytearray | bytes, offset: int, tail: bytes | bytearray | memoryview) -> bytes:
    """A masked payload received in two pieces, unmasked: ``head[offset:]`` then ``tail`` (RFC 6455 §5.3).

    Same contract as :func:`cowboy_ws.protocol.mask.unmask_join`; one pass over
    both pieces straight into the new ``bytes`` (no joined copy first).
    """
    if type(head) is not bytearray or _new_bytes is None or not 4 <= offset <= len(head):
        return _py_unmask_join(head, offset, tail)
    if type(tail) is bytes:
        t = tail
    elif type(tail) is memoryview and not tail.c_contiguous:
        return _py_unmask_join(head, offset, tail)
    else:
        t = _from_buffer(tail)
    n_head = len(head) - offset
    n_tail = len(t)
    h = _from_buffer(head)
    out: bytes = _new_bytes(None, n_head + n_tail)  # uninitialised and not yet shared: filled here
    _c_unmask_join(out, h, offset, n_head, t, n_tail)
    _release(h)
    if t is not tail:
        _release(t)
    return out


# ---- UTF-8 (RFC 3629 §4, RFC 6455 §8.1) ---------------------------------------------------

#: Below this many bytes ``isascii()`` is tried before the C call: there the call's fixed cost
#: (0.14 us) is more than the scan (ASCII bytes: isascii 0.17 us, C 0.165 us at 4 KiB; 0.31 / 0.20 at 8 KiB).
_ASCII_FIRST = 4096


class Utf8Validator:
    """Incremental UTF-8 validator (RFC 6455 §8.1, RFC 3629 §4) that fails fast; a C DFA.

    Same API and errors as :class:`cowboy_ws.protocol.utf8.Utf8Validator`: the
    call whose data holds the first impossible octet raises :class:`InvalidUtf8`
    with that octet's message offset, an impossible prefix at the very end of a
    piece (``b"\\xed\\xa0"``) included; ``final`` fails on an unfinished character.
    """

    __slots__ = ("_state", "_offset")

    def __init__(self) -> None:
        self._state = 0  # the C DFA's state: 0 on a character boundary
        self._offset = 0  # bytes fed since the last reset, for error messages

    def reset(self) -> None:
        """Forget any pending partial character and start a new message."""
        self._state = 0
        self._offset = 0

    def feed(self, data: bytes | bytearray | memoryview, final: bool = False) -> None:
        """Validate the next piece of the message (RFC 6455 §8.1).

        Raises :class:`InvalidUtf8` as soon as ``data`` makes the message
        invalid, or, when ``final`` is true, if the message ends inside a
        character. After ``final`` (or an error) the validator is reset.
        """
        state = self._state
        cls: type[bytes | bytearray | memoryview] | None = type(data)
        if cls is memoryview:
            if not data.c_contiguous:  # type: ignore[union-attr]
                data = data.tobytes()  # type: ignore[union-attr]
                cls = bytes
        elif state == 0 and len(data) < _ASCII_FIRST and data.isascii():  # type: ignore[union-attr]
            cls = None
        if cls is None:
            n = len(data)
            r = 0
        elif cls is bytes:
            n = len(data)
            r = _c_utf8_feed(data, n, state)
        else:
            p = _from_buffer(data)
            n = len(p)
            r = _c_utf8_feed(p, n, state)
            _release(p)
        start = self._offset
        if r < 0:
            r = -r - 2
            self._fail(start + (r >> 1), "invalid continuation byte" if r & 1 else "invalid start byte")
        if final:
            if r:
                self._fail(start + n - (r >> 8), "incomplete character at end of message")
            self._state = 0
            self._offset = 0
        else:
            self._state = r
            self._offset = start + n

    def _fail(self, offset: int, why: str) -> NoReturn:
        self.reset()
        raise InvalidUtf8(f"invalid UTF-8 at message offset {offset}: {why}")


def validate_utf8(data: bytes | bytearray | memoryview) -> bool:
    """Whether ``data`` is, as a whole, valid UTF-8 (RFC 3629 §4, RFC 6455 §8.1)."""
    cls = type(data)
    if cls is bytes:
        n = len(data)
        return (n < _ASCII_FIRST and data.isascii()) or _c_utf8_feed(data, n, 0) == 0  # type: ignore[union-attr]
    if cls is memoryview:
        if not data.c_contiguous:  # type: ignore[union-attr]
            data = data.tobytes()  # type: ignore[union-attr]
            n = len(data)
            return (n < _ASCII_FIRST and data.isascii()) or _c_utf8_feed(data, n, 0) == 0
    elif len(data) < _ASCII_FIRST and data.isascii():  # type: ignore[union-attr]
        return True
    p = _from_buffer(data)
    r = _c_utf8_feed(p, len(p), 0)
    _release(p)
    return r == 0


# ---- frames (RFC 6455 §5.2) ---------------------------------------------------------------

#: Most frames recorded by one C call; more are parsed by calling again.
_CAP = 512
#: Size of the pooled buffer masked payloads are unmasked into; larger inputs get their own.
#: A quarter of the loop's 1 MiB reads: a full read of small frames rarely fills it, and a larger input's
#: own buffer is cheap with the tuned malloc (cowboy_ws.memory); pooled, so its pages fault once.
_SCRATCH = 1 << 18
_NO_LIMIT = 1 << 63
#: Batches whose frames average this many bytes or more are copied out frame by frame
#: (one copy); smaller ones as one ``bytes`` sliced per frame (fewer calls, but two copies).
_UNPACK_EACH = 2048
_MASK_REQUIRED = lib.CW_MASK_REQUIRED
_RSV1_ALLOWED = lib.CW_RSV1_ALLOWED
_HAS_LIMIT = lib.CW_HAS_LIMIT
_NULL = ffi.NULL
#: Free (records, scratch) buffer pairs.  list.pop/append are atomic, so each
#: thread (the C call releases the GIL) takes a pair of its own.
_pool: list[tuple[Any, Any]] = []


def _new_bytes_ctypes() -> Any:
    """``PyBytes_FromStringAndSize(NULL, n)`` (a ``bytes`` whose contents the caller fills), if reachable."""
    try:
        import ctypes
        fn = ctypes.pythonapi.PyBytes_FromStringAndSize
    except (ImportError, AttributeError):  # pragma: no cover - not CPython
        return None
    fn.restype = ctypes.py_object
    fn.argtypes = (ctypes.c_void_p, ctypes.c_ssize_t)
    return fn


_new_bytes = _new_bytes_ctypes()
#: Masked payloads of at least this many bytes are unmasked straight into their own new
#: ``bytes`` (one pass) instead of into the scratch buffer and then copied out (two passes).
_LARGE = lib.CW_LARGE_PAYLOAD
_LEAVE_LARGE = lib.CW_LEAVE_LARGE if _new_bytes is not None else 0


def _unmask_new(src: Any, offset: int, size: int) -> bytes:
    """A new ``bytes`` of the masked payload at ``src + offset`` (its key the 4 bytes before it), unmasked."""
    out: bytes = _new_bytes(None, size)  # uninitialised and not yet shared: filled here, before anyone sees it
    _c_unmask_at(out, src, offset, size)  # cffi passes a bytes argument as a pointer to its data
    return out


#: Inputs shorter than this go to the pure-Python parser: for one or two small
#: frames the calls into C cost more than the parsing
#: (``python bench/bench_speedups.py crossover``; bench/README.md).
PARSE_SMALL = 64


def parse_frames(parser: ParserSettings, data: bytes | bytearray | memoryview, frames: list[ParsedFrame]) -> int:
    """``FrameParser._parse`` with the C backend: :func:`parse_frames_c` unless ``data`` is short."""
    if len(data) < PARSE_SMALL:
        return _py_parse_frames(parser, data, frames)
    return parse_frames_c(parser, data, frames)


def parse_frames_c(parser: ParserSettings, data: bytes | bytearray | memoryview, frames: list[ParsedFrame]) -> int:
    """``FrameParser._parse`` in C: append the complete frames of ``data``; return the bytes used.

    Every per-frame rule of RFC 6455 §5.2 is checked in the reference's order;
    the first broken one raises, after the frames before it were appended, the
    exception :func:`.frame_errors.frame_error` builds for the C error id (the
    same class and message as the reference).  ``data`` itself is never
    modified: masked payloads are unmasked into a copy (a scratch buffer), or
    in place when ``data`` is the parser's own buffer, which it may consume;
    payloads of ``CW_LARGE_PAYLOAD`` bytes or more are unmasked straight into
    the ``bytes`` returned for them (one pass over the data instead of two).
    """
    limit = parser.max_frame_size
    if limit is None:
        flags = 0
        lim = 0
    elif type(limit) is int:
        if limit >= _NO_LIMIT:
            flags = 0
            lim = 0
        else:
            flags = _HAS_LIMIT
            lim = limit if limit >= 0 else -1
    else:
        return _py_parse_frames(parser, data, frames)
    if parser.rsv1_allowed:
        flags |= _RSV1_ALLOWED
    cls = type(data)
    if cls is bytes:
        src: Any = data  # data itself (bytes) or a cffi buffer of it
        n = len(data)
    elif cls is memoryview and not data.c_contiguous:  # type: ignore[union-attr]
        src = data = data.tobytes()  # type: ignore[union-attr]
        n = len(data)
    else:
        src = _from_buffer(data)
        n = len(src)
    if n < 2:
        if src is not data:
            _release(src)
        return 0
    bufs = _pool.pop() if _pool else (_alloc("int64_t[]", 4 + 5 * _CAP), _alloc("char[]", _SCRATCH))
    rec = bufs[0]
    if parser.mask_required:
        flags |= _MASK_REQUIRED
        if data is parser._buf:
            dst = src  # the parser drops what it consumed: unmask in place
        elif n <= _SCRATCH:
            dst = bufs[1]
        else:
            dst = _alloc("char[]", n)
        out: bytes | None = None  # where the payloads are: dst, copied out once as bytes
    else:
        dst = _NULL
        out = data if src is data else None  # src is data: bytes
    leave = dst is not _NULL and _LEAVE_LARGE  # large payloads: unmasked by _unmask_new, one pass each
    if leave:
        flags |= _LEAVE_LARGE
        if src is data:  # bytes: a pointer into it, for _unmask_new
            src = _from_buffer(data)
    pos = 0
    append = frames.append
    while True:
        c = _c_parse(src, dst, n, pos, flags, lim, rec, _CAP)
        v = _unpack_ints(rec, 4 + 5 * c)
        if c == 1:
            a = v[7]
            size = v[8] - a
            append((v[4], v[5], v[6], out[a:v[8]] if out is not None
                    else _unmask_new(src, a, size) if leave and size >= _LARGE
                    else _unpack((src if dst is _NULL else dst) + a, size)))
        elif c:
            if out is None and v[0] - pos >= _UNPACK_EACH * c:  # large payloads: copied out once each
                base = src if dst is _NULL else dst
                for j in range(4, 4 + 5 * c, 5):
                    a = v[j + 3]
                    size = v[j + 4] - a
                    append((v[j], v[j + 1], v[j + 2], _unmask_new(src, a, size) if leave and size >= _LARGE
                            else _unpack(base + a, size)))
            else:
                if out is None:  # small payloads: one copy of the batch, then slices
                    out = _unpack(src if dst is _NULL else dst, v[0])
                if not leave or v[0] - pos < _LARGE:  # no large payload in this batch
                    for j in range(4, 4 + 5 * c, 5):  # (a plain loop measured faster than zip/map/slice)
                        append((v[j], v[j + 1], v[j + 2], out[v[j + 3]:v[j + 4]]))
                else:
                    for j in range(4, 4 + 5 * c, 5):
                        a = v[j + 3]
                        b = v[j + 4]
                        append((v[j], v[j + 1], v[j + 2], out[a:b] if b - a < _LARGE
                                else _unmask_new(src, a, b - a)))
        pos = v[0]
        err = v[2]
        if err or c < _CAP:
            break
        if out is not data:
            out = None
    _pool.append(bufs)
    if src is not data:
        _release(src)
    if err:  # the C parser's error id: the exception from the table the reference uses too
        raise frame_error(err, v[3], limit)
    return pos


# ---- a server's small messages (RFC 6455 §5.2, §5.3, §8.1) ------------------------------------

_CHECK_UTF8 = lib.CW_CHECK_UTF8
#: Frames one cw_parse_simple call records (3 int64 each) in the pooled records buffer.
_SIMPLE_CAP = 5 * _CAP // 3
_KIND_NAME: Callable[[int], str] = ("", "text", "binary").__getitem__  # by opcode (RFC 6455 §5.2)
#: Reads shorter than this (one or two small frames) take the general path: there the call
#: into C costs more than it saves (``python bench/bench_speedups.py``).
MESSAGES_SMALL = 64


def parse_messages(parser: ParserSettings, data: bytes | bytearray | memoryview, check_utf8: bool,
                   counts: list[int] | None = None) -> tuple[list[tuple[str, bytes]], int]:
    """A server's run of small whole messages at the start of ``data``, as events; and the bytes they take.

    The fast path of :meth:`.connection.Connection.receive_data` while no message is in
    progress: one C call (``cw_parse_simple``) parses and unmasks (RFC 6455 §5.2, §5.3) the
    masked frames that are each a whole, uncompressed text or binary message under
    ``CW_LARGE_PAYLOAD`` bytes (and ``max_frame_size``), checks text as UTF-8 when
    ``check_utf8`` (§8.1), and the events ``("text" | "binary", payload)`` are built
    without a Python loop.  It stops before anything else, errors included, and leaves that
    to the general path, so a frame is either taken here or parsed there, never both.
    Returns ``([], 0)`` for a client's parser, a short input, or odd arguments.  ``counts``
    (metrics), if given, gets the messages added: ``[text, text bytes, binary, binary bytes]``.
    """
    limit = parser.max_frame_size
    n = len(data)
    if n < MESSAGES_SMALL or not parser.mask_required:
        return [], 0
    length = data[1] & 0x7F
    if length == 127 or (length == 126 and (data[2] << 8 | data[3]) >= _LARGE):
        return [], 0  # a large first frame, which cw_parse_simple would refuse: skip the call (§5.2 lengths)
    if limit is None:
        flags = 0
        lim = 0
    elif type(limit) is int:
        flags = _HAS_LIMIT
        lim = limit if 0 <= limit < _NO_LIMIT else (-1 if limit < 0 else _NO_LIMIT - 1)
    else:
        return [], 0
    if check_utf8:
        flags |= _CHECK_UTF8
    cls = type(data)
    if cls is bytes:
        src: Any = data
    elif cls is bytearray or (cls is memoryview and data.c_contiguous and data.itemsize == 1):  # type: ignore[union-attr]
        src = _from_buffer(data)
    else:
        return [], 0
    bufs = _pool.pop() if _pool else (_alloc("int64_t[]", 4 + 5 * _CAP), _alloc("char[]", _SCRATCH))
    rec = bufs[0]
    dst = bufs[1] if n <= _SCRATCH else _alloc("char[]", n)
    pos = 0
    events: list[tuple[str, bytes]] = []
    while True:
        c = _c_parse_simple(src, dst, n, pos, flags, lim, rec, _SIMPLE_CAP)
        if not c:
            break
        v = _unpack_ints(rec, 4 + 3 * c)
        pos = v[0]
        out = _unpack(dst, pos)  # one copy of the run (payloads at their offsets), sliced per payload below
        # the events built by C-level iterators: no bytecode per message
        events += zip(map(_KIND_NAME, v[4::3]), map(out.__getitem__, map(slice, v[5::3], v[6::3])), strict=False)
        if counts is not None:  # the C parser's sums
            counts[0] += v[1]
            counts[1] += v[2]
            counts[2] += c - v[1]
            counts[3] += v[3]
        if c < _SIMPLE_CAP:
            break
    _pool.append(bufs)
    if src is not data:
        _release(src)
    return events, pos



# ---- a broadcast's writes -------------------------------------------------------------------

def send_many(fds: list[int], data: bytes) -> list[int]:
    """``send(fd, data)`` on each socket (non-blocking, no SIGPIPE), all in one C call; what each took.

    Per socket: the bytes the kernel took (0 when it would block), or ``-errno``.  POSIX only
    (:mod:`.kernels` offers it only there).
    """
    n = len(fds)
    out = _alloc("int64_t[]", n)
    _c_send_many(ffi.new("int[]", fds), n, data, len(data), out)
    return _unpack_ints(out, n)
