"""Soak: many concurrent connections with a mixed workload for a fixed time; zero errors, zero loss.

The server runs in its own process (``python bench/soak.py --serve``): a
``cowboy_ws.Server`` with an exact-echo handler, permessage-deflate accepted,
default limits.  Load comes from ``--clients`` processes, each one
``selectors`` loop driving its share of the connections with the sans-IO
``cowboy_ws.protocol`` client.  Every process raises its RLIMIT_NOFILE soft
limit to the hard limit.

Connections are assigned a kind by index (per 20: 12 text, 3 binary, 2
compressed, 2 ping, 1 churn):

* ``text``        small text messages (16-64 bytes)
* ``binary``      binary messages (0.5-4 KiB)
* ``compressed``  negotiates permessage-deflate, sends compressible text (~300 bytes)
* ``ping``        text messages, each followed by a ping whose pong is checked
* ``churn``       connects, sends 3 messages, closes (closing handshake), reconnects, for ever

Every connection sends one message per ``--interval`` seconds on average (at
most ``--window`` unanswered); every message must come back, byte for byte, in
order.  After ``--duration`` seconds of steady load the clients stop sending,
wait for what is in flight, and close every connection with a closing
handshake.  Reported: connections, messages sent / echoed / lost, pings and
pongs, churn cycles, round-trip p50/p99, errors by kind (must be 0), and the
server's peak RSS (VmHWM) and CPU time::

    python bench/soak.py                      # 10,000 connections, 60 s
    python bench/soak.py --quick              # 10,000 connections, 15 s
    python bench/soak.py --connections 2000 --duration 30 --clients 2

Exit status 0 when errors and lost messages are both 0.
"""

from __future__ import annotations

import argparse
import collections
import errno
import json
import os
import random
import resource
import selectors
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, ROOT)

KINDS = ["text"] * 12 + ["binary"] * 3 + ["compressed"] * 2 + ["ping"] * 2 + ["churn"]
CHURN_MESSAGES = 3
CONNECT_BATCH = 100           # new connections started per 20 ms tick during the ramp
HANDSHAKE_TIMEOUT = 20.0      # seconds a client gives a connection to be upgraded
DRAIN_TIMEOUT = 20.0          # seconds to wait for in-flight echoes at the end
CLOSE_TIMEOUT = 20.0          # seconds to wait for every closing handshake at the end


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


# -- the server -------------------------------------------------------------------------------


class Echo:
    """Exact echo of text and binary messages."""

    @staticmethod
    def init(req, state):
        return ("cowboy_websocket", req, state)

    @staticmethod
    def websocket_handle(frame, state):
        if frame[0] == "text" or frame[0] == "binary":
            return ("reply", frame, state)
        return ("ok", state)

    @staticmethod
    def websocket_info(_info, state):
        return ("ok", state)


def serve(backlog: int) -> None:
    import logging
    import signal

    raise_nofile()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import cowboy_ws

    server = cowboy_ws.Server([("_", Echo, None)], host="127.0.0.1", port=0, backlog=backlog,
                              ws_options={"compress": True})
    signal.signal(signal.SIGTERM, lambda *_: server.shutdown(grace=2, wait=False))
    print("PORT", server.port, cowboy_ws.backend(), flush=True)
    server.serve_forever()


# -- a client process -------------------------------------------------------------------------


class Conn:
    __slots__ = ("slot", "kind", "sock", "state", "key", "offer", "head", "ws", "out", "pending",
                 "pings", "sent", "started", "closing", "events")

    def __init__(self, slot: int, kind: str) -> None:
        self.slot = slot
        self.kind = kind
        self.sock: socket.socket | None = None
        self.state = "new"          # new -> connecting -> handshake -> open -> closing -> closed
        self.key = ""
        self.offer = None
        self.head = bytearray()
        self.ws = None              # the sans-IO client Connection
        self.out = b""              # bytes the kernel did not take yet
        self.pending: collections.deque = collections.deque()  # (payload, sent at) awaiting echo
        self.pings: collections.deque = collections.deque()    # ping payloads awaiting pong
        self.sent = 0               # messages sent on this socket
        self.started = 0.0
        self.closing = False        # we sent Close
        self.events = 0             # selector events registered


