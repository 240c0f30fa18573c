"""The cluster bus trusts no one: the codec, the authenticated envelope, and a node fed hostile input.

Unit and property tests of :mod:`cowboy_ws.bus_codec` and of :class:`RedisBackend`'s receiving
side (no Redis needed: messages are handed to the backend as its subscriber thread would, and
the process side is a recording :class:`~cowboy_ws.messaging.LocalNode`).  The attack from a
plain Redis client against two real nodes is in ``test_bus_attack.py``.
"""

from __future__ import annotations

import logging
import math
import os
import pickle
import struct
from collections import OrderedDict
from typing import Any, Hashable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cowboy_ws
from cowboy_ws import bus_codec, process
from cowboy_ws.bus_codec import MAX_MESSAGE_SIZE, Bus, MsgpackCodec, PickleCodec, Rejected
from cowboy_ws.loop import Loop

from cowboy_ws.redis_backend import RedisBackend  # imports redis-py only when one is made


def needs_redis_py() -> None:
    """Skip (fail in CI) a test that makes a RedisBackend where redis-py is missing."""
    try:
        import redis  # noqa: F401  (only whether it is there)
    except ImportError:
        if os.environ.get("CI") == "true":
            pytest.fail("CI must run the RedisBackend tests: redis-py is missing")
        pytest.skip("redis-py is not installed (pip install 'cowboy-ws[redis]')")

SECRET = b"0123456789abcdef0123456789abcdef"
CHANNEL = "cowboy_ws:node:me"
EVERYONE = "cowboy_ws:all"


def codec() -> MsgpackCodec:
    return MsgpackCodec(process.pid_ref, process.pid_from_ref)


class Clock:
    """A settable wall clock for the envelope's timestamp checks."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def same(a: Any, b: Any) -> bool:
    """Equal *and* of the same types all the way down (1 == 1.0 == True and (1,) != [1] matter here)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        if len(a) != len(b):
            return False
        bk = list(b)
        return all(same(ka, kb) and same(a[ka], b[kb]) for ka, kb in zip(a, bk))
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return a == b


# -- the codec ----------------------------------------------------------------------------------

scalars = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text() | st.binary())
keys = st.recursive(st.none() | st.booleans() | st.integers() | st.text() | st.binary(),
                    lambda inner: st.lists(inner, max_size=3).map(tuple), max_leaves=6)
messages = st.recursive(scalars, lambda inner: (st.lists(inner, max_size=4) | st.lists(inner, max_size=4).map(tuple)
                                                | st.dictionaries(keys, inner, max_size=4)), max_leaves=25)


@settings(max_examples=300, deadline=None)
@given(messages)
def test_the_codec_round_trips_what_handlers_send(msg):
    c = codec()
    assert same(c.decode(c.encode(msg)), msg)


def test_tuples_lists_pids_and_big_ints_keep_their_types():
    c = codec()
    loop = Loop()
    try:
        class Conn:
            def deliver(self, msg):
                pass

        live = process.Pid(Conn(), loop)
        remote = process.Pid._named("elsewhere:1:ab", 42)
        msg = ("m", [(), [()], ("a", ["b", ("c",)])], {(1, "k"): live, "r": remote}, 2**64, -2**200, b"", "")
        back = c.decode(c.encode(msg))
        assert same(back[:2], msg[:2]) and back[3:] == msg[3:] and type(back[3]) is int
        assert back[2][(1, "k")] is live                      # the live local Pid again
        assert back[2]["r"] == remote and not back[2]["r"].local
        live._exit()
    finally:
        loop.close()


class Text(str):
    pass


@pytest.mark.parametrize("value, name", [
    ({1, 2}, "builtins.set"), (frozenset(), "builtins.frozenset"), (object(), "builtins.object"),
    (lambda: 0, "builtins.function"), (OrderedDict(a=1), "collections.OrderedDict"), (Text("x"), "Text"),
    (1j, "builtins.complex"), (ValueError("x"), "builtins.ValueError"),
])
def test_anything_else_is_refused_with_a_type_error_naming_the_type(value, name):
    with pytest.raises(TypeError, match=rf"{name} cannot be sent to another node"):
        codec().encode(("m", 1, ["ok", {"deep": value}]))


