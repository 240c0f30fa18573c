"""Incremental UTF-8 validation (RFC 6455 §8.1, RFC 3629 §4): correctness and fail-fast."""

from __future__ import annotations

import array
import codecs
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cowboy_ws.protocol.errors import InvalidUtf8, ProtocolError
from cowboy_ws.protocol.utf8 import Utf8Validator, validate_utf8

# --- reference: the RFC 3629 §4 ABNF, one (ranges...) row per UTF8-char alternative -------------

TAIL = (0x80, 0xBF)
ABNF = [
    [(0x00, 0x7F)],  # UTF8-1
    [(0xC2, 0xDF), TAIL],  # UTF8-2
    [(0xE0, 0xE0), (0xA0, 0xBF), TAIL],  # UTF8-3
    [(0xE1, 0xEC), TAIL, TAIL],
    [(0xED, 0xED), (0x80, 0x9F), TAIL],
    [(0xEE, 0xEF), TAIL, TAIL],
    [(0xF0, 0xF0), (0x90, 0xBF), TAIL, TAIL],  # UTF8-4
    [(0xF1, 0xF3), TAIL, TAIL, TAIL],
    [(0xF4, 0xF4), (0x80, 0x8F), TAIL, TAIL],
]


def first_bad(data: bytes) -> int | None:
    """Smallest index i such that data[:i+1] is a prefix of no UTF-8 string, or None."""
    row: list[tuple[int, int]] | None = None
    pos = 0  # position inside the current character
    for i, b in enumerate(data):
        if row is None:
            row = next((r for r in ABNF if r[0][0] <= b <= r[0][1]), None)
            if row is None:
                return i
            pos = 0
        elif not row[pos][0] <= b <= row[pos][1]:
            return i
        pos += 1
        if pos == len(row):
            row = None
    return None


