"""Tests of cowboy_ws.protocol.deflate (RFC 7692 permessage-deflate)."""

from __future__ import annotations

import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cowboy_ws.protocol.deflate import (
    _HISTORY_LIMIT,
    DEFAULT_LEVEL,
    EXTENSION_NAME,
    DeflateOptions,
    DeflateParams,
    PerMessageDeflate,
    client_offer,
    negotiate_client,
    negotiate_server,
)
from cowboy_ws.protocol.errors import FrameError, HandshakeError, MessageTooBig, ProtocolError, UsageError

try:
    from zlib_ng import zlib_ng as zlib
except ImportError:  # pragma: no cover
    import zlib  # type: ignore[no-redef]

HELLO = b"Hello"
HELLO_DEFLATED = bytes.fromhex("f248cdc9c90700")
TAIL = b"\x00\x00\xff\xff"


def parse(header: str) -> list[tuple[str, list[tuple[str, str | None]]]]:
    """Minimal Sec-WebSocket-Extensions parser for what this module emits (no quoting)."""
    result = []
    for element in header.split(","):
        parts = [p.strip() for p in element.split(";")]
        params: list[tuple[str, str | None]] = []
        for p in parts[1:]:
            name, eq, value = p.partition("=")
            params.append((name.strip().lower(), value.strip() if eq else None))
        result.append((parts[0].lower(), params))
    return result


def pmd(header_params: str) -> list[tuple[str, list[tuple[str, str | None]]]]:
    return parse(EXTENSION_NAME + header_params)


def server_codec(**kw) -> PerMessageDeflate:
    return PerMessageDeflate(True, DeflateParams(**kw))


def client_codec(**kw) -> PerMessageDeflate:
    return PerMessageDeflate(False, DeflateParams(**kw))


# ---------------------------------------------------------------------------
# RFC 7692 §7.2.3 examples, byte for byte
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("is_server", [True, False])
def test_rfc_7_2_3_1_hello(is_server: bool) -> None:
    """RFC 7692 §7.2.3.1: "Hello" compresses to f2 48 cd c9 c9 07 00, and back."""
    codec = PerMessageDeflate(is_server, DeflateParams())
    assert codec.compress(HELLO) == HELLO_DEFLATED
    peer = PerMessageDeflate(not is_server, DeflateParams())
    assert peer.decompress(HELLO_DEFLATED, True, None) == HELLO


@pytest.mark.parametrize("is_server", [True, False])
def test_rfc_7_2_3_2_context_takeover(is_server: bool) -> None:
    """RFC 7692 §7.2.3.2: the second "Hello" refers back to the first: f2 00 11 00 00.

    zlib-ng's level 1 ("deflate_quick") encodes the back-reference differently
    (still valid, checked by the round trip), so the byte comparison uses level 6.
    """
    codec = PerMessageDeflate(is_server, DeflateParams(), DeflateOptions(level=6))
    assert codec.compress(HELLO) == HELLO_DEFLATED
    assert codec.compress(HELLO) == bytes.fromhex("f200110000")

    peer = PerMessageDeflate(not is_server, DeflateParams())
    assert peer.decompress(HELLO_DEFLATED, True, None) == HELLO
    assert peer.decompress(bytes.fromhex("f200110000"), True, None) == HELLO

    fast = PerMessageDeflate(is_server, DeflateParams())
    assert DEFAULT_LEVEL == 1 and fast.options.level == DEFAULT_LEVEL
    second = [fast.compress(HELLO), fast.compress(HELLO)][1]
    assert len(second) < len(HELLO_DEFLATED)
    peer2 = PerMessageDeflate(not is_server, DeflateParams())
    assert [peer2.decompress(HELLO_DEFLATED, True, None), peer2.decompress(second, True, None)] == [HELLO, HELLO]


@pytest.mark.parametrize("is_server", [True, False])
def test_rfc_7_2_3_2_no_context_takeover(is_server: bool) -> None:
    """RFC 7692 §7.2.3.2: without context takeover both messages are f2 48 cd c9 c9 07 00."""
    params = DeflateParams(server_no_context_takeover=True, client_no_context_takeover=True)
    codec = PerMessageDeflate(is_server, params, DeflateOptions(level=6))
    assert codec.compress(HELLO) == HELLO_DEFLATED
    assert codec.compress(HELLO) == HELLO_DEFLATED
    # Locally chosen (options) no takeover has the same effect.
    local = PerMessageDeflate(
        is_server, DeflateParams(), DeflateOptions(server_context_takeover=False, client_context_takeover=False)
    )
    assert [local.compress(HELLO), local.compress(HELLO)] == [HELLO_DEFLATED, HELLO_DEFLATED]
    peer = PerMessageDeflate(not is_server, params)
    assert peer.decompress(HELLO_DEFLATED, True, None) == HELLO
    assert peer.decompress(HELLO_DEFLATED, True, None) == HELLO


