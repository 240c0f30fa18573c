"""c100k: 19,000 connections on one server process, 100,000 on one port across ``--workers``.

The server is what a user would run, ``python -m cowboy_ws c100k:Handler --port 0
--idle-timeout infinity`` (this file is also the handler module), with ``--workers N
--redis URL`` when ``--workers`` > 1 (a ``redis-server`` started for the run on 127.0.0.1,
as in the tests, with a cluster secret so that the bus is sealed as in production).
Every connection joins one group; ``/control`` (one connection of this process) asks
for the group's size (``count``) and broadcasts 16 bytes to it (``bcast``).

Load comes from ``--clients`` processes (this file with ``--client``), each holding
its share of the connections (at most ~19,000: the open-file limit is per process)
on plain non-blocking sockets and one ``epoll``, each bound to its own source
address (127.X.0.i: every process gets the whole ephemeral port range).  The
opening handshake is a raw request with the 101 and its accept key checked;
frames are built and parsed by hand (masked 16-byte binary frames out, unmasked
frames in).

Each pass (plain, then with the handler hibernating from ``websocket_init``) starts
fresh servers and measures:

* **upgrades/s** while connecting: all upgrades over the time from the first
  connect to the last 101 (every client timestamps both; CLOCK_MONOTONIC is shared);
* **RSS per idle connection**: the VmRSS of every server process (supervisor and
  workers, from ``/proc/PID/status``, outside the process) once every member is in
  the group, minus the same sum before connecting, over the connections;
* **broadcast**: ``--broadcasts`` times, the control connection sends ``bcast`` and
  the handler calls ``cowboy_ws.broadcast(group, ("text", 16 bytes))``; the time
  from this process sending it to the last delivery in any client (each client
  timestamps the delivery that completes its share); every delivery is counted
  per connection;
* **round trip** of ``--active`` connections (1,000) each echoing a 16-byte binary
  message ``--rate`` times a second (open loop; the send time travels in the
  payload) for ``--rtt-seconds`` while the others sit idle: p50 / p99 / max;
* **errors and lost messages** (broadcast deliveries and echoes), both must be 0;
* **after all close** (closing handshake from every client): every member must
  have left the group (as the control's worker sees it, within ``EMPTY_TIMEOUT``),
  the server's open files must be back to the baseline, and its RSS is shown
  against the baseline (freed memory mostly stays with the allocator, for the
  next connections: it is not a goal).

The server logs of every pass are kept (``--log-dir``, printed at the end).

::

    python bench/c100k.py --quick                              # 5,000 connections, ~30 s
    python bench/c100k.py --connections 19000 --workers 1      # (a) one process, ~1 min
    python bench/c100k.py --connections 100000 --workers 6     # (b) six workers + Redis, ~5-10 min
    python bench/c100k.py --connections 19000 --hibernate off  # one pass only
    python bench/c100k.py --smoke                              # --quick, judged on correctness only (CI)

The goals (issue 16) are printed with PASS/FAIL beside the table: RSS <= 4 KiB per
idle connection (<= 2.5 KiB hibernated), the broadcast to all in <= 1 s, round-trip
p99 <= 10 ms, 0 errors, 0 lost, open files back to the baseline.  Exit status 0 when
all pass, 1 when one fails, 2 when the run itself could not be done.  ``--smoke`` is
``--quick`` with the exit status judged on the correctness checks alone (0 errors, 0
lost, every close clean): the timing and memory goals are printed in parentheses, not
judged, since a busy CI machine says nothing about them.
"""

from __future__ import annotations

import argparse
import base64
import errno
import gc
import hashlib
import json
import os
import random
import re
import resource
import select
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from array import array

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, ".."))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from _servers import stop_process_group  # noqa: E402  (bench/: the script's folder, or PYTHONPATH)

import cowboy_ws  # noqa: E402

GROUP = "c100k"
BCAST = b"0123456789abcdef"                 # the 16-byte broadcast (text)
BCAST_FRAME = b"\x81\x10" + BCAST
ECHO = struct.Struct("<4sId")                # b"echo", connection index, send time: 16 bytes (binary)
ECHO_TAG = b"echo"
HIBERNATE = os.environ.get("C100K_HIBERNATE") == "1"

# bounds of every wait (seconds)
START_TIMEOUT = 30.0        # a server (or Redis) to listen
HANDSHAKE_TIMEOUT = 30.0    # a client connection to be upgraded, from its connect
GROUP_TIMEOUT = 120.0       # every member to be seen in the group by the control's worker
SETTLE_TIMEOUT = 60.0       # the server's CPU to go quiet before a measurement
EMPTY_TIMEOUT = 60.0        # every member gone from the group after the last close
BCAST_TIMEOUT = 30.0        # every delivery of one broadcast
DRAIN_TIMEOUT = 10.0        # in-flight echoes after the round-trip phase
CLOSE_TIMEOUT = 60.0        # every closing handshake
FD_TIMEOUT = 30.0           # the server's open files back to the baseline
CONTROL_TIMEOUT = 10.0      # an answer on the control connection
HANDSHAKE_WINDOW = 256      # handshakes a client process keeps in flight
MAX_PER_CLIENT = 19_000     # connections per client process (the 20,000 open files limit)

LISTEN_RE = re.compile(r"listening on https?://\S+:(\d+) ")
WORKERS_RE = re.compile(r"worker\(s\) on wss?://\S+:(\d+) ")


# -- the handler (the server imports this module) -----------------------------------------------


