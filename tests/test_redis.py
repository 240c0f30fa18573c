"""Pids, process groups and broadcast across workers and servers over a real Redis.

Each test starts its own ``redis-server`` on a free port of 127.0.0.1 (``tests/redis_server.py``;
CI installs the Debian package) and servers as subprocesses: ``--workers 2`` (one machine) or
two separate ``python -m cowboy_ws`` processes sharing the Redis (two machines).  The handler
is ``tests/cluster_app.py``.  Skipped, with the reason, only where ``redis-server`` or redis-py
is missing.  ``--node-ttl`` is short so that dead nodes expire within the test.  Every wait is
bounded.  Every cross-node test runs twice: with a bus secret (``--cluster-secret-file``: every
message signed and checked) and without one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

import cowboy_ws
from cowboy_ws import process, redis_backend
from cowboy_ws.bus_codec import REPLAY_SLACK, Bus, MsgpackCodec
from cowboy_ws.redis_backend import SECRET_ENV
from redis_server import RedisServer, available
from serverproc import ServerProcess, ask, connect_until, wait_until, who
from wsclient import Client



@pytest.fixture(autouse=True)
def _needs_redis():
    """Skip with the reason where redis-server or redis-py is missing; in CI (CI=true), fail instead."""
    why = available()
    if why is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the Redis tests: {why}")
        pytest.skip(why)

TTL = "1"  # --node-ttl in these tests (seconds)


@pytest.fixture
def redis_srv():
    server = RedisServer().start()
    yield server
    server.close()


SECRET = "a test secret of 32 bytes, random"


@pytest.fixture(params=["hmac", "no-secret"])
def bus_secret(request) -> str | None:
    """The bus secret of the test's nodes (None: an unauthenticated bus)."""
    return SECRET if request.param == "hmac" else None


@pytest.fixture
def cluster(redis_srv, bus_secret, tmp_path):
    """``cluster(*args, workers=0)``: a cowboy_ws subprocess on the test's Redis; clients in ``.clients``."""
    started: list[ServerProcess] = []
    clients: list[Client] = []
    secret_args: tuple[str, ...] = ()
    if bus_secret is not None:
        secret_file = tmp_path / "bus-secret"
        secret_file.write_text(bus_secret + "\n")
        secret_args = ("--cluster-secret-file", str(secret_file))

    def start(*args: str, workers: int = 0, handler: str = "cluster_app:Node") -> ServerProcess:
        extra = ("--workers", str(workers)) if workers else ()
        proc = ServerProcess(handler, "--port", "0", "--redis", redis_srv.url, "--node-ttl", TTL, *secret_args,
                             *extra, *args, env={SECRET_ENV: ""})
        started.append(proc)
        proc.started(workers=workers)
        proc.wait_for("codec msgpack, HMAC-SHA256" if bus_secret else "the cluster bus is unauthenticated")
        return proc

    def connect(port: int, path: str) -> Client:
        client = Client.connect(port, path)
        clients.append(client)
        return client

    start.clients = clients  # type: ignore[attr-defined]
    start.connect = connect  # type: ignore[attr-defined]
    start.secret = bus_secret  # type: ignore[attr-defined]
    yield start
    for client in clients:
        client.abort()
    for proc in started:
        proc.stop()
    for proc in started:  # no worker or server crashed on its own
        assert "Traceback" not in proc.output, proc.output


def count(client: Client) -> int:
    return int(ask(client, "count"))


def converge(clients: list[Client], expected: int, timeout: float = 10.0) -> None:
    """Wait until every client's node sees ``expected`` members in the group."""
    for client in clients:
        wait_until(lambda: count(client) == expected, timeout, f"{expected} members seen")


def texts(client: Client, n: int, timeout: float = 10.0) -> list[str]:
    deadline = time.monotonic() + timeout
    out = []
    for _ in range(n):
        kind, data = client.recv_message(max(0.0, deadline - time.monotonic()))
        assert kind == "text", (kind, data)
        out.append(data.decode())
    return out


# -- one machine: --workers 2 ----------------------------------------------------------------


