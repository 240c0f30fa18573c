"""``--workers N``: N processes on one port under a supervisor; Pids that travel (no Redis needed here).

The servers run as subprocesses (``python -m cowboy_ws cluster_app:Node --workers 2``) on
127.0.0.1 with ``--port 0``; the supervisor's log line gives the port.  With SO_REUSEPORT the
kernel picks the worker of each connection: connections are opened until both workers are
covered (bounded), each asking its server ``who``.  Every wait is bounded.
"""

from __future__ import annotations

import os
import pickle
import signal
import sys
import textwrap
import threading
import time

import pytest

import cowboy_ws
from cowboy_ws import process, workers
from cowboy_ws.loop import Loop
from serverproc import ServerProcess, ask, connect_until, wait_until, who
from wsclient import Client

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="workers need os.fork")


@pytest.fixture
def procs():
    started: list[ServerProcess] = []
    clients: list[Client] = []

    def start(*args: str, script: str | None = None, workers: int = 2) -> ServerProcess:
        proc = ServerProcess(*args, script=script)
        started.append(proc)
        return proc.started(workers=workers)

    start.clients = clients  # type: ignore[attr-defined]
    yield start
    for client in clients:
        client.abort()
    for proc in started:
        proc.stop()


def both(by_worker: dict) -> bool:
    return len(by_worker) >= 2


# -- the supervisor ----------------------------------------------------------------------


def test_two_workers_share_the_port(procs):
    server = procs("cluster_app:Node", "--workers", "2", "--port", "0")
    by_worker = connect_until(server.port, "/", both, opened=procs.clients)
    assert set(by_worker) == {"0", "1"}
    pids = {info["pid"] for conns in by_worker.values() for _c, info in conns}
    nodes = {info["node"] for conns in by_worker.values() for _c, info in conns}
    assert len(pids) == 2 and len(nodes) == 2          # two processes, two nodes
    assert str(server.proc.pid) not in pids             # the supervisor serves nothing itself
    for conns in by_worker.values():                    # each worker echoes commands on its own loop
        client, _info = conns[0]
        assert ask(client, "local") == "0"
    assert "without Redis" in server.output              # groups stay per worker: said once


def test_killed_worker_is_restarted_and_the_other_keeps_serving(procs):
    server = procs("cluster_app:Node", "--workers", "2", "--port", "0")
    by_worker = connect_until(server.port, "/", both, opened=procs.clients)
    victim = int(by_worker["1"][0][1]["pid"])
    survivor_client = by_worker["0"][0][0]
    os.kill(victim, signal.SIGKILL)
    server.wait_for(rf"worker 1 \(pid {victim}\) killed by SIGKILL after [\d.]+s: restarting it in")
    assert ask(survivor_client, "who").startswith("worker=0")  # untouched
    # the new worker 1 answers on the same port
    wait_until(lambda: server.count("listening on") >= 3, 10, "the new worker listening")
    again = connect_until(server.port, "/", lambda b: "1" in b, opened=procs.clients)
    assert int(again["1"][0][1]["pid"]) != victim
    for client in procs.clients:
        client.abort()
    assert server.stop() == 0


def test_sigterm_to_the_supervisor_drains_every_worker(procs):
    server = procs("cluster_app:Node", "--workers", "2", "--port", "0")
    by_worker = connect_until(server.port, "/", both, opened=procs.clients)
    clients = [conns[0][0] for conns in by_worker.values()]
    server.signal(signal.SIGTERM)
    for client in clients:  # each worker closes its connections with 1001 (RFC 6455 §7.4.1)
        assert client.wait_close() == (1001, b"")  # the client echoes it
        client.wait_eof()
    assert server.wait(timeout=15) == 0
    assert server.count(r"exited with status 0") == 2
    assert "all workers stopped" in server.output


def test_new_connections_are_refused_once_draining(procs):
    server = procs("cluster_app:Node", "--workers", "2", "--port", "0")
    by_worker = connect_until(server.port, "/", both, opened=procs.clients)
    server.signal(signal.SIGTERM)
    for conns in by_worker.values():
        assert conns[0][0].wait_close() == (1001, b"")
    # the workers stopped listening: nothing new is accepted while the old ones close
    with pytest.raises(OSError):
        Client.connect(server.port, "/", timeout=2.0)
    for client in procs.clients:
        client.abort()
    assert server.wait(timeout=15) == 0


CRASHING = textwrap.dedent("""
    import logging, os, sys
    from cowboy_ws.workers import Supervisor
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    def target(index):
        os._exit(3)                      # every start fails at once
    sys.exit(Supervisor(1, target, backoff_min=0.1, backoff_max=0.8).run())
""")


