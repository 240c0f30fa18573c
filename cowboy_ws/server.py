"""The listener (Ranch's part) and the server that owns the loop, routes and connections.

``Server(routes, host=..., port=...)`` binds at construction (port 0 picks a free
port: read :attr:`Server.port`), then :meth:`Server.serve_forever` runs the loop
on the calling thread, or :meth:`Server.start` runs it on a background thread.
:meth:`Server.shutdown` (thread-safe) stops accepting, sends Close 1001 to every
connection, waits up to the grace period for the closing handshakes, calls
every ``terminate`` and returns.

Limits (defaults in :mod:`cowboy_ws.options`): ``max_connections`` counts every
open connection, in handshake or upgraded; past it a new client gets a minimal
503 and is closed, existing ones are untouched.  ``handshake_timeout`` is an
absolute deadline from accept.  ``allowed_origins`` refuses a WebSocket upgrade
whose ``Origin`` is not listed with 403, before ``init``.  Accept failing for
lack of file descriptors or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM) stops
accepting for a while (backing off up to a second) instead of spinning, and
logs once per episode.

Reach beyond one process: ``redis_url="redis://..."`` makes ``pid.send``, process
groups and ``broadcast`` span every server (node) sharing that Redis
(:mod:`cowboy_ws.redis_backend`; ``cluster_secret`` authenticates the bus,
``cluster_codec`` picks its codec, ``redis_ssl_*`` are the ``rediss://`` CA,
certificate and key); without it everything stays in this process.
``metrics_port=N`` serves Prometheus metrics at ``http://HOST:N/metrics``
(:mod:`cowboy_ws.metrics`; ``metrics_host`` defaults to ``host``).
``sock=`` serves an already listening socket (inherited from a parent, as the
workers of :mod:`cowboy_ws.workers` do); ``reuse_port=True`` binds with
``SO_REUSEPORT`` so that several processes listen on one port.
"""

from __future__ import annotations

import errno
import itertools
import logging
import selectors
import socket
import ssl
import threading
from collections.abc import Iterable
from typing import Any

from . import __version__, process
from .http import HttpConnection
from .loop import Loop
from .memory import tune_malloc
from .messaging import Backend
from .metrics import SNAPSHOT_INTERVAL, MetricsServer, Stats, StatsCollector
from .options import (
    ACCEPT_BACKOFF,
    ACCEPT_BACKOFF_MAX,
    HANDSHAKE_TIMEOUT,
    MAX_CONNECTIONS,
    SHUTDOWN_GRACE,
    WebSocketOptions,
)
from .router import Router

log = logging.getLogger(__name__)

__all__ = ["Server", "backend", "HANDSHAKE_TIMEOUT", "SHUTDOWN_GRACE", "MAX_CONNECTIONS"]

_ACCEPT_RESOURCE_ERRORS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)

_cids = itertools.count(1)

#: Seconds serve_forever waits for the messaging backend (Redis subscribed) before serving anyway.
MESSAGING_READY_TIMEOUT = 3.0


def backend() -> str:
    """Which kernel backend is active: ``"c"`` or ``"python"``."""
    from .protocol import kernels
    return kernels.BACKEND


