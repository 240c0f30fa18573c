"""``--workers``: echo throughput with 2 workers vs 1, and broadcast across processes over Redis.

Two measurements, each against ``python -m cowboy_ws bench_workers:Handler`` run as a
subprocess (this file is also the handler module) on 127.0.0.1:

1. **16-byte echo, ``--workers 2`` vs ``--workers 1``**: ``--conns`` client connections
   (default 8), balanced over the workers (each connection asks ``who?`` and is kept only
   while its worker has fewer than its share: with SO_REUSEPORT the kernel picks the
   worker), spread over ``--client-procs`` load processes (default 2).  Each connection
   keeps 64 masked 16-byte text frames in flight (raw sockets, frames pre-built, replies
   counted by bytes, as ``bench/echo_cpu.py``).  Reported: echoes/s over ``--seconds``
   after a warm-up, and the ratio 2 workers / 1 worker.  On a 2-core machine the load
   processes share the cores with the workers, so the ratio is below 2 by construction.
2. **Broadcast to 1,000 connections over 2 processes**: ``--workers 2 --redis URL`` (a
   ``redis-server`` started for the run, as in the tests), 1,000 member connections
   balanced 500/500, one control connection whose ``go 10`` makes its worker call
   ``cowboy_ws.broadcast`` 10 times (16-byte text): each call frames once for the local
   500 and publishes once for the other worker, which frames once for its 500.  The
   client keeps at most 50 rounds ahead of the slowest delivery and reports messages
   delivered per second (rounds x 1,000 / time until the last member got the last one).
   The same figure for one process without Redis (``--workers`` absent) is measured in the
   same run as the baseline.

3. **The cluster bus: CPU per message, pickle against msgpack + HMAC**: ``--workers 2 --redis``
   with 20 sink connections (10 per worker) and a control connection.  ``pid.send``: each
   ``send 20`` makes the control's worker ``pid.send`` a 16-byte message 20 times to each of
   the 10 sinks on the *other* worker (each a bus message; at most 2,000 in flight);
   ``broadcast``: each ``bcast 20`` broadcasts 20 times to the group (10 local sinks, 10
   remote: one bus message per call).
   Reported per configuration: messages/s and the CPU (user + system) of every process of the
   server (supervisor and workers, from ``/proc``) per message sent, as the median of
   ``--bus-repeat`` runs (default 3) that alternate between the configurations in the same run:
   ``--cluster-codec pickle`` without a secret (the pre-msgpack wire: pickled bodies, no MAC)
   against the default msgpack codec with ``COWBOY_WS_CLUSTER_SECRET`` set (every message
   sealed and checked), and the ratio.  Redis's own CPU is shown apart (the same work for both).
   Then the bus path alone, in this process: what encoding, sealing, opening and applying one
   ``pid.send`` cost in each configuration (CPU time, no sockets: steadier on a busy machine).

::

    python bench/bench_workers.py                 # all three, about 100 s
    python bench/bench_workers.py --quick         # shorter runs
    python bench/bench_workers.py --skip-echo --skip-broadcast      # the bus comparison only
    python bench/bench_workers.py --skip-broadcast --conns 16 --client-procs 1
"""

from __future__ import annotations

import argparse
import base64
import multiprocessing
import os
import re
import resource
import selectors
import socket
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, ".."))
sys.path.insert(0, ROOT)

from _servers import stop_process_group  # noqa: E402  (bench/: the script's folder, or PYTHONPATH)

import cowboy_ws  # noqa: E402
from cowboy_ws.protocol.frames import OP_TEXT, serialize_frame  # noqa: E402
from cowboy_ws.protocol.handshake import build_request  # noqa: E402

PAYLOAD = b"0123456789abcdef"
FRAME_OUT = 2 + 4 + len(PAYLOAD)      # masked client frame: 22 bytes
FRAME_IN = 2 + len(PAYLOAD)           # a server text frame of 16 bytes: 18 bytes
IN_FLIGHT = 64
IO_TIMEOUT = 10.0
GROUP = "bench"
SINKS = "sinks"
LISTEN_RE = re.compile(r"listening on https?://\S+:(\d+) ")
WORKERS_RE = re.compile(r"worker\(s\) on wss?://\S+:(\d+) ")