def test_a_crashing_worker_is_restarted_with_backoff(procs):
    server = ServerProcess(script=CRASHING)
    try:
        rx = r"worker 0 \(pid \d+\) exited with status 3 after [\d.]+s: restarting it in ([\d.]+)s"
        server.wait_for(rx)
        wait_until(lambda: server.count(rx) >= 5, timeout=10, what="five restarts")
        import re
        delays = [float(m.group(1)) for m in re.finditer(rx, server.output)][:5]
        assert delays == [0.1, 0.2, 0.4, 0.8, 0.8]  # doubling from backoff_min, capped at backoff_max
        server.signal(signal.SIGTERM)
        assert server.wait(timeout=10) == 0
    finally:
        server.stop()


def test_workers_stop_when_the_supervisor_dies(procs):
    server = procs("cluster_app:Node", "--workers", "2", "--port", "0")
    by_worker = connect_until(server.port, "/", both, opened=procs.clients)
    worker_pids = [int(conns[0][1]["pid"]) for conns in by_worker.values()]
    for client in procs.clients:
        client.abort()
    os.kill(server.proc.pid, signal.SIGKILL)
    server.proc.wait(timeout=5)

    def gone(pid: int) -> bool:
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] == "Z"
        except FileNotFoundError:
            return True

    wait_until(lambda: all(gone(p) for p in worker_pids), timeout=10, what="orphaned workers to exit")


INHERITED = textwrap.dedent("""
    import logging, sys
    sys.path.insert(0, "tests")
    import cluster_app
    from cowboy_ws import workers
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sys.exit(workers.serve([("_", cluster_app.Node, None)], workers=2, port=0, reuse_port=False,
                           shutdown_grace=1.0))
""")


def test_inherited_socket_mode(procs):
    server = procs(script=INHERITED)
    assert "one inherited listening socket" in server.output
    client = Client.connect(server.port, "/")
    procs.clients.append(client)
    assert who(client)["worker"] in ("0", "1")
    server.signal(signal.SIGTERM)
    assert client.wait_close() == (1001, b"")
    client.abort()
    assert server.wait(timeout=15) == 0


def test_cli_rejects_bad_worker_counts(procs):
    import subprocess
    for bad in ("0", "-1", "x"):
        out = subprocess.run([sys.executable, "-m", "cowboy_ws", "--workers", bad], capture_output=True, text=True,
                             timeout=20)
        assert out.returncode == 2 and "workers must be a positive integer" in out.stderr
    for option in (("--node-ttl", "1"), ("--cluster-secret", "s"), ("--cluster-secret-file", "f"),
                   ("--cluster-codec", "pickle"), ("--redis-ssl-ca", "ca.pem")):
        out = subprocess.run([sys.executable, "-m", "cowboy_ws", *option], capture_output=True, text=True,
                             timeout=20)
        assert out.returncode == 2 and f"{option[0]} needs --redis" in out.stderr, out.stderr
    out = subprocess.run([sys.executable, "-m", "cowboy_ws", "--redis", "redis://127.0.0.1:1/0", "--cluster-secret",
                          "a", "--cluster-secret-file", "f"], capture_output=True, text=True, timeout=20)
    assert out.returncode == 2 and "not allowed with argument" in out.stderr
    out = subprocess.run([sys.executable, "-m", "cowboy_ws", "--redis", "redis://127.0.0.1:1/0",
                          "--cluster-secret-file", "/nonexistent/secret"], capture_output=True, text=True, timeout=20)
    assert out.returncode == 2 and "--cluster-secret-file: [Errno 2]" in out.stderr


def test_worker_id_outside_workers():
    assert workers.worker_id() is None


# -- Pids that travel (no other node: the local backend) -----------------------------------


class _Conn:
    def __init__(self) -> None:
        self.got: list = []

    def deliver(self, msg):
        self.got.append(msg)


def test_a_pid_pickles_to_its_node_and_number():
    loop = Loop()
    try:
        conn = _Conn()
        pid = process.Pid(conn, loop)
        assert pid.node == cowboy_ws.node() and pid.local
        back = pickle.loads(pickle.dumps(pid))
        assert back is pid                                    # the live Pid again, on its own node
        assert pickle.loads(pickle.dumps([pid, {"to": pid}]))[1]["to"] is pid
        pid._exit()
        del pid, back
        import gc
        gc.collect()
        dead = pickle.loads(pickle.dumps(process.Pid._named(cowboy_ws.node(), 10**9)))
        assert not dead.alive and dead.local
        dead.send("dropped")                                  # like Pid ! Msg to a dead process
    finally:
        loop.close()


