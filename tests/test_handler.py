"""The handler contract over real sockets (Cowboy's ws_handler_SUITE and friends).

Every callback x every result form, the commands, the OutFrame forms, every
terminate reason with its close code on the wire, handshake refusals and
subprotocol selection.  The ``rec`` fixture checks at teardown that every
connection's ``terminate`` ran exactly once.
"""

from __future__ import annotations

import logging
import time

import pytest

from conftest import Echo, default_handle
from wsclient import OP_BINARY, OP_CONT, OP_PING, OP_TEXT, Client, http_request, masked
from cowboy_ws.protocol.errors import HandshakeError
from cowboy_ws.protocol.frames import serialize_frame

# -- the result matrix ---------------------------------------------------------------

TWO_FRAMES = [("text", "A"), ("binary", b"B")]

FORMS = {
    "ok": lambda s: ("ok", s),
    "ok_hibernate": lambda s: ("ok", s, "hibernate"),
    "reply": lambda s: ("reply", ("text", "A"), s),
    "reply_list": lambda s: ("reply", list(TWO_FRAMES), s),
    "reply_hibernate": lambda s: ("reply", ("text", "A"), s, "hibernate"),
    "reply_list_hibernate": lambda s: ("reply", list(TWO_FRAMES), s, "hibernate"),
    "commands": lambda s: (list(TWO_FRAMES), s),
    "commands_hibernate": lambda s: (list(TWO_FRAMES), s, "hibernate"),
    "commands_empty": lambda s: ([], s),
    "stop": lambda s: ("stop", s),
}
EXPECTED = {
    "ok": [], "ok_hibernate": [], "commands_empty": [],
    "reply": [("text", b"A")], "reply_hibernate": [("text", b"A")],
    "reply_list": [("text", b"A"), ("binary", b"B")], "reply_list_hibernate": [("text", b"A"), ("binary", b"B")],
    "commands": [("text", b"A"), ("binary", b"B")], "commands_hibernate": [("text", b"A"), ("binary", b"B")],
}
CALLBACKS = ["websocket_init", "websocket_handle", "websocket_info"]


def close_cleanly(client: Client, rec, conn: int = 0) -> None:
    """Client-initiated closing handshake; terminate gets ("remote", 1000, b"")."""
    client.send_close(1000)
    assert client.wait_close() == (1000, b"")
    client.wait_eof()
    assert rec.reason(conn) == ("remote", 1000, b"")


@pytest.mark.parametrize("form", list(FORMS))
@pytest.mark.parametrize("callback", CALLBACKS)
def test_result_matrix(app, connect, rec, callback, form):
    mark = f"{callback}/{form}"

    def result(state):
        return FORMS[form](dict(state, mark=mark))

    script = {}
    if callback == "websocket_init":
        script["ws_init"] = result
    elif callback == "websocket_handle":
        script["handle"] = lambda frame, s: result(s) if frame == ("text", b"go") else default_handle(frame, s)
    server = app(**script)
    client = connect(server)
    if callback == "websocket_handle":
        client.send_text("go")
    elif callback == "websocket_info":
        rec.pid().send(result)  # the default websocket_info calls a callable message with the state
        # the client's next frame must not overtake the message (two senders: no order between them)
        rec.wait_until(lambda: rec.called("websocket_info"), what="websocket_info")

    if form == "stop":
        assert client.wait_close() == (1000, b"")
        client.wait_eof()
        assert rec.reason() == "stop"
        return
    for expected in EXPECTED[form]:
        assert client.recv_message() == expected
    client.send_text("state?")  # the state the result carried is the one kept
    assert client.recv_message() == ("text", mark.encode())
    client.send_text("still alive")
    assert client.recv_message() == ("text", b"still alive")
    close_cleanly(client, rec)


