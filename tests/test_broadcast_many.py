"""A broadcast to many members on this thread: the idle ones written in one C call (send_broadcast_all)."""

from __future__ import annotations

import socket
import threading

import pytest
from conftest import wait_for
from wsclient import masked

import cowboy_ws
from cowboy_ws import process
from cowboy_ws.examples import echo
from cowboy_ws.options import WebSocketOptions
from cowboy_ws.protocol.connection import Connection
from cowboy_ws.websocket import WebSocketProcess


def test_broadcast_to_many_members_busy_and_gone_ones_included():
    server = cowboy_ws.Server([("/", echo, None)], host="127.0.0.1", port=0)
    server.loop.thread_id = threading.get_ident()
    peers, procs = [], []
    try:
        for i in range(40):
            a, b = socket.socketpair()
            a.setblocking(False)
            b.settimeout(5)
            proc = WebSocketProcess(server, a, echo, None, {}, WebSocketOptions(idle_timeout="infinity"),
                                    Connection("server"), f"m{i}")
            proc.start(b"", b"")
            process.join("many", proc.pid)
            peers.append(b)
            procs.append(proc)
        server.loop.flush_dirty()
        procs[3].conn.send_text(b"queued first")   # busy: its broadcast goes behind what is queued
        peers[5].close()                           # gone: the write fails, the flush closes it
        assert cowboy_ws.broadcast("many", ("text", b"hello")) == 40
        server.loop.flush_dirty()
        frame = bytes((0x81, 5)) + b"hello"
        for i, peer in enumerate(peers):
            if i == 5:
                continue
            want = (bytes((0x81, 12)) + b"queued first" if i == 3 else b"") + frame
            got = b""
            while len(got) < len(want):
                got += peer.recv(100)
            assert got == want
        assert procs[5].phase == "closed"
    finally:
        for proc in procs:
            proc._finish()
        for peer in peers:
            peer.close()
        server.sock.close()
        server.loop.close()


def _room_init(state):
    cowboy_ws.join("room")
    return ("ok", state)


def _room_handle(frame, state):
    """``b``: broadcast to the room (this connection is a member); anything else: echoed."""
    if frame == ("text", b"b"):
        cowboy_ws.broadcast("room", ("text", b"B"))
        return ("ok", state)
    return ("reply", frame, state)


@pytest.mark.parametrize("members", [1, 20])  # 20: the one-C-call path for the idle members
def test_a_handlers_broadcast_to_its_own_group_keeps_its_order(app, connect, members):
    """Messages read in one go: the reply to the first leaves before the broadcast the second one
    makes (the sender is a member), and the reply to the third after it, as if each were handled
    alone (Cowboy: a process's frames leave in the order its callbacks produce them)."""
    server = app(ws_init=_room_init, handle=_room_handle)
    clients = [connect(server) for _ in range(members)]
    sender = clients[0]
    wait_for(lambda: len(process.members("room")) == members, what="every client in the room")
    sender.send_raw(masked(0x1, b"r1") + masked(0x1, b"b") + masked(0x1, b"r2"))
    assert [sender.recv_message() for _ in range(3)] == [("text", b"r1"), ("text", b"B"), ("text", b"r2")]
    for other in clients[1:]:
        assert other.recv_message() == ("text", b"B")