def test_a_pid_of_another_node():
    remote = pickle.loads(pickle.dumps(process.Pid._named("elsewhere:1:ab", 7)))
    assert not remote.local and remote.node == "elsewhere:1:ab" and remote.id == 7
    assert remote == process.Pid._named("elsewhere:1:ab", 7)   # equal by node and number
    assert hash(remote) == hash(process.Pid._named("elsewhere:1:ab", 7))
    assert remote != process.Pid._named("elsewhere:1:ab", 8)
    assert remote != process.Pid._named("other:1:ab", 7)
    assert "elsewhere:1:ab.7" in repr(remote)
    assert not remote.alive                                   # no backend knows that node
    remote.send("nowhere")                                    # dropped silently (no backend)
    with pytest.raises(ValueError, match="another node"):
        cowboy_ws.join("g", remote)
    with pytest.raises(ValueError, match="another node"):
        cowboy_ws.leave("g", remote)
    assert process.current_backend().name == "local" and cowboy_ws.nodes() == []


def test_pids_from_other_threads_compare_and_hash_like_themselves():
    loop = Loop()
    try:
        pid = process.Pid(_Conn(), loop)
        found = []
        t = threading.Thread(target=lambda: found.append(pickle.loads(pickle.dumps(pid))))
        t.start()
        t.join(5)
        assert found == [pid] and found[0] is pid and {pid: 1}[found[0]] == 1
        pid._exit()
    finally:
        loop.close()


def test_only_one_non_local_backend_at_a_time():
    from cowboy_ws.messaging import Backend

    class Fake(Backend):
        name = "fake"

    first, second = Fake(), Fake()
    assert process.use_backend(first).name == "local"
    try:
        with pytest.raises(RuntimeError, match="already installed"):
            process.use_backend(second)
        assert process.use_backend(first) is first            # the same one again is fine
    finally:
        process.use_backend(None)
    assert process.current_backend().name == "local"


def test_pid_send_after_to_a_remote_pid_fires_through_the_backend():
    from cowboy_ws.messaging import Backend

    sent = []

    class Recording(Backend):
        name = "recording"

        def send(self, pid, msg):
            sent.append((pid, msg))

    loop = Loop()
    remote = process.Pid._named("elsewhere:2:cd", 3)
    process.use_backend(Recording())
    try:
        def arm():
            process.send_after(10, remote, "tick")
            loop.call_later(0.2, loop.stop)

        loop.call_soon(arm)
        t = threading.Thread(target=loop.run)
        t.start()
        t.join(5)
        assert sent == [(remote, "tick")]
    finally:
        process.use_backend(None)
        loop.close()


def test_fork_makes_a_new_node():
    r, w = os.pipe()
    parent_node = cowboy_ws.node()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child
        try:
            os.write(w, cowboy_ws.node().encode())
        finally:
            os._exit(0)
    os.close(w)
    try:
        with os.fdopen(r, "rb") as f:
            child_node = f.read().decode()
    finally:
        os.waitpid(child, 0)
    assert child_node and child_node != parent_node
    assert cowboy_ws.node() == parent_node
    time.sleep(0)


def test_ctrl_c_to_the_process_group_stops_gracefully(procs):
    server = procs("cluster_app:Node", "--workers", "2", "--port", "0")
    by_worker = connect_until(server.port, "/", both, opened=procs.clients)
    os.killpg(server.proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: every process of the group
    for conns in by_worker.values():           # workers ignore it; the supervisor relays one SIGTERM
        assert conns[0][0].wait_close() == (1001, b"")
    for client in procs.clients:
        client.abort()
    assert server.wait(timeout=15) == 0
    assert "SIGINT received: stopping 2 worker(s) gracefully" in server.output
    assert "received again" not in server.output


def test_workers_serve_tls(procs, tmp_path):
    import ssl

    from conftest import make_certificate
    cert, key = make_certificate(tmp_path)
    server = procs("cluster_app:Node", "--workers", "2", "--port", "0", "--certfile", str(cert),
                   "--keyfile", str(key))
    assert f"worker(s) on wss://127.0.0.1:{server.port}" in server.output
    context = ssl.create_default_context(cafile=str(cert))
    seen = set()
    for _ in range(40):
        client = Client.connect(server.port, "/", ssl_context=context)
        procs.clients.append(client)
        seen.add(who(client)["worker"])
        if len(seen) == 2:
            break
    assert seen == {"0", "1"}


def test_a_port_in_use_is_refused_even_with_reuse_port(procs):
    import subprocess
    first = procs("cluster_app:Node", "--workers", "1", "--port", "0", workers=1)
    out = subprocess.run([sys.executable, "-m", "cowboy_ws", "--workers", "2", "--port", str(first.port)],
                         capture_output=True, text=True, timeout=20)
    assert out.returncode == 1 and f"cannot listen on 127.0.0.1:{first.port}" in out.stderr
