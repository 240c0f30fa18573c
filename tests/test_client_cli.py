"""``python -m cowboy_ws.client``: piped (non-interactive) and on a terminal (a pty), against our server."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import WAIT, default_handle

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str, stdin: str = "", timeout: float = 30) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        env.pop(name, None)
    return subprocess.run([sys.executable, "-m", "cowboy_ws.client", *args], input=stdin, capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=ROOT, check=False)


def test_piped_lines_are_sent_and_replies_printed(app, rec):
    server = app(ws_options={"compress": True})
    out = run_cli(f"ws://127.0.0.1:{server.port}/ws", "--compress", stdin="hello\nwörld\n\nlast line\n")
    assert out.returncode == 0, out.stderr
    assert out.stdout == "hello\nwörld\n\nlast line\n"
    assert "connected to" in out.stderr and "permessage-deflate" in out.stderr
    assert "closed by us: 1000" in out.stderr
    assert rec.reason() == ("remote", 1000, b"")


def test_connect_subcommand_headers_and_subprotocol(app, rec):
    def init(req, state):
        state["seen"] = (req.header("x-token"), req.header("origin"), req.header("sec-websocket-protocol"))
        req.set_resp_header("sec-websocket-protocol", "chat")
        return ("cowboy_websocket", req, state)

    server = app(init=init)
    out = run_cli("connect", f"ws://127.0.0.1:{server.port}/ws", "--header", "X-Token: abc", "-p", "chat",
                  "--origin", "http://o.example", stdin="x\n")
    assert out.returncode == 0, out.stderr
    assert "subprotocol chat" in out.stderr
    assert rec.terminate()[2]["seen"] == ("abc", "http://o.example", "chat")


def test_binary_replies_are_shown_as_hex(app):
    server = app(handle=lambda f, s: ("reply", ("binary", b"\x00\x01\xff"), s) if f[0] == "text"
                 else default_handle(f, s))
    out = run_cli(f"ws://127.0.0.1:{server.port}/ws", stdin="b\n")
    assert out.stdout == "[binary, 3 bytes] 00 01 ff\n"


def test_server_close_ends_the_program_with_its_code(app):
    server = app(handle=lambda f, s: ("reply", [("text", b"bye"), ("close", 4000, b"done")], s))
    out = run_cli(f"ws://127.0.0.1:{server.port}/ws", stdin="x\ny\nz\n")
    assert out.returncode == 1
    assert out.stdout == "bye\n"
    assert "closed by the server: 4000 (done)" in out.stderr


def test_refused_and_unreachable(app):
    def init(req, state):
        req.reply(403, {}, b"not you\n")
        return ("ok", req, state)

    server = app(init=init)
    out = run_cli(f"ws://127.0.0.1:{server.port}/ws")
    assert out.returncode == 1
    assert "403" in out.stderr and "not you" in out.stderr
    out = run_cli("ws://127.0.0.1:1/", "--open-timeout", "2")
    assert out.returncode == 1 and "cannot connect" in out.stderr
    out = run_cli("http//nope")
    assert out.returncode == 1 and "WebSocket URL" in out.stderr


def test_insecure_accepts_a_self_signed_certificate(app, tls):
    server_ctx, _client_ctx = tls
    server = app(ssl_context=server_ctx)
    out = run_cli(f"wss://localhost:{server.port}/ws", stdin="secret\n")
    assert out.returncode == 1 and "certificate" in out.stderr.lower()
    out = run_cli(f"wss://localhost:{server.port}/ws", "--insecure", stdin="secret\n")
    assert out.returncode == 0, out.stderr
    assert out.stdout == "secret\n"


def test_interactive_on_a_terminal(app):
    pty = pytest.importorskip("pty")
    server = app()
    master, slave = pty.openpty()
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "cowboy_ws.client", f"ws://127.0.0.1:{server.port}/ws"],
                            stdin=slave, stdout=slave, stderr=slave, env=env, cwd=ROOT)
    os.close(slave)
    seen = b""

    def read_until(token: bytes) -> None:
        nonlocal seen
        deadline = time.monotonic() + WAIT * 2
        while token not in seen:
            assert time.monotonic() < deadline, f"no {token!r} in {seen!r}"
            import select
            if select.select([master], [], [], 0.1)[0]:
                try:
                    seen += os.read(master, 4096)
                except OSError:
                    break

    try:
        read_until(b"> ")
        os.write(master, b"typed line\n")
        read_until(b"< typed line")
        os.write(master, b"\x04")  # Ctrl-D: close
        assert proc.wait(WAIT * 2) == 0
        read_until(b"closed by us: 1000")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
