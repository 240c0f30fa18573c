"""Hypothesis against a live server: random and mutated byte streams, handshakes included.

One server per test function, one connection per example.  Whatever arrives,
the server must stay up, never put a traceback on the wire, log no unhandled
error, and end every connection with an HTTP status or a valid Close frame.
The only plain TCP close allowed is for a connection whose input never
completed a request head (after the client's own EOF or the handshake
deadline, both answered 400/408 when anything at all was received).

Bounded: max_examples per test, every read under a 2 s deadline, a short
handshake timeout and idle timeout so an incomplete stream ends quickly.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
import zlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cowboy_ws
from cowboy_ws.protocol import closecodes, handshake
from cowboy_ws.protocol.errors import ProtocolError
from cowboy_ws.protocol.frames import OP_CLOSE, FrameParser, frame_header
from cowboy_ws.protocol.kernels import mask
from wsclient import MASK, Client

READ_DEADLINE = 2.0
HANDSHAKE_TIMEOUT = 0.3
IDLE_TIMEOUT = 250
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), derandomize=False)
#: statuses a request may get: 101 upgrade, 200 / 204 (init "ok" with / without a reply), refusals
STATUSES = {101, 200, 204, 400, 403, 404, 405, 408, 414, 426, 431}


class FuzzEcho:
    """Echo; "crash" raises (1011); "stop" stops; a plain GET on "/plain" is answered by init."""

    @staticmethod
    def init(req, state):
        if req.path == "/plain":
            req.reply(200, {"content-type": "text/plain"}, "plain")
            return ("ok", req, state)
        return ("cowboy_websocket", req, state)

    @staticmethod
    def websocket_handle(frame, state):
        if frame == ("text", b"crash"):
            raise RuntimeError("fuzz crash")
        if frame == ("text", b"stop"):
            return ("stop", state)
        if frame[0] in ("text", "binary"):
            return ("reply", frame, state)
        return ("ok", state)

    @staticmethod
    def websocket_info(_info, state):
        return ("ok", state)


@contextlib.contextmanager
def live_server(caplog):
    caplog.set_level(logging.INFO, logger="cowboy_ws")
    server = cowboy_ws.Server([("/[...]", FuzzEcho, None)], host="127.0.0.1", port=0,
                              handshake_timeout=HANDSHAKE_TIMEOUT,
                              ws_options={"compress": True, "max_frame_size": 65536,
                                          "idle_timeout": IDLE_TIMEOUT, "close_timeout": 500})
    server.start()
    try:
        yield server
        # still alive and serving
        assert server._thread.is_alive()
        with Client.connect(server.port, "/ws", timeout=READ_DEADLINE) as client:
            client.send_text("alive")
            assert client.recv_message() == ("text", b"alive")
            client.send_close(1000)
            assert client.wait_close() == (1000, b"")
        bad = [r for r in caplog.records
               if r.name == "cowboy_ws.loop" or "error handling the request" in r.getMessage()
               or (r.levelno >= logging.ERROR and "fuzz crash" not in str(r.exc_info and r.exc_info[1]))]
        assert not bad, [r.getMessage() for r in bad]
    finally:
        server.shutdown(grace=0.5)
        assert server._stopped.wait(5)


def exchange(port: int, data: bytes, half_close: bool) -> bytes:
    """Send ``data`` (then FIN if ``half_close``); return everything until the server closes."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=READ_DEADLINE)
    deadline = time.monotonic() + READ_DEADLINE + HANDSHAKE_TIMEOUT + IDLE_TIMEOUT / 1000
    out = bytearray()
    try:
        try:
            sock.sendall(data)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server already answered and closed; read what it said
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"server neither answered nor closed; got {bytes(out[:200])!r}")
            sock.settimeout(left)
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                raise AssertionError(f"connection reset after {bytes(out[:200])!r}") from None
            if not chunk:
                return bytes(out)
            out += chunk
    finally:
        sock.close()