def test_state_threads_through_every_callback(app, connect, rec):
    def count(state):
        return dict(state, mark=state.get("mark", 0) + 1)

    server = app(ws_init=lambda s: ("ok", dict(s, mark=1)),
                 handle=lambda f, s: ("reply", ("text", str(s["mark"])), count(s)) if f == ("text", b"n")
                 else default_handle(f, s))
    client = connect(server)

    def info(result):
        n = len(rec.called("websocket_info"))
        rec.pid().send(result)
        rec.wait_until(lambda: len(rec.called("websocket_info")) > n, what="websocket_info")

    info(lambda s: ("ok", count(s)))                    # 2
    client.send_text("n")                               # replies 2, sets 3
    assert client.recv_message() == ("text", b"2")
    info(lambda s: ("ok", count(s), "hibernate"))       # 4
    client.send_text("state?")
    assert client.recv_message() == ("text", b"4")
    close_cleanly(client, rec)
    assert rec.terminate()[2]["mark"] == 4


def test_handle_gets_whole_messages_pings_and_pongs(app, connect, rec):
    client = connect(app())
    client.send_raw(masked(OP_TEXT, b"hel", fin=False) + masked(OP_PING, b"p1") + masked(OP_CONT, b"lo", fin=False)
                    + masked(OP_CONT, b"!", fin=True))
    # the ping is answered automatically (and passed on), the fragments come back as one message
    assert client.recv_event() == ("pong", b"p1")
    assert client.recv_event() == ("text", b"hello!")
    client.send_raw(masked(0xA, b"unsolicited"))
    client.send_binary(b"\x00\xff")
    assert client.recv_event() == ("binary", b"\x00\xff")
    assert rec.called("websocket_handle") == [("ping", b"p1"), ("text", b"hello!"), ("pong", b"unsolicited"),
                                              ("binary", b"\x00\xff")]
    close_cleanly(client, rec)
    assert not [f for f in rec.called("websocket_handle") if f[0] == "close"]  # close never reaches it


@pytest.mark.parametrize("compress", [False, True])
def test_hibernate_between_fragments_keeps_the_partial_message(app, connect, rec, compress):
    hibernating = lambda f, s: ("reply", f, s, "hibernate") if f[0] != "ping" else ("ok", s, "hibernate")
    client = connect(app(handle=hibernating, ws_options={"compress": compress}), compress=compress)
    client.send_text("x" * 300)
    assert client.recv_event() == ("text", b"x" * 300)
    client.send_raw(masked(OP_TEXT, b"first ", fin=False))
    client.send_ping(b"1")
    assert client.recv_event() == ("pong", b"1")  # the server hibernated with half a message buffered
    client.send_raw(masked(OP_CONT, b"second", fin=True))
    assert client.recv_event() == ("text", b"first second")
    client.send_text("x" * 300)
    assert client.recv_event() == ("text", b"x" * 300)
    close_cleanly(client, rec)


# -- OutFrame forms --------------------------------------------------------------------


@pytest.mark.parametrize("frame, expected", [
    (("text", "héllo"), ("text", "héllo".encode())),
    (("text", b"bytes"), ("text", b"bytes")),
    (("text", ["io", b"da", ["ta", b"!"]]), ("text", b"iodata!")),
    (("binary", bytearray(b"\x00\x01")), ("binary", b"\x00\x01")),
    (("binary", [b"\x02", memoryview(b"\x03")]), ("binary", b"\x02\x03")),
    ("ping", ("ping", b"")),
    ("pong", ("pong", b"")),
    (("ping", b"payload"), ("ping", b"payload")),
    (("pong", "text"), ("pong", b"text")),
])
def test_out_frame_forms(app, connect, rec, frame, expected):
    server = app(handle=lambda f, s: ("reply", [frame, ("text", "end")], s) if f == ("text", b"go")
                 else default_handle(f, s))
    client = connect(server)
    client.send_text("go")
    assert client.recv_event() == expected
    assert client.recv_event() == ("text", b"end")
    close_cleanly(client, rec)


