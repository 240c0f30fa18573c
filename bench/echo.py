"""End-to-end WebSocket server benchmarks: cowboy_ws (C and pure kernels) against its peers.

Five scenarios, each server in its own subprocess on 127.0.0.1 (pinned to one core; the load
client, this process, to another), every number taken from the *server* process:

  1. echo16   16-byte text echo, 64 messages in flight
  2. echo64k  64 KiB binary echo, 4, 16 and 64 in flight (MB/s one way; --window64k)
  3. json     1 KiB JSON text echo with permessage-deflate negotiated (client compresses, inflates);
              server -> client bytes per message; cowboy_ws again with other deflate_opts (context
              takeover at windows 15, 12, 10, memory level 5, websockets' settings; DEFLATE_VARIANTS)
  4. bcast    one 16-byte message broadcast to 1,000 connections per "go" from a control connection
  5. idle     10,000 idle connections: RSS per connection (cowboy_ws: plain / hibernated, with and
              without compression; peers: plain)

Servers (see bench/_servers.py): cowboy_ws C (only if ``cowboy_ws.backend() == "c"`` in a fresh
interpreter), cowboy_ws pure (``COWBOY_WS_PURE=1``), picows, aiohttp, websockets, wsproto (a small
selectors loop); Erlang Cowboy only if an ``erl`` with Cowboy is found (skipped otherwise).
Reported per server: messages/s (client wall clock), server CPU us per message
(``getrusage`` user+system of the server process, read before and after each run), peak RSS
(``VmHWM``), the share of its core the load client used (``cli%``: near 100 means the client was
the limit), and ratios to cowboy_ws C (to cowboy_ws pure when the C backend is absent).  Every
figure is the median of interleaved rounds (each server once per round, order alternating),
with [min - max]; ratios are medians of the per-round ratios.

    python bench/echo.py                      # all scenarios, under ~10 minutes on 2 cores
    python bench/echo.py --quick              # about a minute: fewer messages and rounds, 2,000 idle
    python bench/echo.py --scenarios 1,3 --servers cowboy_ws,websockets --json out.json
    python bench/echo.py --idle-breakdown     # tracemalloc: what one idle cowboy_ws connection holds
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import random
import resource
import select
import selectors
import socket
import statistics
import struct
import sys
import time
from typing import Any, Callable

try:  # the load client inflates every compressed reply: zlib-ng's inflate is the cheaper one
    from zlib_ng import zlib_ng as zlib
except ImportError:  # pragma: no cover - zlib-ng is a dependency of cowboy_ws itself
    import zlib  # type: ignore[no-redef]

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(1, os.path.dirname(HERE))  # the repository root, for the import checks

from _perf import PerfRecorder, perf_missing  # noqa: E402
from _servers import IMPORTS, PAYLOAD, ServerProc, cowboy_backend_c_available, env_for, find_erlang_cowboy  # noqa: E402

IO_TIMEOUT = 10.0          # any single wait on a socket
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10
DEFLATE_OFFER = "permessage-deflate; client_max_window_bits"
C_LABEL, PURE_LABEL = "cowboy_ws C", "cowboy_ws pure"
#: cowboy_ws C with Prometheus metrics on (only when asked for: --servers cowboy_ws_c_metrics)
METRICS_LABEL = "cowboy_ws C metrics"

# --- client-side framing (independent of cowboy_ws, which others are changing) --------------------


def mask_bytes(data: bytes, key: bytes) -> bytes:
    """RFC 6455 §5.3 masking, one big-int XOR."""
    n = len(data)
    if not n:
        return b""
    k = int.from_bytes((key * (n // 4 + 1))[:n], "little")
    return (int.from_bytes(data, "little") ^ k).to_bytes(n, "little")


def client_frame(opcode: int, payload: bytes, rsv1: bool = False, key: bytes | None = None) -> bytes:
    """One masked, final client frame (RFC 6455 §5.2)."""
    key = key or os.urandom(4)
    n = len(payload)
    b0 = 0x80 | (0x40 if rsv1 else 0) | opcode
    if n < 126:
        head = bytes((b0, 0x80 | n))
    elif n < 65536:
        head = bytes((b0, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((b0, 0x80 | 127)) + n.to_bytes(8, "big")
    return head + key + mask_bytes(payload, key)


def server_frame_size(n: int) -> int:
    """Size of an unmasked server frame carrying ``n`` payload bytes."""
    return n + (2 if n < 126 else 4 if n < 65536 else 10)


class Deflate:
    """What permessage-deflate the server's response agreed to (RFC 7692 §7.1)."""

    def __init__(self, header: str) -> None:
        self.header = header
        self.client_wbits = 15
        self.client_no_ctx = False
        self.server_no_ctx = False
        for param in header.split(";")[1:]:
            name, _, value = param.strip().partition("=")
            name = name.strip().lower()
            value = value.strip().strip('"')
            if name == "client_max_window_bits" and value:
                self.client_wbits = int(value)
            elif name == "client_no_context_takeover":
                self.client_no_ctx = True
            elif name == "server_no_context_takeover":
                self.server_no_ctx = True

    @property
    def key(self) -> tuple:
        return (self.client_wbits, self.client_no_ctx)

    def compressor(self) -> Any:
        # zlib cannot deflate raw streams with an 8-bit window; 9 is what every peer does for 8
        return zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -max(9, self.client_wbits))


def deflate_message(comp: Any, data: bytes) -> bytes:
    """RFC 7692 §7.2.1: compress, Z_SYNC_FLUSH, strip the trailing 00 00 ff ff."""
    out = comp.compress(data) + comp.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


