"""Server CPU time per echoed message: 16-byte text, one client, 64 messages in flight.

Each echo server runs alone in its own subprocess (pinned to one core when the
machine has two or more; the load client gets another), so its CPU time can be
read on its own: the server process answers ``resource.getrusage(RUSAGE_SELF)``
(user + system) over a pipe before and after each run.  The load client is a
raw-socket client in this process: it does the opening handshake by hand
(``cowboy_ws.protocol.handshake.build_request``), pre-builds the masked frames,
sends 64 at once, then for every complete 18-byte reply sends one more, until
``--messages`` echoes have come back.  No compression anywhere.

Servers (skipped if their package is missing):

* ``cowboy_ws``   ``cowboy_ws.Server([("_", cowboy_ws.examples.echo, None)], port=0)``, its
  own selectors loop (kernels backend printed in the header)
* ``websockets``  ``websockets.asyncio.server.serve(echo, compression=None)``, asyncio loop
  (its C ``speedups`` module does the masking and UTF-8 checks)
* ``picows``      ``picows.ws_create_server`` with a listener echoing each frame (Cython)
* ``aiohttp``     ``web.WebSocketResponse(compress=False)``, ``async for msg in ws`` + ``send_str``
  (C reader/writer)

Rounds are interleaved (every server once per round, order alternating) after a
warm-up run each.  Reported per server: messages/s (wall clock, client side),
server CPU us/message (median, min, max over the rounds) and the speedup vs
websockets (websockets' median us/message / this one's: > 1 is less CPU)::

    python bench/echo_cpu.py                 # 200k messages x 3 rounds, 25-40 s
    python bench/echo_cpu.py --quick         # 50k messages x 3 rounds, about 10 s
    python bench/echo_cpu.py --servers cowboy_ws,websockets --messages 100000 --rounds 5
    python bench/echo_cpu.py --profile       # cProfile of the cowboy_ws server, top 15 by tottime
"""

from __future__ import annotations

import argparse
import base64
import os
import select
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, ROOT)

from cowboy_ws.protocol.frames import OP_CLOSE, OP_TEXT, serialize_frame  # noqa: E402
from cowboy_ws.protocol.handshake import build_request  # noqa: E402

PAYLOAD = b"0123456789abcdef"
FRAME_OUT = 2 + 4 + len(PAYLOAD)      # masked client frame: 22 bytes
FRAME_IN = 2 + len(PAYLOAD)           # the echo reply: 18 bytes, b"\x81\x10" + payload
REPLY_HEAD = bytes((0x80 | OP_TEXT, len(PAYLOAD)))
IN_FLIGHT = 64
IO_TIMEOUT = 10.0                     # any single wait on a socket or pipe

# --- the servers: each is a script run with `python -c`; it prints "PORT <n>" then serves.
# --- A thread answers "r" lines on stdin with the process's user+system CPU seconds; EOF on
# --- stdin (the bench went away) ends the process.

CONTROL = r"""
import os, resource, sys, threading
def _control():
    for line in sys.stdin:
        if line.strip() == "r":
            ru = resource.getrusage(resource.RUSAGE_SELF)
            sys.stdout.write("CPU %r %r\n" % (ru.ru_utime, ru.ru_stime)); sys.stdout.flush()
        elif line.strip() == "p":
            _on_profile_dump()
            sys.stdout.write("DUMPED\n"); sys.stdout.flush()
    os._exit(0)
def _on_profile_dump():
    pass
def ready(port):
    sys.stdout.write("PORT %d\n" % port); sys.stdout.flush()
    threading.Thread(target=_control, daemon=True).start()
"""