@pytest.mark.parametrize("frame, wire", [
    ("close", (None, b"")),
    (("close", b"bye"), (1000, b"bye")),
    (("close", 4000, "custom"), (4000, b"custom")),
    (("close", 1001, b""), (1001, b"")),
])
def test_close_frame_forms_and_frames_after_close_are_dropped(app, connect, rec, frame, wire):
    server = app(handle=lambda f, s: ("reply", [("text", "before"), frame, ("text", "after"), "ping"], s))
    client = connect(server)
    client.send_text("go")
    assert client.recv_event() == ("text", b"before")
    assert client.recv_event() == ("close",) + wire
    assert client.recv_event() == ("eof",)
    assert rec.reason() == "stop"


def test_frames_after_close_in_command_list_and_later_callbacks(app, connect, rec):
    server = app(handle=lambda f, s: ([("text", "a"), ("close", 4001, b"x"), ("text", "b"), ("active", True)], s))
    client = connect(server)
    client.send_text("go")
    client.send_text("more")  # may arrive before our Close is seen: data after Close is not handled
    assert client.recv_event() == ("text", b"a")
    assert client.recv_event() == ("close", 4001, b"x")
    assert client.recv_event() == ("eof",)
    assert rec.reason() == "stop"
    assert rec.called("websocket_handle") == [("text", b"go")]
    assert [f for f, _, _, _ in client.raw_frames] == [OP_TEXT, 0x8]


# -- commands --------------------------------------------------------------------------


def test_active_false_pauses_reading_until_active_true(app, connect, rec):
    client = connect(app())
    pid = rec.pid()
    pid.send(lambda s: ([("active", False), ("text", "paused")], s))
    assert client.recv_event() == ("text", b"paused")
    client.send_text("while paused")
    client.expect_silence(0.3)
    assert rec.called("websocket_handle") == []  # not read, let alone handled
    pid.send(lambda s: ([("active", True)], s))
    assert client.recv_event() == ("text", b"while paused")
    assert rec.called("websocket_handle") == [("text", b"while paused")]
    close_cleanly(client, rec)


def test_active_false_from_websocket_init_then_info_resumes(app, connect, rec):
    server = app(ws_init=lambda s: ([("active", False)], s, "hibernate"))
    client = connect(server, extra=b"")
    client.send_text("queued")
    client.expect_silence(0.2)
    rec.pid().send(lambda s: ("reply", ("text", "resumed"), s))
    assert client.recv_event() == ("text", b"resumed")
    client.expect_silence(0.1)
    rec.pid().send(lambda s: ([("active", True)], s))
    assert client.recv_event() == ("text", b"queued")
    close_cleanly(client, rec)


def test_deflate_command_turns_compression_off_and_on(app, connect, rec):
    client = connect(app(ws_options={"compress": True}), compress=True)
    assert [name for name, _ in client.extensions] == ["permessage-deflate"]
    message = "compressible " * 50

    def echo_rsv1(text):
        client.send_text(text)
        assert client.recv_event() == ("text", text.encode())
        return client.raw_frames[-1][2]

    assert echo_rsv1(message)
    pid = rec.pid()
    pid.send(lambda s: ([("deflate", False), ("text", "off")], s))
    assert client.recv_event() == ("text", b"off")
    assert not client.raw_frames[-1][2]
    assert not echo_rsv1(message)
    assert not echo_rsv1(message)
    pid.send(lambda s: ([("deflate", True), ("text", "on")], s))
    assert client.recv_event() == ("text", b"on")
    assert client.raw_frames[-1][2]
    assert echo_rsv1(message)
    close_cleanly(client, rec)


def test_deflate_command_without_negotiation_is_harmless(app, connect, rec):
    client = connect(app(ws_options={"compress": True}))  # the client offers nothing
    assert client.extensions == []
    rec.pid().send(lambda s: ([("deflate", True), ("text", "plain")], s))
    assert client.recv_event() == ("text", b"plain")
    assert not client.raw_frames[-1][2]
    close_cleanly(client, rec)


def test_set_options_idle_timeout(app, connect, rec):
    server = app(ws_init=lambda s: ([("set_options", {"idle_timeout": 200})], s))  # server default: 60 s
    client = connect(server)
    start = time.monotonic()
    assert client.wait_close(3) == (1000, b"")
    elapsed = time.monotonic() - start
    assert 0.15 < elapsed < 2.5
    client.wait_eof()
    assert rec.reason() == "timeout"