class Handler:
    """Every path but ``/control`` joins the group and echoes; ``/control``: ``count``, ``bcast``."""

    @staticmethod
    def init(req, _state):
        role = "control" if req.path == "/control" else "member"
        return ("cowboy_websocket", req, role, {"idle_timeout": "infinity"})

    @staticmethod
    def websocket_init(state):
        if state == "member":
            cowboy_ws.join(GROUP)
        return ("ok", state, "hibernate") if HIBERNATE else ("ok", state)

    @staticmethod
    def websocket_handle(frame, state):
        if state == "member":
            return ("reply", frame, state, "hibernate") if HIBERNATE else ("reply", frame, state)
        if frame[1] == b"count":
            return ("reply", ("text", str(len(cowboy_ws.members(GROUP)))), state)
        if frame[1] == b"bcast":
            cowboy_ws.broadcast(GROUP, ("text", BCAST))
            return ("reply", ("text", "done"), state)
        if frame[1] == b"gc":  # how long a full collection stops this worker's loop, over how many objects
            t0 = time.perf_counter()
            gc.collect()
            return ("reply", ("text", f"{(time.perf_counter() - t0) * 1000:.1f} {len(gc.get_objects())}"), state)
        return ("reply", ("text", "?"), state)

    @staticmethod
    def websocket_info(_info, state):
        return ("ok", state)


# -- shared helpers -----------------------------------------------------------------------------


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


