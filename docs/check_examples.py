"""Run the code the documentation shows, against real servers on 127.0.0.1 (port 0).

``python docs/check_examples.py`` (docs/build.sh runs it before building).  Every file under
docs/tutorial/, docs/howto/ and docs/explanation/ that a page includes is exercised here the way
the page says to use it: the tutorial's handler through ``python -m cowboy_ws`` and through
``Server``, the testing how-to's pytest file with pytest, the TLS commands with openssl,
``--workers``, and, when ``redis-server`` / ``nginx`` are installed, Redis across workers and
the nginx configuration (otherwise those two say "skipped").  Exits non-zero on the first
failure.
"""

from __future__ import annotations

import io
import os
import queue
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from contextlib import ExitStack, contextmanager, redirect_stdout
from pathlib import Path
from typing import Iterator

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
TUTORIAL = DOCS / "tutorial"
HOWTO = DOCS / "howto"
sys.path[:0] = [str(ROOT), str(TUTORIAL), str(HOWTO)]

import cowboy_ws  # noqa: E402
from websockets.exceptions import ConnectionClosed  # noqa: E402
from websockets.sync.client import connect  # noqa: E402

TIMEOUT = 10.0
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
       "PYTHONUNBUFFERED": "1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def cli(args: list[str], cwd: Path, pattern: str = r"listening on \w+://[^:]+:(\d+)",
        stop: int = signal.SIGINT, env: dict | None = None) -> Iterator[tuple[int, list[str]]]:
    """``python -m cowboy_ws ARGS`` (``python ARGS`` if ARGS starts with ``-c``) in ``cwd``; yields
    (port from its log, lines printed so far); stops it with ``stop`` and checks that it exits 0."""
    command = [sys.executable, *args] if args[0] == "-c" else [sys.executable, "-m", "cowboy_ws", *args]
    proc = subprocess.Popen(command, cwd=cwd, env=env or ENV, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: list[str] = []
    found: "queue.Queue[int]" = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            m = re.search(pattern, line)
            if m:
                found.put(int(m.group(1)))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        try:
            port = found.get(timeout=TIMEOUT)
        except queue.Empty:
            raise AssertionError(f"python -m cowboy_ws {' '.join(args)} did not start:\n{''.join(lines)}") from None
        yield port, lines
        proc.send_signal(stop)
        rc = proc.wait(timeout=30)
        reader.join(5)
        assert rc == 0, f"python -m cowboy_ws {' '.join(args)} exited {rc}:\n{''.join(lines)}"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def recv_all(ws, n: int) -> list[str]:
    return [ws.recv(timeout=TIMEOUT) for _ in range(n)]


def reply(ws) -> str:
    """The next message that is not one of hello.py's ticks."""
    while True:
        got = ws.recv(timeout=TIMEOUT)
        if not re.fullmatch(r"\d\d:\d\d:\d\d", got):
            return got


# -- the checks --------------------------------------------------------------------------------


def check_sansio_demo() -> None:
    import runpy

    runpy.run_path(str(DOCS / "explanation" / "sansio_demo.py"))  # its asserts are the check


def check_index_echo() -> None:
    with cli(["echo_h", "--port", "0"], cwd=TUTORIAL) as (port, _):
        for path in ("/", "/any/path"):
            with connect(f"ws://127.0.0.1:{port}{path}") as ws:
                ws.send("hi")
                assert ws.recv(timeout=TIMEOUT) == "echo: hi"


def check_tutorial_builtin_echo() -> None:
    with cli(["--port", "0"], cwd=DOCS) as (port, _):
        page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=TIMEOUT).read()
        assert b"new WebSocket" in page
        with connect(f"ws://127.0.0.1:{port}/") as ws:
            ws.send("Hello, cowboy_ws!")
            assert ws.recv(timeout=TIMEOUT) == "Hello, cowboy_ws!"


def check_tutorial_hello(module: str) -> None:
    with cli([module, "--port", "0"], cwd=TUTORIAL) as (port, lines):
        page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=TIMEOUT).read()
        assert b"new WebSocket" in page
        with connect(f"ws://127.0.0.1:{port}/") as ws:
            ws.send("Hello!")
            got = reply(ws)
            assert got == "#1: you said Hello!", got
            if module == "hello":
                assert any(re.fullmatch(r"\d\d:\d\d:\d\d", m) for m in recv_all(ws, 2))
        with connect(f"ws://127.0.0.1:{port}/") as ws:
            ws.send("bye")
            ws.recv(timeout=TIMEOUT)
            time.sleep(0.2)  # the server's terminate runs once our Close arrives
    if module == "hello":
        out = "".join(lines)
        assert "127.0.0.1 left after 1 message(s): ('remote', 1000, b'')" in out, out