def test_bytearray_and_memoryview_travel_as_bytes():
    c = codec()
    assert same(c.decode(c.encode([bytearray(b"ab"), memoryview(b"cd")])), [b"ab", b"cd"])


def test_nesting_past_the_packers_limit_is_a_value_error_not_a_crash():
    deep: Any = []
    for _ in range(2000):
        deep = [deep]
    with pytest.raises(ValueError, match="cannot be sent"):
        codec().encode(deep)


def test_decoding_never_runs_code_and_builds_only_bus_types(tmp_path):
    target = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(target), "w"))

    blob = pickle.dumps(Payload())
    with pytest.raises(Exception):
        codec().decode(blob)
    assert not target.exists()


ALLOWED = (type(None), bool, int, float, str, bytes, process.Pid, bus_codec._Marker)


def only_bus_types(obj: Any, depth: int = 0) -> bool:
    if isinstance(obj, (list, tuple)):
        return all(only_bus_types(x, depth + 1) for x in obj)
    if isinstance(obj, dict):
        return all(only_bus_types(k, depth + 1) and only_bus_types(v, depth + 1) for k, v in obj.items())
    return type(obj) in ALLOWED


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200) | st.builds(lambda head, tail: head + tail,
                                            st.sampled_from([b"\x93", b"\xc7\x00\x01", b"\xd4\x02", b"\xc7\x09\x02",
                                                             b"\xc7\x02\x03", b"\x81", b"\xdd\xff\xff\xff\xff"]),
                                            st.binary(max_size=60)))
def test_fuzz_the_decoder_it_only_raises_or_builds_bus_types(data):
    try:
        obj = codec().decode(data)
    except Exception:
        return
    assert only_bus_types(obj)


def test_deep_nesting_from_the_wire_is_refused():
    for data in (b"\x91" * 100_000 + b"\xc0",                           # arrays in arrays
                 (b"\x91\xc7\x00\x01") * 50_000 + b"\xc0"):               # tuples in tuples
        with pytest.raises(Exception):
            codec().decode(data)


def test_pickle_is_an_explicit_codec():
    c = bus_codec.make_codec("pickle", process.pid_ref, process.pid_from_ref)
    assert isinstance(c, PickleCodec) and c.decode(c.encode({1, 2})) == {1, 2}
    assert "can run arbitrary code" in PickleCodec.WARNING
    with pytest.raises(TypeError):
        c.encode(lambda: 0)
    with pytest.raises(ValueError, match="unknown cluster codec 'json'"):
        bus_codec.make_codec("json", process.pid_ref, process.pid_from_ref)


# -- the envelope ---------------------------------------------------------------------------------


def bus(node: str = "peer:1:aa", secret: bytes | None = SECRET, clock: Clock | None = None,
        codec_: bus_codec.Codec | None = None) -> Bus:
    return Bus(node, codec_ or codec(), secret, max_age=15.0, clock=clock or Clock())


def test_a_sealed_message_opens_on_its_channel_with_the_secret():
    clock = Clock()
    sender, receiver = bus(clock=clock), bus("me:1:bb", clock=clock)
    body = codec().encode(("m", 3, ("say", "hi")))
    data = sender.seal(CHANNEL, body)
    assert len(data) == len(body) + sender.overhead
    assert receiver.open(CHANNEL.encode(), data) == ("peer:1:aa", ("m", 3, ("say", "hi")))


def reason(receiver: Bus, channel: str, data: bytes, **kw: Any) -> str:
    with pytest.raises(Rejected) as info:
        receiver.open(channel, data, **kw)
    return info.value.reason


