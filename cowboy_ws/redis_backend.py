"""Redis pub/sub between nodes: ``pid.send``, process groups and ``broadcast`` across workers and machines.

Install the client with ``pip install 'cowboy-ws[redis]'`` (redis-py and msgpack); serve with
``Server(routes, redis_url="redis://host:6379/0")`` or ``python -m cowboy_ws ... --redis URL``.
Every OS process (every worker of ``--workers``, every machine) is a node with its own id
(:func:`cowboy_ws.process.node`).

Wire (all keys and channels start with ``prefix``, default ``cowboy_ws``; every value is a
:mod:`cowboy_ws.bus_codec` envelope whose sender node is the one speaking, around a tuple body):

``<prefix>:node:<node id>``  (channel)
    what is addressed to one node: ``pid.send`` to one of its Pids (``("m", pid number, msg)``),
    a broadcast to its members of a group (``("b", group, kind, data, exclude node, exclude
    number)``: one publish per node that has members, however many they are; the node frames it
    once for all of them), and the answer to its ``hello`` (``("s", membership, False)``).
``<prefix>:all``  (channel)
    group changes, announced by the node whose Pid changed: join ``("j", group, number)``, leave
    ``("l", group, number)``, exit of a Pid (it left all its groups: ``("x", number)``), the
    node's whole membership (``("s", {group: [number, ...]}, answer)``: on start and after
    reconnecting, with ``answer`` True asking every node to answer with its own), and
    ``("bye",)`` when a node stops.
``<prefix>:hb:<node id>``  (key with expiry)
    the node's heartbeat (a sealed ``"hb"``), set every ``node_ttl / 3`` s to expire after
    ``node_ttl`` s.  Each node checks the heartbeats of the nodes it knows members of at the same
    pace; a node whose key is gone (killed, frozen, cut off), or holds no valid heartbeat of that
    node, is dropped with all its members.

Membership is kept like Erlang's ``pg``: each node owns its own Pids' memberships and tells the
others; every node caches what it heard, so :func:`cowboy_ws.members` and
:func:`cowboy_ws.broadcast` never wait for Redis.  The cache is eventually consistent: a join on
one node is seen on another after one pub/sub hop.  Everything one node publishes goes through one
connection from one thread, and Redis delivers one publisher's messages to a subscriber in the
order they were published (whatever the channel), so messages from one sender to one Pid arrive
in order, and group changes apply in order.

Bus messages are msgpack (no code runs when one is decoded) in an envelope with the sender, a
timestamp and a sequence number, and with a shared secret (``secret=``, ``--cluster-secret``,
``COWBOY_WS_CLUSTER_SECRET``) an HMAC-SHA256: see :mod:`cowboy_ws.bus_codec` for the format and
the limits, and docs/deployment.md ("Securing the bus") for the threat model.  Heartbeat values
are sealed the same way.  A message that fails a check is dropped and counted in
:attr:`RedisBackend.rejected` (by reason), with a rate-limited log line; the node goes on.

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
import os
import random
import ssl
import threading
import time
from collections import Counter, deque
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any

from .bus_codec import MIN_SECRET_BYTES, REPLAY_SLACK, Bus, Codec, PickleCodec, Rejected, make_codec
from .messaging import Backend, LocalNode

if TYPE_CHECKING:  # pragma: no cover
    from .process import Pid

log = logging.getLogger(__name__)

__all__ = ["RedisBackend", "RedisConfigError", "NODE_TTL", "DEFAULT_PREFIX", "SECRET_ENV"]

#: Seconds without a heartbeat after which a node and its members are dropped by the others.
NODE_TTL = 10.0
DEFAULT_PREFIX = "cowboy_ws"
#: The environment variable read for the bus secret when none is given.
SECRET_ENV = "COWBOY_WS_CLUSTER_SECRET"
#: Reconnection backoff, doubling from the first to the second (seconds, with jitter).
RECONNECT_MIN = 0.05
RECONNECT_MAX = 2.0
#: Publishes sent in one pipeline.
BATCH = 512
#: Messages waiting for the publisher; past it new ones are dropped (and counted).
MAX_QUEUE = 100_000
#: At most one log line about rejected bus messages per this many seconds.
REJECT_LOG_INTERVAL = 10.0

_HELLO, _SYNC_ALL, _SYNC_TO, _BYE = "hello", "sync-all", "sync-to", "bye"
#: what a broadcast may carry (never a close frame)
_BROADCAST_KINDS = frozenset(("text", "binary", "ping", "pong"))


class RedisConfigError(RuntimeError):
    """Redis refuses this node's credentials, or its TLS certificate is not trusted: retrying cannot help."""