def check_frames(data: bytes, *, require_close: bool) -> None:
    """Server output after a 101: well-formed unmasked frames, at most one Close and nothing after it,
    its code valid on the wire."""
    parser = FrameParser(mask_required=False, max_frame_size=None, rsv1_allowed=True)
    try:
        frames = parser.feed(data)
    except ProtocolError as exc:
        raise AssertionError(f"the server sent a malformed frame: {exc}; {data[:200]!r}") from None
    assert not parser.buffered, f"a partial frame at the end: {data[-50:]!r}"
    closes = [i for i, f in enumerate(frames) if f[0] == OP_CLOSE]
    if require_close:
        assert closes, f"no Close frame: {data[:200]!r}"
    if closes:
        assert closes[0] == len(frames) - 1, "frames after the Close"
        payload = frames[-1][3]
        assert len(payload) != 1
        if payload:
            code = int.from_bytes(payload[:2], "big")
            assert closecodes.is_valid_on_wire(code), code
    assert b"Traceback" not in data


def check_answer(response: bytes) -> None:
    """One HTTP response with a status we may give, its body exactly Content-Length (then the close);
    after a 101, well-formed frames."""
    assert b"Traceback" not in response
    parsed = handshake.parse_response_head(response)
    assert parsed is not None, f"not an HTTP response: {response[:200]!r}"
    resp, used = parsed
    assert resp.status in STATUSES, resp
    rest = response[used:]
    if resp.status == 101:
        check_frames(rest, require_close=False)  # the client's FIN may end it without a Close
    else:
        length = int(resp.get("content-length") or 0)
        assert len(rest) == length, f"{resp.status} with {len(rest)} bytes after the head, not {length}"


# -- the streams ---------------------------------------------------------------------------

KEY = "dGhlIHNhbXBsZSBub25jZQ=="
EXTENSION_OFFERS = [
    "permessage-deflate", "permessage-deflate; client_max_window_bits",
    "permessage-deflate; server_max_window_bits=9; client_no_context_takeover",
    "permessage-deflate; server_max_window_bits=8", "permessage-deflate; server_max_window_bits=99",
    "permessage-deflate; x=", ";;", "x-unknown, permessage-deflate", "permessage-deflate; server_no_context_takeover",
]


@st.composite
def requests(draw) -> bytes:
    method = draw(st.sampled_from(["GET", "GET", "GET", "POST", "HEAD", "get"]))
    path = draw(st.sampled_from(["/", "/ws", "/plain", "/a/b?x=1&y", "*", "http://127.0.0.1/ws", "/%zz"]))
    version = draw(st.sampled_from(["HTTP/1.1", "HTTP/1.1", "HTTP/1.0", "HTTP/2.0"]))
    headers = [("Host", draw(st.sampled_from(["127.0.0.1", "127.0.0.1:1", "[::1]", "", "a b"])))]
    if draw(st.booleans()):
        headers += [("Upgrade", draw(st.sampled_from(["websocket", "WebSocket", "h2c", ""]))),
                    ("Connection", draw(st.sampled_from(["Upgrade", "keep-alive, upgrade", "close"]))),
                    ("Sec-WebSocket-Key", draw(st.sampled_from([KEY, KEY, "short", ""]))),
                    ("Sec-WebSocket-Version", draw(st.sampled_from(["13", "13", "8", "13, 8"])))]
    if draw(st.booleans()):
        headers.append(("Sec-WebSocket-Extensions", draw(st.sampled_from(EXTENSION_OFFERS))))
    if draw(st.booleans()):
        headers.append(("Sec-WebSocket-Protocol", draw(st.sampled_from(["chat", "a, b", ",", "x y"]))))
    if draw(st.booleans()):
        headers.append(("Origin", draw(st.sampled_from(["https://a.example", "null"]))))
    extra = draw(st.lists(st.tuples(st.from_regex(r"[A-Za-z-]{1,12}", fullmatch=True),
                                    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=30)),
                          max_size=3))
    head = f"{method} {path} {version}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers + extra) + "\r\n"
    return head.encode()


