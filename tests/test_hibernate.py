"""Hibernation (Cowboy's ``hibernate``): an idle connection releases what it can rebuild, and still works."""

from __future__ import annotations

import os
import sys

import pytest
from websockets.sync.client import connect

import cowboy_ws
from cowboy_ws.protocol.frames import OP_TEXT

sys.path.insert(0, os.path.dirname(__file__))
from conftest import server_processes  # noqa: E402
from wsclient import Client, masked  # noqa: E402


class Sleepy:
    """Echoes, hibernating after every callback; a "ping-me" text makes it message itself."""

    @staticmethod
    def init(req, state):
        return ("cowboy_websocket", req, state)

    @staticmethod
    def websocket_init(state):
        return ("ok", state, "hibernate")

    @staticmethod
    def websocket_handle(frame, state):
        if frame == ("text", b"ping-me"):
            cowboy_ws.self().send("from mailbox")
            return ("ok", state, "hibernate")
        return ("reply", frame, state, "hibernate")

    @staticmethod
    def websocket_info(info, state):
        return ("reply", ("text", info), state, "hibernate")


def test_hibernated_connection_drops_queues_and_keeps_working():
    """After a hibernate result the mailbox and send queue are released; messages still flow both ways."""
    server = cowboy_ws.Server([("_", Sleepy, None)], port=0).start()
    try:
        with connect(server.url, open_timeout=5, close_timeout=5) as ws:
            ws.send("hello")
            assert ws.recv(timeout=5) == "hello"
            [process] = server_processes(server)
            assert process._mailbox is None and process.sendbuf.parts is None
            assert process.conn._parser is None  # no frame half received: the next read makes one
            ws.send("ping-me")
            assert ws.recv(timeout=5) == "from mailbox"
            ws.send(b"\x00" * 200_000)  # a large reply may need the send queue again
            assert ws.recv(timeout=5) == b"\x00" * 200_000
            [process] = server_processes(server)
            assert process._mailbox is None and process.sendbuf.parts is None
    finally:
        server.shutdown(grace=1)


def test_hibernate_keeps_a_half_received_frame():
    """A read that ends inside a frame (RFC 6455 §5.2: frames may arrive in pieces) and whose whole
    messages hibernate the handler keeps the parser with those bytes: the frame completes intact."""
    server = cowboy_ws.Server([("_", Sleepy, None)], port=0).start()
    try:
        with Client.connect(server.port, "/") as client:
            second = masked(OP_TEXT, b"the second message")
            client.send_raw(masked(OP_TEXT, b"first") + second[:9])  # one segment on loopback: one read
            assert client.recv_event() == ("text", b"first")
            client.send_raw(second[9:])
            assert client.recv_event() == ("text", b"the second message")
            [process] = server_processes(server)
            assert process.conn._parser is None
    finally:
        server.shutdown(grace=1)


SUBSCRIBE = '{"type": "subscribe", "channel": "orders", "filters": ["book", "trades"]}'


def test_hibernated_deflate_connection_keeps_window_not_inflater():
    """RFC 7692 §7.2.2: with client context takeover, a hibernated connection that has inflated
    little holds its window as bytes instead of a decompressor, and messages that refer back to
    earlier ones (built here so that a fresh inflater could not decode them) still echo."""
    server = cowboy_ws.Server([("_", Sleepy, None)], port=0, ws_options={"compress": True}).start()
    try:
        with Client.connect(server.port, "/", compress=True) as client:
            codec = client.conn.deflate
            assert codec is not None and not codec.params.client_no_context_takeover
            sent = [SUBSCRIBE, SUBSCRIBE, SUBSCRIBE.replace("orders", "trades"), "", SUBSCRIBE + SUBSCRIBE]
            for i, text in enumerate(sent):
                payload = codec.compress(text.encode())
                if i == 1:
                    assert len(payload) < 12  # nothing but a back-reference to the first message
                client.send_raw(masked(OP_TEXT, payload, rsv1=True))
                assert client.recv_event() == ("text", text.encode())
                [process] = server_processes(server)
                deflate = process.conn.deflate
                assert deflate is not None and deflate._inflater is None
                assert 0 < deflate.memory_estimate() < 1024  # the kept output, no zlib object
            # A fragmented compressed message: hibernating between its frames keeps the inflater.
            payload = codec.compress(SUBSCRIBE.encode())
            client.send_raw(masked(OP_TEXT, payload[:4], rsv1=True, fin=False))
            client.send_ping(b"1")
            assert client.recv_event() == ("pong", b"1")
            assert client.recv_event() == ("ping", b"1")  # Sleepy echoes every frame
            [process] = server_processes(server)
            assert process.conn.deflate._inflater is not None
            client.send_raw(masked(0, payload[4:]))
            event = client.recv_event()
            while event[0] in ("ping", "pong"):  # the echo of our automatic pong, maybe
                event = client.recv_event()
            assert event == ("text", SUBSCRIBE.encode())
            [process] = server_processes(server)
            assert process.conn.deflate._inflater is None
    finally:
        server.shutdown(grace=1)


@pytest.mark.parametrize("size", [100, 20_000])
def test_hibernated_deflate_interop(size):
    """The websockets client (stdlib zlib, context takeover) against a server hibernating after
    every message: under and past the history bound, repeated messages echo intact."""
    server = cowboy_ws.Server([("_", Sleepy, None)], port=0, ws_options={"compress": True}).start()
    try:
        with connect(server.url, open_timeout=5, close_timeout=5, compression="deflate") as ws:
            assert ws.response.headers["Sec-WebSocket-Extensions"].startswith("permessage-deflate")
            text = (SUBSCRIBE * (size // len(SUBSCRIBE) + 1))[:size]
            for i in range(6):
                message = text if i % 2 else f"{i}{text}"
                ws.send(message)
                assert ws.recv(timeout=5) == message
            [process] = server_processes(server)
            assert (process.conn.deflate._inflater is None) == (size == 100)
    finally:
        server.shutdown(grace=1)