def test_set_options_max_frame_size(app, connect, rec):
    server = app(ws_init=lambda s: ([("set_options", {"max_frame_size": 100})], s))
    client = connect(server)
    client.send_binary(b"x" * 100)
    assert client.recv_event() == ("binary", b"x" * 100)
    client.send_binary(b"x" * 101)
    assert client.wait_close() == (1009, b"")
    client.wait_eof()
    assert rec.reason() == ("error", "badsize")


def test_set_options_from_websocket_info_raises_limit(app, connect, rec):
    client = connect(app(ws_options={"max_frame_size": 10}))
    rec.pid().send(lambda s: ([("set_options", {"max_frame_size": 1000}), ("text", "raised")], s))
    assert client.recv_event() == ("text", b"raised")
    client.send_binary(b"y" * 1000)
    assert client.recv_event() == ("binary", b"y" * 1000)
    close_cleanly(client, rec)


def test_shutdown_reason_sets_exit_reason_not_terminate_reason(app, connect, rec):
    server = app(handle=lambda f, s: ([("shutdown_reason", ("custom", 42)), ("text", "ok"), "close"], s))
    client = connect(server)
    pid = rec.pid()
    assert pid.alive and pid.exit_reason is None
    client.send_text("go")
    assert client.recv_event() == ("text", b"ok")
    assert client.recv_event() == ("close", None, b"")
    client.wait_eof()
    assert rec.reason() == "stop"
    assert not pid.alive
    assert pid.exit_reason == ("shutdown", ("custom", 42))


def test_exit_reason_is_normal_without_shutdown_reason(app, connect, rec):
    client = connect(app())
    pid = rec.pid()
    close_cleanly(client, rec)
    assert pid.exit_reason == "normal"


# -- terminate reasons and close codes ------------------------------------------------


def test_stop(app, connect, rec):
    client = connect(app(handle=lambda f, s: ("stop", s)))
    client.send_text("stop please")
    assert client.wait_close() == (1000, b"")
    client.wait_eof()
    assert rec.reason() == "stop"


def test_idle_timeout(app, connect, rec):
    client = connect(app(ws_options={"idle_timeout": 200}))
    client.send_text("reset")  # received data resets the timer
    assert client.recv_event() == ("text", b"reset")
    start = time.monotonic()
    assert client.wait_close(3) == (1000, b"")
    assert 0.15 < time.monotonic() - start < 2.5
    client.wait_eof()
    assert rec.reason() == "timeout"


def test_idle_timeout_reset_by_received_data(app, connect, rec):
    client = connect(app(ws_options={"idle_timeout": 300}))
    for _ in range(6):  # 0.6 s of activity, every 100 ms
        time.sleep(0.1)
        client.send_ping(b"k")
        assert client.recv_event() == ("pong", b"k")
    assert not client.closed
    assert client.wait_close(3) == (1000, b"")
    assert rec.reason() == "timeout"


def test_idle_timeout_from_init_options(app, connect, rec):
    client = connect(app(opts={"idle_timeout": 150}))
    assert client.wait_close(3) == (1000, b"")
    assert rec.reason() == "timeout"


@pytest.mark.parametrize("code, payload", [(1000, b""), (1001, b"going"), (4000, b"bye"), (3001, "é".encode())])
def test_peer_close_with_code_is_echoed(app, connect, rec, code, payload):
    client = connect(app())
    client.send_close(code, payload)
    assert client.wait_close() == (code, b"")
    client.wait_eof()
    assert rec.reason() == ("remote", code, payload)


def test_peer_close_without_code(app, connect, rec):
    client = connect(app())
    client.send_close(None)
    assert client.wait_close() == (None, b"")
    client.wait_eof()
    assert rec.reason() == "remote"