SERVERS = {
    "cowboy_ws": CONTROL + r"""
import cowboy_ws, cowboy_ws.examples.echo
from cowboy_ws.protocol import kernels
srv = cowboy_ws.Server([("_", cowboy_ws.examples.echo, None)], port=0)
sys.stderr.write("backend %s\n" % kernels.BACKEND)
if os.environ.get("ECHO_CPU_PROFILE"):
    import cProfile, pstats, time
    _prof = cProfile.Profile()  # default timer: process_time is a syscall here
    def _on_profile_dump():
        _prof.disable()
        pstats.Stats(_prof, stream=sys.stdout).sort_stats("tottime").print_stats(15)
    _prof.enable()
ready(srv.port)
srv.serve_forever()
""",
    "websockets": CONTROL + r"""
import asyncio
from websockets.asyncio.server import serve
async def echo(ws):
    async for msg in ws:
        await ws.send(msg)
async def main():
    async with serve(echo, "127.0.0.1", 0, compression=None) as server:
        ready(server.sockets[0].getsockname()[1])
        await asyncio.Future()
asyncio.run(main())
""",
    "picows": CONTROL + r"""
import asyncio
from picows import WSListener, WSMsgType, ws_create_server
class Echo(WSListener):
    def on_ws_frame(self, transport, frame):
        if frame.msg_type == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code(), frame.get_close_message())
            transport.disconnect()
        elif frame.msg_type in (WSMsgType.TEXT, WSMsgType.BINARY):
            transport.send(frame.msg_type, frame.get_payload_as_memoryview())
async def main():
    server = await ws_create_server(lambda request: Echo(), "127.0.0.1", 0)
    ready(server.sockets[0].getsockname()[1])
    await server.serve_forever()
asyncio.run(main())
""",
    "aiohttp": CONTROL + r"""
import asyncio, logging
from aiohttp import WSMsgType, web
logging.getLogger("aiohttp.access").disabled = True
async def echo(request):
    ws = web.WebSocketResponse(compress=False)
    await ws.prepare(request)
    async for msg in ws:
        if msg.type == WSMsgType.TEXT:
            await ws.send_str(msg.data)
        elif msg.type == WSMsgType.BINARY:
            await ws.send_bytes(msg.data)
    return ws
async def main():
    app = web.Application()
    app.router.add_get("/", echo)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    ready(site._server.sockets[0].getsockname()[1])
    await asyncio.Future()
asyncio.run(main())
""",
}
IMPORTS = {"cowboy_ws": "cowboy_ws", "websockets": "websockets", "picows": "picows", "aiohttp": "aiohttp"}
BASELINE = "websockets"


class ServerProc:
    """One echo server subprocess; ``cpu()`` asks it for its own CPU seconds."""

    def __init__(self, name: str, core: int | None, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.errfile = tempfile.TemporaryFile("w+")  # a file, not a pipe: a chatty server never blocks
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SERVERS[name]], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self.errfile, env=env or _env(), text=True, bufsize=1)
        if core is not None:
            try:
                os.sched_setaffinity(self.proc.pid, {core})
            except OSError:
                pass
        line = self._readline(20.0)
        if not line.startswith("PORT "):
            raise RuntimeError(f"{name} server did not start: {line!r} {self.stderr_tail()}")
        self.port = int(line.split()[1])

    def _readline(self, timeout: float = IO_TIMEOUT) -> str:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            raise TimeoutError(f"{self.name} server: no answer in {timeout} s")
        return self.proc.stdout.readline()

    def cpu(self) -> tuple[float, float]:
        """(user, system) CPU seconds of the server process so far."""
        assert self.proc.stdin is not None
        self.proc.stdin.write("r\n")
        self.proc.stdin.flush()
        line = self._readline()
        if not line.startswith("CPU "):
            raise RuntimeError(f"{self.name} server: bad CPU answer {line!r} {self.stderr_tail()}")
        return float(line.split()[1]), float(line.split()[2])

    def dump_profile(self) -> str:
        assert self.proc.stdin is not None
        self.proc.stdin.write("p\n")
        self.proc.stdin.flush()
        assert self.proc.stdout is not None
        lines = []
        line = self._readline(30.0)
        while line and not line.startswith("DUMPED"):
            lines.append(line)
            # the rest may sit in our read buffer already, where select() cannot see it: block
            line = self.proc.stdout.readline()
        return "".join(lines)

    def stderr_tail(self) -> str:
        self.errfile.seek(0)
        return self.errfile.read()[-2000:]

    def stop(self) -> None:
        """Never leave a server running: EOF on its stdin, then SIGTERM, then SIGKILL."""
        p = self.proc
        try:
            if p.stdin:
                p.stdin.close()
        except OSError:
            pass
        try:
            p.wait(2)
        except subprocess.TimeoutExpired:
            p.terminate()
            try:
                p.wait(2)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        if p.stdout:
            p.stdout.close()
        self.errfile.close()


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