def test_a_message_from_worker_0_reaches_websocket_info_on_worker_1(cluster):
    server = cluster(workers=2)
    group = f"/g/{uuid.uuid4().hex}"
    opened: list[Client] = cluster.clients
    by = connect_until(server.port, group, lambda b: len(b) == 2, opened=opened)
    a, b = by["0"][0][0], by["1"][0][0]
    total = sum(len(v) for v in by.values())
    converge([a, b], total)
    assert ask(a, "nodes") == "1" and ask(b, "nodes") == "1"

    # pid.send to every other member (Pids from members(), some on the other worker)
    assert ask(a, "send hello") == f"sent {total - 1}"
    for conns in by.values():
        for client, _info in conns:
            if client is not a:
                assert texts(client, 1) == ["hello"]
    # every type the bus carries arrives as it was sent (tuples stay tuples, the Pid is the sender's)
    assert ask(a, "carry typed") == f"sent {total - 1}"
    for worker, conns in by.items():
        for client, _info in conns:
            if client is not a:
                assert texts(client, 1) == [f"typed whole from {'local' if worker == '0' else 'remote'}"]
    # a Pid named by node + number is reached from the other worker
    a_pid = ask(a, "me")
    assert ask(b, f"sendto {a_pid} from worker 1") == "sent"
    assert texts(a, 1) == ["from worker 1"]
    # broadcast from worker 1: everyone once, the sender too
    b.send_text("say to all")
    for conns in by.values():
        for client, _info in conns:
            assert texts(client, 1) == ["to all"]
            assert ask(client, "who").startswith("worker=")  # nothing else was queued before it


def test_a_killed_worker_is_replaced_and_its_pids_leave_their_groups(cluster):
    server = cluster(workers=2)
    group = f"/g/{uuid.uuid4().hex}"
    by = connect_until(server.port, group, lambda b: len(b) == 2 and all(len(v) >= 2 for v in b.values()),
                       opened=cluster.clients)
    survivors = [c for c, _i in by["0"]]
    total = sum(len(v) for v in by.values())
    converge(survivors[:1], total)
    victim = int(by["1"][0][1]["pid"])
    os.kill(victim, signal.SIGKILL)
    server.wait_for(rf"worker 1 \(pid {victim}\) killed by SIGKILL")
    # after the heartbeat expired (node_ttl 1 s), worker 0 dropped the dead node's members
    wait_until(lambda: count(survivors[0]) == len(survivors), 10, "the dead worker's members to be dropped")
    server.wait_for(r"is gone \(no heartbeat within 1s\): \d+ membership")
    # the replacement serves, joins, and is reached by a broadcast from worker 0
    wait_until(lambda: server.count("listening on") >= 3, 10, "the new worker listening")
    again = connect_until(server.port, group, lambda b: "1" in b, opened=cluster.clients)
    newcomer = again["1"][0][0]
    assert again["1"][0][1]["pid"] != str(victim)
    joined = len(survivors) + sum(len(v) for v in again.values())
    converge([survivors[0], newcomer], joined)
    survivors[0].send_text("say welcome")
    assert texts(newcomer, 1) == ["welcome"]


# -- two machines: two servers sharing Redis -----------------------------------------------------


def test_chat_across_two_servers_delivers_everything_once_in_order(cluster):
    one, two = cluster(), cluster()
    room = f"/g/{uuid.uuid4().hex}"
    members = [cluster.connect(one.port, room) for _ in range(3)] + [cluster.connect(two.port, room)
                                                                     for _ in range(3)]
    converge([members[0], members[3]], 6)
    per_sender = 25
    senders = []

    def talk(i: int, client: Client) -> None:
        for seq in range(per_sender):
            client.send_text(f"say {i}:{seq}")

    for i, client in enumerate(members):  # everybody talks at once
        t = threading.Thread(target=talk, args=(i, client))
        senders.append(t)
        t.start()
    for t in senders:
        t.join(10)
    for client in members:
        got = texts(client, per_sender * len(members), timeout=20)
        by_sender: dict[str, list[int]] = {}
        for text in got:
            who_, seq = text.split(":")
            by_sender.setdefault(who_, []).append(int(seq))
        # every message of every member exactly once, each sender's in the order sent
        assert by_sender == {str(i): list(range(per_sender)) for i in range(len(members))}
        client.expect_silence(0.2)


def test_pid_send_between_servers_keeps_the_senders_order(cluster):
    one, two = cluster(), cluster()
    a = cluster.connect(one.port, "/")
    b = cluster.connect(two.port, "/")
    b_pid = ask(b, "me")
    for i in range(200):
        a.send_text(f"sendto {b_pid} {i}")
    assert texts(a, 200) == ["sent"] * 200
    assert texts(b, 200) == [str(i) for i in range(200)]