@pytest.mark.parametrize("raw", [
    serialize_frame(OP_TEXT, b"unmasked"),                       # clients must mask (§5.1)
    masked(0x3, b"reserved opcode"),                             # §5.2
    bytes([0x80 | 0x20 | OP_TEXT]) + masked(OP_TEXT, b"x")[1:],  # RSV2 without an extension
    masked(OP_TEXT, b"x", rsv1=True),                            # RSV1 without permessage-deflate
    masked(OP_PING, b"x", fin=False),                            # fragmented control frame (§5.5)
    masked(OP_CONT, b"orphan"),                                  # continuation with nothing to continue
    masked(OP_TEXT, b"a", fin=False) + masked(OP_BINARY, b"b"),  # new message inside a fragmented one
    masked(0x8, b"\x03"),                                        # 1-byte close payload
    masked(0x8, (999).to_bytes(2, "big")),                       # invalid close code
], ids=["unmasked", "opcode", "rsv2", "rsv1", "fragmented-ping", "orphan-cont", "interleaved", "close-1-byte",
        "close-code-999"])
def test_protocol_error(app, connect, rec, raw):
    client = connect(app())
    client.send_raw(raw)
    assert client.wait_close() == (1002, b"")
    client.wait_eof()
    assert rec.reason() == ("error", "badframe")
    assert rec.called("websocket_handle") == []


@pytest.mark.parametrize("raw", [
    masked(OP_TEXT, b"\xff\xfe"),
    masked(OP_TEXT, "é".encode()[:1] + b"x"),
    masked(OP_TEXT, b"ok \xe2\x82", fin=False) + masked(OP_CONT, b"\x28", fin=True),
    masked(0x8, (1000).to_bytes(2, "big") + b"\xc3"),  # close reason must be UTF-8 too
], ids=["bytes", "truncated", "fragmented", "close-reason"])
def test_invalid_utf8(app, connect, rec, raw):
    client = connect(app())
    client.send_raw(raw)
    assert client.wait_close() == (1007, b"")
    client.wait_eof()
    assert rec.reason() == ("error", "badencoding")


def test_invalid_utf8_allowed_when_validation_is_off(app, connect, rec):
    client = connect(app(opts={"validate_utf8": False}), validate_utf8=False)
    client.send_raw(masked(OP_TEXT, b"\xff"))
    assert client.recv_event() == ("text", b"\xff")
    close_cleanly(client, rec)


@pytest.mark.parametrize("raw", [
    masked(OP_BINARY, b"z" * 1001),                                      # one frame
    masked(OP_BINARY, b"z" * 600, fin=False) + masked(OP_CONT, b"z" * 600),  # the reassembled message
], ids=["frame", "message"])
def test_too_big(app, connect, rec, raw):
    client = connect(app(ws_options={"max_frame_size": 1000}))
    client.send_binary(b"z" * 1000)
    assert client.recv_event() == ("binary", b"z" * 1000)
    client.send_raw(raw)
    assert client.wait_close() == (1009, b"")
    client.wait_eof()
    assert rec.reason() == ("error", "badsize")


def test_too_big_compressed_message(app, connect, rec):
    client = connect(app(ws_options={"compress": True, "max_frame_size": 1000}), compress=True)
    client.send_binary(b"\x00" * 1000)  # inflates to exactly the limit
    assert client.recv_event() == ("binary", b"\x00" * 1000)
    client.send_binary(b"\x00" * 5000)  # compresses to a few bytes, inflates past it
    assert client.wait_close() == (1009, b"")
    assert rec.reason() == ("error", "badsize")


class Boom(Exception):
    pass


SECRET = "secret detail that must not reach the wire"


def boom(*_args):
    raise Boom(SECRET)