@st.composite
def mutated(draw, base: bytes) -> bytes:
    """``base`` with a few byte-level mutations: flips, inserts, deletes, duplicates, truncation."""
    data = bytearray(base)
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "duplicate", "truncate", "lf"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=20))
        elif op == "delete":
            del data[pos:pos + draw(st.integers(1, 20))]
        elif op == "duplicate":
            data[pos:pos] = data[pos:pos + draw(st.integers(1, 40))]
        elif op == "truncate":
            del data[pos:]
        elif op == "lf":
            data = bytearray(bytes(data).replace(b"\r\n", b"\n", 1))
    return bytes(data)


def client_frame(opcode: int, payload: bytes, *, fin: bool = True, rsv1: bool = False, masked: bool = True) -> bytes:
    header = frame_header(opcode, len(payload), fin=fin, rsv1=rsv1, masked=masked)
    return header + (MASK + mask(payload, MASK) if masked else payload)


def deflated(payload: bytes) -> bytes:
    """One permessage-deflate message body (RFC 7692 §7.2.1: raw deflate, sync flush, tail dropped)."""
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    return (compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]


@st.composite
def frames(draw) -> bytes:
    out = []
    for _ in range(draw(st.integers(0, 8))):
        opcode = draw(st.sampled_from([1, 1, 2, 2, 0, 9, 10, 8, 3, 11]))
        payload = draw(st.one_of(st.binary(max_size=200), st.text(max_size=60).map(str.encode),
                                 st.sampled_from([b"crash", b"stop", b"\x03\xe8", b"\x03\xe8bye", b"\x00\x00",
                                                  b"\xff\xfe\xfd", b"x" * 70000])))
        fin = draw(st.sampled_from([True, True, True, False]))
        rsv1 = draw(st.sampled_from([False, False, False, True]))
        if rsv1 and draw(st.booleans()):
            payload = deflated(payload)
        masked_ = draw(st.sampled_from([True] * 9 + [False]))
        out.append(client_frame(opcode, payload, fin=fin, rsv1=rsv1, masked=masked_))
    return b"".join(out)


# -- the tests -----------------------------------------------------------------------------


def test_fuzz_handshakes(caplog):
    with live_server(caplog) as server:
        @FUZZ
        @given(data=st.one_of(st.binary(max_size=300), requests().flatmap(mutated), requests()),
               half_close=st.sampled_from([True] * 7 + [False]))
        def run(data, half_close):
            response = exchange(server.port, data, half_close)
            if not data:  # nothing to answer: a plain close (at EOF or the handshake deadline)
                assert response == b""
                return
            check_answer(response)  # anything at all received gets an answer: 400 at EOF, 408 at the deadline

        run()


def test_fuzz_frames_after_a_valid_upgrade(caplog):
    with live_server(caplog) as server:
        @FUZZ
        @given(compress=st.booleans(), stream=frames().flatmap(mutated),
               close=st.sampled_from([b"", client_frame(OP_CLOSE, b"\x03\xe8")]))
        def run(compress, stream, close):
            extra = "Sec-WebSocket-Extensions: permessage-deflate\r\n" if compress else ""
            request = (f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                       f"Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n").encode()
            response = exchange(server.port, request + stream + close, half_close=False)
            parsed = handshake.parse_response_head(response)
            assert parsed is not None, response[:200]
            resp, used = parsed
            assert resp.status == 101
            # no FIN from us: the server must end with a Close (error code, echo, stop or idle timeout)
            check_frames(response[used:], require_close=True)

        run()


def test_fuzz_server_survives_random_bytes_after_upgrade(caplog):
    with live_server(caplog) as server:
        @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
        @given(stream=st.binary(min_size=1, max_size=400))
        def run(stream):
            request = (f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                       f"Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()
            response = exchange(server.port, request + stream, half_close=False)
            resp, used = handshake.parse_response_head(response)
            assert resp.status == 101
            check_frames(response[used:], require_close=True)

        run()
