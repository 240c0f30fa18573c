"""The allocator settings applied by a serving process (cowboy_ws.memory)."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
import time

import pytest
from conftest import Echo, server_processes

from cowboy_ws import memory


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_tune_malloc_applies_once_and_can_be_disabled():
    """Applied once per process; COWBOY_WS_MALLOC=system leaves the allocator alone."""
    code = "from cowboy_ws import memory; print(memory.tune_malloc(), memory.tune_malloc())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert out.stdout.split() == ["True", "False"]
    env = dict(os.environ, COWBOY_WS_MALLOC="system")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, env=env)
    assert out.stdout.split() == ["False", "False"]


def _minflt(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[7])  # field 10: minor faults


def _echo_64k(port: int, count: int) -> None:
    """Echo ``count`` 64 KiB binary messages, 4 in flight, over a raw socket (bounded by timeouts)."""
    from cowboy_ws.protocol import handshake
    from cowboy_ws.protocol.frames import serialize_frame

    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(handshake.build_request(f"127.0.0.1:{port}", "/", handshake.make_key()))
        head = b""
        while b"\r\n\r\n" not in head:
            head += s.recv(4096)
        assert head.startswith(b"HTTP/1.1 101")
        frame = serialize_frame(2, os.urandom(65536), mask_key=b"abcd")
        reply = 65536 + 4
        sent = received = pending = 0
        buf = bytearray(1 << 20)
        while sent < 4:
            s.sendall(frame)
            sent += 1
        while received < count:
            pending += s.recv_into(buf)
            while pending >= reply:
                pending -= reply
                received += 1
                if sent < count:
                    s.sendall(frame)
                    sent += 1


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc" or not os.path.exists("/proc/self/stat"),
                    reason="glibc and /proc only")
def test_64k_echo_does_not_page_fault_per_message():
    """A serving process reuses heap memory for 64 KiB payloads: under 2 minor faults per message.

    With glibc's default thresholds the same echo faulted about 13 times per message here.
    """
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "cowboy_ws", "--port", str(port), "--max-frame-size", "1000000",
                             "--log-level", "WARNING"], env=dict(os.environ, COWBOY_WS_MALLOC=""))
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.05)
        _echo_64k(port, 300)  # warm up
        before = _minflt(proc.pid)
        _echo_64k(port, 2000)
        faults = _minflt(proc.pid) - before
        assert faults < 2 * 2000, faults
    finally:
        proc.terminate()
        proc.wait(10)


# -- what an idle connection holds (issue 16: RSS per idle connection, bench/c100k.py) ----------


class _Idle(Echo):
    """Returns options from ``init`` (a new merged WebSocketOptions per connection) and records terminate."""

    partials: list = []

    @staticmethod
    def init(req, state):
        return ("cowboy_websocket", req, state, {"idle_timeout": "infinity"})

    @staticmethod
    def terminate(_reason, partial_req, _state):
        _Idle.partials.append(partial_req)


def test_idle_connections_share_options_and_keep_a_compact_partial_req():
    """Two connections of one route hold one WebSocketOptions (equal options, frozen), the default
    partial Req as a tuple of shared strings, and no mailbox until a message comes; ``terminate``
    still gets the partial Req as a dict of the default fields (Cowboy's req_filter)."""
    import cowboy_ws
    from cowboy_ws.req import DEFAULT_REQ_FILTER_FIELDS

    sys.path.insert(0, os.path.dirname(__file__))
    from wsclient import Client

    _Idle.partials.clear()
    server = cowboy_ws.Server([("_", _Idle, None)], port=0).start()
    try:
        with Client.connect(server.port, "/a?x=1") as one, Client.connect(server.port, "/a?x=1") as two:
            for client in (one, two):
                client.send_text("hi")
                assert client.recv_event() == ("text", b"hi")
            first, second = server_processes(server)
            assert first.opts is second.opts and first.opts.idle_timeout is None
            assert type(first._partial_req) is not dict
            mine, theirs = first.partial_req, second.partial_req  # new dicts of the values kept
            for field in ("method", "version", "host", "path", "qs"):
                assert mine[field] is theirs[field], field  # one str object for every connection
            assert mine["peer"][0] is theirs["peer"][0]
            assert first._mailbox is None
    finally:
        server.shutdown(grace=1)
    assert len(_Idle.partials) == 2
    for partial in _Idle.partials:
        assert type(partial) is dict and tuple(partial) == DEFAULT_REQ_FILTER_FIELDS
        assert partial["path"] == "/a" and partial["qs"] == "x=1" and partial["method"] == "GET"
        assert partial["host"] == "127.0.0.1" and partial["peer"][0] == "127.0.0.1"


def test_group_members_are_found_by_number_without_a_weak_reference_each():
    """A member costs its group's entry and its own entry of groups (the group itself when it is in
    one), no weak reference: a message from another node finds it by number through its groups, and
    still after it left them alive (its number went out with the join); after its exit, nothing."""
    from cowboy_ws import process

    def new_pid():
        return process.Pid(object(), object())  # any live connection: join only needs one

    one, two = new_pid(), new_pid()
    try:
        process.join("c100k", one)
        process.join("c100k", two)
        assert process._groups._of[one.id] == "c100k"
        assert process._registry.get(one.id) is None
        assert process.local_pid(one.id) is one
        assert process.pid_from_ref(process.node(), one.id) is one
        process.join(("room", 1), one)
        assert process._groups._of[one.id] == ["c100k", ("room", 1)]
        process.leave("c100k", one)
        assert process._groups._of[one.id] == ("room", 1)
        assert process.local_members("c100k") == [two]
        process.leave(("room", 1), one)
        assert one.id not in process._groups._of
        assert process.local_pid(one.id) is one  # left alive: still found by number
        two._exit()
        assert process.local_pid(two.id) is None and process.local_members("c100k") == []
    finally:
        one._exit()
        two._exit()


def test_partial_req_strings_are_shared_in_a_bounded_table(monkeypatch):
    """Equal strings of partial Reqs are one object, but what a peer chooses (a path, a host) cannot
    grow the table without bound, nor a long string stay in it (no sys.intern: immortal on 3.12)."""
    from cowboy_ws import websocket

    monkeypatch.setattr(websocket, "_SHARED", {})
    def fresh(text: str) -> str:  # an equal string, not the same object (no constant folding)
        return "".join(list(text))

    first = websocket._shared(fresh("/chat"))
    assert first == "/chat" and websocket._shared(fresh("/chat")) is first
    peer = websocket._shared((fresh("10.0.0.1"), 5000))
    assert websocket._shared((fresh("10.0.0.1"), 6000))[0] is peer[0]
    long = "/" + "y" * websocket._SHARED_LEN
    assert websocket._shared(long) == long and long not in websocket._SHARED
    for i in range(websocket._SHARED_MAX * 2):
        assert websocket._shared(f"/p{i}") == f"/p{i}"
    assert len(websocket._SHARED) == websocket._SHARED_MAX