@pytest.mark.parametrize("callback", CALLBACKS + ["bad_result"])
def test_handler_crash(app, connect, rec, caplog, callback):
    caplog.set_level(logging.ERROR, logger="cowboy_ws")
    script = {}
    if callback == "websocket_init":
        script["ws_init"] = boom
    elif callback == "websocket_handle":
        script["handle"] = lambda f, s: boom() if f == ("text", b"crash") else default_handle(f, s)
    elif callback == "bad_result":
        script["handle"] = lambda f, s: ("reply", s) if f == ("text", b"crash") else default_handle(f, s)
    server = app(**script)
    if callback != "websocket_init":
        bystander = connect(server)
    victim = connect(server)
    victim_conn = 0 if callback == "websocket_init" else 1
    if callback == "websocket_info":
        rec.pid(victim_conn).send(boom)
    elif callback != "websocket_init":
        victim.send_text("crash")
    assert victim.wait_close() == (1011, b"")
    assert victim.raw_frames[-1][3] == b"\x03\xf3"  # the code alone: no exception text on the wire
    victim.wait_eof()
    reason = rec.reason(victim_conn)
    assert reason[:2] == ("crash", "error")
    if callback == "bad_result":
        assert isinstance(reason[2], TypeError)
    else:
        assert isinstance(reason[2], Boom) and str(reason[2]) == SECRET
    crashes = [r for r in caplog.records if r.exc_info and r.exc_info[1] is reason[2]]
    assert crashes and crashes[0].levelno == logging.ERROR
    assert "Traceback" in caplog.text
    if callback != "websocket_init":
        bystander.send_text("unaffected")
        assert bystander.recv_event() == ("text", b"unaffected")
        close_cleanly(bystander, rec, 0)
    # the server still accepts and serves new connections
    if callback != "websocket_init":
        fresh = connect(server)
        fresh.send_text("new")
        assert fresh.recv_event() == ("text", b"new")
        close_cleanly(fresh, rec, 2)


def test_crash_in_terminate_is_logged_and_contained(serve, connect, rec, caplog):
    caplog.set_level(logging.ERROR, logger="cowboy_ws")

    class BadTerminate(Echo):
        @staticmethod
        def terminate(reason, req, state):
            rec.record(rec.new_conn(), "terminate", (reason, req, state))
            raise Boom("in terminate")

    server = serve([("/ws", BadTerminate, None)])
    client = connect(server)
    client.send_close(1000)
    client.wait_eof()
    assert rec.reason() == ("remote", 1000, b"")
    client2 = connect(server)
    client2.send_text("fine")
    assert client2.recv_event() == ("text", b"fine")
    client2.send_close(1000)
    client2.wait_eof()
    assert "in terminate" in caplog.text


def test_socket_closed_without_close_frame(app, connect, rec):
    client = connect(app())
    client.send_text("hi")
    assert client.recv_event() == ("text", b"hi")
    client.abort()
    assert rec.reason() == ("error", "closed")


def test_socket_closed_mid_message(app, connect, rec):
    client = connect(app())
    client.send_raw(masked(OP_TEXT, b"part", fin=False))
    time.sleep(0.05)
    client.abort()
    assert rec.reason() == ("error", "closed")
    assert rec.called("websocket_handle") == []


def test_terminate_gets_the_partial_req(app, connect, rec):
    client = connect(app(), path="/ws?x=1")
    close_cleanly(client, rec)
    _reason, partial, state = rec.terminate()
    assert partial["path"] == "/ws" and partial["qs"] == "x=1" and partial["method"] == "GET"
    assert partial["peer"][0] == "127.0.0.1"
    assert state["conn"] == 0


def test_req_filter_option(app, connect, rec):
    client = connect(app(opts={"req_filter": lambda req: {"only": req.path}}))
    close_cleanly(client, rec)
    assert rec.terminate()[1] == {"only": "/ws"}


# -- init refusing the upgrade, handshake refusals -------------------------------------

UPGRADE = ("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: {version}\r\n\r\n")


def test_init_ok_with_reply(app, rec):
    def init(req, state):
        req.reply(403, {"content-type": "text/plain", "x-why": "denied"}, "go away")
        return ("ok", req, state)

    server = app(init=init)
    resp, body = http_request(server.port, UPGRADE.format(path="/ws", version=13).encode())
    assert resp.status == 403
    assert resp.get("x-why") == "denied"
    assert body == b"go away"
    reason, partial, _state = rec.terminate()
    assert reason == "normal"
    assert partial["path"] == "/ws"
    assert rec.called("websocket_init") == []


