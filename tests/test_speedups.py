"""Differential tests: the C kernels (``cowboy_ws._speedups`` via ``_ckernels``) against the pure-Python reference.

The same random bytes, splits and arguments go to both; outputs, parser events,
and exceptions (class, close code, message) must be identical.  The pure
functions are imported from their implementation modules (mask, utf8, parse),
the C ones from :mod:`cowboy_ws.protocol._ckernels`, so these tests compare the
two whichever backend ``kernels`` selected (``COWBOY_WS_PURE`` does not matter).

``COWBOY_WS_DIFF_EXAMPLES`` sets hypothesis' example count (default 200);
``_speedups/valgrind.sh`` runs this module under valgrind with a small one.
"""

from __future__ import annotations

import array
import os
import random

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

try:
    from cowboy_ws.protocol import _ckernels as C
except ImportError as exc:  # pragma: no cover - depends on the build
    pytest.skip(f"the C extension cowboy_ws._speedups is not built ({exc}); "
                "build it with `pip install -e .` (COWBOY_WS_SPEEDUPS=yes to make a failed build fatal)",
                allow_module_level=True)

from cowboy_ws.protocol import closecodes, frame_errors, kernels, parse
from cowboy_ws.protocol.errors import ProtocolError
from cowboy_ws.protocol.frames import (OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT,
                                       FrameParser, serialize_frame)
from cowboy_ws.protocol.mask import mask as py_mask
from cowboy_ws.protocol.mask import unmask_join as py_unmask_join
from cowboy_ws.protocol.utf8 import Utf8Validator as PyUtf8Validator
from cowboy_ws.protocol.utf8 import validate_utf8 as py_validate_utf8

