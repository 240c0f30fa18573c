"""Frame parser and serializer: RFC 6455 §5."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cowboy_ws.protocol.errors import FrameError, MessageTooBig, ProtocolError, UsageError
from cowboy_ws.protocol.frames import (OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT,
                                       FrameParser, frame_header, serialize_frame)

KEY = bytes([0x37, 0xFA, 0x21, 0x3D])


def server_parser(**kw):
    return FrameParser(mask_required=True, **kw)


def client_parser(**kw):
    return FrameParser(mask_required=False, **kw)


def norm(frames):
    """Parsed frames with boolean flags, for comparisons."""
    return [(op, bool(fin), bool(rsv1), payload) for op, fin, rsv1, payload in frames]


# -- RFC 6455 §5.7 examples, byte for byte ----------------------------------------

def test_rfc_example_unmasked_text():
    """§5.7: a single-frame unmasked text message "Hello"."""
    wire = bytes([0x81, 0x05, 0x48, 0x65, 0x6C, 0x6C, 0x6F])
    assert serialize_frame(OP_TEXT, b"Hello") == wire
    assert norm(client_parser().feed(wire)) == [(OP_TEXT, True, False, b"Hello")]


def test_rfc_example_masked_text():
    """§5.7: a single-frame masked text message "Hello" (key 37 fa 21 3d)."""
    wire = bytes([0x81, 0x85, 0x37, 0xFA, 0x21, 0x3D, 0x7F, 0x9F, 0x4D, 0x51, 0x58])
    assert serialize_frame(OP_TEXT, b"Hello", mask_key=KEY) == wire
    assert norm(server_parser().feed(wire)) == [(OP_TEXT, True, False, b"Hello")]


def test_rfc_example_fragmented_unmasked_text():
    """§5.7: a fragmented unmasked text message "Hel" + "lo"."""
    first = bytes([0x01, 0x03, 0x48, 0x65, 0x6C])
    second = bytes([0x80, 0x02, 0x6C, 0x6F])
    assert serialize_frame(OP_TEXT, b"Hel", fin=False) == first
    assert serialize_frame(OP_CONT, b"lo") == second
    assert norm(client_parser().feed(first + second)) == [
        (OP_TEXT, False, False, b"Hel"), (OP_CONT, True, False, b"lo")]


def test_rfc_example_ping_and_masked_pong():
    """§5.7: unmasked Ping "Hello", masked Pong "Hello"."""
    ping = bytes([0x89, 0x05, 0x48, 0x65, 0x6C, 0x6C, 0x6F])
    pong = bytes([0x8A, 0x85, 0x37, 0xFA, 0x21, 0x3D, 0x7F, 0x9F, 0x4D, 0x51, 0x58])
    assert serialize_frame(OP_PING, b"Hello") == ping
    assert serialize_frame(OP_PONG, b"Hello", mask_key=KEY) == pong
    assert norm(client_parser().feed(ping)) == [(OP_PING, True, False, b"Hello")]
    assert norm(server_parser().feed(pong)) == [(OP_PONG, True, False, b"Hello")]


def test_rfc_example_256_bytes_and_64k():
    """§5.7: 256 bytes binary in one unmasked frame (16-bit length), 64 KiB (64-bit length)."""
    assert serialize_frame(OP_BINARY, bytes(256))[:4] == bytes([0x82, 0x7E, 0x01, 0x00])
    assert serialize_frame(OP_BINARY, bytes(65536))[:10] == bytes(
        [0x82, 0x7F, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00])
    for size in (125, 126, 65535, 65536, 70000):
        wire = serialize_frame(OP_BINARY, bytes(range(256)) * (size // 256) + bytes(size % 256))
        assert norm(client_parser().feed(wire)) == [(OP_BINARY, True, False, wire[-size:])]


def test_frame_header_matches_serializer():
    """§5.2: the header alone is the serializer's prefix, for every length encoding."""
    for size in (0, 125, 126, 65535, 65536):
        assert serialize_frame(OP_BINARY, bytes(size)).startswith(frame_header(OP_BINARY, size))


# -- §5 rules ----------------------------------------------------------------------

@pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF])
def test_reserved_opcodes(opcode):
    """§5.2: reserved opcodes fail the connection (1002)."""
    with pytest.raises(FrameError) as err:
        server_parser().feed(serialize_frame(opcode, b"", mask_key=KEY))
    assert err.value.code == 1002 and "reserved opcode" in str(err.value)


@pytest.mark.parametrize("bit", [0x40, 0x20, 0x10])
def test_rsv_bits_without_extension(bit):
    """§5.2: RSV1-3 set without a negotiated extension fail the connection."""
    wire = bytearray(serialize_frame(OP_TEXT, b"x", mask_key=KEY))
    wire[0] |= bit
    with pytest.raises(FrameError):
        server_parser().feed(bytes(wire))


