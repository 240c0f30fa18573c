"""The client against hostile or broken servers: a clear error (close code or exception), bounded
memory and time, nothing left open.

Each test runs a :class:`RawServer` on 127.0.0.1 port 0: a thread that accepts connections, reads
the upgrade request and then plays a script on the raw socket (a valid 101, or not, then frames
that break a rule).  What the client sends back is parsed with the protocol core.
"""

from __future__ import annotations

import base64
import hashlib
import socket
import threading
import time
import tracemalloc
import zlib
from collections.abc import Callable

import pytest
from conftest import WAIT, wait_for

import cowboy_ws
from cowboy_ws import client
from cowboy_ws.loop import READ_BUFFER_SIZE
from cowboy_ws.protocol.frames import FrameParser, serialize_frame

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def accept(key: str) -> str:
    return base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()


def read_head(sock: socket.socket, timeout: float = WAIT) -> tuple[dict, bytes]:
    """The request head's headers (lower-cased names) and what followed it."""
    sock.settimeout(timeout)
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError(f"no request head: {buf!r}")
        buf += data
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    headers[":request"] = lines[0]
    return headers, rest


def upgrade(sock: socket.socket, headers: dict, extra: str = "") -> None:
    sock.sendall((f"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Accept: {accept(headers['sec-websocket-key'])}\r\n{extra}\r\n").encode())


def read_frames(sock: socket.socket, timeout: float = WAIT, until_close: bool = False) -> tuple[list, bool]:
    """Every (masked) client frame until EOF (or the client's Close, with ``until_close``) or the
    timeout: (frames, whether EOF came)."""
    parser = FrameParser(mask_required=True, max_frame_size=None, rsv1_allowed=True)
    frames: list = []
    deadline = time.monotonic() + timeout
    while True:
        if until_close and any(f[0] == 0x8 for f in frames):
            return frames, False
        left = deadline - time.monotonic()
        if left <= 0:
            return frames, False
        sock.settimeout(left)
        try:
            data = sock.recv(65536)
        except TimeoutError:
            return frames, False
        except OSError:
            return frames, True
        if not data:
            return frames, True
        frames.extend(parser.feed(data))


def close_code(frames: list) -> int | None:
    for opcode, _fin, _rsv1, payload in frames:
        if opcode == 0x8:
            return int.from_bytes(payload[:2], "big") if payload else None
    return None


class RawServer:
    """Accepts connections on 127.0.0.1:0 and runs ``script(sock, headers)`` for each (bounded)."""

    def __init__(self, script: Callable[[socket.socket, dict], None], *, read_request: bool = True) -> None:
        self.script = script
        self.read_request = read_request
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.results: list = []
        self.errors: list = []
        self.done = threading.Event()
        self._stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def _run(self) -> None:
        self.listener.settimeout(0.1)
        while not self._stop:
            try:
                sock, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                with sock:
                    headers, _rest = read_head(sock) if self.read_request else ({}, b"")
                    self.results.append(self.script(sock, headers))
            except Exception as exc:  # the test looks at them
                self.errors.append(exc)
            finally:
                self.done.set()

    def close(self) -> None:
        self._stop = True
        self.listener.close()
        self.thread.join(WAIT)


@pytest.fixture
def raw():
    servers: list[RawServer] = []

    def start(script, **kwargs) -> RawServer:
        server = RawServer(script, **kwargs)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def answer_close(sock: socket.socket, got: list) -> None:
    """What a server does with the client's Close: echo its code (RFC 6455 §5.5.1), then close TCP first."""
    code = close_code(got)
    try:
        sock.sendall(serialize_frame(0x8, b"" if code is None else code.to_bytes(2, "big")))
    except OSError:
        pass


def expect_failure(raw, frames: bytes, code: int, *, extra: str = "", **connect_kwargs):
    """A server that upgrades, sends ``frames``, reads the client's Close, answers it and closes."""

    def script(sock, headers):
        upgrade(sock, headers, extra)
        sock.sendall(frames)
        got, _ = read_frames(sock, until_close=True)
        answer_close(sock, got)
        sock.shutdown(socket.SHUT_WR)
        _, eof = read_frames(sock)  # the client closes its side after our FIN
        return close_code(got), eof

    server = raw(script)
    ws = client.connect(server.url, **connect_kwargs)
    with pytest.raises(cowboy_ws.ConnectionClosed) as info:
        ws.recv(WAIT)
    assert (info.value.code, info.value.side) == (code, "local")
    assert server.done.wait(WAIT + 2)
    assert server.results == [(code, True)]  # our Close carried the code, then TCP was closed
    ws.close()
    assert ws._session.finished.is_set()
    return info.value


