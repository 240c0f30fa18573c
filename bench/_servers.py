"""The WebSocket servers that ``bench/echo.py`` measures, each a script run as its own subprocess.

Every script serves three roles on 127.0.0.1 (port 0, printed as ``PORT <n>`` on stdout once
listening), chosen by the request path:

* any path but the two below: **echo** every text or binary message back as one message;
* ``/member``: joins the broadcast group and otherwise does nothing;
* ``/control``: a text ``go`` broadcasts the 16-byte text :data:`PAYLOAD` to every member
  (each server's idiomatic way: ``cowboy_ws.broadcast``, ``websockets.broadcast``, a loop over
  picows transports, a loop of ``await ws.send_str`` for aiohttp, a loop of ``ws.send`` +
  ``sock.send`` for wsproto) and then answers ``done``; a text ``count`` is answered with the
  number of members (the client waits for every member to have joined).

Environment read by the scripts: ``BENCH_COMPRESS=1`` enables permessage-deflate (negotiated only
when the client offers it), ``BENCH_HIBERNATE=1`` (cowboy_ws only) makes the handler return
``hibernate`` from ``websocket_init`` and after every message, ``BENCH_METRICS=1`` (cowboy_ws
only) turns Prometheus metrics on (``metrics_port=0``), ``BENCH_DEFLATE_OPTS`` (cowboy_ws only, a
JSON object) is its ``deflate_opts``, ``COWBOY_WS_PURE=1`` forces
cowboy_ws' pure-Python kernels.  Idle timeouts and automatic pings are off everywhere so
that idle or receive-only connections stay open for the whole run.

A control thread reads stdin: ``r`` answers ``CPU <user> <system>`` (``getrusage(RUSAGE_SELF)``,
all threads), ``g`` runs ``gc.collect()`` and answers ``GC``, ``s0`` / ``s1 <n>`` take tracemalloc
snapshots when ``BENCH_TRACEMALLOC=1`` (the second prints the top allocation sites grown since
the first, per connection, then ``DUMPED``), ``p <n>`` prints the top ``n`` functions by tottime
when ``BENCH_PROFILE=1`` (cProfile of the main thread); EOF on stdin (the bench went away) ends the process.
Memory is read by the bench from ``/proc/<pid>/status`` (VmRSS, VmHWM), which works for any
server.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
PAYLOAD = b"0123456789abcdef"  # what /control's "go" broadcasts (16 bytes, text)
IO_TIMEOUT = 10.0

CONTROL = r"""
import gc, os, resource, sys, threading
try:
    _soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (_hard, _hard))
except (ValueError, OSError):
    pass
COMPRESS = os.environ.get("BENCH_COMPRESS") == "1"
HIBERNATE = os.environ.get("BENCH_HIBERNATE") == "1"
PAYLOAD = b"0123456789abcdef"
PAYLOAD_STR = PAYLOAD.decode()
_TM = os.environ.get("BENCH_TRACEMALLOC") == "1"
if _TM:
    import tracemalloc
    tracemalloc.start(int(os.environ.get("BENCH_TRACEMALLOC_FRAMES", "1")))
_snap = [None]
_PROF = None
if os.environ.get("BENCH_PROFILE") == "1":  # the main thread (the server loop) under cProfile
    import cProfile
    _PROF = cProfile.Profile()
    _PROF.enable()
def _say(s):
    sys.stdout.write(s + "\n"); sys.stdout.flush()
