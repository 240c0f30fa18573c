"""The connection lifecycle and fault containment (issue: handler runtime, second pass).

Each finding of the audit against cowboy_websocket(3) has a test here, over real
sockets: a handler's SystemExit ends its connection only; an error out of the
protocol layer closes 1011 and calls terminate; set_options and init options as
Cowboy 2.18 takes them; terminate right after the Close is queued; terminate on
every failed-request path; a reply list checked whole before anything is sent;
handlers checked when routes are compiled; bounded error messages.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

import cowboy_ws
from conftest import WAIT, Scripted, wait_for
from wsclient import OP_TEXT, Client, http_request, masked
from cowboy_ws import lifecycle
from cowboy_ws.examples import echo
from cowboy_ws.handler import HandlerError, check_handler
from cowboy_ws.options import WebSocketOptions
from cowboy_ws.protocol.connection import Connection
from cowboy_ws.protocol.frames import FrameParser


def upgraded(server: cowboy_ws.Server) -> list:
    return [c for c in list(server.connections) if isinstance(c, cowboy_ws.websocket.WebSocketProcess)]


def request(port: int, path: str = "/ws") -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()


# -- 1. SystemExit (any BaseException but KeyboardInterrupt) ends that connection only -----------


class Exit(BaseException):
    """A BaseException that is not an Exception (like SystemExit and GeneratorExit)."""


@pytest.mark.parametrize("exc", [SystemExit(3), GeneratorExit(), Exit("custom")], ids=lambda e: type(e).__name__)
@pytest.mark.parametrize("where", ["websocket_handle", "websocket_info", "websocket_init"])
def test_exit_in_a_callback_crashes_that_connection_only(app, connect, rec, exc, where):
    def boom(*_args):
        raise exc

    def handle(frame, state):
        if frame == ("text", b"exit"):
            boom()
        return ("reply", frame, state) if frame[0] in ("text", "binary") else ("ok", state)

    def info(msg, state):
        if msg == "exit":
            boom()
        return ("ok", state)

    def ws_init(state):
        if state["conn"] == 1 and where == "websocket_init":
            boom()
        return ("ok", state)

    server = app(handle=handle, info=info, ws_init=ws_init)
    bystander = connect(server)
    rec.pid(0)
    victim = connect(server)
    if where == "websocket_handle":
        victim.send_text("exit")
    elif where == "websocket_info":
        rec.pid(1).send("exit")
    assert victim.wait_close() == (1011, b"")
    victim.wait_eof()
    reason = rec.reason(1)
    assert reason[:2] == ("crash", "exit") and reason[2] is exc
    # everyone else is still served, and new clients too
    bystander.send_text("still here")
    assert bystander.recv_message() == ("text", b"still here")
    late = connect(server)
    late.send_text("late")
    assert late.recv_message() == ("text", b"late")
    assert server._thread.is_alive()


def test_exit_in_terminate_and_init_is_contained(serve, connect, rec):
    class Handler(Scripted):
        @staticmethod
        def init(req, state):
            if req.path == "/init-exit":
                state["rec"].new_conn()
                raise SystemExit(1)
            return Scripted.init(req, state)

        @staticmethod
        def terminate(reason, partial_req, state):
            Scripted.terminate(reason, partial_req, state)
            raise SystemExit(2)

    server = serve([("/init-exit", Handler, {"rec": rec}), ("/ws", Handler, {"rec": rec})])
    resp, _ = http_request(server.port, request(server.port, "/init-exit"))
    assert resp.status == 500
    assert rec.reason(0)[:2] == ("crash", "exit")  # terminate after init crashed (it raised SystemExit too)
    client = connect(server)
    client.send_close(1000)
    assert client.wait_close() == (1000, b"")
    assert rec.reason(1) == ("remote", 1000, b"")
    other = connect(server)
    other.send_text("x")
    assert other.recv_message() == ("text", b"x")


SIGINT_SERVER = textwrap.dedent("""
    import sys, cowboy_ws

    class Echo:
        @staticmethod
        def init(req, state):
            return ("cowboy_websocket", req, state)
        @staticmethod
        def websocket_handle(frame, state):
            return ("reply", frame, state)
        @staticmethod
        def websocket_info(info, state):
            return ("ok", state)

    server = cowboy_ws.Server([("/ws", Echo, None)], port=0, shutdown_grace=3)
    print(server.port, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("interrupted", flush=True)
        sys.exit(0)
""")


def test_keyboard_interrupt_closes_everyone_with_1001(tmp_path):
    script = tmp_path / "server.py"
    script.write_text(SIGINT_SERVER)
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    try:
        port = int(proc.stdout.readline())
        clients = [Client.connect(port) for _ in range(3)]
        for client in clients:
            client.send_text("hi")
            assert client.recv_message() == ("text", b"hi")
        proc.send_signal(signal.SIGINT)  # no signal handler installed: KeyboardInterrupt in the loop
        for client in clients:
            assert client.wait_close() == (1001, b"")
        assert proc.wait(WAIT) == 0
        assert proc.stdout.read().strip() == "interrupted"
    finally:
        proc.kill()
        proc.wait()


# -- 2. an unexpected error of the protocol layer: 1011, terminate once, fds released -----------------


def test_protocol_layer_bug_closes_1011_and_calls_terminate(app, connect, rec, monkeypatch):
    real = Connection.receive_data

    def buggy(self, data):
        if b"trigger" in bytes(data) or (self.role == "server" and _unmasked_contains(data, b"trigger")):
            raise RuntimeError("bug in the protocol layer")
        return real(self, data)

    monkeypatch.setattr(Connection, "receive_data", buggy)
    server = app()
    client = connect(server)
    rec.pid(0)
    client.send_text("trigger")
    assert client.wait_close() == (1011, b"")
    reason = rec.reason(0)
    assert reason[:2] == ("crash", "error") and str(reason[2]) == "bug in the protocol layer"
    client.wait_eof()  # the client answered the server's Close
    wait_for(lambda: not upgraded(server), what="the connection released")
    assert server.open_connections == 0


def _unmasked_contains(data, needle: bytes) -> bool:
    frames = FrameParser(mask_required=True, max_frame_size=None).feed(bytes(data))
    return any(needle in frame[-1] for frame in frames)


# -- 3. options as Cowboy 2.18 takes them -------------------------------------------------------


def test_set_options_ignores_keys_it_does_not_handle(app, connect, rec):
    def handle(frame, state):
        if frame == ("text", b"set"):
            return ([("set_options", {"compress": True, "no_such_key": 1, "idle_timeout": 60000}),
                     ("text", "set")], state)
        return ("reply", frame, state)

    server = app(handle=handle)
    client = connect(server)
    client.send_text("set")
    assert client.recv_message() == ("text", b"set")
    client.send_text("after")
    assert client.recv_message() == ("text", b"after")
    client.send_close(1000)
    assert client.wait_close() == (1000, b"")
    assert rec.reason() == ("remote", 1000, b"")


def test_idle_timeout_zero_from_set_options(app, connect, rec):
    server = app(handle=lambda frame, state: ([("set_options", {"idle_timeout": 0})], state))
    client = connect(server)
    client.send_text("go")
    assert client.wait_close() == (1000, b"")
    assert rec.reason() == "timeout"


def test_max_frame_size_zero_allows_only_empty_frames(app, connect, rec):
    server = app(opts={"max_frame_size": 0})
    client = connect(server)
    client.send_text("")
    assert client.recv_message() == ("text", b"")
    client.send_text("x")
    assert client.wait_close() == (1009, b"")
    assert rec.reason() == ("error", "badsize")


def test_cowboy_init_options_are_accepted(app, connect, rec):
    opts = {"active_n": 100, "data_delivery": "emit_message", "data_delivery_flow": 10,
            "dynamic_buffer": (1024, 131072), "dynamic_buffer_initial_average": 0,
            "dynamic_buffer_initial_size": 1024, "validate_utf8": False, "compress": True,
            "deflate_opts": {"level": 6}, "idle_timeout": "infinity", "max_frame_size": "infinity"}
    server = app(opts=opts)
    client = connect(server, compress=True, validate_utf8=False)
    assert client.extensions  # compress took effect
    client.send_raw(masked(OP_TEXT, b"\xff\xfe"))  # validate_utf8 False took effect
    assert client.recv_message() == ("text", b"\xff\xfe")
    client.send_close(1000)
    assert client.wait_close() == (1000, b"")


@pytest.mark.parametrize("opts, words", [
    ({"compress": "yes"}, ["compress", "True or False", "'yes'"]),
    ({"idle_timeout": -1}, ["idle_timeout", "'infinity'", "-1"]),
    ({"active_n": 0}, ["active_n", ">= 1"]),
    ({"data_delivery": "carrier pigeon"}, ["data_delivery", "emit_message"]),
    ({"deflate_opts": {"level": 42}}, ["deflate_opts", "level"]),
    ({"no_such_option": 1}, ["no_such_option", "known:"]),
])
def test_bad_init_options_answer_500_and_terminate(app, rec, opts, words):
    server = app(opts=opts)
    resp, _ = http_request(server.port, request(server.port))
    assert resp.status == 500
    reason = rec.reason(0)
    assert reason[:2] == ("crash", "error") and isinstance(reason[2], ValueError)
    for word in words:
        assert word in str(reason[2]), (word, str(reason[2]))


def test_options_normalized_once():
    opts = WebSocketOptions().merged({"idle_timeout": "infinity", "max_frame_size": 0, "ping_interval": "infinity"})
    assert (opts.idle_timeout, opts.max_frame_size, opts.ping_interval) == (None, 0, None)
    assert WebSocketOptions(idle_timeout=0).idle_timeout == 0
    assert dict(WebSocketOptions().merged({"active_n": 5}).ignored) == {"active_n": 5}
    with pytest.raises(ValueError, match="max_send_buffer"):
        WebSocketOptions(max_send_buffer=0)
    with pytest.raises(ValueError, match="validate_utf8"):
        WebSocketOptions(validate_utf8=1)


# -- 4. terminate right after the Close is queued, whatever the peer does -------------------------------


@pytest.mark.parametrize("how", ["stop", "close_frame", "crash"])
def test_terminate_runs_before_the_peer_answers_the_close(app, rec, how):
    results = {"stop": lambda s: ("stop", s), "close_frame": lambda s: ([("close", 4000, b"bye")], s)}

    def handle(frame, state):
        if how == "crash":
            raise RuntimeError("boom")
        return results[how](state)

    server = app(handle=handle, ws_options={"close_timeout": 30_000})
    client = Client.connect(server.port)
    try:
        rec.pid(0)
        client.send_text("go")
        sent = time.monotonic()
        reason = rec.reason(0, timeout=WAIT)  # long before close_timeout (30 s): the peer never answered
        assert time.monotonic() - sent < WAIT
        assert reason == {"stop": "stop", "close_frame": "stop"}.get(how, reason)
        # read the Close without answering it: the handler is gone, the transport still waits
        frames: list = []
        parser = FrameParser(mask_required=False)
        deadline = time.monotonic() + WAIT
        while not frames and time.monotonic() < deadline:
            client.sock.settimeout(deadline - time.monotonic())
            frames += parser.feed(client.sock.recv(4096))
        assert frames[-1][0] == 0x8
        code = int.from_bytes(frames[-1][-1][:2], "big")
        assert code == {"stop": 1000, "close_frame": 4000, "crash": 1011}[how]
        [process] = upgraded(server)
        # our Close and FIN are out (the server thread may still be between the two): waiting for the peer's
        wait_for(lambda: process.phase == lifecycle.DRAINING, what="draining")
        client.send_close(code)  # now the peer answers: the server closes at once
        wait_for(lambda: not upgraded(server), what="the connection closed after the peer's Close")
    finally:
        client.abort()


# -- 5. terminate on every failed-request path ----------------------------------------------


@pytest.mark.parametrize("init, check", [
    (lambda req, state: ("cowboy_websocket",), lambda exc: "expected ('cowboy_websocket'" in str(exc)),
    (lambda req, state: "nonsense", lambda exc: "'nonsense'" in str(exc)),
    (lambda req, state: ("ok", req), lambda exc: "('ok', req, state)" in str(exc)),
    (lambda req, state: ("cowboy_websocket", req, state, {"req_filter": _raising_filter}),
     lambda exc: str(exc) == "filter bug"),
    (lambda req, state: ("cowboy_websocket", req, state, {"compress": "yes"}), lambda exc: "compress" in str(exc)),
], ids=["short_tuple", "not_a_tuple", "ok_without_state", "req_filter_raises", "bad_options"])
def test_failed_request_paths_call_terminate_once(app, rec, init, check):
    server = app(init=init)
    resp, _ = http_request(server.port, request(server.port))
    assert resp.status == 500
    reason = rec.reason(0)
    assert reason[:2] == ("crash", "error") and check(reason[2]), reason
    time.sleep(0.05)
    assert len(rec.terminates[0]) == 1


def _raising_filter(req):
    raise RuntimeError("filter bug")


def test_init_only_handler_asking_for_an_upgrade_gets_500_and_terminate(serve, rec):
    class HttpOnly:
        @staticmethod
        def init(req, state):
            rec.new_conn()
            return ("cowboy_websocket", req, state)

        @staticmethod
        def terminate(reason, partial_req, state):
            rec.record(0, "terminate", (reason, partial_req, state))

    server = serve([("/ws", HttpOnly, None)])
    resp, _ = http_request(server.port, request(server.port))
    assert resp.status == 500
    reason = rec.reason(0)
    assert reason[:2] == ("crash", "error") and "websocket_handle" in str(reason[2])


# -- 6. a reply list is checked whole before anything is sent ---------------------------------------


@pytest.mark.parametrize("bad", [("text", 42), ("close", 999, b""), ("ping", b"x" * 126), "bogus",
                                 ("active", "yes")])
def test_bad_frame_anywhere_in_a_list_sends_nothing_of_it(app, connect, rec, bad):
    def handle(frame, state):
        if frame == ("text", b"go"):
            if bad[0] == "active":
                return ([("text", b"first"), bad], state)
            return ("reply", [("text", b"first"), ("binary", b"second"), bad], state)
        return ("reply", frame, state)

    server = app(handle=handle)
    client = connect(server)
    client.send_text("go")
    assert client.wait_close() == (1011, b"")
    assert not [f for f in client.raw_frames if f[0] in (0x1, 0x2)], client.raw_frames
    assert rec.reason()[:2] == ("crash", "error")


# -- 7. handlers are checked when routes are compiled ----------------------------------------------


class NoInfo:
    @staticmethod
    def init(req, state):
        return ("cowboy_websocket", req, state)

    @staticmethod
    def websocket_handle(frame, state):
        return ("ok", state)


class InstanceMethods:
    def init(self, req, state):
        return ("cowboy_websocket", req, state)

    def websocket_handle(self, frame, state):
        return ("reply", frame, state)

    def websocket_info(self, info, state):
        return ("ok", state)


class NotCallable(NoInfo):
    websocket_info = "not a function"


@pytest.mark.parametrize("handler, words", [
    (NoInfo, ["NoInfo", "websocket_info"]),
    (InstanceMethods, ["InstanceMethods", "init", "pass an instance", "InstanceMethods()"]),
    (NotCallable, ["NotCallable", "websocket_info", "not callable"]),
    (object(), ["object instance", "init"]),
])
def test_bad_handlers_are_refused_at_start_up(handler, words):
    for build in (lambda: cowboy_ws.Router([("/ws", handler, None)]),
                  lambda: cowboy_ws.Server([("/ws", handler, None)], port=0)):
        with pytest.raises(HandlerError) as info:
            build()
        for word in words:
            assert word in str(info.value), (word, str(info.value))


def test_an_instance_with_methods_serves(serve, rec):
    server = serve([("/ws", InstanceMethods(), None)])
    client = Client.connect(server.port)
    try:
        client.send_text("hello")
        assert client.recv_message() == ("text", b"hello")
    finally:
        client.abort()


def test_check_handler_accepts_the_usual_forms():
    class Static:
        @staticmethod
        def init(req, state):
            return ("ok", req, state)

    class Functions:  # a class whose functions take no self (called on the class)
        def init(req, state):
            return ("ok", req, state)

        def websocket_handle(frame, state):
            return ("ok", state)

        def websocket_info(info, state):
            return ("ok", state)

    for handler in (Static, Functions, Scripted, InstanceMethods(), echo):
        assert check_handler(handler) is handler


# -- 8. error messages for bad results are bounded and list the accepted shapes ------------------------


def test_bad_result_message_lists_shapes_and_truncates_state(app, connect, rec, caplog):
    big_state = {"blob": "x" * 100_000, "items": list(range(10_000))}

    def handle(frame, state):
        return ("okay", dict(state, **big_state))

    server = app(handle=handle)
    client = connect(server)
    with caplog.at_level(logging.ERROR, logger="cowboy_ws"):
        client.send_text("go")
        assert client.wait_close() == (1011, b"")
        reason = rec.reason()
    message = str(reason[2])
    assert '("ok", state[, "hibernate"])' in message and '("stop", state)' in message
    assert len(message) < 1000
    assert all(len(r.getMessage()) < 2000 for r in caplog.records)


# -- the lifecycle table itself -------------------------------------------------------------


def test_transition_table():
    assert lifecycle.check_transition(lifecycle.OPEN, lifecycle.CLOSING) == lifecycle.CLOSING
    with pytest.raises(lifecycle.LifecycleError):
        lifecycle.check_transition(lifecycle.CLOSED, lifecycle.OPEN)
    with pytest.raises(lifecycle.LifecycleError):
        lifecycle.check_transition(lifecycle.DRAINING, lifecycle.OPEN)
    # every phase but closed can end in closed; nothing leaves closed
    assert all(lifecycle.CLOSED in lifecycle.TRANSITIONS[p] for p in lifecycle.TRANSITIONS if p != lifecycle.CLOSED)
    assert not lifecycle.TRANSITIONS[lifecycle.CLOSED]
    assert lifecycle.crash_class(ValueError()) == "error"
    assert lifecycle.crash_class(SystemExit()) == "exit"


def test_phases_over_a_connection(app, rec):
    server = app()
    client = Client.connect(server.port)
    try:
        rec.pid(0)
        [process] = upgraded(server)
        assert process.phase == lifecycle.OPEN
        client.send_close(1000)
        assert client.wait_close() == (1000, b"")
        client.wait_eof()
        client.abort()
        wait_for(lambda: process.phase == lifecycle.CLOSED, what="closed")
        assert rec.reason() == ("remote", 1000, b"")
    finally:
        client.abort()


def test_no_socket_left_after_a_crash(app, connect, rec):
    server = app(handle=lambda frame, state: 1 / 0)
    client = connect(server)
    client.send_text("go")
    assert client.wait_close() == (1011, b"")
    client.wait_eof()
    wait_for(lambda: not upgraded(server), what="released")
    assert isinstance(rec.reason()[2], ZeroDivisionError)
    with socket.create_connection(("127.0.0.1", server.port), timeout=WAIT):
        pass  # still accepting


class _SlowTerminate(Scripted):
    """The scripted handler, with a ``terminate`` that takes longer than the close timeout."""

    @staticmethod
    def terminate(reason, partial_req, state):
        Scripted.terminate(reason, partial_req, state)
        time.sleep(0.6)


@pytest.mark.parametrize("who", ["peer", "handler"])
def test_a_loop_round_longer_than_close_timeout_still_sends_the_close(serve, connect, rec, who):
    """The close timer must not drop TCP before our Close (the echo of the peer's, or the handler's
    own) was ever written: a terminate slower than close_timeout (200 ms) delays the round's flush."""
    script = {"rec": rec}
    if who == "handler":
        script["handle"] = lambda frame, state: ("stop", state)
    server = serve([("/ws", _SlowTerminate, script)], ws_options={"close_timeout": 200})
    client = connect(server)
    if who == "peer":
        client.send_close(1000)
    else:
        client.send_text("stop")
    assert client.wait_close() == (1000, b"")  # (the test client answers a Close by itself)
    client.wait_eof()
    assert rec.reason() == (("remote", 1000, b"") if who == "peer" else "stop")
