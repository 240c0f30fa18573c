"""Connection state machine: RFC 6455 §5.4-§5.6 messages, §5.5 control frames, §7 closing, §8.1 UTF-8."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cowboy_ws.protocol.connection import Connection, encode_close_payload, parse_close_payload
from cowboy_ws.protocol.errors import FrameError, InvalidUtf8, UsageError
from cowboy_ws.protocol.frames import (OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT,
                                       FrameParser, serialize_frame)

KEY = b"\x01\x02\x03\x04"


def c(opcode, payload=b"", fin=True, rsv1=False):
    """A frame as a client sends it (masked, §5.3)."""
    return serialize_frame(opcode, payload, fin=fin, rsv1=rsv1, mask_key=KEY)


def sent_frames(conn):
    """Parse what the server queued, as a client would."""
    return [(op, bool(fin), payload) for op, fin, _r, payload in
            FrameParser(mask_required=False).feed(conn.data_to_send())]


def error_of(events):
    assert events and events[-1][0] == "error", events
    return events[-1][1]


# -- messages ----------------------------------------------------------------------

def test_text_and_binary_messages():
    """§5.6: whole text and binary messages become events."""
    conn = Connection()
    assert conn.receive_data(c(OP_TEXT, "héllo".encode()) + c(OP_BINARY, b"\x00\xff")) == [
        ("text", "héllo".encode()), ("binary", b"\x00\xff")]
    assert conn.data_to_send() == b""


def test_fragmented_message_with_interleaved_control():
    """§5.4: fragments are reassembled; control frames may be injected between them."""
    conn = Connection()
    wire = c(OP_TEXT, b"Hel", fin=False) + c(OP_PING, b"p") + c(OP_CONT, b"l", fin=False) + c(OP_CONT, b"o")
    assert conn.receive_data(wire) == [("ping", b"p"), ("text", b"Hello")]
    assert sent_frames(conn) == [(OP_PONG, True, b"p")]


def test_empty_fragments():
    """§5.4: zero-length fragments are legal."""
    conn = Connection()
    assert conn.receive_data(c(OP_BINARY, b"", fin=False) + c(OP_CONT, b"", fin=False) + c(OP_CONT)) == [
        ("binary", b"")]


def test_auto_pong_then_ping_event():
    """§5.5.2: a Ping is answered with a Pong carrying the same payload, then reported."""
    conn = Connection()
    assert conn.receive_data(c(OP_PING, b"abc")) == [("ping", b"abc")]
    assert sent_frames(conn) == [(OP_PONG, True, b"abc")]
    assert conn.receive_data(c(OP_PONG, b"x")) == [("pong", b"x")]
    assert conn.data_to_send() == b""


def test_continuation_without_start():
    """§5.4: a continuation frame with no message in progress fails with 1002."""
    conn = Connection()
    exc = error_of(conn.receive_data(c(OP_CONT, b"x")))
    assert isinstance(exc, FrameError) and exc.code == 1002
    assert sent_frames(conn) == [(OP_CLOSE, True, b"\x03\xea")]
    assert conn.state == "closed"


def test_new_message_inside_fragmented_message():
    """§5.4: a new text/binary frame while a fragmented message is open fails with 1002."""
    conn = Connection()
    exc = error_of(conn.receive_data(c(OP_TEXT, b"a", fin=False) + c(OP_TEXT, b"b")))
    assert exc.code == 1002


def test_events_before_error_are_delivered():
    """Messages completed before a violation in the same read are not lost."""
    conn = Connection()
    events = conn.receive_data(c(OP_TEXT, b"one") + c(OP_BINARY, b"two") + bytes([0x83, 0x80]) + KEY)
    assert events[:2] == [("text", b"one"), ("binary", b"two")]
    assert error_of(events).code == 1002
    assert conn.receive_data(c(OP_TEXT, b"late")) == []


# -- UTF-8 (§8.1) ------------------------------------------------------------------

def test_invalid_utf8_single_frame():
    """§8.1: invalid UTF-8 in a text message fails the connection with 1007."""
    conn = Connection()
    exc = error_of(conn.receive_data(c(OP_TEXT, b"\xce\xba\xed\xa0\x80")))
    assert isinstance(exc, InvalidUtf8) and exc.code == 1007
    assert sent_frames(conn) == [(OP_CLOSE, True, (1007).to_bytes(2, "big"))]


def test_invalid_utf8_fails_fast_across_fragments():
    """§8.1 / Autobahn 6.4: fail on the fragment that holds the bad byte, before the message ends."""
    conn = Connection()
    assert conn.receive_data(c(OP_TEXT, "κόσμε".encode(), fin=False)) == []
    exc = error_of(conn.receive_data(c(OP_CONT, b"\xf4\x90", fin=False)))
    assert exc.code == 1007


def test_utf8_split_code_point_across_fragments_is_valid():
    """§8.1: a code point split over two fragments is fine."""
    conn = Connection()
    data = "€uro".encode()
    assert conn.receive_data(c(OP_TEXT, data[:1], fin=False) + c(OP_CONT, data[1:])) == [("text", data)]


def test_incomplete_utf8_at_message_end():
    """§8.1: a message that ends inside a code point is invalid."""
    conn = Connection()
    exc = error_of(conn.receive_data(c(OP_TEXT, b"ab\xe2\x82", fin=False) + c(OP_CONT, b"")))
    assert exc.code == 1007


def test_validate_utf8_off():
    """Cowboy's validate_utf8 => false passes text through unchecked."""
    conn = Connection(validate_utf8=False)
    assert conn.receive_data(c(OP_TEXT, b"\xff")) == [("text", b"\xff")]


