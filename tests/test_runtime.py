"""The runtime around the handler, over real sockets: Pids and messages, timers, process groups,
TLS, graceful shutdown, frames that come with the upgrade request, batched writes."""

from __future__ import annotations

import socket
import ssl
import threading
import time
import uuid

import pytest

import cowboy_ws
from conftest import WAIT, default_handle, wait_for
from wsclient import OP_BINARY, OP_TEXT, Client, masked

# -- Pid.send --------------------------------------------------------------------------


def reply_info(info, state):
    return ("reply", ("text", str(info)), state)


def test_pid_send_from_other_threads_keeps_each_senders_order(app, connect, rec):
    client = connect(app(info=reply_info))
    pid = rec.pid()
    assert isinstance(pid, cowboy_ws.Pid) and pid.alive

    def sender(name):
        for i in range(50):
            pid.send(f"{name}-{i}")

    threads = [threading.Thread(target=sender, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    got = [client.recv_message()[1].decode() for _ in range(100)]
    for name in ("a", "b"):
        assert [m for m in got if m.startswith(name)] == [f"{name}-{i}" for i in range(50)]
    client.expect_silence(0.05)


def test_pid_send_between_connections(app, connect, rec):
    registry: dict[int, cowboy_ws.Pid] = {}
    lock = threading.Lock()

    def ws_init(state):
        with lock:
            registry[state["conn"]] = cowboy_ws.self()
        return ("ok", state)

    def handle(frame, state):
        if frame[0] == "text" and frame[1].startswith(b"to:"):
            _, target, body = frame[1].split(b":", 2)
            with lock:
                pid = registry[int(target)]
            pid.send(("from", state["conn"], body))
            return ("reply", ("text", "sent"), state)
        return default_handle(frame, state)

    def info(msg, state):
        _tag, sender, body = msg
        return ("reply", ("text", f"{sender} says {body.decode()}"), state)

    server = app(ws_init=ws_init, handle=handle, info=info)
    alice, bob = connect(server), connect(server)
    alice.send_text("to:1:hello bob")
    assert alice.recv_message() == ("text", b"sent")
    assert bob.recv_message() == ("text", b"0 says hello bob")
    bob.send_text("to:0:hi alice")
    assert bob.recv_message() == ("text", b"sent")
    assert alice.recv_message() == ("text", b"1 says hi alice")
    # a message to a connection that is gone is dropped silently
    bob.send_close(1000)
    bob.wait_eof()
    rec.terminate(1)
    assert not registry[1].alive
    alice.send_text("to:1:anyone?")
    assert alice.recv_message() == ("text", b"sent")
    registry[1].send("from the test thread, to a dead process")
    alice.send_text("still here")
    assert alice.recv_message() == ("text", b"still here")
    assert rec.called("websocket_info", 1) == [("from", 0, b"hello bob")]


def test_self_outside_a_callback_raises():
    with pytest.raises(RuntimeError):
        cowboy_ws.self()


def test_self_is_the_connections_pid_in_every_callback(app, connect, rec):
    seen = []
    server = app(handle=lambda f, s: (seen.append(cowboy_ws.self()), ("reply", ("text", "ok"), s))[1],
                 info=lambda m, s: (seen.append(cowboy_ws.self()), ("ok", s))[1])
    client = connect(server)
    pid = rec.pid()
    client.send_text("x")
    assert client.recv_message() == ("text", b"ok")
    pid.send("y")
    rec.wait_until(lambda: len(seen) == 2)
    assert seen == [pid, pid]
    client.abort()
    rec.terminate()


# -- timers ----------------------------------------------------------------------------


def timer_handle(frame, state):
    """``after:MS:MSG`` arms a timer; ``cancel`` cancels the last one and answers what was left."""
    if frame[0] != "text":
        return ("ok", state)
    if frame[1].startswith(b"after:"):
        _, ms, msg = frame[1].split(b":", 2)
        ref = cowboy_ws.send_after(int(ms), cowboy_ws.self(), msg.decode())
        return ("reply", ("text", "armed"), dict(state, ref=ref))
    if frame[1] == b"cancel":
        return ("reply", ("text", repr(cowboy_ws.cancel_timer(state["ref"]))), state)
    return default_handle(frame, state)


def test_send_after_delivers_later(app, connect, rec):
    client = connect(app(handle=timer_handle, info=reply_info))
    start = time.monotonic()
    client.send_text("after:200:ding")
    assert client.recv_message() == ("text", b"armed")
    assert client.recv_message() == ("text", b"ding")
    assert time.monotonic() - start >= 0.19
    client.send_text("cancel")  # already fired
    assert client.recv_message() == ("text", b"False")


def test_cancel_timer_returns_ms_left_and_the_message_never_arrives(app, connect, rec):
    client = connect(app(handle=timer_handle, info=reply_info))
    client.send_text("after:500:never")
    assert client.recv_message() == ("text", b"armed")
    client.send_text("cancel")
    left = int(client.recv_message()[1])
    assert 0 < left <= 500
    client.expect_silence(0.7)
    assert rec.called("websocket_info") == []
    client.send_text("cancel")  # a second cancel: nothing left
    assert client.recv_message() == ("text", b"False")


def test_timer_of_a_closed_connection_is_dropped(app, connect, rec):
    client = connect(app(handle=timer_handle, info=reply_info))
    client.send_text("after:100:late")
    assert client.recv_message() == ("text", b"armed")
    client.send_close(1000)
    client.wait_eof()
    assert rec.reason() == ("remote", 1000, b"")
    time.sleep(0.2)
    assert rec.called("websocket_info") == []


# -- process groups --------------------------------------------------------------------


def group_app(app, group):
    def ws_init(state):
        cowboy_ws.join(group)
        return ("ok", state)

    def handle(frame, state):
        if frame[0] == "text" and frame[1].startswith(b"bcast:"):
            n = cowboy_ws.broadcast(group, ("text", frame[1][6:]))
            return ("reply", ("text", f"reached {n}"), state)
        if frame == ("text", b"leave"):
            cowboy_ws.leave(group)
            return ("reply", ("text", "left"), state)
        return default_handle(frame, state)

    return app(ws_init=ws_init, handle=handle, ws_options={"compress": True})


def next_is(client, expected):
    """``expected`` is next, and arrived once: the echo of a probe comes right after it."""
    assert client.recv_message() == expected
    client.send_text("probe")
    assert client.recv_message() == ("text", b"probe")


def test_groups_join_members_broadcast_leave(app, connect, rec):
    group = f"room-{uuid.uuid4()}"
    server = group_app(app, group)
    clients = [connect(server), connect(server), connect(server, compress=True)]
    pids = [rec.pid(i) for i in range(3)]
    assert sorted(cowboy_ws.members(group), key=lambda p: p.id) == sorted(pids, key=lambda p: p.id)
    assert group in cowboy_ws.which_groups()

    clients[0].send_text("bcast:hello all")
    for client in clients:  # the sender too, each exactly once
        assert client.recv_message() == ("text", b"hello all")
    assert clients[0].recv_message() == ("text", b"reached 3")
    for client in clients:
        client.send_text("probe")
        assert client.recv_message() == ("text", b"probe")
    assert clients[2].raw_frames[-2][2]  # the compressing member got it compressed

    clients[1].send_text("leave")
    assert clients[1].recv_message() == ("text", b"left")
    assert set(cowboy_ws.members(group)) == {pids[0], pids[2]}
    clients[2].send_text("bcast:without one")
    assert clients[2].recv_message() == ("text", b"without one")
    assert clients[2].recv_message() == ("text", b"reached 2")
    next_is(clients[0], ("text", b"without one"))
    clients[1].send_text("probe")
    assert clients[1].recv_message() == ("text", b"probe")  # nothing was queued before it

    # from a thread that is no connection's
    assert cowboy_ws.broadcast(group, ("binary", b"\x01\x02")) == 2
    next_is(clients[0], ("binary", b"\x01\x02"))
    next_is(clients[2], ("binary", b"\x01\x02"))
    assert cowboy_ws.broadcast(group, ("text", "not me"), exclude=pids[0]) == 1
    next_is(clients[2], ("text", b"not me"))
    clients[0].send_text("probe")
    assert clients[0].recv_message() == ("text", b"probe")


@pytest.mark.parametrize("server_takeover", [False, True])
def test_broadcast_compresses_once_for_members_that_share_no_context(app, connect, rec, monkeypatch,
                                                                   server_takeover):
    """Without server context takeover (the default) one compressed frame serves every compressing
    member (RFC 7692 §7.2.1); with it each member compresses with its own window.  Control frames
    broadcast to compressing members stay uncompressed pings (§6.1)."""
    from cowboy_ws.protocol.deflate import PerMessageDeflate
    calls = []
    original = PerMessageDeflate.compress

    def counting(self, data):
        calls.append(len(data))
        return original(self, data)

    monkeypatch.setattr(PerMessageDeflate, "compress", counting)
    group = f"room-{uuid.uuid4()}"

    def ws_init(state):
        cowboy_ws.join(group)
        return ("ok", state)

    server = app(ws_init=ws_init, ws_options={"compress": True,
                                               "deflate_opts": {"server_context_takeover": server_takeover}})
    squeezed = [connect(server, compress=True) for _ in range(4)]
    plain = connect(server)
    for i in range(5):
        rec.pid(i)
    text = b"all the members get the same words, " * 20
    for round_ in range(2):  # the second message too: no context carried over between them
        calls.clear()
        assert cowboy_ws.broadcast(group, ("text", text)) == 5
        for client in squeezed:
            assert client.recv_message() == ("text", text)
            assert client.raw_frames[-1][2]  # RSV1: it came compressed
        assert plain.recv_message() == ("text", text)
        assert not plain.raw_frames[-1][2]
        assert calls == [len(text)] * (4 if server_takeover else 1)
    assert cowboy_ws.broadcast(group, ("ping", b"are you there")) == 5
    for client in squeezed + [plain]:
        assert client.recv_event() == ("ping", b"are you there")
        client.send_text("probe")
        assert client.recv_message() == ("text", b"probe")


def test_dead_connection_leaves_its_groups(app, connect, rec):
    group = f"room-{uuid.uuid4()}"
    server = group_app(app, group)
    a, b = connect(server), connect(server)
    pid_a, pid_b = rec.pid(0), rec.pid(1)
    assert set(cowboy_ws.members(group)) == {pid_a, pid_b}
    b.abort()
    assert rec.reason(1) == ("error", "closed")
    assert cowboy_ws.members(group) == [pid_a]
    a.send_text("bcast:alone")
    assert a.recv_message() == ("text", b"alone")
    assert a.recv_message() == ("text", b"reached 1")
    a.send_close(1000)
    a.wait_eof()
    rec.terminate(0)
    assert cowboy_ws.members(group) == []
    assert group not in cowboy_ws.which_groups()
    assert cowboy_ws.broadcast(group, ("text", "nobody")) == 0


# -- TLS -------------------------------------------------------------------------------


def test_tls_echo(app, connect, rec, tls):
    server_ctx, client_ctx = tls
    server = app(ssl_context=server_ctx, ws_options={"compress": True})
    assert server.url.startswith("wss://127.0.0.1:")
    client = connect(server, ssl_context=client_ctx, compress=True)
    assert isinstance(client.sock, ssl.SSLSocket)
    client.send_text("over tls")
    assert client.recv_message() == ("text", b"over tls")
    big = bytes(range(256)) * 1024  # 256 KiB: many TLS records, more than one read
    client.send_binary(big)
    assert client.recv_message(10) == ("binary", big)
    client.send_raw(b"".join(masked(OP_TEXT, b"%d" % i) for i in range(20)))
    assert [client.recv_message()[1] for _ in range(20)] == [b"%d" % i for i in range(20)]
    client.send_close(1000)
    assert client.wait_close() == (1000, b"")
    assert rec.reason() == ("remote", 1000, b"")


def test_tls_frames_in_the_same_record_as_the_request(app, connect, rec, tls):
    server_ctx, client_ctx = tls
    server = app(ssl_context=server_ctx)
    client = connect(server, ssl_context=client_ctx, extra=masked(OP_TEXT, b"early"))
    assert client.recv_message() == ("text", b"early")
    client.abort()
    assert rec.reason() == ("error", "closed")


def test_tls_plain_client_is_dropped(app, rec, tls):
    server_ctx, _ = tls
    server = app(ssl_context=server_ctx)
    with socket.create_connection(("127.0.0.1", server.port), timeout=WAIT) as sock:
        sock.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.settimeout(WAIT)
        try:
            while sock.recv(4096):
                pass
        except ConnectionResetError:
            pass
    assert rec.inits == 0


# -- graceful shutdown -----------------------------------------------------------------


def test_shutdown_sends_1001_and_calls_terminate(app, connect, rec):
    server = app()
    clients = [connect(server) for _ in range(3)]
    for i in range(3):
        rec.pid(i)
    stopper = threading.Thread(target=server.shutdown, kwargs={"grace": 3})
    start = time.monotonic()
    stopper.start()
    for client in clients:  # the clients answer the Close, so shutdown need not wait out the grace
        assert client.wait_close() == (1001, b"")
        client.wait_eof()
    stopper.join(WAIT)
    assert not stopper.is_alive()
    assert time.monotonic() - start < 2.5
    assert [rec.reason(i) for i in range(3)] == ["shutdown"] * 3
    with pytest.raises(OSError):
        Client.connect(server.port, timeout=1)


def test_shutdown_grace_bounds_an_unresponsive_client(app, connect, rec):
    server = app()
    silent = connect(server)      # never reads, never answers the Close
    rec.pid()
    pending = socket.create_connection(("127.0.0.1", server.port), timeout=WAIT)  # no request at all
    try:
        start = time.monotonic()
        server.shutdown(grace=0.3)
        assert time.monotonic() - start < 3
        assert rec.reason() == "shutdown"
        pending.settimeout(WAIT)
        assert pending.recv(100) == b""  # the un-upgraded connection was closed too
    finally:
        pending.close()
    assert silent.wait_close() == (1001, b"")


# -- data that comes with the upgrade request ------------------------------------------


def test_frames_in_the_same_packet_as_the_request(app, connect, rec):
    server = app(ws_init=lambda s: ("reply", ("text", "init first"), s))
    extra = masked(OP_TEXT, b"early") + masked(OP_BINARY, b"\x00bin") + masked(OP_TEXT, b"half", fin=False)
    client = connect(server, extra=extra)
    assert client.recv_message() == ("text", b"init first")
    assert client.recv_message() == ("text", b"early")
    assert client.recv_message() == ("binary", b"\x00bin")
    client.send_raw(masked(0x0, b" done"))
    assert client.recv_message() == ("text", b"half done")
    client.send_close(1000)
    client.wait_eof()
    assert rec.reason() == ("remote", 1000, b"")


def test_close_in_the_same_packet_as_the_request(app, connect, rec):
    client = connect(app(), extra=masked(OP_TEXT, b"bye") + masked(0x8, (4002).to_bytes(2, "big")))
    assert client.recv_event() == ("text", b"bye")
    assert client.recv_event() == ("close", 4002, b"")
    assert client.recv_event() == ("eof",)
    assert rec.reason() == ("remote", 4002, b"")


def test_bad_frame_in_the_same_packet_as_the_request(app, connect, rec):
    client = connect(app(), extra=masked(0x3))
    assert client.wait_close() == (1002, b"")
    assert rec.reason() == ("error", "badframe")


# -- batched writes --------------------------------------------------------------------


class CountingSocket:
    """Wraps a connection's socket to count the reads that returned data and the sends."""

    def __init__(self, sock):
        self._sock = sock
        self.reads = 0
        self.sends = 0

    def recv(self, n):
        data = self._sock.recv(n)
        if data:
            self.reads += 1
        return data

    def recv_into(self, buf, *args):
        n = self._sock.recv_into(buf, *args)
        if n:
            self.reads += 1
        return n

    def send(self, data):
        self.sends += 1
        return self._sock.send(data)

    def sendmsg(self, buffers, *args):
        self.sends += 1
        return self._sock.sendmsg(buffers, *args)

    def __getattr__(self, name):
        return getattr(self._sock, name)


def on_loop(server, fn):
    """Run ``fn`` on the server's loop thread and return its result."""
    box, done = [], threading.Event()
    server.loop.call_soon_threadsafe(lambda: (box.append(fn()), done.set()))
    assert done.wait(WAIT)
    return box[0]


def test_64_frames_in_one_write_get_64_replies_in_one_send(app, connect, rec):
    server = app()
    client = connect(server)
    process = rec.pid()._conn

    def install():
        process.sock = CountingSocket(process.sock)
        return process.sock

    counter = on_loop(server, install)
    client.send_raw(b"".join(masked(OP_TEXT, b"msg %d" % i) for i in range(64)))
    assert [client.recv_message() for _ in range(64)] == [("text", b"msg %d" % i) for i in range(64)]
    reads, sends = on_loop(server, lambda: (counter.reads, counter.sends))
    assert reads >= 1
    assert sends == reads  # everything one read produced left in one send
    client.expect_silence(0.05)
    client.send_close(1000)
    client.wait_eof()


def test_many_concurrent_clients(app, rec):
    server = app()
    errors = []

    def run(n):
        try:
            with Client.connect(server.port) as client:
                for i in range(10):
                    client.send_text(f"{n}:{i}")
                    assert client.recv_message() == ("text", f"{n}:{i}".encode())
                client.send_close(1000)
                assert client.wait_close() == (1000, b"")
                client.wait_eof()
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT * 2)
    assert not errors
    wait_for(lambda: len(rec.terminates) == 16, what="16 terminates")
    assert all(calls[0][0] == ("remote", 1000, b"") for calls in rec.terminates.values())
