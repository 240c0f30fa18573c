"""Interop with an independent client: the ``websockets`` sync client against a real cowboy_ws server."""

from __future__ import annotations

import os

import pytest

import cowboy_ws
from conftest import default_handle

pytest.importorskip("websockets")
from websockets.exceptions import ConnectionClosedError, ConnectionClosedOK  # noqa: E402
from websockets.sync.client import connect as ws_connect  # noqa: E402

TIMEOUT = 10


def open_ws(server, path="/ws", **kwargs):
    kwargs.setdefault("compression", None)
    kwargs.setdefault("proxy", None)
    kwargs.setdefault("open_timeout", TIMEOUT)
    kwargs.setdefault("close_timeout", TIMEOUT)
    kwargs.setdefault("ping_interval", None)
    return ws_connect(server.url + path, **kwargs)


def test_text_and_binary_echo(app, rec):
    server = app()
    with open_ws(server) as ws:
        ws.send("hello, cowboy_ws ✓")
        assert ws.recv(TIMEOUT) == "hello, cowboy_ws ✓"
        ws.send(b"\x00\x01\xfe\xff")
        assert ws.recv(TIMEOUT) == b"\x00\x01\xfe\xff"
        ws.send("")
        assert ws.recv(TIMEOUT) == ""
        for size in (125, 126, 65535, 65536, 200_000):
            data = os.urandom(size)
            ws.send(data)
            assert ws.recv(TIMEOUT) == data
        assert "cowboy_ws" in ws.response.headers["Server"]
    assert rec.reason() == ("remote", 1000, b"")


def test_16_mib_messages(app, rec):
    limit = 32 << 20
    server = app(ws_options={"max_frame_size": limit})
    big = os.urandom(16 << 20)
    with open_ws(server, max_size=None) as ws:
        ws.send(big)
        assert ws.recv(60) == big
        text = "a" * (16 << 20)
        ws.send(text)
        assert ws.recv(60) == text
    assert rec.reason() == ("remote", 1000, b"")


def test_message_over_the_limit_is_refused(app, rec):
    server = app()  # max_frame_size 1_000_000
    # the server fails the connection (1009) while the client may still be writing:
    # the client sees the Close or a reset, whichever comes first
    with pytest.raises((ConnectionClosedError, OSError)):
        with open_ws(server, max_size=None) as ws:
            ws.send(b"x" * 2_000_000)
            ws.recv(TIMEOUT)
    assert rec.reason() == ("error", "badsize")


def test_ping_pong_both_ways(app, rec):
    def handle(frame, state):
        if frame == ("text", b"ping me"):
            return ("reply", [("ping", b"from server"), ("text", "pinged")], state)
        return default_handle(frame, state)

    server = app(handle=handle)
    with open_ws(server) as ws:
        pong = ws.ping(b"from client")
        assert pong.wait(TIMEOUT)
        ws.send("ping me")
        assert ws.recv(TIMEOUT) == "pinged"
        rec.wait_until(lambda: ("pong", b"from server") in rec.called("websocket_handle"), what="the pong")
        assert ("ping", b"from client") in rec.called("websocket_handle")
        latency = ws.ping()
        assert latency.wait(TIMEOUT)


def test_permessage_deflate(app, rec):
    server = app(ws_options={"compress": True})
    with open_ws(server, compression="deflate", max_size=None) as ws:
        header = ws.response.headers["Sec-WebSocket-Extensions"]
        assert header.startswith("permessage-deflate")
        assert [type(ext).__name__ for ext in ws.protocol.extensions] == ["PerMessageDeflate"]
        text = "the same words again and again " * 4000
        for _ in range(3):  # context takeover across messages
            ws.send(text)
            assert ws.recv(TIMEOUT) == text
        data = os.urandom(50_000) + bytes(50_000)
        ws.send(data)
        assert ws.recv(TIMEOUT) == data
        ws.send("")
        assert ws.recv(TIMEOUT) == ""
        # fragmented messages: one compressed message in several frames
        ws.send(["frag-one ", "frag-two ", "frag-three" * 1000])
        assert ws.recv(TIMEOUT) == "frag-one frag-two " + "frag-three" * 1000
        ws.send([b"\x00" * 10_000, b"\x01" * 10_000, b"\x02"])
        assert ws.recv(TIMEOUT) == b"\x00" * 10_000 + b"\x01" * 10_000 + b"\x02"
    assert rec.called("websocket_handle")[-1] == ("binary", b"\x00" * 10_000 + b"\x01" * 10_000 + b"\x02")
    assert rec.reason() == ("remote", 1000, b"")


