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
    once for all of them), a request for its whole membership (``("r",)``) and the answer to
    that request or to its ``hello`` (a snapshot, below, with ``answer`` False).
``<prefix>:all``  (channel)
    group changes, announced by the node whose Pids changed, batched: ``("c", [[op, group,
    [number, ...]], ...])``, ``op`` ``"j"`` (join) or ``"l"`` (leave; a Pid that exits leaves
    each of its groups), in the order they happened, all the changes that waited for the
    publisher in one message (runs of one op and group share one list); the node's whole
    membership, a *snapshot*, in parts (``("s", answer, part, last, [[group, [number, ...]],
    ...])``, part 0, 1, ... and ``last`` True on the final one: a receiver replaces what it knew
    of the node once it has them all, in order) on start and after reconnecting, with ``answer``
    True asking every node to answer with its own; and ``("bye",)`` when a node stops.  No
    membership message holds more than :data:`CHUNK_IDS` Pid numbers.
``<prefix>:hb:<node id>``  (key with expiry)
    the node's heartbeat (a sealed ``"hb"``), set every ``node_ttl / 3`` s to expire after
    ``node_ttl`` s.  Each node checks the heartbeats of the nodes it knows members of at the same
    pace; a node whose key is gone (killed, frozen, cut off), or holds no valid heartbeat of that
    node, is dropped with all its members.

Membership is kept like Erlang's ``pg``: each node owns its own Pids' memberships and tells the
others; every node caches what it heard (Pid numbers per node and group: Pids are built when
:func:`cowboy_ws.members` asks), so :func:`cowboy_ws.members` and :func:`cowboy_ws.broadcast`
never wait for Redis.  The cache is eventually consistent: a join on one node is seen on another
after one pub/sub hop.  A node that drops a message of another as stale (its subscriber fell
more than ``node_ttl`` + :data:`~cowboy_ws.bus_codec.REPLAY_SLACK` s behind) or gets a snapshot
with a part missing has missed changes: it asks that node for its snapshot (``("r",)``, again
every ``node_ttl / 3`` s until a whole one arrives) and sends it its own.  Everything one node
publishes goes through one connection from one thread, and Redis delivers one publisher's messages
to a subscriber in the order they were published (whatever the channel), so messages from one
sender to one Pid arrive in order, and group changes apply in order.

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
#: Pid numbers in one membership message (a batch of changes, a part of a snapshot): at most 9 bytes
#: each in msgpack, so a part stays far below MAX_MESSAGE_SIZE; a larger membership goes in parts.
CHUNK_IDS = 16_384
#: Nodes this node asks at once for their membership (bounded: without a secret anyone can name nodes).
MAX_WANTED = 1024
#: Times a node that is not (or no longer) known is asked for its membership before we give up.
WANT_TRIES = 20

