"""A small blocking WebSocket test client built on :mod:`cowboy_ws.protocol`.

Every read has a deadline: a test that waits for something that never comes
fails with :class:`TimeoutError` instead of hanging.  Besides the events of the
sans-IO :class:`~cowboy_ws.protocol.connection.Connection`, the client keeps
the raw frames it received (``(opcode, fin, rsv1, payload)``) so tests can look
at bits the events hide (RSV1 of a compressed message).
"""

from __future__ import annotations

import socket
import ssl
import time
from typing import Any, Iterable

from cowboy_ws.protocol import deflate as pmd
from cowboy_ws.protocol import handshake
from cowboy_ws.protocol.connection import CLOSED, Connection
from cowboy_ws.protocol.frames import (OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT,
                                       FrameParser, frame_header)
from cowboy_ws.protocol.kernels import mask

TIMEOUT = 5.0
MASK = b"\x37\xfa\x21\x3d"

__all__ = ["Client", "TIMEOUT", "http_request", "masked", "OP_BINARY", "OP_CLOSE", "OP_CONT", "OP_PING",
           "OP_PONG", "OP_TEXT"]


def masked(opcode: int, payload: bytes = b"", *, fin: bool = True, rsv1: bool = False) -> bytes:
    """One frame as a client sends it (masked, RFC 6455 §5.3), without any check: it may be malformed
    (a fragmented or oversized control frame, a reserved opcode)."""
    header = frame_header(opcode, len(payload), fin=fin, rsv1=rsv1, masked=True)
    return header + MASK + mask(payload, MASK)


def _open(port: int, ssl_context: ssl.SSLContext | None, timeout: float) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if ssl_context is not None:
        sock = ssl_context.wrap_socket(sock, server_hostname="localhost")
    return sock


def _read_head(sock: socket.socket, timeout: float) -> tuple[handshake.Response, bytes]:
    """Read an HTTP response head; return it and the bytes that followed it."""
    buf = bytearray()
    deadline = time.monotonic() + timeout
    while True:
        parsed = handshake.parse_response_head(buf)
        if parsed is not None:
            resp, used = parsed
            return resp, bytes(buf[used:])
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no complete HTTP response head")
        sock.settimeout(left)
        data = sock.recv(65536)
        if not data:
            raise ConnectionError(f"connection closed before a response head: {bytes(buf)!r}")
        buf += data


def http_request(port: int, request: bytes, *, timeout: float = TIMEOUT,
                 ssl_context: ssl.SSLContext | None = None) -> tuple[handshake.Response, bytes]:
    """Send a raw HTTP request; return the response head and everything until the server closes."""
    with _open(port, ssl_context, timeout) as sock:
        sock.sendall(request)
        resp, body = _read_head(sock, timeout)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("server did not close after its response")
            sock.settimeout(left)
            data = sock.recv(65536)
            if not data:
                return resp, body
            body += data