@pytest.mark.parametrize("bits", [9, 12, 15])
def test_permessage_deflate_window_bits(app, rec, bits):
    from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory

    server = app(ws_options={"compress": True})
    factory = ClientPerMessageDeflateFactory(server_max_window_bits=bits, client_max_window_bits=bits)
    with open_ws(server, compression=None, extensions=[factory]) as ws:
        assert f"server_max_window_bits={bits}" in ws.response.headers["Sec-WebSocket-Extensions"]
        text = "window " * 5000 + "end"
        ws.send(text)
        assert ws.recv(TIMEOUT) == text


def test_permessage_deflate_declined_when_compress_is_off(app, rec):
    server = app()
    with open_ws(server, compression="deflate") as ws:
        assert "Sec-WebSocket-Extensions" not in ws.response.headers
        ws.send("plain")
        assert ws.recv(TIMEOUT) == "plain"


def test_fragmented_messages_without_compression(app, rec):
    server = app()
    with open_ws(server) as ws:
        ws.send(["a", "b", "c"])
        assert ws.recv(TIMEOUT) == "abc"
        ws.send([b"1", b"2"])
        assert ws.recv(TIMEOUT) == b"12"
    assert rec.called("websocket_handle") == [("text", b"abc"), ("binary", b"12")]


def test_subprotocol(app, rec):
    def init(req, state):
        if "v2.chat" in (req.parse_header("sec-websocket-protocol") or []):
            req.set_resp_header("sec-websocket-protocol", "v2.chat")
        return ("cowboy_websocket", req, state)

    server = app(init=init)
    with open_ws(server, subprotocols=["v1.chat", "v2.chat"]) as ws:
        assert ws.subprotocol == "v2.chat"


def test_close_codes_seen_by_websockets(app, rec):
    def handle(frame, state):
        if frame == ("text", b"stop"):
            return ("stop", state)
        if frame == ("text", b"crash"):
            raise RuntimeError("boom")
        return default_handle(frame, state)

    server = app(handle=handle)
    with open_ws(server) as ws:
        ws.send("stop")
        with pytest.raises(ConnectionClosedOK) as ok:
            ws.recv(TIMEOUT)
    assert ok.value.rcvd.code == 1000
    with open_ws(server) as ws:
        ws.send("crash")
        with pytest.raises(ConnectionClosedError) as err:
            ws.recv(TIMEOUT)
    assert err.value.rcvd.code == 1011 and err.value.rcvd.reason == ""
    with open_ws(server) as ws:
        ws.close(4000, "bye")
    assert rec.reason(0) == "stop"
    assert rec.reason(1)[:2] == ("crash", "error") and str(rec.reason(1)[2]) == "boom"
    assert rec.reason(2) == ("remote", 4000, b"bye")


def test_websockets_over_tls(app, rec, tls):
    """websockets' asyncio client here, not its sync one: that one reads the socket on a thread while
    another writes it, which an SSLSocket does not support before Python 3.11 (a client-side
    "[SSL] internal error" or a lost handshake answer, in one run out of ten on 3.10)."""
    import asyncio

    from websockets.asyncio.client import connect as aio_connect

    server_ctx, client_ctx = tls
    server = app(ssl_context=server_ctx, ws_options={"compress": True})
    data = os.urandom(300_000)

    async def talk() -> list:
        async with aio_connect(server.url + "/ws", ssl=client_ctx, server_hostname="localhost",
                               compression="deflate", proxy=None, open_timeout=TIMEOUT,
                               close_timeout=TIMEOUT, ping_interval=None) as ws:
            await ws.send("secure")
            first = await asyncio.wait_for(ws.recv(), TIMEOUT)
            await ws.send(data)
            return [first, await asyncio.wait_for(ws.recv(), TIMEOUT)]

    assert asyncio.run(talk()) == ["secure", data]


def test_messages_pushed_by_the_server(app, rec):
    server = app()
    with open_ws(server) as ws:
        pid = rec.pid()
        for i in range(20):
            pid.send(lambda s, i=i: ("reply", ("text", f"push {i}"), s))
        assert [ws.recv(TIMEOUT) for _ in range(20)] == [f"push {i}" for i in range(20)]
        assert cowboy_ws.broadcast("nobody-" + str(id(ws)), ("text", "x")) == 0


def test_hibernate_keeps_the_compression_context(app, rec):
    server = app(ws_options={"compress": True},
                 handle=lambda f, s: ("reply", f, s, "hibernate") if f[0] in ("text", "binary") else ("ok", s))
    with open_ws(server, compression="deflate") as ws:
        for i in range(5):  # the client keeps its window between messages (context takeover)
            text = f"repeated payload, repeated payload {i % 2}" * 50
            ws.send(text)
            assert ws.recv(TIMEOUT) == text
        ws.send(["frag ", "mented ", "and hibernating"])
        assert ws.recv(TIMEOUT) == "frag mented and hibernating"
