"""Prometheus metrics: Server(metrics_port=...) and --metrics-port, counted over real sockets."""

from __future__ import annotations

import re
import time
import urllib.error
import urllib.request

import pytest

pytest.importorskip("prometheus_client")

import cowboy_ws  # noqa: E402
from conftest import WAIT, wait_for  # noqa: E402
from wsclient import Client, http_request  # noqa: E402


def scrape(server: cowboy_ws.Server) -> dict[str, float]:
    """``{'name{labels}': value}`` from the server's /metrics."""
    url = f"http://127.0.0.1:{server.metrics.port}/metrics"
    with urllib.request.urlopen(url, timeout=WAIT) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = resp.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def test_metrics_count_what_happens(app, rec):
    def handle(frame, state):
        if frame == ("text", b"crash"):
            raise RuntimeError("boom")
        if frame == ("text", b"two"):
            return ("reply", [("text", b"a"), ("binary", b"bc")], state)
        return ("reply", frame, state)

    server = cowboy_ws.Server([("/ws", __import__("conftest").Scripted, {"rec": rec, "handle": handle})],
                              port=0, metrics_port=0).start()
    try:
        before = scrape(server)
        assert before["cowboy_ws_connections"] == 0
        assert before["cowboy_ws_connections_total"] == 0
        client = Client.connect(server.port)
        client.send_text("hello")
        assert client.recv_message() == ("text", b"hello")
        client.send_binary(b"\x00" * 1000)
        assert client.recv_message() == ("binary", b"\x00" * 1000)
        client.send_text("two")
        assert client.recv_message() == ("text", b"a")
        assert client.recv_message() == ("binary", b"bc")
        m = scrape(server)
        assert m["cowboy_ws_connections"] == 1
        assert m["cowboy_ws_connections_total"] == 1
        assert m['cowboy_ws_messages_received_total{kind="text"}'] == 2
        assert m['cowboy_ws_messages_received_total{kind="binary"}'] == 1
        assert m['cowboy_ws_bytes_received_total{kind="text"}'] == len("hello") + len("two")
        assert m['cowboy_ws_bytes_received_total{kind="binary"}'] == 1000
        assert m['cowboy_ws_messages_sent_total{kind="text"}'] == 2
        assert m['cowboy_ws_messages_sent_total{kind="binary"}'] == 2
        assert m['cowboy_ws_bytes_sent_total{kind="binary"}'] == 1002
        client.send_close(4001)
        assert client.wait_close() == (4001, b"")
        client.wait_eof()
        client.abort()  # the server waits for the client's FIN after its own (RFC 6455 §7.1.1)
        crasher = Client.connect(server.port)
        crasher.send_text("crash")
        assert crasher.wait_close() == (1011, b"")
        crasher.wait_eof()
        crasher.abort()
        resp, _ = http_request(server.port, b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n")
        assert resp.status == 404
        resp, _ = http_request(server.port, b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n")
        assert resp.status == 426
        lost = Client.connect(server.port)
        rec.pid(3)  # 2 was the plain request's init
        lost.abort()  # no Close: 1006
        wait_for(lambda: scrape(server)["cowboy_ws_connections"] == 0, what="every connection closed")
        m = scrape(server)
        assert m["cowboy_ws_connections_total"] == 3  # upgraded ones
        assert m['cowboy_ws_closes_total{code="4001",side="remote"}'] == 1
        assert m['cowboy_ws_closes_total{code="1011",side="local"}'] == 1
        assert m['cowboy_ws_closes_total{code="1006",side="remote"}'] == 1
        assert m["cowboy_ws_handler_crashes_total"] == 1
        assert m['cowboy_ws_handshake_refusals_total{status="404"}'] == 1
        assert m['cowboy_ws_handshake_refusals_total{status="426"}'] == 1
        assert m["cowboy_ws_send_buffer_paused"] == 0
    finally:
        server.shutdown(grace=1)


def test_broadcast_deliveries_count_as_sent(serve, rec):
    class Member(__import__("conftest").Scripted):
        @staticmethod
        def websocket_init(state):
            cowboy_ws.join("room")
            return __import__("conftest").Scripted.websocket_init(state)

    server = serve([("/ws", Member, {"rec": rec})], metrics_port=0)
    clients = [Client.connect(server.port) for _ in range(3)]
    try:
        for i in range(3):
            rec.pid(i)
        server.loop.call_soon_threadsafe(cowboy_ws.broadcast, "room", ("text", b"x" * 200))
        for client in clients:
            assert client.recv_message() == ("text", b"x" * 200)
        m = scrape(server)
        assert m['cowboy_ws_messages_sent_total{kind="text"}'] == 3
        assert m['cowboy_ws_bytes_sent_total{kind="text"}'] == 600
    finally:
        for client in clients:
            client.abort()


def test_metrics_off_by_default(app):
    server = app()
    assert server.stats is None and server.metrics is None


def test_metrics_endpoint_404_elsewhere_and_port_released(serve):
    server = serve([("/ws", __import__("conftest").Scripted, {})], metrics_port=0)
    port = server.metrics.port
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/other", timeout=WAIT)
    assert info.value.code == 404
    server.shutdown(grace=0.5)
    assert server._stopped.wait(WAIT)
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1)


def test_exposition_names(serve):
    server = serve([("/ws", __import__("conftest").Scripted, {})], metrics_port=0)
    with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics.port}/metrics", timeout=WAIT) as resp:
        text = resp.read().decode()
    for name, kind in [("cowboy_ws_connections", "gauge"), ("cowboy_ws_connections_total", "counter"),
                       ("cowboy_ws_messages_received_total", "counter"), ("cowboy_ws_messages_sent_total", "counter"),
                       ("cowboy_ws_bytes_received_total", "counter"), ("cowboy_ws_bytes_sent_total", "counter"),
                       ("cowboy_ws_closes_total", "counter"), ("cowboy_ws_handler_crashes_total", "counter"),
                       ("cowboy_ws_handshake_refusals_total", "counter"), ("cowboy_ws_send_buffer_paused", "gauge")]:
        assert re.search(rf"^# TYPE {name} {kind}$", text, re.M), name