# -- limits ------------------------------------------------------------------------

def test_max_frame_size_frame():
    """One limit covers a frame's length (checked on the header): 1009."""
    conn = Connection(max_frame_size=10)
    exc = error_of(conn.receive_data(c(OP_BINARY, bytes(11))[:8]))
    assert exc.code == 1009
    assert sent_frames(conn) == [(OP_CLOSE, True, (1009).to_bytes(2, "big"))]


def test_max_frame_size_reassembled_message():
    """... and the reassembled message: many small fragments cannot exceed it."""
    conn = Connection(max_frame_size=10)
    wire = c(OP_BINARY, bytes(4), fin=False) + c(OP_CONT, bytes(4), fin=False) + c(OP_CONT, bytes(4))
    assert error_of(conn.receive_data(wire)).code == 1009


def test_set_max_frame_size():
    """The set_options command changes the limit for later frames."""
    conn = Connection(max_frame_size=10)
    conn.set_max_frame_size(None)
    assert conn.receive_data(c(OP_BINARY, bytes(70000))) == [("binary", bytes(70000))]


def test_fragment_flood_is_bounded():
    """Thousands of 1-byte continuation frames are bounded by the same limit."""
    conn = Connection(max_frame_size=1000)
    wire = c(OP_BINARY, b"x", fin=False) + c(OP_CONT, b"x", fin=False) * 5000
    assert error_of(conn.receive_data(wire)).code == 1009


# -- closing (§5.5.1, §7) ----------------------------------------------------------

def test_close_echoes_code():
    """§5.5.1: the peer's Close is answered with a Close echoing its code."""
    conn = Connection()
    assert conn.receive_data(c(OP_CLOSE, encode_close_payload(4000, "bye"))) == [("close", 4000, b"bye")]
    assert sent_frames(conn) == [(OP_CLOSE, True, (4000).to_bytes(2, "big"))]
    assert conn.state == "closed" and conn.close_code == 4000


def test_close_without_code():
    """§7.1.5: a Close with no body means 1005 locally and is answered with an empty Close."""
    conn = Connection()
    assert conn.receive_data(c(OP_CLOSE)) == [("close", None, b"")]
    assert sent_frames(conn) == [(OP_CLOSE, True, b"")]


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535])
def test_invalid_close_codes(code):
    """§7.4: codes that may not be sent fail the connection with 1002."""
    conn = Connection()
    exc = error_of(conn.receive_data(c(OP_CLOSE, code.to_bytes(2, "big"))))
    assert exc.code == 1002


@pytest.mark.parametrize("code", [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014,
                                  3000, 3999, 4000, 4999])