_HELLO, _SYNC_ALL, _SYNC_TO, _BYE, _CHANGES = "hello", "sync-all", "sync-to", "bye", "changes"
_JOIN, _LEAVE = "j", "l"
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
        self._lock = threading.Lock()    # the cache of other nodes' members, _wanted, _answering
        #: other nodes' members: node -> group -> Pid numbers (Pids are built when asked for: a number
        #: costs ~60 bytes here, a Pid with its own copy of the node id ~280)
        self._remote: dict[str, dict[Hashable, set[int]]] = {}
        #: a snapshot being received in parts: node -> (next part, groups so far)
        self._partial: dict[str, tuple[int, dict[Hashable, set[int]]]] = {}
        #: nodes whose membership we missed part of and asked for: node -> [last asked (monotonic), tries]
        self._wanted: dict[str, list] = {}
        #: nodes whose request for our membership is queued and not yet answered
        self._answering: set[str] = set()
        #: local membership changes not yet published: runs of [op, group, [number, ...]], in order
        self._changes: list[list] = []
        self._changes_count = 0
        self._changes_queued = False     # a _CHANGES marker is in the queue
        self._changes_lock = threading.Lock()
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

    def _change(self, op: str, group: Hashable, pid_id: int) -> None:
        """Queue a membership change: the publisher sends all those queued in one message (or a few).

        Consecutive changes of one kind to one group share a run (a join storm is one run per
        batch).  Past ``max_queue`` changes waiting (Redis down long), they are replaced by the whole
        membership, read when it is sent.
        """
        with self._changes_lock:
            runs = self._changes
            last = runs[-1] if runs else None
            if last is not None and last[0] is op and (last[1] is group or last[1] == group):
                last[2].append(pid_id)
            else:
                runs.append([op, group, [pid_id]])
            self._changes_count += 1
            if self._changes_count > self.max_queue:
                self._changes, self._changes_count = [], 0
                log.warning("node %s: %d membership changes waiting for redis: announcing the whole "
                            "membership instead", self.node, self.max_queue)
                self._enqueue(None, _SYNC_ALL)
            elif not self._changes_queued:
                self._changes_queued = True
                self._enqueue(None, _CHANGES)

    def joined(self, group: Hashable, pid: Pid) -> None:
        self._change(_JOIN, group, pid.id)

    def left(self, group: Hashable, pid: Pid) -> None:
        self._change(_LEAVE, group, pid.id)

    def exited(self, pid: Pid, groups: list) -> None:
        for group in groups:
            self._change(_LEAVE, group, pid.id)

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
            found = [(node, list(members)) for node, groups in self._remote.items()
                     if (members := groups.get(group))]
        make = self.local.pid  # type: ignore[union-attr]
        return [make(node, pid_id) for node, ids in found for pid_id in ids]

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

    def _travels(self, group: Hashable) -> bool:
        try:
            self._bus.check_size(self._codec.encode(group))  # type: ignore[union-attr]
            return True
        except (TypeError, ValueError) as exc:
            log.warning("group %r cannot travel on the bus (%s): it stays local to node %s", group, exc, self.node)
            return False

    def _chunks(self, make: Any, runs: list[list]) -> list[tuple[list, bytes]]:
        """``runs`` (lists ending ``group, [number, ...]``) cut into parts whose ``make(part)`` fits the bus.

        Returns ``(part, encoded make(part))`` in order.  At most :data:`CHUNK_IDS` numbers a part;
        a part still too large (long group names) is halved; a group that cannot travel is left out
        (logged).
        """
        assert self._codec is not None and self._bus is not None
        limit = self._bus.max_size - self._bus.overhead - 64  # room for the part number, re-encoded
        parts: list[list] = []
        part: list[list] = []
        room = CHUNK_IDS
        for run in runs:
            *head, ids = run
            start = 0
            while start < len(ids):
                if room == 0:
                    parts.append(part)
                    part, room = [], CHUNK_IDS
                piece = ids[start:start + room]
                part.append([*head, piece])
                room -= len(piece)
                start += len(piece)
        if part or not parts:
            parts.append(part)
        out: list[tuple[list, bytes]] = []
        todo = parts[::-1]
        while todo:
            part = todo.pop()
            try:
                body = self._codec.encode(make(part))
            except (TypeError, ValueError):
                kept = [run for run in part if self._travels(run[-2])]
                if len(kept) < len(part):
                    todo.append(kept)
                else:
                    log.exception("node %s: membership message not encodable", self.node)
                continue
            if len(body) <= limit:
                out.append((part, body))
            elif len(part) > 1:
                todo += [part[len(part) // 2:], part[:len(part) // 2]]
            elif len(part[0][-1]) > 1:
                *head, ids = part[0]
                todo += [[[*head, ids[len(ids) // 2:]]], [[*head, ids[:len(ids) // 2]]]]
            else:
                log.warning("group %r cannot travel on the bus (its name is too long): it stays local to node %s",
                            part[0][-2], self.node)
        return out

    def _snapshot(self, channel: str, answer: bool) -> list[tuple[str, bytes]]:
        """This node's whole membership, read now, as ``("s", answer, part, last, [[group, [number, ...]], ...])``
        messages on ``channel``: a receiver replaces what it knew of this node once it has every part."""
        assert self.local is not None and self._codec is not None
        runs = [[group, ids] for group, ids in self.local.membership().items() if ids]
        parts = self._chunks(lambda part: ("s", answer, 0, False, part), runs) or [([], b"")]
        last = len(parts) - 1
        return [(channel, self._codec.encode(("s", answer, i, i == last, part))) for i, (part, _) in enumerate(parts)]

    def _special(self, what: Any) -> list[tuple[str, bytes]]:
        """A queued announcement built when it is sent: the membership is read at that moment."""
        assert self._codec is not None
        if what == _CHANGES:
            with self._changes_lock:
                runs, self._changes, self._changes_count = self._changes, [], 0
                self._changes_queued = False
            return [(self._all(), body) for _part, body in self._chunks(lambda part: ("c", part), runs) if _part]
        if what == _HELLO:
            return self._snapshot(self._all(), True)
        if what == _SYNC_ALL:
            return self._snapshot(self._all(), False)
        if what == _BYE:
            return [(self._all(), self._codec.encode(("bye",)))]
        _tag, node = what  # (_SYNC_TO, node): the answer to that node's hello or request
        with self._lock:
            self._answering.discard(node)  # a request after this read gets another answer
        return self._snapshot(self._channel(node), False)

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
                    batch += [(ch, seal(ch, body)) for ch, body in self._special(data)]
                else:
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
            if exc.sender is not None and exc.sender != self.node:  # stale: we missed what it said
                self._want(exc.sender)
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
        elif tag == "c" and n == 2 and item[1].__class__ is list:
            self._apply_changes(node, _runs(item[1], 3))
        elif (tag == "s" and n == 5 and item[1].__class__ is bool and _is_id(item[2]) and item[3].__class__ is bool
              and item[4].__class__ is list):
            if item[1] and item[2] == 0:  # a hello: answer with ours (even if a later part goes missing)
                self._answer(node)
            self._apply_snapshot(node, item[2], item[3], _runs(item[4], 2))
        elif tag == "r" and n == 1:
            self._answer(node)
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

    def _apply_changes(self, node: str, runs: list[list]) -> None:
        """Joins and leaves of ``node``'s Pids, in the order they happened."""
        with self._lock:
            groups = self._remote.get(node)
            for op, group, ids in runs:
                if op == _JOIN:
                    if groups is None:  # a node heard of first by a join (its hello went missing)
                        groups = self._remote.setdefault(node, {})
                        self._want_locked(node)
                    members = groups.get(group)
                    if members is None:
                        groups[group] = set(ids)
                    else:
                        members.update(ids)
                elif groups is not None and (members := groups.get(group)) is not None:
                    members.difference_update(ids)
                    if not members:
                        del groups[group]

    def _apply_snapshot(self, node: str, part: int, last: bool, runs: list[list]) -> None:
        """A part of ``node``'s whole membership: once the last arrives after all the others, it
        replaces what this node knew of it; a part out of turn (one went missing) asks again."""
        so_far = self._partial.pop(node, None)
        if part == 0:
            groups: dict[Hashable, set[int]] = {}
        elif so_far is not None and so_far[0] == part:
            groups = so_far[1]
        else:
            self._want(node)
            return
        for group, ids in runs:
            members = groups.get(group)
            if members is None:
                groups[group] = set(ids)
            else:
                members.update(ids)
        if not last:
            self._partial[node] = (part + 1, groups)
            return
        with self._lock:
            known = node in self._remote
            self._remote[node] = groups
            self._wanted.pop(node, None)
        if not known:
            log.info("node %s is up (%d group(s))", node, len(groups))

    def _want(self, node: str) -> None:
        """We missed part of what ``node`` said about its groups: ask it for its whole membership."""
        with self._lock:
            self._want_locked(node)

    def _want_locked(self, node: str) -> None:
        if node in self._wanted or len(self._wanted) >= MAX_WANTED:
            return  # already asked (the heartbeat thread asks again until the answer arrives)
        self._wanted[node] = [time.monotonic(), 1]
        log.info("node %s: missed membership changes of node %s: asking it for its membership", self.node, node)
        self._enqueue(self._channel(node), self._encode(("r",)))
        self._answer_locked(node)  # what we missed may have been its hello, which we did not answer

    def _answer(self, node: str) -> None:
        with self._lock:
            self._answer_locked(node)

    def _answer_locked(self, node: str) -> None:
        """Queue our membership for ``node`` once (requests that pile up get one answer)."""
        if node not in self._answering and len(self._answering) < MAX_WANTED:
            self._answering.add(node)
            self._enqueue(None, (_SYNC_TO, node))

    def _ask_again(self) -> None:
        """The nodes asked for their membership that did not answer in time are asked again."""
        now = time.monotonic()
        with self._lock:
            for node, asked in list(self._wanted.items()):
                if now - asked[0] < self.node_ttl / 3.0:
                    continue
                if asked[1] >= WANT_TRIES and node not in self._remote:
                    del self._wanted[node]  # not a node we know of, and it does not answer
                    continue
                asked[0], asked[1] = now, asked[1] + 1
                self._enqueue(self._channel(node), self._encode(("r",)))

    def _drop(self, node: str, why: str) -> None:
        with self._lock:
            groups = self._remote.pop(node, None)
            self._wanted.pop(node, None)
            self._partial.pop(node, None)
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
                self._ask_again()
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


def _runs(value: list, size: int) -> list[list]:
    """Runs of a membership message as received: lists of ``size`` items ending ``group, [number, ...]``
    (a change's first item is ``"j"`` or ``"l"``), else the message is malformed."""
    for run in value:
        if (run.__class__ is not list or len(run) != size or run[-1].__class__ is not list
                or not all(_is_id(i) for i in run[-1]) or (size == 3 and run[0] not in (_JOIN, _LEAVE))):
            raise Rejected("malformed", "membership")
        run[-2] = _group(run[-2])
    return value


def _group(group: Any) -> Hashable:
    """A group name as received: anything hashable, else the message is malformed."""
    try:
        hash(group)
    except TypeError:
        raise Rejected("malformed", f"a {type(group).__name__} as group name") from None
    return group