def test_broadcast_is_published_once_per_node(cluster, redis_srv):
    import redis
    one, two = cluster(), cluster()
    room = f"/g/{uuid.uuid4().hex}"
    speaker = cluster.connect(one.port, room)
    listeners = [cluster.connect(two.port, room) for _ in range(5)]
    converge([speaker, listeners[0]], 6)
    two_node = who(listeners[0])["node"]
    spy = redis.Redis.from_url(redis_srv.url).pubsub()
    # the spy reads the envelopes as a node would (it knows the secret, if there is one)
    reader = Bus("spy", MsgpackCodec(lambda _o: None, lambda node, number: (node, number)), cluster.secret and
                 cluster.secret.encode(), max_age=60)
    try:
        spy.psubscribe("cowboy_ws:node:*")
        wait_until(lambda: spy.get_message(timeout=0.1) is not None, 5, "the spy subscribed")
        speaker.send_text("say once")
        for client in listeners + [speaker]:
            assert texts(client, 1) == ["once"]
        seen = []
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            msg = spy.get_message(timeout=0.1)
            if msg is not None and msg["type"] == "pmessage":
                sender, item = reader.open(msg["channel"], msg["data"])
                seen.append((msg["channel"].decode(), item[:4]))
        # one publish for five members, the frame as it was flattened
        assert seen == [(f"cowboy_ws:node:{two_node}", ("b", room[3:], "text", b"once"))]
    finally:
        spy.close()


def test_redis_restart_no_crash_local_delivery_goes_on_remote_resumes(cluster, redis_srv):
    one, two = cluster(), cluster()
    room = f"/g/{uuid.uuid4().hex}"
    a1, a2 = cluster.connect(one.port, room), cluster.connect(one.port, room)
    b1 = cluster.connect(two.port, room)
    converge([a1, b1], 3)
    a1.send_text("say before")
    assert texts(a1, 1) == texts(a2, 1) == texts(b1, 1) == ["before"]

    redis_srv.stop()
    one.wait_for(r"redis \S+ unreachable")
    two.wait_for(r"redis \S+ unreachable")
    # local delivery goes on during the outage, on both servers
    a1.send_text("say during")
    assert texts(a1, 1) == texts(a2, 1) == ["during"]
    assert ask(a2, "who").startswith("worker=")
    b1_self = ask(b1, "me")
    assert ask(b1, f"sendto {b1_self} to myself") == "sent"
    assert texts(b1, 1) == ["to myself"]
    assert one.proc.poll() is None and two.proc.poll() is None

    redis_srv.start()  # same port, empty: like a Redis that restarted without persistence
    one.wait_for(r"redis \S+ reachable again after")
    two.wait_for(r"redis \S+ reachable again after")
    # remote delivery resumes: a connection of server one (in no group) probes b1's Pid until one
    # crosses (what was published during the outage may or may not arrive: at most once)
    prober = cluster.connect(one.port, "/")
    deadline = time.monotonic() + 15
    crossed = False
    n = 0
    while not crossed:
        assert time.monotonic() < deadline, "remote delivery did not resume"
        n += 1
        assert ask(prober, f"sendto {b1_self} probe{n}") == "sent"
        try:
            while not crossed:
                crossed = b1.recv_message(0.3)[1].startswith(b"probe")
        except TimeoutError:
            pass
    try:
        while True:  # later probes
            b1.recv_message(0.5)
    except TimeoutError:
        pass
    # the groups are whole again on both sides, and a broadcast crosses back
    converge([a1, b1], 3)
    b1.send_text("say after")
    assert texts(b1, 1) == texts(a1, 1) == texts(a2, 1) == ["after"]
    assert one.proc.poll() is None and two.proc.poll() is None


# -- the Python API -----------------------------------------------------------------------------


class Member:
    """An in-process handler that joins the group given as route state and reports what it gets."""

    got: list = []

    @staticmethod
    def init(req, state):
        return ("cowboy_websocket", req, state)

    @staticmethod
    def websocket_init(state):
        cowboy_ws.join(state)
        return ("ok", state)

    @staticmethod
    def websocket_handle(frame, state):
        return ("ok", state)

    @staticmethod
    def websocket_info(info, state):
        return ("reply", ("text", f"info {info!r}"), state)


