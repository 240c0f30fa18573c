"""Hibernation (Cowboy's ``hibernate``): an idle connection releases what it can rebuild, and still works."""

from __future__ import annotations

import threading

from websockets.sync.client import connect

import cowboy_ws
from cowboy_ws.websocket import WebSocketProcess


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


def _processes(server):
    box, done = [], threading.Event()

    def look():
        box.extend(c for c in server.connections if isinstance(c, WebSocketProcess))
        done.set()

    server.loop.call_soon_threadsafe(look)
    assert done.wait(5)
    return box


def test_hibernated_connection_drops_queues_and_keeps_working():
    """After a hibernate result the mailbox and send queue are released; messages still flow both ways."""
    server = cowboy_ws.Server([("_", Sleepy, None)], port=0).start()
    try:
        with connect(server.url, open_timeout=5, close_timeout=5) as ws:
            ws.send("hello")
            assert ws.recv(timeout=5) == "hello"
            [process] = _processes(server)
            assert process._mailbox is None and process._pending is None
            ws.send("ping-me")
            assert ws.recv(timeout=5) == "from mailbox"
            ws.send(b"\x00" * 200_000)  # a large reply may need the send queue again
            assert ws.recv(timeout=5) == b"\x00" * 200_000
            [process] = _processes(server)
            assert process._mailbox is None and process._pending is None
    finally:
        server.shutdown(grace=1)