def test_rsv1_with_deflate_rules():
    """RFC 7692 §6.1: with deflate RSV1 is allowed on a message's first frame only; RSV2/3 never."""
    p = server_parser(rsv1_allowed=True)
    assert norm(p.feed(serialize_frame(OP_TEXT, b"x", rsv1=True, fin=False, mask_key=KEY))) == [
        (OP_TEXT, False, True, b"x")]
    for opcode in (OP_CONT, OP_PING, OP_CLOSE):
        with pytest.raises(FrameError, match="RSV1"):
            server_parser(rsv1_allowed=True).feed(serialize_frame(opcode, b"", rsv1=True, mask_key=KEY))
    wire = bytearray(serialize_frame(OP_TEXT, b"x", mask_key=KEY))
    wire[0] |= 0x20
    with pytest.raises(FrameError, match="RSV2"):
        server_parser(rsv1_allowed=True).feed(bytes(wire))


def test_control_frame_too_long():
    """§5.5: control frames carry at most 125 bytes; the header alone is enough to refuse."""
    for opcode in (OP_PING, OP_PONG, OP_CLOSE):
        header = bytes([0x80 | opcode, 0x80 | 126, 0, 126])
        with pytest.raises(FrameError, match="125"):
            server_parser().feed(header)
    with pytest.raises(UsageError):
        serialize_frame(OP_PING, bytes(126))


def test_control_frame_fragmented():
    """§5.5: control frames must not be fragmented."""
    with pytest.raises(FrameError, match="fragmented"):
        server_parser().feed(bytes([OP_PING, 0x80]) + KEY)
    with pytest.raises(UsageError):
        serialize_frame(OP_PING, b"", fin=False)


def test_mask_rules():
    """§5.1: a server refuses unmasked frames, a client refuses masked ones."""
    with pytest.raises(FrameError, match="unmasked"):
        server_parser().feed(serialize_frame(OP_TEXT, b"hi"))
    with pytest.raises(FrameError, match="masked frame from a server"):
        client_parser().feed(serialize_frame(OP_TEXT, b"hi", mask_key=KEY))


def test_non_minimal_lengths():
    """§5.2: "the minimal number of bytes MUST be used to encode the length"."""
    with pytest.raises(FrameError, match="16-bit"):
        client_parser().feed(bytes([0x82, 126, 0, 125]))
    with pytest.raises(FrameError, match="64-bit length not minimal"):
        client_parser().feed(bytes([0x82, 127]) + (65535).to_bytes(8, "big"))


def test_64bit_length_top_bit():
    """§5.2: the most significant bit of a 64-bit length MUST be 0."""
    with pytest.raises(FrameError, match="top bit"):
        client_parser().feed(bytes([0x82, 127]) + (1 << 63).to_bytes(8, "big"))


def test_max_frame_size_checked_on_header():
    """The limit is enforced from the header, before any payload is buffered (close 1009)."""
    p = client_parser(max_frame_size=1000)
    with pytest.raises(MessageTooBig) as err:
        p.feed(bytes([0x82, 127]) + (2**40).to_bytes(8, "big"))
    assert err.value.code == 1009
    assert norm(client_parser(max_frame_size=1000).feed(serialize_frame(OP_BINARY, bytes(1000)))) == [
        (OP_BINARY, True, False, bytes(1000))]