def test_what_fails_the_checks_is_rejected_with_its_reason():
    clock = Clock()
    sender, receiver = bus(clock=clock), bus("me:1:bb", clock=clock)
    body = codec().encode(("j", "room", 7))
    good = sender.seal(EVERYONE, body)
    assert reason(bus("me:1:bb", secret=b"another secret of enough bytes!", clock=clock), EVERYONE, good) == "bad_mac"
    assert reason(receiver, CHANNEL, good) == "bad_mac"                        # moved to another channel
    unsigned = bus(secret=None, clock=clock).seal(EVERYONE, body)
    assert reason(receiver, EVERYONE, unsigned) == "unsigned"
    forged = unsigned[:4] + b"\x01" + unsigned[5:] + os.urandom(32)              # claims a MAC, a made-up one
    assert reason(receiver, EVERYONE, forged) == "bad_mac"
    for i in range(len(good)):                                                  # any byte changed
        flipped = good[:i] + bytes([good[i] ^ 0x01]) + good[i + 1:]
        assert reason(receiver, EVERYONE, flipped) in ("bad_mac", "malformed", "unsigned")
    for cut in range(len(good)):                                                # truncated anywhere
        assert reason(receiver, EVERYONE, good[:cut]) in ("bad_mac", "malformed", "unsigned")
    assert reason(receiver, EVERYONE, b"\x80\x04garbage") == "malformed"
    assert reason(receiver, EVERYONE, b"x" * (MAX_MESSAGE_SIZE + 1)) == "oversized"
    pickled = bus(clock=clock, codec_=PickleCodec()).seal(EVERYONE, pickle.dumps(("j", "room", 7)))
    assert reason(receiver, EVERYONE, pickled) == "codec"                       # signed, but not our codec
    assert receiver.open(EVERYONE, good)[1] == ("j", "room", 7)
    assert reason(receiver, EVERYONE, good) == "replay"                         # the same message again


def test_old_and_future_messages_are_stale_and_sequences_only_rise():
    clock = Clock()
    sender, receiver = bus(clock=clock), bus("me:1:bb", clock=clock)
    body = codec().encode(("bye",))
    old = sender.seal(EVERYONE, body)
    clock.now += 15.5                                                           # past max_age
    assert reason(receiver, EVERYONE, old) == "stale"
    ahead = Clock(clock.now + 16)
    assert reason(receiver, EVERYONE, bus(clock=ahead).seal(EVERYONE, body)) == "stale"
    first, second = sender.seal(EVERYONE, body), sender.seal(EVERYONE, body)
    receiver.open(EVERYONE, second)
    assert reason(receiver, EVERYONE, first) == "replay"                        # older than one accepted
    assert receiver.open(EVERYONE, sender.seal(EVERYONE, body))[0] == "peer:1:aa"
    heartbeat = sender.seal("cowboy_ws:hb:peer:1:aa", codec().encode("hb"))   # values read again and again
    for _ in range(3):
        assert receiver.open("cowboy_ws:hb:peer:1:aa", heartbeat, replay_check=False)[1] == "hb"


def test_without_a_secret_nothing_is_signed_and_a_mac_is_not_required():
    sender, receiver = bus(secret=None), bus("me:1:bb", secret=None)
    data = sender.seal(EVERYONE, codec().encode(("x", 1)))
    assert sender.overhead == len(data) - len(codec().encode(("x", 1)))
    assert receiver.open(EVERYONE, data) == ("peer:1:aa", ("x", 1))


def test_the_size_limit_is_checked_in_the_sender():
    sender = bus()
    sender.check_size(b"x" * (MAX_MESSAGE_SIZE - sender.overhead))
    with pytest.raises(ValueError, match=rf"{MAX_MESSAGE_SIZE + 1} bytes encoded, the limit is {MAX_MESSAGE_SIZE}"):
        sender.check_size(b"x" * (MAX_MESSAGE_SIZE - sender.overhead + 1))


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=300), st.booleans())
def test_fuzz_open_random_bytes_are_only_ever_rejected(data, with_secret):
    receiver = bus("me:1:bb", secret=SECRET if with_secret else None)
    try:
        receiver.open(EVERYONE, data)
    except Rejected:
        return
    assert not with_secret, "random bytes passed the MAC"


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=120))
def test_fuzz_open_a_valid_unsigned_header_around_random_bodies(body):
    """Without a secret the envelope lets anything reach the decoder: it must only reject or build bus types."""
    clock = Clock()
    data = bus(secret=None, clock=clock).seal(EVERYONE, body)
    try:
        _sender, item = bus("me:1:bb", secret=None, clock=clock).open(EVERYONE, data)
    except Rejected as exc:
        assert exc.reason == "malformed"
        return
    assert only_bus_types(item)


# -- a node fed hostile input (RedisBackend's receiving side, no Redis) ----------------------------