class Server:
    """A cowboy_ws server: listener + loop + router + the connections."""

    def __init__(self, routes: Router | Iterable[Any], *, host: str = "127.0.0.1", port: int = 8080,
                 ssl_context: ssl.SSLContext | None = None, backlog: int = 1024,
                 ws_options: WebSocketOptions | dict | None = None,
                 handshake_timeout: float = HANDSHAKE_TIMEOUT, shutdown_grace: float = SHUTDOWN_GRACE,
                 max_connections: int = MAX_CONNECTIONS,
                 allowed_origins: Iterable[str | None] | None = None,
                 sock: socket.socket | None = None, reuse_port: bool = False,
                 redis_url: str | None = None, redis_prefix: str = "cowboy_ws", node_ttl: float | None = None,
                 cluster_secret: str | bytes | None = None, cluster_codec: str = "msgpack",
                 redis_ssl_ca: str | None = None, redis_ssl_cert: str | None = None,
                 redis_ssl_key: str | None = None, messaging: Backend | None = None,
                 metrics_port: int | None = None, metrics_host: str | None = None,
                 metrics_snapshot: str | None = None) -> None:
        self.router = routes if isinstance(routes, Router) else Router(routes)
        if isinstance(ws_options, dict):
            ws_options = WebSocketOptions().merged(ws_options)
        self.ws_options = ws_options or WebSocketOptions()
        self.ssl_context = ssl_context
        if not handshake_timeout > 0:
            raise ValueError(f"handshake_timeout must be > 0, not {handshake_timeout!r}")
        if not (isinstance(max_connections, int) and max_connections > 0):
            raise ValueError(f"max_connections must be a positive int, not {max_connections!r}")
        self.handshake_timeout = handshake_timeout
        self.shutdown_grace = shutdown_grace
        self.max_connections = max_connections
        #: None: any Origin; else the allowed Origin values (case-insensitive), None in it allowing
        #: a request without Origin (non-browser clients), as websockets' ``origins``.
        self.allowed_origins: frozenset[str | None] | None = None
        if allowed_origins is not None:
            if isinstance(allowed_origins, str):
                allowed_origins = [allowed_origins]
            self.allowed_origins = frozenset(o.lower().rstrip("/") if isinstance(o, str) else o
                                             for o in allowed_origins)
        self.server_header = f"cowboy_ws/{__version__}"
        self.loop = Loop()
        #: The numbers behind the metrics (cowboy_ws.metrics.Stats), None when metrics are off.
        self.stats: Stats | None = Stats() if (metrics_port is not None or metrics_snapshot is not None) else None
        #: ``/metrics`` on ``metrics_port`` (0 picks a free one: read ``metrics.port``), served while running.
        self.metrics: MetricsServer | None = None
        #: Where a worker of --workers writes its numbers for the supervisor (cowboy_ws.metrics).
        self.metrics_snapshot = metrics_snapshot
        self.connections: dict[Any, None] = {}
        #: connections counted against max_connections (refused ones that linger are not)
        self.open_connections = 0
        self.refused_connections = 0       # turned away with 503 since start
        self._lingering = 0                # refused connections still reading out the client
        self._backoff = 0.0                # current accept back-off (s); 0 while accept works
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()
        self._shutting_down = False
        #: The messaging backend this server installs while it runs (None: the local default)
        self.messaging: Backend | None = messaging
        if redis_url is not None:
            if messaging is not None:
                raise ValueError("give redis_url or messaging, not both")
            from .redis_backend import RedisBackend
            self.messaging = RedisBackend.from_server_options(
                redis_url, redis_prefix=redis_prefix, node_ttl=node_ttl, cluster_secret=cluster_secret,
                cluster_codec=cluster_codec, redis_ssl_ca=redis_ssl_ca, redis_ssl_cert=redis_ssl_cert,
                redis_ssl_key=redis_ssl_key)
        if sock is not None:
            sock.setblocking(False)
            self.sock = sock
        else:
            self.sock = self._bind(host, port, backlog, reuse_port)
        self.host, self.port = self.sock.getsockname()[:2]
        if metrics_port is not None:
            try:
                self.metrics = MetricsServer(metrics_host or host, metrics_port,
                                             StatsCollector(lambda: [(None, self.stats.snapshot())]))  # type: ignore[union-attr]
            except BaseException:
                self.sock.close()
                raise
        self.loop.selector.register(self.sock, selectors.EVENT_READ, self._on_accept)

    @staticmethod
    def _bind(host: str, port: int, backlog: int, reuse_port: bool = False, listen: bool = True) -> socket.socket:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
            if not listen:
                return sock
            sock.listen(backlog)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        return sock

    @property
    def url(self) -> str:
        scheme = "wss" if self.ssl_context else "ws"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"

    # -- accepting -----------------------------------------------------------------

    def _on_accept(self, _mask: int) -> None:
        for _ in range(256):  # accept until EAGAIN, bounded so one round stays short
            try:
                sock, peer = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                if exc.errno in _ACCEPT_RESOURCE_ERRORS:
                    self._back_off(exc)
                    return
                log.warning("accept failed: %s", exc)  # ECONNABORTED and the like: that client only
                continue
            try:
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
            refuse = self.open_connections >= self.max_connections
            try:
                if self.ssl_context is not None:
                    sock = self.ssl_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
            except OSError as exc:  # the peer is already gone (ENOTCONN ...)
                log.info("accept: cannot set up TLS for %s: %s", peer, exc)
                sock.close()
                continue
            cid = f"{next(_cids):x}"
            conn = HttpConnection(self, sock, peer[:2], cid, refuse=503 if refuse else None)
            self.connections[conn] = None
            if refuse:
                self.refused_connections += 1
                log.warning("[%s] %d connections open (max_connections): refusing %s with 503",
                            cid, self.open_connections, peer[0])
            else:
                self.open_connections += 1
            conn.start()
        if self._backoff:
            log.info("accepting again (after backing off %.1fs)", self._backoff)
            self._backoff = 0.0

    def _back_off(self, exc: OSError) -> None:
        """Out of fds or memory: stop accepting for a while instead of spinning on a readable listener."""
        first = not self._backoff
        self._backoff = ACCEPT_BACKOFF if first else min(self._backoff * 2, ACCEPT_BACKOFF_MAX)
        if first:
            log.error("accept failed (%s) with %d connections open: pausing accept, retrying every "
                      "%.1f-%.1fs", exc.strerror or exc, len(self.connections), ACCEPT_BACKOFF, ACCEPT_BACKOFF_MAX)
        try:
            self.loop.selector.unregister(self.sock)
        except (KeyError, ValueError):
            pass
        self.loop.call_later(self._backoff, self._resume_accept)

    def _resume_accept(self) -> None:
        """End of a back-off: accept at once (an empty backlog ends the episode, and logs it, now rather
        than at the next client's arrival), then wait on the listener again unless that backed off."""
        if self._shutting_down:
            return
        self.loop.selector.register(self.sock, selectors.EVENT_READ, self._on_accept)
        self._on_accept(selectors.EVENT_READ)

    def _adopt(self, old: Any, new: Any) -> None:
        self.connections.pop(old, None)
        self.connections[new] = None

    def _forget(self, conn: Any) -> None:
        if self.connections.pop(conn, False) is None and getattr(conn, "counted", True):
            self.open_connections -= 1
        if self._shutting_down and not self.connections:
            self.loop.stop()

    # -- running -------------------------------------------------------------------

    def serve_forever(self) -> None:
        """Run the loop on this thread until :meth:`shutdown`."""
        from .protocol import kernels
        tune_malloc()
        scheme = "https" if self.ssl_context else "http"
        messaging = self.messaging
        if messaging is not None:
            try:
                messaging.check()  # a wrong password or an untrusted certificate: fail now, loudly
                process.use_backend(messaging)  # raises if another server of this process has one
            except BaseException:
                self._close_after_failed_start()
                raise
            messaging.start()
            # reachable from other nodes before the first connection runs (bounded: Redis may be down)
            messaging.wait_ready(MESSAGING_READY_TIMEOUT)
        from ._backendinfo import pure_note  # why pure Python, how to get C (a failed C build is silent in pip)
        note = pure_note()
        log.info("cowboy_ws %s listening on %s://%s:%d (backend %s, compress %s)%s", __version__, scheme,
                 self.host, self.port, kernels.BACKEND, "on" if self.ws_options.compress else "off",
                 f"; {note}" if note else "")
        if self.metrics is not None:
            self.metrics.start()
            log.info("metrics on http://%s:%d/metrics", self.metrics.host, self.metrics.port)
        if self.metrics_snapshot is not None:
            self._write_snapshot()
        try:
            try:
                self.loop.run()
            except KeyboardInterrupt:  # Ctrl-C: close every connection with 1001, then stop
                log.info("KeyboardInterrupt: closing %d connection(s) (1001), grace %.1fs",
                         len(self.connections), self.shutdown_grace)
                self.loop.call_soon(self._begin_shutdown, self.shutdown_grace)
                try:
                    self.loop.run()
                except KeyboardInterrupt:  # a second one: stop now
                    pass
                raise
        finally:
            for conn in list(self.connections):
                if hasattr(conn, "_finish"):
                    conn._finish()
                else:
                    conn.close()
            try:
                self.sock.close()
            except OSError:
                pass
            self.loop.close()
            if self.metrics is not None:
                self.metrics.close()
            if self.metrics_snapshot is not None:
                self._write_snapshot(again=False)
            if messaging is not None:  # after every connection left its groups: the others hear it
                try:
                    messaging.stop()
                finally:
                    if process.current_backend() is messaging:
                        process.use_backend(None)
            self._stopped.set()

    def _write_snapshot(self, again: bool = True) -> None:
        """--workers: this worker's numbers to its file, every SNAPSHOT_INTERVAL seconds."""
        try:
            self.stats.write_snapshot(self.metrics_snapshot)  # type: ignore[union-attr, arg-type]
        except OSError as exc:
            log.warning("cannot write the metrics snapshot %s: %s", self.metrics_snapshot, exc)
        if again:
            self.loop.call_later(SNAPSHOT_INTERVAL, self._write_snapshot)

    def _close_after_failed_start(self) -> None:
        if self.metrics is not None:
            self.metrics.httpd.server_close()
        try:
            self.sock.close()
        except OSError:
            pass
        self.loop.close()
        self._stopped.set()

    def start(self) -> Server:
        """Run the loop on a daemon thread; returns at once."""
        self._thread = threading.Thread(target=self.serve_forever, name=f"cowboy_ws:{self.port}", daemon=True)
        self._thread.start()
        return self

    def shutdown(self, grace: float | None = None, wait: bool = True) -> None:
        """Stop accepting, close every connection with 1001, wait up to ``grace`` s, stop (thread-safe)."""
        grace = self.shutdown_grace if grace is None else grace
        self.loop.call_soon_threadsafe(self._begin_shutdown, grace)
        if wait and (self._thread is None or threading.current_thread() is not self._thread):
            if self._thread is not None or self.loop.thread_id is not None:
                self._stopped.wait(grace + 5)

    def _begin_shutdown(self, grace: float) -> None:
        if self._shutting_down:
            return
        self._shutting_down = True
        log.info("shutting down: closing %d connection(s), grace %.1fs", len(self.connections), grace)
        try:
            self.loop.selector.unregister(self.sock)
        except (KeyError, ValueError):
            pass
        self.sock.close()
        for conn in list(self.connections):
            if hasattr(conn, "close_going_away"):
                conn.close_going_away()
            else:
                conn.close()
        if not self.connections:
            self.loop.stop()
        else:
            self.loop.call_later(grace, self.loop.stop)

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()
