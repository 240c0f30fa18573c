"""A broadcast to many members on this thread: the idle ones written in one C call (send_broadcast_all)."""

from __future__ import annotations

import socket
import threading

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