@pytest.mark.parametrize("masked", [True, False])
@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 200000])
def test_frame_completed_from_the_next_chunk(masked, size):
    """A frame split over two feeds at every kind of place: the same frame, and the second chunk's
    later frames too (the completion takes only what the buffered frame lacks)."""
    payload = os.urandom(size)
    key = KEY if masked else None
    wire = serialize_frame(OP_BINARY, payload, mask_key=key)
    after = serialize_frame(OP_TEXT, b"next", mask_key=key) + serialize_frame(OP_PING, b"", mask_key=key)
    head = len(wire) - size
    for cut in sorted({1, 2, head - 1, head, head + 1, head + size // 2, len(wire) - 1}):
        if not 0 < cut < len(wire):
            continue
        p = FrameParser(mask_required=masked)
        assert p.feed(wire[:cut]) == []
        rest = wire[cut:] + after + wire[:1]  # and the first byte of another frame
        for kind in (bytes, bytearray, memoryview):
            q = FrameParser(mask_required=masked)
            q.feed(wire[:cut])
            assert norm(q.feed(kind(rest))) == [(OP_BINARY, True, False, payload), (OP_TEXT, True, False, b"next"),
                                                (OP_PING, True, False, b"")]
            assert q.buffered == 1


def test_limit_lowered_while_a_frame_is_buffered():
    """max_frame_size lowered (set_options) after a frame's header was accepted: the frame is refused
    when it completes (1009), not delivered."""
    wire = serialize_frame(OP_BINARY, bytes(70000), mask_key=KEY)
    p = server_parser(max_frame_size=100000)
    assert p.feed(wire[:1000]) == []
    p.max_frame_size = 1000
    with pytest.raises(MessageTooBig):
        p.feed(wire[1000:])


def test_frames_before_error_are_kept():
    """Frames completed before a bad one are handed over on the exception, not lost."""
    good = serialize_frame(OP_TEXT, b"ok", mask_key=KEY)
    with pytest.raises(FrameError) as err:
        server_parser().feed(good + good + bytes([0x83, 0x80]) + KEY)
    assert norm(err.value.frames) == [(OP_TEXT, True, False, b"ok")] * 2


def test_incremental_byte_by_byte():
    """Any chunking works: one byte at a time gives the same frames (§5.2 parsing is a stream)."""
    wire = b"".join(serialize_frame(op, p, mask_key=KEY) for op, p in
                    [(OP_TEXT, b"a" * 200), (OP_PING, b"p"), (OP_BINARY, bytes(70000)), (OP_CLOSE, b"")])
    p = server_parser()
    out = []
    for i in range(len(wire)):
        out += p.feed(wire[i:i + 1])
    assert [f[0] for f in out] == [OP_TEXT, OP_PING, OP_BINARY, OP_CLOSE]
    assert out[2][3] == bytes(70000) and p.buffered == 0


def test_buffer_kept_between_feeds_and_release():
    """A partial frame waits in the buffer; release() keeps it while non-empty."""
    wire = serialize_frame(OP_TEXT, b"hello", mask_key=KEY)
    p = server_parser()
    assert p.feed(wire[:4]) == []
    assert p.buffered == 4
    p.release()
    assert p.buffered == 4
    assert norm(p.feed(memoryview(wire)[4:])) == [(OP_TEXT, True, False, b"hello")]
    p.release()
    assert p.buffered == 0


def test_split_frame_completed_without_buffering_what_follows():
    """A frame split over two reads: only its missing bytes are buffered, the frames after it parse in place."""
    big = bytes(range(256)) * 300  # 76,800 bytes: a 64-bit length
    wire = (serialize_frame(OP_BINARY, big, mask_key=KEY) + serialize_frame(OP_TEXT, b"a", mask_key=KEY)
            + serialize_frame(OP_PING, b"p", mask_key=KEY))
    tail = serialize_frame(OP_BINARY, b"xyz" * 100, mask_key=KEY)
    for cut in (1, 2, 5, 13, 14, 15, 40_000):
        p = server_parser()
        assert p.feed(wire[:cut]) == []
        assert p.buffered == cut
        out = p.feed(wire[cut:] + tail[:7])
        assert norm(out) == [(OP_BINARY, True, False, big), (OP_TEXT, True, False, b"a"),
                             (OP_PING, True, False, b"p")]
        assert all(type(f[3]) is bytes for f in out)
        assert p.buffered == 7  # just the start of the next frame
        assert norm(p.feed(memoryview(tail)[7:])) == [(OP_BINARY, True, False, b"xyz" * 100)]
        assert p.buffered == 0


def test_split_header_checked_before_its_payload_is_buffered():
    """A header completed by the next read is checked first: an oversized frame fails without buffering."""
    p = server_parser(max_frame_size=1000)
    wire = serialize_frame(OP_BINARY, bytes(2000), mask_key=KEY)
    assert p.feed(wire[:3]) == []
    with pytest.raises(MessageTooBig):
        p.feed(wire[3:])
    assert p.buffered < 20


# -- properties --------------------------------------------------------------------

frames_st = st.lists(
    st.one_of(
        st.tuples(st.sampled_from([OP_TEXT, OP_BINARY, OP_CONT]), st.booleans(),
                  st.binary(max_size=300) | st.sampled_from([bytes(126), bytes(65535), bytes(65536)])),
        st.tuples(st.sampled_from([OP_PING, OP_PONG, OP_CLOSE]), st.just(True), st.binary(max_size=125)),
    ),
    max_size=12,
)


@settings(max_examples=150, deadline=None)
@given(frames=frames_st, cuts=st.lists(st.integers(min_value=0, max_value=200_000), max_size=8),
       masked=st.booleans(), key=st.binary(min_size=4, max_size=4))
def test_roundtrip_any_chunking(frames, cuts, masked, key):
    """serialize-then-parse is the identity for any frame sequence under any chunking (§5.2)."""
    wire = b"".join(serialize_frame(op, payload, fin=fin, mask_key=key if masked else None)
                    for op, fin, payload in frames)
    points = sorted({c % (len(wire) + 1) for c in cuts})
    pieces = [wire[a:b] for a, b in zip([0] + points, points + [len(wire)])]
    parser = FrameParser(mask_required=masked)
    out = []
    for piece in pieces:
        out += parser.feed(piece)
    assert norm(out) == [(op, fin, False, payload) for op, fin, payload in frames]
    assert parser.buffered == 0


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=400), masked=st.booleans(), rsv1=st.booleans(),
       split=st.integers(min_value=0, max_value=400))
def test_arbitrary_bytes_yield_frames_or_protocol_error(data, masked, rsv1, split):
    """On arbitrary input the parser yields frames or raises ProtocolError, never anything else."""
    parser = FrameParser(mask_required=masked, rsv1_allowed=rsv1, max_frame_size=100_000)
    try:
        frames = parser.feed(data[:split]) + parser.feed(data[split:])
    except ProtocolError as exc:
        assert exc.code in (1002, 1009)
        return
    for opcode, fin, rsv, payload in frames:
        assert opcode in (0, 1, 2, 8, 9, 10) and isinstance(payload, bytes)
