"""The example handlers (cowboy_ws.examples), each served in-process on 127.0.0.1 with port 0."""

from __future__ import annotations

import itertools
import json
import time
import urllib.request
from datetime import datetime, timedelta, timezone

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

import cowboy_ws
from cowboy_ws import Req, Server
from cowboy_ws.examples import chat, clock, subprotocol

TIMEOUT = 5.0
TICK_MS = 50
_rooms = itertools.count()


@pytest.fixture(scope="module")
def server():
    srv = Server([
        ("/chat/:room", chat, None),
        ("/clock", clock, {"interval": TICK_MS}),
        ("/subprotocol", subprotocol, None),
    ], host="127.0.0.1", port=0)
    srv.start()
    try:
        yield srv
    finally:
        srv.shutdown(grace=1.0)


def ws(server, path, **kwargs):
    return connect(server.url + path, open_timeout=TIMEOUT, close_timeout=TIMEOUT, **kwargs)


def wait_until(predicate, timeout=TIMEOUT):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met within %.1fs" % timeout)
        time.sleep(0.01)


def new_room() -> str:
    """A room name no other test (or test module: groups are process-wide) uses."""
    return f"room{next(_rooms)}-{time.monotonic_ns()}"


# -- chat --------------------------------------------------------------------------


def test_chat_delivers_to_every_member_of_the_room_once(server):
    room, other = new_room(), new_room()
    with ws(server, f"/chat/{room}") as a1, ws(server, f"/chat/{room}") as a2, \
            ws(server, f"/chat/{room}") as a3, ws(server, f"/chat/{other}") as b1:
        wait_until(lambda: len(cowboy_ws.members(chat.group(room))) == 3)
        wait_until(lambda: len(cowboy_ws.members(chat.group(other))) == 1)

        a1.send("hello")
        for client in (a1, a2, a3):  # the sender is a member too
            assert client.recv(timeout=TIMEOUT) == "hello"
        a2.send("second")
        for client in (a1, a2, a3):  # the next message is "second": "hello" came exactly once
            assert client.recv(timeout=TIMEOUT) == "second"
        b1.send("other room")
        assert b1.recv(timeout=TIMEOUT) == "other room"  # nothing from room a leaked into room b
        a3.send("last")
        for client in (a1, a2, a3):  # ... and nothing from room b into room a
            assert client.recv(timeout=TIMEOUT) == "last"
        with pytest.raises(TimeoutError):
            b1.recv(timeout=0.1)


def test_chat_message_from_another_thread_goes_through_websocket_info(server):
    room = new_room()
    with ws(server, f"/chat/{room}") as c1, ws(server, f"/chat/{room}") as c2:
        wait_until(lambda: len(cowboy_ws.members(chat.group(room))) == 2)
        for pid in cowboy_ws.members(chat.group(room)):  # Pid ! {chat, Msg} from this thread
            pid.send(("chat", "announcement"))
            pid.send("ignored by websocket_info")
        assert c1.recv(timeout=TIMEOUT) == "announcement"
        assert c2.recv(timeout=TIMEOUT) == "announcement"
        c1.send("after")
        assert c1.recv(timeout=TIMEOUT) == "after"
        assert c2.recv(timeout=TIMEOUT) == "after"


def test_chat_member_leaves_the_room_on_close(server):
    room = new_room()
    with ws(server, f"/chat/{room}") as stays:
        with ws(server, f"/chat/{room}"):
            wait_until(lambda: len(cowboy_ws.members(chat.group(room))) == 2)
        wait_until(lambda: len(cowboy_ws.members(chat.group(room))) == 1)
        stays.send("alone")
        assert stays.recv(timeout=TIMEOUT) == "alone"
    wait_until(lambda: chat.group(room) not in cowboy_ws.which_groups())


def test_chat_binary_frames_are_not_broadcast(server):
    room = new_room()
    with ws(server, f"/chat/{room}") as c1, ws(server, f"/chat/{room}") as c2:
        wait_until(lambda: len(cowboy_ws.members(chat.group(room))) == 2)
        c1.send(b"\x00binary")
        c1.send("text")
        assert c2.recv(timeout=TIMEOUT) == "text"