def test_valid_close_codes(code):
    """§7.4.1/§7.4.2 and the IANA registry: these are accepted and echoed."""
    conn = Connection()
    assert conn.receive_data(c(OP_CLOSE, code.to_bytes(2, "big"))) == [("close", code, b"")]


def test_close_one_byte_payload():
    """§5.5.1: a close body must hold a 2-byte code: one byte is a protocol error."""
    conn = Connection()
    assert error_of(conn.receive_data(c(OP_CLOSE, b"\x03"))).code == 1002


def test_close_reason_not_utf8():
    """§5.5.1: the close reason must be UTF-8 (1007)."""
    conn = Connection()
    assert error_of(conn.receive_data(c(OP_CLOSE, b"\x03\xe8\xff"))).code == 1007


def test_local_close_then_peer_close():
    """§7.1.2: after our Close, data is dropped (pings unanswered) until the peer's Close ends it."""
    conn = Connection()
    conn.send_close(1000, "done")
    assert sent_frames(conn) == [(OP_CLOSE, True, b"\x03\xe8done")]
    assert conn.state == "closing"
    assert conn.receive_data(c(OP_TEXT, b"late") + c(OP_PING)) == []
    assert conn.receive_data(c(OP_CLOSE, b"\x03\xe8")) == [("close", 1000, b"")]
    assert conn.data_to_send() == b"" and conn.state == "closed"


def test_send_after_close_is_usage_error():
    """Sending after the Close frame is the application's mistake, not the peer's."""
    conn = Connection()
    conn.send_close()
    with pytest.raises(UsageError):
        conn.send_text("x")
    with pytest.raises(UsageError):
        conn.send_close()


def test_close_payload_helpers():
    """§5.5.1 encoding rules for outgoing Close frames."""
    assert encode_close_payload(None) == b""
    assert encode_close_payload(1000, "é") == b"\x03\xe8" + "é".encode()
    assert parse_close_payload(b"\x03\xe8ok") == (1000, b"ok")
    for bad in [(1005, ""), (None, "x"), (1000, "x" * 124), (999, "")]:
        with pytest.raises(UsageError):
            encode_close_payload(*bad)


def test_receive_eof():
    """§7.1.5: TCP closed without a Close frame is 1006."""
    conn = Connection()
    conn.receive_eof()
    assert conn.state == "closed" and conn.close_code == 1006
    assert conn.receive_data(c(OP_TEXT, b"x")) == []


# -- sending -----------------------------------------------------------------------

def test_send_forms():
    """Text from str, bytes-likes and iodata lists; large payloads go out as header + payload buffers."""
    conn = Connection()
    conn.send_text("hé")
    conn.send_binary(bytearray(b"\x00"))
    conn.send_message("binary", [b"a", "b", memoryview(b"c")])
    conn.send_ping("p")
    conn.send_pong(b"q")
    assert sent_frames(conn) == [(OP_TEXT, True, "hé".encode()), (OP_BINARY, True, b"\x00"),
                                 (OP_BINARY, True, b"abc"), (OP_PING, True, b"p"), (OP_PONG, True, b"q")]
    big = bytes(range(256)) * 1024
    conn.send_binary(big)
    bufs = conn.buffers_to_send()
    assert len(bufs) == 2 and bufs[1] is big
    assert FrameParser(mask_required=False).feed(b"".join(bufs))[0][3] == big


def test_client_role_masks_and_expects_unmasked():
    """§5.3: a client masks every frame with a fresh key; a server's frames must be unmasked."""
    keys = iter([b"\x00\x00\x00\x01", b"\x00\x00\x00\x02"])
    client = Connection("client", mask_key=lambda: next(keys))
    client.send_text("hi")
    client.send_binary(bytes(70000))
    server = Connection("server")
    assert server.receive_data(client.data_to_send()) == [("text", b"hi"), ("binary", bytes(70000))]
    server.send_text("back")
    assert client.receive_data(server.data_to_send()) == [("text", b"back")]
    assert error_of(Connection("client").receive_data(c(OP_TEXT, b"x"))).code == 1002


def test_bad_role():
    with pytest.raises(UsageError):
        Connection("peer")  # type: ignore[arg-type]