class Client:
    def __init__(self, args: argparse.Namespace, index: int, slots: range) -> None:
        from cowboy_ws.protocol import deflate as pmd
        from cowboy_ws.protocol import handshake
        from cowboy_ws.protocol.connection import Connection

        self.pmd, self.handshake, self.Connection = pmd, handshake, Connection
        self.args = args
        self.index = index
        self.port = args.port
        self.sel = selectors.DefaultSelector()
        self.conns = [Conn(slot, KINDS[slot % len(KINDS)]) for slot in slots]
        self.rotation = collections.deque(self.conns)
        self.errors: collections.Counter = collections.Counter()
        self.stats = collections.Counter()
        self.rtts: list[float] = []
        self.rng = random.Random(index)
        self.seq = 0
        self.sending = True
        self.binary_blob = os.urandom(4096)
        words = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor ".split()
        self.texts = [" ".join(self.rng.choice(words) for _ in range(60)) for _ in range(16)]
        self.open_now = 0
        self.peak_open = 0

    # -- connecting ------------------------------------------------------------------------

    def error(self, conn: Conn, what: str) -> None:
        self.errors[what] += 1
        if self.errors[what] <= 3:
            print(f"client {self.index}: {conn.kind} connection {conn.slot}: {what}", file=sys.stderr)

    def start(self, conn: Conn) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        rc = sock.connect_ex(("127.0.0.1", self.port))
        if rc not in (0, errno.EINPROGRESS):
            sock.close()
            self.error(conn, f"connect: {errno.errorcode.get(rc, rc)}")
            conn.state = "failed"
            return
        conn.sock = sock
        conn.state = "connecting"
        conn.started = time.monotonic()
        conn.head = bytearray()
        conn.out = b""
        conn.closing = False
        conn.sent = 0
        conn.events = selectors.EVENT_WRITE
        self.sel.register(sock, selectors.EVENT_WRITE, conn)

    def on_connected(self, conn: Conn) -> None:
        err = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self.fail(conn, f"connect: {errno.errorcode.get(err, err)}")
            return
        hs = self.handshake
        conn.key = hs.make_key()
        conn.offer = self.pmd.client_offer() if conn.kind == "compressed" else None
        request = hs.build_request(f"127.0.0.1:{self.port}", f"/{conn.kind}", conn.key, extensions=conn.offer)
        conn.state = "handshake"
        self.write(conn, request)

    def on_head(self, conn: Conn, data: bytes) -> None:
        conn.head += data
        hs = self.handshake
        try:
            parsed = hs.parse_response_head(conn.head)
            if parsed is None:
                return
            resp, used = parsed
            _, extensions = hs.validate_response(resp, conn.key, offered_extensions=conn.offer)
        except Exception as exc:  # a refusal (503, ...) or a bad answer
            self.fail(conn, f"handshake: {exc}")
            return
        codec = self.pmd.negotiate_client(extensions) if conn.offer else None
        if conn.kind == "compressed" and codec is None:
            self.fail(conn, "deflate not negotiated")
            return
        conn.ws = self.Connection("client", max_frame_size=None, deflate=codec)
        conn.state = "open"
        self.open_now += 1
        self.peak_open = max(self.peak_open, self.open_now)
        self.stats["upgraded"] += 1
        rest = bytes(conn.head[used:])
        conn.head = bytearray()
        if rest:
            self.on_frames(conn, rest)

    # -- I/O -------------------------------------------------------------------------------

    def interest(self, conn: Conn) -> None:
        want = selectors.EVENT_READ | (selectors.EVENT_WRITE if conn.out else 0)
        if want != conn.events:
            self.sel.modify(conn.sock, want, conn)
            conn.events = want

    def write(self, conn: Conn, data: bytes) -> None:
        if conn.out:
            conn.out += data
        else:
            try:
                sent = conn.sock.send(data)
            except BlockingIOError:
                sent = 0
            except OSError as exc:
                self.fail(conn, f"send: {exc.strerror}")
                return
            conn.out = data[sent:]
        self.interest(conn)

    def flush(self, conn: Conn) -> None:
        data = conn.ws.data_to_send()
        if data:
            self.write(conn, data)

    def on_event(self, conn: Conn, mask: int) -> None:
        if conn.state == "connecting":
            self.on_connected(conn)
            return
        if mask & selectors.EVENT_WRITE and conn.out:
            try:
                sent = conn.sock.send(conn.out)
            except BlockingIOError:
                sent = 0
            except OSError as exc:
                self.fail(conn, f"send: {exc.strerror}")
                return
            conn.out = conn.out[sent:]
            self.interest(conn)
        if mask & selectors.EVENT_READ and conn.sock is not None:
            try:
                data = conn.sock.recv(262144)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self.fail(conn, f"recv: {exc.strerror}")
                return
            if not data:
                if conn.state == "closing" and conn.ws.state == "closed":
                    self.finish(conn)
                else:
                    self.fail(conn, f"EOF while {conn.state}")
                return
            if conn.state == "handshake":
                self.on_head(conn, data)
            else:
                self.on_frames(conn, data)

    def on_frames(self, conn: Conn, data: bytes) -> None:
        now = time.monotonic()
        for event in conn.ws.receive_data(data):
            kind = event[0]
            if kind == "text" or kind == "binary":
                if not conn.pending:
                    self.error(conn, "unexpected message")
                    continue
                payload, at = conn.pending.popleft()
                if event[1] != payload:
                    self.error(conn, "echo mismatch")
                    continue
                self.stats["echoed"] += 1
                if len(self.rtts) < 200_000:
                    self.rtts.append(now - at)
                if conn.kind == "churn" and conn.sent >= CHURN_MESSAGES and not conn.pending:
                    self.close(conn)
            elif kind == "pong":
                if conn.pings and conn.pings[0] == event[1]:
                    conn.pings.popleft()
                    self.stats["pongs"] += 1
                else:
                    self.error(conn, "unexpected pong")
            elif kind == "close":
                if not conn.closing:
                    self.error(conn, f"server closed {event[1]} {event[2][:40]!r}")
            elif kind == "error":
                self.error(conn, f"protocol error: {event[1]}")
        if conn.sock is not None:
            self.flush(conn)

    # -- messages --------------------------------------------------------------------------

    def send_one(self, conn: Conn) -> None:
        if conn.state != "open" or conn.closing or len(conn.pending) >= self.args.window:
            return
        if conn.kind == "churn" and conn.sent >= CHURN_MESSAGES:
            return
        self.seq += 1
        tag = f"{self.index}:{conn.slot}:{self.seq}:"
        ws = conn.ws
        if conn.kind == "binary":
            size = self.rng.randrange(512, 4096)
            payload = tag.encode() + self.binary_blob[:size]
            ws.send_binary(payload)
        elif conn.kind == "compressed":
            payload = (tag + self.texts[self.seq % len(self.texts)][:300]).encode()
            ws.send_text(payload)
        else:
            payload = (tag + "x" * self.rng.randrange(8, 48)).encode()
            ws.send_text(payload)
        conn.pending.append((payload, time.monotonic()))
        conn.sent += 1
        self.stats["sent"] += 1
        if conn.kind == "ping":
            ping = str(self.seq).encode()
            ws.send_ping(ping)
            conn.pings.append(ping)
            self.stats["pings"] += 1
        self.flush(conn)

    def close(self, conn: Conn) -> None:
        if conn.state != "open" or conn.closing:
            return
        conn.closing = True
        conn.state = "closing"
        conn.ws.send_close(1000)
        self.flush(conn)

    def fail(self, conn: Conn, what: str) -> None:
        self.error(conn, what)
        self.drop(conn)
        conn.state = "failed"

    def finish(self, conn: Conn) -> None:
        """A closing handshake we started is done."""
        self.drop(conn)
        conn.state = "closed"
        self.stats["closed_cleanly"] += 1

    def drop(self, conn: Conn) -> None:
        if conn.sock is not None:
            try:
                self.sel.unregister(conn.sock)
            except (KeyError, ValueError):
                pass
            conn.sock.close()
            conn.sock = None
        if conn.state in ("open", "closing"):
            self.open_now -= 1
        lost = len(conn.pending) + len(conn.pings)
        if lost and conn.state != "failed":
            self.stats["lost_on_close"] += lost
        conn.pending.clear()
        conn.pings.clear()

    # -- the run ---------------------------------------------------------------------------

    def poll(self, timeout: float) -> None:
        for key, mask in self.sel.select(timeout):
            self.on_event(key.data, mask)

    def check_handshake_deadlines(self, now: float) -> None:
        for conn in self.conns:
            if conn.state in ("connecting", "handshake") and now - conn.started > HANDSHAKE_TIMEOUT:
                self.fail(conn, "handshake timeout")

    def run(self) -> dict:
        args = self.args
        t0 = time.monotonic()
        # ramp: start connections in batches
        todo = collections.deque(self.conns)
        while todo or any(c.state in ("connecting", "handshake") for c in self.conns):
            for _ in range(min(CONNECT_BATCH, len(todo))):
                self.start(todo.popleft())
            end = time.monotonic() + 0.02
            while time.monotonic() < end:
                self.poll(max(0.0, end - time.monotonic()))
            now = time.monotonic()
            if now - t0 > 10 + HANDSHAKE_TIMEOUT:
                self.check_handshake_deadlines(now)
        ramp = time.monotonic() - t0
        print(f"READY {self.index} {self.peak_open} {ramp:.1f}", flush=True)
        # steady load
        rate = len(self.conns) / args.interval  # messages per second for this process
        start = time.monotonic()
        stop = start + args.duration
        last = start
        budget = 0.0
        last_check = start
        while True:
            now = time.monotonic()
            if now >= stop:
                break
            budget += (now - last) * rate
            last = now
            n = int(budget)
            budget -= n
            rotation = self.rotation
            for _ in range(min(n, len(rotation))):
                conn = rotation[0]
                rotation.rotate(-1)
                if conn.state == "open":
                    self.send_one(conn)
                    if conn.kind == "churn":  # a churn connection's whole life: its messages at once
                        for _ in range(CHURN_MESSAGES - 1):
                            self.send_one(conn)
                elif conn.kind == "churn" and conn.state == "closed":
                    self.start(conn)
                    self.stats["churn_reconnects"] += 1
            if now - last_check > 1.0:
                last_check = now
                self.check_handshake_deadlines(now)
            self.poll(0.005)
        # drain: no new messages; wait for every echo and pong
        deadline = time.monotonic() + DRAIN_TIMEOUT
        while time.monotonic() < deadline and any(c.pending or c.pings or c.state in ("connecting", "handshake")
                                                  for c in self.conns):
            self.poll(0.05)
            self.check_handshake_deadlines(time.monotonic())
        lost = sum(len(c.pending) + len(c.pings) for c in self.conns)
        # close every connection with a closing handshake
        for conn in self.conns:
            if conn.state == "open":
                self.close(conn)
        deadline = time.monotonic() + CLOSE_TIMEOUT
        while time.monotonic() < deadline and any(c.state == "closing" for c in self.conns):
            self.poll(0.05)
        for conn in self.conns:
            if conn.state == "closing":
                self.fail(conn, "closing handshake not completed")
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {"index": self.index, "connections": len(self.conns), "peak_open": self.peak_open,
                "ramp_s": ramp, "stats": dict(self.stats), "errors": dict(self.errors),
                "lost": lost + self.stats.get("lost_on_close", 0), "rtts": sorted(self.rtts)[::max(1, len(self.rtts) // 2000)],
                "cpu_s": usage.ru_utime + usage.ru_stime}


def client_main(args: argparse.Namespace) -> None:
    raise_nofile()
    n, k, i = args.connections, args.clients, args.index
    slots = range(i, n, k)
    result = Client(args, i, slots).run()
    print("RESULT " + json.dumps(result), flush=True)


# -- the driver -------------------------------------------------------------------------------


def proc_status(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def proc_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of steady load (default 60)")
    parser.add_argument("--quick", action="store_true", help="15 s of steady load")
    parser.add_argument("--clients", type=int, default=2, help="client processes (default 2)")
    parser.add_argument("--interval", type=float, default=2.0,
                        help="seconds between messages of one connection, on average (default 2)")
    parser.add_argument("--window", type=int, default=4, help="unanswered messages per connection (default 4)")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--index", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.duration = 15.0
    if args.serve:
        serve(backlog=4096)
        return 0
    if args.client:
        client_main(args)
        return 0

    hard = raise_nofile()
    per_client = -(-args.connections // args.clients)
    if hard < args.connections + 100 or hard < per_client + 100:
        print(f"RLIMIT_NOFILE hard limit {hard} is too low for {args.connections} connections", file=sys.stderr)
        return 2
    server_log = tempfile.TemporaryFile("w+")  # a file, not a pipe: a chatty server must never block on it
    server = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve"], stdout=subprocess.PIPE,
                              stderr=server_log, text=True)
    try:
        line = server.stdout.readline().split()
        if not line or line[0] != "PORT":
            server_log.seek(0)
            print("server did not start:", server_log.read(), file=sys.stderr)
            return 2
        port, backend = int(line[1]), line[2]
        print(f"soak: {args.connections} connections, {args.clients} client processes, {args.duration:.0f} s of "
              f"load, one message per {args.interval:g} s per connection (window {args.window}); "
              f"cowboy_ws backend {backend}, server pid {server.pid}", flush=True)
        common = ["--connections", str(args.connections), "--clients", str(args.clients), "--duration",
                  str(args.duration), "--interval", str(args.interval), "--window", str(args.window),
                  "--port", str(port)]
        clients = [subprocess.Popen([sys.executable, os.path.abspath(__file__), "--client", "--index", str(i)]
                                    + common, stdout=subprocess.PIPE, text=True) for i in range(args.clients)]
        t0 = time.monotonic()
        ready = 0
        for client in clients:
            line = client.stdout.readline().split()
            if line and line[0] == "READY":
                ready += int(line[2])
        ramp = time.monotonic() - t0
        cpu0 = proc_cpu(server.pid)
        rss_loaded = 0
        print(f"ramp: {ready} connections upgraded in {ramp:.1f} s; server RSS {proc_status(server.pid, 'VmRSS') >> 20}"
              f" MiB", flush=True)
        results = []
        for client in clients:
            for line in client.stdout:
                if line.startswith("RESULT "):
                    results.append(json.loads(line[7:]))
            client.wait()
            rss_loaded = max(rss_loaded, proc_status(server.pid, "VmRSS"))
        cpu = proc_cpu(server.pid) - cpu0
        peak_rss = proc_status(server.pid, "VmHWM")
        alive = server.poll() is None
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        server.stdout.close()
        server_log.seek(0)
        server_err = server_log.read()
        server_log.close()

    stats: collections.Counter = collections.Counter()
    errors: collections.Counter = collections.Counter()
    rtts: list[float] = []
    lost = 0
    for r in results:
        stats.update(r["stats"])
        errors.update(r["errors"])
        rtts.extend(r["rtts"])
        lost += r["lost"]
    if len(results) != args.clients:
        errors["client process failed"] += args.clients - len(results)
    server_errors = [line for line in server_err.splitlines() if " ERROR " in line or "Traceback" in line]
    if server_errors:
        errors["server errors logged"] += len(server_errors)
    if not alive:
        errors["server died"] += 1
    total_errors = sum(errors.values())
    print(f"connections: {ready} concurrent; {stats['upgraded']} upgrades incl. {stats['churn_reconnects']} churn "
          f"reconnects; {stats['closed_cleanly']} closing handshakes completed")
    print(f"messages: {stats['sent']} sent, {stats['echoed']} echoed, {lost} lost; pings {stats['pings']}, "
          f"pongs {stats['pongs']}; {stats['sent'] / args.duration:,.0f} msg/s")
    print(f"round trip: p50 {percentile(rtts, 0.5) * 1000:.1f} ms, p99 {percentile(rtts, 0.99) * 1000:.1f} ms")
    print(f"server: peak RSS (VmHWM) {peak_rss / 2**20:.1f} MiB ({peak_rss / max(1, ready) / 1024:.1f} KiB per "
          f"connection), CPU {cpu:.1f} s over the run ({cpu / args.duration * 100:.0f}% of a core)"
          f"{'' if alive else ', DIED'}")
    print(f"errors: {total_errors}" + (f" {dict(errors)}" if errors else ""))
    for line in server_errors[:5]:
        print("  server:", line)
    print("PASS" if total_errors == 0 and lost == 0 else "FAIL")
    return 0 if total_errors == 0 and lost == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