# --- the load client -----------------------------------------------------------------------------

def _prebuilt() -> bytes:
    """IN_FLIGHT masked text frames, back to back, each with its own masking key."""
    keys = [os.urandom(4) for _ in range(IN_FLIGHT)]
    out = b"".join(serialize_frame(OP_TEXT, PAYLOAD, mask_key=k) for k in keys)
    assert len(out) == IN_FLIGHT * FRAME_OUT
    return out


PREBUILT = _prebuilt()


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(build_request(f"127.0.0.1:{port}", "/", key))
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(4096)
        if not data:
            raise ConnectionError(f"closed during the handshake: {buf!r}")
        buf += data
        if len(buf) > 65536:
            raise ConnectionError("handshake response too long")
    head, _, rest = buf.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 101"):
        raise ConnectionError(f"handshake refused: {head[:200]!r}")
    if rest:
        raise ConnectionError(f"unexpected bytes after the handshake: {rest[:50]!r}")
    return sock


def echo_load(sock: socket.socket, n: int, deadline: float) -> None:
    """Keep IN_FLIGHT messages in flight until ``n`` echoes came back (checked frame by frame)."""
    pre = memoryview(PREBUILT)
    recv, sendall = sock.recv, sock.sendall
    sent = min(IN_FLIGHT, n)
    sendall(pre[:sent * FRAME_OUT])
    got_bytes = 0
    done = 0
    while done < n:
        data = recv(262144)
        if not data:
            raise ConnectionError(f"server closed after {done} echoes")
        off = -got_bytes % FRAME_IN
        heads = data[off::FRAME_IN]  # the first byte of every reply starting in this chunk
        if heads.count(0x81) != len(heads) or data[off + 1:off + 2] not in (b"\x10", b""):
            raise ConnectionError(f"unexpected reply bytes: {data[off:off + 20]!r}")
        got_bytes += len(data)
        now_done = got_bytes // FRAME_IN
        more = min(now_done - done, n - sent)
        done = now_done
        if more > 0:
            sendall(pre[:more * FRAME_OUT])
            sent += more
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up after {done} of {n} echoes")
    if got_bytes != n * FRAME_IN:
        raise ConnectionError(f"{got_bytes - n * FRAME_IN} extra bytes after {n} echoes")


def close(sock: socket.socket) -> None:
    try:
        sock.sendall(serialize_frame(OP_CLOSE, (1000).to_bytes(2, "big"), mask_key=os.urandom(4)))
        sock.settimeout(2.0)
        end = time.monotonic() + 2.0
        while time.monotonic() < end:
            if not sock.recv(4096):
                break
    except OSError:
        pass
    finally:
        sock.close()


