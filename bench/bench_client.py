"""Client CPU per message: cowboy_ws.client against the picows and websockets clients, on one server.

One server (cowboy_ws with the C kernels, an echo, in its own subprocess pinned to core 0) serves
every client.  Each client is a subprocess pinned to core 1 that opens one connection and keeps
``--in-flight`` (64) 16-byte text messages outstanding: it sends 64, then one more for each echo,
until ``--messages`` echoes came back after a warm-up.  Its own CPU time (``getrusage(RUSAGE_SELF)``,
user + system, every thread) over the measured part, divided by the messages, is the figure.
Rounds are interleaved (every client once per round, the order reversed every other round) and
each ratio is the median of the per-round ratios, with min-max: compare ratios, not microseconds.

Clients (a missing package is skipped with a note):

=======================  =============================================================================
cowboy_ws handler C      ``cowboy_ws.client.start``: ``websocket_handle`` returns ``("reply", frame, s)``
cowboy_ws blocking C     ``cowboy_ws.client.connect``: ``ws.recv()`` / ``ws.send(("text", msg))``
cowboy_ws handler pure   the same with ``COWBOY_WS_PURE=1``
cowboy_ws blocking pure
picows                   picows' ``ws_connect`` and a ``WSListener`` whose ``on_ws_frame`` sends the next
                         (asyncio's default loop)
websockets               ``websockets.asyncio.client.connect``: ``await ws.recv()`` / ``await ws.send()``
websockets sync          ``websockets.sync.client.connect`` (threads, like cowboy_ws' blocking API)
=======================  =============================================================================

Usage::

    python bench/bench_client.py                       # 5 rounds x 100,000 messages (~3 min)
    python bench/bench_client.py --quick               # 3 rounds x 20,000
    python bench/bench_client.py --clients cowboy_ws_handler_c,picows,websockets --rounds 7
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from _servers import ROOT, ServerProc, cowboy_backend_c_available, env_for  # noqa: E402

MESSAGE = "0123456789abcdef"

# Each client script gets: port, messages, in-flight, warm-up; prints "CPU <user> <system> <wall>"
# for the measured part (after the warm-up echoes).
COMMON = r"""
import os, resource, sys, time
PORT, N, INFLIGHT, WARM = (int(x) for x in sys.argv[1:5])
TOTAL = N + WARM
URL = "ws://127.0.0.1:%d/echo" % PORT
MSG = b"0123456789abcdef"
def cpu():
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime, ru.ru_stime, time.perf_counter()
def report(t0, t1):
    sys.stdout.write("CPU %r %r %r\n" % (t1[0] - t0[0], t1[1] - t0[1], t1[2] - t0[2]))
    sys.stdout.flush()
def echo_loop(send, recv, msg):
    # The blocking clients' loop: INFLIGHT out, one more per echo, until TOTAL came back; returns
    # the cpu() marks around the measured part.  A function, as in an application: its loop's
    # names are locals, not module globals (those had cost ~1,500 instructions per message).
    for _ in range(INFLIGHT):
        send(msg)
    sent = INFLIGHT
    for received in range(1, TOTAL + 1):
        recv()
        if received == WARM:
            t0 = cpu()
        if sent < TOTAL:
            send(msg)
            sent += 1
    return t0, cpu()
"""

CLIENTS: dict[str, tuple[str, str, bool]] = {}  # label -> (package, script, pure)

CLIENTS["cowboy_ws_handler_c"] = ("cowboy_ws", COMMON + r"""
import threading
from cowboy_ws import client
done = threading.Event()
marks = []
class State:
    __slots__ = ("received", "sent")
    def __init__(self):
        self.received = 0
        self.sent = 0
class Echo:
    @staticmethod
    def websocket_init(s):
        s.sent = INFLIGHT
        return ("reply", [("text", MSG)] * INFLIGHT, s)
    @staticmethod
    def websocket_handle(frame, s):
        s.received = received = s.received + 1
        if received == WARM:
            marks.append(cpu())
        elif received == TOTAL:
            marks.append(cpu())
            done.set()
            return ("stop", s)
        if s.sent < TOTAL:
            s.sent += 1
            return ("reply", ("text", MSG), s)
        return ("ok", s)
    @staticmethod
    def websocket_info(info, s):
        return ("ok", s)
client.start(URL, Echo, State(), {"proxy": None})
if not done.wait(600):
    sys.exit("timed out")