KEY = base64.b64encode(b"c100k-fixed-key!").decode()   # one key for every connection: the server does not care
ACCEPT = base64.b64encode(hashlib.sha1((KEY + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest())


def upgrade_request(port: int, path: str) -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()


def head_ok(head: bytes) -> bool:
    """A 101 with our accept key (RFC 6455 §4.2.2)."""
    if not head.startswith(b"HTTP/1.1 101 "):
        return False
    at = head.lower().find(b"\r\nsec-websocket-accept:")
    return at >= 0 and head[at + 23:head.find(b"\r\n", at + 2)].strip() == ACCEPT


def masked(opcode: int, payload: bytes, key: bytes) -> bytes:
    """A masked client frame of up to 125 bytes (RFC 6455 §5.2, §5.3)."""
    n = len(payload)
    assert n <= 125
    k = int.from_bytes((key * (n // 4 + 1))[:n], "little")
    return bytes((0x80 | opcode, 0x80 | n)) + key + (int.from_bytes(payload, "little") ^ k).to_bytes(n, "little")


def cpu_now() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(q * len(values)))]


# -- a client process ---------------------------------------------------------------------------

NEW, CONNECTING, HANDSHAKE, OPEN, CLOSING, CLOSED, FAILED = range(7)


class Client:
    """``count`` connections from source address ``src``; commands on stdin, JSON lines on stdout."""

    def __init__(self, index: int, port: int, count: int, src: str) -> None:
        self.index = index
        self.port = port
        self.n = count
        self.src = src
        self.ep = select.epoll()
        self.socks: list[socket.socket | None] = [None] * count
        self.state = bytearray(count)
        self.started = array("d", bytes(8 * count))
        self.head: dict[int, bytes] = {}       # handshake bytes so far
        self.partial: dict[int, bytes] = {}    # an incomplete frame
        self.got_close = bytearray(count)
        self.fd_index: dict[int, int] = {}
        self.delivered = array("I", bytes(4 * count))  # broadcast deliveries per connection
        self.errors: dict[str, int] = {}
        self.open = 0
        self.key = os.urandom(4)
        self.request = upgrade_request(port, "/")
        self.close_frame = masked(0x8, struct.pack("!H", 1000), self.key)
        self.first_connect = 0.0
        self.last_upgrade = 0.0
        # broadcast in progress: [id, expected, got, deadline, reported]
        self.bcast: list | None = None
        # round trip
        self.rtts: list[float] = []
        self.echo_sent = 0
        self.echo_back = 0
        self.stdin_buf = b""

    def error(self, what: str, i: int = -1) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1
        if self.errors[what] <= 3:
            print(f"client {self.index}: connection {i}: {what}", file=sys.stderr, flush=True)

    def emit(self, **obj) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    # -- connecting -------------------------------------------------------------------------

    def start(self, i: int) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # the port is picked at connect, per destination, rather than at bind
        sock.setsockopt(socket.IPPROTO_IP, getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24), 1)
        try:
            sock.bind((self.src, 0))
        except OSError as exc:
            sock.close()
            self.fail(i, f"bind {self.src}: {exc.strerror}")
            return
        rc = sock.connect_ex(("127.0.0.1", self.port))
        if rc not in (0, errno.EINPROGRESS):
            sock.close()
            self.fail(i, f"connect: {errno.errorcode.get(rc, rc)}")
            return
        fd = sock.fileno()
        self.socks[i] = sock
        self.fd_index[fd] = i
        self.state[i] = CONNECTING
        self.started[i] = time.monotonic()
        self.ep.register(fd, select.EPOLLOUT)

    def fail(self, i: int, what: str) -> None:
        self.error(what, i)
        self.drop(i)
        self.state[i] = FAILED

    def drop(self, i: int) -> None:
        sock = self.socks[i]
        if sock is not None:
            fd = sock.fileno()
            try:
                self.ep.unregister(fd)
            except (OSError, ValueError):
                pass
            self.fd_index.pop(fd, None)
            sock.close()
            self.socks[i] = None
        if self.state[i] in (OPEN, CLOSING):
            self.open -= 1
        self.head.pop(i, None)
        self.partial.pop(i, None)

    def on_writable(self, i: int) -> None:
        sock = self.socks[i]
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self.fail(i, f"connect: {errno.errorcode.get(err, err)}")
            return
        try:
            sent = sock.send(self.request)
        except OSError as exc:
            self.fail(i, f"send request: {exc.strerror}")
            return
        if sent != len(self.request):  # ~160 bytes into an empty socket buffer
            self.fail(i, "request not sent whole")
            return
        self.state[i] = HANDSHAKE
        self.ep.modify(sock.fileno(), select.EPOLLIN)

    def on_head(self, i: int, data: bytes) -> None:
        head = self.head.get(i, b"") + data
        end = head.find(b"\r\n\r\n")
        if end < 0:
            if len(head) > 8192:
                self.fail(i, "response head too long")
            else:
                self.head[i] = head
            return
        self.head.pop(i, None)
        if not head_ok(head[:end + 2]):
            self.fail(i, f"handshake refused: {head[:60]!r}")
            return
        self.state[i] = OPEN
        self.open += 1
        self.last_upgrade = time.monotonic()
        rest = head[end + 4:]
        if rest:
            self.on_frames(i, rest)

    # -- frames -----------------------------------------------------------------------------

    def on_frames(self, i: int, data: bytes) -> None:
        if data == BCAST_FRAME and i not in self.partial:  # the usual case: one delivery, alone
            self.on_broadcast(i)
            return
        if i in self.partial:
            data = self.partial.pop(i) + data
        pos, size = 0, len(data)
        while size - pos >= 2:
            b0, n = data[pos], data[pos + 1]
            if n > 125:  # server frames here are small and unmasked
                self.fail(i, f"unexpected frame header {data[pos:pos + 2].hex()}")
                return
            end = pos + 2 + n
            if end > size:
                break
            payload = data[pos + 2:end]
            pos = end
            if b0 == 0x81 and payload == BCAST:
                self.on_broadcast(i)
            elif b0 == 0x82 and n == 16 and payload[:4] == ECHO_TAG:
                _tag, idx, sent_at = ECHO.unpack(payload)
                if idx != i:
                    self.error("echo on the wrong connection", i)
                self.rtts.append(time.monotonic() - sent_at)
                self.echo_back += 1
            elif b0 == 0x88:
                self.got_close[i] = 1
                if self.state[i] != CLOSING:
                    self.error(f"server closed: {payload[:40]!r}", i)
            else:
                self.error(f"unexpected frame {b0:02x} {payload[:20]!r}", i)
        if pos < size:
            self.partial[i] = data[pos:]

    def on_broadcast(self, i: int) -> None:
        self.delivered[i] += 1
        b = self.bcast
        if b is None:
            self.error("broadcast delivery while none was expected", i)
            return
        b[2] += 1
        if b[2] == b[1]:
            self.emit(bcast=b[0], got=b[2], expected=b[1], last=time.monotonic(), cpu=cpu_now() - b[4])
            self.bcast = None

    def on_readable(self, i: int) -> None:
        sock = self.socks[i]
        try:
            data = sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self.fail(i, f"recv: {exc.strerror}")
            return
        st = self.state[i]
        if not data:
            if st == CLOSING and self.got_close[i]:
                self.drop(i)
                self.state[i] = CLOSED
            elif st == CLOSING:
                late = time.monotonic() - self.close_at > 5.0  # the server's close_timeout
                self.fail(i, f"EOF without the server's Close, {'more' if late else 'less'} than 5 s after ours")
            else:
                self.fail(i, f"EOF in state {st}")
            return
        if st == HANDSHAKE:
            self.on_head(i, data)
        else:
            self.on_frames(i, data)

    # -- the loop ---------------------------------------------------------------------------

    def poll(self, timeout: float) -> None:
        fd_index = self.fd_index
        for fd, ev in self.ep.poll(timeout, 4096):
            if fd == 0:
                self.read_stdin()
                continue
            i = fd_index.get(fd)
            if i is None:
                continue
            if self.state[i] == CONNECTING:
                self.on_writable(i)
            elif ev & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR):
                self.on_readable(i)

    def read_stdin(self) -> None:
        data = os.read(0, 65536)
        if not data:
            self.commands.append("quit")
        self.stdin_buf += data
        while b"\n" in self.stdin_buf:
            line, self.stdin_buf = self.stdin_buf.split(b"\n", 1)
            self.commands.append(line.decode())

    def connect_all(self) -> None:
        todo = 0
        self.first_connect = time.monotonic()
        in_flight = 0
        next_deadline_check = time.monotonic() + 1.0
        while True:
            while todo < self.n and in_flight < HANDSHAKE_WINDOW:
                self.start(todo)
                todo += 1
                in_flight += 1
            self.poll(0.05)
            in_flight = self.state.count(CONNECTING) + self.state.count(HANDSHAKE)
            now = time.monotonic()
            if now > next_deadline_check:
                next_deadline_check = now + 1.0
                for i in range(todo):
                    if self.state[i] in (CONNECTING, HANDSHAKE) and now - self.started[i] > HANDSHAKE_TIMEOUT:
                        self.fail(i, "handshake timeout")
            if todo >= self.n and in_flight == 0:
                break
        self.emit(ready=self.open, failed=self.state.count(FAILED), first=self.first_connect,
                  last=self.last_upgrade, errors=self.errors)

    def run(self) -> None:
        self.commands: list[str] = []
        os.set_blocking(0, False)
        self.ep.register(0, select.EPOLLIN)
        self.connect_all()
        while True:
            if not self.commands:
                self.poll(0.2)
                b = self.bcast
                if b is not None and time.monotonic() > b[3]:
                    self.emit(bcast=b[0], got=b[2], expected=b[1], last=0.0, cpu=cpu_now() - b[4])
                    self.bcast = None
                continue
            words = self.commands.pop(0).split()
            if not words:
                continue
            cmd = words[0]
            if cmd == "quit":
                break
            if cmd == "bcast":  # bcast ID: count the next broadcast's deliveries
                self.bcast = [int(words[1]), self.open, 0, time.monotonic() + BCAST_TIMEOUT, cpu_now()]
                self.emit(armed=int(words[1]))
            elif cmd == "rtt":  # rtt SECONDS ACTIVE RATE
                self.round_trips(float(words[1]), int(words[2]), float(words[3]))
            elif cmd == "close":
                self.close_all()
            elif cmd == "report":
                self.emit(report=True, open=self.open, errors=self.errors,
                          delivered=[min(self.delivered), max(self.delivered)] if self.n else [0, 0])
        self.ep.close()

    def round_trips(self, seconds: float, active: int, rate: float) -> None:
        conns = [i for i in range(self.n) if self.state[i] == OPEN][:active]
        for i in conns:
            self.socks[i].setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.rtts = []
        self.echo_sent = self.echo_back = 0
        total_rate = len(conns) * rate
        start = last = time.monotonic()
        stop = start + seconds
        budget = 0.0
        k = 0
        key = self.key
        kk = int.from_bytes(key * 4, "little")
        head = b"\x82\x90" + key
        while conns:
            now = time.monotonic()
            if now >= stop:
                break
            budget += (now - last) * total_rate
            last = now
            due = int(budget)
            budget -= due
            for _ in range(due):
                i = conns[k]
                k = (k + 1) % len(conns)
                sock = self.socks[i]
                if sock is None:
                    continue
                payload = ECHO.pack(ECHO_TAG, i, time.monotonic())
                frame = head + (int.from_bytes(payload, "little") ^ kk).to_bytes(16, "little")
                try:
                    if sock.send(frame) != len(frame):
                        self.error("echo frame not sent whole", i)
                        continue
                except OSError as exc:
                    self.fail(i, f"send: {exc.strerror}")
                    continue
                self.echo_sent += 1
            self.poll(0.002)
        deadline = time.monotonic() + DRAIN_TIMEOUT
        while self.echo_back < self.echo_sent and time.monotonic() < deadline:
            self.poll(0.05)
        self.emit(rtt=[round(x * 1e6) for x in self.rtts], sent=self.echo_sent, back=self.echo_back,
                  active=len(conns))

    def close_all(self) -> None:
        self.close_at = time.monotonic()
        for i in range(self.n):
            if self.state[i] == OPEN:
                self.state[i] = CLOSING
                try:
                    self.socks[i].send(self.close_frame)
                except OSError as exc:
                    self.fail(i, f"send close: {exc.strerror}")
        deadline = time.monotonic() + CLOSE_TIMEOUT
        while self.state.count(CLOSING) and time.monotonic() < deadline:
            self.poll(0.05)
        for i in range(self.n):
            if self.state[i] == CLOSING:
                self.fail(i, "closing handshake not completed")
        self.emit(closed=self.state.count(CLOSED), failed=self.state.count(FAILED), errors=self.errors,
                  delivered=list(self.delivered))


def client_main(args: argparse.Namespace) -> None:
    raise_nofile()
    Client(args.index, args.port, args.count, args.src).run()


# -- the driver ---------------------------------------------------------------------------------


class RunError(Exception):
    """The run could not go on (a server that did not start, upgrades that failed...)."""


def proc_status(pid: int, field: str) -> int:
    """A ``/proc/PID/status`` field in bytes (kB fields); 0 if the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def open_files(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def children_of(pid: int) -> list[int]:
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == pid:
                out.append(int(name))
    return sorted(out)


def cpu_seconds(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of a process (and its threads)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        tick = os.sysconf("SC_CLK_TCK")
        return int(fields[11]) / tick, int(fields[12]) / tick
    except OSError:
        return 0.0, 0.0


def settle(server: ServerProc) -> float:
    """Wait (at most SETTLE_TIMEOUT) until the server processes use under 5 % of a core; how long it took."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < SETTLE_TIMEOUT:
        cpu = server.cpu()
        time.sleep(1.0)
        if server.cpu() - cpu < 0.05:
            break
    return time.monotonic() - t0


class ServerProc:
    """``python -m cowboy_ws c100k:Handler ...`` in its own session, its log in a file."""

    def __init__(self, workers: int, redis_url: str | None, hibernate: bool, log_path: str) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, HERE, env.get("PYTHONPATH", "")) if p)
        env["C100K_HIBERNATE"] = "1" if hibernate else "0"
        env.setdefault("COWBOY_WS_CLUSTER_SECRET", base64.b64encode(os.urandom(32)).decode())
        cmd = [sys.executable, "-m", "cowboy_ws", "c100k:Handler", "--host", "127.0.0.1", "--port", "0",
               "--idle-timeout", "infinity", "--log-level", "INFO"]
        if redis_url:
            cmd += ["--workers", str(workers), "--redis", redis_url]
        self.workers = workers if redis_url else 0
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log,
                                     start_new_session=True)
        self.port = self._wait_port()
        self.pids = [self.proc.pid] + (self._workers() if self.workers else [])

    def text(self) -> str:
        with open(self.log.name, errors="replace") as f:
            return f.read()

    def _wait_port(self) -> int:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            text = self.text()
            if self.workers:
                m = WORKERS_RE.search(text)
                if m and len(LISTEN_RE.findall(text)) >= self.workers and text.count("messaging over redis") >= \
                        self.workers:
                    return int(m.group(1))
            else:
                m = LISTEN_RE.search(text)
                if m:
                    return int(m.group(1))
            if self.proc.poll() is not None:
                raise RunError(f"the server exited with {self.proc.returncode}:\n{text[-3000:]}")
            time.sleep(0.1)
        raise RunError(f"the server did not listen within {START_TIMEOUT:g} s:\n{self.text()[-3000:]}")

    def _workers(self) -> list[int]:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            kids = children_of(self.proc.pid)
            if len(kids) == self.workers:
                return kids
            time.sleep(0.1)
        raise RunError(f"expected {self.workers} worker processes, found {children_of(self.proc.pid)}")

    def rss(self) -> int:
        return sum(proc_status(pid, "VmRSS") for pid in self.pids)

    def fds(self) -> int:
        return sum(open_files(pid) for pid in self.pids)

    def cpu(self) -> float:
        return sum(sum(cpu_seconds(pid)) for pid in self.pids)

    def sys_cpu(self) -> float:
        return sum(cpu_seconds(pid)[1] for pid in self.pids)

    def alive(self) -> bool:
        return self.proc.poll() is None and all(os.path.exists(f"/proc/{pid}") for pid in self.pids)

    def errors(self) -> list[str]:
        return [line for line in self.text().splitlines()
                if " ERROR " in line or " CRITICAL " in line or line.startswith("Traceback")]

    def warnings(self) -> list[str]:
        """Warnings other than the ones every start logs."""
        return [line for line in self.text().splitlines()
                if " WARNING " in line and "unauthenticated" not in line and "secret is only" not in line]

    def stop(self) -> None:
        stop_process_group(self.proc, 30)
        self.log.close()


