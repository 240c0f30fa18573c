"""``python -m cowboy_ws``: the command line, run as a subprocess on 127.0.0.1 with ``--port 0``.

The port is read from the one log line the server writes when it listens.
Every wait is bounded.
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

import cowboy_ws

ROOT = Path(__file__).resolve().parents[1]
LISTEN_RE = re.compile(r"listening on (https?)://(\S+):(\d+) \(backend (\w+), compress (on|off)\)")
STARTUP_TIMEOUT = 10.0
TIMEOUT = 5.0


class Cli:
    """A running ``python -m cowboy_ws``; stderr is drained by a thread into :attr:`lines`."""

    def __init__(self, *args: str, pythonpath: Path | None = None) -> None:
        env = dict(os.environ)
        paths = [str(ROOT)] + ([str(pythonpath)] if pythonpath else [])
        if env.get("PYTHONPATH"):
            paths.append(env["PYTHONPATH"])
        env["PYTHONPATH"] = os.pathsep.join(paths)
        env["PYTHONUNBUFFERED"] = "1"
        self.args = args
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cowboy_ws", *args], cwd=ROOT, env=env,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()
        self.scheme = self.host = None
        self.port: int | None = None

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line)
        self._queue.put(None)

    def wait_for(self, pattern: re.Pattern[str] | str, timeout: float = STARTUP_TIMEOUT) -> re.Match[str]:
        """The first log line (from now on or already read) matching ``pattern``."""
        rx = re.compile(pattern) if isinstance(pattern, str) else pattern
        for line in self.lines:
            if m := rx.search(line):
                return m
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no log line matching {rx.pattern!r} within {timeout}s:\n{self.output}")
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                self._queue.put(None)  # keep the end marker for later waits
                raise AssertionError(f"exited ({self.proc.poll()}) before logging {rx.pattern!r}:\n{self.output}")
            self.lines.append(line)
            if m := rx.search(line):
                return m

    def started(self) -> "Cli":
        m = self.wait_for(LISTEN_RE)
        self.scheme, self.host, self.port = m.group(1), m.group(2), int(m.group(3))
        return self

    @property
    def ws_url(self) -> str:
        return f"{'wss' if self.scheme == 'https' else 'ws'}://127.0.0.1:{self.port}"

    @property
    def http_url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def finish(self, timeout: float = TIMEOUT) -> int:
        """Wait for exit (bounded) and collect the rest of the output."""
        rc = self.proc.wait(timeout=timeout)
        self._reader.join(timeout)
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self.lines.append(line)
        return rc

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=TIMEOUT)
        self._reader.join(TIMEOUT)


@pytest.fixture
def cli():
    """Start ``python -m cowboy_ws ARGS`` (waits for the listen line); stopped at teardown."""
    started: list[Cli] = []

    def start(*args: str, pythonpath: Path | None = None) -> Cli:
        c = Cli(*args, pythonpath=pythonpath)
        started.append(c)
        return c.started()

    yield start
    for c in started:
        c.stop()


@pytest.fixture(scope="module")
def server():
    """One shared server with --compress and a small --max-frame-size."""
    c = Cli("--port", "0", "--compress", "--max-frame-size", "4096", "--log-level", "debug")
    try:
        yield c.started()
    finally:
        c.stop()


def run_cli(*args: str, pythonpath: Path | None = None, timeout: float = 15.0) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + ([str(pythonpath)] if pythonpath else []))
    return subprocess.run([sys.executable, "-m", "cowboy_ws", *args], cwd=ROOT, env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)


def closed_code(exc: ConnectionClosed) -> int | None:
    return exc.rcvd.code if exc.rcvd is not None else None


# -- help and argument errors ------------------------------------------------------


def test_help_lists_every_option():
    r = run_cli("--help")
    assert r.returncode == 0, r.stderr
    for flag in ("MODULE[:HANDLER]", "--host", "--port", "--compress", "--certfile", "--keyfile",
                 "--max-frame-size", "--idle-timeout", "--log-level", "infinity"):
        assert flag in r.stdout


def test_version():
    r = run_cli("--version")
    assert r.returncode == 0
    assert cowboy_ws.__version__ in r.stdout


@pytest.mark.parametrize("args, message", [
    (["--max-frame-size", "0"], "max_frame_size"),
    (["--max-frame-size", "big"], "max_frame_size"),
    (["--idle-timeout", "-5"], "idle_timeout"),
    (["--port", "70000"], "port"),
    (["--keyfile", "key.pem"], "--keyfile needs --certfile"),
])
def test_bad_option_values_are_usage_errors(args, message):
    r = run_cli(*args)
    assert r.returncode == 2
    assert message in r.stderr
    assert "Traceback" not in r.stderr


# -- the default echo server (shared, --compress --max-frame-size 4096) -------------


def test_listen_line_shows_the_real_port(server):
    assert server.port and server.port != 0
    m = server.wait_for(LISTEN_RE)
    assert m.group(2) == "127.0.0.1"
    assert m.group(4) in ("c", "python")
    assert m.group(5) == "on"


def test_echo_text_and_binary(server):
    with connect(server.ws_url + "/any/path?x=1", open_timeout=TIMEOUT, close_timeout=TIMEOUT) as ws:
        ws.send("Hello, cowboy_ws!")
        assert ws.recv(timeout=TIMEOUT) == "Hello, cowboy_ws!"
        ws.send(b"\x00\x01\xff")
        assert ws.recv(timeout=TIMEOUT) == b"\x00\x01\xff"


def test_plain_get_serves_the_html_page(server):
    with urllib.request.urlopen(server.http_url + "/", timeout=TIMEOUT) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/html")
        assert resp.headers["Server"] == f"cowboy_ws/{cowboy_ws.__version__}"
        body = resp.read().decode()
    assert "<script" in body and "WebSocket" in body


def test_server_header_on_the_upgrade(server):
    with connect(server.ws_url, open_timeout=TIMEOUT, close_timeout=TIMEOUT) as ws:
        assert ws.response.status_code == 101
        assert ws.response.headers["Server"] == f"cowboy_ws/{cowboy_ws.__version__}"


def test_compress_negotiates_permessage_deflate(server):
    with connect(server.ws_url, open_timeout=TIMEOUT, close_timeout=TIMEOUT) as ws:  # offers deflate
        assert "permessage-deflate" in ws.response.headers.get("Sec-WebSocket-Extensions", "")
        msg = "compressible " * 200
        ws.send(msg)
        assert ws.recv(timeout=TIMEOUT) == msg
    with connect(server.ws_url, compression=None, open_timeout=TIMEOUT, close_timeout=TIMEOUT) as ws:
        assert "Sec-WebSocket-Extensions" not in ws.response.headers
        ws.send("plain")
        assert ws.recv(timeout=TIMEOUT) == "plain"


@pytest.mark.parametrize("compression", [None, "deflate"])
def test_max_frame_size_is_enforced_with_1009(server, compression):
    with connect(server.ws_url, compression=compression, max_size=None,
                 open_timeout=TIMEOUT, close_timeout=TIMEOUT) as ws:
        # With deflate the limit applies to the inflated payload too: compressible data on
        # purpose, so that the frame is small and only the inflated size is at the limit.
        # (Random data would make a compressed frame a few bytes over the limit.)
        make = (lambda n: b"a" * n) if compression else os.urandom
        ok = make(4096)
        ws.send(ok)
        assert ws.recv(timeout=TIMEOUT) == ok
        ws.send(make(4097))
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=TIMEOUT)
        assert closed_code(info.value) == 1009


# -- defaults, options ---------------------------------------------------------------


def test_defaults_without_flags(cli):
    c = cli("--port", "0")
    assert c.wait_for(LISTEN_RE).group(5) == "off"
    with connect(c.ws_url, max_size=None, open_timeout=TIMEOUT, close_timeout=TIMEOUT) as ws:
        assert "Sec-WebSocket-Extensions" not in ws.response.headers  # no --compress: declined
        big = os.urandom(100_000)  # under the 1_000_000 default
        ws.send(big)
        assert ws.recv(timeout=TIMEOUT) == big


def test_autobahn_command_line(cli):
    # What the Autobahn runner drives, only on a free port instead of 9001.
    c = cli("--port", "0", "--compress", "--max-frame-size", "67108864")
    with connect(c.ws_url, max_size=None, open_timeout=TIMEOUT, close_timeout=TIMEOUT) as ws:
        assert "permessage-deflate" in ws.response.headers["Sec-WebSocket-Extensions"]
        big = os.urandom(2_000_000)  # over Cowboy's default limit, under 64 MiB
        ws.send(big)
        assert ws.recv(timeout=TIMEOUT * 2) == big


def test_idle_timeout_closes_with_1000(cli):
    c = cli("--port", "0", "--idle-timeout", "200")
    with connect(c.ws_url, open_timeout=TIMEOUT, close_timeout=TIMEOUT) as ws:
        start = time.monotonic()
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=TIMEOUT)
        assert closed_code(info.value) == 1000
        assert 0.15 <= time.monotonic() - start < TIMEOUT


def test_port_in_use_is_a_clear_error():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        r = run_cli("--port", str(port))
    assert r.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in r.stderr
    assert "Traceback" not in r.stderr


# -- signals -------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_closes_connections_with_1001_and_exits_0(cli, sig):
    c = cli("--port", "0")
    with connect(c.ws_url, open_timeout=TIMEOUT, close_timeout=TIMEOUT) as ws1, \
            connect(c.ws_url + "/other", open_timeout=TIMEOUT, close_timeout=TIMEOUT) as ws2:
        ws1.send("before")
        assert ws1.recv(timeout=TIMEOUT) == "before"
        c.proc.send_signal(sig)
        for ws in (ws1, ws2):
            with pytest.raises(ConnectionClosed) as info:
                ws.recv(timeout=TIMEOUT)
            assert closed_code(info.value) == 1001
    assert c.finish(timeout=TIMEOUT) == 0, c.output
    assert sig.name in c.output
    # Nothing listens any more.
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", c.port), timeout=TIMEOUT).close()


def test_signal_with_no_connections_exits_0(cli):
    c = cli("--port", "0")
    c.proc.send_signal(signal.SIGTERM)
    assert c.finish(timeout=TIMEOUT) == 0, c.output


# -- MODULE[:HANDLER] ------------------------------------------------------------------


@pytest.mark.parametrize("spec", [
    "cowboy_ws.examples.subprotocol",   # MODULE alone: the module is the handler
    "cowboy_ws.examples:subprotocol",   # a submodule the package did not import itself
    "cowboy_ws:examples.subprotocol",   # a dotted attribute path
])
def test_module_as_handler(cli, spec):
    c = cli(spec, "--port", "0")
    with connect(c.ws_url + "/", subprotocols=["v1.chat"], open_timeout=TIMEOUT, close_timeout=TIMEOUT) as ws:
        assert ws.subprotocol == "v1.chat"
        ws.send("hi")
        assert ws.recv(timeout=TIMEOUT) == "v1.chat: hi"
    with pytest.raises(InvalidStatus) as info:
        connect(c.ws_url, subprotocols=["mqtt"], open_timeout=TIMEOUT, close_timeout=TIMEOUT)
    assert info.value.response.status_code == 400


HANDLERS = textwrap.dedent('''
    class Upper:
        """A class as the handler: its functions are the callbacks."""
        def init(req, state):
            return ("cowboy_websocket", req, state)
        def websocket_handle(frame, state):
            if frame[0] == "text":
                return ("reply", ("text", frame[1].upper()), state)
            return ("ok", state)
        def websocket_info(info, state):
            return ("ok", state)

    class Shouter:
        """An instance as the handler: bound methods, with per-instance configuration."""
        def __init__(self, suffix):
            self.suffix = suffix
        def init(self, req, state):
            return ("cowboy_websocket", req, state)
        def websocket_handle(self, frame, state):
            return ("reply", ("text", frame[1] + self.suffix), state)
        def websocket_info(self, info, state):
            return ("ok", state)

    shouter = Shouter(b"!!")
''')


@pytest.mark.parametrize("spec, sent, expected", [("clihandlers:Upper", "hey", "HEY"),
                                                  ("clihandlers:shouter", "hey", "hey!!")])
def test_class_or_instance_as_handler(cli, tmp_path, spec, sent, expected):
    (tmp_path / "clihandlers.py").write_text(HANDLERS)
    c = cli(spec, "--port", "0", pythonpath=tmp_path)
    with connect(c.ws_url, open_timeout=TIMEOUT, close_timeout=TIMEOUT) as ws:
        ws.send(sent)
        assert ws.recv(timeout=TIMEOUT) == expected


@pytest.mark.parametrize("spec, message", [
    ("no_such_module_xyz", "cannot import module 'no_such_module_xyz'"),
    ("no_such_module_xyz:handler", "cannot import module 'no_such_module_xyz'"),
    ("cowboy_ws.examples.no_such_example", "cannot import module 'cowboy_ws.examples.no_such_example'"),
    ("cowboy_ws.examples.echo:nope", "has no attribute 'nope'"),
    ("cowboy_ws.examples.echo:PAGE", "is not a WebSocket handler"),
    ("cowboy_ws.examples.echo:", "expected MODULE or MODULE:HANDLER"),
    ("brokenhandler", "cannot import module 'brokenhandler': RuntimeError: boom"),
    ("needsdep", "No module named 'some_missing_dependency'"),
])
def test_bad_handler_is_a_clear_error(tmp_path, spec, message):
    (tmp_path / "brokenhandler.py").write_text("raise RuntimeError('boom')\n")
    (tmp_path / "needsdep.py").write_text("import some_missing_dependency\n")
    r = run_cli(spec, "--port", "0", pythonpath=tmp_path)
    assert r.returncode == 2
    assert message in r.stderr
    assert "Traceback" not in r.stderr
    assert "listening" not in r.stderr


# -- TLS -------------------------------------------------------------------------------


@pytest.fixture
def certificate(tmp_path):
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("needs the openssl command to make a self-signed certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    r = subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        capture_output=True, timeout=30)
    if r.returncode != 0:
        pytest.skip(f"openssl could not make a certificate: {r.stderr.decode(errors='replace')}")
    return cert, key


def test_tls_with_certfile_and_keyfile(cli, certificate):
    cert, key = certificate
    c = cli("--port", "0", "--certfile", str(cert), "--keyfile", str(key))
    assert c.scheme == "https"
    ctx = ssl.create_default_context(cafile=str(cert))
    # cowboy_ws' own client: websockets' sync one reads on a thread while another writes, which an
    # SSLSocket does not support before Python 3.11 (flaky there)
    from cowboy_ws import client

    with client.connect(c.ws_url, ssl=ctx, proxy=None, open_timeout=TIMEOUT, close_timeout=TIMEOUT) as ws:
        ws.send("secure")
        assert ws.recv(TIMEOUT) == ("text", b"secure")
    with urllib.request.urlopen(c.http_url + "/", context=ctx, timeout=TIMEOUT) as resp:
        assert "<script" in resp.read().decode()


def test_tls_bad_certificate_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate\n")
    r = run_cli("--port", "0", "--certfile", str(bad))
    assert r.returncode == 2
    assert "cannot load the TLS certificate/key" in r.stderr
    assert "Traceback" not in r.stderr