def test_init_ok_without_reply_is_204(app, rec):
    server = app(init=lambda req, s: ("ok", req, s))
    resp, body = http_request(server.port, UPGRADE.format(path="/ws", version=13).encode())
    assert (resp.status, body) == (204, b"")
    assert rec.reason() == "normal"


def test_init_crash_is_500(app, rec, caplog):
    caplog.set_level(logging.ERROR, logger="cowboy_ws")
    server = app(init=boom)
    resp, body = http_request(server.port, UPGRADE.format(path="/ws", version=13).encode())
    assert resp.status == 500
    assert SECRET.encode() not in body
    assert "Traceback" in caplog.text
    reason = rec.reason()  # as cowboy_handler does: terminate({crash, error, Reason}, ...)
    assert reason[:2] == ("crash", "error") and isinstance(reason[2], Boom)


def test_plain_get_is_426(app, rec):
    server = app()
    resp, _body = http_request(server.port, b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert resp.status == 426
    assert resp.get("upgrade").lower() == "websocket"
    assert resp.get("sec-websocket-version") == "13"


@pytest.mark.parametrize("request_", [
    UPGRADE.format(path="/ws", version=8),
    UPGRADE.format(path="/ws", version="13, 8"),
    UPGRADE.replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Key: short").format(
        path="/ws", version=13),
    UPGRADE.replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", "").format(path="/ws", version=13),
    UPGRADE.replace("Sec-WebSocket-Version: {version}\r\n", "").format(path="/ws"),
], ids=["version-8", "two-versions", "short-key", "no-key", "no-version"])
def test_bad_key_or_version_is_400(app, rec, request_):
    server = app()
    resp, _body = http_request(server.port, request_.encode())
    assert resp.status == 400
    assert resp.get("sec-websocket-version") == "13"
    assert rec.inits == 0  # refused before init


def test_no_route_is_404(app, rec):
    server = app()
    resp, _body = http_request(server.port, UPGRADE.format(path="/nowhere", version=13).encode())
    assert resp.status == 404
    with pytest.raises(HandshakeError) as info:
        Client.connect(server.port, "/nowhere")
    assert info.value.status == 404


def test_malformed_request_is_400(app, rec):
    server = app()
    resp, _body = http_request(server.port, b"NOT HTTP AT ALL\r\n\r\n")
    assert resp.status == 400


# -- subprotocols ----------------------------------------------------------------------


def choose_protocol(req, state):
    offered = req.parse_header("sec-websocket-protocol") or []
    for name in ("v2.chat", "v1.chat"):
        if name in offered:
            req.set_resp_header("sec-websocket-protocol", name)
            break
    return ("cowboy_websocket", req, state)


@pytest.mark.parametrize("offer, chosen", [
    (["v1.chat", "v2.chat"], "v2.chat"),
    (["other", "v1.chat"], "v1.chat"),
    (["other"], None),
    ([], None),
])
def test_subprotocol_selected_in_init(app, connect, rec, offer, chosen):
    client = connect(app(init=choose_protocol), protocols=offer)
    assert client.subprotocol == chosen
    assert client.response.get("sec-websocket-protocol") == chosen
    client.send_text("hi")
    assert client.recv_event() == ("text", b"hi")
    close_cleanly(client, rec)


def test_upgrade_response_carries_handler_headers(app, connect, rec):
    def init(req, state):
        req.set_resp_header("x-handler", "yes")
        return ("cowboy_websocket", req, state)

    client = connect(app(init=init))
    assert client.response.status == 101
    assert client.response.get("x-handler") == "yes"
    close_cleanly(client, rec)


def test_client_reads_are_bounded(app, connect, rec):
    """The test client itself never hangs: a read with nothing to read raises TimeoutError."""
    client = connect(app())
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        client.recv_event(0.1)
    assert time.monotonic() - start < 1
    close_cleanly(client, rec)