def _import_redis() -> Any:
    try:
        import redis
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError("the Redis messaging backend needs redis-py: pip install 'cowboy-ws[redis]'") from None
    return redis


def _secret_bytes(secret: str | bytes | None) -> bytes | None:
    """The bus secret: given, else from :data:`SECRET_ENV`; None if neither (or empty)."""
    if secret is None:
        secret = os.environ.get(SECRET_ENV)
    if isinstance(secret, str):
        secret = secret.encode()
    return secret or None


def _config_problem(exc: BaseException) -> str | None:
    """Why ``exc`` (from connecting) means a wrong configuration rather than an outage, or None."""
    redis = _import_redis()
    if isinstance(exc, redis.AuthenticationError):
        return f"authentication failed: {exc}"
    if isinstance(exc, redis.exceptions.NoPermissionError):
        return f"permission denied: {exc}"
    seen: BaseException | None = exc
    while seen is not None:  # redis-py wraps the ssl error in its ConnectionError, sometimes only as text
        if isinstance(seen, ssl.SSLCertVerificationError) or "certificate verify failed" in str(seen):
            return f"TLS certificate not trusted: {seen}"
        if "alert certificate required" in str(seen) or "alert bad certificate" in str(seen):
            return f"TLS client certificate refused or missing (--redis-ssl-cert): {seen}"
        seen = seen.__cause__ or seen.__context__
    return None


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
    """Pid messages, process groups and broadcast across nodes over Redis pub/sub (redis-py).

    ``secret`` (str or bytes; None: the :data:`SECRET_ENV` environment variable, else none)
    authenticates every bus message; ``codec`` is ``"msgpack"`` (default) or ``"pickle"``
    (runs code from the bus: see :class:`cowboy_ws.bus_codec.PickleCodec`).  ``ssl_ca_certs``,
    ``ssl_certfile`` and ``ssl_keyfile`` go to redis-py for a ``rediss://`` URL.
    """

    name = "redis"

    def __init__(self, url: str, *, prefix: str = DEFAULT_PREFIX, node_ttl: float = NODE_TTL,
                 max_queue: int = MAX_QUEUE, connect_timeout: float = 2.0, secret: str | bytes | None = None,
                 codec: str = "msgpack", ssl_ca_certs: str | None = None, ssl_certfile: str | None = None,
                 ssl_keyfile: str | None = None) -> None:
        self._redis = _import_redis()
        self._redis.connection.parse_url(url)  # a malformed URL fails here, not in a thread
        if not node_ttl > 0:
            raise ValueError(f"node_ttl must be > 0, not {node_ttl!r}")
        make_codec(codec, lambda _o: None, lambda _n, _i: None)  # an unknown codec fails here
        self.url = url
        self.prefix = prefix
        self.node_ttl = float(node_ttl)
        self.max_queue = max_queue
        self.connect_timeout = connect_timeout
        self.codec_name = codec
        self.secret = _secret_bytes(secret)
        self._ssl: dict[str, str] = {k: v for k, v in (("ssl_ca_certs", ssl_ca_certs), ("ssl_certfile", ssl_certfile),
                                                       ("ssl_keyfile", ssl_keyfile)) if v is not None}
        if self._ssl and not url.startswith("rediss://"):
            raise ValueError("TLS options (CA, certificate, key) need a rediss:// URL")
        self.node = ""
        self.dropped = 0                 # messages dropped: queue full, or lost with a failed batch
        #: bus messages received and dropped, by reason (bad_mac, unsigned, stale, replay, malformed,
        #: oversized, codec, heartbeat)
        self.rejected: Counter[str] = Counter()
        self._rejects_logged = 0         # sum(self.rejected.values()) at the last log line
        self._reject_lock = threading.Lock()  # the subscriber and the heartbeat thread count
        self._reject_log_at = 0.0
        self._codec: Codec | None = None
        self._bus: Bus | None = None
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

    @classmethod
    def from_server_options(cls, redis_url: str, *, redis_prefix: str = DEFAULT_PREFIX,
                            node_ttl: float | None = None, cluster_secret: str | bytes | None = None,
                            cluster_codec: str = "msgpack", redis_ssl_ca: str | None = None,
                            redis_ssl_cert: str | None = None, redis_ssl_key: str | None = None) -> RedisBackend:
        """The backend for :class:`cowboy_ws.Server`'s (and ``workers.serve``'s) keyword arguments."""
        return cls(redis_url, prefix=redis_prefix, node_ttl=NODE_TTL if node_ttl is None else node_ttl,
                   secret=cluster_secret, codec=cluster_codec, ssl_ca_certs=redis_ssl_ca,
                   ssl_certfile=redis_ssl_cert, ssl_keyfile=redis_ssl_key)

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
                                    retry=Retry(NoBackoff(), 0), health_check_interval=0, **self._ssl)

    # -- life cycle ------------------------------------------------------------------------------

    def attach(self, local: LocalNode) -> None:
        self.local = local
        self.node = local.node_id()
        self._codec = make_codec(self.codec_name, local.pid_ref, local.pid)
        self._bus = Bus(self.node, self._codec, self.secret, max_age=self.node_ttl + REPLAY_SLACK)

    def check(self) -> None:
        """Connect once and PING: raise :class:`RedisConfigError` for a wrong password or ACL user, or an
        untrusted certificate; an unreachable Redis only logs (the node serves and reconnects)."""
        client = None
        try:
            client = self._client()
            client.ping()
        except Exception as exc:
            problem = _config_problem(exc)
            if problem is not None:
                raise RedisConfigError(f"redis {self._outage.where}: {problem}") from None
            log.warning("redis %s unreachable at start-up (%s: %s): serving anyway, reconnecting",
                        self._outage.where, type(exc).__name__, exc)
        finally:
            self._close(client)

    def start(self) -> None:
        if self._started:
            return
        if self.local is None:
            raise RuntimeError("install the backend with cowboy_ws.process.use_backend() before start()")
        self._started = True
        for name, target in (("subscriber", self._subscriber), ("publisher", self._publisher),
                             ("heartbeat", self._heartbeat)):
            thread = threading.Thread(target=target, name=f"cowboy_ws-redis-{name}", daemon=True)
            self._threads.append(thread)
            thread.start()
        log.info("node %s: messaging over redis %s (prefix %r, node_ttl %.1fs, codec %s, %s)", self.node,
                 self._outage.where, self.prefix, self.node_ttl, self.codec_name,
                 "HMAC-SHA256" if self.secret else "unauthenticated")
        if self.codec_name == "pickle":
            log.warning(PickleCodec.WARNING)
        if not self.secret:
            log.warning("the cluster bus is unauthenticated: anyone who can publish on redis %s can send "
                        "messages to this node's connections and change its view of the groups (set "
                        "--cluster-secret or %s on every node)", self._outage.where, SECRET_ENV)
        elif len(self.secret) < MIN_SECRET_BYTES:
            log.warning("the cluster secret is only %d bytes: use at least %d random bytes",
                        len(self.secret), MIN_SECRET_BYTES)

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
        if self.rejected:
            log.info("%d bus message(s) were rejected while running: %s", sum(self.rejected.values()),
                     dict(self.rejected))

    # -- outgoing (any thread, never blocks; encoding errors raise in the caller) -----------------

    def _encode(self, item: tuple) -> bytes:
        assert self._codec is not None and self._bus is not None, "not attached"
        body = self._codec.encode(item)
        self._bus.check_size(body)
        return body

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
        self._enqueue(self._channel(pid.node), self._encode(("m", pid.id, msg)))

    def _announce(self, item: tuple, group: Hashable) -> None:
        try:
            body = self._encode(item)
        except (TypeError, ValueError) as exc:
            log.warning("group %r cannot travel on the bus (%s): it stays local to node %s", group, exc, self.node)
            return
        self._enqueue(self._all(), body)

    def joined(self, group: Hashable, pid: Pid) -> None:
        self._announce(("j", group, pid.id), group)

    def left(self, group: Hashable, pid: Pid) -> None:
        self._announce(("l", group, pid.id), group)

    def exited(self, pid: Pid, groups: list) -> None:
        self._enqueue(self._all(), self._encode(("x", pid.id)))

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
            body = self._encode(("b", group, kind, data, ex_node, ex_id))
            for node in targets:
                self._enqueue(self._channel(node), body)
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
        """This node's membership, without the groups that cannot travel (they were logged at join)."""
        assert self.local is not None and self._codec is not None
        snap = self.local.membership()
        try:
            self._codec.encode(snap)
        except (TypeError, ValueError):
            snap = {g: ids for g, ids in snap.items() if self._travels(g)}
        return snap

    def _travels(self, group: Hashable) -> bool:
        try:
            self._codec.encode(group)  # type: ignore[union-attr]
            return True
        except (TypeError, ValueError):
            return False

    def _special(self, what: Any) -> tuple[str, bytes]:
        """A queued announcement built when it is sent: the membership is read at that moment."""
        assert self._codec is not None
        if what == _HELLO:
            return self._all(), self._codec.encode(("s", self._snapshot(), True))
        if what == _SYNC_ALL:
            return self._all(), self._codec.encode(("s", self._snapshot(), False))
        if what == _BYE:
            return self._all(), self._codec.encode(("bye",))
        _tag, node = what  # (_SYNC_TO, node): the answer to that node's hello
        return self._channel(node), self._codec.encode(("s", self._snapshot(), False))

    def _publisher(self) -> None:
        client = None
        backoff = RECONNECT_MIN
        resync = False
        queue = self._queue
        seal = self._bus.seal  # type: ignore[union-attr]
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
                if channel is None:
                    channel, data = self._special(data)
                batch.append((channel, seal(channel, data)))  # sequence numbers in publish order
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
                        self._handle(msg["channel"], msg["data"])
                    if self._stopping.is_set():
                        return
                    if time.monotonic() > deadline:
                        raise TimeoutError("no subscribe confirmation from redis")
                # our heartbeat exists before our hello: nobody expires us right after hearing us
                self._beat(client)
                self._grace_until = time.monotonic() + self.node_ttl
                self._outage.ok()
                backoff = RECONNECT_MIN
                self.subscribed.set()
                self._enqueue(None, _HELLO)
                while not self._stopping.is_set():
                    msg = pubsub.get_message(timeout=0.5)
                    if msg is not None and msg["type"] == "message":
                        self._handle(msg["channel"], msg["data"])
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

    def _handle(self, channel: bytes | str, data: Any) -> None:
        """One message from the bus: checked, decoded, applied; dropped and counted if anything is off."""
        try:
            if not isinstance(data, bytes):
                raise Rejected("malformed", f"a {type(data).__name__} from redis")
            sender, item = self._bus.open(channel, data)  # type: ignore[union-attr]
            if sender == self.node:  # our own announcement, back from <prefix>:all
                return
            self._apply(sender, item)
        except Rejected as exc:
            self._reject(exc)
        except Exception:  # a bug, not bad input: say so, keep serving
            log.exception("error handling a message from redis")

    def _apply(self, node: str, item: Any) -> None:
        """Act on a decoded body from ``node``; :class:`Rejected` if it is not one the protocol has."""
        local = self.local
        assert local is not None
        if item.__class__ is not tuple or not item:
            raise Rejected("malformed", f"a {type(item).__name__} body")
        tag, n = item[0], len(item)
        if tag == "m" and n == 3 and _is_id(item[1]):
            local.deliver(item[1], item[2])
        elif tag == "b" and n == 6 and item[2] in _BROADCAST_KINDS and item[3].__class__ is bytes:
            _t, group, kind, payload, ex_node, ex_id = item
            local.deliver_broadcast(_group(group), kind, payload, ex_id if ex_node == self.node else None)
        elif tag == "j" and n == 3 and _is_id(item[2]):
            group, pid_id = _group(item[1]), item[2]
            with self._lock:
                members = self._remote.setdefault(node, {}).setdefault(group, {})
                members[pid_id] = local.pid(node, pid_id)
        elif tag == "l" and n == 3 and _is_id(item[2]):
            group = _group(item[1])
            with self._lock:
                self._forget(node, group, item[2])
        elif tag == "x" and n == 2 and _is_id(item[1]):
            pid_id = item[1]
            with self._lock:
                groups = self._remote.get(node)
                if groups:
                    for group in [g for g, m in groups.items() if pid_id in m]:
                        self._forget(node, group, pid_id)
        elif tag == "s" and n == 3 and item[1].__class__ is dict and item[2].__class__ is bool:
            snapshot = {_group(g): ids for g, ids in item[1].items()}
            if not all(ids.__class__ is list and all(_is_id(i) for i in ids) for ids in snapshot.values()):
                raise Rejected("malformed", "membership")
            with self._lock:
                known = node in self._remote
                self._remote[node] = {group: {i: local.pid(node, i) for i in ids}
                                      for group, ids in snapshot.items() if ids}
            if not known:
                log.info("node %s is up (%d group(s))", node, len(snapshot))
            if item[2]:
                self._enqueue(None, (_SYNC_TO, node))
        elif tag == "bye" and n == 1:
            self._drop(node, "stopped")
        else:
            raise Rejected("malformed", f"no such message: {str(tag)[:20]!r} with {n} field(s)")

    def _reject(self, exc: Rejected) -> None:
        """Count a dropped message; log at most once per REJECT_LOG_INTERVAL."""
        with self._reject_lock:
            self.rejected[exc.reason] += 1
            now = time.monotonic()
            if now - self._reject_log_at < REJECT_LOG_INTERVAL:
                return
            total = sum(self.rejected.values())
            since, self._rejects_logged, self._reject_log_at = self._rejects_logged, total, now
        log.warning("node %s: dropped %d bus message(s) that failed checks (last: %s); totals %s",
                    self.node, total - since, exc, dict(self.rejected))

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

    def _beat(self, client: Any) -> bool:
        """Set our heartbeat key (a sealed value, expiring after node_ttl); whether it existed."""
        key = self._hb_key(self.node)
        value = self._bus.seal(key, self._codec.encode("hb"))  # type: ignore[union-attr]
        pipe = client.pipeline(transaction=False)
        pipe.exists(key)
        pipe.set(key, value, px=int(self.node_ttl * 1000))
        return bool(pipe.execute()[0])

    def _heartbeat(self) -> None:
        client = None
        interval = self.node_ttl / 3.0
        beaten = False
        delay = 0.0
        while not self._stopping.wait(delay):
            delay = interval
            try:
                if client is None:
                    client = self._client()
                existed = self._beat(client)
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
                client.delete(self._hb_key(self.node))
            except Exception:
                pass
            self._close(client)

    def _alive(self, node: str, key: str, value: Any) -> bool:
        """Whether ``value`` (of heartbeat key ``key``) is a valid, fresh heartbeat of ``node``."""
        if value is None:
            return False
        try:
            sender, item = self._bus.open(key, value, replay_check=False)  # type: ignore[union-attr]
        except Rejected as exc:
            self._reject(Rejected("heartbeat", str(exc)))
            return False
        if sender != node or item != "hb":
            self._reject(Rejected("heartbeat", f"{node}'s key holds {sender}'s {str(item)[:20]!r}"))
            return False
        return True

    def _expire(self, client: Any) -> None:
        """Drop the nodes whose heartbeat key expired (or holds no valid heartbeat of theirs)."""
        with self._lock:
            nodes = list(self._remote)
        if not nodes or time.monotonic() < self._grace_until:
            return
        keys = [self._hb_key(node) for node in nodes]
        for node, key, value in zip(nodes, keys, client.mget(keys), strict=False):
            if not self._alive(node, key, value):
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


def _is_id(value: Any) -> bool:
    """A Pid number as it travels: a non-negative int (bool is not one)."""
    return value.__class__ is int and value >= 0


def _group(group: Any) -> Hashable:
    """A group name as received: anything hashable, else the message is malformed."""
    try:
        hash(group)
    except TypeError:
        raise Rejected("malformed", f"a {type(group).__name__} as group name") from None
    return group