def test_chat_plain_get_serves_a_page(server):
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/chat/lobby", timeout=TIMEOUT) as resp:
        assert resp.status == 200
        assert "<script" in resp.read().decode()


def test_chat_room_from_the_path_without_a_binding():
    # Served by the CLI on "_", there is no :room binding: the path names the room.
    req = Req(path="/lobby/", headers={"upgrade": "websocket"})
    assert chat.init(req, None) == ("cowboy_websocket", req, {"room": "lobby", "joined": False})
    req = Req(path="/", headers={"upgrade": "websocket"})
    assert chat.init(req, None)[2]["room"] == "lobby"


# -- clock -------------------------------------------------------------------------


def test_clock_ticks_at_the_configured_interval(server):
    with ws(server, "/clock") as c:
        connected = time.monotonic()
        ticks = []
        for _ in range(6):
            text = c.recv(timeout=TIMEOUT)
            ticks.append((time.monotonic(), text))
    first, last = ticks[0][0], ticks[-1][0]
    assert first - connected >= 0.8 * TICK_MS / 1000  # the first tick waits one interval
    # 5 intervals of 50 ms between the first and the sixth tick; generous upper bound for slow CI.
    assert 5 * TICK_MS / 1000 * 0.8 <= last - first < 3.0
    now = datetime.now(timezone.utc)
    for _, text in ticks:
        t = datetime.fromisoformat(text)
        assert t.tzinfo is not None and t.utcoffset() == timedelta(0)
        assert abs(now - t) < timedelta(seconds=10)
    stamps = [datetime.fromisoformat(text) for _, text in ticks]
    assert stamps == sorted(stamps)


def test_clock_interval_can_be_changed_by_the_client(server):
    with ws(server, "/clock") as c:
        c.send("interval 20")
        for _ in range(20):  # ticks may come before the answer
            if c.recv(timeout=TIMEOUT) == "interval 20":
                break
        else:
            raise AssertionError("no answer to 'interval 20'")
        start = time.monotonic()
        for _ in range(5):
            datetime.fromisoformat(c.recv(timeout=TIMEOUT))
        assert time.monotonic() - start < 3.0


def test_clock_state_defaults_to_one_second():
    assert clock.init(Req(), None)[2]["interval"] == 1000
    assert clock.init(Req(), 250)[2]["interval"] == 250
    assert clock.init(Req(), {"interval": 50})[2]["interval"] == 50


# -- subprotocol -------------------------------------------------------------------


@pytest.mark.parametrize("offered, chosen", [
    (["v2.chat"], "v2.chat"),
    (["v1.chat", "v2.chat"], "v2.chat"),  # the server's preference wins over the client's order
    (["mqtt", "v1.chat"], "v1.chat"),
])
def test_subprotocol_selected_when_offered(server, offered, chosen):
    with ws(server, "/subprotocol", subprotocols=offered) as c:
        assert c.subprotocol == chosen
        assert c.response.headers["Sec-WebSocket-Protocol"] == chosen
        c.send("hi")
        answer = c.recv(timeout=TIMEOUT)
    if chosen == "v2.chat":
        assert json.loads(answer) == {"protocol": "v2.chat", "text": "hi"}
    else:
        assert answer == "v1.chat: hi"


def test_subprotocol_none_acceptable_is_400(server):
    with pytest.raises(InvalidStatus) as info:
        ws(server, "/subprotocol", subprotocols=["mqtt", "v3.chat"])
    response = info.value.response
    assert response.status_code == 400
    assert b"v2.chat" in response.body


def test_subprotocol_not_offered_upgrades_without_one(server):
    with ws(server, "/subprotocol") as c:
        assert c.subprotocol is None
        assert "Sec-WebSocket-Protocol" not in c.response.headers
        c.send("plain")
        assert c.recv(timeout=TIMEOUT) == "plain"