def decodes(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def error_offset(exc: InvalidUtf8) -> int:
    m = re.search(r"offset (\d+)", str(exc))
    assert m, str(exc)
    return int(m.group(1))


def feed_pieces(pieces: list, final: bool = True) -> tuple[int | None, InvalidUtf8 | None]:
    """Feed pieces in order (the last with ``final``); return (index of the raising call, exception)."""
    v = Utf8Validator()
    for i, piece in enumerate(pieces):
        try:
            v.feed(piece, final=final and i == len(pieces) - 1)
        except InvalidUtf8 as exc:
            return i, exc
    return None, None


def check_split(data: bytes, cuts: list[int], kinds: list[type] | None = None) -> None:
    """Feed ``data`` cut at ``cuts`` and compare with bytes.decode and the reference (RFC 6455 §8.1)."""
    bounds = [0, *sorted(cuts), len(data)]
    pieces: list = [data[a:b] for a, b in zip(bounds, bounds[1:])]
    if kinds:
        pieces = [kinds[i % len(kinds)](p) for i, p in enumerate(pieces)]
    idx, exc = feed_pieces(pieces)
    ok = decodes(data)
    assert (exc is None) == ok, (data, cuts, exc)
    assert validate_utf8(data) == ok
    if ok:
        return
    assert exc is not None and exc.code == 1007
    bad = first_bad(data)
    if bad is None:
        # every byte can still start a valid text: it only fails for ending mid-character
        assert idx == len(pieces) - 1
        assert "incomplete" in str(exc)
        return
    # fail fast: the call whose piece holds byte ``bad`` raises, and says where
    assert bounds[idx] <= bad < bounds[idx + 1], (data, cuts, idx, bad)
    assert error_offset(exc) == bad


# --- the reference itself ---------------------------------------------------------------------


@given(st.binary(max_size=40))
@settings(max_examples=300)
def test_reference_agrees_with_decode(data: bytes) -> None:
    """The ABNF reference accepts exactly what CPython's decoder accepts, up to a trailing partial char."""
    bad = first_bad(data)
    if decodes(data):
        assert bad is None
    elif bad is None:
        # a valid prefix: completing it with the lowest allowed bytes decodes
        tail_start = max(i for i in range(len(data)) if not 0x80 <= data[i] <= 0xBF)
        row = next(r for r in ABNF if r[0][0] <= data[tail_start] <= r[0][1])
        rest = bytes(lo for lo, _ in row[len(data) - tail_start :])
        assert decodes(data + rest)


def test_cpython_non_final_lets_surrogate_prefix_through() -> None:
    """Why the tail check exists (RFC 3629 §4 excludes surrogates): CPython defers ED A0 but not F4 90."""
    assert codecs.utf_8_decode(b"\xed\xa0", "strict", False) == ("", 0)
    with pytest.raises(UnicodeDecodeError):
        codecs.utf_8_decode(b"\xf4\x90", "strict", False)


# --- hypothesis: arbitrary splits ----------------------------------------------------------------

cuts_for = lambda n: st.lists(st.integers(0, n), max_size=6)  # noqa: E731


@given(st.binary(max_size=64).flatmap(lambda d: st.tuples(st.just(d), cuts_for(len(d)))))
@settings(max_examples=400)
def test_split_binary(case: tuple[bytes, list[int]]) -> None:
    """Arbitrary bytes, arbitrary fragments: raise iff invalid, at the first bad byte (RFC 6455 §8.1)."""
    check_split(*case)


@st.composite
def corrupted_text(draw: st.DrawFn) -> tuple[bytes, list[int]]:
    text = draw(st.text(max_size=24))
    data = bytearray(text.encode("utf-8"))
    for _ in range(draw(st.integers(0, 3))):
        if data and draw(st.booleans()):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        else:
            pos = draw(st.integers(0, len(data)))
            data[pos:pos] = draw(
                st.sampled_from([b"\xed\xa0\x80", b"\xed\xbf", b"\xf4\x90", b"\xe0\x80", b"\xc0\x80", b"\xf8", b"\x80", b"\xe2\x82"])
            )
    data = bytes(data)
    return data, draw(cuts_for(len(data)))


@given(corrupted_text(), st.sampled_from([[bytes], [bytearray], [memoryview], [bytes, memoryview, bytearray]]))
@settings(max_examples=400)
def test_split_corrupted_text(case: tuple[bytes, list[int]], kinds: list[type]) -> None:
    """UTF-8 text with a few bytes corrupted, fed in fragments of every bytes-like type (RFC 6455 §8.1)."""
    check_split(*case, kinds=kinds)


@given(st.text(max_size=200), st.data())
@settings(max_examples=200)
def test_valid_text_any_split(text: str, data: st.DataObject) -> None:
    """Valid UTF-8 is accepted however it is fragmented (RFC 6455 §5.4, §8.1)."""
    raw = text.encode("utf-8")
    check_split(raw, data.draw(cuts_for(len(raw))))


# --- Autobahn 6.x cases ---------------------------------------------------------------------------

KOSME = "κόσμε".encode("utf-8")  # Autobahn 6.2 / 6.6: ce ba e1 bd b9 cf 83 ce bc ce b5

VALID = {
    "kosme": KOSME,
    "empty": b"",
    "U+0000": b"\x00",
    "U+007F": b"\x7f",
    "U+0080": b"\xc2\x80",
    "U+07FF": b"\xdf\xbf",
    "U+0800": b"\xe0\xa0\x80",
    "U+D7FF": b"\xed\x9f\xbf",
    "U+E000": b"\xee\x80\x80",
    "U+FFFD": b"\xef\xbf\xbd",
    "U+FFFE": b"\xef\xbf\xbe",  # noncharacters are valid UTF-8 (6.22)
    "U+FFFF": b"\xef\xbf\xbf",
    "U+10000": b"\xf0\x90\x80\x80",
    "U+10FFFF": b"\xf4\x8f\xbf\xbf",
    "kosme+U+10FFFF": KOSME + b"\xf4\x8f\xbf\xbf" + b"edited",
}

# (bytes, offset of the first bad byte; None: only incomplete at the end)
INVALID = {
    "kosme-surrogate": (KOSME + b"\xed\xa0\x80" + b"edited", len(KOSME) + 1),  # 6.3.1
    "surrogate ED A0 80": (b"\xed\xa0\x80", 1),  # 6.18
    "surrogate ED BF BF": (b"\xed\xbf\xbf", 1),
    "paired surrogates": (b"\xed\xa0\x80\xed\xb0\x80", 1),  # 6.19
    "overlong C0 80": (b"\xc0\x80", 0),  # 6.17
    "overlong C1 BF": (b"\xc1\xbf", 0),
    "overlong E0 80 80": (b"\xe0\x80\x80", 1),
    "overlong E0 9F BF": (b"\xe0\x9f\xbf", 1),
    "overlong F0 80 80 80": (b"\xf0\x80\x80\x80", 1),
    "overlong F0 8F BF BF": (b"\xf0\x8f\xbf\xbf", 1),
    "U+110000": (b"\xf4\x90\x80\x80", 1),  # 6.11.5
    "kosme+U+110000": (KOSME + b"\xf4\x90\x80\x80" + b"edited", len(KOSME) + 1),  # 6.4.1
    "F5": (b"\xf5\x80\x80\x80", 0),
    "first 5-byte": (b"\xf8\x88\x80\x80\x80", 0),  # 6.8
    "first 6-byte": (b"\xfc\x84\x80\x80\x80\x80", 0),
    "last 4-byte U+1FFFFF": (b"\xf7\xbf\xbf\xbf", 0),  # 6.9.4
    "FE": (b"\xfe", 0),  # 6.16
    "FF": (b"\xff", 0),
    "lone continuation": (b"\x80", 0),  # 6.12
    "lonely start": (b"\xc0 ", 0),  # 6.13
    "start then space": (b"\xe2 ", 1),
    "missing last byte 2": (b"\xdf", None),  # 6.14
    "missing last byte 3": (b"\xef\xbf", None),
    "missing last byte 4": (b"\xf4\x8f\xbf", None),
    "truncated then ascii": (b"\xe2\x82a", 2),  # 6.15
}


@pytest.mark.parametrize("data", VALID.values(), ids=VALID.keys())
def test_autobahn_valid(data: bytes) -> None:
    """Autobahn 6.2, 6.5, 6.7, 6.9, 6.11, 6.22: valid text, whole, byte by byte and in 3 parts (§8.1)."""
    assert validate_utf8(data)
    v = Utf8Validator()
    v.feed(data, final=True)
    for i in range(len(data)):
        v.feed(data[i : i + 1])
    v.feed(b"", final=True)
    third = max(1, len(data) // 3)
    check_split(data, [third, 2 * third])


@pytest.mark.parametrize("data,bad", INVALID.values(), ids=INVALID.keys())
def test_autobahn_invalid(data: bytes, bad: int | None) -> None:
    """Autobahn 6.3, 6.4, 6.8, 6.12-6.19: fail with 1007 on the byte that breaks it (§8.1)."""
    assert first_bad(data) == bad
    assert not validate_utf8(data)
    with pytest.raises(InvalidUtf8) as info:
        Utf8Validator().feed(data, final=True)
    assert info.value.code == 1007
    assert isinstance(info.value, ProtocolError)
    # byte by byte (Autobahn 6.4.3/6.4.4 style): the call with the bad byte raises
    pieces = [data[i : i + 1] for i in range(len(data))]
    idx, exc = feed_pieces(pieces)
    assert exc is not None
    assert idx == (len(data) - 1 if bad is None else bad)
    # not final: an impossible prefix at the very end still raises at once
    if bad is not None:
        with pytest.raises(InvalidUtf8):
            Utf8Validator().feed(data[: bad + 1])


@pytest.mark.parametrize("prefix", [b"\xed\xa0", b"\xf4\x90", b"\xe0\x80", b"\xf0\x80", b"\xc0", b"\xf5", b"\xc1", b"\xff"])
def test_impossible_prefix_at_end_raises_at_once(prefix: bytes) -> None:
    """A piece ending in a prefix no UTF-8 text has fails without waiting for more (§8.1, fail fast)."""
    for lead in (b"", b"ok ", KOSME):
        with pytest.raises(InvalidUtf8):
            Utf8Validator().feed(lead + prefix)
    v = Utf8Validator()
    v.feed(prefix[:1] if prefix[0] in (0xED, 0xF4, 0xE0, 0xF0) else b"")
    with pytest.raises(InvalidUtf8):
        v.feed(prefix[1:] if prefix[0] in (0xED, 0xF4, 0xE0, 0xF0) else prefix)


def test_autobahn_6_4_fragments() -> None:
    """Autobahn 6.4.1/6.4.2: the fragment holding the bad byte fails, not the message's end (§8.1)."""
    idx, _ = feed_pieces([KOSME, b"\xf4\x90\x80\x80", b"edited"])
    assert idx == 1
    idx, _ = feed_pieces([KOSME + b"\xf4", b"\x90", b"\x80\x80edited"])
    assert idx == 1
    idx, _ = feed_pieces([KOSME + b"\xed", b"\xa0\x80", b"edited"])
    assert idx == 1


def test_valid_tail_kept_and_completed() -> None:
    """A valid incomplete character at a fragment's end is completed by the next (§5.4, §8.1)."""
    v = Utf8Validator()
    v.feed(b"price: \xe2\x82")
    v.feed(b"\xac", final=True)
    v.feed(b"\xf0")
    v.feed(b"\x9f")
    v.feed(b"")
    v.feed(b"\x98")
    v.feed(b"\x80 ok", final=True)


def test_final_with_incomplete_tail_raises() -> None:
    """A text message may not end inside a character (RFC 6455 §8.1, 1007)."""
    v = Utf8Validator()
    v.feed(b"abc\xe2\x82")
    with pytest.raises(InvalidUtf8, match="incomplete") as info:
        v.feed(b"", final=True)
    assert info.value.code == 1007
    assert error_offset(info.value) == 3
    with pytest.raises(InvalidUtf8, match="offset 2"):
        Utf8Validator().feed(b"ab\xf0\x90\x80", final=True)


def test_final_resets_for_next_message() -> None:
    """After final=True the validator starts a new message (§5.4): offsets count from its start."""
    v = Utf8Validator()
    v.feed(b"hello world", final=True)
    v.feed(b"\xce\xba", final=True)
    with pytest.raises(InvalidUtf8, match="offset 2"):
        v.feed(b"ab\xff")
    # after an error the validator is clean again
    v.feed(b"fine", final=True)


def test_reset_drops_pending_tail() -> None:
    """reset() forgets a pending partial character (§8.1)."""
    v = Utf8Validator()
    v.feed(b"xyz\xe2\x82")
    v.reset()
    v.feed(b"abc", final=True)
    v.feed(b"\xe2")
    v.reset()
    with pytest.raises(InvalidUtf8, match="offset 0"):
        v.feed(b"\x82")


def test_offset_counts_across_fragments() -> None:
    """The error message gives the offset in the message, not in the fragment (§8.1)."""
    v = Utf8Validator()
    v.feed(b"0123456789")
    v.feed(KOSME)
    with pytest.raises(InvalidUtf8, match=f"offset {10 + len(KOSME) + 3}"):
        v.feed(b"abc\x80")


def test_memoryview_inputs() -> None:
    """Any bytes-like fragment is accepted, including sliced and non-byte memoryviews (§8.1)."""
    v = Utf8Validator()
    v.feed(memoryview(KOSME)[:3])
    v.feed(memoryview(KOSME)[3:], final=True)
    v.feed(bytearray(KOSME), final=True)
    strided = memoryview(b"a\xffb\xffc")[::2]
    v.feed(strided, final=True)
    assert validate_utf8(strided)
    words = memoryview(array.array("H", [0x6261, 0x6463]))  # b"abcd" on little-endian
    v.feed(words, final=True)
    assert validate_utf8(words)
    assert not validate_utf8(memoryview(b"\xed\xa0\x80"))
    with pytest.raises(InvalidUtf8):
        v.feed(memoryview(array.array("H", [0xA0ED])))
    assert validate_utf8(memoryview(b"abc"))


def test_large_inputs() -> None:
    """Large ASCII and CJK messages in fragments, with a split inside characters (§5.4, §8.1)."""
    cjk = ("漢字かな交じり文" * 5000).encode("utf-8")
    v = Utf8Validator()
    for i in range(0, len(cjk), 1000):  # 1000 is not a multiple of 3
        v.feed(cjk[i : i + 1000])
    v.feed(b"", final=True)
    bad = cjk[:50001] + b"\xed\xa0\x80" + cjk
    with pytest.raises(InvalidUtf8, match="offset 50002"):
        Utf8Validator().feed(bad)
    assert validate_utf8(b"a" * 100_000)
    assert not validate_utf8(b"a" * 100_000 + b"\x80")


# --- the selected backend (kernels: C unless COWBOY_WS_PURE) against the ABNF reference --------
# The C validator works in blocks (ASCII runs 256 and 64 bytes at a time, other text 64 bytes at a
# time): bad bytes and characters placed at and around those boundaries, fed whole and in pieces.

def _selected() -> tuple[type, object]:
    from cowboy_ws.protocol import kernels

    return kernels.Utf8Validator, kernels.validate_utf8


def check_backend(data: bytes, cuts: list[int]) -> None:
    """Like check_split, for the backend kernels selected: accept iff valid, fail on the first bad byte."""
    validator_cls, validate = _selected()
    bounds = [0, *sorted(cuts), len(data)]
    v = validator_cls()
    idx = exc = None
    for i, (a, b) in enumerate(zip(bounds, bounds[1:])):
        try:
            v.feed(data[a:b], final=i == len(bounds) - 2)
        except InvalidUtf8 as e:
            idx, exc = i, e
            break
    ok = decodes(data)
    assert (exc is None) == ok, (data, cuts, exc)
    assert validate(data) == ok
    if ok:
        return
    bad = first_bad(data)
    if bad is None:
        assert idx == len(bounds) - 2 and "incomplete" in str(exc)
    else:
        assert bounds[idx] <= bad < bounds[idx + 1] and error_offset(exc) == bad, (data, cuts, idx, bad)


@pytest.mark.parametrize("unit", ["a", "é", "€", "😀", "a€😀é"])
def test_blocks_bad_byte_at_every_offset(unit: str) -> None:
    text = (unit * 300).encode()
    for off in range(131):
        head = text[:off]
        head = head.decode("utf-8", "ignore").encode()  # whole characters only
        head += b"z" * (off - len(head))
        for bad in (b"\x80", b"\xc0\x80", b"\xe0\x9f\xbf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xe2\x82", b"\xff"):
            data = head + bad + text[:200]
            check_backend(data, [])
            check_backend(data, [64, off + 1] if off + 1 != 64 else [64])


@pytest.mark.parametrize("unit", ["a", "é", "漢", "😀"])
def test_blocks_characters_across_boundaries(unit: str) -> None:
    text = (unit * 200).encode()
    for ch in ("é", "€", "😀"):
        c = ch.encode()
        for at in (*range(60, 69), *range(124, 133), *range(252, 261)):
            head = text[:at].decode("utf-8", "ignore").encode()
            head += b"z" * (at - len(head))
            data = head + c + text[:100]
            for cut in range(at - 1, at + len(c) + 1):
                check_backend(data, [cut])
            check_backend(data + c[:-1], [])  # ends mid-character


def test_blocks_lengths_0_to_200() -> None:
    for unit in ("a", "é", "€", "😀"):
        text = (unit * 200).encode()
        for n in range(201):
            data = text[:n]
            check_backend(data, [])
            check_backend(data, [n // 2])
            check_backend(data + b"\xbf", [])