# -- protocol violations -------------------------------------------------------------------


def test_oversized_frame_is_1009(raw):
    header = bytes([0x82, 127]) + (10 << 20).to_bytes(8, "big")  # announces 10 MiB, sends 1 KiB
    exc = expect_failure(raw, header + b"x" * 1024, 1009, max_frame_size=1 << 20)
    assert exc.terminate_reason == ("error", "badsize")


def test_deflate_bomb_is_1009_with_bounded_memory(raw):
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    payload = comp.compress(b"\0" * (200 << 20)) + comp.flush(zlib.Z_SYNC_FLUSH)
    payload = payload[:-4]  # RFC 7692 §7.2.1
    assert len(payload) < 300_000
    frame = bytes([0xC2, 127]) + len(payload).to_bytes(8, "big") + payload
    tracemalloc.start()
    try:
        expect_failure(raw, frame, 1009, extra="Sec-WebSocket-Extensions: permessage-deflate\r\n",
                       compress=True, max_frame_size=1 << 20)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, f"inflating the bomb peaked at {peak} bytes"


def test_invalid_utf8_is_1007_fail_fast(raw):
    # the bad byte comes first of a 1 MiB text frame of which only the start is sent: fail fast (§8.1)
    header = bytes([0x81, 127]) + (512 << 10).to_bytes(8, "big")
    exc = expect_failure(raw, header + b"\xff" + b"a" * 100, 1007)
    assert exc.terminate_reason == ("error", "badencoding")


def test_masked_server_frame_is_1002(raw):
    frame = serialize_frame(0x1, b"hello", mask_key=b"\x01\x02\x03\x04")
    exc = expect_failure(raw, frame, 1002)
    assert exc.terminate_reason == ("error", "badframe")


def test_reserved_bits_and_opcodes_are_1002(raw):
    expect_failure(raw, bytes([0x83, 0]), 1002)          # reserved opcode 3
    expect_failure(raw, bytes([0xC1, 1]) + b"x", 1002)   # RSV1 without permessage-deflate


def _messages_then_bad_frame(raw):
    """A server that sends a text and a binary message and a reserved opcode in one write, then
    returns every frame of the client up to its Close (and answers that Close)."""

    def script(sock, headers):
        upgrade(sock, headers)
        sock.sendall(serialize_frame(0x1, b"a") + serialize_frame(0x2, b"b") + bytes([0x83, 0]))
        got, _ = read_frames(sock, until_close=True)
        answer_close(sock, got)
        return [(opcode, payload) for opcode, _fin, _rsv1, payload in got]

    return raw(script)


def test_messages_before_a_bad_frame_are_answered_before_the_close(raw):
    """The blocking reader echoes each message it took; the failure (1002, RFC 6455 §7.1.7) waits
    for it to come back for the next one, so the echoes leave before the Close, as a handler's
    replies would (Autobahn 3.2-3.4, 4.1.3-4.2.5, 5.15)."""
    server = _messages_then_bad_frame(raw)
    ws = client.connect(server.url)
    for _ in range(2):
        frame = ws.recv(WAIT)
        time.sleep(0.05)  # the reader is slower than the loop: the failure is already parsed
        ws.send(frame)
    with pytest.raises(cowboy_ws.ConnectionClosed) as info:
        ws.recv(WAIT)
    assert (info.value.code, info.value.side, info.value.terminate_reason) == (1002, "local", ("error", "badframe"))
    assert server.done.wait(WAIT)
    assert server.results == [[(0x1, b"a"), (0x2, b"b"), (0x8, (1002).to_bytes(2, "big"))]]
    ws.close()


def test_a_held_failure_ends_within_close_timeout_when_nobody_reads(raw):
    """Nobody calls recv: the failure goes out after close_timeout anyway; the messages received
    before it stay available, then recv raises."""
    server = _messages_then_bad_frame(raw)
    ws = client.connect(server.url, close_timeout=0.3)
    assert server.done.wait(WAIT)
    assert server.results == [[(0x8, (1002).to_bytes(2, "big"))]]
    wait_for(lambda: ws.closed is not None, what="the connection closed")
    assert [ws.recv(0), ws.recv(0)] == [("text", b"a"), ("binary", b"b")]
    with pytest.raises(cowboy_ws.ConnectionClosed) as info:
        ws.recv(0)
    assert (info.value.code, info.value.side) == (1002, "local")
    ws.close()