class Recording:
    """A LocalNode that records what the backend asks of the process."""

    def __init__(self) -> None:
        self.delivered: list[tuple[int, Any]] = []
        self.broadcasts: list[tuple] = []

    def node_id(self) -> str:
        return "me:1:bb"

    def deliver(self, pid_id: int, msg: Any) -> bool:
        self.delivered.append((pid_id, msg))
        return True

    def deliver_broadcast(self, group: Hashable, kind: str, data: bytes, exclude_id: int | None) -> int:
        self.broadcasts.append((group, kind, data, exclude_id))
        return 1

    def membership(self) -> dict:
        return {}

    def pid(self, node: str, pid_id: int) -> Any:
        return process.Pid._named(node, pid_id)

    def pid_ref(self, obj: Any) -> Any:
        return process.pid_ref(obj)


def node(secret: bytes | None = SECRET) -> tuple[RedisBackend, Recording, Bus]:
    """A backend attached to a recording LocalNode (never started), and a peer's Bus to sign with."""
    needs_redis_py()
    backend = RedisBackend("redis://127.0.0.1:1/0", secret=secret, node_ttl=10.0)
    local = Recording()
    backend.attach(local)
    peer = Bus("peer:1:aa", codec(), secret, max_age=15.0)
    return backend, local, peer


def test_a_node_applies_what_its_peers_signed():
    backend, local, peer = node()
    backend._handle(CHANNEL.encode(), peer.seal(CHANNEL, codec().encode(("m", 5, ("say", "hi")))))
    backend._handle(EVERYONE.encode(), peer.seal(EVERYONE, codec().encode(("c", [["j", "room", [9]]]))))
    backend._handle(CHANNEL.encode(), peer.seal(CHANNEL, codec().encode(("b", "room", "text", b"hey", None, None))))
    assert local.delivered == [(5, ("say", "hi"))]
    assert local.broadcasts == [("room", "text", b"hey", None)]
    assert backend.remote_members("room") == [process.Pid._named("peer:1:aa", 9)]
    backend._handle(EVERYONE.encode(), peer.seal(EVERYONE, codec().encode(("bye",))))
    assert backend.nodes() == [] and not backend.rejected


HOSTILE_BODIES = [
    5, "m", [], (), ("m",), ("m", "5", "x"), ("m", -1, "x"), ("m", True, "x"), ("m", 1, "x", "extra"),
    ("b", "room", "close", b"1000", None, None), ("b", "room", "text", "not bytes", None, None),
    ("b", ["unhashable"], "text", b"x", None, None), ("c", [["j", {"a": 1}, [3]]]), ("c", [["j", "room", ["3"]]]),
    ("c", [["l", "room"]]), ("c", [["x", "room", [1]]]), ("c", [["l", "room", 1]]), ("c", ["room"]),
    ("c", [["l", "room", [1]], ["j", ["unhashable"], [2]]]), ("c", {"room": [1]}), ("c",), ("r", 1),
    ("s", False, 0, True, [["room", [1, "2"]]]), ("s", False, 0, True, [["room", 1]]), ("s", True, 0, True, {}),
    ("s", "yes", 0, True, [["room", [1]]]), ("s", False, -1, True, []), ("s", False, 0, 1, []),
    ("s", False, 0, True, [["j", "room", [1]]]), ("s", {"room": [1]}, False), ("bye", 1), ("zz",), (None,),
    ({"k": 1},),
]


@pytest.mark.parametrize("body", HOSTILE_BODIES, ids=[repr(b)[:40] for b in HOSTILE_BODIES])
def test_signed_but_malformed_bodies_are_dropped_and_counted(body):
    backend, local, peer = node()
    backend._handle(EVERYONE.encode(), peer.seal(EVERYONE, codec().encode(("c", [["j", "room", [1]]]))))
    backend._handle(CHANNEL.encode(), peer.seal(CHANNEL, codec().encode(body)))
    assert backend.rejected == {"malformed": 1}
    assert local.delivered == [] and local.broadcasts == []
    assert backend.remote_members("room") == [process.Pid._named("peer:1:aa", 1)]   # the view is untouched


