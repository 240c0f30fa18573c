"""The client (cowboy_ws.client) against our own server: the blocking API and the handler API.

Servers run in-process on 127.0.0.1 port 0 (the conftest fixtures); every wait is bounded.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from conftest import WAIT, default_handle, wait_for

import cowboy_ws
from cowboy_ws import client
from cowboy_ws.client.session import ClientSession

# -- a recorder for client handlers ------------------------------------------------------


class Calls:
    """What a client handler saw (written on the loop thread, read by the test)."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.items: list[tuple[str, Any]] = []

    def add(self, name: str, arg: Any) -> None:
        with self.cond:
            self.items.append((name, arg))
            self.cond.notify_all()

    def of(self, name: str) -> list[Any]:
        with self.cond:
            return [arg for n, arg in self.items if n == name]

    def wait(self, predicate, timeout: float = WAIT, what: str = "condition") -> None:
        with self.cond:
            if not self.cond.wait_for(predicate, timeout):
                raise AssertionError(f"timed out waiting for {what}: {self.items!r}")

    def wait_count(self, name: str, n: int = 1, timeout: float = WAIT) -> list[Any]:
        self.wait(lambda: len([1 for x, _ in self.items if x == name]) >= n, timeout, f"{n} x {name}")
        return self.of(name)


class Handler:
    """A client handler whose behaviour comes from callables in its state dict (like conftest's Scripted)."""

    @staticmethod
    def websocket_init(state):
        state["calls"].add("websocket_init", dict(n=state.get("n", 0)))
        custom = state.get("ws_init")
        return custom(state) if custom else ("ok", state)

    @staticmethod
    def websocket_handle(frame, state):
        state["calls"].add("websocket_handle", frame)
        custom = state.get("handle")
        return custom(frame, state) if custom else ("ok", state)

    @staticmethod
    def websocket_info(info, state):
        state["calls"].add("websocket_info", info)
        custom = state.get("info")
        if custom:
            return custom(info, state)
        if callable(info):
            return info(state)
        return ("ok", state)

    @staticmethod
    def terminate(reason, partial_req, state):
        state["calls"].add("terminate", (reason, partial_req, dict(state)))


@pytest.fixture
def calls():
    return Calls()


def url_of(server: cowboy_ws.Server, path: str = "/ws") -> str:
    return f"ws://127.0.0.1:{server.port}{path}"


# -- blocking API: messages -----------------------------------------------------------------


def test_echo_text_and_binary_in_every_outframe_form(app):
    server = app()
    with client.connect(url_of(server)) as ws:
        ws.send(("text", b"bytes text"))
        assert ws.recv(WAIT) == ("text", b"bytes text")
        ws.send(("text", "str text é"))
        assert ws.recv(WAIT) == ("text", "str text é".encode())
        ws.send("plain str")
        assert ws.recv(WAIT) == ("text", b"plain str")
        ws.send(b"\x00\xff")
        assert ws.recv(WAIT) == ("binary", b"\x00\xff")
        ws.send(bytearray(b"ba"))
        assert ws.recv(WAIT) == ("binary", b"ba")
        ws.send(memoryview(b"mv"))
        assert ws.recv(WAIT) == ("binary", b"mv")
        ws.send(("binary", [b"io", ["da", b"ta"]]))  # iodata
        assert ws.recv(WAIT) == ("binary", b"iodata")
        ws.send([("text", "one"), ("binary", b"two"), "three"])
        assert [ws.recv(WAIT) for _ in range(3)] == [("text", b"one"), ("binary", b"two"), ("text", b"three")]


def test_bad_frames_raise_in_the_caller_and_send_nothing(app, rec):
    server = app()
    with client.connect(url_of(server)) as ws:
        for bad in [("text", 12), ("nope", b""), ("ping", b"x" * 126), ("close", 999, b""), 3.5,
                    [("text", b"ok"), ("bogus",)]]:
            with pytest.raises(TypeError):
                ws.send(bad)
        ws.send(("text", b"after"))
        assert ws.recv(WAIT) == ("text", b"after")  # nothing of the bad list went out
    assert rec.called("websocket_handle") == [("text", b"after")]