def check_tutorial_app() -> None:
    import app

    with cowboy_ws.Server(app.routes, port=0) as server:
        with connect(server.url + "/") as ws:
            ws.send("x")
            assert reply(ws) == "#1: you said x"
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{server.port}/elsewhere", timeout=TIMEOUT)
            raise AssertionError("no 404")
        except urllib.error.HTTPError as exc:
            assert exc.code == 404


def check_howto_testing() -> None:
    env = {**ENV, "PYTHONPATH": os.pathsep.join([str(TUTORIAL), ENV["PYTHONPATH"]])}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_hello.py"],
                          cwd=HOWTO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def check_howto_tls() -> None:
    import hello

    if shutil.which("openssl") is None:
        print("  openssl not installed: the certificate command skipped")
        return
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["bash", str(HOWTO / "self-signed.sh")], cwd=tmp, check=True, capture_output=True)
        client = ssl.create_default_context(cafile=os.path.join(tmp, "cert.pem"))
        # The command line ...
        with cli(["hello", "--port", "0", "--certfile", os.path.join(tmp, "cert.pem"),
                  "--keyfile", os.path.join(tmp, "key.pem")], cwd=TUTORIAL) as (port, _):
            page = urllib.request.urlopen(f"https://localhost:{port}/", context=client, timeout=TIMEOUT).read()
            assert b"wss://" in page
            with connect(f"wss://localhost:{port}/", ssl=client) as ws:
                ws.send("secret")
                assert reply(ws) == "#1: you said secret"
        # ... and Python, as the how-to shows it.
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem"))
        with cowboy_ws.Server([("/", hello, None)], port=0, ssl_context=context) as server:
            assert server.url.startswith("wss://")
            with connect(server.url.replace("127.0.0.1", "localhost") + "/", ssl=client) as ws:
                ws.send("secret")
                assert reply(ws) == "#1: you said secret"


def check_howto_backpressure() -> None:
    import slow_work

    with cowboy_ws.Server([("/", slow_work, None)], port=0) as server, connect(server.url + "/") as ws:
        words = [f"word{i}" for i in range(12)]
        for w in words:
            ws.send(w)
        assert sorted(recv_all(ws, len(words))) == sorted(w.upper() for w in words)
    routes = [("/", slow_work, None)]
    with cowboy_ws.Server(routes, port=0, ws_options={"max_frame_size": 64 * 1024, "idle_timeout": 30_000,
                                                      "ping_interval": 25_000},
                          max_connections=10_000, allowed_origins=["https://example.com"]) as server:
        with connect(server.url + "/", origin="https://example.com") as ws:
            ws.send("x" * (64 * 1024 + 1))
            try:
                ws.recv(timeout=TIMEOUT)
            except ConnectionClosed:
                pass
            assert ws.close_code == 1009, ws.close_code
        try:
            connect(server.url + "/", origin="https://evil.example")
            raise AssertionError("origin not refused")
        except Exception as exc:  # websockets' InvalidStatus
            assert getattr(getattr(exc, "response", None), "status_code", None) == 403, exc


def check_howto_workers() -> None:
    with cli(["hello", "--workers", "2", "--port", "0"], cwd=TUTORIAL,
             pattern=r"worker\(s\) on ws://[^:]+:(\d+)", stop=signal.SIGTERM) as (port, _):
        for _ in range(4):
            for attempt in range(50):  # the workers may still be starting
                try:
                    ws = connect(f"ws://127.0.0.1:{port}/", open_timeout=TIMEOUT)
                    break
                except OSError:
                    time.sleep(0.1)
            with ws:
                ws.send("w")
                assert reply(ws) == "#1: you said w"


def check_howto_workers_python() -> None:
    source = (HOWTO / "workers_app.py").read_text()
    for old, new in (("port=8080", "port=0"), ("workers=4", "workers=2")):
        assert old in source, old
        source = source.replace(old, new)
    code = ("import logging; logging.basicConfig(level=logging.INFO)\n"
            f"exec(compile({source!r}, 'workers_app.py', 'exec'), {{'__name__': '__main__'}})")
    env = {**ENV, "PYTHONPATH": os.pathsep.join([str(TUTORIAL), ENV["PYTHONPATH"]])}
    with cli(["-c", code], cwd=HOWTO, pattern=r"worker\(s\) on ws://[^:]+:(\d+)", stop=signal.SIGTERM,
             env=env) as (port, _):
        for attempt in range(50):  # the workers may still be starting
            try:
                ws = connect(f"ws://127.0.0.1:{port}/", open_timeout=TIMEOUT)
                break
            except OSError:
                time.sleep(0.1)
        with ws:
            ws.send("py")
            assert reply(ws) == "#1: you said py"