def one_run(server: ServerProc, n: int, max_s: float) -> tuple[float, float, float]:
    """(wall s, server user CPU s, server system CPU s) for ``n`` echoes on a fresh connection."""
    sock = connect(server.port)
    try:
        echo_load(sock, min(n, 2000), time.monotonic() + max_s)  # settle the connection first
        c0 = server.cpu()
        t0 = time.perf_counter()
        echo_load(sock, n, time.monotonic() + max_s)
        wall = time.perf_counter() - t0
        c1 = server.cpu()
    finally:
        close(sock)
    return wall, c1[0] - c0[0], c1[1] - c0[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer messages: about 15 s")
    ap.add_argument("--messages", type=int, default=None, help="echoes per run (default 200000, --quick 40000)")
    ap.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 3)")
    ap.add_argument("--servers", default=",".join(SERVERS), help=f"comma-separated, from {','.join(SERVERS)}")
    ap.add_argument("--max-run-s", type=float, default=60.0, help="give up a run after this many seconds")
    ap.add_argument("--profile", action="store_true",
                    help="run the cowboy_ws server under cProfile for one run, print the top 15 by tottime")
    args = ap.parse_args(argv)
    n = args.messages or (50_000 if args.quick else 200_000)
    args.rounds = args.rounds or 3
    names = [s.strip() for s in args.servers.split(",") if s.strip()]
    for s in names:
        if s not in SERVERS:
            ap.error(f"unknown server {s!r}")

    cores = sorted(os.sched_getaffinity(0))
    server_core = client_core = None
    if len(cores) >= 2:
        server_core, client_core = cores[0], cores[1]
        os.sched_setaffinity(0, {client_core})

    if args.profile:
        env = _env()
        env["ECHO_CPU_PROFILE"] = "1"
        srv = ServerProc("cowboy_ws", server_core, env)
        try:
            wall, user, system = one_run(srv, n, args.max_run_s)
            cpu = user + system
            print(f"cowboy_ws under cProfile: {n} echoes, {cpu / n * 1e6:.2f} us/message of server CPU "
                  f"(profiler overhead included); top 15 by tottime:")
            print(srv.dump_profile())
        finally:
            srv.stop()
        return 0

    servers: dict[str, ServerProc] = {}
    results: dict[str, list[tuple[float, float, float]]] = {}
    errors: dict[str, str] = {}
    try:
        for name in names:
            try:
                __import__(IMPORTS[name])
            except ImportError as exc:
                errors[name] = f"not installed ({exc})"
                continue
            try:
                servers[name] = ServerProc(name, server_core)
                one_run(servers[name], min(n, 20_000), args.max_run_s)  # warm-up
                results[name] = []
            except Exception as exc:  # noqa: BLE001 - report and go on with the others
                errors[name] = f"{type(exc).__name__}: {exc}"
        for r in range(args.rounds):
            order = list(results) if r % 2 == 0 else list(results)[::-1]
            for name in order:
                if name in errors:
                    continue
                try:
                    results[name].append(one_run(servers[name], n, args.max_run_s))
                except Exception as exc:  # noqa: BLE001
                    errors[name] = f"{type(exc).__name__}: {exc}"
    finally:
        for srv in servers.values():
            srv.stop()

    from cowboy_ws.protocol import kernels
    print(f"echo of 16-byte text messages, 1 client, {IN_FLIGHT} in flight, {n} messages per run, "
          f"no compression; server pinned to core {server_core}, client to core {client_core}; "
          f"cowboy_ws kernels backend: {kernels.BACKEND}")
    print(f"server CPU = getrusage(RUSAGE_SELF) user+system of the server process; median [min-max] of "
          f"{args.rounds} interleaved rounds; user/sys: medians; vs websockets: > 1 is less CPU per message")
    print(f"{'server':<11} {'msg/s (wall)':>12} {'CPU us/msg':>10} {'[min - max]':>15} {'user':>6} {'sys':>6} "
          f"{'vs websockets':>13}")
    base = None
    if results.get(BASELINE):
        base = statistics.median((u + s) / n for _, u, s in results[BASELINE])
    for name in names:
        runs = results.get(name)
        if name in errors or not runs:
            print(f"{name:<11} {errors.get(name, 'no result')}")
            continue
        rate = statistics.median(n / w for w, _, _ in runs)
        us = [(u + s) / n * 1e6 for _, u, s in runs]
        med = statistics.median(us)
        user = statistics.median(u / n * 1e6 for _, u, _ in runs)
        system = statistics.median(s / n * 1e6 for _, _, s in runs)
        ratio = f"{base * 1e6 / med:12.2f}x" if base else "            -"
        print(f"{name:<11} {rate:>12,.0f} {med:>10.2f} {f'[{min(us):.2f} - {max(us):.2f}]':>15} "
              f"{user:>6.2f} {system:>6.2f} {ratio}")
    if errors:
        print("errors:", "; ".join(f"{k}: {v}" for k, v in errors.items()), file=sys.stderr)
    return 1 if errors and not any(results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
