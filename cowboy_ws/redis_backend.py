"""Redis pub/sub between nodes: ``pid.send``, process groups and ``broadcast`` across workers and machines.

Install the client with ``pip install 'cowboy-ws[redis]'`` (redis-py); serve with
``Server(routes, redis_url="redis://host:6379/0")`` or ``python -m cowboy_ws ... --redis URL``.
Every OS process (every worker of ``--workers``, every machine) is a node with its own id
(:func:`cowboy_ws.process.node`).

Wire (all keys and channels start with ``prefix``, default ``cowboy_ws``):

``<prefix>:node:<node id>``  (channel)
    what is addressed to one node: ``pid.send`` to one of its Pids (``("m", pid number, msg)``),
    a broadcast to its members of a group (``("b", group, kind, data, exclude)``: one publish per
    node that has members, however many they are; the node frames it once for all of them), and
    the answers to its ``hello``.
``<prefix>:all``  (channel)
    group changes, announced by the node whose Pid changed: join, leave, exit of a Pid (it left
    all its groups), a node's whole membership (``sync``: on start and after reconnecting, with a
    request that every node answer with its own), and ``bye`` when a node stops.
``<prefix>:hb:<node id>``  (key with expiry)
    the node's heartbeat, set every ``node_ttl / 3`` s to expire after ``node_ttl`` s.  Each node
    checks the heartbeats of the nodes it knows members of at the same pace; a node whose key is
    gone (killed, frozen, cut off) is dropped with all its members.

Membership is kept like Erlang's ``pg``: each node owns its own Pids' memberships and tells the
others; every node caches what it heard, so :func:`cowboy_ws.members` and
:func:`cowboy_ws.broadcast` never wait for Redis.  The cache is eventually consistent: a join on
one node is seen on another after one pub/sub hop.  Everything one node publishes goes through one
connection from one thread, and Redis delivers one publisher's messages to a subscriber in the
order they were published (whatever the channel), so messages from one sender to one Pid arrive
in order, and group changes apply in order.

Messages are pickled: only trusted nodes may share a Redis (an unpickled message can run code).
Use a Redis reachable only by them (bind, firewall, ``requirepass``/ACL in the URL, ``rediss://``).

Threads (Redis I/O never runs on a selectors loop):

* subscriber: one pub/sub connection; hands each message to the target connection's loop with
  ``call_soon_threadsafe`` (through :meth:`Pid.send`); group changes update the cache;
* publisher: a queue (bounded by ``max_queue``; past it new messages are dropped and counted)
  drained into pipelined ``PUBLISH`` commands on one connection;
* heartbeat: the node's key and the other nodes' expiry.

Redis restarting or unreachable does not stop a node: local delivery goes on; what is published
while Redis is down waits in the queue (bounded) or is lost with its batch (at most once, never
twice); each thread reconnects with backoff (up to ``RECONNECT_MAX`` s) and, once back, the node
publishes its whole membership and asks the others for theirs.  The outage is logged once, and
its end.
"""

from __future__ import annotations

import logging
import pickle
import random
import threading
import time
from collections import deque
from typing import Any, Hashable

from . import process
from .messaging import Backend
from .process import Pid

log = logging.getLogger(__name__)

__all__ = ["RedisBackend", "NODE_TTL", "DEFAULT_PREFIX"]

#: Seconds without a heartbeat after which a node and its members are dropped by the others.
NODE_TTL = 10.0
DEFAULT_PREFIX = "cowboy_ws"
#: Reconnection backoff, doubling from the first to the second (seconds, with jitter).
RECONNECT_MIN = 0.05
RECONNECT_MAX = 2.0
#: Publishes sent in one pipeline.
BATCH = 512
#: Messages waiting for the publisher; past it new ones are dropped (and counted).
MAX_QUEUE = 100_000

_PICKLE = pickle.HIGHEST_PROTOCOL
_HELLO, _SYNC_ALL, _SYNC_TO, _BYE = "hello", "sync-all", "sync-to", "bye"