def test_hibernate_keeps_partial_frames():
    """Hibernation releases buffers but never loses a partial frame."""
    conn = Connection()
    wire = c(OP_TEXT, b"hello")
    conn.receive_data(wire[:3])
    conn.hibernate()
    assert conn.receive_data(wire[3:]) == [("text", b"hello")]
    conn.hibernate()


@settings(max_examples=100, deadline=None)
@given(messages=st.lists(st.tuples(st.sampled_from(["text", "binary"]), st.text(max_size=50),
                                   st.integers(min_value=1, max_value=4)), max_size=8),
       chunk=st.integers(min_value=1, max_value=64))
def test_fragmented_roundtrip_any_chunking(messages, chunk):
    """§5.4: any fragmentation and any TCP chunking yields the original messages in order."""
    wire = b""
    for kind, text, nfrag in messages:
        data = text.encode()
        step = max(1, len(data) // nfrag + 1)
        parts = [data[i:i + step] for i in range(0, len(data), step)] or [b""]
        for i, part in enumerate(parts):
            op = (OP_TEXT if kind == "text" else OP_BINARY) if i == 0 else OP_CONT
            wire += c(op, part, fin=i == len(parts) - 1)
    conn = Connection()
    events = []
    for i in range(0, len(wire), chunk):
        events += conn.receive_data(wire[i:i + chunk])
    assert events == [(kind, text.encode()) for kind, text, _ in messages]


def test_replies_go_before_the_automatic_close():
    """§5.5.1: replies to messages that preceded the peer's Close (or a bad frame) are sent before our Close."""
    for tail in (c(OP_CLOSE, b"\x03\xe8"), bytes([0x83, 0x80]) + KEY):
        conn = Connection()
        events = conn.receive_data(c(OP_TEXT, b"first") + tail)
        assert events[0] == ("text", b"first") and conn.state == "closed"
        assert conn.can_send
        conn.send_text(b"first")
        frames = sent_frames(conn)
        assert frames[0] == (OP_TEXT, True, b"first") and frames[1][0] == OP_CLOSE
        assert not conn.can_send
        with pytest.raises(UsageError):
            conn.send_text("late")


def test_hold_close_keeps_the_failures_close_behind_later_messages():
    """hold_close: the automatic Close of a failed connection (§7.1.7) waits, messages queued
    meanwhile leave first, and the Close leaves once released."""
    conn = Connection()
    events = conn.receive_data(c(OP_TEXT, b"a") + c(3))  # a message, then a reserved opcode
    assert events[0] == ("text", b"a") and error_of(events).code == 1002
    conn.hold_close(True)
    assert not conn.has_data_to_send and conn.data_to_send() == b""
    assert conn.can_send
    conn.send_text(b"a")
    assert sent_frames(conn) == [(OP_TEXT, True, b"a")]
    conn.hold_close(False)
    assert conn.has_data_to_send
    assert sent_frames(conn) == [(OP_CLOSE, True, (1002).to_bytes(2, "big"))]
    assert not conn.can_send


def test_send_close_twice_when_close_reply_pending():
    """Only one Close ever leaves: send_close after the peer's Close is a usage error."""
    conn = Connection()
    conn.receive_data(c(OP_CLOSE))
    with pytest.raises(UsageError):
        conn.send_close()


def test_utf8_fails_fast_inside_one_frame():
    """§8.1 / Autobahn 6.4.3: a single frame arriving in chunks fails at the chunk with the bad byte."""
    payload = "κόσμε".encode() + b"\xf4\x90\x80\x80" + b"edited"
    wire = c(OP_TEXT, payload)
    conn = Connection()
    assert conn.receive_data(wire[:6 + 11]) == []   # header + key + valid part
    assert error_of(conn.receive_data(wire[17:19])).code == 1007
    assert sent_frames(conn) == [(OP_CLOSE, True, (1007).to_bytes(2, "big"))]


def test_partially_checked_frame_completes():
    """Partial validation of a frame never changes the result of a valid message, at any chunking."""
    payload = "ab€cd€".encode() * 30
    for opcodes in ([(OP_TEXT, True)], [(OP_TEXT, False), (OP_CONT, True)]):
        half = len(payload) // 2
        parts = [payload] if len(opcodes) == 1 else [payload[:half], payload[half:]]
        wire = b"".join(c(op, part, fin=fin) for (op, fin), part in zip(opcodes, parts))
        for step in (1, 3, 7, 64):
            conn = Connection()
            events = []
            for i in range(0, len(wire), step):
                events += conn.receive_data(wire[i:i + step])
            assert events == [("text", payload)]


def test_deflate_bomb_refused_with_1009_in_bounded_memory():
    """RFC 7692 §7.2.2 + max_frame_size: a compressed frame inflating to 100 MB is refused (1009), memory < 2x limit.

    Deflate's best ratio is about 1032:1, so 100 MB needs a ~97 KB frame (a 1 KiB frame
    inflates to at most ~1 MB); both are checked through the whole connection path.
    """
    import tracemalloc

    from zlib_ng import zlib_ng

    from cowboy_ws.protocol.deflate import DeflateParams, PerMessageDeflate

    limit = 1_000_000
    for size in (100_000_000, 1_100_000):
        comp = zlib_ng.compressobj(9, zlib_ng.DEFLATED, -15)
        body = comp.compress(bytes(size)) + comp.flush(zlib_ng.Z_SYNC_FLUSH)
        assert body.endswith(b"\x00\x00\xff\xff")
        wire = c(OP_BINARY, body[:-4], rsv1=True)
        conn = Connection(max_frame_size=limit, deflate=PerMessageDeflate(True, DeflateParams()))
        tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            base = tracemalloc.get_traced_memory()[0]
            events = conn.receive_data(wire)
            peak = tracemalloc.get_traced_memory()[1] - base
        finally:
            tracemalloc.stop()
        assert error_of(events).code == 1009
        assert peak < 2 * limit + len(wire), (size, len(body), peak)
        assert sent_frames(conn) == [(OP_CLOSE, True, (1009).to_bytes(2, "big"))]


def test_deflate_messages_through_connection():
    """RFC 7692 §6: compressed messages (RSV1 on the first frame only) round-trip client <-> server."""
    from cowboy_ws.protocol.deflate import DeflateParams, PerMessageDeflate

    client = Connection("client", deflate=PerMessageDeflate(False, DeflateParams()))
    server = Connection("server", deflate=PerMessageDeflate(True, DeflateParams()))
    for text in ("hello", "hello", "x" * 10000, ""):
        client.send_text(text)
        assert server.receive_data(client.data_to_send()) == [("text", text.encode())]
        server.send_text(text)
        assert client.receive_data(server.data_to_send()) == [("text", text.encode())]
    server.compress = False  # the ("deflate", False) command
    server.send_binary(b"raw")
    wire = server.data_to_send()
    assert wire[0] & 0x40 == 0
    assert client.receive_data(wire) == [("binary", b"raw")]
    # a fragmented compressed message: RSV1 on the first frame only
    comp = client.deflate.compress(b"fragmented " * 50)
    wire = c(OP_TEXT, comp[:10], fin=False, rsv1=True) + c(OP_CONT, comp[10:])
    assert server.receive_data(wire) == [("text", b"fragmented " * 50)]


def test_send_serialized_keeps_order():
    """A frame serialized once for many connections keeps its place among queued frames."""
    conn = Connection()
    conn.send_text("r1")
    conn.send_serialized(serialize_frame(OP_TEXT, b"b"))
    conn.send_text("r2")
    assert [f[2] for f in sent_frames(conn)] == [b"r1", b"b", b"r2"]
    with pytest.raises(UsageError):
        Connection("client").send_serialized(b"\x81\x00")


def test_binary_frame_in_many_chunks_is_not_peeked():
    """Fail-fast UTF-8 peeking only looks at text frames: a big binary frame in small reads stays linear."""
    conn = Connection(max_frame_size=None)
    wire = c(OP_BINARY, bytes(1 << 20))
    events = []
    for i in range(0, len(wire), 4096):
        events += conn.receive_data(wire[i:i + 4096])
    assert events == [("binary", bytes(1 << 20))]
    assert conn._partial_checked == 0