def _control():
    for line in sys.stdin:
        cmd = line.split()
        if not cmd:
            continue
        if cmd[0] == "r":
            ru = resource.getrusage(resource.RUSAGE_SELF)
            _say("CPU %r %r" % (ru.ru_utime, ru.ru_stime))
        elif cmd[0] == "g":
            gc.collect()
            _say("GC")
        elif cmd[0] == "s0" and _TM:
            gc.collect()
            _snap[0] = tracemalloc.take_snapshot()
            _say("SNAP")
        elif cmd[0] == "s1" and _TM:
            gc.collect()
            n = int(cmd[1])
            snap = tracemalloc.take_snapshot()
            flt = [tracemalloc.Filter(False, tracemalloc.__file__)]
            stats = snap.filter_traces(flt).compare_to(_snap[0].filter_traces(flt), "traceback")
            total = sum(s.size_diff for s in stats)
            _say("TOTAL %d bytes/conn (python heap, tracemalloc)" % (total // n))
            for s in sorted(stats, key=lambda s: -s.size_diff)[:int(os.environ.get("BENCH_TRACEMALLOC_TOP", "25"))]:
                if s.size_diff <= 0:
                    break
                where = " <- ".join("%s:%d" % (os.path.relpath(f.filename) if "cowboy_ws" in f.filename
                                    else os.path.basename(f.filename), f.lineno) for f in s.traceback)
                _say("%8.0f B/conn %7.2f blocks/conn  %s" % (s.size_diff / n, s.count_diff / n, where))
            _say("DUMPED")
        elif cmd[0] == "p" and _PROF is not None:
            import pstats
            _PROF.disable()
            pstats.Stats(_PROF, stream=sys.stdout).sort_stats("tottime").print_stats(int(cmd[1]))
            _say("DUMPED")
    os._exit(0)
def ready(port):
    _say("PORT %d" % port)
    threading.Thread(target=_control, daemon=True).start()
"""

SCRIPTS: dict[str, str] = {}

SCRIPTS["cowboy_ws"] = CONTROL + r"""
import cowboy_ws
GROUP = "bench"
class Handler:
    # a handler is any object with the callbacks: here an instance
    def init(self, req, state):
        path = req.path
        role = "control" if path == "/control" else "member" if path == "/member" else "echo"
        return ("cowboy_websocket", req, role)
    def websocket_init(self, state):
        if state == "member":
            cowboy_ws.join(GROUP)
        return ("ok", state, "hibernate") if HIBERNATE else ("ok", state)
    def websocket_handle(self, frame, state):
        kind = frame[0]
        if state == "echo":
            if kind == "text" or kind == "binary":
                return ("reply", frame, state, "hibernate") if HIBERNATE else ("reply", frame, state)
            return ("ok", state)
        if state == "control" and kind == "text":
            if frame[1] == b"go":
                cowboy_ws.broadcast(GROUP, ("text", PAYLOAD))
                return ("reply", ("text", b"done"), state)
            if frame[1] == b"count":
                return ("reply", ("text", str(len(cowboy_ws.members(GROUP)))), state)
        return ("ok", state)
    def websocket_info(self, info, state):
        return ("ok", state)
import json
DEFLATE_OPTS = json.loads(os.environ.get("BENCH_DEFLATE_OPTS") or "{}")
srv = cowboy_ws.Server([("_", Handler(), None)], host="127.0.0.1", port=0,
                       ws_options={"compress": COMPRESS, "idle_timeout": "infinity",
                                   **({"deflate_opts": DEFLATE_OPTS} if DEFLATE_OPTS else {})},
                       metrics_port=0 if os.environ.get("BENCH_METRICS") == "1" else None)
sys.stderr.write("backend %s\n" % cowboy_ws.backend())
ready(srv.port)
srv.serve_forever()
"""

SCRIPTS["websockets"] = CONTROL + r"""
import asyncio
from websockets.asyncio.server import broadcast, serve
MEMBERS = set()
async def handler(ws):
    path = ws.request.path
    if path == "/member":
        MEMBERS.add(ws)
        try:
            async for _ in ws:
                pass
        finally:
            MEMBERS.discard(ws)
    elif path == "/control":
        async for msg in ws:
            if msg == "go":
                broadcast(MEMBERS, PAYLOAD_STR)
                await ws.send("done")
            elif msg == "count":
                await ws.send(str(len(MEMBERS)))
    else:
        async for msg in ws:
            await ws.send(msg)
async def main():
    async with serve(handler, "127.0.0.1", 0, compression="deflate" if COMPRESS else None,
                     ping_interval=None, backlog=1024) as server:
        ready(server.sockets[0].getsockname()[1])
        await asyncio.Future()
asyncio.run(main())
"""

SCRIPTS["picows"] = CONTROL + r"""
import asyncio
from picows import WSListener, WSMsgType, ws_create_server
TEXT, BINARY, CLOSE = WSMsgType.TEXT, WSMsgType.BINARY, WSMsgType.CLOSE
MEMBERS = set()
class Listener(WSListener):
    def __init__(self, role):
        self.role = role
    def on_ws_connected(self, transport):
        if self.role == "member":
            MEMBERS.add(transport)
    def on_ws_disconnected(self, transport):
        MEMBERS.discard(transport)
    def on_ws_frame(self, transport, frame):
        mt = frame.msg_type
        if mt == CLOSE:
            transport.send_close(frame.get_close_code(), frame.get_close_message())
            transport.disconnect()
        elif self.role == "echo":
            if mt == TEXT or mt == BINARY:
                transport.send(mt, frame.get_payload_as_memoryview())
        elif self.role == "control" and mt == TEXT:
            data = frame.get_payload_as_bytes()
            if data == b"go":
                for t in MEMBERS:
                    t.send(TEXT, PAYLOAD)
                transport.send(TEXT, b"done")
            elif data == b"count":
                transport.send(TEXT, str(len(MEMBERS)).encode())
def factory(request):
    path = request.path
    if isinstance(path, bytes):
        path = path.decode()
    return Listener("control" if path == "/control" else "member" if path == "/member" else "echo")
async def main():
    server = await ws_create_server(factory, "127.0.0.1", 0, backlog=1024)
    ready(server.sockets[0].getsockname()[1])
    await server.serve_forever()
asyncio.run(main())
"""

SCRIPTS["aiohttp"] = CONTROL + r"""
import asyncio, logging
from aiohttp import WSMsgType, web
logging.getLogger("aiohttp.access").disabled = True
MEMBERS = set()
async def handler(request):
    ws = web.WebSocketResponse(compress=COMPRESS)
    await ws.prepare(request)
    path = request.path
    if path == "/member":
        MEMBERS.add(ws)
        try:
            async for _ in ws:
                pass
        finally:
            MEMBERS.discard(ws)
    elif path == "/control":
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                if msg.data == "go":
                    for m in list(MEMBERS):
                        await m.send_str(PAYLOAD_STR)
                    await ws.send_str("done")
                elif msg.data == "count":
                    await ws.send_str(str(len(MEMBERS)))
    else:
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                await ws.send_str(msg.data)
            elif msg.type == WSMsgType.BINARY:
                await ws.send_bytes(msg.data)
    return ws
async def main():
    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
    await site.start()
    ready(site._server.sockets[0].getsockname()[1])
    await asyncio.Future()
asyncio.run(main())
"""

# wsproto is sans-IO: this is the small selectors loop it needs.  Replies produced while
# handling one read are gathered and written with one send (the natural sans-IO pattern);
# a broadcast writes to each member at once.  Unsent bytes wait for EVENT_WRITE.
SCRIPTS["wsproto"] = CONTROL + r"""
import selectors, socket
from wsproto import ConnectionType, WSConnection
from wsproto.events import CloseConnection, Message, Ping, Request, AcceptConnection
from wsproto.extensions import PerMessageDeflate
R, W = selectors.EVENT_READ, selectors.EVENT_WRITE
sel = selectors.DefaultSelector()
MEMBERS = {}
class Conn:
    __slots__ = ("sock", "ws", "out", "role", "parts", "closing", "alive", "wmask")
    def __init__(self, sock):
        self.sock = sock
        self.ws = WSConnection(ConnectionType.SERVER)
        self.out = bytearray()
        self.role = "echo"
        self.parts = []
        self.closing = False
        self.alive = True
        self.wmask = False
        sel.register(sock, R, self)
    def close(self):
        if self.alive:
            self.alive = False
            MEMBERS.pop(self, None)
            sel.unregister(self.sock)
            self.sock.close()
    def on_event(self, mask):
        if mask & W:
            self.flush()
        if mask & R and self.alive:
            self.on_read()
    def on_read(self):
        try:
            data = self.sock.recv(262144)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.close()
            return
        ws = self.ws
        ws.receive_data(data)
        out = self.out
        for ev in ws.events():
            if isinstance(ev, Message):
                self.parts.append(ev.data)
                if not ev.message_finished:
                    continue
                parts, self.parts = self.parts, []
                msg = parts[0] if len(parts) == 1 else parts[0][:0].join(parts)
                if self.role == "echo":
                    out += ws.send(Message(data=msg))
                elif self.role == "control":
                    if msg == "go":
                        for m in list(MEMBERS):
                            m.write(m.ws.send(Message(data=PAYLOAD_STR)))
                        out += ws.send(Message(data="done"))
                    elif msg == "count":
                        out += ws.send(Message(data=str(len(MEMBERS))))
            elif isinstance(ev, Request):
                self.role = "control" if ev.target == "/control" else "member" if ev.target == "/member" else "echo"
                out += ws.send(AcceptConnection(extensions=[PerMessageDeflate()] if COMPRESS else []))
                if self.role == "member":
                    MEMBERS[self] = None
            elif isinstance(ev, Ping):
                out += ws.send(ev.response())
            elif isinstance(ev, CloseConnection):
                out += ws.send(ev.response())
                self.closing = True
        self.flush()
    def write(self, data):
        if self.alive:
            self.out += data
            self.flush()
    def flush(self):
        out = self.out
        if out:
            try:
                n = self.sock.send(out)
            except (BlockingIOError, InterruptedError):
                n = 0
            except OSError:
                self.close()
                return
            del out[:n]
        if bool(out) != self.wmask and self.alive:
            self.wmask = bool(out)
            sel.modify(self.sock, R | W if out else R, self)
        if not out and self.closing:
            self.close()
lsock = socket.socket()
lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
lsock.bind(("127.0.0.1", 0))
lsock.listen(1024)
lsock.setblocking(False)
sel.register(lsock, R, None)
ready(lsock.getsockname()[1])
while True:
    for key, mask in sel.select():
        conn = key.data
        if conn is None:
            for _ in range(256):
                try:
                    s, _peer = lsock.accept()
                except (BlockingIOError, InterruptedError):
                    break
                s.setblocking(False)
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                Conn(s)
        else:
            conn.on_event(mask)
"""

#: which package a server needs (a missing one is skipped with a note)
IMPORTS = {"cowboy_ws": "cowboy_ws", "websockets": "websockets", "picows": "picows", "aiohttp": "aiohttp",
           "wsproto": "wsproto"}


def env_for(pure: bool = False, compress: bool = False, hibernate: bool = False,
            extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a server subprocess: the repo on PYTHONPATH, the bench switches."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("COWBOY_WS_PURE", "BENCH_COMPRESS", "BENCH_HIBERNATE", "BENCH_TRACEMALLOC",
                         "BENCH_PROFILE", "BENCH_METRICS", "BENCH_DEFLATE_OPTS")}
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    if pure:
        env["COWBOY_WS_PURE"] = "1"
    if compress:
        env["BENCH_COMPRESS"] = "1"
    if hibernate:
        env["BENCH_HIBERNATE"] = "1"
    env.update(extra or {})
    return env


def cowboy_backend_c_available() -> tuple[bool, str]:
    """Whether ``cowboy_ws.backend()`` is "c" in a fresh interpreter without COWBOY_WS_PURE."""
    try:
        out = subprocess.run([sys.executable, "-c", "import cowboy_ws; print(cowboy_ws.backend())"],
                             cwd=ROOT, env=env_for(), capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"could not ask: {exc}"
    backend = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""
    if out.returncode != 0:
        return False, f"import failed: {out.stderr.strip()[-300:]}"
    return backend == "c", f"cowboy_ws.backend() == {backend!r}"


def find_erlang_cowboy() -> tuple[bool, str]:
    """Whether an ``erl`` with Cowboy on its code path exists (bounded wait)."""
    import shutil
    erl = shutil.which("erl")
    if not erl:
        return False, "no `erl` on PATH"
    try:
        out = subprocess.run([erl, "-noshell", "-eval",
                              'io:format("~p~n", [code:which(cowboy)]), halt().'],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"`erl` did not answer: {exc}"
    where = out.stdout.strip()
    if not where or "non_existing" in where:
        return False, f"`{erl}` found but Cowboy is not on its code path"
    return True, f"Cowboy at {where}"


def read_status(pid: int) -> dict[str, int]:
    """VmRSS / VmHWM (kB) etc. from /proc/<pid>/status."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Vm"):
                    k, _, v = line.partition(":")
                    parts = v.split()
                    if parts and parts[0].isdigit():
                        out[k] = int(parts[0])
    except OSError:
        pass
    return out


def proc_cpu(pid: int) -> tuple[float, float]:
    """(user, system) seconds from /proc/<pid>/stat (clock ticks: 10 ms grain; for non-Python servers)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def stop_process_group(proc: subprocess.Popen, timeout: float = 30.0) -> None:
    """SIGTERM ``proc``, wait up to ``timeout`` s, then SIGKILL its whole process group (its workers).

    ``proc`` must have been started with ``start_new_session=True`` (it leads its own group).
    """
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # whatever is left of its session
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        pass


class ServerProc:
    """One server subprocess, pinned to ``core``; never outlives :meth:`stop` (call it in ``finally``)."""

    def __init__(self, label: str, script: str, env: dict[str, str], core: int | None,
                 start_timeout: float = 30.0) -> None:
        self.label = label
        self.errfile = tempfile.TemporaryFile("w+")  # a file, not a pipe: a chatty server never blocks
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SCRIPTS[script]], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self.errfile, env=env, text=True, bufsize=1, start_new_session=True)
        try:
            if core is not None:
                try:
                    os.sched_setaffinity(self.proc.pid, {core})
                except OSError:
                    pass
            line = self._readline(start_timeout)
            if not line.startswith("PORT "):
                raise RuntimeError(f"{label} server did not start: {line!r} {self.stderr_tail()}")
            self.port = int(line.split()[1])
        except BaseException:
            self.stop()
            raise

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _readline(self, timeout: float = IO_TIMEOUT) -> str:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            raise TimeoutError(f"{self.label} server: no answer in {timeout} s {self.stderr_tail()}")
        return self.proc.stdout.readline()

    def _ask(self, cmd: str, expect: str, timeout: float = IO_TIMEOUT) -> str:
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.label} server exited ({self.proc.returncode}): {self.stderr_tail()}")
        assert self.proc.stdin is not None
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        line = self._readline(timeout)
        if not line.startswith(expect):
            raise RuntimeError(f"{self.label} server: bad answer to {cmd!r}: {line!r} {self.stderr_tail()}")
        return line

    def cpu(self) -> tuple[float, float]:
        """(user, system) CPU seconds of the whole server process so far (getrusage, all threads)."""
        parts = self._ask("r", "CPU ").split()
        return float(parts[1]), float(parts[2])

    def gc(self) -> None:
        self._ask("g", "GC", 60.0)

    def status(self) -> dict[str, int]:
        return read_status(self.proc.pid)

    def rss_kib(self) -> int:
        return self.status().get("VmRSS", 0)

    def hwm_kib(self) -> int:
        return self.status().get("VmHWM", 0)

    def tracemalloc_baseline(self) -> None:
        self._ask("s0", "SNAP", 120.0)

    def tracemalloc_report(self, n: int) -> str:
        return self._dump(f"s1 {n}")

    def profile_report(self, top: int) -> str:
        """With BENCH_PROFILE=1: stop cProfile and return the ``top`` functions by tottime."""
        return self._dump(f"p {top}")

    def _dump(self, cmd: str) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        lines = []
        line = self._readline(300.0)
        end = time.monotonic() + 60
        while line and not line.startswith("DUMPED") and time.monotonic() < end:
            lines.append(line)
            line = self.proc.stdout.readline()  # the rest may already sit in our read buffer
        return "".join(lines)

    def stderr_tail(self) -> str:
        try:
            self.errfile.seek(0)
            return self.errfile.read()[-2000:]
        except (OSError, ValueError):
            return ""

    def stop(self) -> None:
        """EOF on stdin (the control thread exits the process), then SIGTERM, then SIGKILL (whole group)."""
        p = self.proc
        try:
            if p.stdin:
                p.stdin.close()
        except OSError:
            pass
        try:
            p.wait(3)
        except subprocess.TimeoutExpired:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(p.pid, sig)
                except (ProcessLookupError, PermissionError):
                    pass
                try:
                    p.wait(3)
                    break
                except subprocess.TimeoutExpired:
                    continue
        try:
            if p.stdout:
                p.stdout.close()
        except OSError:
            pass
        try:
            self.errfile.close()
        except OSError:
            pass