EXAMPLES = int(os.environ.get("COWBOY_WS_DIFF_EXAMPLES", "200"))
#: Under valgrind (few examples) the exhaustive and large cases are sampled.
SMALL = EXAMPLES < 100
DIFF = settings(max_examples=EXAMPLES, deadline=None, database=None if SMALL else settings.default.database,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def outcome(fn, *args, **kw):
    """("ok", result) or ("raise", class, close code, message): what a call did, for comparing."""
    try:
        return ("ok", fn(*args, **kw))
    except Exception as exc:  # noqa: BLE001 - any difference counts
        return ("raise", type(exc), getattr(exc, "code", None), str(exc))


def test_backend_selected():
    """kernels selects C when built, unless COWBOY_WS_PURE forces pure Python."""
    if kernels.pure_forced():
        assert kernels.BACKEND == "python"
        assert FrameParser._parse is kernels.parse_frames is parse.parse_frames
        assert kernels.mask is py_mask and kernels.Utf8Validator is PyUtf8Validator
    else:
        assert kernels.BACKEND == "c"
        assert FrameParser._parse is kernels.parse_frames is C.parse_frames
        assert kernels.mask is C.mask and kernels.Utf8Validator is C.Utf8Validator
    import cowboy_ws
    assert cowboy_ws.backend() == kernels.BACKEND


# ---- masking (RFC 6455 §5.3) ---------------------------------------------------------------

MASK_SIZES = [*range(0, 140), 255, 256, 257, 415, 416, 417, 1023, 1024, 1025, 4095, 4096, 4097,
              65535, 65536, 65537]


def test_mask_sizes_and_alignments():
    """Every size (both sides of SMALL_MASK and of the vector widths) and every start alignment."""
    for n in MASK_SIZES[::5] + MASK_SIZES[-6:] if SMALL else MASK_SIZES:
        check_mask_size(n)


def check_mask_size(n):
    rnd = random.Random(n)
    base = bytes(rnd.getrandbits(8) for _ in range(n + 64))
    key = bytes(rnd.getrandbits(8) for _ in range(4))
    for align in range(0, 33, 1 if n < 300 else 7):
        data = base[align:align + n]
        expected = py_mask(data, key)
        assert C.mask(data, key) == expected
        assert C.mask(bytearray(data), key) == expected
        assert C.mask(memoryview(base)[align:align + n], key) == expected


@DIFF
@given(data=st.binary(max_size=3000), key=st.binary(min_size=4, max_size=4),
       lo=st.integers(0, 40), kind=st.sampled_from([bytes, bytearray, memoryview]))
def test_mask_random(data, key, lo, kind):
    """mask: same bytes for random data, keys and views into the middle of buffers."""
    view = kind(data)[lo:]
    assert outcome(C.mask, view, key) == outcome(py_mask, view, key)
    assert type(C.mask(view, key)) is bytes


@DIFF
@given(head=st.binary(min_size=4, max_size=300), offset=st.integers(-2, 310), tail=st.binary(max_size=300),
       kind=st.sampled_from(["bytes", "bytearray", "memoryview", "strided", "head_bytes"]))
def test_unmask_join_random(head, offset, tail, kind):
    """The two-piece unmasking: same result (or exception) as the reference, for any seam and key phase."""
    t = {"bytes": tail, "bytearray": bytearray(tail), "memoryview": memoryview(b"?" + tail)[1:],
         "strided": memoryview(tail * 2)[::2], "head_bytes": tail}[kind]
    h = bytes(head) if kind == "head_bytes" else bytearray(head)
    got = outcome(C.unmask_join, h, offset, t)
    assert got == outcome(py_unmask_join, h, offset, t)
    if got[0] == "ok":
        assert type(got[1]) is bytes


def test_unmask_join_large():
    """Large pieces (the C vector loop on both sides of the seam, every seam phase)."""
    masked = os.urandom(70001)
    for cut in (0, 1, 2, 3, 4, 8191, 40000, 70001):
        head = bytearray(b"\x82\xff" + bytes(8) + b"\x01\x02\x03\x04" + masked[:cut])
        assert C.unmask_join(head, 14, masked[cut:]) == py_mask(masked, b"\x01\x02\x03\x04")


@pytest.mark.parametrize("key", [b"", b"abc", b"abcde", bytearray(b"abcd"), memoryview(b"abcd"), [1, 2, 3, 4]])
def test_mask_odd_keys(key):
    """Keys that are not 4 bytes, or not bytes: the same result or exception."""
    for data in (b"short", bytes(100), bytearray(300), memoryview(bytes(500))):
        assert outcome(C.mask, data, key) == outcome(py_mask, data, key)


def test_mask_odd_data():
    """Non-contiguous and multi-byte-format views, and other buffers, mask like the reference."""
    raw = bytes(range(256)) * 8
    key = b"\x01\x02\x03\x04"
    for data in (memoryview(raw)[::3], memoryview(raw).cast("I"), memoryview(raw).cast("B", (16, 128)),
                 array.array("B", raw[:999]), "text", None, 42):
        assert outcome(C.mask, data, key) == outcome(py_mask, data, key)


def test_mask_one_mebibyte():
    data = os.urandom(1 << 20)
    key = os.urandom(4)
    assert C.mask(data, key) == py_mask(data, key)


# ---- UTF-8 (RFC 3629 §4, RFC 6455 §8.1) ----------------------------------------------------

def feed_all(validator_cls, pieces, finals):
    """Feed every piece (continuing after errors: both validators reset); every call's outcome."""
    v = validator_cls()
    return [outcome(v.feed, piece, final) for piece, final in zip(pieces, finals)]


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted(c % (len(data) + 1) for c in cuts), len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:])]


KINDS = [bytes, bytearray, memoryview, lambda b: memoryview(b * 2)[::2] if b else memoryview(b)]


def check_utf8(pieces, finals, kinds):
    typed = [kinds[i % len(kinds)](p) for i, p in enumerate(pieces)]
    assert feed_all(C.Utf8Validator, typed, finals) == feed_all(PyUtf8Validator, typed, finals)
    whole = b"".join(pieces)
    for kind in (bytes, bytearray, memoryview):
        assert C.validate_utf8(kind(whole)) == py_validate_utf8(kind(whole))


def corrupt(data: bytes, edits: list[tuple[int, int, int]]) -> bytes:
    """Apply (position, byte, kind) edits: 0 replace, 1 insert, 2 delete."""
    b = bytearray(data)
    for pos, byte, kind in edits:
        if kind == 1 or not b:
            b.insert(pos % (len(b) + 1), byte)
        elif kind == 0:
            b[pos % len(b)] = byte
        else:
            del b[pos % len(b)]
    return bytes(b)


@DIFF
@given(data=st.binary(max_size=400), cuts=st.lists(st.integers(0, 400), max_size=6),
       finals=st.lists(st.booleans(), min_size=8, max_size=8), kinds=st.permutations(KINDS))