def _import_redis() -> Any:
    try:
        import redis
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError("the Redis messaging backend needs redis-py: pip install 'cowboy-ws[redis]'") from None
    return redis


class _Outage:
    """Logs an outage once when it starts and once when it ends, whichever thread sees it."""

    def __init__(self, where: str) -> None:
        self.where = where
        self._lock = threading.Lock()
        self.since: float | None = None
        self.count = 0          # outages so far

    @property
    def down(self) -> bool:
        return self.since is not None

    def failed(self, exc: BaseException) -> None:
        with self._lock:
            if self.since is None:
                self.since = time.monotonic()
                self.count += 1
                log.warning("redis %s unreachable (%s: %s): messages to other nodes wait or are lost, local "
                            "delivery goes on; reconnecting", self.where, type(exc).__name__, exc)

    def ok(self) -> None:
        if self.since is None:
            return
        with self._lock:
            if self.since is not None:
                log.warning("redis %s reachable again after %.1fs", self.where, time.monotonic() - self.since)
                self.since = None


class RedisBackend(Backend):
    """Pid messages, process groups and broadcast across nodes over Redis pub/sub (redis-py)."""

    name = "redis"

    def __init__(self, url: str, *, prefix: str = DEFAULT_PREFIX, node_ttl: float = NODE_TTL,
                 max_queue: int = MAX_QUEUE, connect_timeout: float = 2.0) -> None:
        self._redis = _import_redis()
        self._redis.connection.parse_url(url)  # a malformed URL fails here, not in a thread
        if not node_ttl > 0:
            raise ValueError(f"node_ttl must be > 0, not {node_ttl!r}")
        self.url = url
        self.prefix = prefix
        self.node_ttl = float(node_ttl)
        self.max_queue = max_queue
        self.connect_timeout = connect_timeout
        self.node = process.node()
        self.dropped = 0                 # messages dropped: queue full, or lost with a failed batch
        self._lock = threading.Lock()    # the cache of other nodes' members
        self._remote: dict[str, dict[Hashable, dict[int, Pid]]] = {}
        self._queue: deque[tuple[str | None, Any]] = deque()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._outage = _Outage(self._where(url))
        self._grace_until = 0.0          # no node is expired before this (after a reconnect / Redis restart)
        self._started = False
        self.subscribed = threading.Event()  # set while the subscriber is listening (tests wait on it)

    @staticmethod
    def _where(url: str) -> str:
        try:  # never log a password
            kw = _import_redis().connection.parse_url(url)
            return f"{kw.get('host', kw.get('path', '?'))}:{kw.get('port', '')}".rstrip(":")
        except Exception:
            return "?"

    def __repr__(self) -> str:
        return f"<RedisBackend {self._outage.where} node={self.node}>"

    # -- names ---------------------------------------------------------------------------------

    def _channel(self, node: str) -> str:
        return f"{self.prefix}:node:{node}"

    def _all(self) -> str:
        return f"{self.prefix}:all"

    def _hb_key(self, node: str) -> str:
        return f"{self.prefix}:hb:{node}"

    def _client(self) -> Any:
        redis = self._redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry
        # No retries inside redis-py: a failure surfaces here, where the backoff and the
        # re-announcement after a reconnect live (and a failed batch is never sent twice).
        return redis.Redis.from_url(self.url, socket_connect_timeout=self.connect_timeout,
                                    socket_timeout=max(self.connect_timeout, 2.0), socket_keepalive=True,
                                    retry=Retry(NoBackoff(), 0), health_check_interval=0)

    # -- life cycle ------------------------------------------------------------------------------

    def start(self) -> None:
        if self._started:
            return
        self._started = True
        self.node = process.node()  # after a fork, the child's
        for name, target in (("subscriber", self._subscriber), ("publisher", self._publisher),
                             ("heartbeat", self._heartbeat)):
            thread = threading.Thread(target=target, name=f"cowboy_ws-redis-{name}", daemon=True)
            self._threads.append(thread)
            thread.start()
        log.info("node %s: messaging over redis %s (prefix %r, node_ttl %.1fs)", self.node,
                 self._outage.where, self.prefix, self.node_ttl)

    def wait_ready(self, timeout: float) -> bool:
        if self.subscribed.wait(timeout):
            return True
        log.warning("node %s: not subscribed on redis %s after %.1fs: serving anyway, messages from other "
                    "nodes arrive once it is", self.node, self._outage.where, timeout)
        return False

    def stop(self, timeout: float = 2.0) -> None:
        if not self._started or self._stopping.is_set():
            return
        self._enqueue(None, _BYE)
        self._stopping.set()
        self._wake.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()) + 0.5)
        if self._queue:
            log.info("stopping: %d message(s) for other nodes not published", len(self._queue))
        if self.dropped:
            log.info("%d message(s) for other nodes were dropped while running", self.dropped)

    # -- outgoing (any thread, never blocks) ----------------------------------------------------

    def _enqueue(self, channel: str | None, data: Any) -> None:
        if len(self._queue) >= self.max_queue and channel is not None:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 10000 == 0:
                log.warning("publish queue full (%d): %d message(s) for other nodes dropped so far",
                            self.max_queue, self.dropped)
            return
        self._queue.append((channel, data))
        if not self._wake.is_set():
            self._wake.set()

    def send(self, pid: Pid, msg: Any) -> None:
        self._enqueue(self._channel(pid.node), pickle.dumps(("m", pid.id, msg), _PICKLE))

    def _announce(self, item: tuple) -> None:
        try:
            data = pickle.dumps(item, _PICKLE)
        except Exception as exc:
            log.warning("group %r cannot be pickled (%s): it stays local to node %s", item[2], exc, self.node)
            return
        self._enqueue(self._all(), data)

    def joined(self, group: Hashable, pid: Pid) -> None:
        self._announce(("j", self.node, group, pid.id))

    def left(self, group: Hashable, pid: Pid) -> None:
        self._announce(("l", self.node, group, pid.id))

    def exited(self, pid: Pid, groups: list) -> None:
        self._enqueue(self._all(), pickle.dumps(("x", self.node, pid.id), _PICKLE))

    def broadcast(self, group: Hashable, kind: str, data: bytes, exclude: Pid | None) -> int:
        ex_node, ex_id = (exclude.node, exclude.id) if exclude is not None else (None, None)
        targets: list[str] = []
        reached = 0
        with self._lock:
            for node, groups in self._remote.items():
                members = groups.get(group)
                if not members:
                    continue
                count = len(members) - (1 if node == ex_node and ex_id in members else 0)
                if count > 0:
                    targets.append(node)
                    reached += count
        if targets:
            payload = pickle.dumps(("b", group, kind, data, ex_node, ex_id), _PICKLE)
            for node in targets:
                self._enqueue(self._channel(node), payload)
        return reached

    # -- queries ----------------------------------------------------------------------------------

    def remote_members(self, group: Hashable) -> list[Pid]:
        if not self._remote:
            return []
        with self._lock:
            out: list[Pid] = []
            for groups in self._remote.values():
                members = groups.get(group)
                if members:
                    out.extend(members.values())
            return out

    def remote_groups(self) -> list:
        with self._lock:
            seen: dict[Hashable, None] = {}
            for groups in self._remote.values():
                seen.update(dict.fromkeys(groups))
            return list(seen)

    def node_alive(self, node: str) -> bool:
        return node in self._remote

    def nodes(self) -> list[str]:
        with self._lock:
            return list(self._remote)

    # -- the publisher thread ---------------------------------------------------------------------

    def _snapshot(self) -> dict:
        snap = process._groups.snapshot()
        try:
            pickle.dumps(snap, _PICKLE)
        except Exception:  # keep the groups that can travel
            snap = {g: ids for g, ids in snap.items() if _picklable(g)}
        return snap

    def _special(self, what: Any) -> tuple[str, bytes]:
        """A queued announcement built when it is sent: the membership is read at that moment."""
        if what == _HELLO:
            return self._all(), pickle.dumps(("s", self.node, self._snapshot(), True), _PICKLE)
        if what == _SYNC_ALL:
            return self._all(), pickle.dumps(("s", self.node, self._snapshot(), False), _PICKLE)
        if what == _BYE:
            return self._all(), pickle.dumps(("bye", self.node), _PICKLE)
        _tag, node = what  # (_SYNC_TO, node): the answer to that node's hello
        return self._channel(node), pickle.dumps(("s", self.node, self._snapshot(), False), _PICKLE)

    def _publisher(self) -> None:
        client = None
        backoff = RECONNECT_MIN
        resync = False
        queue = self._queue
        while True:
            if not queue:
                if self._stopping.is_set():
                    break
                self._wake.clear()
                if not queue:
                    self._wake.wait(0.5)
                continue
            if client is None:
                try:
                    client = self._client()
                    client.ping()
                    backoff = RECONNECT_MIN
                except Exception as exc:
                    self._failed(exc)
                    client = self._close(client)
                    if self._stopping.is_set():
                        break
                    backoff = self._sleep(backoff)
                    continue
                if resync:  # a batch was lost: what it said about our groups is said again
                    queue.appendleft((None, _SYNC_ALL))
                    resync = False
            batch = []
            for _ in range(min(BATCH, len(queue))):
                channel, data = queue.popleft()
                batch.append(self._special(data) if channel is None else (channel, data))
            try:
                if len(batch) == 1:
                    client.publish(*batch[0])
                else:
                    pipe = client.pipeline(transaction=False)
                    for channel, data in batch:
                        pipe.publish(channel, data)
                    pipe.execute()
                self._outage.ok()
            except Exception as exc:  # at most once: a failed batch is not sent again
                self.dropped += len(batch)
                self._failed(exc)
                client = self._close(client)
                resync = True
                if self._stopping.is_set():
                    break
        self._close(client)

    # -- the subscriber thread --------------------------------------------------------------------

    def _subscriber(self) -> None:
        backoff = RECONNECT_MIN
        mine, everyone = self._channel(self.node), self._all()
        while not self._stopping.is_set():
            client = pubsub = None
            try:
                client = self._client()
                pubsub = client.pubsub()
                pubsub.subscribe(mine, everyone)
                confirmed = 0
                deadline = time.monotonic() + 5.0
                while confirmed < 2:  # listening on both before anyone is asked to answer
                    msg = pubsub.get_message(timeout=0.5)
                    if msg is not None and msg["type"] == "subscribe":
                        confirmed += 1
                    elif msg is not None and msg["type"] == "message":
                        self._handle(msg["data"])
                    if self._stopping.is_set():
                        return
                    if time.monotonic() > deadline:
                        raise TimeoutError("no subscribe confirmation from redis")
                # our heartbeat exists before our hello: nobody expires us right after hearing us
                client.set(self._hb_key(self.node), b"1", px=int(self.node_ttl * 1000))
                self._grace_until = time.monotonic() + self.node_ttl
                self._outage.ok()
                backoff = RECONNECT_MIN
                self.subscribed.set()
                self._enqueue(None, _HELLO)
                while not self._stopping.is_set():
                    msg = pubsub.get_message(timeout=0.5)
                    if msg is not None and msg["type"] == "message":
                        self._handle(msg["data"])
            except Exception as exc:
                self.subscribed.clear()
                if self._stopping.is_set():
                    return
                self._failed(exc)
            finally:
                self.subscribed.clear()
                for closable in (pubsub, client):
                    if closable is not None:
                        try:
                            closable.close()
                        except Exception:
                            pass
            if self._stopping.is_set():
                return
            backoff = self._sleep(backoff)

    def _handle(self, data: bytes) -> None:
        try:
            item = pickle.loads(data)
            tag = item[0]
        except Exception as exc:
            log.warning("undecodable message from redis dropped (%s: %s)", type(exc).__name__, exc)
            return
        try:
            if tag == "m":
                pid = process.local_pid(item[1])
                if pid is not None:
                    pid.send(item[2])
            elif tag == "b":
                _t, group, kind, payload, ex_node, ex_id = item
                process.deliver_broadcast(group, (kind, payload), ex_id if ex_node == self.node else None)
            elif item[1] == self.node:  # our own announcement, back from <prefix>:all
                return
            elif tag == "j":
                _t, node, group, pid_id = item
                with self._lock:
                    members = self._remote.setdefault(node, {}).setdefault(group, {})
                    members[pid_id] = Pid._named(node, pid_id)
            elif tag == "l":
                _t, node, group, pid_id = item
                with self._lock:
                    self._forget(node, group, pid_id)
            elif tag == "x":
                _t, node, pid_id = item
                with self._lock:
                    groups = self._remote.get(node)
                    if groups:
                        for group in [g for g, m in groups.items() if pid_id in m]:
                            self._forget(node, group, pid_id)
            elif tag == "s":
                _t, node, snapshot, answer = item
                with self._lock:
                    known = node in self._remote
                    self._remote[node] = {group: {i: Pid._named(node, i) for i in ids}
                                          for group, ids in snapshot.items() if ids}
                if not known:
                    log.info("node %s is up (%d group(s))", node, len(snapshot))
                if answer:
                    self._enqueue(None, (_SYNC_TO, node))
            elif tag == "bye":
                self._drop(item[1], "stopped")
        except Exception:
            log.exception("error handling a message from redis (%r)", tag)

    def _forget(self, node: str, group: Hashable, pid_id: int) -> None:
        """Remove one remote membership (lock held)."""
        groups = self._remote.get(node)
        if groups is None:
            return
        members = groups.get(group)
        if members is not None:
            members.pop(pid_id, None)
            if not members:
                del groups[group]

    def _drop(self, node: str, why: str) -> None:
        with self._lock:
            groups = self._remote.pop(node, None)
        if groups is not None:
            count = sum(len(m) for m in groups.values())
            log.info("node %s %s: %d membership(s) in %d group(s) dropped", node, why, count, len(groups))

    # -- the heartbeat thread ---------------------------------------------------------------------

    def _heartbeat(self) -> None:
        client = None
        interval = self.node_ttl / 3.0
        key = self._hb_key(self.node)
        beaten = False
        delay = 0.0
        while not self._stopping.wait(delay):
            delay = interval
            try:
                if client is None:
                    client = self._client()
                pipe = client.pipeline(transaction=False)
                pipe.exists(key)
                pipe.set(key, b"1", px=int(self.node_ttl * 1000))
                existed = pipe.execute()[0]
                if not existed and beaten:
                    # our key was gone: Redis restarted or lost it, or we were stalled past node_ttl;
                    # others may have dropped us: say everything again, give them time to say theirs
                    log.info("node %s: heartbeat key was gone: announcing our groups again", self.node)
                    self._grace_until = time.monotonic() + self.node_ttl
                    self._enqueue(None, _SYNC_ALL)
                beaten = True
                self._expire(client)
            except Exception as exc:
                self._failed(exc)
                client = self._close(client)
        if client is not None:
            try:
                client.delete(key)
            except Exception:
                pass
            self._close(client)

    def _expire(self, client: Any) -> None:
        """Drop the nodes whose heartbeat key expired."""
        with self._lock:
            nodes = list(self._remote)
        if not nodes or time.monotonic() < self._grace_until:
            return
        pipe = client.pipeline(transaction=False)
        for node in nodes:
            pipe.exists(self._hb_key(node))
        for node, alive in zip(nodes, pipe.execute()):
            if not alive:
                self._drop(node, f"is gone (no heartbeat within {self.node_ttl:g}s)")

    # -- helpers ----------------------------------------------------------------------------------

    def _failed(self, exc: BaseException) -> None:
        if not self._stopping.is_set():
            self._outage.failed(exc)

    def _sleep(self, backoff: float) -> float:
        self._stopping.wait(backoff * (0.5 + random.random()))
        return min(backoff * 2, RECONNECT_MAX)

    @staticmethod
    def _close(client: Any) -> None:
        if client is not None:
            try:
                client.close()
            except Exception:
                pass
        return None


def _picklable(obj: Any) -> bool:
    try:
        pickle.dumps(obj, _PICKLE)
        return True
    except Exception:
        return False