report(marks[0], marks[1])
""", False)

CLIENTS["cowboy_ws_blocking_c"] = ("cowboy_ws", COMMON + r"""
from cowboy_ws import client
ws = client.connect(URL, proxy=None)
marks = echo_loop(ws.send, ws.recv, ("text", MSG))
ws.close()
report(*marks)
""", False)

CLIENTS["cowboy_ws_handler_pure"] = ("cowboy_ws", CLIENTS["cowboy_ws_handler_c"][1], True)
CLIENTS["cowboy_ws_blocking_pure"] = ("cowboy_ws", CLIENTS["cowboy_ws_blocking_c"][1], True)

CLIENTS["picows"] = ("picows", COMMON + r"""
import asyncio
from picows import WSListener, WSMsgType, ws_connect
TEXT = WSMsgType.TEXT
marks = []
class Listener(WSListener):
    def __init__(self):
        self.received = 0
        self.sent = 0
        self.done = asyncio.get_running_loop().create_future()
    def on_ws_connected(self, transport):
        for _ in range(INFLIGHT):
            transport.send(TEXT, MSG)
        self.sent = INFLIGHT
    def on_ws_frame(self, transport, frame):
        if frame.msg_type != TEXT:
            return
        self.received = received = self.received + 1
        if received == WARM:
            marks.append(cpu())
        elif received == TOTAL:
            marks.append(cpu())
            transport.send_close()
            transport.disconnect()
            if not self.done.done():
                self.done.set_result(None)
            return
        if self.sent < TOTAL:
            self.sent += 1
            transport.send(TEXT, MSG)
async def main():
    transport, listener = await ws_connect(Listener, URL)
    await asyncio.wait_for(listener.done, 600)
asyncio.run(main())
report(marks[0], marks[1])
""", False)

CLIENTS["websockets"] = ("websockets", COMMON + r"""
import asyncio
from websockets.asyncio.client import connect
async def main():
    async with connect(URL, compression=None, ping_interval=None, proxy=None) as ws:
        text = MSG.decode()
        for _ in range(INFLIGHT):
            await ws.send(text)
        sent = INFLIGHT
        for received in range(1, TOTAL + 1):
            await ws.recv()
            if received == WARM:
                t0 = cpu()
            if sent < TOTAL:
                await ws.send(text)
                sent += 1
        t1 = cpu()
    return t0, t1
report(*asyncio.run(main()))
""", False)

CLIENTS["websockets_sync"] = ("websockets", COMMON + r"""
from websockets.sync.client import connect
with connect(URL, compression=None, ping_interval=None, proxy=None) as ws:
    marks = echo_loop(ws.send, ws.recv, MSG.decode())