def test_utf8_random_bytes(data, cuts, finals, kinds):
    """Random bytes, arbitrary splits and final flags: same outcome of every feed call."""
    check_utf8(split(data, cuts), finals, kinds)


@DIFF
@given(text=st.text(max_size=200), edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0x80, 0xFF),
                                                            st.integers(0, 2)), max_size=3),
       cuts=st.lists(st.integers(0, 1000), max_size=6), last_final=st.booleans(),
       kinds=st.permutations(KINDS))
def test_utf8_corrupted_text(text, edits, cuts, last_final, kinds):
    """Valid text with a few bytes replaced, inserted or deleted, split anywhere."""
    data = corrupt(text.encode("utf-8", "surrogatepass"), edits)
    pieces = split(data, cuts)
    check_utf8(pieces, [False] * (len(pieces) - 1) + [last_final], kinds)


@DIFF
@given(text=st.text(min_size=1, max_size=300), cuts=st.lists(st.integers(0, 1200), max_size=10))
def test_utf8_valid_text_any_split(text, cuts):
    """Valid text never raises, whatever the split (characters cut between pieces are carried over)."""
    data = text.encode("utf-8")
    pieces = split(data, cuts)
    finals = [False] * (len(pieces) - 1) + [True]
    assert feed_all(C.Utf8Validator, pieces, finals) == [("ok", None)] * len(pieces)
    check_utf8(pieces, finals, [bytes])


@DIFF
@given(text=st.text(alphabet=st.characters(min_codepoint=0x80, max_codepoint=0x10FFFF, exclude_categories=["Cs"]),
                    min_size=60, max_size=700),
       ascii_runs=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 40)), max_size=3),
       edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 0xFF), st.integers(0, 2)), max_size=2),
       cuts=st.lists(st.integers(0, 4000), max_size=3), kinds=st.permutations(KINDS))
def test_utf8_long_non_ascii(text, ascii_runs, edits, cuts, kinds):
    """Long non-ASCII runs (the C validator's 64-byte blocks), corrupted anywhere, split anywhere."""
    for pos, k in ascii_runs:
        pos %= len(text) + 1
        text = text[:pos] + "a" * k + text[pos:]
    data = corrupt(text.encode(), edits) if edits else text.encode()
    pieces = split(data, cuts)
    check_utf8(pieces, [False] * (len(pieces) - 1) + [True], kinds)


