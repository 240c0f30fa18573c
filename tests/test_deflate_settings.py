"""permessage-deflate settings (Cowboy's ``deflate_opts``) over real sockets (RFC 7692 §7.1).

Each setting negotiates what RFC 7692 says in the response's parameters, messages round-trip,
context takeover really keeps the window (a repeated message compresses to a few bytes), the
window bits are honoured in both directions, a bad setting is a clear error, and the CLI's
``--deflate-opts`` reaches the server.  Run on both backends (``COWBOY_WS_PURE=1``).
"""

from __future__ import annotations

import os
import random
import socket

import pytest
from test_cli import Cli
from wsclient import TIMEOUT, Client, _read_head, masked

from cowboy_ws.__main__ import build_parser, main
from cowboy_ws.examples import echo as echo_handler
from cowboy_ws.options import SERVER_DEFLATE, WebSocketOptions
from cowboy_ws.protocol import deflate as pmd
from cowboy_ws.protocol import handshake
from cowboy_ws.protocol.connection import Connection
from cowboy_ws.protocol.deflate import DeflateOptions
from cowboy_ws.protocol.errors import UsageError

try:
    from zlib_ng import zlib_ng as zlib
except ImportError:  # pragma: no cover
    import zlib  # type: ignore[no-redef]

#: A JSON-like message: compressible, and repeated content within it.
DOC = b'{"type": "order.shipped", "customer": {"name": "Ana Silva", "city": "Lisbon"}, "items": [' + b", ".join(
    b'{"sku": "SKU-%06d", "qty": %d}' % (i * 7919 % 10 ** 6, i % 9 + 1) for i in range(30)) + b"]}"


#: What the test client offers unless told otherwise: "permessage-deflate; client_max_window_bits".
OFFER = DeflateOptions()


def open_ws(port: int, client_opts: DeflateOptions | None = OFFER, path: str = "/ws") -> Client:
    """A test client offering ``client_offer(client_opts)`` (no offer for None); its codec follows the answer."""
    offer = None if client_opts is None else pmd.client_offer(client_opts)
    key = handshake.make_key()
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    try:
        sock.sendall(handshake.build_request(f"127.0.0.1:{port}", path, key, extensions=offer))
        resp, rest = _read_head(sock, TIMEOUT)
        _, extensions = handshake.validate_response(resp, key, offered_extensions=offer)
        codec = None if client_opts is None else pmd.negotiate_client(extensions, client_opts)
    except BaseException:
        sock.close()
        raise
    client = Client(sock, Connection("client", max_frame_size=None, deflate=codec), resp, None, extensions, TIMEOUT)
    if rest:
        client._feed(rest)
    return client


@pytest.fixture
def ws(serve):
    """``ws(server, client_opts)``: :func:`open_ws`, aborted at teardown."""
    clients: list[Client] = []

    def open_client(server, client_opts: DeflateOptions | None = OFFER, path: str = "/ws") -> Client:
        client = open_ws(server.port, client_opts, path)
        clients.append(client)
        return client

    yield open_client
    for client in clients:
        client.abort()


def answered(client: Client) -> str:
    return client.response.get("sec-websocket-extensions") or ""


def echo(client: Client, data: bytes) -> bytes:
    """Send ``data`` as text, check the echo, return the compressed payload the server sent."""
    client.send_text(data)
    assert client.recv_message() == ("text", data)
    _opcode, fin, rsv1, payload = client.raw_frames[-1]
    assert fin and rsv1, "the echo came uncompressed"
    return payload


# -- negotiation: the response parameters (RFC 7692 §7.1) ---------------------------------------