def check_howto_redis() -> None:
    if shutil.which("redis-server") is None:
        print("  redis-server not installed: skipped")
        return
    port = free_port()
    redis = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                              "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        with cli(["cowboy_ws.examples.chat", "--workers", "2", "--port", "0", "--redis",
                  f"redis://127.0.0.1:{port}/0"], cwd=DOCS,
                 pattern=r"worker\(s\) on ws://[^:]+:(\d+)", stop=signal.SIGTERM) as (ws_port, lines):
            with ExitStack() as stack:
                clients = []
                for _ in range(6):
                    for attempt in range(50):  # the workers may still be starting
                        try:
                            clients.append(stack.enter_context(
                                connect(f"ws://127.0.0.1:{ws_port}/lobby", open_timeout=TIMEOUT)))
                            break
                        except OSError:
                            time.sleep(0.1)
                # Every client must hear the first one, whichever worker each landed on (a join
                # reaches the other worker after one pub/sub hop: say it again until all heard).
                deadline = time.monotonic() + TIMEOUT
                heard = [False] * len(clients)
                n = 0
                while not all(heard):
                    assert time.monotonic() < deadline, "".join(lines)
                    n += 1
                    clients[0].send(f"hello {n}")
                    for i, ws in enumerate(clients):
                        try:
                            while True:
                                if ws.recv(timeout=0.3).startswith("hello"):
                                    heard[i] = True
                        except TimeoutError:
                            pass
    finally:
        redis.terminate()
        redis.wait(10)


def check_howto_nginx() -> None:
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    if nginx is None or shutil.which("openssl") is None:
        print("  nginx (or openssl) not installed: skipped")
        return
    with tempfile.TemporaryDirectory() as tmp, cli(["hello", "--port", "0"], cwd=TUTORIAL) as (backend, _):
        subprocess.run(["bash", str(HOWTO / "self-signed.sh")], cwd=tmp, check=True, capture_output=True)
        front = free_port()
        conf = (HOWTO / "nginx-hello.conf").read_text()
        for old, new in (("listen 443 ssl;", f"listen 127.0.0.1:{front} ssl;"),
                         ("/etc/ssl/example.com/fullchain.pem", f"{tmp}/cert.pem"),
                         ("/etc/ssl/example.com/privkey.pem", f"{tmp}/key.pem"),
                         ("127.0.0.1:8080", f"127.0.0.1:{backend}")):
            assert old in conf, old
            conf = conf.replace(old, new)
        Path(tmp, "hello.conf").write_text(conf)
        Path(tmp, "nginx.conf").write_text(
            f"worker_processes 1;\npid {tmp}/nginx.pid;\nerror_log {tmp}/error.log;\nevents {{}}\n"
            f"http {{\n access_log off;\n client_body_temp_path {tmp}/body;\n proxy_temp_path {tmp}/proxy;\n"
            f" include {tmp}/hello.conf;\n}}\n")
        proc = subprocess.Popen([nginx, "-p", tmp, "-c", f"{tmp}/nginx.conf", "-g", "daemon off;"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            client = ssl.create_default_context(cafile=f"{tmp}/cert.pem")
            for attempt in range(100):
                try:
                    ws = connect(f"wss://localhost:{front}/", ssl=client, open_timeout=TIMEOUT)
                    break
                except OSError:
                    assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                    time.sleep(0.05)
            with ws:
                ws.send("through nginx")
                assert reply(ws) == "#1: you said through nginx"
        finally:
            proc.terminate()
            proc.wait(10)


CHECKS = [
    check_sansio_demo,
    check_index_echo,
    check_tutorial_builtin_echo,
    lambda: check_tutorial_hello("hello_step1"),
    lambda: check_tutorial_hello("hello"),
    check_tutorial_app,
    check_howto_testing,
    check_howto_tls,
    check_howto_backpressure,
    check_howto_workers,
    check_howto_workers_python,
    check_howto_redis,
    check_howto_nginx,
]
NAMES = ["explanation: sans-IO demo", "index: echo_h", "tutorial: built-in echo", "tutorial: hello (step 1)", "tutorial: hello",
         "tutorial: app.py", "how-to: testing (pytest)", "how-to: TLS", "how-to: backpressure and limits",
         "how-to: workers", "how-to: workers (Python)", "how-to: Redis", "how-to: nginx"]


def main() -> int:
    start = time.monotonic()
    for name, check in zip(NAMES, CHECKS):
        t = time.monotonic()
        print(f"docs example: {name}", flush=True)
        out = io.StringIO()  # what handlers served in this process print (hello.py's terminate)
        try:
            with redirect_stdout(out):
                check()
        finally:
            skipped = [line for line in out.getvalue().splitlines() if line.startswith("  ")]
            print("\n".join(skipped), end="\n" if skipped else "", flush=True)
        print(f"  ok ({time.monotonic() - t:.1f}s)", flush=True)
    print(f"docs examples: all {len(CHECKS)} ok in {time.monotonic() - start:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