# -- the CLI, and --workers: the supervisor serves every worker's numbers ----------------------------


def scrape_url(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url, timeout=WAIT) as resp:
        text = resp.read().decode()
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines() if line and not line.startswith("#")}


def test_cli_metrics_port_with_workers(tmp_path):
    from serverproc import ServerProcess, connect_until
    server = ServerProcess("cluster_app:Node", "--workers", "2", "--port", "0", "--metrics-port", "0")
    clients: list = []
    try:
        server.started(workers=2)
        url = server.wait_for(r"metrics of every worker on (http://\S+/metrics)").group(1)
        by_worker = connect_until(server.port, "/", lambda w: len(w) >= 2, opened=clients)
        opened = len(clients)
        # each worker writes its numbers at least once a second: wait for both to show every connection
        deadline = time.monotonic() + 10
        while True:
            m = scrape_url(url)
            counts = {w: m.get(f'cowboy_ws_connections{{worker="{w}"}}', 0) for w in ("0", "1")}
            if sum(counts.values()) == opened or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert sum(counts.values()) == opened and all(counts[w] >= 1 for w in by_worker), (counts, opened)
        assert m['cowboy_ws_connections_total{worker="0"}'] + m['cowboy_ws_connections_total{worker="1"}'] == opened
    finally:
        for client in clients:
            client.abort()
        assert server.stop() == 0


def test_cli_metrics_single_process():
    from serverproc import ServerProcess
    server = ServerProcess("--port", "0", "--metrics-port", "0")
    try:
        server.started()
        url = server.wait_for(r"metrics on (http://\S+/metrics)").group(1)
        client = Client.connect(server.port, "/")
        client.send_text("hi")
        assert client.recv_message() == ("text", b"hi")
        m = scrape_url(url)
        assert m["cowboy_ws_connections"] == 1
        assert m['cowboy_ws_messages_received_total{kind="text"}'] == 1
        client.abort()
    finally:
        assert server.stop() == 0


def test_cli_metrics_host_needs_port():
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-m", "cowboy_ws", "--metrics-host", "127.0.0.1"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "--metrics-host needs --metrics-port" in out.stderr
