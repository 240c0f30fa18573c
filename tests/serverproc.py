"""``python -m cowboy_ws`` (or any script) as a subprocess for the worker and Redis tests.

:class:`ServerProcess` runs it in its own session (its workers with it), drains its
output in a thread, and finds the port in its log.  :meth:`ServerProcess.stop` sends
SIGTERM and waits (bounded); whatever is left of the session is killed at teardown.
:func:`who` / :func:`connect_until` open connections to a :mod:`cluster_app` server and
read which worker (and OS process) each one landed on.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

from wsclient import Client

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
LISTEN_RE = re.compile(r"listening on https?://\S+:(\d+) ")
WORKERS_RE = re.compile(r"worker\(s\) on wss?://\S+:(\d+) ")
STARTUP_TIMEOUT = 15.0
TIMEOUT = 5.0


class ServerProcess:
    def __init__(self, *args: str, script: str | None = None, env: dict | None = None) -> None:
        full_env = dict(os.environ)
        full_env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(TESTS)] + (
            [full_env["PYTHONPATH"]] if full_env.get("PYTHONPATH") else []))
        full_env["PYTHONUNBUFFERED"] = "1"
        full_env.update(env or {})
        cmd = [sys.executable, "-c", script, *args] if script is not None else [sys.executable, "-m", "cowboy_ws",
                                                                                *args]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()
        self.port: int | None = None

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line)
        self._queue.put(None)

    def _pump(self) -> None:
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                return
            if line is None:
                self._queue.put(None)
                return
            self.lines.append(line)

    def wait_for(self, pattern: str | re.Pattern[str], timeout: float = STARTUP_TIMEOUT, *,
                 after: int = 0) -> re.Match[str]:
        """The first output line (index >= ``after``) matching ``pattern``."""
        rx = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        checked = after
        while True:
            self._pump()
            for line in self.lines[checked:]:
                if m := rx.search(line):
                    return m
            checked = max(checked, len(self.lines))
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no line matching {rx.pattern!r} within {timeout}s:\n{self.output}")
            try:
                line = self._queue.get(timeout=min(left, 0.1))
            except queue.Empty:
                continue
            if line is None:
                self._queue.put(None)
                raise AssertionError(f"exited ({self.proc.poll()}) before {rx.pattern!r}:\n{self.output}")
            self.lines.append(line)

    def count(self, pattern: str) -> int:
        self._pump()
        rx = re.compile(pattern)
        return sum(1 for line in self.lines if rx.search(line))

    def started(self, workers: int = 0) -> "ServerProcess":
        """Wait for the port in the log; with ``workers``, also for that many workers listening."""
        self.port = int(self.wait_for(WORKERS_RE if workers else LISTEN_RE).group(1))
        if workers:
            wait_until(lambda: self.count(LISTEN_RE.pattern) >= workers, STARTUP_TIMEOUT,
                       f"{workers} workers listening:\n{self.output}")
        return self

    @property
    def output(self) -> str:
        self._pump()
        return "".join(self.lines)

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = TIMEOUT) -> int:
        rc = self.proc.wait(timeout=timeout)
        self._reader.join(timeout)
        self._pump()
        return rc

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, wait; then kill whatever is left of the session (workers included)."""
        rc = None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                rc = self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the session we started: stray workers
        except (ProcessLookupError, PermissionError):
            pass
        if self.proc.poll() is None:
            self.proc.wait(timeout=TIMEOUT)
        self._reader.join(TIMEOUT)
        self._pump()
        return rc if rc is not None else self.proc.returncode


def who(client: Client) -> dict[str, str]:
    """``worker=.. pid=.. node=..`` of the server process a cluster_app connection landed on."""
    client.send_text("who")
    kind, text = client.recv_message()
    return dict(part.split("=", 1) for part in text.decode().split())


def ask(client: Client, command: str) -> str:
    client.send_text(command)
    kind, text = client.recv_message()
    return text.decode()


def connect_until(port: int, path: str, done: Callable[[dict[str, list]], bool], *, limit: int = 80,
                  opened: list | None = None) -> dict[str, list]:
    """Open connections until ``done(by_worker)`` (worker id -> [(client, who), ...]), at most ``limit``.

    Connections that ``done`` does not need stay open (they are in ``opened``, if given).
    """
    by_worker: dict[str, list] = {}
    for _ in range(limit):
        client = Client.connect(port, path)
        if opened is not None:
            opened.append(client)
        info = who(client)
        by_worker.setdefault(info["worker"], []).append((client, info))
        if done(by_worker):
            return by_worker
    raise AssertionError(f"{limit} connections did not satisfy the condition: "
                         f"{ {w: len(v) for w, v in by_worker.items()} }")


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition",
               interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