def test_recv_returns_the_inframe_tuples_and_control_frames_on_request(app):
    server = app(info=lambda info, s: ("reply", info, s))
    with client.connect(url_of(server), control=True) as ws:
        ws.send("ping")  # the OutFrame "ping": a Ping with no payload
        assert ws.recv(WAIT) == ("pong", b"")
        ws.send(("ping", b"abc"))
        assert ws.recv(WAIT) == ("pong", b"abc")
        server_pid = None
        ws.send(("text", b"x"))
        assert ws.recv(WAIT) == ("text", b"x")
    with client.connect(url_of(server)) as ws:  # without control: pongs are not queued
        ws.send(("ping", b"abc"))
        ws.send(("text", b"y"))
        assert ws.recv(WAIT) == ("text", b"y")
    del server_pid


def test_server_pings_are_answered_without_recv(app, rec):
    server = app(handle=lambda f, s: ("reply", "ping", s) if f == ("text", b"ping me") else default_handle(f, s))
    with client.connect(url_of(server)) as ws:
        ws.send(("text", b"ping me"))
        rec.wait_until(lambda: ("websocket_handle" in [c[1] for c in rec.calls]
                                and any(a[0] == "pong" for a in rec.called("websocket_handle"))),
                       what="the server's handler to get the client's pong")


def test_ping_returns_an_event_set_by_the_pong(app):
    server = app()
    with client.connect(url_of(server)) as ws:
        events = [ws.ping(), ws.ping(b"mine"), ws.ping("str")]
        assert all(event.wait(WAIT) for event in events)
        with pytest.raises(TypeError):
            ws.ping(b"x" * 126)


def test_recv_timeout(app):
    server = app()
    with client.connect(url_of(server)) as ws:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            ws.recv(0.2)
        assert 0.15 < time.monotonic() - started < 2
        ws.send("still open")
        assert ws.recv(WAIT) == ("text", b"still open")


def test_attributes_of_the_handshake(app):
    def init(req, state):
        req.set_resp_header("sec-websocket-protocol", "v2")
        req.set_resp_header("x-hello", "there")
        return ("cowboy_websocket", req, state)

    server = app(init=init)
    with client.connect(url_of(server, "/ws?a=1"), subprotocols=["v1", "v2"], headers={"x-mine": "1"},
                        origin="http://example.com") as ws:
        assert ws.subprotocol == "v2"
        assert ("x-hello", "there") in ws.response_headers
        assert ws.extensions == []
        assert ws.url == url_of(server, "/ws?a=1")
        assert ws.remote_address[:2] == ("127.0.0.1", server.port)


def test_subprotocol_not_offered_is_refused(app):
    def init(req, state):
        req.set_resp_header("sec-websocket-protocol", "other")
        return ("cowboy_websocket", req, state)

    server = app(init=init)
    with pytest.raises(client.InvalidHandshake, match="subprotocol"):
        client.connect(url_of(server), subprotocols=["v1"])


def test_compression_negotiated_and_used(app):
    server = app(ws_options={"compress": True})
    with client.connect(url_of(server), compress=True) as ws:
        assert ws.extensions and ws.extensions[0][0] == "permessage-deflate"
        assert "client_no_context_takeover" in dict(ws.extensions[0][1])  # offered by default, echoed
        big = b"abc" * 10000
        ws.send(("binary", big))
        assert ws.recv(WAIT) == ("binary", big)
        assert ws._session.last_proc.conn.compress
    with client.connect(url_of(server), compress=True, deflate_opts={"server_max_window_bits": 10,
                                                                     "client_context_takeover": True}) as ws:
        params = dict(ws.extensions[0][1])
        assert params["server_max_window_bits"] == "10" and "client_no_context_takeover" not in params
        ws.send(("text", "x" * 5000))
        assert ws.recv(WAIT) == ("text", b"x" * 5000)
    with client.connect(url_of(server)) as ws:  # not asked for: not offered
        assert ws.extensions == []
    with pytest.raises(ValueError, match="deflate_opts"):
        client.connect(url_of(server), compress=True, deflate_opts={"level": 42})