def test_server_redis_url_in_process(cluster, redis_srv):
    other = cluster()
    group = uuid.uuid4().hex
    remote_client = cluster.connect(other.port, f"/g/{group}")
    server = cowboy_ws.Server([("/", Member, group)], port=0, redis_url=redis_srv.url, node_ttl=1.0,
                              cluster_secret=cluster.secret, shutdown_grace=0.5).start()
    try:
        local_client = cluster.connect(server.port, "/")
        wait_until(lambda: len(cowboy_ws.members(group)) == 2, 10, "both members seen in this process")
        assert process.current_backend().name == "redis"
        assert len(cowboy_ws.nodes()) == 1
        remote = [p for p in cowboy_ws.members(group) if not p.local]
        assert len(remote) == 1 and remote[0].alive
        assert group in cowboy_ws.which_groups()
        remote[0].send(("say", "from the test thread"))   # Pid ! Msg to another machine
        assert texts(remote_client, 1) == ["from the test thread"]
        assert cowboy_ws.broadcast(group, ("text", "both")) == 2
        assert texts(local_client, 1) == ["both"] and texts(remote_client, 1) == ["both"]
        with pytest.raises(TypeError, match="function cannot be sent to another node"):
            remote[0].send(("say", lambda: None))          # not carried by the bus: the sender hears it
        with pytest.raises(ValueError, match="too large for the cluster bus"):
            remote[0].send(("say", "x" * (1 << 20)))       # over MAX_MESSAGE_SIZE: the sender hears it
        with pytest.raises(ValueError, match="too large for the cluster bus"):
            cowboy_ws.broadcast(group, ("binary", b"x" * (1 << 20)))  # refused before anyone is sent it
        remote[0].send(("say", "still fine"))              # the refusals queued nothing, broke nothing
        assert texts(remote_client, 1) == ["still fine"]
        local_client.expect_silence(0.2)
    finally:
        server.shutdown()
    assert process.current_backend().name == "local"
    other.wait_for(r"node \S+ stopped")                    # its member left, then it said goodbye
    assert ask(remote_client, "count") == "1"


def test_a_node_that_dropped_changes_as_stale_asks_for_the_membership_and_converges(cluster, redis_srv):
    """A subscriber that falls more than node_ttl + REPLAY_SLACK s behind drops what it then reads as
    stale (replay protection): the exits among it are lost, so the node asks for the whole membership."""
    other = cluster()
    group = uuid.uuid4().hex
    leaving = [cluster.connect(other.port, f"/g/{group}") for _ in range(3)]
    staying = cluster.connect(other.port, f"/g/{group}")
    server = cowboy_ws.Server([("/", Member, group)], port=0, redis_url=redis_srv.url, node_ttl=float(TTL),
                              cluster_secret=cluster.secret, shutdown_grace=0.5).start()
    try:
        wait_until(lambda: len(cowboy_ws.members(group)) == 4, 10, "the other node's 4 members seen here")
        backend = process.current_backend()
        gate = threading.Event()
        handle = backend._handle

        def lagging(channel, data):  # the subscriber thread stalls on what it reads next
            gate.wait(30)
            handle(channel, data)

        backend._handle = lagging
        for client in leaving:
            client.abort()
        wait_until(lambda: ask(staying, "local") == "1", 10, "the other node's 3 exits")
        time.sleep(float(TTL) + REPLAY_SLACK + 2)  # what it published meanwhile is now too old to accept
        gate.set()
        wait_until(lambda: backend.rejected["stale"] > 0, 10, "the exits dropped as stale")
        wait_until(lambda: len(cowboy_ws.members(group)) == 1, 10, "the membership resynchronized")
        assert [pid.local for pid in cowboy_ws.members(group)] == [False]
        joining = cluster.connect(other.port, f"/g/{group}")       # and the changes after it apply as usual
        wait_until(lambda: len(cowboy_ws.members(group)) == 2, 10, "a later join seen")
        joining.abort()
        wait_until(lambda: len(cowboy_ws.members(group)) == 1, 10, "a later exit seen")
    finally:
        server.shutdown()