def _request(port: int, path: str, key: str, offer: str | None) -> bytes:
    lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Upgrade: websocket", "Connection: Upgrade",
             f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
    if offer:
        lines.append(f"Sec-WebSocket-Extensions: {offer}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _check_response(head: bytes, key: str) -> Deflate | None:
    lines = head.decode("latin-1").split("\r\n")
    if not lines[0].startswith("HTTP/1.1 101"):
        raise ConnectionError(f"handshake refused: {head[:200]!r}")
    want = base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()
    accept = ext = None
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "sec-websocket-accept":
            accept = value.strip()
        elif name == "sec-websocket-extensions":
            ext = value.strip()
    if accept != want:
        raise ConnectionError(f"bad Sec-WebSocket-Accept {accept!r}")
    if ext:
        if not ext.lower().startswith("permessage-deflate"):
            raise ConnectionError(f"unexpected extension {ext!r}")
        return Deflate(ext)
    return None


def _read_head(sock: socket.socket) -> bytes:
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(4096)
        if not data:
            raise ConnectionError(f"closed during the handshake: {buf[:200]!r}")
        buf += data
        if len(buf) > 65536:
            raise ConnectionError("handshake response too long")
    head, _, rest = buf.partition(b"\r\n\r\n")
    if rest:
        raise ConnectionError(f"unexpected bytes after the handshake: {rest[:50]!r}")
    return head


def _read_frame(sock: socket.socket) -> tuple[int, bytes]:
    """One whole server frame from a blocking socket: (first byte, payload)."""
    buf = b""
    while True:
        if len(buf) >= 2:
            ln = buf[1] & 0x7F
            h = 2 if ln < 126 else 4 if ln == 126 else 10
            if len(buf) >= h:
                if ln == 126:
                    ln = int.from_bytes(buf[2:4], "big")
                elif ln == 127:
                    ln = int.from_bytes(buf[2:10], "big")
                if len(buf) >= h + ln:
                    if len(buf) > h + ln:
                        raise ConnectionError(f"unexpected bytes after a frame: {buf[h + ln:h + ln + 20]!r}")
                    return buf[0], buf[h:h + ln]
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("closed while waiting for a frame")
        buf += data


def ws_open(port: int, path: str = "/", offer: str | None = None) -> tuple[socket.socket, Deflate | None]:
    """A blocking client WebSocket on 127.0.0.1:port (handshake by hand, accept key checked)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall(_request(port, path, key, offer))
        neg = _check_response(_read_head(sock), key)
    except BaseException:
        sock.close()
        raise
    if offer and neg is None:
        sock.close()
        raise ConnectionError("permessage-deflate offered but not negotiated")
    return sock, neg


def touch_frame(neg: Deflate | None) -> bytes:
    """The one 16-byte text message an idle connection sends (compressed when negotiated)."""
    if neg is None:
        return client_frame(OP_TEXT, PAYLOAD)
    return client_frame(OP_TEXT, deflate_message(neg.compressor(), PAYLOAD), rsv1=True)


def ws_open_many(port: int, path: str, n: int, offer: str | None = None, touch: bool = False,
                 batch: int = 128, deadline: float | None = None) -> tuple[list[socket.socket], Deflate | None]:
    """``n`` client connections, opened ``batch`` at a time (requests pipelined across a batch).

    With ``touch`` each connection then sends one 16-byte text message and waits for its echo,
    so that the server has been through its message path once.  On error every socket is closed.
    """
    socks: list[socket.socket] = []
    neg0: Deflate | None = None
    frame = b""
    deadline = deadline or time.monotonic() + 600
    try:
        while len(socks) < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"opened only {len(socks)} of {n} connections in time")
            group = []
            for _ in range(min(batch, n - len(socks))):
                s = socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT)
                socks.append(s)
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                key = base64.b64encode(os.urandom(16)).decode()
                s.sendall(_request(port, path, key, offer))
                group.append((s, key))
            for s, key in group:
                neg = _check_response(_read_head(s), key)
                if offer and neg is None:
                    raise ConnectionError("permessage-deflate offered but not negotiated")
                if neg0 is None and neg is not None:
                    neg0 = neg
                    frame = touch_frame(neg)
                elif (neg and neg.header) != (neg0 and neg0.header):
                    raise ConnectionError(f"negotiation differs between connections: {neg and neg.header!r}")
            if touch:
                if not frame:
                    frame = touch_frame(neg0)
                for s, _ in group:
                    s.sendall(frame)
                for s, _ in group:
                    b0, _payload = _read_frame(s)
                    if b0 & 0x0F != OP_TEXT:
                        raise ConnectionError(f"unexpected reply frame type {b0:#x}")
        return socks, neg0
    except BaseException:
        close_all(socks)
        raise


def close_all(socks: list[socket.socket]) -> None:
    for s in socks:
        try:
            s.close()
        except OSError:
            pass


def ws_close(sock: socket.socket) -> None:
    """Send Close 1000 and wait (bounded) for the server to end the connection."""
    try:
        sock.setblocking(True)
        sock.settimeout(2.0)
        sock.sendall(client_frame(OP_CLOSE, (1000).to_bytes(2, "big")))
        end = time.monotonic() + 2.0
        while time.monotonic() < end:
            if not sock.recv(65536):
                break
    except OSError:
        pass
    finally:
        sock.close()


# --- reply counting ------------------------------------------------------------------------------


class FixedReplies:
    """Counts fixed-size unmasked server frames by byte count, checking the header bytes by stride."""

    def __init__(self, payload_len: int, b0: int) -> None:
        self.size = server_frame_size(payload_len)
        self.b0 = b0
        self.b1 = payload_len if payload_len < 126 else 126 if payload_len < 65536 else 127
        self.got = 0
        self.buf = bytearray(4 << 20)
        self.view = memoryview(self.buf)

    def recv(self, sock: socket.socket) -> int:
        """recv_into once; returns the number of complete frames so far (raises on EAGAIN / EOF)."""
        n = sock.recv_into(self.view)
        if not n:
            raise ConnectionError(f"server closed after {self.got // self.size} replies")
        buf, size, got = self.buf, self.size, self.got
        off = -got % size           # where the next frame starts in this chunk
        heads = buf[off:n:size]
        if heads.count(self.b0) != len(heads):
            raise ConnectionError(f"unexpected reply bytes: {bytes(buf[off:off + 16])!r}")
        off1 = (1 - got) % size     # where the next length byte is (it may start the chunk)
        lens = buf[off1:n:size]
        if lens.count(self.b1) != len(lens):
            raise ConnectionError(f"unexpected reply length byte: {bytes(buf[off1:off1 + 16])!r}")
        self.got += n
        return self.got // size


class BigReplies:
    """Fixed-size large server frames: each header is read and checked, each payload discarded
    in the kernel (``recv_into(..., MSG_TRUNC)`` on TCP frees the data without copying it), so the
    client does not pay a copy per message."""

    def __init__(self, payload_len: int, b0: int) -> None:
        self.size = server_frame_size(payload_len)
        self.hlen = self.size - payload_len
        self.head = bytes((b0, 126 if payload_len < 65536 else 127)) + \
            payload_len.to_bytes(self.hlen - 2, "big")
        self.hbuf = bytearray(self.hlen)
        self.hview = memoryview(self.hbuf)
        self.sink = memoryview(bytearray(1 << 16))
        self.got = 0

    def recv(self, sock: socket.socket) -> int:
        pos = self.got % self.size
        if pos < self.hlen:
            n = sock.recv_into(self.hview[pos:])
            if n and pos + n == self.hlen and self.hbuf != self.head:
                raise ConnectionError(f"unexpected reply header {bytes(self.hbuf)!r}")
        else:
            n = sock.recv_into(self.sink, self.size - pos, socket.MSG_TRUNC)
        if not n:
            raise ConnectionError(f"server closed after {self.got // self.size} replies")
        self.got += n
        return self.got // self.size


class BytesOut:
    """Client messages to send, from ``frames(i, k)`` (the bytes of messages i..i+k-1)."""

    def __init__(self, frames: Callable[[int, int], Any]) -> None:
        self.frames = frames
        self.buf = memoryview(b"")

    def add(self, i: int, k: int) -> None:
        data = self.frames(i, k)
        self.buf = memoryview(bytes(self.buf) + bytes(data)) if self.buf else memoryview(data)

    def pending(self) -> bool:
        return bool(self.buf)

    def send(self, sock: socket.socket) -> None:
        try:
            self.buf = self.buf[sock.send(self.buf):]
        except (BlockingIOError, InterruptedError):
            pass

    def close(self) -> None:
        pass


class FileOut:
    """Identical pre-built frames sent with ``os.sendfile`` from a memfd: the kernel references the
    pages instead of copying 64 KiB per message out of this process."""

    def __init__(self, frame: bytes, count: int) -> None:
        self.fd = os.memfd_create("bench-frames")
        data = frame * count
        os.write(self.fd, data)
        self.flen = len(data)
        self.fsize = len(frame)
        self.off = 0
        self.left = 0

    def add(self, _i: int, k: int) -> None:
        self.left += k * self.fsize

    def pending(self) -> bool:
        return self.left > 0

    def send(self, sock: socket.socket) -> None:
        while self.left:
            try:
                n = os.sendfile(sock.fileno(), self.fd, self.off, min(self.left, self.flen - self.off))
            except (BlockingIOError, InterruptedError):
                return
            if not n:
                return
            self.off = (self.off + n) % self.flen
            self.left -= n

    def close(self) -> None:
        os.close(self.fd)


class DeflateReplies:
    """Parses server frames one by one, inflating permessage-deflate messages (RFC 7692 §7.2.2).

    ``recv`` only frames the replies (and counts the whole messages), so that the driver sends the
    next messages at once; ``work`` then inflates what ``recv`` framed, while the server handles
    them.  The load client keeps its own per-reply work off the round trip: against a server that
    answers a whole batch in one write, inflating first would put the client's time in series with
    the server's.
    """

    def __init__(self, neg: Deflate | None) -> None:
        self.neg = neg
        self.inflater = zlib.decompressobj(-15)
        self.buf = bytearray(1 << 20)
        self.view = memoryview(self.buf)
        self.have = 0
        self.messages = 0
        self.inflated = 0
        self.wire = 0  # bytes of the data frames received, headers included (server -> client)
        self.parts: list[bytes] = []
        self.compressed = False
        self.first: bytes | None = None
        self.todo: list[tuple[bytes, bool]] = []  # whole messages framed by recv, for work

    def recv(self, sock: socket.socket) -> int:
        n = sock.recv_into(self.view[self.have:])
        if not n:
            raise ConnectionError(f"server closed after {self.messages} replies")
        have = self.have + n
        buf = self.buf
        pos = 0
        while have - pos >= 2:
            b0 = buf[pos]
            b1 = buf[pos + 1]
            ln = b1 & 0x7F
            h = 2
            if ln == 126:
                if have - pos < 4:
                    break
                ln = int.from_bytes(buf[pos + 2:pos + 4], "big")
                h = 4
            elif ln == 127:
                if have - pos < 10:
                    break
                ln = int.from_bytes(buf[pos + 2:pos + 10], "big")
                h = 10
            if b1 & 0x80:
                raise ConnectionError("masked server frame")
            if have - pos < h + ln:
                if h + ln > len(buf):
                    raise ConnectionError(f"reply frame of {ln} bytes is too big for this client")
                break
            payload = bytes(self.view[pos + h:pos + h + ln])
            pos += h + ln
            op = b0 & 0x0F
            if op >= 8:
                if op == OP_CLOSE:
                    raise ConnectionError(f"server sent Close {payload[:2].hex()} {payload[2:]!r}")
                continue  # no pings from these servers; pongs ignored
            if op != OP_CONT:
                self.compressed = bool(b0 & 0x40)
            self.wire += h + ln
            self.parts.append(payload)
            if b0 & 0x80:
                data = b"".join(self.parts) if len(self.parts) > 1 else self.parts[0]
                self.parts = []
                self.todo.append((data, self.compressed))
                self.messages += 1
        if pos:
            rest = have - pos
            if rest:
                buf[:rest] = buf[pos:have]
            have = rest
        self.have = have
        return self.messages

    def work(self) -> None:
        """Inflate the messages framed so far (in order: the server's context runs on from one to the next)."""
        todo = self.todo
        if not todo:
            return
        self.todo = []
        for data, compressed in todo:
            if compressed:
                if self.neg is None:
                    raise ConnectionError("RSV1 set without permessage-deflate")
                if self.neg.server_no_ctx:
                    self.inflater = zlib.decompressobj(-15)
                data = self.inflater.decompress(data + b"\x00\x00\xff\xff")
            if self.first is None:
                self.first = data
            self.inflated += len(data)


def drive(sock: socket.socket, n: int, in_flight: int, out: Any, replies: Any, deadline: float,
          topup: int = 1, blocking: bool = False) -> None:
    """Keep up to ``in_flight`` messages outstanding until ``n`` replies are back; bounded waits only.

    ``out`` (:class:`BytesOut` or :class:`FileOut`) sends the client messages; ``replies.recv(sock)``
    does one ``recv_into`` and returns the number of replies complete so far.  New messages are sent
    once at least ``topup`` replies came back.  ``blocking`` (small messages, BytesOut): one blocking
    ``recv_into`` per read, bounded by the kernel's SO_RCVTIMEO (one syscall, no select), and
    ``sendall``; otherwise a non-blocking socket and select, which never deadlocks on large messages.
    """
    sent = min(in_flight, n)
    done = 0
    work = getattr(replies, "work", None)  # the client's per-reply work, done after the next send
    if blocking:
        sock.settimeout(None)
        tv = struct.pack("ll", int(IO_TIMEOUT), 0)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)
        recv, sendall, frames = replies.recv, sock.sendall, out.frames
        sendall(frames(0, sent))
        while done < n:
            try:
                done = recv(sock)
            except (BlockingIOError, InterruptedError):
                raise TimeoutError(f"no reply for {IO_TIMEOUT} s after {done} of {n} replies") from None
            more = done + in_flight - sent
            if more >= topup or (more > 0 and sent + more >= n):
                more = min(more, n - sent)
                if more > 0:
                    sendall(frames(sent, more))
                    sent += more
            if work is not None:
                work()
                if time.monotonic() > deadline:
                    raise TimeoutError(f"gave up after {done} of {n} replies")
    else:
        sock.setblocking(False)
        out.add(0, sent)
        while done < n:
            if out.pending():
                out.send(sock)
            try:
                done = replies.recv(sock)
            except (BlockingIOError, InterruptedError):
                r, w, _ = select.select([sock], [sock] if out.pending() else [], [], IO_TIMEOUT)
                if not r and not w:
                    raise TimeoutError(f"no progress for {IO_TIMEOUT} s after {done} of {n} replies")
                continue
            more = done + in_flight - sent
            if more >= topup or (more > 0 and sent + more >= n):
                more = min(more, n - sent)
                if more > 0:
                    out.add(sent, more)
                    sent += more
            if work is not None:
                if out.pending():
                    out.send(sock)
                work()
            if time.monotonic() > deadline:
                raise TimeoutError(f"gave up after {done} of {n} replies")
    if work is not None:
        work()
    if done != n:
        raise ConnectionError(f"{done - n} replies more than sent")
    sock.setblocking(True)
    sock.settimeout(IO_TIMEOUT)


# --- the measured unit ------------------------------------------------------------------------------


class Run(dict):
    """One measured run: n (messages), wall (s), cpu (server user+sys s), sys (server sys s), client (client CPU s)."""


def measured(srv: ServerProc, n: int, body: Callable[[], None]) -> Run:
    c0 = srv.cpu()
    p0 = time.process_time()
    t0 = time.perf_counter()
    body()
    wall = time.perf_counter() - t0
    p1 = time.process_time()
    c1 = srv.cpu()
    return Run(n=n, wall=wall, cpu=c1[0] + c1[1] - c0[0] - c0[1], sys=c1[1] - c0[1], client=p1 - p0)


# scenario 1 and 2: fixed-size echo -------------------------------------------------------------------


def echo_fixed(payload_len: int, opcode: int, in_flight: int, topup: int = 1, blocking: bool = False):
    """A run of ``n`` echoes of one fixed message; large ones use FileOut + BigReplies (no copies)."""
    payload = (PAYLOAD * (payload_len // len(PAYLOAD) + 1))[:payload_len]
    big = payload_len >= 4096 and hasattr(os, "memfd_create") and hasattr(socket, "MSG_TRUNC")
    pre = [client_frame(opcode, payload) for _ in range(in_flight)]
    size = len(pre[0])
    pre_view = memoryview(b"".join(pre))

    def frames(_i: int, k: int) -> Any:
        return pre_view[:k * size]

    def make_out() -> Any:
        return FileOut(pre[0], in_flight) if big else BytesOut(frames)

    def make_replies() -> Any:
        return BigReplies(payload_len, 0x80 | opcode) if big else FixedReplies(payload_len, 0x80 | opcode)

    def run(srv: ServerProc, n: int, max_s: float) -> Run:
        sock, _ = ws_open(srv.port)
        out = make_out()
        try:
            settle = min(n, max(in_flight * 4, 2000 if payload_len < 1024 else 50))
            drive(sock, settle, in_flight, out, make_replies(), time.monotonic() + max_s, topup, blocking)
            rep = make_replies()
            return measured(srv, n, lambda: drive(sock, n, in_flight, out, rep, time.monotonic() + max_s,
                                                  topup, blocking))
        finally:
            out.close()
            ws_close(sock)

    return run


def echo64k_key(window: int) -> str:
    """Scenario 2's key (tables, --json, targets) for one depth; 4 in flight keeps the historical name."""
    return "echo64k" if window == 4 else f"echo64k_w{window}"


def windows_arg(text: str) -> list[int]:
    """``--window64k``: comma-separated message counts, each 1-1024."""
    try:
        windows = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not windows or any(not 1 <= w <= 1024 for w in windows):
        raise argparse.ArgumentTypeError(f"each window must be 1-1024, got {text!r}")
    return list(dict.fromkeys(windows))


# scenario 3: JSON with permessage-deflate ----------------------------------------------------------

FIRST = ["Ana", "Bruno", "Chen", "Dmitri", "Elif", "Farah", "Goran", "Hana", "Ivan", "Jia", "Kofi", "Lena",
         "Mateo", "Nora", "Omar", "Priya", "Quinn", "Rosa", "Sven", "Tomoko", "Uma", "Viktor", "Wen", "Yusuf"]
LAST = ["Silva", "Novak", "Kim", "Okafor", "Schmidt", "Rossi", "Haddad", "Tanaka", "Kowalski", "Garcia",
        "Nguyen", "Larsen", "Moreau", "Petrov", "Ibrahim", "Costa", "Andersson", "Mehta", "Dubois", "Yilmaz"]
WORDS = ("order shipped delayed warehouse invoice refund payment pending confirmed express standard "
         "customer support ticket priority update inventory restock discount coupon gift wrap fragile "
         "signature required tracking carrier parcel weekend delivery window morning evening").split()
CITIES = ["Lisbon", "Prague", "Seoul", "Lagos", "Berlin", "Milan", "Beirut", "Osaka", "Krakow", "Madrid",
          "Hanoi", "Oslo", "Lyon", "Sofia", "Cairo", "Porto", "Uppsala", "Pune", "Nantes", "Izmir"]


def json_pool(count: int = 512, target: int = 1024, seed: int = 6455) -> list[bytes]:
    """``count`` distinct, realistic ~1 KiB JSON documents (order events), from a seeded random."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        doc: dict[str, Any] = {
            "type": rng.choice(["order.created", "order.updated", "order.shipped", "order.cancelled"]),
            "id": f"{rng.getrandbits(64):016x}",
            "seq": 1_000_000 + i * 7 + rng.randrange(7),
            "ts": f"2025-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:"
                  f"{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}.{rng.randrange(1000):03d}Z",
            "customer": {"id": rng.randrange(10 ** 7), "name": f"{first} {last}",
                         "email": f"{first.lower()}.{last.lower()}{rng.randrange(100)}@example.com",
                         "city": rng.choice(CITIES), "vip": rng.random() < 0.2},
            "items": [],
            "currency": rng.choice(["EUR", "USD", "GBP", "JPY"]),
            "note": "",
        }
        while len(json.dumps(doc)) < target - 200:
            doc["items"].append({"sku": f"SKU-{rng.randrange(10 ** 6):06d}",
                                 "name": " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 3))),
                                 "qty": rng.randint(1, 9), "price": round(rng.uniform(0.5, 500), 2)})
        doc["total"] = round(sum(it["qty"] * it["price"] for it in doc["items"]), 2)
        while len(json.dumps(doc)) < target:
            doc["note"] = (doc["note"] + " " + rng.choice(WORDS)).strip()
        out.append(json.dumps(doc).encode())
    return out


class DeflateStream:
    """The client's whole message stream for one run, compressed once up front (context takeover)."""

    _cache: dict[tuple, "DeflateStream"] = {}

    def __init__(self, neg: Deflate, pool: list[bytes], count: int) -> None:
        comp = neg.compressor()
        frames, offs = [], [0]
        for i in range(count):
            msg = pool[i % len(pool)]
            if neg.client_no_ctx:
                comp = neg.compressor()
            f = client_frame(OP_TEXT, deflate_message(comp, msg), rsv1=True)
            frames.append(f)
            offs.append(offs[-1] + len(f))
        self.blob = memoryview(b"".join(frames))
        self.offs = offs
        self.raw_total = [0]
        acc = 0
        for i in range(count):
            acc += len(pool[i % len(pool)])
            self.raw_total.append(acc)
        self.wire = offs[-1]

    @classmethod
    def get(cls, neg: Deflate, pool: list[bytes], count: int) -> "DeflateStream":
        key = neg.key + (count, id(pool))
        if key not in cls._cache:
            cls._cache[key] = cls(neg, pool, count)
        return cls._cache[key]

    def frames(self, base: int) -> Callable[[int, int], Any]:
        blob, offs = self.blob, self.offs

        def f(i: int, k: int) -> Any:
            return blob[offs[base + i]:offs[base + i + k]]
        return f


def json_deflate(pool: list[bytes], in_flight: int, settle: int):
    def run(srv: ServerProc, n: int, max_s: float) -> Run:
        sock, neg = ws_open(srv.port, "/", DEFLATE_OFFER)
        assert neg is not None
        try:
            stream = DeflateStream.get(neg, pool, settle + n)
            rep = DeflateReplies(neg)
            drive(sock, settle, in_flight, BytesOut(stream.frames(0)), rep, time.monotonic() + max_s)
            if rep.first != pool[0]:
                raise ConnectionError(f"first reply differs from what was sent: {rep.first[:60]!r}")
            rep2 = DeflateReplies(neg)
            rep2.inflater = rep.inflater  # the server's context goes on
            r = measured(srv, n, lambda: drive(sock, n, in_flight, BytesOut(stream.frames(settle)), rep2,
                                                time.monotonic() + max_s))
            want = stream.raw_total[settle + n] - stream.raw_total[settle]
            if rep2.inflated != want:
                raise ConnectionError(f"inflated {rep2.inflated} bytes, sent {want}")
            r["wire_out"] = stream.offs[settle + n] - stream.offs[settle]
            r["wire_in"] = rep2.wire
            r["raw"] = want
            r["neg"] = neg.header
            return r
        finally:
            ws_close(sock)
    return run


# scenario 4: broadcast -------------------------------------------------------------------------------


class Broadcast:
    """1 control + ``members`` connections to one server, kept open across the rounds."""

    DONE = bytes((0x81, 4)) + b"done"

    def __init__(self, srv: ServerProc, members: int) -> None:
        self.srv = srv
        self.n = members
        self.control: socket.socket | None = None
        self.socks: list[socket.socket] = []
        self.sel = selectors.DefaultSelector()
        self.got: dict[int, int] = {}
        self.rounds = 0
        self.buf = bytearray(1 << 20)
        self.view = memoryview(self.buf)
        self.fsize = server_frame_size(len(PAYLOAD))
        try:
            self.control, _ = ws_open(srv.port, "/control")
            self.socks, _ = ws_open_many(srv.port, "/member", members)
            for s in self.socks:
                s.setblocking(False)
                self.sel.register(s, selectors.EVENT_READ, s)
                self.got[s.fileno()] = 0
            end = time.monotonic() + 30
            count_frame = client_frame(OP_TEXT, b"count")
            while True:
                self.control.sendall(count_frame)
                _b0, payload = _read_frame(self.control)
                if int(payload) == members:
                    break
                if time.monotonic() > end:
                    raise TimeoutError(f"only {int(payload)} of {members} members joined")
                time.sleep(0.05)
        except BaseException:
            self.close()
            raise

    def _drain(self, timeout: float) -> int:
        """One pass over the readable member sockets; returns bytes read."""
        total = 0
        buf, view, size = self.buf, self.view, self.fsize
        for key, _ in self.sel.select(timeout):
            s = key.data
            try:
                n = s.recv_into(view)
            except (BlockingIOError, InterruptedError):
                continue
            if not n:
                raise ConnectionError("a member connection was closed by the server")
            fd = s.fileno()
            got = self.got[fd]
            off = -got % size
            if off < n:
                heads = buf[off:n:size]
                if heads.count(0x81) != len(heads):
                    raise ConnectionError(f"unexpected broadcast bytes: {bytes(buf[off:off + 20])!r}")
            self.got[fd] = got + n
            total += n
        return total

    def run(self, rounds: int, max_s: float) -> Run:
        go = client_frame(OP_TEXT, b"go")
        control = self.control
        assert control is not None
        deadline = time.monotonic() + max_s
        want_total = (self.rounds + rounds) * self.n * self.fsize
        have_total = sum(self.got.values())

        def body() -> None:
            nonlocal have_total
            pending = b""
            for r in range(rounds):
                control.sendall(go)
                if r % 8 == 7:  # read the members now and then, while the server works
                    have_total += self._drain(0)
                while len(pending) < 6:
                    data = control.recv(4096)
                    if not data:
                        raise ConnectionError("control connection closed")
                    pending += data
                if pending[:6] != self.DONE:
                    raise ConnectionError(f"unexpected control reply {pending[:20]!r}")
                pending = pending[6:]
                if time.monotonic() > deadline:
                    raise TimeoutError(f"gave up after {r} broadcasts")
            while have_total < want_total:
                got = self._drain(IO_TIMEOUT)
                if not got:
                    raise TimeoutError(f"members got {have_total} of {want_total} bytes")
                have_total += got
                if time.monotonic() > deadline:
                    raise TimeoutError("gave up draining the members")

        r = measured(self.srv, rounds * self.n, body)
        self.rounds += rounds
        bad = [g for g in self.got.values() if g != self.rounds * self.fsize]
        if bad:
            raise ConnectionError(f"{len(bad)} members got a wrong byte count, e.g. {bad[0]}")
        return r

    def close(self) -> None:
        try:
            self.sel.close()
        except (OSError, RuntimeError):
            pass
        close_all(self.socks)
        if self.control is not None:
            self.control.close()


# --- servers and rounds -----------------------------------------------------------------------------

ALL_SERVERS = [  # label, script, pure kernels
    (C_LABEL, "cowboy_ws", False),
    (PURE_LABEL, "cowboy_ws", True),
    (METRICS_LABEL, "cowboy_ws", False),
    ("picows", "picows", False),
    ("aiohttp", "aiohttp", False),
    ("websockets", "websockets", False),
    ("wsproto", "wsproto", False),
]


def run_rounds(labels: list[str], servers: dict[str, ServerProc], fn: Callable[[str, ServerProc], Run],
               rounds: int, errors: dict[str, str], warmup: Callable[[str, ServerProc], Any] | None = None,
               perf: PerfRecorder | None = None) -> dict[str, list[Run]]:
    """Each server's ``fn`` once per round, order alternating; with ``perf``, the last round under perf."""
    results: dict[str, list[Run]] = {lb: [] for lb in labels if lb in servers}
    if warmup:
        for lb in list(results):
            try:
                warmup(lb, servers[lb])
            except Exception as exc:  # noqa: BLE001 - report and go on with the others
                errors[lb] = f"warm-up: {type(exc).__name__}: {exc}"
                results.pop(lb)
    for r in range(rounds):
        order = list(results) if r % 2 == 0 else list(results)[::-1]
        for lb in order:
            if lb in errors:
                continue
            try:
                srv = servers[lb]
                if perf is not None and r == rounds - 1:
                    results[lb].append(perf.record(lb, srv.pid, lambda: fn(lb, srv)))  # noqa: B023 - called now
                else:
                    results[lb].append(fn(lb, srv))
            except Exception as exc:  # noqa: BLE001
                errors[lb] = f"{type(exc).__name__}: {exc}"
        print(f"  round {r + 1}/{rounds} done", file=sys.stderr, flush=True)
    return {lb: runs for lb, runs in results.items() if runs and lb not in errors}


#: Scenario 3's extra cowboy_ws servers: label suffix -> deflate_opts (the default is no server
#: context takeover, window 15, level 1; these keep the context).
DEFLATE_VARIANTS = {
    "takeover w15": {"server_context_takeover": "takeover"},
    "takeover w12": {"server_context_takeover": "takeover", "server_max_window_bits": 12},
    "takeover w10": {"server_context_takeover": "takeover", "server_max_window_bits": 10},
    "takeover w12 m5": {"server_context_takeover": "takeover", "server_max_window_bits": 12, "mem_level": 5},
    "takeover w10 m5": {"server_context_takeover": "takeover", "server_max_window_bits": 10, "mem_level": 5},
    # websockets' default compression settings (window 12, memory level 5, zlib's default level 6)
    "takeover w12 L6 m5": {"server_context_takeover": "takeover", "server_max_window_bits": 12, "level": 6,
                           "mem_level": 5},
    # the default, asking the client not to keep its context either: no inflater between messages
    "client no_takeover": {"client_context_takeover": "no_takeover"},
}
#: label -> deflate_opts of the scenario 3 variants registered in this run
DEFLATE_LABELS: dict[str, dict] = {}


def start_servers(labels: list[str], defs: dict[str, tuple[str, bool]], core: int | None, compress: bool,
                  errors: dict[str, str], profile: bool = False) -> dict[str, ServerProc]:
    servers: dict[str, ServerProc] = {}
    for lb in labels:
        script, pure = defs[lb]
        extra = {"BENCH_PROFILE": "1"} if profile and script == "cowboy_ws" else {}
        if lb == METRICS_LABEL:
            extra["BENCH_METRICS"] = "1"
        if lb in DEFLATE_LABELS:
            extra["BENCH_DEFLATE_OPTS"] = json.dumps(DEFLATE_LABELS[lb])
        try:
            servers[lb] = ServerProc(lb, script, env_for(pure=pure, compress=compress, extra=extra), core)
        except Exception as exc:  # noqa: BLE001
            errors[lb] = f"did not start: {type(exc).__name__}: {exc}"
    return servers


def stop_all(servers: dict[str, ServerProc]) -> None:
    for srv in servers.values():
        try:
            srv.stop()
        except Exception:  # noqa: BLE001 - keep stopping the others
            pass


# --- statistics and tables ----------------------------------------------------------------------------


def med_min_max(xs: list[float]) -> tuple[float, float, float]:
    return statistics.median(xs), min(xs), max(xs)


def paired_ratio(a: list[float], b: list[float]) -> tuple[float, float, float] | None:
    """Median [min, max] of a_i / b_i over the rounds both have (interleaved: same conditions)."""
    k = min(len(a), len(b))
    if not k:
        return None
    rs = [a[i] / b[i] for i in range(k) if b[i]]
    return med_min_max(rs) if rs else None


def fmt_mmm(m: tuple[float, float, float], spec: str) -> str:
    return f"{m[0]:{spec}} [{m[1]:{spec}} - {m[2]:{spec}}]"


def summarize(results: dict[str, list[Run]], ref: str | None, extra: Callable[[Run], float] | None = None
              ) -> dict[str, dict]:
    out: dict[str, dict] = {}
    ref_runs = results.get(ref) if ref else None
    for lb, runs in results.items():
        rate = [r["n"] / r["wall"] for r in runs]
        cpu = [r["cpu"] / r["n"] * 1e6 for r in runs]
        cli = [r["client"] / r["wall"] * 100 for r in runs]
        sys_pct = [r["sys"] / r["cpu"] * 100 if r["cpu"] else 0.0 for r in runs]
        s: dict[str, Any] = {"rate": med_min_max(rate), "cpu_us": med_min_max(cpu), "client_pct": med_min_max(cli),
                             "sys_pct": med_min_max(sys_pct),
                             "rate_all": rate, "cpu_all": cpu}
        if ref_runs:
            rr = [r["n"] / r["wall"] for r in ref_runs]
            rc = [r["cpu"] / r["n"] * 1e6 for r in ref_runs]
            s["rate_vs_ref"] = paired_ratio(rate, rr)
            s["cpu_vs_ref"] = paired_ratio(cpu, rc)
        out[lb] = s
    return out


def print_table(title: str, notes: list[str], labels: list[str], summary: dict[str, dict], hwm: dict[str, int],
                errors: dict[str, str], unit: str = "msg", mbps: int | None = None, ref: str | None = None) -> None:
    print()
    print(f"== {title}")
    for n in notes:
        print(f"   {n}")
    head = f"{'server':<15} {unit + '/s':>27}"
    if mbps:
        head += f" {'MB/s':>6}"
    head += f" {'CPU us/' + unit:>25} {'sys%':>4} {'peak RSS':>9} {'cli%':>4} {'rate/ref':>8} {'CPU/ref':>8}"
    print(head)
    for lb in labels:
        if lb in summary:
            s = summary[lb]
            line = f"{lb:<15} {fmt_mmm(s['rate'], ',.0f'):>27}"
            if mbps:
                line += f" {s['rate'][0] * mbps / 1e6:>6.0f}"
            line += (f" {fmt_mmm(s['cpu_us'], '.2f'):>25} {s['sys_pct'][0]:>4.0f} {hwm.get(lb, 0) / 1024:>5.1f} MiB"
                     f" {s['client_pct'][0]:>4.0f}")
            rv, cv = s.get("rate_vs_ref"), s.get("cpu_vs_ref")
            line += f" {rv[0]:>7.2f}x" if rv else f" {'-':>8}"
            line += f" {cv[0]:>7.2f}x" if cv else f" {'-':>8}"
            print(line)
        elif lb in errors:
            print(f"{lb:<15} skipped: {errors[lb]}")
    if ref:
        print(f"   ref = {ref}; rate/ref > 1: faster than ref; CPU/ref > 1: more CPU per {unit} than ref "
              f"(medians of per-round ratios); sys%: the server's system share of its CPU; cli%: the load "
              f"client's CPU / wall (near 100: the client was the limit)")


# --- scenarios -----------------------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.quick = args.quick
        cores = sorted(os.sched_getaffinity(0))
        self.cores = len(cores)
        self.server_core = self.client_core = None
        if len(cores) >= 2:
            self.server_core, self.client_core = cores[0], cores[1]
            os.sched_setaffinity(0, {self.client_core})
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass
        self.nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        self.has_c, self.c_note = cowboy_backend_c_available()
        self.erl, self.erl_note = find_erlang_cowboy()
        self.defs: dict[str, tuple[str, bool]] = {}
        self.skipped: dict[str, str] = {}
        wanted = set(args.servers.split(",")) if args.servers else None
        for label, script, pure in ALL_SERVERS:
            key = label.replace(" ", "_").lower()
            if wanted is not None and not ({key, script} & wanted):
                continue
            if label == METRICS_LABEL and (wanted is None or key not in wanted):
                continue  # opt-in: the metrics overhead, not a peer
            if label == C_LABEL and not self.has_c:
                self.skipped[label] = f"C backend absent ({self.c_note})"
                continue
            try:
                __import__(IMPORTS[script])
            except ImportError as exc:
                self.skipped[label] = f"not installed ({exc})"
                continue
            self.defs[label] = (script, pure)
        if not self.erl:
            self.skipped["Cowboy (erl)"] = f"{self.erl_note}: skipped"
        else:
            self.skipped["Cowboy (erl)"] = f"{self.erl_note}, but this harness has no Erlang runner yet: skipped"
        self.labels = list(self.defs)
        self.perf_note = perf_missing() if args.perf else None
        self.ref = C_LABEL if C_LABEL in self.defs else PURE_LABEL if PURE_LABEL in self.defs else None
        self.ref_note = ("ratios are to cowboy_ws C" if self.ref == C_LABEL else
                         ("C backend absent" if not self.has_c else "cowboy_ws C not selected") +
                         ": ratios are to cowboy_ws pure" if self.ref == PURE_LABEL else
                         "no cowboy_ws server: no ratios")
        self.out: dict[str, Any] = {"meta": {
            "python": sys.version.split()[0], "cores": len(cores), "server_core": self.server_core,
            "client_core": self.client_core, "nofile": self.nofile, "c_backend": self.has_c, "c_note": self.c_note,
            "erlang_cowboy": self.erl_note, "quick": self.quick, "ref": self.ref, "skipped": self.skipped},
            "scenarios": {}}

    def rounds(self, default: int, quick: int) -> int:
        return self.args.rounds or (quick if self.quick else default)

    def header(self) -> None:
        print(f"bench/echo.py: Python {sys.version.split()[0]}, {self.cores} cores "
              f"visible; servers pinned to core {self.server_core}, load client (this process) to core "
              f"{self.client_core}; RLIMIT_NOFILE {self.nofile}; C backend check: {self.c_note}; {self.ref_note}")
        for lb, why in self.skipped.items():
            print(f"  skipped {lb}: {why}")

    def _echo_common(self, key: str, title: str, notes: list[str], fn_factory, n: int, rounds: int, labels: list[str],
                     compress: bool, unit: str = "msg", mbps: int | None = None, warm_n: int | None = None) -> dict:
        errors: dict[str, str] = {}
        servers = start_servers(labels, self.defs, self.server_core, compress, errors, self.args.profile)
        hwm: dict[str, int] = {}
        profiles: dict[str, str] = {}
        perf = self.new_perf()
        try:
            run = fn_factory
            results = run_rounds(labels, servers, lambda lb, srv: run(srv, n, self.args.max_run_s), rounds, errors,
                                 warmup=lambda lb, srv: run(srv, warm_n or max(1, n // 5), self.args.max_run_s),
                                 perf=perf)
            for lb, srv in servers.items():
                hwm[lb] = srv.hwm_kib()
                if self.args.profile and self.defs[lb][0] == "cowboy_ws":
                    profiles[lb] = srv.profile_report(self.args.profile)
        finally:
            stop_all(servers)
        summary = summarize(results, self.ref)
        if self.args.profile:
            title += " (cowboy_ws under cProfile: its CPU figures include the profiler)"
        print_table(title, notes, labels, summary, hwm, errors, unit=unit, mbps=mbps, ref=self.ref)
        for lb, text in profiles.items():
            print(f"\n-- {lb}: cProfile of the server loop over the warm-up and all rounds, top "
                  f"{self.args.profile} by tottime")
            print(text.strip())
        self.print_perf(perf, results, unit)
        self.out["scenarios"][key] = {"title": title, "notes": notes, "n": n, "rounds": rounds,
                                      "runs": results, "summary": summary, "peak_rss_kib": hwm, "errors": errors}
        return summary

    def new_perf(self) -> PerfRecorder | None:
        """A recorder for this scenario's last round (``--perf``), or None."""
        if not self.args.perf:
            return None
        if self.perf_note:
            print(f"   --perf: skipped, {self.perf_note}")
            return None
        return PerfRecorder(self.args.perf)

    @staticmethod
    def print_perf(perf: PerfRecorder | None, results: dict[str, list[Run]], unit: str) -> None:
        """Where each server's CPU went in its perf-recorded (last) run."""
        if perf is None:
            return
        try:
            for lb, runs in results.items():
                if lb in perf.files and runs:
                    last = runs[-1]
                    print()
                    print(perf.report(lb, last["cpu"] / last["n"] * 1e6, unit))
        finally:
            perf.close()

    def s1(self) -> dict:
        n = self.args.messages or (30_000 if self.quick else 150_000)
        return self._echo_common(
            "echo16", "1. echo of 16-byte text messages, 64 in flight, no compression",
            ["in flight: 64 sent, then 16 more each time 16 replies are back (48-64 outstanding)",
             f"{n} messages per run, {self.rounds(5, 3)} interleaved rounds, a fresh connection per run "
             f"(+ a settle phase); server CPU = getrusage user+sys of the server process"],
            echo_fixed(16, OP_TEXT, 64, topup=16, blocking=True), n, self.rounds(5, 3), self.labels, False)

    def s2(self) -> dict:
        # 20,000 messages (about 0.6 s a run): with 4,000 a run took ~0.1 s and rounds varied +-10 %
        n = (self.args.messages // 8 if self.args.messages else 0) or (2000 if self.quick else 20_000)
        summaries = {}
        for window in self.args.window64k:  # one table per depth, each with its own interleaved rounds
            summaries[window] = self._echo_common(
                echo64k_key(window), f"2. echo of 64 KiB binary messages, {window} in flight, no compression",
                [(f"{n} messages per run, {self.rounds(5, 3)} rounds; MB/s = messages/s x 65,536 bytes, one way; "
                  f"the next message is sent as each reply is back ({window} outstanding)")],
                echo_fixed(65536, OP_BINARY, window), n, self.rounds(5, 3), self.labels, False, mbps=65536,
                warm_n=max(50, n // 8))
        return summaries

    def s3(self) -> dict:
        n = (self.args.messages // 8 if self.args.messages else 0) or (4000 if self.quick else 20_000)
        pool = json_pool()
        sizes = [len(p) for p in pool]
        comp = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -15)
        ratio = sum(len(deflate_message(comp, p)) for p in pool) / sum(sizes)
        labels = [lb for lb in self.labels if self.defs[lb][0] != "picows"]
        errors_note = []
        if "picows" in self.labels:
            errors_note.append("picows: skipped (no permessage-deflate support)")
        if self.ref and not self.args.no_deflate_variants:  # the ref server again, with other deflate_opts
            for suffix, opts in DEFLATE_VARIANTS.items():
                label = f"{'C' if self.ref == C_LABEL else 'pure'} {suffix}"
                self.defs[label] = self.defs[self.ref]
                DEFLATE_LABELS[label] = opts
                labels.append(label)
            errors_note.append("variants: " + "; ".join(f"{lb}: deflate_opts={o}" for lb, o in DEFLATE_LABELS.items()))
        summary = self._echo_common(
            "json", "3. echo of ~1 KiB JSON text messages with permessage-deflate, 16 in flight",
            [f"{n} messages per run, {self.rounds(5, 3)} rounds; client offers {DEFLATE_OFFER!r}, compresses "
             f"every message (zlib wbits=-N, Z_SYNC_FLUSH, 00 00 ff ff stripped, RSV1) and inflates every reply",
             f"{len(pool)} distinct seeded-random order documents, {min(sizes)}-{max(sizes)} bytes, deflate to "
             f"{ratio:.0%} of their size with context takeover"] + errors_note,
            json_deflate(pool, 16, settle=500), n, self.rounds(5, 3), labels, True)
        runs_by = self.out["scenarios"]["json"]["runs"]
        ws_bytes = [r["wire_in"] / r["n"] for r in runs_by.get("websockets", [])]
        print(f"   server -> client bytes per message (data frames, headers included) and server CPU; raw "
              f"{statistics.median(r['raw'] / r['n'] for rs in runs_by.values() for r in rs):.0f} B/msg")
        print(f"   {'server':<24} {'B/msg':>7} {'vs websockets':>13} {'CPU us/msg':>10} {'msg/s':>8} "
              f"{'client B/msg':>12}  answered")
        for lb, runs in runs_by.items():
            per = [r["wire_in"] / r["n"] for r in runs]
            vs = paired_ratio(per, ws_bytes) if ws_bytes else None
            summary[lb]["bytes_per_msg"] = med_min_max(per)
            summary[lb]["bytes_vs_websockets"] = vs
            print(f"   {lb:<24} {statistics.median(per):>7.1f} {(f'{vs[0]:.3f}x' if vs else '-'):>13} "
                  f"{summary[lb]['cpu_us'][0]:>10.2f} {summary[lb]['rate'][0]:>8,.0f} "
                  f"{statistics.median(r['wire_out'] / r['n'] for r in runs):>12.1f}  {runs[0].get('neg')!r}")
        return summary

    def s4(self) -> dict:
        members = self.args.members
        per_run = self.args.broadcasts or (40 if self.quick else 300)
        rounds = self.rounds(5, 3)
        errors: dict[str, str] = {}
        need = (members + 2) * len(self.labels) + 64
        if need > self.nofile:
            print(f"   note: {len(self.labels)} x {members} member connections need {need} fds, have {self.nofile}")
        servers = start_servers(self.labels, self.defs, self.server_core, False, errors)
        groups: dict[str, Broadcast] = {}
        hwm: dict[str, int] = {}
        perf = self.new_perf()
        try:
            for lb, srv in servers.items():
                try:
                    groups[lb] = Broadcast(srv, members)
                except Exception as exc:  # noqa: BLE001
                    errors[lb] = f"setup: {type(exc).__name__}: {exc}"
            results = run_rounds(self.labels, {lb: s for lb, s in servers.items() if lb in groups},
                                 lambda lb, srv: groups[lb].run(per_run, self.args.max_run_s), rounds, errors,
                                 warmup=lambda lb, srv: groups[lb].run(max(10, per_run // 5), self.args.max_run_s),
                                 perf=perf)
            for lb, srv in servers.items():
                hwm[lb] = srv.hwm_kib()
        finally:
            for g in groups.values():
                g.close()
            stop_all(servers)
        summary = summarize(results, self.ref)
        title = f"4. broadcast of a 16-byte text message to {members:,} connections"
        notes = [f"{per_run} broadcasts per run ({per_run * members:,} deliveries), {rounds} rounds; a control "
                 f"connection sends 'go', the server broadcasts to its group and answers 'done', the client sends "
                 f"the next 'go' (members are read every 8 broadcasts and at the end)",
                 "delivery/s = members x broadcasts / time until every member had every message; CPU per delivery"]
        print_table(title, notes, self.labels, summary, hwm, errors, unit="delivery", ref=self.ref)
        self.print_perf(perf, results, "delivery")
        self.out["scenarios"]["bcast"] = {"title": title, "notes": notes, "members": members, "per_run": per_run,
                                          "rounds": rounds, "runs": results, "summary": summary,
                                          "peak_rss_kib": hwm, "errors": errors}
        return summary

    def s5(self) -> dict:
        n = self.args.idle or (2000 if self.quick else 10_000)
        note = ""
        cap = self.nofile - 200
        if n > cap:
            note = f"RLIMIT_NOFILE is {self.nofile}: {cap} connections instead of {n}"
            n = cap
        rounds = self.rounds(3, 2)
        variants: list[tuple[str, str, bool, bool, bool]] = []  # label, server label, compress, hibernate
        for lb in self.labels:
            if self.defs[lb][0] == "cowboy_ws":
                for comp in (False, True):
                    for hib in (False, True):
                        variants.append((f"{lb}{' deflate' if comp else ''}{' hibernate' if hib else ''}",
                                         lb, comp, hib, True))
            else:
                variants.append((lb, lb, False, False, True))
        errors: dict[str, str] = {}
        results: dict[str, list[dict]] = {v[0]: [] for v in variants}
        for r in range(rounds):
            order = variants if r % 2 == 0 else variants[::-1]
            for label, slabel, comp, hib, _ in order:
                if label in errors:
                    continue
                try:
                    results[label].append(self._idle_once(slabel, n, comp, hib))
                except Exception as exc:  # noqa: BLE001
                    errors[label] = f"{type(exc).__name__}: {exc}"
            print(f"  round {r + 1}/{rounds} done", file=sys.stderr, flush=True)
        print()
        title = f"5. idle connections: server RSS per connection, {n:,} connections"
        notes = ["a fresh server per measurement; RSS0 after one warm-up connection came and went, RSSn after n "
                 "connections each opened and echoed one 16-byte text message (compressed when negotiated); "
                 "gc.collect() in the server before each reading; KiB/conn = (RSSn - RSS0) / n",
                 "deflate: the client offered 'permessage-deflate; client_max_window_bits'; hibernate: the handler "
                 "returns 'hibernate' from websocket_init and after each message"]
        if note:
            notes.append(note)
        print(f"== {title}")
        for x in notes:
            print(f"   {x}")
        ref_label = self.ref
        summary: dict[str, dict] = {}
        print(f"{'server / variant':<32} {'KiB/conn':>24} {'RSS0 MiB':>9} {'RSSn MiB':>9} {'vs ref':>7}")
        ref_runs = results.get(ref_label or "", [])
        for label, *_ in variants:
            runs = results[label]
            if label in errors and not runs:
                print(f"{label:<32} failed: {errors[label]}")
                continue
            if not runs:
                continue
            per = [x["kib_per_conn"] for x in runs]
            s = {"kib_per_conn": med_min_max(per), "rss0_mib": statistics.median(x["rss0"] for x in runs) / 1024,
                 "rssn_mib": statistics.median(x["rssn"] for x in runs) / 1024, "all": per}
            vs = paired_ratio(per, [x["kib_per_conn"] for x in ref_runs]) if ref_runs else None
            s["vs_ref"] = vs
            summary[label] = s
            print(f"{label:<32} {fmt_mmm(s['kib_per_conn'], '.1f'):>24} {s['rss0_mib']:>9.1f} {s['rssn_mib']:>9.1f} "
                  f"{(f'{vs[0]:.2f}x' if vs else '-'):>7}" + (f"  (error: {errors[label]})" if label in errors else ""))
        if ref_label:
            print(f"   ref = {ref_label} (plain, awake); vs ref > 1: more memory per connection than ref")
        self.out["scenarios"]["idle"] = {"title": title, "notes": notes, "n": n, "rounds": rounds, "runs": results,
                                         "summary": summary, "errors": errors}
        return summary

    def _idle_once(self, slabel: str, n: int, compress: bool, hibernate: bool) -> dict:
        script, pure = self.defs[slabel]
        srv = ServerProc(slabel, script, env_for(pure=pure, compress=compress, hibernate=hibernate), self.server_core)
        socks: list[socket.socket] = []
        try:
            offer = DEFLATE_OFFER if compress else None
            warm, _ = ws_open_many(srv.port, "/", 1, offer, touch=True)
            close_all(warm)
            time.sleep(0.3)
            srv.gc()
            rss0 = srv.rss_kib()
            socks, neg = ws_open_many(srv.port, "/", n, offer, touch=True, deadline=time.monotonic() + 300)
            time.sleep(0.3)
            srv.gc()
            rssn = srv.rss_kib()
            return {"rss0": rss0, "rssn": rssn, "kib_per_conn": (rssn - rss0) / n, "n": n,
                    "neg": neg.header if neg else None}
        finally:
            srv.stop()   # first: the server must not spend time on the clients' closes
            close_all(socks)

    # -- the issue's targets ------------------------------------------------------------------------

    def targets(self) -> list[dict]:
        sc = self.out["scenarios"]
        rows: list[dict] = []

        def row(target: str, value: str, ok: bool | None, why: str = "") -> None:
            rows.append({"target": target, "value": value, "status": "PASS" if ok else "FAIL" if ok is False
                         else "SKIP", "note": why})

        def cpu_ratio(key: str, a: str, b: str) -> tuple[float, float, float] | None:
            s = sc.get(key, {}).get("summary", {})
            if a in s and b in s:
                return paired_ratio(s[a]["cpu_all"], s[b]["cpu_all"])
            return None

        def rate_ratio(key: str, a: str, b: str) -> tuple[float, float, float] | None:
            s = sc.get(key, {}).get("summary", {})
            if a in s and b in s:
                return paired_ratio(s[a]["rate_all"], s[b]["rate_all"])
            return None

        def check(target: str, key: str, fn, a: str, b: str, limit: float, le: bool, absent: str = "") -> None:
            if key not in sc:
                row(target, "-", None, "scenario not run")
                return
            r = fn(key, a, b)
            if r is None:
                why = absent if a not in self.defs else f"{b} not measured" if b not in self.defs or \
                    b not in sc[key]["summary"] else f"{a} not measured"
                row(target, "-", None, why)
                return
            ok = r[0] <= limit if le else r[0] >= limit
            row(target, f"{r[0]:.2f}x [{r[1]:.2f}-{r[2]:.2f}]", ok)

        no_c = "C backend absent" if not self.has_c else ""
        check("16-byte echo: C server CPU/msg <= 0.4x picows", "echo16", cpu_ratio, C_LABEL, "picows", 0.4, True, no_c)
        check("16-byte echo: C server CPU/msg <= 0.2x websockets", "echo16", cpu_ratio, C_LABEL, "websockets", 0.2,
              True, no_c)
        check("16-byte echo: pure server CPU/msg <= 0.7x picows", "echo16", cpu_ratio, PURE_LABEL, "picows", 0.7, True)
        if METRICS_LABEL in self.defs:
            check("16-byte echo: metrics on CPU/msg <= 1.03x metrics off", "echo16", cpu_ratio, METRICS_LABEL,
                  C_LABEL, 1.03, True, no_c)
        for window in self.args.window64k:
            key = echo64k_key(window)
            check(f"64 KiB echo, {window} in flight: C MB/s >= 1.2x picows", key, rate_ratio, C_LABEL, "picows",
                  1.2, False, no_c)
            check(f"64 KiB echo, {window} in flight: C CPU/msg <= 0.85x picows", key, cpu_ratio, C_LABEL, "picows",
                  0.85, True, no_c)
            if not self.has_c and key in sc:
                r = rate_ratio(key, PURE_LABEL, "picows")
                if r:
                    rows.append({"target": f"  (info) 64 KiB echo, {window} in flight: pure MB/s vs picows",
                                 "value": f"{r[0]:.2f}x [{r[1]:.2f}-{r[2]:.2f}]", "status": "info", "note": ""})
        best = C_LABEL if self.has_c else PURE_LABEL
        check(f"1 KiB JSON deflate: {best} msg/s >= 2x websockets", "json", rate_ratio, best, "websockets", 2.0,
              False)
        if self.has_c and "json" in sc:
            r = rate_ratio("json", PURE_LABEL, "websockets")
            if r:
                rows.append({"target": "  (info) 1 KiB JSON deflate: pure msg/s vs websockets",
                             "value": f"{r[0]:.2f}x [{r[1]:.2f}-{r[2]:.2f}]", "status": "info", "note": ""})
        js = sc.get("json", {}).get("summary", {})
        for lb in DEFLATE_LABELS:  # goal 6: bandwidth with context takeover at a small window
            vs = js.get(lb, {}).get("bytes_vs_websockets")
            if "takeover w1" in lb and "w15" not in lb and vs:
                row(f"1 KiB JSON deflate: {lb} B/msg <= 1.05x websockets'", f"{vs[0]:.3f}x [{vs[1]:.3f}-{vs[2]:.3f}]",
                    vs[0] <= 1.05)
        idle = sc.get("idle", {}).get("summary", {})
        for lb in ([C_LABEL] if self.has_c else []) + [PURE_LABEL]:
            if lb not in self.defs:
                continue
            for comp, limit in ((False, 8.0), (True, 48.0)):
                base = f"{lb}{' deflate' if comp else ''}"
                awake, hib = idle.get(base), idle.get(base + " hibernate")
                what = f"idle {lb}: <= {limit:.0f} KiB/conn {'with' if comp else 'without'} compression"
                if awake is None:
                    row(what, "-", None, "not measured")
                    continue
                v = awake["kib_per_conn"][0]
                hv = hib["kib_per_conn"][0] if hib else None
                row(what + " (awake)", f"{v:.1f} KiB", v <= limit,
                    f"hibernated {hv:.1f} KiB" if hv is not None else "")
                if hib:
                    # "measurably": the ranges over the rounds do not overlap and the gap is at least
                    # 0.5 KiB and 5 % of the awake figure (RSS noise is a few tenths of a KiB)
                    smaller = hib["kib_per_conn"][2] < awake["kib_per_conn"][1] and v - hv >= max(0.5, 0.05 * v)
                    row(f"idle {lb}{' deflate' if comp else ''}: hibernated measurably smaller than awake",
                        f"{hv:.1f} vs {v:.1f} KiB", smaller,
                        f"hibernated max {hib['kib_per_conn'][2]:.1f} < awake min {awake['kib_per_conn'][1]:.1f}"
                        if smaller else "ranges overlap or gap < max(0.5 KiB, 5 %)")
        return rows

    def print_targets(self, rows: list[dict]) -> None:
        print()
        print("== targets (from the issue)" + ("" if self.has_c else "; C backend absent: its targets are SKIP"))
        for r in rows:
            print(f"{r['status']:<5} {r['target']:<68} {r['value']:<22} {r['note']}")


def idle_breakdown(bench: Bench, n: int) -> None:
    """tracemalloc in a cowboy_ws server: what ``n`` idle connections added to the Python heap, by site."""
    for lb in (C_LABEL, PURE_LABEL):
        if lb not in bench.defs:
            continue
        for comp in (False, True):
            for hib in (False, True):
                script, pure = bench.defs[lb]
                env = env_for(pure=pure, compress=comp, hibernate=hib,
                              extra={"BENCH_TRACEMALLOC": "1", "BENCH_TRACEMALLOC_FRAMES": str(bench.args.frames)})
                srv = ServerProc(lb, script, env, bench.server_core)
                socks: list[socket.socket] = []
                try:
                    offer = DEFLATE_OFFER if comp else None
                    warm, _ = ws_open_many(srv.port, "/", 1, offer, touch=True)
                    close_all(warm)
                    time.sleep(0.3)
                    srv.tracemalloc_baseline()
                    rss0 = srv.rss_kib()
                    socks, _ = ws_open_many(srv.port, "/", n, offer, touch=True)
                    time.sleep(0.3)
                    srv.gc()
                    rssn = srv.rss_kib()
                    report = srv.tracemalloc_report(n)
                finally:
                    srv.stop()
                    close_all(socks)
                print(f"\n== {lb}{' deflate' if comp else ''}{' hibernate' if hib else ''}: {n} idle connections, "
                      f"RSS {(rssn - rss0) / n:.1f} KiB/conn (under tracemalloc)")
                print(report, end="")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--quick", action="store_true", help="about a minute: fewer messages and rounds, 2,000 idle")
    ap.add_argument("--scenarios", default="1,2,3,4,5", help="comma-separated from 1-5 (default all)")
    ap.add_argument("--servers", default="",
                    help="comma-separated from cowboy_ws (both), cowboy_ws_c, cowboy_ws_pure, cowboy_ws_c_metrics (C with "
                         "--metrics-port on, only when named), picows, aiohttp, "
                         "websockets, wsproto (default all)")
    ap.add_argument("--rounds", type=int, default=0, help="interleaved rounds (default 5, idle 3; --quick 3, idle 2)")
    ap.add_argument("--messages", type=int, default=0,
                    help="16-byte echoes per run (default 150000, --quick 30000); 64 KiB and JSON: /8")
    ap.add_argument("--window64k", default="4,16,64", type=windows_arg, metavar="W[,W...]",
                    help="scenario 2: messages in flight, one table each (default 4,16,64)")
    ap.add_argument("--members", type=int, default=1000, help="broadcast group size (default 1000)")
    ap.add_argument("--broadcasts", type=int, default=0, help="broadcasts per run (default 300, --quick 40)")
    ap.add_argument("--idle", type=int, default=0, help="idle connections (default 10000, --quick 2000)")
    ap.add_argument("--max-run-s", type=float, default=120.0, help="give up a run after this many seconds")
    ap.add_argument("--no-deflate-variants", action="store_true",
                    help="scenario 3: only the servers' defaults (not cowboy_ws again with context takeover "
                         "at windows 15, 12, 10 and with websockets' settings)")
    ap.add_argument("--json", metavar="FILE", help="write every run and summary to FILE")
    ap.add_argument("--idle-breakdown", type=int, nargs="?", const=500, default=0, metavar="N",
                    help="instead of the scenarios: tracemalloc of N (500) idle cowboy_ws connections, top sites")
    ap.add_argument("--profile", type=int, nargs="?", const=20, default=0, metavar="TOP",
                    help="scenarios 1-3: run the cowboy_ws servers under cProfile, print the TOP (20) functions")
    ap.add_argument("--perf", type=int, nargs="?", const=15, default=0, metavar="TOP",
                    help="scenarios 1-4: record each server's last round with Linux perf and print where its CPU "
                         "went (kernel, interpreter, extensions, libc) and the TOP (15) symbols, in us per message")
    ap.add_argument("--frames", type=int, default=1, help="traceback depth for --idle-breakdown (default 1)")
    args = ap.parse_args(argv)
    if args.servers:
        known = {"cowboy_ws", "cowboy_ws_c", "cowboy_ws_pure", "cowboy_ws_c_metrics", "picows", "aiohttp",
                 "websockets", "wsproto"}
        bad = set(args.servers.split(",")) - known
        if bad:
            ap.error(f"unknown server(s): {', '.join(sorted(bad))}")
    try:
        scen = sorted({int(x) for x in args.scenarios.split(",") if x.strip()})
    except ValueError:
        ap.error("--scenarios takes numbers 1-5")
    if any(not 1 <= s <= 5 for s in scen):
        ap.error("--scenarios takes numbers 1-5")

    bench = Bench(args)
    bench.header()
    if args.idle_breakdown:
        idle_breakdown(bench, args.idle_breakdown)
        return 0
    t0 = time.monotonic()
    for s in scen:
        ts = time.monotonic()
        print(f"[scenario {s}]", file=sys.stderr, flush=True)
        try:
            getattr(bench, f"s{s}")()
        except Exception as exc:  # noqa: BLE001 - one broken scenario must not hide the others
            print(f"\n== scenario {s} failed: {type(exc).__name__}: {exc}")
            bench.out["scenarios"][f"failed_{s}"] = f"{type(exc).__name__}: {exc}"
        print(f"[scenario {s}: {time.monotonic() - ts:.0f} s]", file=sys.stderr, flush=True)
        sys.stdout.flush()
    rows = bench.targets()
    bench.print_targets(rows)
    bench.out["targets"] = rows
    bench.out["meta"]["elapsed_s"] = round(time.monotonic() - t0, 1)
    print(f"\n(total {time.monotonic() - t0:.0f} s)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(bench.out, f, indent=1, default=lambda o: list(o) if isinstance(o, tuple) else str(o))
        print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