def test_a_snapshot_in_parts_applies_whole_or_not_at_all_and_a_gap_asks_again():
    backend, _local, peer = node()

    def part(i: int, last: bool, runs: list) -> None:
        backend._handle(CHANNEL.encode(), peer.seal(CHANNEL, codec().encode(("s", False, i, last, runs))))

    part(0, True, [["room", [1, 2]]])
    part(0, False, [["room", [3]]])
    part(1, False, [["room", [4]], ["hall", [5]]])
    assert sorted(p.id for p in backend.remote_members("room")) == [1, 2]     # nothing until the last part
    part(2, True, [["hall", [6]]])
    assert sorted(p.id for p in backend.remote_members("room")) == [3, 4]     # the whole snapshot replaces
    assert sorted(p.id for p in backend.remote_members("hall")) == [5, 6]
    assert not backend._queue                                                 # nobody asked for anything
    part(0, False, [["room", [7]]])
    part(2, True, [["room", [8]]])                                            # part 1 went missing
    assert sorted(p.id for p in backend.remote_members("room")) == [3, 4]
    asked = [(channel, backend._codec.decode(data)) for channel, data in backend._queue if channel is not None]
    assert asked == [("cowboy_ws:node:peer:1:aa", ("r",))]                    # the whole membership, again
    assert not backend.rejected


def test_a_stale_message_makes_the_node_ask_its_sender_for_the_membership():
    backend, _local, _peer = node()
    old = Bus("peer:1:aa", codec(), SECRET, max_age=15.0, clock=lambda: time.time() - 60)
    backend._handle(EVERYONE.encode(), old.seal(EVERYONE, codec().encode(("c", [["l", "room", [1]]]))))
    assert backend.rejected == {"stale": 1}
    asked = [(channel, backend._codec.decode(data)) for channel, data in backend._queue if channel is not None]
    assert asked == [("cowboy_ws:node:peer:1:aa", ("r",))]
    assert list(backend._queue)[-1] == (None, ("sync-to", "peer:1:aa"))    # and sends ours
    backend._handle(EVERYONE.encode(), old.seal(EVERYONE, codec().encode(("c", [["l", "room", [2]]]))))
    assert len(backend._queue) == 2                                           # asked once (retried later)


def test_forged_node_gone_and_member_joined_do_not_work_and_are_logged_once(caplog):
    backend, local, peer = node()
    backend._handle(EVERYONE.encode(), peer.seal(EVERYONE, codec().encode(("c", [["j", "room", [1]]]))))
    attacker = Bus("peer:1:aa", codec(), b"guessed wrong, 32 bytes long....", max_age=15.0)
    unsigned = Bus("peer:1:aa", codec(), None, max_age=15.0)
    caplog.set_level(logging.WARNING, logger="cowboy_ws.redis_backend")
    for forger in (attacker, unsigned):
        for body in (("bye",), ("c", [["j", "room", [666]]]), ("c", [["l", "room", [1]]]), ("s", False, 0, True, []),
                     ("m", 1, ("say", "forged"))):
            for channel in (EVERYONE, CHANNEL):
                backend._handle(channel.encode(), forger.seal(channel, codec().encode(body)))
    assert backend.rejected == {"bad_mac": 10, "unsigned": 10}
    assert backend.nodes() == ["peer:1:aa"]
    assert backend.remote_members("room") == [process.Pid._named("peer:1:aa", 1)]
    assert local.delivered == []
    lines = [r for r in caplog.records if "failed checks" in r.getMessage()]
    assert len(lines) == 1                                       # rate-limited: one line for 20 drops


def test_a_heartbeat_value_must_be_the_nodes_own_and_fresh():
    backend, _local, peer = node()
    key = "cowboy_ws:hb:peer:1:aa"
    assert backend._alive("peer:1:aa", key, peer.seal(key, codec().encode("hb")))
    assert not backend._alive("peer:1:aa", key, None)                                   # no key
    assert not backend._alive("peer:1:aa", key, b"1")                                   # set by someone else
    other = Bus("other:1:cc", codec(), SECRET, max_age=15.0)
    assert not backend._alive("peer:1:aa", key, other.seal(key, codec().encode("hb")))  # another node's
    moved = peer.seal("cowboy_ws:hb:elsewhere", codec().encode("hb"))
    assert not backend._alive("peer:1:aa", key, moved)                                  # another key's
    assert backend.rejected == {"heartbeat": 3}