def test_membership_changes_go_in_batches_and_a_snapshot_in_parts(cluster, redis_srv, monkeypatch):
    """Joins that wait for the publisher go in one message per CHUNK_IDS members; a node's whole
    membership (the answer to a hello) in parts; the other node sees every member either way."""
    import redis
    monkeypatch.setattr(redis_backend, "CHUNK_IDS", 8)
    group = uuid.uuid4().hex
    server = cowboy_ws.Server([("/", Member, group)], port=0, redis_url=redis_srv.url, node_ttl=float(TTL),
                              cluster_secret=cluster.secret, shutdown_grace=0.5).start()
    spy = redis.Redis.from_url(redis_srv.url).pubsub()
    reader = Bus("spy", MsgpackCodec(lambda _o: None, lambda node, number: (node, number)), cluster.secret and
                 cluster.secret.encode(), max_age=60)
    try:
        wait_until(lambda: process.current_backend().name == "redis", 10, "the backend installed")
        backend = process.current_backend()
        gate = threading.Event()
        special = backend._special

        def held(what):  # the publisher waits while the joins pile up
            if what == "changes":
                gate.wait(10)
            return special(what)

        backend._special = held
        spy.psubscribe("cowboy_ws:*")
        wait_until(lambda: spy.get_message(timeout=0.1) is not None, 5, "the spy subscribed")
        clients = [cluster.connect(server.port, "/") for _ in range(20)]
        wait_until(lambda: len(process.local_members(group)) == 20, 10, "20 local members")
        ids = sorted(pid.id for pid in process.local_members(group))
        gate.set()

        def membership(tag: str, n: int) -> list[tuple]:
            seen: list[tuple] = []
            deadline = time.monotonic() + 10
            while len(seen) < n and time.monotonic() < deadline:
                msg = spy.get_message(timeout=0.1)
                if msg is not None and msg["type"] == "pmessage":
                    _sender, item = reader.open(msg["channel"], msg["data"])
                    if item[0] == tag:
                        seen.append(item)
            return seen

        batches = membership("c", 3)
        assert [len(item[1][0][2]) for item in batches] == [8, 8, 4]       # three messages, not 20
        assert all(item[1][0][:2] == ["j", group] and len(item[1]) == 1 for item in batches)
        assert sorted(i for item in batches for i in item[1][0][2]) == ids

        other = cluster()                          # its hello: this node answers with its membership
        parts = membership("s", 4)                 # the other node's hello, then our answer in 3 parts
        answer = [item for item in parts if item[1] is False]
        assert [(item[2], item[3]) for item in answer] == [(0, False), (1, False), (2, True)]
        assert sorted(i for item in answer for run in item[4] for i in run[1]) == ids
        watcher = cluster.connect(other.port, f"/g/{group}")
        converge([watcher], 21)
        for client in clients[:5]:
            client.abort()
        converge([watcher], 16)
    finally:
        spy.close()
        server.shutdown()


# -- Redis as operators run it: an ACL user, passwords, TLS ------------------------------------------

DOCS = Path(__file__).resolve().parents[1] / "docs" / "deployment.md"


def documented_acl(password: str) -> str:
    """The ACL line of docs/deployment.md ("Securing the bus"), with ``password``, as a ``user`` directive."""
    lines = [line for line in DOCS.read_text().splitlines() if line.startswith("user cowboy_ws on ")]
    assert len(lines) == 1, lines
    assert ">CHANGE-ME" in lines[0]
    return lines[0].removeprefix("user ").replace(">CHANGE-ME", f">{password}")


@pytest.fixture
def servers():
    """``servers(url, *args)``: cluster_app nodes (secret in the environment), stopped at teardown."""
    started: list[ServerProcess] = []
    clients: list[Client] = []

    def start(url: str, *args: str) -> ServerProcess:
        proc = ServerProcess("cluster_app:Node", "--port", "0", "--redis", url, "--node-ttl", TTL, *args,
                             env={SECRET_ENV: SECRET})
        started.append(proc)
        return proc.started()

    def connect(port: int, path: str) -> Client:
        client = Client.connect(port, path)
        clients.append(client)
        return client

    start.connect = connect  # type: ignore[attr-defined]
    yield start
    for client in clients:
        client.abort()
    for proc in started:
        proc.stop()
    for proc in started:
        assert "Traceback" not in proc.output and "NoPermission" not in proc.output, proc.output


def two_nodes_talk(servers, url: str, *args: str) -> tuple[ServerProcess, ServerProcess, Client, Client]:
    """Two nodes on ``url``: members see each other, broadcast and pid.send cross both ways."""
    one, two = servers(url, *args), servers(url, *args)
    room = f"/g/{uuid.uuid4().hex}"
    a, b = servers.connect(one.port, room), servers.connect(two.port, room)
    converge([a, b], 2)
    a.send_text("say from one")
    assert texts(a, 1) == texts(b, 1) == ["from one"]
    b.send_text("say from two")
    assert texts(a, 1) == texts(b, 1) == ["from two"]
    assert ask(b, f"sendto {ask(a, 'me')} to a") == "sent"
    assert texts(a, 1) == ["to a"]
    return one, two, a, b


