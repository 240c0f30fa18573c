"""Payload masking (RFC 6455 §5.3): the XOR with the 4-byte key, cycled."""

from __future__ import annotations

import array
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cowboy_ws.protocol.mask import TRANSLATE_THRESHOLD, mask, unmask_join

KEY = bytes.fromhex("37fa213d")


def naive(data: bytes, key: bytes) -> bytes:
    """RFC 6455 §5.3: transformed-octet-i = original-octet-i XOR masking-key-octet-(i MOD 4)."""
    return bytes(b ^ key[i % 4] for i, b in enumerate(data))


def test_rfc_5_7_example() -> None:
    """RFC 6455 §5.7: "Hello" masked with 37 fa 21 3d is 7f 9f 4d 51 58."""
    assert mask(b"Hello", KEY) == bytes.fromhex("7f9f4d5158")
    assert mask(bytes.fromhex("7f9f4d5158"), KEY) == b"Hello"


def test_empty() -> None:
    """A zero-length payload masks to nothing (RFC 6455 §5.3)."""
    assert mask(b"", KEY) == b""
    assert mask(bytearray(), KEY) == b""
    assert mask(memoryview(b""), KEY) == b""
    assert type(mask(b"", KEY)) is bytes


SIZES = [
    *range(71),
    *range(TRANSLATE_THRESHOLD - 5, TRANSLATE_THRESHOLD + 6),
    125, 126, 127, 4095, 4096, 4097, 65535, 65536, 65537,
]


@pytest.mark.parametrize("n", SIZES)
def test_agrees_with_naive(n: int) -> None:
    """Both code paths (big-int XOR and translate) match the §5.3 definition at every length and phase."""
    data = os.urandom(n)
    key = os.urandom(4)
    expected = naive(data, key)
    for kind in (bytes, bytearray, memoryview):
        out = mask(kind(data), key)
        assert type(out) is bytes
        assert out == expected
    assert mask(expected, key) == data


def test_one_mebibyte() -> None:
    """A 1 MiB payload: masking matches §5.3 and unmasking restores it."""
    data = os.urandom(1 << 20)
    key = os.urandom(4)
    out = mask(data, key)
    assert out == naive(data, key)
    assert mask(memoryview(out), key) == data


@pytest.mark.parametrize("n", [0, 3, 100, TRANSLATE_THRESHOLD + 1, 5000])
def test_memoryview_slices_and_formats(n: int) -> None:
    """Any bytes-like payload works: sliced views, strided views, multi-byte formats (§5.3)."""
    buf = os.urandom(n + 16)
    assert mask(memoryview(buf)[7 : 7 + n], KEY) == naive(buf[7 : 7 + n], KEY)
    assert mask(memoryview(buf)[::2], KEY) == naive(buf[::2], KEY)
    words = array.array("I", buf[: (n // 4) * 4])
    assert mask(memoryview(words), KEY) == naive(words.tobytes(), KEY)


def test_input_not_modified() -> None:
    """Masking returns a new buffer and leaves a bytearray input alone (§5.3)."""
    for n in (10, TRANSLATE_THRESHOLD * 2):
        data = bytearray(os.urandom(n))
        copy = bytes(data)
        mask(data, KEY)
        assert data == copy


@pytest.mark.parametrize("key", [b"", b"abc", b"abcde"])
def test_bad_key_length(key: bytes) -> None:
    """The masking key is exactly 32 bits (RFC 6455 §5.2)."""
    with pytest.raises(ValueError):
        mask(b"data", key)


@given(st.binary(max_size=3 * TRANSLATE_THRESHOLD), st.binary(min_size=4, max_size=4))
@settings(max_examples=300)
def test_property_naive_and_round_trip(data: bytes, key: bytes) -> None:
    """For any payload and key: mask equals the §5.3 definition and is its own inverse."""
    out = mask(data, key)
    assert out == naive(data, key)
    assert mask(out, key) == data
    assert mask(bytearray(data), key) == out


@pytest.mark.parametrize("n_head", [0, 1, 2, 3, 5, 500])
@pytest.mark.parametrize("n_tail", [1, 3, 4, 7, 600])
def test_unmask_join_is_one_unmasking_over_the_seam(n_head: int, n_tail: int) -> None:
    """RFC 6455 §5.3 over two pieces: the key's phase runs on from head to tail (any seam offset)."""
    payload = os.urandom(n_head + n_tail)
    key = b"\x37\xfa\x21\x3d"
    masked = naive(payload, key)
    head = bytearray(b"\x82\xfe\x00\x00" + key + masked[:n_head])
    for tail in (masked[n_head:], bytearray(masked[n_head:]), memoryview(b"xx" + masked[n_head:])[2:]):
        assert unmask_join(head, 8, tail) == payload
    assert head[8:] == masked[:n_head]  # the pieces are left as they were


@pytest.mark.parametrize("offset", [-1, 0, 3, 11])
def test_unmask_join_bad_offset(offset: int) -> None:
    """The key must fit before ``offset`` and ``offset`` must lie in ``head``."""
    with pytest.raises(ValueError, match="out of range"):
        unmask_join(bytearray(10), offset, b"abc")