def test_close_while_a_failure_is_held_sends_the_failures_code(raw):
    server = _messages_then_bad_frame(raw)
    ws = client.connect(server.url)
    assert ws.recv(WAIT) == ("text", b"a")
    time.sleep(0.05)
    ws.close()  # not 1000: the connection was failed (§7.1.7) before we asked
    assert server.done.wait(WAIT)
    assert server.results == [[(0x8, (1002).to_bytes(2, "big"))]]
    assert (ws.closed.code, ws.closed.side) == (1002, "local")


def test_the_handler_api_fails_the_same_way_and_retries(raw):
    """A protocol error is a lost connection for retry: ("down", ...), then again, then terminate."""

    def script(sock, headers):
        upgrade(sock, headers)
        sock.sendall(bytes([0x81, 2]) + b"\xc3\x28")
        got, _ = read_frames(sock, until_close=True)
        answer_close(sock, got)
        return close_code(got)

    server = raw(script)
    done = threading.Event()
    seen: list = []

    class H:
        websocket_handle = staticmethod(lambda f, s: ("ok", s))

        @staticmethod
        def websocket_info(info, state):
            seen.append(info)
            return ("ok", state)

        @staticmethod
        def terminate(reason, req, state):
            seen.append(("terminate", reason))
            done.set()

    client.start(server.url, H, None, {"retry": 2, "retry_timeout": 10})
    assert done.wait(WAIT * 2)
    down = ("down", ("error", "badencoding"))
    assert seen == [down, down, ("terminate", ("error", "badencoding"))]
    wait_for(lambda: len(server.results) == 3, what="three connections")
    assert server.results == [1007, 1007, 1007]


# -- the opening handshake ------------------------------------------------------------------


def test_server_that_never_answers_the_upgrade_times_out(raw):
    release = threading.Event()

    def script(sock, headers):
        release.wait(WAIT * 2)
        return "released"

    server = raw(script)
    started = time.monotonic()
    with pytest.raises(client.OpenTimeout) as info:
        client.connect(server.url, open_timeout=0.5)
    elapsed = time.monotonic() - started
    assert 0.4 < elapsed < 2.5, elapsed
    assert isinstance(info.value, TimeoutError) and "open timeout" in str(info.value)
    release.set()


def test_handler_api_open_timeout_in_ms(raw):
    release = threading.Event()
    server = raw(lambda sock, headers: release.wait(WAIT * 2))
    done = threading.Event()
    reasons: list = []

    class H:
        websocket_handle = staticmethod(lambda f, s: ("ok", s))
        websocket_info = staticmethod(lambda i, s: ("ok", s))

        @staticmethod
        def terminate(reason, req, state):
            reasons.append((reason, time.monotonic()))
            done.set()

    started = time.monotonic()
    client.start(server.url, H, None, {"open_timeout": 300})
    assert done.wait(WAIT)
    assert reasons[0][0] == ("error", "timeout")
    assert reasons[0][1] - started < 2
    release.set()


def test_garbage_instead_of_http(raw):
    server = raw(lambda sock, headers: sock.sendall(b"SSH-2.0-OpenSSH_9.0\r\n\r\n"))
    with pytest.raises(client.InvalidHandshake, match="malformed"):
        client.connect(server.url)


def test_wrong_accept_key(raw):
    def script(sock, headers):
        sock.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Accept: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")

    server = raw(script)
    with pytest.raises(client.InvalidHandshake, match="Sec-WebSocket-Accept"):
        client.connect(server.url)


def test_extension_not_offered(raw):
    server = raw(lambda sock, headers: upgrade(sock, headers, "Sec-WebSocket-Extensions: permessage-deflate\r\n"))
    with pytest.raises(client.InvalidHandshake, match="extension"):
        client.connect(server.url)
    server2 = raw(lambda sock, headers: upgrade(sock, headers, "Sec-WebSocket-Extensions: x-other\r\n"))
    with pytest.raises(client.InvalidHandshake, match="not offered"):
        client.connect(server2.url, compress=True)


def test_bad_deflate_answer(raw):
    server = raw(lambda sock, headers: upgrade(
        sock, headers, "Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=99\r\n"))
    with pytest.raises(client.InvalidHandshake, match="permessage-deflate"):
        client.connect(server.url, compress=True)


def test_huge_response_head_is_refused(raw):
    def script(sock, headers):
        sock.sendall(b"HTTP/1.1 101 Switching Protocols\r\n")
        try:
            for _ in range(200):
                sock.sendall(b"X-Filler: " + b"a" * 1000 + b"\r\n")
        except OSError:
            pass

    server = raw(script)
    with pytest.raises(client.InvalidHandshake, match=r"malformed|too"):
        client.connect(server.url)


