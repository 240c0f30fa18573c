"""Differential tests of the C small-message path (``_ckernels.parse_messages``, ``cw_parse_simple``).

A server's :meth:`Connection.receive_data` takes a run of small whole messages through one C
call and leaves the rest to the general path.  The same random frames (good, large, control,
fragmented, compressed-looking, invalid UTF-8, broken headers), cut at random points, go to two
connections, one with the fast path and one without: events (exceptions by class, code and
message), the bytes queued, the state and the metrics counts must be identical.
"""

from __future__ import annotations

import os
import random

import pytest

try:
    from cowboy_ws.protocol import _ckernels as C
except ImportError as exc:  # pragma: no cover - depends on the build
    pytest.skip(f"the C extension cowboy_ws._speedups is not built ({exc})", allow_module_level=True)

from cowboy_ws.protocol import connection as connection_mod
from cowboy_ws.protocol.connection import Connection
from cowboy_ws.protocol.frames import OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_TEXT, serialize_frame

EXAMPLES = int(os.environ.get("COWBOY_WS_DIFF_EXAMPLES", "200"))


def random_frame(rng: random.Random) -> bytes:
    """One client frame: usually a small whole message, sometimes anything else."""
    key = rng.randbytes(4)
    r = rng.random()
    if r < 0.55:
        size = rng.choice((0, 1, 16, 125, 126, 300, 8191, 8192))
        if rng.random() < 0.5:
            return serialize_frame(OP_TEXT, "é".encode() * (size // 2), mask_key=key)
        return serialize_frame(OP_BINARY, rng.randbytes(size), mask_key=key)
    if r < 0.62:
        return serialize_frame(OP_TEXT, b"ok\xed\xa0\x80" if rng.random() < 0.5 else b"\xff", mask_key=key)
    if r < 0.70:
        return serialize_frame(OP_PING, rng.randbytes(rng.randrange(10)), mask_key=key)
    if r < 0.78:
        return (serialize_frame(OP_TEXT, b"frag", fin=False, mask_key=key)
                + serialize_frame(OP_CONT, b"ment", mask_key=key))
    if r < 0.83:
        return serialize_frame(OP_TEXT, b"x", rsv1=True, mask_key=key)  # not negotiated: 1002
    if r < 0.87:
        return serialize_frame(OP_BINARY, b"y" * 20)  # unmasked from a client: 1002
    if r < 0.90:
        return bytes((0x81, 0x80 | 126, 0, 5)) + key + b"short"  # 16-bit length not minimal
    if r < 0.93:
        return serialize_frame(OP_CLOSE, b"\x03\xe8", mask_key=key)
    if r < 0.96:
        return bytes((0x83, 0x80)) + key  # reserved opcode
    return serialize_frame(OP_BINARY, rng.randbytes(70000), mask_key=key)  # 64-bit length


def outcome(conn: Connection, chunks: list[bytes]) -> tuple:
    events = []
    for chunk in chunks:
        for event in conn.receive_data(memoryview(bytearray(chunk))):
            if event[0] == "error":
                exc = event[1]
                event = ("error", type(exc), exc.code, str(exc))
            events.append(event)
    return events, conn.data_to_send(), conn.state, conn.close_code, conn.counts


@pytest.mark.parametrize("seed", range(EXAMPLES))
def test_fast_path_same_as_general(monkeypatch, seed):
    rng = random.Random(seed)
    data = b"".join(random_frame(rng) for _ in range(rng.randrange(1, 40)))
    cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randrange(4))))
    chunks = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    limit = rng.choice((None, 100, 1 << 20))
    check = rng.random() < 0.8

    def new() -> Connection:
        conn = Connection("server", max_frame_size=limit, validate_utf8=check)
        conn.counts = [0, 0, 0, 0]
        return conn

    fast = outcome(new(), chunks)
    monkeypatch.setattr(connection_mod, "parse_messages", None)
    general = outcome(new(), chunks)
    assert fast == general


def test_runs_of_small_messages_take_the_fast_path():
    conn = Connection("server")
    conn.counts = [0, 0, 0, 0]
    key = b"abcd"
    data = b"".join(serialize_frame(OP_TEXT, b"%02d" % i, mask_key=key) for i in range(40))
    data += serialize_frame(OP_BINARY, b"b" * 200, mask_key=key)
    events, used = C.parse_messages(conn._parser, memoryview(data), True, conn.counts)
    assert used == len(data)
    assert events == [("text", b"%02d" % i) for i in range(40)] + [("binary", b"b" * 200)]
    assert conn.counts == [40, 80, 1, 200]


def test_fast_path_stops_before_anything_else():
    key = b"abcd"
    head = b"".join(serialize_frame(OP_TEXT, b"0123456789abcdef", mask_key=key) for _ in range(4))
    for tail in (serialize_frame(OP_PING, b"", mask_key=key), serialize_frame(OP_TEXT, b"\xff", mask_key=key),
                 serialize_frame(OP_TEXT, b"a", fin=False, mask_key=key), head[:10]):
        events, used = C.parse_messages(Connection("server")._parser, head + tail, True)
        assert used == len(head) and len(events) == 4
    # a client's parser, and short input, are left to the general path
    assert C.parse_messages(Connection("client")._parser, head, True) == ([], 0)
    assert C.parse_messages(Connection("server")._parser, head[:22], True) == ([], 0)


def test_a_large_first_frame_is_left_to_the_general_path():
    key = b"abcd"
    small = serialize_frame(OP_TEXT, b"0123456789abcdef", mask_key=key)
    just_under = serialize_frame(OP_BINARY, b"u" * (C._LARGE - 1), mask_key=key)  # 16-bit length
    events, used = C.parse_messages(Connection("server")._parser, just_under + small, True)
    assert used == len(just_under + small) and [e[0] for e in events] == ["binary", "text"]
    for size in (C._LARGE, 65535, 65536, 70000):  # 16-bit and 64-bit lengths (RFC 6455 §5.2)
        large = serialize_frame(OP_BINARY, b"L" * size, mask_key=key)
        assert C.parse_messages(Connection("server")._parser, large + small, True) == ([], 0)
        conn = Connection("server")
        events = conn.receive_data(memoryview(large + small))
        assert events == [("binary", b"L" * size), ("text", b"0123456789abcdef")]