def test_rfc_7_2_3_3_fragmented() -> None:
    """RFC 7692 §7.2.3.3: "Hello" as two frames f2 48 cd / c9 c9 07 00."""
    codec = server_codec()
    out = codec.decompress(bytes.fromhex("f248cd"), False, None)
    out += codec.decompress(bytes.fromhex("c9c90700"), True, None)
    assert out == HELLO
    # A following message still decodes (the inflater was left in a sound state).
    assert codec.decompress(HELLO_DEFLATED, True, None) == HELLO


def test_rfc_7_2_3_4_stored_block() -> None:
    """RFC 7692 §7.2.3.4: a DEFLATE block with no compression."""
    codec = server_codec()
    assert codec.decompress(bytes.fromhex("000500faff48656c6c6f00"), True, None) == HELLO


def test_rfc_7_2_3_5_bfinal() -> None:
    """RFC 7692 §7.2.3.5: a DEFLATE block with BFINAL set, then the next message."""
    codec = client_codec()
    assert codec.decompress(bytes.fromhex("f348cdc9c9070000"), True, None) == HELLO
    # The finished stream carries no context; the next message starts afresh.
    assert codec.decompress(HELLO_DEFLATED, True, None) == HELLO
    # BFINAL reached in a non-final frame: the rest of the message is ignored.
    assert codec.decompress(bytes.fromhex("f348cdc9c907"), False, None) == HELLO
    assert codec.decompress(b"\x00", True, None) == b""
    assert codec.decompress(HELLO_DEFLATED, True, None) == HELLO


@pytest.mark.parametrize("takeover", [True, False])
def test_rfc_7_2_3_6_empty_message(takeover: bool) -> None:
    """RFC 7692 §7.2.3.6: an empty message compresses to a single 0x00 and back to b""."""
    params = DeflateParams(server_no_context_takeover=not takeover, client_no_context_takeover=not takeover)
    server = PerMessageDeflate(True, params)
    client = PerMessageDeflate(False, params)
    assert server.compress(b"") == b"\x00"
    assert client.decompress(b"\x00", True, None) == b""
    server2, client2 = PerMessageDeflate(True, params), PerMessageDeflate(False, params)
    for message in [HELLO, b"", HELLO, b"", b""]:
        assert client2.decompress(server2.compress(message), True, None) == message


def test_memoryview_and_bytearray_inputs() -> None:
    """RFC 7692 §7.2: the codec accepts any bytes-like payload."""
    server, client = server_codec(), client_codec()
    data = bytearray(b"abc" * 1000)
    payload = server.compress(memoryview(data))
    assert isinstance(payload, bytes)
    assert client.decompress(memoryview(bytearray(payload)), True, None) == bytes(data)


# ---------------------------------------------------------------------------
# Round trips (RFC 7692 §7.2.1, §7.2.2)
# ---------------------------------------------------------------------------

messages_st = st.lists(
    st.one_of(
        st.binary(max_size=600),
        st.builds(lambda b, n: b * n, st.binary(min_size=1, max_size=12), st.integers(1, 400)),
        st.sampled_from([b"", HELLO, b"Hello, Hello, Hello world"]),
    ),
    min_size=1,
    max_size=5,
)


def split_points(draw_data, payload: bytes) -> list[bytes]:
    cuts = sorted(draw_data.draw(st.lists(st.integers(0, len(payload)), max_size=4)))
    pieces, start = [], 0
    for c in cuts + [len(payload)]:
        pieces.append(payload[start:c])
        start = c
    return pieces


def inflate_frames(codec: PerMessageDeflate, frames: list[bytes]) -> bytes:
    return b"".join(codec.decompress(f, i == len(frames) - 1, None) for i, f in enumerate(frames))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    server_nct=st.booleans(),
    client_nct=st.booleans(),
    server_bits=st.integers(9, 15),
    client_bits=st.integers(9, 15),
    level=st.sampled_from([1, 6, 9]),
    messages=messages_st,
    data=st.data(),
)
def test_round_trip_every_parameter(server_nct, client_nct, server_bits, client_bits, level, messages, data) -> None:
    """RFC 7692 §7.2: messages in sequence, both directions, fragmented at arbitrary points.

    Each payload is also inflated by a reference inflater using exactly the
    agreed window (RFC 7692 §7.1.2), proving we never deflate with a larger one.
    """
    params = DeflateParams(server_nct, client_nct, server_bits, client_bits)
    opts = DeflateOptions(level=level)
    server = PerMessageDeflate(True, params, opts)
    client = PerMessageDeflate(False, params, opts)
    ref_s2c = zlib.decompressobj(-server_bits)
    ref_c2s = zlib.decompressobj(-client_bits)
    for message in messages:
        for sender, receiver, nct, bits, ref_name in (
            (server, client, server_nct, server_bits, "s2c"),
            (client, server, client_nct, client_bits, "c2s"),
        ):
            payload = sender.compress(message)
            frames = split_points(data, payload)
            assert inflate_frames(receiver, frames) == message
            if nct:
                ref = zlib.decompressobj(-bits)
            else:
                ref = ref_s2c if ref_name == "s2c" else ref_c2s
            assert ref.decompress(payload + TAIL) == message