class Control:
    """The control connection: a blocking socket, text frames, bounded waits."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=CONTROL_TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.sendall(upgrade_request(port, "/control"))
        head = b""
        while b"\r\n\r\n" not in head:
            data = self.sock.recv(4096)
            if not data:
                raise RunError(f"control: closed during the handshake: {head!r}")
            head += data
        head, _, self.buf = head.partition(b"\r\n\r\n")
        if not head_ok(head + b"\r\n"):
            raise RunError(f"control: handshake refused: {head[:100]!r}")
        self.key = os.urandom(4)

    def send(self, text: bytes) -> None:
        self.sock.sendall(masked(0x1, text, self.key))

    def recv(self) -> bytes:
        while True:
            if len(self.buf) >= 2 and len(self.buf) >= 2 + self.buf[1]:
                n = self.buf[1]
                payload, self.buf = self.buf[2:2 + n], self.buf[2 + n:]
                return payload
            data = self.sock.recv(4096)
            if not data:
                raise RunError("control: the server closed the connection")
            self.buf += data

    def ask(self, text: bytes) -> bytes:
        self.send(text)
        return self.recv()

    def close(self) -> None:
        self.sock.close()


class Clients:
    """The client processes: commands to their stdin, JSON lines from their stdout."""

    def __init__(self, port: int, shares: list[int], net: int) -> None:
        self.procs = []
        for i, count in enumerate(shares):
            src = f"127.{net}.0.{i + 1}"
            self.procs.append(subprocess.Popen(
                [sys.executable, os.path.abspath(__file__), "--client", "--index", str(i), "--port", str(port),
                 "--count", str(count), "--src", src],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True))
        self.bufs = [b""] * len(self.procs)
        self.lines: list[list[dict]] = [[] for _ in self.procs]

    def tell(self, line: str, only: list[int] | None = None) -> None:
        for i, p in enumerate(self.procs):
            if only is None or i in only:
                try:
                    p.stdin.write(line.encode() + b"\n")
                    p.stdin.flush()
                except BrokenPipeError:
                    raise RunError(f"client {i} is gone (exit status {p.poll()})") from None

    def wait(self, key: str, timeout: float, only: list[int] | None = None) -> list[dict]:
        """The next message with ``key`` from each client (``only`` these); RunError past ``timeout``."""
        want = [i for i in range(len(self.procs)) if only is None or i in only]
        got: dict[int, dict] = {}
        deadline = time.monotonic() + timeout
        while len(got) < len(want):
            for i in want:
                if i in got:
                    continue
                for k, msg in enumerate(self.lines[i]):
                    if key in msg:
                        got[i] = self.lines[i].pop(k)
                        break
            if len(got) == len(want):
                break
            left = deadline - time.monotonic()
            if left <= 0:
                raise RunError(f"clients {[i for i in want if i not in got]} did not answer {key!r} within "
                               f"{timeout:g} s")
            pipes = {self.procs[i].stdout.fileno(): i for i in want if i not in got}
            ready, _, _ = select.select(list(pipes), [], [], min(left, 1.0))
            for fd in ready:
                i = pipes[fd]
                data = os.read(fd, 1 << 20)
                if not data:
                    raise RunError(f"client {i} exited with {self.procs[i].wait()}")
                self.bufs[i] += data
                while b"\n" in self.bufs[i]:
                    line, self.bufs[i] = self.bufs[i].split(b"\n", 1)
                    self.lines[i].append(json.loads(line))
        return [got[i] for i in want]

    def stop(self) -> None:
        for p in self.procs:
            try:
                p.stdin.close()
            except OSError:
                pass
        deadline = time.monotonic() + 10
        for p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            p.wait()
            p.stdout.close()


def start_redis():
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    import redis_server  # tests/redis_server.py: a throwaway redis-server on 127.0.0.1

    why = redis_server.available()
    if why:
        raise RunError(f"--workers > 1 needs Redis: {why}")
    return redis_server.RedisServer().start()


def one_pass(args: argparse.Namespace, hibernate: bool, net: int) -> dict:
    """Fresh servers, connect everything, measure, close; the figures of one column."""
    r: dict = {"hibernate": hibernate, "errors": {}}
    redis = server = clients = control = None
    errors: dict[str, int] = r["errors"]

    def add_errors(more: dict) -> None:
        for k, v in more.items():
            errors[k] = errors.get(k, 0) + v

    try:
        if args.workers > 1:
            redis = start_redis()
        log_path = os.path.join(args.log_dir, f"server-{'hibernated' if hibernate else 'plain'}.log")
        server = ServerProc(args.workers, redis.url if redis else None, hibernate, log_path)
        control = Control(server.port)
        if control.ask(b"count") != b"0":
            raise RunError("the group is not empty before connecting")
        time.sleep(1.0)
        base_rss, base_fds = server.rss(), server.fds()
        redis_base = proc_status(redis.proc.pid, "VmRSS") if redis else 0
        cpu0 = server.cpu()
        redis_cpu0 = sum(cpu_seconds(redis.proc.pid)) if redis else 0.0
        print(f"  {'hibernated' if hibernate else 'plain'}: server pids {server.pids} on port {server.port}, "
              f"baseline RSS {base_rss / 2**20:.1f} MiB, {base_fds} open files", flush=True)

        k = args.clients
        shares = [args.connections // k + (1 if i < args.connections % k else 0) for i in range(k)]
        clients = Clients(server.port, shares, net)
        ready = clients.wait("ready", HANDSHAKE_TIMEOUT + args.connections / 500)
        for msg in ready:
            add_errors(msg["errors"])
        upgraded = sum(m["ready"] for m in ready)
        span = max(m["last"] for m in ready) - min(m["first"] for m in ready)
        r["upgraded"] = upgraded
        r["upgrades_per_s"] = upgraded / span if span > 0 else float("nan")
        r["connect_s"] = span
        r["server_cpu_connect_s"] = server.cpu() - cpu0
        r["redis_cpu_connect_s"] = sum(cpu_seconds(redis.proc.pid)) - redis_cpu0 if redis else 0.0
        print(f"  {upgraded:,} upgraded in {span:.1f} s ({r['upgrades_per_s']:,.0f}/s)", flush=True)
        if upgraded != args.connections:
            raise RunError(f"only {upgraded:,} of {args.connections:,} connections were upgraded: {errors}")

        t0 = time.monotonic()
        while True:
            members = int(control.ask(b"count"))
            if members == args.connections:
                break
            if time.monotonic() - t0 > GROUP_TIMEOUT:
                raise RunError(f"the group has {members:,} members after {GROUP_TIMEOUT:g} s, not "
                               f"{args.connections:,}")
            time.sleep(0.2)
        r["group_s"] = time.monotonic() - t0
        r["settle_s"] = settle(server)  # the other workers finish applying the joins they received
        rss = server.rss()
        r["rss_per_conn"] = (rss - base_rss) / args.connections
        r["rss_mib"] = rss / 2**20
        r["base_rss_mib"] = base_rss / 2**20
        r["redis_rss_delta_mib"] = (proc_status(redis.proc.pid, "VmRSS") - redis_base) / 2**20 if redis else 0.0
        print(f"  group complete {r['group_s']:.1f} s after the last upgrade; server RSS {rss / 2**20:.1f} MiB, "
              f"{r['rss_per_conn'] / 1024:.2f} KiB per connection", flush=True)

        times = []
        lost = 0
        server_cpu = server_sys = client_cpu = 0.0
        for b in range(args.broadcasts):
            clients.tell(f"bcast {b}")
            clients.wait("armed", 10)
            cpu0, sys0 = server.cpu(), server.sys_cpu()
            t_send = time.monotonic()
            control.send(b"bcast")
            done = clients.wait("bcast", BCAST_TIMEOUT + 5)
            server_cpu += server.cpu() - cpu0  # clock ticks: summed over the broadcasts
            server_sys += server.sys_cpu() - sys0
            client_cpu += sum(m["cpu"] for m in done)
            if control.recv() != b"done":
                raise RunError("control: no 'done' after bcast")
            got = sum(m["got"] for m in done)
            lost += args.connections - got
            if got == args.connections:
                times.append(max(m["last"] for m in done) - t_send)
            time.sleep(0.2)
        r["bcast_times"] = times
        r["bcast_lost"] = lost
        deliveries = args.broadcasts * args.connections
        r["bcast_server_us"] = server_cpu / deliveries * 1e6
        r["bcast_server_sys_us"] = server_sys / deliveries * 1e6
        r["bcast_client_us"] = client_cpu / deliveries * 1e6
        print(f"  broadcasts: {', '.join(f'{t * 1000:.0f} ms' for t in times)}; lost {lost}", flush=True)

        pause, objects = control.ask(b"gc").split()
        r["gc_ms"], r["gc_objects"] = float(pause), int(objects)
        settle(server)
        active = min(args.active, args.connections)
        # the active connections in as few client processes as hold them: fewer busy processes on the
        # cores, less scheduling delay in the figures that is the clients' own
        act_shares, left = [], active
        for share in shares:
            act_shares.append(min(share, left))
            left -= act_shares[-1]
        cpu1 = server.cpu()
        for i, a in enumerate(act_shares):
            clients.tell(f"rtt {args.rtt_seconds} {a} {args.rate}", only=[i])  # 0 active: drains at once
        res = clients.wait("rtt", args.rtt_seconds + DRAIN_TIMEOUT + 10)
        rtts = sorted(x for m in res for x in m["rtt"])
        sent = sum(m["sent"] for m in res)
        back = sum(m["back"] for m in res)
        r["rtt"] = {"active": sum(m["active"] for m in res), "sent": sent, "back": back,
                    "p50_ms": percentile(rtts, 0.5) / 1000, "p99_ms": percentile(rtts, 0.99) / 1000,
                    "max_ms": (rtts[-1] / 1000) if rtts else float("nan"),
                    "server_cpu_us_per_msg": (server.cpu() - cpu1) / max(1, sent) * 1e6}
        r["echo_lost"] = sent - back
        print(f"  round trip of {r['rtt']['active']} active x {args.rate:g}/s for {args.rtt_seconds:g} s: "
              f"p50 {r['rtt']['p50_ms']:.2f} ms, p99 {r['rtt']['p99_ms']:.2f} ms, {sent - back} lost", flush=True)

        clients.tell("close")
        closed = clients.wait("closed", CLOSE_TIMEOUT + 10)
        for msg in closed:
            add_errors(msg["errors"])
        per_conn = [d for m in closed for d in m["delivered"]]
        r["closed"] = sum(m["closed"] for m in closed)
        r["bcast_per_conn_wrong"] = sum(1 for d in per_conn if d != args.broadcasts)
        t0 = time.monotonic()
        while server.fds() > base_fds and time.monotonic() - t0 < FD_TIMEOUT:
            time.sleep(0.2)
        t0 = time.monotonic()
        while True:  # the other workers' exits reach the control's worker through Redis
            r["members_after"] = int(control.ask(b"count"))
            if r["members_after"] == 0 or time.monotonic() - t0 > EMPTY_TIMEOUT:
                break
            time.sleep(0.5)
        r["group_empty_s"] = time.monotonic() - t0
        time.sleep(1.0)
        r["fds_after"] = server.fds()
        r["fds_base"] = base_fds
        r["rss_after_mib"] = server.rss() / 2**20
        print(f"  closed {r['closed']:,}; open files {r['fds_after']} (baseline {base_fds}); RSS "
              f"{r['rss_after_mib']:.1f} MiB (baseline {r['base_rss_mib']:.1f}); group {r['members_after']}",
              flush=True)
        if not server.alive():
            errors["a server process died"] = errors.get("a server process died", 0) + 1
        logged = server.errors()
        if logged:
            errors["server errors logged"] = len(logged)
            for line in logged[:5]:
                print("  server:", line, file=sys.stderr)
        warned = server.warnings()
        r["server_warnings"] = len(warned)
        for line in warned[:5]:
            print("  server:", line[:300], file=sys.stderr)
        return r
    finally:
        if clients is not None:
            clients.stop()
        if control is not None:
            control.close()
        if server is not None:
            server.stop()
        if redis is not None:
            redis.close()


def verdicts(args: argparse.Namespace, results: list[dict]) -> list[tuple[str, bool, bool]]:
    """Each check as ``(what, passed, correctness)``: correctness checks (errors, losses, clean
    closes) are the ones ``--smoke`` judges; the others are the memory and timing goals."""
    out: list[tuple[str, bool, bool]] = []
    for r in results:
        name = "hibernated" if r["hibernate"] else "plain"
        limit = 2.5 if r["hibernate"] else 4.0
        out.append((f"{name}: RSS per idle connection <= {limit} KiB", r["rss_per_conn"] / 1024 <= limit, False))
        out.append((f"{name}: broadcast to all <= 1 s (slowest of {args.broadcasts})",
                    len(r["bcast_times"]) == args.broadcasts and max(r["bcast_times"]) <= 1.0, False))
        out.append((f"{name}: round trip p99 <= 10 ms", r["rtt"]["p99_ms"] <= 10.0, False))
        out.append((f"{name}: 0 errors", not r["errors"], True))
        out.append((f"{name}: 0 lost (broadcast deliveries, echoes)",
                    r["bcast_lost"] == 0 and r["echo_lost"] == 0 and r["bcast_per_conn_wrong"] == 0, True))
        out.append((f"{name}: every closing handshake, group empty, open files back to baseline",
                    r["closed"] == args.connections and r["members_after"] == 0 and r["fds_after"] <= r["fds_base"],
                    True))
    return out


def table(args: argparse.Namespace, results: list[dict]) -> None:
    cols = ["hibernated" if r["hibernate"] else "plain" for r in results]
    rows = [
        ("connections upgraded", lambda r: f"{r['upgraded']:,}"),
        ("upgrades/s while connecting", lambda r: f"{r['upgrades_per_s']:,.0f}"),
        ("  CPU per upgrade: server / redis (us)",
         lambda r: f"{r['server_cpu_connect_s'] / r['upgraded'] * 1e6:,.0f} / "
                   f"{r['redis_cpu_connect_s'] / r['upgraded'] * 1e6:,.0f}"),
        ("group complete / server idle after (s)", lambda r: f"{r['group_s']:.1f} / {r['settle_s']:.0f}"),
        ("server RSS baseline / loaded (MiB)", lambda r: f"{r['base_rss_mib']:.1f} / {r['rss_mib']:.1f}"),
        ("server RSS per idle connection (KiB)", lambda r: f"{r['rss_per_conn'] / 1024:.2f}"),
        ("redis RSS growth (MiB)", lambda r: f"{r['redis_rss_delta_mib']:.1f}"),
        ("broadcast 16 B to all: send -> last (ms)",
         lambda r: f"{statistics.median(r['bcast_times']) * 1000:.0f} [{min(r['bcast_times']) * 1000:.0f}-"
                   f"{max(r['bcast_times']) * 1000:.0f}]" if r["bcast_times"] else "-"),
        ("  CPU/delivery: server (sys) / clients (us)",
         lambda r: f"{r['bcast_server_us']:.1f} ({r['bcast_server_sys_us']:.1f}) / {r['bcast_client_us']:.1f}"),
        ("round trip p50 / p99 / max (ms)",
         lambda r: f"{r['rtt']['p50_ms']:.2f} / {r['rtt']['p99_ms']:.2f} / {r['rtt']['max_ms']:.1f}"),
        ("  full GC in a worker: ms (tracked objects)", lambda r: f"{r['gc_ms']:.0f} ({r['gc_objects']:,})"),
        ("  echoes sent (server CPU us/msg)",
         lambda r: f"{r['rtt']['sent']:,} ({r['rtt']['server_cpu_us_per_msg']:.0f})"),
        ("errors", lambda r: str(sum(r["errors"].values())) + (f" {r['errors']}" if r["errors"] else "")),
        ("lost: broadcast deliveries / echoes", lambda r: f"{r['bcast_lost']} / {r['echo_lost']}"),
        ("closing handshakes completed", lambda r: f"{r['closed']:,}"),
        ("group empty after the last close (s)", lambda r: f"{r['group_empty_s']:.1f} ({r['members_after']} left)"),
        ("open files after close / baseline", lambda r: f"{r['fds_after']} / {r['fds_base']}"),
        ("server warnings logged", lambda r: str(r["server_warnings"])),
        ("server RSS after close / baseline (MiB)", lambda r: f"{r['rss_after_mib']:.1f} / {r['base_rss_mib']:.1f}"),
    ]
    width = max(len(name) for name, _ in rows) + 2
    print()
    print(f"{'':{width}}" + "".join(f"{c:>22}" for c in cols))
    for name, fmt in rows:
        print(f"{name:{width}}" + "".join(f"{fmt(r):>22}" for r in results))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=19_000, help="concurrent connections (default 19000)")
    parser.add_argument("--workers", type=int, default=1,
                        help="server processes: 1 is one plain server, N > 1 is --workers N --redis (default 1)")
    parser.add_argument("--clients", type=int, default=0,
                        help="client processes (default: enough for <= 16,000 connections each, at least 2)")
    parser.add_argument("--hibernate", choices=["both", "off", "on"], default="both",
                        help="passes: plain then hibernated (both, the default), or one of them")
    parser.add_argument("--broadcasts", type=int, default=5, help="broadcasts to all, one at a time (default 5)")
    parser.add_argument("--active", type=int, default=1000, help="connections echoing in the round-trip phase")
    parser.add_argument("--rate", type=float, default=10.0, help="messages per second per active connection")
    parser.add_argument("--rtt-seconds", type=float, default=10.0, help="length of the round-trip phase")
    parser.add_argument("--quick", action="store_true",
                        help="5,000 connections, 3 broadcasts, 3 s of round trips (~30 s)")
    parser.add_argument("--smoke", action="store_true",
                        help="--quick, and the exit status judged on errors, losses and clean closes only (CI)")
    parser.add_argument("--json", metavar="FILE", help="write the figures of every pass to FILE")
    parser.add_argument("--log-dir", metavar="DIR",
                        help="keep the server logs there (default: a new directory under the temporary one)")
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--index", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--src", default="127.0.0.1", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        client_main(args)
        return 0
    if args.quick or args.smoke:
        args.connections = min(args.connections, 5_000)
        args.broadcasts = 3
        args.rtt_seconds = 3.0
    for name in ("connections", "workers", "broadcasts", "active"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.rate <= 0 or args.rtt_seconds <= 0:
        parser.error("--rate and --rtt-seconds must be positive")
    if not args.clients:
        args.clients = max(2, -(-args.connections // 16_000))
    if args.connections / args.clients > MAX_PER_CLIENT:
        parser.error(f"{args.connections} connections over {args.clients} client processes is more than "
                     f"{MAX_PER_CLIENT} per process (the open-file limit): use more --clients")
    hard = raise_nofile()
    if args.smoke and args.connections + 300 > hard:  # a CI machine with a low open-file limit: fewer
        args.connections = max(100, hard - 300)
    per_worker = args.connections / args.workers
    spread = 0.0 if args.workers == 1 else 0.05 * per_worker  # SO_REUSEPORT spreads by hash, not exactly
    if per_worker + spread + 200 > hard:
        parser.error(f"{args.connections} connections over {args.workers} worker(s) is about {per_worker:,.0f} per "
                     f"server process, too close to the open-file limit ({hard}): use more --workers")
    args.log_dir = args.log_dir or tempfile.mkdtemp(prefix="c100k-")
    os.makedirs(args.log_dir, exist_ok=True)
    net = random.randrange(1, 255)  # source addresses 127.<net>.0.<client>: no TIME_WAIT left by an earlier run
    passes = {"both": [False, True], "off": [False], "on": [True]}[args.hibernate]
    print(f"c100k: {args.connections:,} connections, "
          f"{'one server process' if args.workers == 1 else f'{args.workers} workers + Redis'}, "
          f"{args.clients} client processes, backend {cowboy_ws.backend()}, {os.cpu_count()} CPUs", flush=True)
    results = []
    try:
        for hibernate in passes:
            results.append(one_pass(args, hibernate, net))
            net = net % 254 + 1
    except RunError as exc:
        print(f"c100k: FAILED: {exc} (server logs: {args.log_dir})", file=sys.stderr)
        return 2
    table(args, results)
    print(f"\nserver logs: {args.log_dir}")
    checks = verdicts(args, results)
    print()
    judged = [ok for _, ok, correctness in checks if correctness or not args.smoke]
    for what, ok, correctness in checks:
        tag = "PASS" if ok else "FAIL"
        if args.smoke and not correctness:
            tag = f"({tag.lower()})"  # --smoke: shown, not judged
        print(f"  {tag:6s}  {what}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "results": results,
                       "verdicts": [{"goal": w, "pass": ok} for w, ok, _ in checks]}, f, indent=1)
    return 0 if all(judged) else 1


if __name__ == "__main__":
    sys.exit(main())