NEGOTIATION = [
    # (server deflate_opts, what the client offers, the expected response)
    ({}, DeflateOptions(),
     "permessage-deflate; server_no_context_takeover; client_max_window_bits=15"),
    ({"server_context_takeover": "takeover"}, DeflateOptions(),
     "permessage-deflate; client_max_window_bits=15"),
    ({"server_context_takeover": "takeover", "server_max_window_bits": 12}, DeflateOptions(),
     "permessage-deflate; server_max_window_bits=12; client_max_window_bits=15"),
    # §7.1.2.1: the smaller of what the client offered and what we allow
    ({"server_context_takeover": "takeover", "server_max_window_bits": 10}, DeflateOptions(server_max_window_bits=12),
     "permessage-deflate; server_max_window_bits=10; client_max_window_bits=15"),
    ({"server_context_takeover": "takeover", "server_max_window_bits": 12}, DeflateOptions(server_max_window_bits=10),
     "permessage-deflate; server_max_window_bits=10; client_max_window_bits=15"),
    # §7.1.1.1: the client asks for no server context takeover: granted whatever ours
    ({"server_context_takeover": "takeover"}, DeflateOptions(server_context_takeover=False),
     "permessage-deflate; server_no_context_takeover; client_max_window_bits=15"),
    # §7.1.1.2: we may ask the client not to take over context
    ({"client_context_takeover": "no_takeover"}, DeflateOptions(),
     "permessage-deflate; server_no_context_takeover; client_no_context_takeover; client_max_window_bits=15"),
    # §7.1.2.2: the client's window is limited only when it offered client_max_window_bits
    ({"client_max_window_bits": 10}, DeflateOptions(),
     "permessage-deflate; server_no_context_takeover; client_max_window_bits=10"),
    ({"client_max_window_bits": 10}, DeflateOptions(client_max_window_bits=12),
     "permessage-deflate; server_no_context_takeover; client_max_window_bits=10"),
    # an 8-bit window is answered 9: zlib cannot deflate with 8 (docs/design.md)
    ({"server_context_takeover": "takeover", "server_max_window_bits": 8}, DeflateOptions(),
     "permessage-deflate; server_max_window_bits=9; client_max_window_bits=15"),
    # Cowboy's spellings of the zlib settings change the bytes, not the negotiation
    ({"level": "best_compression", "mem_level": 5, "strategy": "filtered"}, DeflateOptions(),
     "permessage-deflate; server_no_context_takeover; client_max_window_bits=15"),
]


@pytest.mark.parametrize("server_opts, offer, expected", NEGOTIATION)
def test_each_setting_negotiates_what_rfc7692_says(app, ws, server_opts, offer, expected):
    server = app(ws_options={"compress": True, "deflate_opts": server_opts})
    client = ws(server, offer)
    assert answered(client) == expected
    docs = [DOC, DOC.replace(b"Ana", b"Bob"), b"", b"x", DOC * 3, DOC]
    for data in docs:  # both directions compressed, several messages on one context
        echo(client, data)


def test_init_opts_choose_the_setting_per_connection(app, ws):
    """The handler's ``init`` opts override the server's deflate_opts for that connection."""
    def init(req, state):
        takeover = req.qs == "takeover"
        opts = {"deflate_opts": {"server_context_takeover": "takeover", "server_max_window_bits": 11}} if takeover \
            else {}
        return ("cowboy_websocket", req, state, opts)

    server = app(ws_options={"compress": True}, init=init)
    default = "permessage-deflate; server_no_context_takeover; client_max_window_bits=15"
    assert answered(ws(server, path="/ws")) == default
    client = ws(server, path="/ws?takeover")
    assert answered(client) == "permessage-deflate; server_max_window_bits=11; client_max_window_bits=15"
    echo(client, DOC)


def test_no_offer_no_compression(app, ws):
    server = app(ws_options={"compress": True, "deflate_opts": {"server_context_takeover": "takeover"}})
    client = ws(server, None)
    assert answered(client) == ""
    client.send_text(DOC)
    assert client.recv_message() == ("text", DOC)
    assert not client.raw_frames[-1][2]


# -- context takeover keeps the window (RFC 7692 §7.2.1) ---------------------------------------