FAIL_FAST = [b"\xed\xa0", b"\xed\xbf", b"\xe0\x80", b"\xe0\x9f", b"\xf0\x80", b"\xf0\x8f", b"\xf4\x90",
             b"\xf4\xbf", b"\xc0", b"\xc1", b"\xf5", b"\xff", b"\x80", b"\xc2A", b"\xe1\x80A", b"\xf1\x80\x80A",
             b"ok\xed\xa0", b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited"]


@pytest.mark.parametrize("data", FAIL_FAST)
def test_utf8_fail_fast_position(data):
    """An impossible prefix fails on the piece holding its first bad byte, at the same offset, byte by byte too."""
    check_utf8([data], [False], [bytes])
    check_utf8([b"abc", data], [False, False], [bytes])
    check_utf8([bytes([b]) for b in data], [False] * len(data), [bytes])
    err = outcome(C.Utf8Validator().feed, data)
    assert err[0] == "raise" and err[2] == 1007


def test_utf8_exhaustive_short_sequences():
    """Every 1- and 2-byte input and every 3-byte input with a multi-byte lead, fed whole and split."""
    pairs = [bytes((a, b)) for a in range(256) for b in range(256)]
    if SMALL:
        pairs = random.Random(1).sample(pairs, 500)
    for data in [bytes((a,)) for a in range(256)] + pairs:
        for final in (False, True):
            assert feed_all(C.Utf8Validator, [data], [final]) == feed_all(PyUtf8Validator, [data], [final])
        assert feed_all(C.Utf8Validator, [data[:1], data[1:]], [False, True]) == \
            feed_all(PyUtf8Validator, [data[:1], data[1:]], [False, True])
        assert C.validate_utf8(data) == py_validate_utf8(data)
    seconds = [0x00, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xFF]
    for lead in range(0xC0, 0x100, 3 if SMALL else 1):
        for b1 in seconds:
            for b2 in seconds:
                data = bytes((lead, b1, b2))
                for final in (False, True):
                    assert feed_all(C.Utf8Validator, [data], [final]) == feed_all(PyUtf8Validator, [data], [final])


def test_utf8_long_texts():
    """Long ASCII, Latin, CJK and emoji texts (the ASCII fast path and the DFA blocks), and a late error."""
    for unit in ("The quick brown fox. ", "Größenmaßstäbe à la française ", "漢字かな交じり文", "😀🎉🚀✨"):
        data = (unit * 3000).encode()
        for cut in (0, 1, 15, 16, 17, len(data) // 2 + 1):
            check_utf8([data[:cut], data[cut:]], [False, True], [bytes, bytearray])
        bad = data[:-5] + b"\xff" + data[-4:]
        check_utf8([bad], [True], [bytes])
        check_utf8([data, b"\xed\xa0"], [False, False], [bytes])


# The C validator's blocks: ASCII runs skipped 256 and 64 bytes at a time, non-ASCII text checked 64 bytes
# at a time against the 3 bytes before each byte (zeros before a piece's start), the last < 64 bytes and any
# doubted block by the byte DFA; and the Python layer's isascii() first below _ckernels._ASCII_FIRST bytes.
BAD_BYTES = [b"\x80", b"\xbf", b"\xc0", b"\xc1", b"\xf5", b"\xff", b"\xed\xa0", b"\xe0\x9f", b"\xf0\x8f", b"\xf4\x90",
             b"\xc3A", b"\xe2\x82A", b"\xf0\x9f\x98A", b"\xe2\x82", b"\xc3",
             # bad leads followed by the continuation bytes they would want
             b"\xc0\x80", b"\xc1\xbf", b"\xf5\x80\x80\x80", b"\xff\x80", b"\xe0\x9f\xbf", b"\xed\xa0\x80",
             b"\xf0\x8f\xbf\xbf", b"\xf4\x90\x80\x80", b"\xf4\x8f\xbf\xbf\x80"]
CHARS = ["é", "€", "😀", "\u0800", "\ud7ff", "\ue000", "\U00010000", "\U0010ffff", "\x7f"]
FILLERS = {"ascii": "abcdefgh", "latin": "aéb", "2byte": "é", "3byte": "€", "4byte": "😀", "mixed": "a€😀é"}


def filler(kind: str, n: int) -> bytes:
    """Exactly n bytes of valid text: the kind's characters, then ASCII for the last 0..3 bytes."""
    unit = FILLERS[kind]
    out = b""
    for ch in unit * n:
        c = ch.encode()
        if len(out) + len(c) > n:
            break
        out += c
    return out + b"z" * (n - len(out))


@pytest.mark.parametrize("bad", BAD_BYTES)
@pytest.mark.parametrize("kind", ["ascii", "2byte", "mixed"])
def test_utf8_bad_bytes_at_every_offset(bad, kind):
    """A bad sequence at every offset 0..130 of a text of 200+ bytes, whole and split at the block boundaries."""
    for off in range(131):
        data = filler(kind, off) + bad + filler(kind, 200)
        check_utf8([data], [True], [bytes])
        check_utf8([data], [False], [bytearray])
        for cut in (1, 3, 63, 64, 65, off):
            check_utf8([data[:cut], data[cut:]], [False, True], [bytes, memoryview])


@pytest.mark.parametrize("kind", FILLERS)
def test_utf8_character_across_block_and_chunk_boundaries(kind):
    """Every character length straddling a 64-byte (and 256-byte) block boundary, fed whole and cut at
    every byte around it: the state carried between pieces."""
    for ch in CHARS:
        c = ch.encode("utf-8", "surrogatepass")
        for base in (64, 128, 256, 320):
            for at in range(base - len(c), base + 2):
                data = filler(kind, at) + c + filler(kind, 150)
                check_utf8([data], [True], [bytes])
                for cut in range(at - 4, at + len(c) + 4):
                    check_utf8([data[:cut], data[cut:]], [False, True], [bytes, bytearray])
                check_utf8([data[: at + 1], data[at + 1 : at + 2], data[at + 2 :]], [False, False, True], [bytes])


@pytest.mark.parametrize("kind", FILLERS)
def test_utf8_lengths_0_to_200(kind):
    """Every length 0..200: valid, one byte short of a character, and with a bad last or first byte."""
    text = filler(kind, 260)
    for n in range(201):
        data = text[:n]
        check_utf8([data], [True], [bytes])
        check_utf8([data + b"\xff"], [True], [bytes])
        check_utf8([b"\x80" + data], [False], [bytes])
        check_utf8([data + "€".encode()[:2]], [True], [bytes, bytearray])
        check_utf8([data[: n // 2], data[n // 2 :]], [False, True], [bytes, memoryview])


@pytest.mark.parametrize("kind", FILLERS)
def test_utf8_streaming_pieces(kind):
    """A long text fed in pieces of every size 1..70 (and 64, 256, 1000): the state and offsets across feeds,
    a pending character completed at the start of the next piece (the block look-back of zeros)."""
    data = filler(kind, 1500)
    bad = data[:700] + b"\xed\xa0\x80" + data[700:]
    for size in [*range(1, 71), 128, 256, 1000]:
        pieces = [data[i : i + size] for i in range(0, len(data), size)]
        check_utf8(pieces, [False] * (len(pieces) - 1) + [True], [bytes])
        pieces = [bad[i : i + size] for i in range(0, len(bad), size)]
        check_utf8(pieces, [False] * len(pieces), [bytes, bytearray])
    for lead in ("😀", "€", "é"):
        c = lead.encode()
        for k in range(1, len(c)):
            for rest in (filler(kind, 200), b"\x80" + filler(kind, 200), filler(kind, 70) + b"\xc0" + filler(kind, 70)):
                check_utf8([c[:k], c[k:] + rest], [False, True], [bytes])
                check_utf8([data[:300] + c[:k], c[k:] + rest], [False, True], [bytes])


@pytest.mark.parametrize("n", [4094, 4095, 4096, 4097, 8191, 8192, 70000])
def test_utf8_ascii_first_threshold(n):
    """Around _ckernels._ASCII_FIRST: ASCII and text with one bad or non-ASCII byte, every buffer type."""
    ascii_ = b"x" * n
    for data in (ascii_, ascii_[:-1] + b"\x80", b"\xff" + ascii_[1:], ascii_[:-2] + "é".encode(),
                 ascii_[: n // 2] + b"\xc3" + ascii_[n // 2 + 1 :]):
        check_utf8([data], [True], KINDS)
        check_utf8([data[:100], data[100:]], [False, True], [bytes, bytearray])


# ---- frame parsing (RFC 6455 §5.2) ---------------------------------------------------------

class PyParser(FrameParser):
    __slots__ = ()
    _parse = parse.parse_frames  # the reference, whatever kernels selected


class CParser(FrameParser):
    __slots__ = ()
    _parse = C.parse_frames_c  # always C, whatever the size (kernels selects C.parse_frames)


class HybridParser(FrameParser):
    __slots__ = ()
    _parse = C.parse_frames  # pure Python below PARSE_SMALL bytes


def feed_outcomes(parser_cls, chunks, **config):
    """Every feed's outcome (frames, or the exception with the frames completed before it) and the buffer left."""
    p = parser_cls(**config)
    out = []
    for chunk in chunks:
        try:
            out.append(("ok", p.feed(chunk), p.buffered))
        except ProtocolError as exc:
            out.append(("raise", type(exc), exc.code, str(exc), exc.frames))
            break
    if out and out[-1][0] == "ok" and p.buffered:
        out.append(("partial", [p.peek_partial(k) for k in (0, 1, 5)]))
    return out


def check_parse(wire: bytes, cuts: list[int], config: dict, kinds=(bytes,)):
    chunks = split(wire, cuts)
    chunks = [kinds[i % len(kinds)](c) for i, c in enumerate(chunks)]
    expected = feed_outcomes(PyParser, chunks, **config)
    assert feed_outcomes(CParser, chunks, **config) == expected
    assert feed_outcomes(HybridParser, chunks, **config) == expected
    return expected


CONFIGS = st.fixed_dictionaries({
    "mask_required": st.booleans(),
    "rsv1_allowed": st.booleans(),
    "max_frame_size": st.one_of(st.none(), st.integers(0, 70000), st.sampled_from([-1, 125, 126, 1 << 63, 1 << 70])),
})

#: 8191/8192 straddle CW_LARGE_PAYLOAD: payloads from there on are unmasked straight into their own bytes.
SIZES = st.one_of(st.integers(0, 130), st.sampled_from([125, 126, 127, 8191, 8192, 65535, 65536]))


@st.composite
def frame_lists(draw, masked: bool, max_frames: int = 8):
    """Valid frames for one direction: (opcode, payload, fin, rsv1, key)."""
    out = []
    for _ in range(draw(st.integers(0, max_frames))):
        opcode = draw(st.sampled_from([OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG]))
        control = opcode & 0x8
        size = draw(st.integers(0, 125)) if control else draw(SIZES)
        payload = draw(st.binary(min_size=size, max_size=size)) if size < 200 else os.urandom(size)
        fin = True if control else draw(st.booleans())
        rsv1 = opcode in (OP_TEXT, OP_BINARY) and draw(st.booleans())
        key = draw(st.binary(min_size=4, max_size=4)) if masked else None
        out.append((opcode, payload, fin, rsv1, key))
    return out


@DIFF
@given(data=st.data(), masked=st.booleans(), cuts=st.lists(st.integers(0, 200000), max_size=8),
       kinds=st.permutations([bytes, bytearray, memoryview]))
def test_parse_valid_sequences_any_chunking(data, masked, cuts, kinds):
    """Valid frame sequences, cut anywhere: the same frames from every feed, and the same buffered rest."""
    frames = data.draw(frame_lists(masked))
    wire = b"".join(serialize_frame(op, p, fin=fin, rsv1=rsv1, mask_key=key) for op, p, fin, rsv1, key in frames)
    config = {"mask_required": masked, "rsv1_allowed": True, "max_frame_size": None}
    out = check_parse(wire, cuts, config, kinds)
    got = [f for step in out if step[0] == "ok" for f in step[1]]
    assert [(op, bool(fin), bool(rsv1), p) for op, fin, rsv1, p in got] == \
        [(op, fin, rsv1, p) for op, p, fin, rsv1, _ in frames]


@DIFF
@given(wire=st.binary(max_size=300), cuts=st.lists(st.integers(0, 300), max_size=5), config=CONFIGS,
       kinds=st.permutations([bytes, bytearray, memoryview]))
def test_parse_arbitrary_bytes(wire, cuts, config, kinds):
    """Arbitrary bytes under any configuration: same frames, same exception (class, code, message, frames)."""
    check_parse(wire, cuts, config, kinds)


@DIFF
@given(data=st.data(), masked=st.booleans(), config=CONFIGS,
       flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 7)), min_size=1, max_size=3),
       cuts=st.lists(st.integers(0, 200000), max_size=4))
def test_parse_corrupted_sequences(data, masked, config, flips, cuts):
    """Valid sequences with a few bits flipped: each header rule is hit deep in a batch, same outcome."""
    frames = data.draw(frame_lists(masked))
    wire = bytearray(b"".join(serialize_frame(op, p, fin=fin, rsv1=rsv1, mask_key=key)
                              for op, p, fin, rsv1, key in frames))
    assume(wire)
    for pos, bit in flips:
        wire[pos % len(wire)] ^= 1 << bit
    check_parse(bytes(wire), cuts, config)


HEADERS = [
    bytes([0x81, 0xFE, 0x00, 0x7D]),  # 16-bit length not minimal
    bytes([0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0]),  # 64-bit top bit
    bytes([0x82, 0xFF, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF]),  # 64-bit not minimal
    bytes([0x82, 0xFF, 0, 0, 0, 0, 0, 1, 0, 0]),  # 65536: fine (incomplete)
    bytes([0x82, 0xFF, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]),  # 2**63-1
    bytes([0x89, 0xFE, 0, 126]),  # ping over 125
    bytes([0x09, 0x80]),  # fragmented ping
    bytes([0x08, 0xFE, 0, 200]),  # fragmented and too long: "fragmented" wins
    bytes([0xC1, 0x80]), bytes([0xA1, 0x80]), bytes([0x91, 0x80]), bytes([0xC0, 0x80]), bytes([0xC9, 0x80]),
    bytes([0x83, 0x80]), bytes([0x8B, 0x80]), bytes([0x8F, 0x00]),
    bytes([0x81, 0x00]), bytes([0x81, 0x80]),
]


@pytest.mark.parametrize("header", HEADERS)
def test_parse_header_rules(header):
    """Each §5.2 header rule, alone and after a good frame, under every configuration and limit type."""
    for mask_required in (True, False):
        good = serialize_frame(OP_TEXT, b"ok", mask_key=b"abcd" if mask_required else None)
        for rsv1_allowed in (True, False):
            for limit in (None, 0, 100, 65536, 1 << 63, 1.5e6, -5):
                config = {"mask_required": mask_required, "rsv1_allowed": rsv1_allowed, "max_frame_size": limit}
                for wire in (header, good + header, good + header + bytes(8)):
                    check_parse(wire, [], config)
                    check_parse(wire, [len(good) + 1], config)


@pytest.mark.parametrize("masked", [True, False])
def test_parse_many_frames_past_the_record_capacity(masked):
    """More frames in one feed than one C call records (the wrapper calls again), then an error."""
    key = b"\x01\x02\x03\x04" if masked else None
    n = 9000 if not SMALL else 4200
    wire = b"".join(serialize_frame(OP_BINARY if i % 3 else OP_PING, bytes([i % 256]) * (i % 3),
                                    mask_key=key) for i in range(n))
    config = {"mask_required": masked}
    out = check_parse(wire, [], config)
    assert len(out[0][1]) == n
    bad = wire + bytes([0x83, 0x80 if masked else 0]) + (key or b"")
    check_parse(bad, [], config)
    check_parse(bad, [len(wire) - 7], config)


def test_parse_large_payloads():
    """16- and 64-bit lengths with large payloads, masked, cut at awkward places."""
    for size in (126, 65536) if SMALL else (126, 65535, 65536, 300000):
        payload = os.urandom(size)
        for key in (b"\x37\xfa\x21\x3d", None):
            wire = serialize_frame(OP_BINARY, payload, mask_key=key) * 2
            config = {"mask_required": key is not None, "max_frame_size": None}
            check_parse(wire, [1, 3, 9, size // 2, len(wire) // 2 + 1], config, (bytes, bytearray))
            check_parse(wire, [], dict(config, max_frame_size=size - 1))


# ---- frame errors: one table, the same exception on both backends ----------------------------

KEY = b"\x01\x02\x03\x04"
_ERR = frame_errors

#: error id -> every way of hitting it: (the bad frame, parser settings, the error's detail).
FRAME_ERROR_CASES = {
    _ERR.E_RSV23: [(bytes([0x81 | rsv, 0x80]) + KEY, {"rsv1_allowed": allowed}, 0)
                   for rsv in (0x10, 0x20, 0x30, 0x70) for allowed in (False, True)],
    _ERR.E_RSV1: [(bytes([0xC0 | op, 0x80]) + KEY, {}, 0) for op in (OP_CONT, OP_TEXT, OP_BINARY, OP_PING)],
    _ERR.E_RSV1_CTRL: [(bytes([0xC0 | op, 0x80]) + KEY, {"rsv1_allowed": True}, 0)
                       for op in (OP_CONT, OP_CLOSE, OP_PING, OP_PONG)],
    _ERR.E_OPCODE: [(bytes([0x80 | op, 0x80]) + KEY, {}, op) for op in (*range(0x3, 0x8), *range(0xB, 0x10))],
    _ERR.E_CTRL_FRAG: [(bytes([op, 0x80]) + KEY, {}, op) for op in (OP_CLOSE, OP_PING, OP_PONG)]
    + [(bytes([OP_CLOSE, 0xFE, 0, 200]), {}, OP_CLOSE)],  # fragmented and too long: "fragmented" wins
    _ERR.E_CTRL_LONG: [(bytes([0x80 | op, 0xFE, 0, 126]), {}, op) for op in (OP_CLOSE, OP_PING, OP_PONG)],
    _ERR.E_UNMASKED: [(bytes([0x81, 0x05]) + b"hello", {}, 0)],
    _ERR.E_MASKED: [(bytes([0x81, 0x85]) + KEY + b"hello", {"mask_required": False}, 0)],
    _ERR.E_LEN16: [(bytes([0x82, 0xFE, 0, n]) + KEY, {}, 0) for n in (0, 125)],
    _ERR.E_LEN64_TOP: [(bytes([0x82, 0xFF, 0x80]) + bytes(7) + KEY, {}, 0), (bytes([0x82, 0xFF]) + b"\xff" * 8 + KEY, {}, 0)],
    _ERR.E_LEN64: [(bytes([0x82, 0xFF]) + n.to_bytes(8, "big") + KEY, {}, 0) for n in (0, 126, 65535)],
    _ERR.E_TOO_BIG: [(bytes([0x82, 0x86]) + KEY, {"max_frame_size": 5}, 6),
                     (bytes([0x82, 0xFE, 1, 0]) + KEY, {"max_frame_size": 255}, 256),
                     (bytes([0x82, 0x7F]) + (1 << 40).to_bytes(8, "big"), {"mask_required": False, "max_frame_size": 0},
                      1 << 40),
                     (bytes([0x82, 0x80]) + KEY, {"max_frame_size": -1}, 0)],
}


def expected_error(error: int, settings: dict, detail: int) -> tuple:
    """What feed_outcomes records for this frame error, from the shared table."""
    exc = frame_errors.frame_error(error, detail, settings.get("max_frame_size"))
    assert type(exc) is frame_errors.FRAME_ERRORS[error][0]
    assert exc.code == closecodes.ERROR_CODES[exc.reason]
    return ("raise", type(exc), exc.code, str(exc))


def test_frame_error_ids_are_the_c_codes():
    """The table's ids are the C parser's CW_E_* codes, and every id has its row."""
    ids = {name: value for name, value in vars(frame_errors).items() if name.startswith("E_")}
    assert sorted(ids.values()) == sorted(frame_errors.FRAME_ERRORS) == sorted(FRAME_ERROR_CASES)
    for name, value in ids.items():
        assert getattr(C.lib, "CW_" + name) == value, name


@pytest.mark.parametrize("error", sorted(FRAME_ERROR_CASES))
def test_frame_errors_same_on_both_backends(error):
    """Every way of hitting each frame error: the same class, close code and message from the pure
    and the C parser (and the selected one), the table's, alone, after a good frame, split anywhere."""
    for bad, settings, detail in FRAME_ERROR_CASES[error]:
        config = {"mask_required": True, **settings}
        want = expected_error(error, settings, detail)
        good = serialize_frame(OP_BINARY, bytes(70), mask_key=KEY if config["mask_required"] else None)
        if config.get("max_frame_size", 70) < 70:
            good = b""
        for wire, cuts in ((bad, []), (bad, [1]), (good + bad, []), (good + bad, [len(good) + 1]),
                           (good + bad, [len(good) - 3]), (good + bad, [len(good) + len(bad) - 1])):
            out = check_parse(wire, cuts, config)  # the C, selected and pure parsers agree on every feed
            assert out[-1][:4] == want, (wire, cuts)


@DIFF
@given(data=st.data(), cuts=st.lists(st.integers(0, 3000), max_size=4))
def test_frame_errors_after_random_frames(data, cuts):
    """A frame error after random good frames, cut anywhere: the table's exception on both backends."""
    error = data.draw(st.sampled_from(sorted(FRAME_ERROR_CASES)))
    bad, settings, detail = data.draw(st.sampled_from(FRAME_ERROR_CASES[error]))
    config = {"mask_required": True, **settings}
    top = min(125, config.get("max_frame_size", 125))
    good = b""
    if top >= 0:
        for opcode, size in data.draw(st.lists(st.tuples(st.sampled_from([OP_TEXT, OP_BINARY, OP_PING]),
                                                         st.integers(0, top)), max_size=20)):
            good += serialize_frame(opcode, os.urandom(size), mask_key=KEY if config["mask_required"] else None)
    out = check_parse(good + bad, cuts, config)
    assert out[-1][:4] == expected_error(error, settings, detail)


def test_parse_does_not_touch_the_callers_data():
    """Unmasking happens in a copy (or the parser's own buffer), never in the caller's bytes/bytearray."""
    wire = serialize_frame(OP_TEXT, b"Hello, world", mask_key=b"abcd") * 3
    for kind in (bytes, bytearray):
        data = kind(wire)
        p = CParser(mask_required=True)
        assert [f[3] for f in p.feed(data)] == [b"Hello, world"] * 3
        assert data == wire
        p.feed(data[:5])
        p.feed(bytearray(data[5:9]))
        assert p.buffered == 9
        if kind is bytearray:
            data += b"x"  # no export left on the caller's buffer