def test_refused_upgrade_body_is_bounded(raw):
    def script(sock, headers):
        sock.sendall(b"HTTP/1.1 500 Oops\r\nContent-Length: 10000000\r\n\r\n" + b"e" * 100_000)

    server = raw(script)
    with pytest.raises(client.InvalidStatus) as info:
        client.connect(server.url)
    assert info.value.status == 500 and len(info.value.body) == 65536


# -- the closing handshake --------------------------------------------------------------------


def test_server_that_never_answers_the_close(raw):
    """close() returns within close_timeout and TCP is closed (the client gives up waiting)."""

    def script(sock, headers):
        upgrade(sock, headers)
        got, eof = read_frames(sock, WAIT * 2)  # reads, never answers
        return close_code(got), eof

    server = raw(script)
    ws = client.connect(server.url, close_timeout=0.5)
    started = time.monotonic()
    ws.close(1000)
    elapsed = time.monotonic() - started
    assert 0.4 < elapsed < 2, elapsed
    assert server.done.wait(WAIT)
    assert server.results == [(1000, True)]


def test_client_waits_for_the_servers_fin_then_gives_up(raw):
    """After the closing handshake the server closes TCP first (RFC 6455 §7.1.1); one that does not
    is dropped after close_timeout, and the client never sent FIN before that."""
    fin_seen: list = []

    def script(sock, headers):
        upgrade(sock, headers)
        got, eof = read_frames(sock, 0.3)
        sock.sendall(serialize_frame(0x8, (1000).to_bytes(2, "big")))  # answer the Close, keep TCP open
        started = time.monotonic()
        _more, eof = read_frames(sock, WAIT)
        fin_seen.append(time.monotonic() - started)
        return close_code(got), eof

    server = raw(script)
    ws = client.connect(server.url, close_timeout=1.0)
    ws.close()
    assert server.done.wait(WAIT)
    assert server.results == [(1000, True)]
    assert fin_seen[0] > 0.5  # our FIN came from the close timer, not right after the handshake


def test_server_drops_tcp_without_a_close(raw):
    def script(sock, headers):
        upgrade(sock, headers)
        sock.sendall(serialize_frame(0x1, b"last words"))
        time.sleep(0.1)

    server = raw(script)
    ws = client.connect(server.url)
    assert ws.recv(WAIT) == ("text", b"last words")
    with pytest.raises(cowboy_ws.ConnectionClosed) as info:
        ws.recv(WAIT)
    assert (info.value.code, info.value.side) == (1006, "remote")
    assert info.value.terminate_reason == ("error", "closed")
    started = time.monotonic()
    ws.close()
    assert time.monotonic() - started < 0.5
    with pytest.raises(cowboy_ws.ConnectionClosed):
        ws.send("x")


def test_keepalive_timeout_closes_1011(raw):
    def script(sock, headers):
        upgrade(sock, headers)
        got, eof = read_frames(sock, WAIT)  # never answers the pings
        return [f[0] for f in got], close_code(got), eof

    server = raw(script)
    ws = client.connect(server.url, ping_interval=0.2, ping_timeout=0.3, close_timeout=0.5)
    with pytest.raises(cowboy_ws.ConnectionClosed) as info:
        ws.recv(WAIT)
    assert (info.value.code, info.value.side, info.value.terminate_reason) == (1011, "local", "timeout")
    ws.close()
    assert server.done.wait(WAIT + 1)
    opcodes, code, eof = server.results[0]
    assert opcodes[0] == 0x9 and code == 1011 and eof


def test_flood_while_nobody_reads_stays_bounded(raw):
    """A server that pushes without end to a client that does not call recv: reading stops."""
    stop = threading.Event()

    def script(sock, headers):
        upgrade(sock, headers)
        frame = serialize_frame(0x2, b"y" * 16384)
        sent = 0
        sock.settimeout(0.5)
        while not stop.is_set():
            try:
                sock.sendall(frame * 16)
                sent += 16
            except (TimeoutError, OSError):
                break
        return sent

    server = raw(script)
    ws = client.connect(server.url, max_queue=100, max_queue_bytes=1 << 20)
    inbox = ws._inbox
    wait_for(lambda: inbox.paused, what="reading to pause")
    time.sleep(0.5)
    # one read (the loop's shared receive buffer) past the mark at most, plus a frame being reassembled
    assert inbox.in_bytes - inbox.out_bytes < (1 << 20) + READ_BUFFER_SIZE + (44 << 10)
    for _ in range(200):
        assert ws.recv(WAIT)[0] == "binary"
    stop.set()
    ws.close()
    assert server.done.wait(WAIT * 2)