@pytest.mark.parametrize("bits", [15, 12, 10, 9])
def test_takeover_keeps_the_window(app, ws, bits):
    server = app(ws_options={"compress": True, "deflate_opts": {"server_context_takeover": "takeover",
                                                                "server_max_window_bits": bits}})
    client = ws(server)
    small = DOC[:200]  # within reach of every window: zlib refers back at most 2**bits - 262 bytes
    first, second = echo(client, small), echo(client, small)
    assert len(second) * 8 < len(first), (len(first), len(second))  # a back-reference to the first copy


def test_no_takeover_compresses_each_message_alone(app, ws):
    server = app(ws_options={"compress": True})
    client = ws(server)
    first, second = echo(client, DOC), echo(client, DOC)
    assert second == first  # the same bytes: nothing carried over (§7.1.1.1)


# -- window bits honoured (RFC 7692 §7.1.2) ----------------------------------------------------


@pytest.mark.parametrize("bits", [15, 12, 10, 9])
def test_server_window_bits_honoured(app, ws, bits):
    """The server's back-references reach no further than 2**bits: an inflater with exactly that
    window decodes every message, and a repeat from further back is not referenced."""
    server = app(ws_options={"compress": True, "deflate_opts": {"server_context_takeover": "takeover",
                                                                "server_max_window_bits": bits}})
    client = ws(server)
    inflater = zlib.decompressobj(-bits)  # RFC 7692 §7.2.2 with the agreed window, no larger
    rng = random.Random(bits)
    block = bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(600))
    gap = bytes(rng.choice(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(1200))
    sizes = []
    for data in (block, gap, block):  # the repeat is 1,800 bytes back
        payload = echo(client, data)
        sizes.append(len(payload))
        assert inflater.decompress(payload + b"\x00\x00\xff\xff") == data
    if (1 << bits) > 1800:
        assert sizes[2] * 8 < sizes[0]  # found in the window
    else:
        assert sizes[2] * 10 > sizes[0] * 9  # out of the window: compressed from scratch


@pytest.mark.parametrize("bits", [12, 9])
def test_client_window_bits_asked_and_honoured(app, ws, bits):
    """client_max_window_bits=N in our answer: the client deflates with N and we inflate with N."""
    server = app(ws_options={"compress": True, "deflate_opts": {"client_max_window_bits": bits}})
    client = ws(server)
    assert f"client_max_window_bits={bits}" in answered(client)
    for data in (DOC, DOC, DOC * 4):
        echo(client, data)


def test_client_past_its_agreed_window_is_failed(app, ws):
    """A client that agreed to a 9-bit window but refers to the previous message, 700 bytes back, breaks
    §7.1.2.2: we inflate with the agreed window, so the reference is out of it (close 1002)."""
    server = app(ws_options={"compress": True, "deflate_opts": {"client_max_window_bits": 9}})
    client = ws(server)
    assert "client_max_window_bits=9" in answered(client)
    block = os.urandom(700)
    deflater = zlib.compressobj(6, zlib.DEFLATED, -15)
    for _ in range(2):
        payload = (deflater.compress(block) + deflater.flush(zlib.Z_SYNC_FLUSH))[:-4]
        client.send_raw(masked(0x2, payload, rsv1=True))
    assert client.recv_message() == ("binary", block)
    event = client.recv_event()
    assert event[:2] == ("close", 1002), event


# -- bad settings: clear errors ----------------------------------------------------------------


@pytest.mark.parametrize("bad, words", [
    ({"level": 42}, ["level", "-1..9", "best_compression"]),
    ({"level": "fast"}, ["level", "best_speed"]),
    ({"level": True}, ["level"]),
    ({"mem_level": 0}, ["mem_level", "1..9"]),
    ({"strategy": "huffman"}, ["strategy", "huffman_only", "rle"]),
    ({"server_context_takeover": "yes"}, ["server_context_takeover", "'takeover'", "'no_takeover'"]),
    ({"client_context_takeover": 1}, ["client_context_takeover", "'takeover'"]),
    ({"server_max_window_bits": 16}, ["server_max_window_bits", "8..15"]),
    ({"client_max_window_bits": "10"}, ["client_max_window_bits", "8..15"]),
    ({"min_size": -1}, ["min_size", ">= 0"]),
    ({"window_bits": 10}, ["unknown", "window_bits", "server_max_window_bits"]),
])
def test_bad_setting_is_a_clear_error(bad, words):
    with pytest.raises(ValueError) as info:
        WebSocketOptions().merged({"deflate_opts": bad})
    message = str(info.value)
    assert message.startswith("websocket option deflate_opts")
    for word in words:
        assert word in message, message
    with pytest.raises(UsageError):
        SERVER_DEFLATE.updated(bad)


def test_bad_setting_from_server_options_and_init(app, serve, rec):
    with pytest.raises(ValueError, match="server_max_window_bits"):
        serve([("/ws", echo_handler, None)],
              ws_options={"compress": True, "deflate_opts": {"server_max_window_bits": 7}})
    server = app(init=lambda req, state: ("cowboy_websocket", req, state,
                                          {"deflate_opts": {"server_context_takeover": "sometimes"}}))
    with pytest.raises(Exception, match="500"):
        open_ws(server.port)
    reason = rec.reason(0)
    assert reason[0] == "crash" and "server_context_takeover" in str(reason[2])


def test_cowboy_spellings_are_normalized():
    opts = SERVER_DEFLATE.updated({"level": "best_compression", "strategy": "rle", "mem_level": 5,
                                   "server_context_takeover": "takeover", "client_context_takeover": "no_takeover",
                                   "server_max_window_bits": 12, "client_max_window_bits": 11})
    assert opts == DeflateOptions(level=9, strategy=3, mem_level=5, server_context_takeover=True,
                                  client_context_takeover=False, server_max_window_bits=12,
                                  client_max_window_bits=11)
    assert SERVER_DEFLATE.updated({"level": "none"}).level == 0
    assert SERVER_DEFLATE.updated({"level": "default"}).level == -1
    assert SERVER_DEFLATE.updated({"level": "best_speed", "strategy": "huffman_only"}) == DeflateOptions(
        level=1, strategy=2, server_context_takeover=False)
    assert SERVER_DEFLATE.updated({}) is not None and SERVER_DEFLATE.server_context_takeover is False


# -- the CLI --------------------------------------------------------------------------------------


def test_cli_parses_deflate_opts():
    args = build_parser().parse_args(["--compress", "--deflate-opts",
                                      "server_context_takeover=takeover, server_max_window_bits=10,level=best_speed"])
    assert args.deflate_opts == {"server_context_takeover": "takeover", "server_max_window_bits": 10,
                                 "level": "best_speed"}
    assert build_parser().parse_args(["--deflate-opts", "level=-1"]).deflate_opts == {"level": -1}
    assert build_parser().parse_args([]).deflate_opts is None


@pytest.mark.parametrize("argv, words", [
    (["--compress", "--deflate-opts", "server_max_window_bits=20"], ["server_max_window_bits", "8..15"]),
    (["--compress", "--deflate-opts", "takeover"], ["KEY=VALUE"]),
    (["--compress", "--deflate-opts", "nope=1"], ["unknown", "nope"]),
    (["--deflate-opts", "level=6"], ["--deflate-opts needs --compress"]),
])
def test_cli_rejects_bad_deflate_opts(argv, words, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    for word in words:
        assert word in err, err


def test_cli_deflate_opts_reach_the_server():
    cli = Cli("--port", "0", "--compress",
              "--deflate-opts", "server_context_takeover=takeover,server_max_window_bits=10")
    try:
        cli.started()
        client = open_ws(cli.port, path="/")
        try:
            assert answered(client) == "permessage-deflate; server_max_window_bits=10; client_max_window_bits=15"
            first, second = echo(client, DOC[:200]), echo(client, DOC[:200])
            assert len(second) * 8 < len(first)
        finally:
            client.abort()
    finally:
        cli.stop()