@settings(max_examples=400, deadline=None)
@given(messages)
def test_fuzz_a_node_with_signed_arbitrary_bodies(body):
    """Whatever a peer with the secret sends, the node never raises: it applies it or counts it."""
    backend, local, peer = node()
    for channel in (EVERYONE, CHANNEL):
        backend._handle(channel.encode(), peer.seal(channel, codec().encode(body)))
    assert sum(backend.rejected.values()) + len(local.delivered) + len(local.broadcasts) <= 2


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200), st.sampled_from([EVERYONE, CHANNEL]))
def test_fuzz_a_node_with_random_bytes(data, channel):
    backend, local, _peer = node()
    backend._handle(channel.encode(), data)
    backend._handle(channel.encode(), struct.pack(">2sBcBQQB", b"cw", 1, b"m", 1, 0, 1, 3) + b"abc" + data)
    assert sum(backend.rejected.values()) == 2 and local.delivered == [] and local.broadcasts == []


def test_the_secret_comes_from_the_argument_else_the_environment(monkeypatch):
    needs_redis_py()
    monkeypatch.setenv("COWBOY_WS_CLUSTER_SECRET", "from the environment")
    assert RedisBackend("redis://h/0").secret == b"from the environment"
    assert RedisBackend("redis://h/0", secret="given").secret == b"given"
    monkeypatch.setenv("COWBOY_WS_CLUSTER_SECRET", "")
    assert RedisBackend("redis://h/0").secret is None
    with pytest.raises(ValueError, match="unknown cluster codec"):
        RedisBackend("redis://h/0", codec="yaml")
    with pytest.raises(ValueError, match="rediss://"):
        RedisBackend("redis://h/0", ssl_ca_certs="ca.pem")


def test_the_backend_never_reaches_into_process_internals():
    """redis_backend talks to the process only through messaging.LocalNode (Pid is imported for type hints)."""
    import ast
    import inspect

    import cowboy_ws.redis_backend as module
    source = inspect.getsource(module)
    runtime = [stmt for stmt in ast.parse(source).body
               if not (isinstance(stmt, ast.If) and getattr(stmt.test, "id", "") == "TYPE_CHECKING")]
    imported = {(node.module, alias.name) for stmt in runtime for node in ast.walk(stmt)
                if isinstance(node, ast.ImportFrom) for alias in node.names}
    assert ("messaging", "LocalNode") in imported
    assert not any(mod == "process" or name == "process" for mod, name in imported), imported
    assert "process." not in source.replace("cowboy_ws.process.", "")
    assert not hasattr(module, "process") and cowboy_ws.process.current_backend().name == "local"


# -- the attack, from a plain Redis client, against real nodes ----------------------------------------

import json  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402

from redis_server import RedisServer, available  # noqa: E402
from serverproc import ServerProcess, ask, wait_until, who  # noqa: E402
from wsclient import Client  # noqa: E402


@pytest.fixture
def redis_srv():
    why = available()
    if why is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the Redis tests: {why}")
        pytest.skip(why)
    server = RedisServer().start()
    yield server
    server.close()


@pytest.fixture
def nodes(redis_srv):
    """``nodes(*args, env=...)``: a cluster_app server on the test's Redis; clients in ``.clients``."""
    started: list[ServerProcess] = []
    clients: list[Client] = []

    def start(*args: str, env: dict | None = None) -> ServerProcess:
        proc = ServerProcess("cluster_app:Node", "--port", "0", "--redis", redis_srv.url, "--node-ttl", "1", *args,
                             env={"COWBOY_WS_CLUSTER_SECRET": "", **(env or {})})
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
    for proc in started:  # no node crashed, whatever it was sent
        assert "Traceback" not in proc.output, proc.output