# --- the handler (the server side imports this module) ------------------------------------------


class Handler:
    """``/`` echoes; ``/member`` joins the group; ``/control``: ``go N`` broadcasts N times. ``who?``: worker.

    ``/sink`` joins the sink group and sends back what ``websocket_info`` gets; on ``/control``,
    ``send N`` pid.sends N messages to each sink of other nodes, ``bcast N`` broadcasts N times to
    the sinks.
    """

    @staticmethod
    def init(req, _state):
        role = {"/member": "member", "/control": "control", "/sink": "sink"}.get(req.path, "echo")
        return ("cowboy_websocket", req, role, {"idle_timeout": "infinity"})

    @staticmethod
    def websocket_init(state):
        if state == "member":
            cowboy_ws.join(GROUP)
        elif state == "sink":
            cowboy_ws.join(SINKS)
        return ("ok", state)

    @staticmethod
    def websocket_info(info, state):
        return ("reply", ("text", info), state)

    @staticmethod
    def websocket_handle(frame, state):
        data = frame[1]
        if state == "echo" and data != b"who?":
            return ("reply", frame, state)
        if data == b"who?":
            from cowboy_ws.workers import worker_id
            return ("reply", ("text", str(worker_id() or 0)), state)
        if state == "control" and data.startswith(b"go "):
            for _ in range(int(data[3:])):
                cowboy_ws.broadcast(GROUP, ("text", PAYLOAD))
            return ("ok", state)
        if state == "control" and data.startswith(b"send "):
            remote = [pid for pid in cowboy_ws.members(SINKS) if not pid.local]
            for _ in range(int(data[5:])):
                for pid in remote:
                    pid.send(PAYLOAD)
            return ("ok", state)
        if state == "control" and data.startswith(b"bcast "):
            for _ in range(int(data[6:])):
                cowboy_ws.broadcast(SINKS, ("text", PAYLOAD))
            return ("ok", state)
        if data == b"count":
            return ("reply", ("text", str(len(cowboy_ws.members(GROUP)))), state)
        if data == b"sinks":
            return ("reply", ("text", str(len(cowboy_ws.members(SINKS)))), state)
        return ("ok", state)


# --- processes ----------------------------------------------------------------------------------


def raise_nofile() -> None:
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        pass


class Server:
    """``python -m cowboy_ws bench_workers:Handler ARGS`` with its output drained by a thread."""

    def __init__(self, *args: str, workers: int = 0, env: dict[str, str] | None = None) -> None:
        env = {**os.environ, **(env or {})}
        env["PYTHONPATH"] = os.pathsep.join([ROOT, HERE, env.get("PYTHONPATH", "")])
        code = ("import resource, runpy, sys; s, h = resource.getrlimit(resource.RLIMIT_NOFILE); "
                "resource.setrlimit(resource.RLIMIT_NOFILE, (h, h)); sys.argv[0] = 'cowboy_ws'; "
                "runpy.run_module('cowboy_ws', run_name='__main__')")
        extra = ("--workers", str(workers)) if workers else ()
        self.proc = subprocess.Popen([sys.executable, "-c", code, "bench_workers:Handler", "--port", "0",
                                      "--log-level", "warning" if not workers else "info", *extra, *args],
                                     env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True, start_new_session=True)
        self.lines: list[str] = []
        self._cond = threading.Condition()
        threading.Thread(target=self._drain, daemon=True).start()
        # the single-process server logs at warning: its port comes from a one-line probe
        self.port = self._wait_port(workers)

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()
        with self._cond:
            self.lines.append("<exit>")
            self._cond.notify_all()

    def _wait(self, predicate, what: str) -> None:
        with self._cond:
            if not self._cond.wait_for(predicate, 20):
                raise RuntimeError(f"server: no {what}:\n{''.join(self.lines)}")
            if self.lines and self.lines[-1] == "<exit>":
                raise RuntimeError(f"server exited:\n{''.join(self.lines)}")

    def _wait_port(self, workers: int) -> int:
        if not workers:
            raise RuntimeError("use workers >= 1 (the supervisor logs the port)")
        self._wait(lambda: any(WORKERS_RE.search(x) for x in self.lines) or "<exit>" in self.lines, "port line")
        port = next(int(m.group(1)) for x in self.lines if (m := WORKERS_RE.search(x)))
        self._wait(lambda: sum(1 for x in self.lines if LISTEN_RE.search(x)) >= workers or "<exit>" in self.lines,
                   f"{workers} listening workers")
        return port

    def stop(self) -> None:
        stop_process_group(self.proc, 30)


