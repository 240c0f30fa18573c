# test_hello.py: tests of the tutorial's hello.py, through a real server and a real client.
import re
import urllib.request

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

import cowboy_ws
import hello


@pytest.fixture
def server():
    server = cowboy_ws.Server([("/", hello, None)], port=0).start()  # port 0: a free port
    yield server
    server.shutdown()  # Close 1001 to what is still open; returns once the server stopped


def test_replies_to_each_text_message(server):
    with connect(server.url + "/") as ws:
        ws.send("hi")
        assert ws.recv(timeout=5) == "#1: you said hi"
        ws.send("again")
        assert ws.recv(timeout=5) == "#2: you said again"


def test_pushes_the_time(server):
    with connect(server.url + "/") as ws:
        assert re.fullmatch(r"\d\d:\d\d:\d\d", ws.recv(timeout=5))


def test_a_plain_get_gets_the_page(server):
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/") as response:
        assert response.status == 200
        assert b"new WebSocket" in response.read()


def test_other_paths_are_not_found(server):
    with pytest.raises(InvalidStatus) as refused:
        with connect(server.url + "/nowhere"):
            pass
    assert refused.value.response.status_code == 404


def test_shutdown_closes_with_1001_and_runs_terminate(server, capsys):
    with connect(server.url + "/") as ws:
        ws.send("hi")
        ws.recv(timeout=5)
        server.shutdown()
        with pytest.raises(ConnectionClosed):
            while True:
                ws.recv(timeout=5)
        assert ws.close_code == 1001
    assert "left after 1 message(s): 'shutdown'" in capsys.readouterr().out


def test_callbacks_are_plain_functions():
    # No server needed for the callbacks that do not call self(), send_after() or join().
    req = cowboy_ws.Req(headers={"upgrade": "websocket"})
    assert hello.init(req, None) == ("cowboy_websocket", req, {"count": 0})
    assert hello.websocket_handle(("text", b"hi"), {"count": 0}) == \
        ("reply", ("text", "#1: you said hi"), {"count": 1})