class Client:
    """A connected, upgraded WebSocket client (blocking, every read bounded by a timeout)."""

    def __init__(self, sock: socket.socket, conn: Connection, response: handshake.Response,
                 subprotocol: str | None, extensions: list, timeout: float) -> None:
        self.sock = sock
        self.conn = conn
        self.response = response
        self.subprotocol = subprotocol
        self.extensions = extensions
        self.timeout = timeout
        self.raw_frames: list[tuple] = []   # every frame received, in order
        self.eof = False                    # the server closed TCP
        self._raw = FrameParser(mask_required=False, max_frame_size=None, rsv1_allowed=True)
        self._events: list[tuple] = []

    # -- connecting ----------------------------------------------------------------

    @classmethod
    def connect(cls, port: int, path: str = "/ws", *, protocols: Iterable[str] = (), compress: bool = False,
                headers: Iterable[tuple[str, str]] = (), extra: bytes = b"", timeout: float = TIMEOUT,
                ssl_context: ssl.SSLContext | None = None, max_frame_size: int | None = None,
                validate_utf8: bool = True) -> "Client":
        """Open, handshake (RFC 6455 §4.1) and validate; ``extra`` goes in the same write as the request."""
        protocols = list(protocols)
        key = handshake.make_key()
        offer = pmd.client_offer() if compress else None
        request = handshake.build_request(f"127.0.0.1:{port}", path, key, protocols=protocols,
                                          extensions=offer, headers=headers)
        sock = _open(port, ssl_context, timeout)
        try:
            sock.sendall(request + extra)
            resp, rest = _read_head(sock, timeout)
            subprotocol, extensions = handshake.validate_response(resp, key, protocols=protocols,
                                                                  offered_extensions=offer)
        except BaseException:
            sock.close()
            raise
        codec = pmd.negotiate_client(extensions) if compress else None
        conn = Connection("client", max_frame_size=max_frame_size, deflate=codec, validate_utf8=validate_utf8)
        client = cls(sock, conn, resp, subprotocol, extensions, timeout)
        if rest:
            client._feed(rest)
        return client

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.abort()

    # -- sending -------------------------------------------------------------------

    def _flush(self) -> None:
        data = self.conn.data_to_send()
        if data and not self.eof:
            try:
                self.sock.sendall(data)
            except OSError:
                pass  # the server may already be gone; reads will tell

    def send_text(self, data: str | bytes) -> None:
        self.conn.send_text(data)
        self._flush()

    def send_binary(self, data: bytes) -> None:
        self.conn.send_binary(data)
        self._flush()

    def send_ping(self, data: bytes = b"") -> None:
        self.conn.send_ping(data)
        self._flush()

    def send_close(self, code: int | None = 1000, reason: bytes = b"") -> None:
        self.conn.send_close(code, reason)
        self._flush()

    def send_raw(self, data: bytes) -> None:
        """Bytes straight to the socket (malformed frames, several frames in one write)."""
        self.sock.sendall(data)

    def abort(self) -> None:
        """Close TCP without a closing handshake."""
        try:
            self.sock.close()
        except OSError:
            pass

    # -- receiving -----------------------------------------------------------------

    def _feed(self, data: bytes) -> None:
        self.raw_frames.extend(self._raw.feed(data))
        self._events.extend(self.conn.receive_data(data))
        self._flush()  # pongs and the echoed Close go out at once

    def _read_once(self, deadline: float) -> None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"nothing received within {self.timeout}s")
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(1 << 20)
        except socket.timeout:
            raise TimeoutError("read timed out") from None
        except (ConnectionResetError, ssl.SSLError, ssl.SSLEOFError):
            data = b""
        if not data:
            self.eof = True
            self.conn.receive_eof()
            return
        self._feed(data)

    def recv_event(self, timeout: float | None = None) -> tuple:
        """The next event (``("text", b)``, ``("close", code, reason)`` ...) or ``("eof",)`` once TCP closed."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not self._events:
            if self.eof:
                return ("eof",)
            self._read_once(deadline)
        return self._events.pop(0)

    def recv_message(self, timeout: float | None = None) -> tuple:
        """The next text/binary message, skipping pings and pongs; anything else is returned as is."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            event = self.recv_event(max(0.0, deadline - time.monotonic()))
            if event[0] not in ("ping", "pong"):
                return event

    def expect_silence(self, seconds: float) -> None:
        """Assert that nothing arrives (and TCP stays open) for ``seconds``."""
        try:
            event = self.recv_event(seconds)
        except TimeoutError:
            return
        raise AssertionError(f"expected nothing for {seconds}s, got {event!r}")

    def wait_close(self, timeout: float | None = None) -> tuple[int | None, bytes]:
        """Read until the server's Close frame; return (code, reason). Data before it is dropped."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            event = self.recv_event(max(0.0, deadline - time.monotonic()))
            if event[0] == "close":
                return event[1], event[2]
            if event[0] == "eof":
                raise AssertionError("TCP closed without a Close frame")
            if event[0] == "error":
                raise AssertionError(f"the server broke the protocol: {event[1]!r}")

    def wait_eof(self, timeout: float | None = None) -> None:
        """Read (and drop) until the server closes TCP."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not self.eof:
            self._events.clear()
            self._read_once(deadline)

    @property
    def closed(self) -> bool:
        return self.conn.state == CLOSED