def start_error(url: str, *args: str) -> str:
    """``python -m cowboy_ws --redis url ...`` that must refuse to start: its stderr (exit status 2)."""
    out = subprocess.run([sys.executable, "-m", "cowboy_ws", "--port", "0", "--redis", url, *args],
                         capture_output=True, text=True, timeout=30, env={**os.environ, SECRET_ENV: ""})
    assert out.returncode == 2, (out.returncode, out.stderr)
    return out.stderr


def test_nodes_run_on_the_documented_acl_user_and_it_can_do_nothing_else(servers):
    import redis
    with RedisServer(password="admin-pw", users=[documented_acl("node-pw")]) as srv:
        url = srv.url_for("cowboy_ws", "node-pw")
        one, two, a, _b = two_nodes_talk(servers, url)
        two.proc.kill()                                          # heartbeats: a dead node expires (MGET)
        one.wait_for(r"is gone \(no heartbeat within 1s\)")
        assert ask(a, "count") == "1"
        node = redis.Redis.from_url(url)
        for forbidden in (lambda: node.get("other"), lambda: node.set("cowboy_ws:other", 1),
                          lambda: node.publish("another-app", b"x"), lambda: node.pubsub_channels("*"),
                          lambda: node.flushall(), lambda: node.config_get("*"), lambda: node.keys("*")):
            with pytest.raises(redis.exceptions.NoPermissionError):
                forbidden()
        spy = node.pubsub()
        with pytest.raises(redis.exceptions.NoPermissionError):
            spy.subscribe("another-app")
            spy.get_message(timeout=1)


def test_a_wrong_password_is_a_clear_start_up_error():
    with RedisServer(password="admin-pw", users=[documented_acl("node-pw")]) as srv:
        for url in (srv.url_for("cowboy_ws", "wrong"), srv.url_for("nobody", "node-pw"),
                    srv.url.replace(":admin-pw@", "")):
            for extra in ((), ("--workers", "2")):
                assert "--redis: redis 127.0.0.1:" in start_error(url, *extra)
        assert "authentication failed: invalid username-password pair" in start_error(srv.url_for("cowboy_ws", "x"))
        assert "authentication failed" in start_error(srv.url.replace(":admin-pw@", ""))
        from cowboy_ws.redis_backend import RedisConfigError
        server = cowboy_ws.Server([("/", Member, "g")], port=0, redis_url=srv.url_for("cowboy_ws", "wrong"))
        with pytest.raises(RedisConfigError, match="authentication failed"):
            server.serve_forever()                            # from Python: raised before serving
        assert process.current_backend().name == "local"


@pytest.fixture
def pki(tmp_path):
    """A test CA (trustme), the Redis server's certificate, a client certificate, and an unrelated CA."""
    trustme = pytest.importorskip("trustme")
    ca, other = trustme.CA(), trustme.CA()
    paths = {name: str(tmp_path / f"{name}.pem") for name in ("ca", "other", "cert", "key", "client")}
    ca.cert_pem.write_to_path(paths["ca"])
    other.cert_pem.write_to_path(paths["other"])
    server_cert = ca.issue_cert("127.0.0.1", "localhost")
    server_cert.cert_chain_pems[0].write_to_path(paths["cert"])
    server_cert.private_key_pem.write_to_path(paths["key"])
    ca.issue_cert("cowboy-ws-node").private_key_and_cert_chain_pem.write_to_path(paths["client"])
    return paths


def test_nodes_talk_over_tls_and_an_untrusted_certificate_stops_the_start(pki, servers):
    with RedisServer(tls=(pki["cert"], pki["key"], pki["ca"])) as srv:
        assert srv.url.startswith("rediss://")
        two_nodes_talk(servers, srv.url, "--redis-ssl-ca", pki["ca"])
        assert "TLS certificate not trusted" in start_error(srv.url, "--redis-ssl-ca", pki["other"])
        assert "TLS certificate not trusted" in start_error(srv.url)            # the system CAs: not ours
        assert "need a rediss:// URL" in start_error(srv.url.replace("rediss", "redis"), "--redis-ssl-ca",
                                                     pki["ca"])


def test_redis_requiring_client_certificates(pki, servers):
    """--redis-ssl-cert reaches redis-py.  (Without it, TLS 1.3 reports the refusal after the handshake, so
    the node may see a closed connection before the alert: an outage, not always a start-up error.)"""
    with RedisServer(tls=(pki["cert"], pki["key"], pki["ca"]), tls_clients=True) as srv:
        two_nodes_talk(servers, srv.url, "--redis-ssl-ca", pki["ca"], "--redis-ssl-cert", pki["client"])