# --- raw-socket client ---------------------------------------------------------------------------


def masked(payload: bytes) -> bytes:
    return serialize_frame(OP_TEXT, payload, mask_key=os.urandom(4))


PREBUILT = b"".join(masked(PAYLOAD) for _ in range(IN_FLIGHT))
WHO = masked(b"who?")


def connect(port: int, path: str = "/") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(build_request(f"127.0.0.1:{port}", path, key))
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(4096)
        if not data:
            raise ConnectionError(f"closed during the handshake: {buf!r}")
        buf += data
    head, _, rest = buf.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 101") or rest:
        raise ConnectionError(f"handshake: {head[:100]!r} {rest[:20]!r}")
    return sock


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        data = sock.recv(n - len(buf))
        if not data:
            raise ConnectionError("closed")
        buf += data
    return buf


def who(sock: socket.socket) -> int:
    sock.sendall(WHO)
    head = recv_exactly(sock, 2)
    return int(recv_exactly(sock, head[1] & 0x7F))


def balanced(port: int, path: str, per_worker: int, workers: int, limit: int) -> list[socket.socket]:
    """Connections with exactly ``per_worker`` on each worker (extras closed), at most ``limit`` tries."""
    kept: dict[int, list[socket.socket]] = {w: [] for w in range(workers)}
    extras: list[socket.socket] = []
    for _ in range(limit):
        sock = connect(port, path)
        w = who(sock)
        if len(kept[w]) < per_worker:
            kept[w].append(sock)
            if all(len(v) == per_worker for v in kept.values()):
                for s in extras:
                    s.close()
                return [s for v in kept.values() for s in v]
        else:
            extras.append(sock)
    raise RuntimeError(f"could not balance {per_worker} per worker in {limit} connections: "
                       f"{ {w: len(v) for w, v in kept.items()} }")


def echo_client(port: int, per_worker: int, workers: int, seconds: float, warmup: float,
                ready: "multiprocessing.synchronize.Barrier", out: "multiprocessing.Queue") -> None:
    raise_nofile()
    socks = balanced(port, "/", per_worker, workers, limit=200 * max(1, per_worker))
    sel = selectors.DefaultSelector()
    got = {}
    done = {}
    pre = memoryview(PREBUILT)
    for sock in socks:
        sock.setblocking(True)
        sel.register(sock, selectors.EVENT_READ)
        got[sock] = 0
        done[sock] = 0
    ready.wait(IO_TIMEOUT)
    for sock in socks:
        sock.sendall(PREBUILT)
    start = time.monotonic()
    t_measure = start + warmup
    t_end = t_measure + seconds
    base = None
    while True:
        now = time.monotonic()
        if base is None and now >= t_measure:
            base = sum(done.values())
        if now >= t_end:
            break
        for key, _mask in sel.select(0.5):
            sock = key.fileobj
            data = sock.recv(262144)
            if not data:
                raise ConnectionError("server closed")
            got[sock] += len(data)
            now_done = got[sock] // FRAME_IN
            more = now_done - done[sock]
            done[sock] = now_done
            if more:
                sock.sendall(pre[:more * FRAME_OUT])
    out.put(sum(done.values()) - (base or 0))
    for sock in socks:
        sock.close()


def echo_run(workers: int, conns: int, client_procs: int, seconds: float, warmup: float) -> float:
    server = Server(workers=workers)
    ctx = multiprocessing.get_context("fork")
    try:
        per_proc = conns // client_procs
        ready = ctx.Barrier(client_procs)
        out = ctx.Queue()
        procs = [ctx.Process(target=echo_client, args=(server.port, per_proc // workers, workers, seconds, warmup,
                                                       ready, out)) for _ in range(client_procs)]
        for p in procs:
            p.start()
        total = sum(out.get(timeout=seconds + warmup + 60) for _ in procs)
        for p in procs:
            p.join(10)
        return total / seconds
    finally:
        server.stop()