# -- blocking API: the end ------------------------------------------------------------------


def test_local_close_code_reason_and_side(app, rec):
    server = app()
    ws = client.connect(url_of(server))
    ws.send("before")
    assert ws.recv(WAIT) == ("text", b"before")
    ws.close(4000, "bye")
    assert rec.reason() == ("remote", 4000, b"bye")
    closed = ws.closed
    assert (closed.code, closed.reason, closed.side) == (4000, b"bye", "local")
    with pytest.raises(cowboy_ws.ConnectionClosed) as info:
        ws.send("after")
    assert info.value.code == 4000
    with pytest.raises(cowboy_ws.ConnectionClosed):
        ws.recv(WAIT)
    ws.close()  # idempotent
    wait_for(ws._session.finished.is_set, what="the socket to be closed")
    assert ws._session.last_proc.sock.fileno() == -1


def test_remote_close_after_queued_messages(app):
    server = app(handle=lambda f, s: ("reply", [("text", b"one"), ("text", b"two"), ("close", 4001, b"done")], s))
    with client.connect(url_of(server)) as ws:
        ws.send("go")
        assert ws.recv(WAIT) == ("text", b"one")
        assert ws.recv(WAIT) == ("text", b"two")
        with pytest.raises(cowboy_ws.ConnectionClosed) as info:
            ws.recv(WAIT)
        assert (info.value.code, info.value.reason, info.value.side) == (4001, b"done", "remote")
        assert info.value.terminate_reason == ("remote", 4001, b"done")
        assert not info.value.ok


def test_iteration_ends_on_a_normal_close_and_raises_otherwise(app):
    server = app(handle=lambda f, s: ("reply", [f, ("close", 1000, b"")], s) if f == ("text", b"last")
                 else ("reply", [("close", 1011, b"")], s) if f == ("text", b"fail") else default_handle(f, s))
    with client.connect(url_of(server)) as ws:
        ws.send("a")
        ws.send("last")
        assert list(ws) == [("text", b"a"), ("text", b"last")]
    with client.connect(url_of(server)) as ws:
        ws.send("fail")
        with pytest.raises(cowboy_ws.ConnectionClosed):
            list(ws)


def test_server_shutdown_is_1001_going_away(app):
    server = app()
    ws = client.connect(url_of(server))
    server.shutdown(grace=1)
    with pytest.raises(cowboy_ws.ConnectionClosed) as info:
        ws.recv(WAIT)
    assert (info.value.code, info.value.side, info.value.ok) == (1001, "remote", True)
    ws.close()


def test_refused_upgrade_carries_status_headers_and_body(app):
    def init(req, state):
        req.reply(403, {"x-why": "no"}, b"go away")
        return ("ok", req, state)

    server = app(init=init)
    with pytest.raises(client.InvalidStatus) as info:
        client.connect(url_of(server))
    exc = info.value
    assert (exc.status, exc.body, exc.header("x-why")) == (403, b"go away", "no")
    assert isinstance(exc, cowboy_ws.InvalidStatus) and isinstance(exc, cowboy_ws.InvalidHandshake)
    with pytest.raises(client.InvalidStatus) as info:
        client.connect(url_of(server, "/nowhere"))
    assert info.value.status == 404


def test_bad_urls(app):
    for url in ["http//x", "ftp://host/", "ws://", "ws://host/#frag", "ws://host:99999/", 42]:
        with pytest.raises(client.InvalidURI):
            client.connect(url)  # type: ignore[arg-type]


def test_connection_refused_is_an_oserror():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ConnectionRefusedError):
        client.connect(f"ws://127.0.0.1:{port}/", proxy=None)


