"""A throwaway ``redis-server`` on 127.0.0.1 for the tests and the benchmarks.

``RedisServer().start()`` runs ``redis-server`` (the Debian package ``redis-server``; CI
installs it) as a subprocess on a free port with no persistence (``--save ''
--appendonly no``) in a temporary directory; :meth:`stop` ends it (SIGTERM, then SIGKILL),
:meth:`start` again brings it back on the same port (a restart: empty, like a Redis that
lost its data).  ``available()`` says whether both ``redis-server`` and redis-py are here.

As operators run it: ``password=`` (``requirepass``: the default user's password, what
:attr:`url` then carries), ``users=`` (ACL lines, ``user`` directives without the word
``user``), ``tls=(cert, key, ca)`` (PEM paths: the server listens with TLS only, :attr:`url`
is ``rediss://``; ``tls_clients=True`` also requires client certificates signed by ``ca``).
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from typing import Sequence

START_TIMEOUT = 10.0


def available() -> str | None:
    """None if Redis tests can run, else why not."""
    if shutil.which("redis-server") is None:
        return "redis-server is not installed (apt-get install redis-server)"
    try:
        import redis  # noqa: F401
    except ImportError:
        return "redis-py is not installed (pip install 'cowboy-ws[redis]')"
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    def __init__(self, port: int | None = None, *, password: str | None = None, users: Sequence[str] = (),
                 tls: tuple[str, str, str] | None = None, tls_clients: bool = False) -> None:
        self.port = port or free_port()
        self.password = password
        self.users = list(users)
        self.tls = tuple(os.path.abspath(path) for path in tls) if tls else None  # redis-server chdirs to --dir
        self.tls_clients = tls_clients
        self.proc: subprocess.Popen | None = None
        self._dir = tempfile.TemporaryDirectory(prefix="cowboy_ws-redis-")

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"{'rediss' if self.tls else 'redis'}://{auth}127.0.0.1:{self.port}/0"

    def url_for(self, user: str, password: str) -> str:
        """The URL of an ACL user."""
        return f"{'rediss' if self.tls else 'redis'}://{user}:{password}@127.0.0.1:{self.port}/0"

    def _args(self) -> list[str]:
        args = ["redis-server", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", self._dir.name,
                "--protected-mode", "no", "--loglevel", "warning"]
        if self.tls:
            cert, key, ca = self.tls
            args += ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", cert, "--tls-key-file", key,
                     "--tls-ca-cert-file", ca, "--tls-auth-clients", "yes" if self.tls_clients else "no"]
        else:
            args += ["--port", str(self.port)]
        if self.password:
            args += ["--requirepass", self.password]
        for line in self.users:
            args += ["--user", *line.split()]
        return args

    def _answers(self) -> bool:
        """Whether the server answers a PING (any RESP reply: +PONG, or -NOAUTH with a password)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as raw:
            sock: socket.socket = raw
            if self.tls:
                context = ssl.create_default_context(cafile=self.tls[2])
                if self.tls_clients:
                    context.load_cert_chain(self.tls[0], self.tls[1])
                sock = context.wrap_socket(raw, server_hostname="127.0.0.1")
            sock.sendall(b"PING\r\n")
            return sock.recv(64)[:1] in (b"+", b"-")

    def start(self) -> "RedisServer":
        assert self.proc is None, "already running"
        log_path = f"{self._dir.name}/redis.log"
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(self._args(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                if self._answers():
                    return self
            except OSError:
                pass
            if self.proc.poll() is not None:
                with open(log_path, errors="replace") as log_file:
                    out = log_file.read()
                raise RuntimeError(f"redis-server exited with {self.proc.returncode} (port {self.port} taken?):\n{out}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not answer on port {self.port} within {START_TIMEOUT}s")
            time.sleep(0.05)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def close(self) -> None:
        self.stop()
        self._dir.cleanup()

    def __enter__(self) -> "RedisServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
