"""``--workers N``: N server processes on one port, each with its own loop, under a supervisor.

Cowboy uses every core because each connection is an Erlang process.  A Python
process runs Python on one core at a time, so cowboy_ws runs N processes::

    python -m cowboy_ws myapp:Handler --port 8080 --workers 4 --redis redis://127.0.0.1:6379/0

or from Python::

    from cowboy_ws import workers
    workers.serve([("/ws", Handler, None)], workers=4, port=8080, redis_url="redis://...")

The parent binds the port, forks the workers, and only supervises:

* the listening socket: with ``SO_REUSEPORT`` (Linux, the default) every worker
  listens on its own socket bound to the port and the kernel spreads new
  connections evenly over them; the parent holds the port with a bound socket
  that does not listen (so port 0 picks one port for all).  Otherwise
  (``reuse_port=False``) the parent's listening socket is inherited by every
  worker, which all accept from it.
* a worker that dies (crash, ``SIGKILL``, OOM) is started again: at once if it had
  run ``stable_after`` seconds, else after a backoff doubling from
  ``backoff_min`` to ``backoff_max`` seconds (a worker that cannot start does not spin).
* ``SIGTERM`` or ``SIGINT`` to the parent: it stops listening and sends ``SIGTERM``
  to every worker, which shuts down gracefully (Close 1001 to every connection,
  ``terminate``, its node says goodbye on Redis); the parent exits 0 once all have
  exited.  A second signal makes the workers stop without waiting for closing
  handshakes; past ``stop_timeout`` the rest are killed (exit status 1).
  Workers ignore ``SIGINT`` (a Ctrl-C reaches the whole process group: the parent
  relays it once), and stop when the parent is gone.

Each worker is its own node (:func:`cowboy_ws.process.node`): without Redis its
Pids, groups and broadcasts stay inside it; with ``redis_url`` they span all workers
(and every other server on that Redis).  :func:`worker_id` tells a handler which
worker it runs in.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import shutil
import signal
import socket
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["Supervisor", "serve", "worker_id", "run_worker"]

BACKOFF_MIN = 0.1
BACKOFF_MAX = 10.0
STABLE_AFTER = 5.0
PARENT_CHECK = 1.0      # seconds between a worker's checks that its parent is still there

_worker_id: int | None = None


def worker_id() -> int | None:
    """The index (0..N-1) of the worker this process is, or None outside ``--workers``."""
    return _worker_id


def _describe(status: int) -> str:
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with status {code}"


class Supervisor:
    """Fork ``workers`` children running ``target(index)`` (its return value is the exit status); keep them up.

    :meth:`run` blocks in the parent until SIGTERM/SIGINT and every child has
    exited; it returns 0, or 1 when children had to be killed after ``stop_timeout``.
    ``on_stop`` runs in the parent when stopping begins (close the listening socket).
    """

    def __init__(self, workers: int, target: Callable[[int], int | None], *, stop_timeout: float = 30.0,
                 backoff_min: float = BACKOFF_MIN, backoff_max: float = BACKOFF_MAX,
                 stable_after: float = STABLE_AFTER, on_stop: Callable[[], Any] | None = None,
                 in_child: Callable[[], Any] | None = None,
                 readers: dict[Any, Callable[[], Any]] | None = None) -> None:
        if not (isinstance(workers, int) and workers > 0):
            raise ValueError(f"workers must be a positive int, not {workers!r}")
        self.workers = workers
        self.target = target
        self.stop_timeout = stop_timeout
        self.backoff_min = backoff_min
        self.backoff_max = backoff_max
        self.stable_after = stable_after
        self.on_stop = on_stop
        self.in_child = in_child
        #: sockets the parent also waits on, and what to call when one is readable (the metrics server)
        self.readers = readers or {}
        self.children: dict[int, tuple[int, float]] = {}    # os pid -> (index, started at)
        self.restarts = 0
        self._restart_at: dict[int, float] = {}              # index -> when to start it again
        self._backoff: dict[int, float] = {}
        self._signals: list[int] = []
        self._stopping = False
        self._kill_at = float("inf")
        self._killed = False
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None

    # -- parent ----------------------------------------------------------------------------

    def run(self) -> int:
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        old_wakeup = signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
        previous = {sig: signal.signal(sig, self._on_signal)
                    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD)}
        try:
            for index in range(self.workers):
                self._spawn(index)
            log.info("supervising %d worker(s): pids %s", self.workers,
                     " ".join(str(p) for p in sorted(self.children)))
            while True:
                self._take_signals()
                self._reap()
                now = time.monotonic()
                if self._stopping:
                    if not self.children:
                        break
                    if now >= self._kill_at:
                        log.error("%d worker(s) still running %.0fs after SIGTERM: killing them",
                                  len(self.children), self.stop_timeout)
                        self._kill_all(signal.SIGKILL)
                        self._killed = True
                        self._kill_at = float("inf")
                else:
                    for index, when in list(self._restart_at.items()):
                        if when <= now:
                            del self._restart_at[index]
                            self._spawn(index)
                            self.restarts += 1
                due = min([self._kill_at, *self._restart_at.values()], default=float("inf"))
                timeout = max(0.0, min(due - now, 1.0))
                try:
                    ready = select.select([self._wake_r, *self.readers], [], [], timeout)[0]
                except InterruptedError:  # pragma: no cover - PEP 475 retries
                    ready = []
                for sock in ready:
                    if sock in self.readers:
                        try:
                            self.readers[sock]()
                        except Exception:
                            log.exception("error serving %r", sock)
                try:
                    while self._wake_r.recv(4096):
                        pass
                except (BlockingIOError, InterruptedError):
                    pass
        finally:
            if self._stopping is False:  # an exception in the parent: do not leave orphans
                self._kill_all(signal.SIGTERM)
            signal.set_wakeup_fd(old_wakeup)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self._wake_r.close()
            self._wake_w.close()
        log.info("all workers stopped")
        return 1 if self._killed else 0

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self._signals.append(signum)

    def _take_signals(self) -> None:
        while self._signals:
            signum = self._signals.pop(0)
            if signum == signal.SIGCHLD:
                continue
            name = signal.Signals(signum).name
            if not self._stopping:
                self._stopping = True
                self._restart_at.clear()
                self._kill_at = time.monotonic() + self.stop_timeout
                log.info("%s received: stopping %d worker(s) gracefully", name, len(self.children))
                if self.on_stop is not None:
                    try:
                        self.on_stop()
                    except Exception:
                        log.exception("on_stop failed")
            else:
                log.warning("%s received again: workers stop without waiting for their peers", name)
            self._kill_all(signal.SIGTERM)

    def _kill_all(self, sig: int) -> None:
        for pid in list(self.children):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def _reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            except OSError as exc:  # pragma: no cover
                if exc.errno == errno.EINTR:
                    continue
                raise
            if pid == 0:
                return
            entry = self.children.pop(pid, None)
            if entry is None:
                continue
            index, started = entry
            lived = time.monotonic() - started
            if self._stopping:
                level = logging.INFO if os.waitstatus_to_exitcode(status) == 0 else logging.WARNING
                log.log(level, "worker %d (pid %d) %s", index, pid, _describe(status))
                continue
            if lived >= self.stable_after:
                delay = self.backoff_min
            else:
                delay = min(max(self._backoff.get(index, 0.0) * 2, self.backoff_min), self.backoff_max)
            self._backoff[index] = delay
            self._restart_at[index] = time.monotonic() + delay
            log.error("worker %d (pid %d) %s after %.1fs: restarting it in %.1fs", index, pid,
                      _describe(status), lived, delay)

    def _spawn(self, index: int) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            code: Any = 1
            try:
                self._become_child(index)
                code = self.target(index)
            except SystemExit as exc:
                code = exc.code
            except BaseException:
                traceback.print_exc()
            finally:
                try:
                    logging.shutdown()
                    sys.stdout.flush()
                    sys.stderr.flush()
                finally:
                    os._exit(code if isinstance(code, int) else (0 if code is None else 1))
        self.children[pid] = (index, time.monotonic())

    # -- child -----------------------------------------------------------------------------

    def _become_child(self, index: int) -> None:
        global _worker_id
        _worker_id = index
        os.environ["COWBOY_WS_WORKER"] = str(index)
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGTERM, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent relays Ctrl-C as SIGTERM
        assert self._wake_r is not None and self._wake_w is not None
        self._wake_r.close()
        self._wake_w.close()
        for sock in self.readers:
            sock.close()
        self.readers = {}
        self.children.clear()
        if self.in_child is not None:
            self.in_child()


def run_worker(server: Any, parent: int | None = None) -> int:
    """Serve ``server`` in a worker until SIGTERM (graceful; a second one stops now) or the parent dies."""
    parent = os.getppid() if parent is None else parent
    signals: list[int] = []

    def on_sigterm(_signum: int, _frame: Any) -> None:
        signals.append(_signum)
        if len(signals) == 1:
            server.shutdown(wait=False)
        else:
            server.loop.stop()

    def check_parent() -> None:
        if os.getppid() != parent:
            log.warning("worker %s: the supervisor (pid %d) is gone: shutting down", _worker_id, parent)
            server.shutdown(wait=False)
        else:
            server.loop.call_later(PARENT_CHECK, check_parent)

    signal.signal(signal.SIGTERM, on_sigterm)
    server.loop.call_later(PARENT_CHECK, check_parent)
    server.serve_forever()
    return 0


def serve(routes: Any, *, workers: int, host: str = "127.0.0.1", port: int = 8080, backlog: int = 1024,
          reuse_port: bool | None = None, stop_timeout: float | None = None,
          backoff_min: float = BACKOFF_MIN, backoff_max: float = BACKOFF_MAX,
          on_listening: Callable[[str, int], Any] | None = None, metrics_port: int | None = None,
          metrics_host: str | None = None, **server_kwargs: Any) -> int:
    """Run ``workers`` processes of ``Server(routes, **server_kwargs)`` on ``host:port``; returns the exit status.

    Blocks until SIGTERM/SIGINT.  ``reuse_port`` None: ``SO_REUSEPORT`` where the
    platform has it (Linux).  ``redis_url=`` (passed to every Server, with ``cluster_secret``
    and the other Redis options) makes groups, ``pid.send`` and ``broadcast`` span the
    workers.  Raises OSError if the port cannot be bound (before any worker starts), and
    :class:`cowboy_ws.redis_backend.RedisConfigError` if Redis refuses the credentials or
    its certificate is not trusted.  ``metrics_port``: the supervisor serves ``/metrics`` for
    every worker there (samples labelled ``worker="i"``, at most
    :data:`cowboy_ws.metrics.SNAPSHOT_INTERVAL` seconds old).
    """
    from .options import SHUTDOWN_GRACE
    from .server import Server

    if not hasattr(os, "fork"):
        raise RuntimeError("workers need os.fork (POSIX)")
    if reuse_port is None:
        reuse_port = hasattr(socket, "SO_REUSEPORT") and sys.platform.startswith("linux")
    if server_kwargs.get("redis_url") is not None:  # fail in the parent, not in every worker
        from .redis_backend import RedisBackend
        RedisBackend.from_server_options(**{k: v for k, v in server_kwargs.items()
                                            if k.startswith(("redis_", "cluster_", "node_ttl"))}).check()
    elif workers > 1 and server_kwargs.get("messaging") is None:
        log.warning("%d workers without Redis: Pids, process groups and broadcast stay inside each worker "
                    "(give a Redis URL to span them)", workers)
    # reuse_port: a bound socket that does not listen holds the port (and fixes port 0) for the workers;
    # else: the one listening socket, inherited by every worker.
    if reuse_port and port != 0:
        # SO_REUSEPORT would let us share a port that another server of this user already listens on
        # (each getting half the connections): make sure it is free first.
        Server._bind(host, port, backlog, reuse_port=False, listen=False).close()
    holder = Server._bind(host, port, backlog, reuse_port=reuse_port, listen=not reuse_port)
    host, port = holder.getsockname()[:2]
    grace = server_kwargs.get("shutdown_grace", SHUTDOWN_GRACE)
    if stop_timeout is None:
        stop_timeout = grace + 15.0

    metrics = snapshots = None
    if metrics_port is not None:
        from .metrics import MetricsServer, StatsCollector, read_snapshots
        snapshots = tempfile.mkdtemp(prefix="cowboy_ws-metrics-")
        try:
            metrics = MetricsServer(metrics_host or host, metrics_port,
                                    StatsCollector(lambda: read_snapshots(snapshots)))
        except BaseException:
            holder.close()
            shutil.rmtree(snapshots, ignore_errors=True)
            raise
        log.info("metrics of every worker on http://%s:%d/metrics", metrics.host, metrics.port)

    def target(index: int) -> int:
        if snapshots is not None:
            server_kwargs["metrics_snapshot"] = os.path.join(snapshots, f"worker-{index}.json")
        if reuse_port:
            holder.close()
            server = Server(routes, host=host, port=port, backlog=backlog, reuse_port=True, **server_kwargs)
        else:
            server = Server(routes, host=host, port=port, sock=holder, **server_kwargs)
        return run_worker(server)

    scheme = "wss" if server_kwargs.get("ssl_context") is not None else "ws"
    shown = f"[{host}]" if ":" in host else host
    log.info("cowboy_ws: %d worker(s) on %s://%s:%d (%s)", workers, scheme, shown, port,
             "SO_REUSEPORT" if reuse_port else "one inherited listening socket")
    if on_listening is not None:
        on_listening(host, port)
    supervisor = Supervisor(workers, target, stop_timeout=stop_timeout, backoff_min=backoff_min,
                            backoff_max=backoff_max, on_stop=holder.close,
                            readers={metrics.socket: metrics.handle} if metrics is not None else None)
    try:
        return supervisor.run()
    finally:
        holder.close()
        if metrics is not None:
            metrics.close()
            shutil.rmtree(snapshots, ignore_errors=True)  # type: ignore[arg-type]