def test_send_from_another_thread_than_recv(app):
    server = app()
    count = 2000
    with client.connect(url_of(server)) as ws:
        received: list = []

        def reader() -> None:
            for _ in range(count):
                received.append(ws.recv(WAIT))

        thread = threading.Thread(target=reader)
        thread.start()
        senders = [threading.Thread(target=lambda k=k: [ws.send(("text", f"{k}:{i}".encode()))
                                                        for i in range(count // 4)]) for k in range(4)]
        for t in senders:
            t.start()
        for t in senders:
            t.join(WAIT * 4)
        thread.join(WAIT * 4)
        assert not thread.is_alive()
        assert len(received) == count
        for k in range(4):  # each sender's messages arrive in its order
            mine = [int(m[1].split(b":")[1]) for m in received if m[1].startswith(f"{k}:".encode())]
            assert mine == list(range(count // 4))


def test_sends_of_every_form_from_two_threads_keep_each_threads_order(app):
    """A burst mixing single messages, lists (with a ping among them) and plain str from two threads:
    the outbox frames runs of messages at once and lists one by one, and each thread's order holds."""
    server = app()
    count = 600
    with client.connect(url_of(server)) as ws:

        def sender(k: int) -> None:
            for i in range(0, count, 3):
                ws.send(("text", f"{k}:{i}".encode()))
                ws.send([("text", f"{k}:{i + 1}".encode()), "ping"])
                ws.send(f"{k}:{i + 2}")

        threads = [threading.Thread(target=sender, args=(k,)) for k in range(2)]
        for t in threads:
            t.start()
        received = [ws.recv(WAIT) for _ in range(2 * count)]
        for t in threads:
            t.join(WAIT)
        for k in range(2):
            mine = [int(m[1].split(b":")[1]) for m in received if m[1].startswith(f"{k}:".encode())]
            assert mine == list(range(count))


def test_an_answer_queued_before_a_bad_frame_leaves_before_the_close():
    """The reader answered a message and came back to recv before the loop drained the answer; the
    server's next frame is bad (RFC 6455 §7.1.7): the answer still leaves before the Close (the
    read is handled before the drain in the same loop round; Autobahn 4.2.5 under load)."""
    from test_client_hostile import RawServer, answer_close, read_frames, upgrade

    from cowboy_ws.protocol.frames import serialize_frame

    release = threading.Event()

    def script(sock, headers):
        upgrade(sock, headers)
        sock.sendall(serialize_frame(0x1, b"a"))
        assert release.wait(WAIT)
        sock.sendall(bytes([0x83, 0]))  # a reserved opcode
        got, _ = read_frames(sock, until_close=True)
        answer_close(sock, got)
        return [(opcode, payload) for opcode, _fin, _rsv1, payload in got]

    server = RawServer(script)
    try:
        ws = client.connect(server.url)
        assert ws.recv(WAIT) == ("text", b"a")
        blocked, unblock = threading.Event(), threading.Event()

        def hold_the_loop() -> None:
            blocked.set()
            unblock.wait(WAIT)

        ws._loop.call_soon_threadsafe(hold_the_loop)
        assert blocked.wait(WAIT)
        release.set()
        time.sleep(0.1)  # the bad frame reaches our socket while the loop is held
        ws.send(("text", b"a"))  # queued: its drain waits for the loop
        outcome: list = []

        def read() -> None:
            try:
                ws.recv(WAIT)
            except cowboy_ws.ConnectionClosed as exc:
                outcome.append(exc.code)

        reader = threading.Thread(target=read)
        reader.start()
        wait_for(lambda: ws._inbox.waiting, what="the reader back in recv")
        unblock.set()
        reader.join(WAIT)
        assert server.done.wait(WAIT)
        assert server.results == [[(0x1, b"a"), (0x8, (1002).to_bytes(2, "big"))]]
        assert outcome == [1002]
        ws.close()
    finally:
        server.close()


def test_a_slow_reader_stops_reading_the_socket(app):
    """Backpressure: the queue stays near max_queue; the server's sends wait in TCP and its send buffer."""
    burst = 3000

    def handle(frame, state):
        if frame == ("text", b"flood"):
            return ("reply", [("binary", b"x" * 1000)] * burst, state)
        return default_handle(frame, state)

    server = app(handle=handle)
    with client.connect(url_of(server), max_queue=50) as ws:
        ws.send("flood")
        inbox = ws._inbox
        wait_for(lambda: inbox.paused, what="the inbox to pause reading")
        time.sleep(0.3)
        assert len(inbox.queue) < 50 + 300  # at most one read's frames past the mark
        got = [ws.recv(WAIT) for _ in range(burst)]
        assert got == [("binary", b"x" * 1000)] * burst
        ws.send("still")
        assert ws.recv(WAIT) == ("text", b"still")


def test_connect_refuses_to_block_a_loop_thread(app, rec):
    results: list = []

    def ws_init(state):
        try:
            client.connect(url_of(server))
        except RuntimeError as exc:
            results.append(exc)
        return ("ok", state)

    server = app(ws_init=ws_init)
    with client.connect(url_of(server)):
        rec.wait_until(lambda: results, what="connect() to refuse")
    assert "cannot run on a loop" in str(results[0])


# -- handler API ---------------------------------------------------------------------------


def test_handler_callbacks_results_and_terminate(app, calls):
    server = app()

    def handle(frame, state):
        if frame == ("text", b"hello"):
            return ("reply", [("text", b"second")], dict(state, n=1))
        return ("stop", dict(state, n=2))

    pid = client.start(url_of(server), Handler, {"calls": calls, "handle": handle,
                                                 "ws_init": lambda s: ("reply", ("text", b"hello"), s)})
    assert isinstance(pid, cowboy_ws.Pid)
    reason, partial, state = calls.wait_count("terminate")[0]
    assert reason == "stop" and state["n"] == 2
    assert partial["url"] == url_of(server) and partial["port"] == server.port
    assert calls.of("websocket_handle") == [("text", b"hello"), ("text", b"second")]
    assert not pid.alive


def test_pid_send_from_another_thread_and_self(app, calls):
    server = app()
    seen: list = []

    def info(msg, state):
        seen.append(cowboy_ws.self())
        return ("reply", ("text", msg), state)

    def handle(frame, state):
        if frame == ("text", b"3"):
            return ("stop", state)
        return ("ok", state)

    pid = client.start(url_of(server), Handler, {"calls": calls, "info": info, "handle": handle})
    for msg in ("1", "2", "3"):  # sent before the connection is open: they wait for websocket_init
        pid.send(msg)
    calls.wait_count("terminate")
    assert calls.of("websocket_handle") == [("text", b"1"), ("text", b"2"), ("text", b"3")]
    assert calls.items.index(("websocket_init", {"n": 0})) < calls.items.index(("websocket_info", "1"))
    assert seen == [pid] * 3


def test_stop_sends_1001_and_terminates_with_shutdown(app, rec, calls):
    server = app()
    pid = client.start(url_of(server), Handler, {"calls": calls})
    calls.wait_count("websocket_init")
    client.stop(pid)
    assert calls.wait_count("terminate")[0][0] == "shutdown"
    assert rec.reason() == ("remote", 1001, b"")
    client.stop(pid)  # no-op once over


def test_handler_crash_closes_1011_without_retry(app, rec, calls):
    server = app()

    def handle(frame, state):
        raise ValueError("boom")

    pid = client.start(url_of(server), Handler, {"calls": calls, "handle": handle,
                                                 "ws_init": lambda s: ("reply", ("text", b"x"), s)},
                       {"retry": 3, "retry_timeout": 10})
    reason = calls.wait_count("terminate")[0][0]
    assert reason[:2] == ("crash", "error") and isinstance(reason[2], ValueError)
    assert rec.reason() == ("remote", 1011, b"")
    time.sleep(0.2)
    assert calls.of("websocket_init") == [{"n": 0}] and not pid.alive


def test_bad_arguments_raise_at_start():
    with pytest.raises(TypeError, match="websocket_info"):
        client.start("ws://127.0.0.1:1/", type("H", (), {"websocket_handle": staticmethod(lambda f, s: 0)}))
    with pytest.raises(ValueError, match="unknown client option"):
        client.start("ws://127.0.0.1:1/", Handler, {}, {"retyr": 1})
    with pytest.raises(ValueError, match="retry"):
        client.start("ws://127.0.0.1:1/", Handler, {}, {"retry": -1})
    with pytest.raises(client.InvalidURI):
        client.start("nope://", Handler, {})


def test_failed_first_connection_terminates_with_the_reason(calls):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client.start(f"ws://127.0.0.1:{port}/", Handler, {"calls": calls}, {"proxy": None})
    reason, _partial, _state = calls.wait_count("terminate")[0]
    assert reason == ("error", "econnrefused")
    assert calls.of("websocket_init") == []


def test_refused_upgrade_is_not_retried_unless_asked(app, rec, calls):
    def init(req, state):
        req.reply(403, {}, b"no")
        return ("ok", req, state)

    server = app(init=init)
    client.start(url_of(server), Handler, {"calls": calls}, {"retry": 5, "retry_timeout": 10})
    assert calls.wait_count("terminate")[0][0] == ("error", ("status", 403))
    assert rec.inits == 1
    calls2 = Calls()
    client.start(url_of(server), Handler, {"calls": calls2},
                 {"retry": 2, "retry_timeout": 10, "retry_refused": True})
    assert calls2.wait_count("terminate")[0][0] == ("error", ("status", 403))
    assert rec.inits == 1 + 3  # the first attempt and two retries
    assert calls.of("websocket_init") == calls2.of("websocket_init") == []


def test_reconnects_with_down_and_websocket_init_again(serve, rec, calls):
    """A lost connection: ("down", reason), a new connection, websocket_init(state) with the state it had,
    the messages sent meanwhile delivered after it; terminate once, at the end."""
    from conftest import Scripted
    routes = [("/ws", Scripted, {"rec": rec})]
    server = serve(routes)
    port = server.port

    def handle(frame, state):
        return ("ok", dict(state, n=state.get("n", 0) + 1))

    pid = client.start(f"ws://127.0.0.1:{port}/ws", Handler,
                       {"calls": calls, "handle": handle},
                       {"retry": "infinity", "retry_timeout": 50, "max_retry_timeout": 200})
    calls.wait_count("websocket_init")
    rec.pid(0).send(lambda s: ("reply", ("text", b"m"), s))      # the client's state: n = 1
    calls.wait_count("websocket_handle", 1)
    server.shutdown(grace=1)                                       # 1001 from the server
    down = calls.wait_count("websocket_info", 1)[0]
    assert down == ("down", ("remote", 1001, b""))
    pid.send("while down")
    server2 = serve(routes, port=port)
    inits = calls.wait_count("websocket_init", 2, timeout=10)
    assert inits[1] == {"n": 1}                                    # the state it had
    calls.wait(lambda: "while down" in calls.of("websocket_info"), what="the message sent while down")
    assert calls.items.index(("websocket_init", {"n": 1})) < calls.items.index(("websocket_info", "while down"))
    assert calls.of("terminate") == []
    client.stop(pid)
    assert calls.wait_count("terminate")[0][0] == "shutdown"
    time.sleep(0.1)
    assert len(calls.of("terminate")) == 1
    server2.shutdown(grace=1)


def test_retries_used_up_terminate_with_the_last_reason(app, calls):
    server = app()
    port = server.port
    pid = client.start(url_of(server), Handler, {"calls": calls}, {"retry": 2, "retry_timeout": 20})
    calls.wait_count("websocket_init")
    server.shutdown(grace=1)
    assert calls.wait_count("websocket_info")[0] == ("down", ("remote", 1001, b""))
    reason = calls.wait_count("terminate", timeout=10)[0][0]
    assert reason == ("error", "econnrefused")  # two attempts to a port nobody listens on
    assert calls.of("websocket_info") == [("down", ("remote", 1001, b""))]
    assert not pid.alive
    del port


def test_down_handler_may_stop(app, calls):
    server = app()
    client.start(url_of(server), Handler, {"calls": calls, "info": lambda i, s: ("stop", s)},
                 {"retry": 5, "retry_timeout": 20})
    calls.wait_count("websocket_init")
    server.shutdown(grace=1)
    assert calls.wait_count("terminate")[0][0] == "stop"
    assert len(calls.of("websocket_init")) == 1


def test_client_started_from_a_server_handler_runs_on_its_loop_and_closes_on_shutdown(serve, rec, calls):
    """A server's handler opens a client connection to another service: same loop, 1001 on shutdown."""
    from conftest import Scripted
    upstream = serve([("/ws", Scripted, {"rec": rec})])
    loops: list = []
    seen: dict = {}

    class Relay:
        @staticmethod
        def init(req, state):
            return ("cowboy_websocket", req, state)

        @staticmethod
        def websocket_init(state):
            seen["server_loop"] = cowboy_ws.self()._loop
            pid = client.start(f"ws://127.0.0.1:{upstream.port}/ws", Handler,
                               {"calls": calls, "ws_init": lambda s: (loops.append(cowboy_ws.self()._loop),
                                                                      ("ok", s))[1]})
            seen["client"] = pid
            return ("ok", state)

        websocket_handle = staticmethod(lambda f, s: ("ok", s))
        websocket_info = staticmethod(lambda i, s: ("ok", s))

    front = serve([("/relay", Relay, None)])
    with client.connect(url_of(front, "/relay")):
        calls.wait_count("websocket_init")
        assert loops == [seen["server_loop"]]
        assert isinstance(seen["client"]._conn, ClientSession)
        assert seen["client"]._conn in front.connections
        front.shutdown(grace=2)
        assert calls.wait_count("terminate")[0][0] == "shutdown"
    assert rec.reason() == ("remote", 1001, b"")
    assert front._stopped.wait(WAIT)


def test_client_info(app, calls):
    def init(req, state):
        req.set_resp_header("sec-websocket-protocol", "p")
        return ("cowboy_websocket", req, state)

    server = app(init=init)
    got: list = []
    pid = client.start(url_of(server), Handler, {"calls": calls,
                                                 "ws_init": lambda s: (got.append(client.info()), ("ok", s))[1]},
                       {"subprotocols": ["p"]})
    calls.wait_count("websocket_init")
    assert got[0]["subprotocol"] == "p" and got[0]["url"] == url_of(server)
    assert client.info(pid) == got[0]
    client.stop(pid)
    calls.wait_count("terminate")


# -- the client's framing shortcut ---------------------------------------------------------


def test_client_protocol_frames_are_the_reference_bytes():
    """ClientProtocol's one-expression small frame equals serialize_frame's, for every size and bit."""
    import functools
    import os

    from cowboy_ws.client.session import ClientProtocol
    from cowboy_ws.protocol.connection import Connection
    from cowboy_ws.protocol.frames import FrameParser

    keys = [os.urandom(4) for _ in range(4000)]
    for n in [*range(131), 300, 70_000]:
        data = os.urandom(n)
        fast_keys, ref_keys = iter(keys), iter(keys)
        fast = ClientProtocol("client", mask_key=functools.partial(next, fast_keys))
        ref = Connection("client", mask_key=functools.partial(next, ref_keys))
        for opcode in (0x1, 0x2) + ((0x9, 0xA) if n <= 125 else ()):
            for rsv1 in (False, True):
                frame = fast._frame(opcode, data, rsv1)
                assert frame == ref._frame(opcode, data, rsv1)
                if rsv1 and opcode >= 0x8:
                    continue  # never sent (RFC 7692 §6.1), and the parser refuses it: the bytes were compared
                parsed = FrameParser(mask_required=True, max_frame_size=None, rsv1_allowed=True).feed(frame)
                assert [(p[0], bool(p[2]), bytes(p[3])) for p in parsed] == [(opcode, rsv1, data)]
        for kind in ("text", "binary"):  # the whole message path too
            fast.send_message(kind, data)
            ref.send_message(kind, data)
            assert fast.data_to_send() == ref.data_to_send()


def test_client_protocol_frames_a_run_as_send_message_would():
    """ClientProtocol.send_messages (a run masked by one XOR) queues the bytes send_message would,
    each frame with its own key; a run with a large message takes the general path, frames intact."""
    import functools
    import os

    from cowboy_ws.client.session import ClientProtocol
    from cowboy_ws.protocol.frames import FrameParser

    keys = [os.urandom(4) for _ in range(1000)]
    run = [("text" if n % 3 else "binary", os.urandom(n)) for n in [*range(126), 0, 5, 125]]
    fast = ClientProtocol("client", mask_key=functools.partial(next, iter(keys)))
    ref = ClientProtocol("client", mask_key=functools.partial(next, iter(keys)))
    assert fast.send_messages(run) == sum(len(data) for _kind, data in run)
    for kind, data in run:
        ref.send_message(kind, data)
    assert fast.data_to_send() == ref.data_to_send()
    mixed = [("binary", b"a"), ("text", b"x" * 126), ("binary", b"b" * 70_000), ("text", b"c")]
    fast.send_messages(mixed)
    parsed = FrameParser(mask_required=True, max_frame_size=None).feed(fast.data_to_send())
    assert [(p[0], bytes(p[3])) for p in parsed] == [(2, b"a"), (1, b"x" * 126), (2, b"b" * 70_000), (1, b"c")]


def test_masking_keys_come_from_urandom_in_blocks():
    from cowboy_ws.client.session import mask_keys
    from cowboy_ws.loop import Loop

    loop = Loop()
    try:
        keys = mask_keys(loop)
        assert mask_keys(loop) is keys
        drawn = [keys() for _ in range(3000)]  # several 256-key blocks
        assert all(type(k) is bytes and len(k) == 4 for k in drawn)
        assert len(set(drawn)) > 2990  # 32-bit keys: a few collisions at most
    finally:
        loop.close()


def test_blocking_calls_refuse_to_wait_on_a_loop_thread(app, rec):
    """recv() on a loop's thread would wait for its own loop: it raises; close() only queues the Close."""
    target = app()
    ws = client.connect(url_of(target))
    outcome: list = []

    def ws_init(state):
        try:
            ws.recv(1)
        except RuntimeError as exc:
            outcome.append(exc)
        ws.close(4001)
        outcome.append("closed")
        return ("ok", state)

    other = app(ws_init=ws_init, path="/other")
    with client.connect(url_of(other, "/other")):
        rec.wait_until(lambda: len(outcome) == 2, what="the callback to finish")
    assert isinstance(outcome[0], RuntimeError) and "loop" in str(outcome[0])
    wait_for(lambda: ws.closed is not None, what="the Close queued from the loop thread")
    assert ws.closed.code == 4001


# -- connect_forever ------------------------------------------------------------------------


def test_connect_forever_yields_a_new_connection_after_each_loss(serve, rec):
    from conftest import Scripted
    routes = [("/ws", Scripted, {"rec": rec})]
    server = serve(routes)
    port = server.port
    url = f"ws://127.0.0.1:{port}/ws"
    seen: list = []
    restarted: list = []
    started = time.monotonic()
    for ws in client.connect_forever(url, retry_timeout=0.05, max_retry_timeout=0.2):
        ws.send(("text", f"hello {len(seen)}"))
        seen.append(ws.recv(WAIT))
        if len(seen) == 1:
            server.shutdown(grace=1)  # the server goes away: 1001
            with pytest.raises(cowboy_ws.ConnectionClosed) as info:
                ws.recv(WAIT)
            assert info.value.code == 1001
            restarted.append(serve(routes, port=port))  # and comes back on the same port
            continue
        break
    assert seen == [("text", b"hello 0"), ("text", b"hello 1")]
    assert ws.closed is not None and ws.closed.code == 1000  # leaving the loop closed it
    assert time.monotonic() - started < WAIT * 2


def test_connect_forever_retries_then_raises(app):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(ConnectionRefusedError):
        for _ws in client.connect_forever(f"ws://127.0.0.1:{port}/", retry=3, retry_timeout=0.05, proxy=None):
            raise AssertionError("nothing listens there")
    assert 0.05 < time.monotonic() - started < WAIT  # three delays: 25-50, 50-100, 100-200 ms

    def init(req, state):
        req.reply(404, {}, b"")
        return ("ok", req, state)

    server = app(init=init)
    started = time.monotonic()
    with pytest.raises(client.InvalidStatus) as info:  # a 4xx is raised at once
        next(iter(client.connect_forever(url_of(server), retry_timeout=5)))
    assert info.value.status == 404 and time.monotonic() - started < 2
    with pytest.raises(client.InvalidURI):
        next(iter(client.connect_forever("nope://x")))