def broadcast_run(args: tuple[str, ...], workers: int, members: int, rounds: int, window: int) -> float:
    server = Server(*args, workers=workers)
    try:
        socks = balanced(server.port, "/member", members // workers, workers, limit=members * 4)
        control = connect(server.port, "/control")
        control.sendall(masked(b"count"))  # every member is seen (across workers: over Redis) before go
        deadline = time.monotonic() + 30
        while True:
            head = recv_exactly(control, 2)
            n = int(recv_exactly(control, head[1] & 0x7F))
            if n == members:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {n} of {members} members seen")
            time.sleep(0.05)
            control.sendall(masked(b"count"))
        sel = selectors.DefaultSelector()
        for sock in socks:
            sock.setblocking(False)
            sel.register(sock, selectors.EVENT_READ)
        per_round = members * FRAME_IN
        target = rounds * per_round
        total = 0
        sent = 0
        go = masked(b"go 10")
        start = time.monotonic()
        limit = start + 120
        while total < target:
            while sent < rounds and sent - total // per_round < window:
                control.sendall(go)
                sent += 10
            for key, _mask in sel.select(0.5):
                try:
                    data = key.fileobj.recv(262144)
                except BlockingIOError:
                    continue
                if not data:
                    raise ConnectionError("a member was closed")
                total += len(data)
            if time.monotonic() > limit:
                raise RuntimeError(f"{total // FRAME_IN} of {rounds * members} deliveries after 120 s")
        elapsed = time.monotonic() - start
        for sock in socks:
            sock.close()
        control.close()
        return rounds * members / elapsed
    finally:
        server.stop()


# --- the cluster bus: CPU per message -------------------------------------------------------------

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pgid: int) -> float:
    """User + system CPU of every live process in process group ``pgid`` (the server's session)."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:          # after the name: state ppid pgrp ...; utime stime are 14, 15
            total += int(fields[11]) + int(fields[12])
    return total / TICK


def process_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def ask_int(sock: socket.socket, question: bytes) -> int:
    sock.sendall(masked(question))
    head = recv_exactly(sock, 2)
    return int(recv_exactly(sock, head[1] & 0x7F))


def bus_run(redis_url: str, redis_pid: int, env: dict[str, str], args: tuple[str, ...], mode: str,
            messages: int, sinks: int = 10, batch: int = 20, window: int = 2000) -> tuple[float, float, float]:
    """One server (2 workers over Redis): (messages/s, server CPU µs per message, Redis CPU µs per message).

    ``mode`` "send": pid.send to the sinks of the other worker; "bcast": broadcast to all sinks
    (a message is one broadcast call).
    """
    server = Server("--redis", redis_url, *args, workers=2, env=env)
    try:
        socks = balanced(server.port, "/sink", sinks, 2, limit=sinks * 20)
        while True:  # the control connection, and which sinks are on the other worker
            control = connect(server.port, "/control")
            if who(control) == 0:
                break
            control.close()
        deadline = time.monotonic() + 30
        while ask_int(control, b"sinks") != 2 * sinks:
            if time.monotonic() > deadline:
                raise RuntimeError("the sinks of the other worker were not seen")
            time.sleep(0.05)
        sel = selectors.DefaultSelector()
        for sock in socks:
            sock.setblocking(False)
            sel.register(sock, selectors.EVENT_READ)
        # a message: one pid.send (to one remote sink), or one broadcast call (to every sink)
        per_message = FRAME_IN if mode == "send" else 2 * sinks * FRAME_IN      # bytes it delivers
        per_command = batch * sinks if mode == "send" else batch                # messages a command makes
        target = messages * per_message
        command = masked(f"{mode} {batch}".encode())
        total = sent = 0
        cpu0, redis0 = cpu_seconds(server.proc.pid), process_cpu(redis_pid)
        start = time.monotonic()
        limit = start + 120
        while total < target:
            while sent < messages and sent - total // per_message < window:
                control.sendall(command)
                sent += per_command
            for key, _mask in sel.select(0.5):
                try:
                    data = key.fileobj.recv(262144)
                except BlockingIOError:
                    continue
                if not data:
                    raise ConnectionError("a sink was closed")
                total += len(data)
            if time.monotonic() > limit:
                raise RuntimeError(f"{total // per_message} of {messages} messages after 120 s")
        elapsed = time.monotonic() - start
        cpu = cpu_seconds(server.proc.pid) - cpu0
        redis_cpu = process_cpu(redis_pid) - redis0
        for sock in socks:
            sock.close()
        control.close()
        return messages / elapsed, cpu / messages * 1e6, redis_cpu / messages * 1e6
    finally:
        server.stop()


BUS_CONFIGS = {
    "pickle, no MAC": ({"COWBOY_WS_CLUSTER_SECRET": ""}, ("--cluster-codec", "pickle")),
    "msgpack + HMAC": ({"COWBOY_WS_CLUSTER_SECRET": "bench secret, 32 random bytes.."}, ()),
}


class _CountingNode:
    """A LocalNode for :func:`bus_path_alone`: counts deliveries instead of reaching connections."""

    def __init__(self, node: str) -> None:
        self.node, self.delivered = node, 0

    def node_id(self) -> str:
        return self.node

    def deliver(self, pid_id: int, msg: object) -> bool:
        self.delivered += 1
        return True

    def deliver_broadcast(self, group: object, kind: str, data: bytes, exclude_id: object) -> int:
        self.delivered += 1
        return 1

    def membership(self) -> dict:
        return {}

    def pid(self, node: str, pid_id: int) -> object:
        return cowboy_ws.process.pid_from_ref(node, pid_id)

    def pid_ref(self, obj: object) -> object:
        return cowboy_ws.process.pid_ref(obj)


def bus_path_alone(n: int, repeat: int) -> None:
    """The bus path without Redis or sockets, in this process (CPU time): what the codec and the MAC cost.

    A message: the sender's ``pid.send`` (encode, size check, queue), its publisher sealing it, the
    receiver opening, checking and applying it (the same RedisBackend methods the threads run).
    """
    from cowboy_ws.redis_backend import RedisBackend

    def once(env: dict[str, str], args: tuple[str, ...]) -> float:
        secret = env.get("COWBOY_WS_CLUSTER_SECRET") or None
        codec = args[1] if args else "msgpack"
        sender, receiver = (RedisBackend("redis://127.0.0.1:1/0", secret=secret, codec=codec) for _ in range(2))
        sender.attach(_CountingNode("bench:1:aaaa"))
        receiving = _CountingNode("bench:2:bbbb")
        receiver.attach(receiving)
        pid = cowboy_ws.process.pid_from_ref("bench:2:bbbb", 7)
        seal, handle, queue = sender._bus.seal, receiver._handle, sender._queue
        t0 = time.process_time()
        for _ in range(n):
            sender.send(pid, PAYLOAD)
            channel, body = queue.popleft()
            handle(channel.encode(), seal(channel, body))
        elapsed = time.process_time() - t0
        assert receiving.delivered == n, receiver.rejected
        return elapsed / n * 1e6

    runs: dict[str, list[float]] = {name: [] for name in BUS_CONFIGS}
    for _ in range(repeat):
        for name, (env, args) in BUS_CONFIGS.items():
            runs[name].append(once(env, args))
    print(f"  the bus path alone (in-process, no Redis: encode + seal + open + apply), {n:,} messages, "
          f"median of {repeat}:")
    medians = {name: statistics.median(r) for name, r in runs.items()}
    for name, value in medians.items():
        print(f"    {name:<16} {value:6.2f} µs/msg   (runs: " + ", ".join(f"{r:.2f}" for r in runs[name]) + ")")
    print(f"    difference: {medians['msgpack + HMAC'] - medians['pickle, no MAC']:+.2f} µs/msg")


def bus_compare(messages: int, repeat: int) -> None:
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from redis_server import RedisServer, available
    why = available()
    print(f"\ncluster bus, CPU per message: pickle vs msgpack + HMAC-SHA256, {messages:,} messages a run, "
          f"median of {repeat} alternating runs")
    if why is not None:
        print(f"  skipped ({why})")
        return
    with RedisServer() as redis_srv:
        assert redis_srv.proc is not None
        for mode, what in (("send", "pid.send of 16 bytes to a Pid of the other worker"),
                           ("bcast", "broadcast of 16 bytes to 10 local + 10 remote members")):
            runs: dict[str, list[tuple[float, float, float]]] = {name: [] for name in BUS_CONFIGS}
            for _ in range(repeat):
                for name, (env, args) in BUS_CONFIGS.items():
                    runs[name].append(bus_run(redis_srv.url, redis_srv.proc.pid, env, args, mode,
                                              messages if mode == "send" else messages // 4))
            print(f"  {what}:")
            medians = {}
            for name, results in runs.items():
                rate, cpu, rcpu = (statistics.median(r[i] for r in results) for i in range(3))
                medians[name] = cpu
                print(f"    {name:<16} {rate:>9,.0f} msg/s   server CPU {cpu:6.1f} µs/msg   (redis {rcpu:5.1f} µs/msg;"
                      " runs: " + ", ".join(f"{r[1]:.1f}" for r in results) + ")")
            base, new = medians["pickle, no MAC"], medians["msgpack + HMAC"]
            print(f"    CPU per message, msgpack + HMAC / pickle: {new / base:.2f}x")
    bus_path_alone(50_000, max(repeat, 3))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="shorter runs")
    ap.add_argument("--conns", type=int, default=8, help="echo connections (default 8)")
    ap.add_argument("--client-procs", type=int, default=2, help="echo load processes (default 2)")
    ap.add_argument("--seconds", type=float, default=None, help="echo measurement per run (default 4, quick 2)")
    ap.add_argument("--rounds", type=int, default=None, help="broadcast rounds (default 300, quick 100)")
    ap.add_argument("--repeat", type=int, default=None, help="echo runs per worker count (default 2, quick 1)")
    ap.add_argument("--bus-messages", type=int, default=None,
                    help="pid.send messages per bus run (default 40,000, quick 10,000; broadcasts: a quarter)")
    ap.add_argument("--bus-repeat", type=int, default=None, help="runs per bus configuration (default 3, quick 1)")
    ap.add_argument("--skip-echo", action="store_true")
    ap.add_argument("--skip-broadcast", action="store_true")
    ap.add_argument("--skip-bus", action="store_true")
    args = ap.parse_args(argv)
    raise_nofile()
    seconds = args.seconds or (2.0 if args.quick else 4.0)
    rounds = args.rounds or (100 if args.quick else 300)
    repeat = args.repeat or (1 if args.quick else 2)
    print(f"cowboy_ws {cowboy_ws.__version__}, kernels {cowboy_ws.backend()}, {os.cpu_count()} CPU(s), "
          f"python {sys.version.split()[0]}")

    if not args.skip_echo:
        print(f"\n16-byte echo: {args.conns} connections balanced over the workers, {IN_FLIGHT} in flight each, "
              f"{args.client_procs} load process(es), {seconds:g} s per run, {repeat} run(s) each (best)")
        results = {}
        for workers in (1, 2):
            runs = [echo_run(workers, args.conns, args.client_procs, seconds, 1.0) for _ in range(repeat)]
            results[workers] = max(runs)
            print(f"  --workers {workers}: {results[workers]:>10,.0f} echoes/s   (runs: "
                  + ", ".join(f"{r:,.0f}" for r in runs) + ")")
        print(f"  ratio 2 workers / 1 worker: {results[2] / results[1]:.2f}x")

    if not args.skip_broadcast:
        sys.path.insert(0, os.path.join(ROOT, "tests"))
        from redis_server import RedisServer, available
        why = available()
        print(f"\nbroadcast of a 16-byte text to 1,000 members: {rounds} rounds, 50 rounds of window")
        base = broadcast_run((), 1, 1000, rounds, 50)
        print(f"  1 process, no Redis:                 {base:>10,.0f} deliveries/s")
        if why is not None:
            print(f"  2 processes over Redis: skipped ({why})")
        else:
            with RedisServer() as redis_srv:
                cross = broadcast_run(("--redis", redis_srv.url), 2, 1000, rounds, 50)
            print(f"  --workers 2 --redis (500 + 500):     {cross:>10,.0f} deliveries/s   "
                  f"({cross / base:.2f}x the single process)")

    if not args.skip_bus:
        bus_compare(args.bus_messages or (10_000 if args.quick else 40_000), args.bus_repeat or (1 if args.quick else 3))
    return 0


if __name__ == "__main__":
    sys.exit(main())