def offered_options() -> st.SearchStrategy[DeflateOptions]:
    return st.builds(
        DeflateOptions,
        level=st.sampled_from([1, 6, 9]),
        server_max_window_bits=st.integers(8, 15),
        client_max_window_bits=st.integers(8, 15),
        server_context_takeover=st.booleans(),
        client_context_takeover=st.booleans(),
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(server_opts=offered_options(), client_opts=offered_options(), messages=messages_st, data=st.data())
def test_negotiated_pairs_round_trip(server_opts, client_opts, messages, data) -> None:
    """RFC 7692 §5, §7.1: client_offer -> negotiate_server -> negotiate_client, then talk."""
    offer = client_offer(client_opts)
    accepted = negotiate_server(parse(offer), server_opts)
    assert accepted is not None  # our own offers are always acceptable to our server
    header, server = accepted
    client = negotiate_client(parse(header), client_opts)
    assert client is not None
    assert server.params == client.params
    p = server.params
    assert p.server_max_window_bits >= 9
    assert p.server_max_window_bits <= max(9, server_opts.server_max_window_bits)
    if client_opts.server_max_window_bits < 15:
        assert p.server_max_window_bits <= max(9, client_opts.server_max_window_bits)
    assert p.client_max_window_bits <= server_opts.client_max_window_bits
    assert p.server_no_context_takeover == (not server_opts.server_context_takeover or not client_opts.server_context_takeover)
    assert p.client_no_context_takeover == (not server_opts.client_context_takeover or not client_opts.client_context_takeover)
    for message in messages:
        assert inflate_frames(client, split_points(data, server.compress(message))) == message
        if client.should_compress(len(message)):
            assert inflate_frames(server, split_points(data, client.compress(message))) == message
        else:
            assert p.client_max_window_bits == 8


# ---------------------------------------------------------------------------
# Server negotiation (RFC 7692 §5.1, §7.1)
# ---------------------------------------------------------------------------


def test_no_offer() -> None:
    """RFC 7692 §5.1: nothing offered, nothing accepted."""
    assert negotiate_server([]) is None
    assert negotiate_server([("x-webkit-deflate-frame", []), ("foo", [("a", "1")])]) is None


def test_plain_offer() -> None:
    """RFC 7692 §7.1: a bare offer is answered with a bare response."""
    header, codec = negotiate_server(pmd(""))
    assert header == "permessage-deflate"
    assert codec.params == DeflateParams()
    assert codec.is_server


def test_other_extensions_skipped() -> None:
    """RFC 7692 §5.1: other extension names are ignored, the first permessage-deflate is taken."""
    offers = [("foo", [])] + pmd("; server_no_context_takeover") + pmd("")
    header, codec = negotiate_server(offers)
    assert header == "permessage-deflate; server_no_context_takeover"


@pytest.mark.parametrize(
    "offer, response, params",
    [
        ("; server_no_context_takeover", "; server_no_context_takeover", DeflateParams(server_no_context_takeover=True)),
        ("; client_no_context_takeover", "; client_no_context_takeover", DeflateParams(client_no_context_takeover=True)),
        ("; server_max_window_bits=10", "; server_max_window_bits=10", DeflateParams(server_max_window_bits=10)),
        ("; server_max_window_bits=9", "; server_max_window_bits=9", DeflateParams(server_max_window_bits=9)),
        ("; client_max_window_bits", "; client_max_window_bits=15", DeflateParams()),
        ("; client_max_window_bits=12", "; client_max_window_bits=12", DeflateParams(client_max_window_bits=12)),
        ("; client_max_window_bits=8", "; client_max_window_bits=8", DeflateParams(client_max_window_bits=8)),
        (
            "; client_max_window_bits; server_max_window_bits=11; client_no_context_takeover; server_no_context_takeover",
            "; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=11; client_max_window_bits=15",
            DeflateParams(True, True, 11, 15),
        ),
    ],
)
def test_each_parameter_accepted(offer: str, response: str, params: DeflateParams) -> None:
    """RFC 7692 §7.1.1.1, §7.1.1.2, §7.1.2.1, §7.1.2.2: each parameter is accepted."""
    header, codec = negotiate_server(pmd(offer))
    assert header == EXTENSION_NAME + response
    assert codec.params == params


def test_parameter_names_case_insensitive() -> None:
    """RFC 7692 §7.1 parameters are tokens; upper-case spellings are understood."""
    header, codec = negotiate_server([(EXTENSION_NAME, [("Server_No_Context_Takeover", None)])])
    assert codec.params.server_no_context_takeover


@pytest.mark.parametrize(
    "bad",
    [
        "; server_no_context_takeover; server_no_context_takeover",
        "; client_max_window_bits; client_max_window_bits=10",
        "; server_max_window_bits=10; server_max_window_bits=10",
        "; unknown_param",
        "; x=1",
        "; server_no_context_takeover=1",
        "; client_no_context_takeover=",
        "; server_max_window_bits",
        "; server_max_window_bits=8",
    ]
    + [f"; server_max_window_bits={v}" for v in ("08", "16", "7", "x", "", "+9", "-9", " 9", "9 ", "0x9", "1e1", "٩")]
    + [f"; client_max_window_bits={v}" for v in ("08", "16", "7", "x", "", "+9", "-9", "9 ", "15.0")],
)
def test_invalid_offer_declined_next_taken(bad: str) -> None:
    """RFC 7692 §5.1, §7.1: an invalid offer is declined and the next offer is taken."""
    parsed = pmd(bad)
    if "=" in bad and bad.split("=", 1)[1] in (" 9", "9 "):
        # the mini parser strips spaces: build the raw value directly
        name, value = bad[2:].split("=", 1)
        parsed = [(EXTENSION_NAME, [(name, value)])]
    assert negotiate_server(parsed) is None
    header, codec = negotiate_server(parsed + pmd("; client_no_context_takeover"))
    assert header == "permessage-deflate; client_no_context_takeover"
    assert codec.params == DeflateParams(client_no_context_takeover=True)


def test_server_window_bits_8_declined() -> None:
    """docs/design.md / RFC 7692 §5.1: zlib cannot deflate with 8 bits: decline, never answer 9."""
    assert negotiate_server(pmd("; server_max_window_bits=8")) is None
    header, _ = negotiate_server(pmd("; server_max_window_bits=8") + pmd("; server_max_window_bits=9"))
    assert header == "permessage-deflate; server_max_window_bits=9"


def test_server_options_shape_response() -> None:
    """RFC 7692 §7.1: the server adds parameters of its own choice from its options."""
    opts = DeflateOptions(server_context_takeover=False, client_context_takeover=False, server_max_window_bits=12)
    header, codec = negotiate_server(pmd(""), opts)
    assert header == "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=12"
    assert codec.params == DeflateParams(True, True, 12, 15)
    # The offered window is lowered to ours, never raised.
    header, codec = negotiate_server(pmd("; server_max_window_bits=10"), opts)
    assert "server_max_window_bits=10" in header
    header, codec = negotiate_server(pmd("; server_max_window_bits=14"), opts)
    assert "server_max_window_bits=12" in header
    # Our server window of 8 is raised to 9: the smallest zlib deflates with.
    header, codec = negotiate_server(pmd(""), DeflateOptions(server_max_window_bits=8))
    assert header == "permessage-deflate; server_max_window_bits=9"
    # client_max_window_bits is answered only when offered (§7.1.2.2).
    c_opts = DeflateOptions(client_max_window_bits=10)
    header, codec = negotiate_server(pmd(""), c_opts)
    assert header == "permessage-deflate" and codec.params.client_max_window_bits == 15
    header, codec = negotiate_server(pmd("; client_max_window_bits"), c_opts)
    assert header == "permessage-deflate; client_max_window_bits=10"
    header, codec = negotiate_server(pmd("; client_max_window_bits=9"), c_opts)
    assert header == "permessage-deflate; client_max_window_bits=9"


# ---------------------------------------------------------------------------
# Client side (RFC 7692 §5.2, §7.1)
# ---------------------------------------------------------------------------


def test_client_offer() -> None:
    """RFC 7692 §7.1: the client offer reflects its options."""
    assert client_offer() == "permessage-deflate; client_max_window_bits"
    opts = DeflateOptions(
        server_context_takeover=False, client_context_takeover=False, server_max_window_bits=10, client_max_window_bits=11
    )
    assert client_offer(opts) == (
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
        "server_max_window_bits=10; client_max_window_bits=11"
    )
    assert client_offer(DeflateOptions(server_max_window_bits=8, client_max_window_bits=8)) == (
        "permessage-deflate; server_max_window_bits=9; client_max_window_bits=9"
    )


def test_negotiate_client_accepts() -> None:
    """RFC 7692 §5.2: valid responses give a client codec with the agreed parameters."""
    assert negotiate_client([]) is None
    assert negotiate_client([("foo", [])]) is None
    codec = negotiate_client(pmd(""))
    assert codec is not None and not codec.is_server and codec.params == DeflateParams()
    codec = negotiate_client(
        pmd("; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=8; client_max_window_bits=10")
    )
    assert codec.params == DeflateParams(True, True, 8, 10)
    # An 8-bit server window is fine for us: we inflate with 15.
    server = PerMessageDeflate(True, DeflateParams(server_max_window_bits=9))
    assert codec.decompress(server.compress(b"abc" * 100), True, None) == b"abc" * 100


def test_negotiate_client_window_8_disables_compression() -> None:
    """RFC 7692 §6: with client_max_window_bits=8 the client sends uncompressed messages."""
    codec = negotiate_client(pmd("; client_max_window_bits=8"))
    assert codec.params.client_max_window_bits == 8
    assert not codec.should_compress(10_000)
    with pytest.raises(UsageError):
        codec.compress(b"x")
    assert codec.decompress(HELLO_DEFLATED, True, None) == HELLO


@pytest.mark.parametrize(
    "response, opts",
    [
        ("; unknown", DeflateOptions()),
        ("; server_no_context_takeover; server_no_context_takeover", DeflateOptions()),
        ("; server_no_context_takeover=x", DeflateOptions()),
        ("; server_max_window_bits", DeflateOptions()),
        ("; server_max_window_bits=16", DeflateOptions()),
        ("; server_max_window_bits=08", DeflateOptions()),
        ("; client_max_window_bits", DeflateOptions()),  # a response must carry a value
        ("; client_max_window_bits=7", DeflateOptions()),
        ("", DeflateOptions(server_context_takeover=False)),  # offered, missing (§7.1.1.1)
        ("", DeflateOptions(server_max_window_bits=10)),  # offered, missing (§7.1.2.1)
        ("; server_max_window_bits=11", DeflateOptions(server_max_window_bits=10)),  # larger than offered
        ("; client_max_window_bits=12", DeflateOptions(client_max_window_bits=11)),  # larger than offered
    ],
)
def test_negotiate_client_rejects(response: str, opts: DeflateOptions) -> None:
    """RFC 7692 §5.2, §7.1: an invalid response fails the connection (HandshakeError)."""
    with pytest.raises(HandshakeError) as info:
        negotiate_client(pmd(response), opts)
    assert info.value.status == 400
    assert "permessage-deflate" in str(info.value)


def test_negotiate_client_rejects_repeated_element() -> None:
    """RFC 6455 §9.1: the response must not hold the extension twice."""
    with pytest.raises(HandshakeError):
        negotiate_client(pmd("") + pmd(""))


def test_client_local_no_takeover() -> None:
    """RFC 7692 §7.1.1.2: a client may drop its context even if the server did not ask."""
    codec = negotiate_client(pmd(""), DeflateOptions(client_context_takeover=False, level=6))
    assert [codec.compress(HELLO), codec.compress(HELLO)] == [HELLO_DEFLATED, HELLO_DEFLATED]


# ---------------------------------------------------------------------------
# Codec construction, min_size
# ---------------------------------------------------------------------------


def test_server_with_8_bit_window_refused() -> None:
    """docs/design.md: the server never deflates with 8 bits; constructing such a codec is misuse."""
    with pytest.raises(UsageError):
        PerMessageDeflate(True, DeflateParams(server_max_window_bits=8))
    PerMessageDeflate(True, DeflateParams(client_max_window_bits=8))  # inflating is fine


def test_options_validated() -> None:
    """RFC 7692 §7.1.2: window bits are 8..15; zlib's own ranges for the rest."""
    for bad in (
        dict(server_max_window_bits=16),
        dict(client_max_window_bits=7),
        dict(level=10),
        dict(mem_level=0),
        dict(strategy=5),
        dict(min_size=-1),
    ):
        with pytest.raises(UsageError):
            DeflateOptions(**bad)


def test_should_compress_min_size() -> None:
    """RFC 7692 §6: short messages may be sent uncompressed."""
    codec = PerMessageDeflate(True, DeflateParams(), DeflateOptions(min_size=64))
    assert not codec.should_compress(63)
    assert codec.should_compress(64)
    assert PerMessageDeflate(True, DeflateParams()).should_compress(0)


def test_own_window_smaller_than_agreed() -> None:
    """RFC 7692 §7.1.2: we may compress with a smaller window than agreed, never a larger one."""
    codec = PerMessageDeflate(True, DeflateParams(), DeflateOptions(server_max_window_bits=9))
    data = bytes(range(256)) * 8 + b"tail" + bytes(range(256)) * 8
    payload = codec.compress(data)
    assert zlib.decompressobj(-9).decompress(payload + TAIL) == data


# ---------------------------------------------------------------------------
# Errors and bounded inflation (RFC 7692 §7.2.2, RFC 6455 §7.4.1 code 1009)
# ---------------------------------------------------------------------------


def test_corrupt_data_is_frame_error() -> None:
    """RFC 7692 §7.2.2: data that is not DEFLATE fails the connection (1002)."""
    codec = server_codec()
    with pytest.raises(FrameError) as info:
        codec.decompress(b"\xff\xff\xff\xff\xff", True, None)
    assert isinstance(info.value, ProtocolError) and info.value.code == 1002


def deflate_zeros(total: int, level: int = 9) -> bytes:
    """A §7.2.1 payload for ``total`` zero bytes, built without holding them all."""
    c = zlib.compressobj(level, zlib.DEFLATED, -15, 9)
    chunk = b"\0" * 1_000_000
    parts, left = [], total
    while left:
        n = min(left, len(chunk))
        parts.append(c.compress(chunk[:n] if n < len(chunk) else chunk))
        left -= n
    parts.append(c.flush(zlib.Z_SYNC_FLUSH))
    payload = b"".join(parts)
    assert payload.endswith(TAIL)
    return payload[:-4]


@pytest.fixture(scope="module")
def bomb_100mb() -> bytes:
    # DEFLATE's best ratio is about 1032:1 (a 258-byte match per ~2 bits), so
    # 100 MB cannot come from 1 KiB: it takes ~97 KB. A 1 KiB frame yields ~1 MB.
    payload = deflate_zeros(100_000_000)
    assert 90_000 < len(payload) < 110_000
    return payload


@pytest.fixture(scope="module")
def bomb_1kib() -> bytes:
    payload = deflate_zeros(1_050_000)
    assert len(payload) <= 1100
    return payload


def peak_during(fn) -> int:
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        fn()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("bomb", ["bomb_100mb", "bomb_1kib"])
def test_bounded_inflation(bomb: str, request) -> None:
    """RFC 7692 §7.2.2 + RFC 6455 §7.4.1: a decompression bomb is refused (1009), memory bounded."""
    payload = request.getfixturevalue(bomb)
    max_size = 1_000_000
    codec = server_codec()
    raised = []

    def run() -> None:
        try:
            codec.decompress(payload, True, max_size)
        except MessageTooBig as exc:
            raised.append(exc)

    peak = peak_during(run)
    assert raised and raised[0].code == 1009
    assert peak < 2 * max_size, peak
    # Same in a non-final frame.
    with pytest.raises(MessageTooBig):
        server_codec().decompress(payload, False, max_size)


def test_bounded_inflation_exact_limit() -> None:
    """RFC 7692 §7.2.2: exactly max_size bytes are allowed, one more is not."""
    data = bytes(range(256)) * 4000  # 1_024_000 bytes, several output chunks
    payload = PerMessageDeflate(False, DeflateParams()).compress(data)
    assert server_codec().decompress(payload, True, len(data)) == data
    with pytest.raises(MessageTooBig):
        server_codec().decompress(payload, True, len(data) - 1)
    assert server_codec().decompress(PerMessageDeflate(False, DeflateParams()).compress(b""), True, 0) == b""


def test_bounded_inflation_over_many_frames() -> None:
    """RFC 7692 §7.2.2: a message whose frames together pass max_size is refused."""
    payload = deflate_zeros(3_000_000, level=6)
    frames = [payload[i : i + 200] for i in range(0, len(payload), 200)]
    codec = server_codec()
    remaining = 1_000_000
    received = 0
    with pytest.raises(MessageTooBig):
        for i, frame in enumerate(frames):
            out = codec.decompress(frame, i == len(frames) - 1, remaining)
            assert len(out) <= remaining
            remaining -= len(out)
            received += len(out)
    assert received <= 1_000_000
    # The codec recovers: a fresh message decodes (context was dropped with the error).
    assert codec.decompress(HELLO_DEFLATED, True, None) == HELLO


def test_unbounded_large_message() -> None:
    """RFC 7692 §7.2.2: with no limit, large messages inflate whole."""
    data = bytes(range(256)) * 20_000
    client = client_codec()
    assert server_codec().decompress(client.compress(data), True, None) == data


# ---------------------------------------------------------------------------
# Hibernation (release) and memory
# ---------------------------------------------------------------------------


def test_release_keeps_context_with_takeover() -> None:
    """RFC 7692 §7.2.1/§7.2.2: with context takeover, release() keeps the windows."""
    server = PerMessageDeflate(True, DeflateParams(), DeflateOptions(level=6))
    client = client_codec()
    assert client.decompress(server.compress(HELLO), True, None) == HELLO
    server.release()
    client.release()
    assert server.memory_estimate() > 0 and client.memory_estimate() > 0
    second = server.compress(HELLO)
    assert second == bytes.fromhex("f200110000")  # still refers to the first message
    assert client.decompress(second, True, None) == HELLO


def test_release_frees_no_takeover() -> None:
    """RFC 7692 §7.1.1: without context takeover nothing needs keeping between messages."""
    params = DeflateParams(server_no_context_takeover=True, client_no_context_takeover=True)
    server, client = PerMessageDeflate(True, params), PerMessageDeflate(False, params)
    assert server.memory_estimate() == 0
    for _ in range(2):
        assert client.decompress(server.compress(HELLO), True, None) == HELLO
        assert server.decompress(client.compress(HELLO), True, None) == HELLO
        server.release()
        client.release()
        assert server.memory_estimate() == 0 and client.memory_estimate() == 0


def test_release_mid_message_keeps_inflater() -> None:
    """RFC 7692 §7.2.2: a half-received message keeps its inflater across release()."""
    params = DeflateParams(client_no_context_takeover=True)
    server = PerMessageDeflate(True, params)
    out = server.decompress(bytes.fromhex("f248cd"), False, None)
    server.release()
    assert server.memory_estimate() > 0
    out += server.decompress(bytes.fromhex("c9c90700"), True, None)
    assert out == HELLO
    server.release()
    assert server.memory_estimate() == 0


SUBSCRIBE = b'{"type": "subscribe", "channel": "orders", "filters": ["book", "trades"]}'


def fresh_inflate(payload: bytes) -> bytes:
    """Inflate one §7.2.1 payload with an empty window (raises zlib.error on a reference before it)."""
    return zlib.decompressobj(-15).decompress(payload + TAIL)


def test_release_drops_inflater_keeps_window_under_history_limit() -> None:
    """RFC 7692 §7.2.2: with client context takeover, while little has been inflated, release()
    drops the inflater and keeps its window (the output so far); messages that refer back to
    earlier ones still inflate after each release."""
    client, server = client_codec(), server_codec()
    first, second = client.compress(SUBSCRIBE), client.compress(SUBSCRIBE)
    assert len(second) < 12  # a back-reference into the first message...
    with pytest.raises(zlib.error):
        fresh_inflate(second)  # ...which a fresh inflater cannot resolve
    assert server.decompress(first, True, None) == SUBSCRIBE
    server.release()
    assert server._inflater is None
    assert server.memory_estimate() == len(SUBSCRIBE)  # the window copy only, no zlib object
    assert server.decompress(second, True, None) == SUBSCRIBE
    sent = [SUBSCRIBE, SUBSCRIBE]
    for i in range(10):
        server.release()
        assert server._inflater is None
        message = SUBSCRIBE.replace(b"orders", b"orders-%d" % i) + HELLO * i
        assert server.decompress(client.compress(message), True, None) == message
        sent.append(message)
    assert sum(map(len, sent)) <= _HISTORY_LIMIT
    assert server.memory_estimate() > 32 * 1024  # awake again: the rebuilt inflater


def test_release_keeps_inflater_past_history_limit() -> None:
    """RFC 7692 §7.2.2: once more than _HISTORY_LIMIT bytes were inflated, release() keeps the
    inflater (its window is worth keeping as is); back-references keep working."""
    client, server = client_codec(), server_codec()
    chunk = bytes(range(256)) * 4  # 1 KiB
    total = 0
    i = 0
    while total <= _HISTORY_LIMIT + 2048:
        message = b"%d:" % i + chunk
        assert server.decompress(client.compress(message), True, None) == message
        total += len(message)
        server.release()
        assert (server._inflater is None) == (total <= _HISTORY_LIMIT), total
        i += 1
    assert server.memory_estimate() > 32 * 1024
    again = client.compress(b"0:" + chunk)  # the first message again, all back-references
    with pytest.raises(zlib.error):
        fresh_inflate(again)
    assert server.decompress(again, True, None) == b"0:" + chunk
    server.release()
    assert server._inflater is not None


def test_release_between_fragments_keeps_inflater_then_drops_it() -> None:
    """RFC 7692 §7.2.2: a half-received message keeps its inflater across release(); once it is
    whole (still under the history limit) release() drops it and the window survives."""
    client, server = client_codec(), server_codec()
    assert server.decompress(client.compress(SUBSCRIBE), True, None) == SUBSCRIBE
    server.release()
    assert server._inflater is None
    message = SUBSCRIBE + b" and " + SUBSCRIBE
    payload = client.compress(message)
    frames = [payload[:3], payload[3:-2], payload[-2:]]
    out = server.decompress(frames[0], False, None)
    server.release()
    assert server._inflater is not None
    out += server.decompress(frames[1], False, None)
    server.release()
    assert server._inflater is not None
    out += server.decompress(frames[2], True, None)
    assert out == message
    server.release()
    assert server._inflater is None
    assert server.memory_estimate() == len(SUBSCRIBE) + len(message)
    last = client.compress(message)
    with pytest.raises(zlib.error):
        fresh_inflate(last)
    assert server.decompress(last, True, None) == message


@pytest.mark.parametrize("error", ["corrupt", "too_big"])
def test_error_resets_kept_window(error: str) -> None:
    """RFC 7692 §7.2.2, RFC 6455 §7.4.1 (1002, 1009): an error drops the inflater and its window
    copy; a new stream then starts with an empty window, released or not."""
    client, server = client_codec(), server_codec()
    assert server.decompress(client.compress(SUBSCRIBE), True, None) == SUBSCRIBE
    server.release()
    stale = client.compress(SUBSCRIBE)  # would refer back to the first message
    if error == "corrupt":
        with pytest.raises(FrameError):
            server.decompress(b"\xff\xff\xff\xff\xff", True, None)
    else:
        with pytest.raises(MessageTooBig):
            server.decompress(client.compress(HELLO * 100), True, 10)
    assert server._inflater is None and server._history == b""
    server.release()
    assert server.memory_estimate() == 0
    with pytest.raises(FrameError):  # the old window is gone
        server.decompress(stale, True, None)
    client, server = client_codec(), server_codec()
    for _ in range(3):
        assert server.decompress(client.compress(SUBSCRIBE), True, None) == SUBSCRIBE
        server.release()
        assert server._inflater is None


def test_error_past_history_limit_tracks_again() -> None:
    """After an error the inflate stream starts over, so its window can be kept again on release()."""
    client, server = client_codec(), server_codec()
    big = bytes(range(256)) * (_HISTORY_LIMIT // 256 + 1)
    assert server.decompress(client.compress(big), True, None) == big
    server.release()
    assert server._inflater is not None
    with pytest.raises(FrameError):
        server.decompress(b"\xff\xff\xff\xff\xff", True, None)
    client = client_codec()
    assert server.decompress(client.compress(SUBSCRIBE), True, None) == SUBSCRIBE
    server.release()
    assert server._inflater is None
    assert server.decompress(client.compress(SUBSCRIBE), True, None) == SUBSCRIBE


@pytest.mark.parametrize("hibernate", [False, True])
def test_bfinal_clears_kept_window(hibernate: bool) -> None:
    """RFC 7692 §7.2.3.5: after a BFINAL-ended message the next one starts with an empty window,
    whether or not release() ran in between (the kept output is cleared with the stream)."""
    client, server = client_codec(), server_codec()
    assert server.decompress(client.compress(SUBSCRIBE), True, None) == SUBSCRIBE
    backref = client.compress(SUBSCRIBE)
    assert server.decompress(bytes.fromhex("f348cdc9c9070000"), True, None) == HELLO
    if hibernate:
        server.release()
        assert server._inflater is None and server.memory_estimate() == 0
    with pytest.raises(FrameError):
        server.decompress(backref, True, None)
    assert server.decompress(HELLO_DEFLATED, True, None) == HELLO
    server.release()
    assert server._inflater is None
    assert server.decompress(bytes.fromhex("f200110000"), True, None) == HELLO  # refers to the HELLO before


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    level=st.sampled_from([1, 6, 9]),
    bits=st.integers(9, 15),
    messages=st.lists(messages_st, min_size=1, max_size=4).map(lambda groups: [m for g in groups for m in g]),
    data=st.data(),
)
def test_release_anywhere_round_trip(level, bits, messages, data) -> None:
    """RFC 7692 §7.2.2: release() between any two frames (hibernation) never changes what a
    context-takeover stream inflates to; between messages, under the history limit, it frees the inflater."""
    params = DeflateParams(client_max_window_bits=bits)
    client = PerMessageDeflate(False, params, DeflateOptions(level=level))
    server = PerMessageDeflate(True, params)
    awake = PerMessageDeflate(True, params)
    total = 0
    for message in messages:
        frames = split_points(data, client.compress(message))
        out = b""
        for i, frame in enumerate(frames):
            final = i == len(frames) - 1
            if data.draw(st.booleans()):
                server.release()
                if i > 0:
                    assert server._inflater is not None  # a message is half received
            out += server.decompress(frame, final, None)
        assert out == message == inflate_frames(awake, frames)
        total += len(message)
        server.release()
        assert (server._inflater is None) == (total <= _HISTORY_LIMIT)


def test_no_forbidden_imports() -> None:
    """Sans-IO (docs/design.md): the module touches no sockets, threads, loops or clocks."""
    import ast
    import inspect

    import cowboy_ws.protocol.deflate as mod

    tree = ast.parse(inspect.getsource(mod))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    assert not names & {"socket", "selectors", "threading", "asyncio", "time"}


def test_shared_deflater_messages_stand_alone() -> None:
    """RFC 7692 §7.1.1.1 / §7.2.1: without server context takeover, codecs sharing one deflater
    produce messages that each inflate with a fresh window, interleaved across connections."""
    shared: dict = {}
    params = DeflateParams(server_no_context_takeover=True)
    a = PerMessageDeflate(True, params, shared_deflaters=shared)
    b = PerMessageDeflate(True, params, shared_deflaters=shared)
    texts = [b"hello hello hello", b"hello again", b"", b"x" * 5000, b"hello hello hello"]
    for i, text in enumerate(texts):
        codec = a if i % 2 else b
        payload = codec.compress(text)
        fresh = zlib.decompressobj(-15)
        assert fresh.decompress(payload + b"\x00\x00\xff\xff") == text
    assert len(shared) == 1
    assert a._deflater is None and b._deflater is None  # nothing kept per connection