class Payload:
    """A pickle whose unpickling creates a file (``open(path, "w")``): proof that code ran."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def say_once(speaker: Client, listeners: list[Client], text: str) -> None:
    speaker.send_text(f"say {text}")
    for client in listeners:
        kind, data = client.recv_message(10)
        assert (kind, data) == ("text", text.encode()), (kind, data)


def pid_of(client: Client) -> tuple[str, int]:
    node_id, number = ask(client, "me").split()
    return node_id, int(number)


def stats(client: Client) -> dict:
    return json.loads(ask(client, "stats"))["rejected"]


def test_a_client_without_the_secret_cannot_run_code_or_reach_anyone(nodes, redis_srv, tmp_path):
    """Done when (1): pickle, random bytes, a bad MAC, a replay, on every channel: all dropped and counted."""
    import redis as redis_py
    secret = {"COWBOY_WS_CLUSTER_SECRET": SECRET.decode()}
    one, two = nodes(env=secret), nodes(env=secret)
    room = uuid.uuid4().hex
    a1 = nodes.connect(one.port, f"/g/{room}")
    b1, b2 = nodes.connect(two.port, f"/g/{room}"), nodes.connect(two.port, f"/g/{room}")
    members = [a1, b1, b2]
    for client in (a1, b1):
        wait_until(lambda: ask(client, "count") == "3", 10, "3 members seen")
    node_one, node_two = who(a1)["node"], who(b1)["node"]
    b1_pid = pid_of(b1)

    # a spy records real bus traffic to replay it later
    attacker = redis_py.Redis.from_url(redis_srv.url)
    spy = attacker.pubsub()
    spy.psubscribe("cowboy_ws:*")
    wait_until(lambda: spy.get_message(timeout=0.1) is not None, 5, "the spy subscribed")
    say_once(a1, members, "captured broadcast")
    assert ask(a1, f"sendto {b1_pid[0]} {b1_pid[1]} captured send") == "sent"
    assert b1.recv_message(10) == ("text", b"captured send")
    late = nodes.connect(one.port, f"/g/{room}")                       # a join announced on cowboy_ws:all
    wait_until(lambda: ask(b1, "count") == "4", 10, "the join seen")
    captured: list[tuple[str, bytes]] = []
    deadline = time.monotonic() + 5
    while len({ch for ch, _ in captured}) < 2 and time.monotonic() < deadline:
        msg = spy.get_message(timeout=0.1)
        if msg is not None and msg["type"] == "pmessage":
            captured.append((msg["channel"].decode(), msg["data"]))
    spy.close()
    assert {ch for ch, _ in captured} >= {f"cowboy_ws:node:{node_two}", "cowboy_ws:all"}

    # the attack, on every channel the nodes use
    channels = sorted(ch.decode() for ch in attacker.pubsub_channels("*"))
    assert channels == sorted(["cowboy_ws:all", f"cowboy_ws:node:{node_one}", f"cowboy_ws:node:{node_two}"])
    target = tmp_path / "pwned"
    pickled = pickle.dumps(("m", b1_pid[1], Payload(str(target))))
    wrong_key = b"guessed secret, also 32 bytes..."
    sent: dict[str, list[str]] = {ch: [] for ch in channels}           # channel -> expected reasons

    def publish(channel: str, data: bytes, why: str) -> None:
        attacker.publish(channel, data)
        sent[channel].append(why)

    for channel in channels:
        publish(channel, pickled, "malformed")                                          # a bare pickle
        for impostor in (node_one, node_two):                                           # in the nodes' names
            unsigned = Bus(impostor, PickleCodec(), None, max_age=60)
            publish(channel, unsigned.seal(channel, pickled), "unsigned")
            signed_pickle = Bus(impostor, PickleCodec(), wrong_key, max_age=60)
            publish(channel, signed_pickle.seal(channel, pickled), "bad_mac")
            forger = Bus(impostor, codec(), wrong_key, max_age=60)
            for body in (("m", b1_pid[1], ("say", "forged")), ("b", room, "text", b"forged", None, None),
                         ("c", [["j", room, [999]]]), ("c", [["l", room, [b1_pid[1]]]]), ("s", False, 0, True, []),
                         ("r",), ("bye",)):
                publish(channel, forger.seal(channel, codec().encode(body)), "bad_mac")
        for size in (0, 1, 21, 64, 500):
            publish(channel, b"\xff" + os.urandom(size), "malformed")                    # random bytes
        publish(channel, os.urandom(MAX_MESSAGE_SIZE + 1), "oversized")
    for channel, data in captured:                                                  # replayed real messages
        publish(channel, data, "replay")

    # both nodes keep echoing and broadcasting; what they were sent before this reached nobody
    for client in (a1, b1):
        assert ask(client, "who").startswith("worker=")
    everyone = members + [late]
    say_once(a1, everyone, "after the attack, from one")
    say_once(b2, everyone, "after the attack, from two")
    for client in everyone:
        client.expect_silence(0.3)
        assert ask(client, "count") == "4"                               # no forged join, exit or goodbye
    assert not target.exists()

    expected = {}
    for me, channel in ((node_one, f"cowboy_ws:node:{node_one}"), (node_two, f"cowboy_ws:node:{node_two}")):
        counts: dict[str, int] = {}
        for why in sent["cowboy_ws:all"] + sent[channel]:
            counts[why] = counts.get(why, 0) + 1
        expected[me] = counts
    assert stats(a1) == expected[node_one]
    assert stats(b1) == expected[node_two]
    assert set(expected[node_two]) == {"malformed", "unsigned", "bad_mac", "oversized", "replay"}
    for proc in (one, two):
        proc.wait_for(r"dropped \d+ bus message\(s\) that failed checks")


def test_without_a_secret_msgpack_still_runs_no_code_but_anyone_can_message(nodes, redis_srv, tmp_path):
    """Documents the unauthenticated bus: no code runs, but a forged message reaches a handler."""
    import redis as redis_py
    one = nodes()
    one.wait_for("the cluster bus is unauthenticated")
    client = nodes.connect(one.port, "/")
    node_id, number = pid_of(client)
    channel = f"cowboy_ws:node:{node_id}"
    target = tmp_path / "pwned"
    attacker = redis_py.Redis.from_url(redis_srv.url)
    pickled = pickle.dumps(("m", number, Payload(str(target))))
    attacker.publish(channel, pickled)
    attacker.publish(channel, Bus("attacker", PickleCodec(), None, max_age=60).seal(channel, pickled))
    forged = Bus("attacker", codec(), None, max_age=60).seal(channel, codec().encode(("m", number, ("say", "forged"))))
    attacker.publish(channel, forged)
    assert client.recv_message(10) == ("text", b"forged")                  # what "unauthenticated" means
    assert not target.exists()
    assert stats(client) == {"malformed": 1, "codec": 1}


def test_with_the_pickle_codec_and_no_secret_a_published_pickle_runs(nodes, redis_srv, tmp_path):
    """Documents the risk the start-up warning names: with --cluster-codec pickle and no secret, it runs."""
    import redis as redis_py
    one = nodes("--cluster-codec", "pickle")
    one.wait_for(r"cluster codec 'pickle': decoding a bus message can run arbitrary code")
    one.wait_for("the cluster bus is unauthenticated")
    target = tmp_path / "pwned"
    channel = "cowboy_ws:all"
    data = Bus("attacker", PickleCodec(), None, max_age=60).seal(channel, pickle.dumps(Payload(str(target))))
    redis_py.Redis.from_url(redis_srv.url).publish(channel, data)
    wait_until(target.exists, 10, "the published pickle to run")           # it ran: that is the warning's point


def test_with_the_pickle_codec_and_a_secret_only_signed_pickles_are_opened(nodes, redis_srv, tmp_path):
    import redis as redis_py
    secret = {"COWBOY_WS_CLUSTER_SECRET": SECRET.decode()}
    one, two = nodes("--cluster-codec", "pickle", env=secret), nodes("--cluster-codec", "pickle", env=secret)
    room = uuid.uuid4().hex
    a, b = nodes.connect(one.port, f"/g/{room}"), nodes.connect(two.port, f"/g/{room}")
    for client in (a, b):
        wait_until(lambda: ask(client, "count") == "2", 10, "2 members seen")
    target = tmp_path / "pwned"
    channel = f"cowboy_ws:node:{who(b)['node']}"
    data = Bus(who(a)["node"], PickleCodec(), b"not the secret but 32 bytes long", max_age=60).seal(
        channel, pickle.dumps(Payload(str(target))))
    redis_py.Redis.from_url(redis_srv.url).publish(channel, data)
    say_once(a, [a, b], "signed pickles still work")
    assert not target.exists() and stats(b) == {"bad_mac": 1}