report(*marks)
""", False)

DEFAULT_CLIENTS = list(CLIENTS)
#: The targets of the issue: (client, reference, the largest CPU/msg ratio that passes).
TARGETS = [("cowboy_ws_handler_c", "picows", 0.5), ("cowboy_ws_handler_c", "websockets", 0.25),
           ("cowboy_ws_blocking_c", "picows", 0.5), ("cowboy_ws_blocking_c", "websockets", 0.25)]


def available(package: str) -> bool:
    out = subprocess.run([sys.executable, "-c", f"import {package}"], capture_output=True, cwd=ROOT,
                         env=env_for(), timeout=60, check=False)
    return out.returncode == 0


def run_client(label: str, port: int, messages: int, in_flight: int, warm: int, core: int | None,
               timeout: float) -> tuple[float, float, float]:
    _package, script, pure = CLIENTS[label]
    proc = subprocess.Popen([sys.executable, "-c", script, str(port), str(messages), str(in_flight), str(warm)],
                            cwd=ROOT, env=env_for(pure=pure), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    if core is not None:
        try:
            os.sched_setaffinity(proc.pid, {core})
        except OSError:
            pass
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise RuntimeError(f"{label}: no result within {timeout} s") from None
    lines = [line for line in out.splitlines() if line.startswith("CPU ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{label} failed ({proc.returncode}): {err.strip()[-800:]}")
    user, system, wall = (float(x) for x in lines[-1].split()[1:])
    return user, system, wall


def med_min_max(values: list[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", default=",".join(DEFAULT_CLIENTS),
                        help=f"comma-separated from {', '.join(DEFAULT_CLIENTS)} (default all)")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 5, --quick 3)")
    parser.add_argument("--messages", type=int, default=None, help="measured echoes per run (default 100000)")
    parser.add_argument("--in-flight", type=int, default=64)
    parser.add_argument("--quick", action="store_true", help="3 rounds of 20,000 messages")
    args = parser.parse_args(argv)
    rounds = args.rounds or (3 if args.quick else 5)
    messages = args.messages or (20_000 if args.quick else 100_000)
    warm = max(2_000, messages // 10)
    labels = [c.strip() for c in args.clients.split(",") if c.strip()]
    unknown = [c for c in labels if c not in CLIENTS]
    if unknown:
        parser.error(f"unknown client(s) {unknown}; known: {DEFAULT_CLIENTS}")
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    server_core, client_core = (cores[0], cores[1]) if len(cores) >= 2 else (None, None)
    c_ok, why = cowboy_backend_c_available()
    present = []
    for label in labels:
        package, _script, pure = CLIENTS[label]
        if not available(package):
            print(f"  skipped {label}: {package} is not installed (pip install -e '.[bench]')")
        elif package == "cowboy_ws" and not pure and not c_ok:
            print(f"  skipped {label}: the C backend is not available ({why})")
        else:
            present.append(label)
    print(f"bench/bench_client.py: Python {sys.version.split()[0]}, {len(cores)} cores; server (cowboy_ws "
          f"{'C' if c_ok else 'pure'}, echo) pinned to core {server_core}, each client to core {client_core}; "
          f"16-byte text, {args.in_flight} in flight, {messages:,} measured echoes per run after {warm:,}, "
          f"{rounds} interleaved rounds")
    server = ServerProc("cowboy_ws", "cowboy_ws", env_for(), server_core)
    results: dict[str, list[tuple[float, float, float]]] = {label: [] for label in present}
    started = time.monotonic()
    try:
        for r in range(rounds):
            order = present if r % 2 == 0 else list(reversed(present))
            for label in order:
                results[label].append(run_client(label, server.port, messages, args.in_flight, warm, client_core,
                                                 timeout=600))
            print(f"  round {r + 1}/{rounds} done")
    finally:
        server.stop()
    per_msg = {label: [(u + s) / messages * 1e6 for u, s, _w in runs] for label, runs in results.items()}
    rates = {label: [messages / w for _u, _s, w in runs] for label, runs in results.items()}
    sys_share = {label: statistics.median([s / (u + s) for u, s, _w in runs]) for label, runs in results.items()}
    ref = "picows" if "picows" in per_msg else None
    print(f"\n== client CPU per message, 16-byte text echo, {args.in_flight} in flight")
    print(f"{'client':<24} {'CPU us/msg':>24} {'sys%':>5} {'msg/s':>26}"
          + (f" {'CPU/picows':>22}" if ref else "") + (" CPU/websockets" if "websockets" in per_msg else ""))
    for label in present:
        m = med_min_max(per_msg[label])
        rate = med_min_max(rates[label])
        line = (f"{label:<24} {m[0]:>7.2f} [{m[1]:.2f} - {m[2]:.2f}]".ljust(49)
                + f" {sys_share[label] * 100:>4.0f} {rate[0]:>10,.0f} [{rate[1]:,.0f} - {rate[2]:,.0f}]")
        for other in ("picows", "websockets"):
            if other in per_msg:
                ratio = med_min_max([a / b for a, b in zip(per_msg[label], per_msg[other], strict=True)])
                line += f"  {ratio[0]:.2f}x [{ratio[1]:.2f}-{ratio[2]:.2f}]"
        print(line)
    print("   CPU: getrusage of the client process (user + system, all threads) over the measured echoes;"
          " ratios: medians of per-round ratios [min-max]")
    print("\n== targets (from the issue)")
    for label, other, limit in TARGETS:
        if label in per_msg and other in per_msg:
            ratio = med_min_max([a / b for a, b in zip(per_msg[label], per_msg[other], strict=True)])
            verdict = "PASS" if ratio[0] <= limit else "FAIL"
            print(f"{verdict}  {label} CPU/msg <= {limit}x {other}".ljust(60)
                  + f"{ratio[0]:.2f}x [{ratio[1]:.2f}-{ratio[2]:.2f}]")
        else:
            print(f"SKIP  {label} CPU/msg <= {limit}x {other}: not measured")
    print(f"\n(total {time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
