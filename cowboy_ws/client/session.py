"""The handler API: a client connection run by a Cowboy-style handler, as gun runs one for its owner.

:func:`start` returns a :class:`~cowboy_ws.Pid` at once.  A :class:`ClientSession` opens the
connection on a helper thread (:func:`cowboy_ws.client.opening.open_connection`, bounded by
``open_timeout``) and then runs it on a loop, in a :class:`~cowboy_ws.websocket.WebSocketProcess`
with the client role: the same handler state machine, kernels, limits and exit paths as the
server's connections.  The loop is the caller's when :func:`start` is called from a callback
running on a loop (a server's handler opening a connection to another service: it then belongs
to that server too, closed with 1001 on its shutdown), else one background loop per process,
started on first use.

The session is the *owner* of its processes (:class:`cowboy_ws.websocket.Owner`) and the target
of its Pid, which outlives each connection: with ``retry`` (a count or ``"infinity"``) a lost
connection (the server's Close, a protocol error, a keepalive or idle timeout, TCP lost, a
failed attempt) is followed by ``websocket_info(("down", reason), state)`` and, after
``retry_timeout`` ms doubled after each failed attempt (at most ``max_retry_timeout``, each delay
drawn between half of it and all of it), a new connection whose ``websocket_init(state)`` runs
again with the state the handler had.  Messages sent to the Pid meanwhile wait and arrive after
that ``websocket_init``.  A refused upgrade (4xx) is not retried unless ``retry_refused``; 5xx,
TLS and network errors are.  ``terminate`` runs once, when the client finally stops: the
handler's ``stop``, a crash, :func:`stop`, the retries used up.
"""

from __future__ import annotations

import errno
import functools
import itertools
import logging
import os
import random
import socket
import ssl
import threading
import weakref
from collections import deque
from typing import Any

from ..lifecycle import CLOSED, OPEN, crash_class
from ..loop import Loop, current_loop
from ..outframes import BadResult, normalize, short
from ..process import Pid
from ..protocol.connection import OPEN as _CONN_OPEN
from ..protocol.connection import Connection
from ..websocket import RESULT_FORMS, WebSocketProcess
from .errors import InvalidHandshake, InvalidStatus, InvalidURI, OpenTimeout, ProxyError
from .opening import Opened, WsURL, open_connection
from .options import ClientOptions

log = logging.getLogger(__name__)

__all__ = ["ClientSession", "background_loop", "failure_reason", "start", "stop", "info"]

_cids = itertools.count(1)
#: Messages kept for a Pid whose connection is down (reconnecting); past it new ones are dropped.
MAX_PENDING = 100_000
#: A connection that stayed open this long (s), or retry_timeout if longer, resets the retry budget and
#: the backoff when it is lost; one lost sooner counts as a failed attempt (a server that accepts and
#: fails every connection must not be hammered without end).
STABLE_AFTER = 1.0


# -- the background loop ------------------------------------------------------------------------

_background: Loop | None = None
_background_thread: threading.Thread | None = None
_background_lock = threading.Lock()


def background_loop() -> Loop:
    """The process's client loop, on a daemon thread started on first use (and again after a fork)."""
    global _background, _background_thread
    with _background_lock:
        if _background is None or _background_thread is None or not _background_thread.is_alive():
            loop = Loop()
            thread = threading.Thread(target=_run_background, args=(loop,), name="cowboy_ws client loop",
                                      daemon=True)
            _background, _background_thread = loop, thread
            thread.start()
        return _background


def _run_background(loop: Loop) -> None:
    while True:  # a KeyboardInterrupt cannot reach a non-main thread; anything else is contained by the loop
        try:
            loop.run()
            return
        except BaseException:  # pragma: no cover - the loop contains callback errors itself
            log.exception("client loop stopped by an error; running on")


def _after_fork() -> None:
    global _background, _background_thread, _background_lock
    _background = _background_thread = None
    _background_lock = threading.Lock()
    _mask_keys.clear()  # a child must not reuse the parent's unused masking keys


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


# -- masking keys ---------------------------------------------------------------------------------


def _keys_from_urandom(size: int) -> list[bytes]:
    block = os.urandom(size)
    return [block[i:i + 4] for i in range(0, size, 4)]


_mask_keys: weakref.WeakKeyDictionary[Loop, Any] = weakref.WeakKeyDictionary()
_from_bytes = int.from_bytes
#: A masked final text / binary frame's first two bytes by payload length (< 126), RFC 6455 §5.2.
_MASKED_HEAD = {"text": tuple(bytes((0x81, 0x80 | n)) for n in range(126)),
                "binary": tuple(bytes((0x82, 0x80 | n)) for n in range(126))}
#: What a header and its masking key are XORed with: themselves unchanged.
_UNMASKED = bytes(6)


class ClientProtocol(Connection):
    """The sans-IO connection with the client role, and one shortcut: a frame whose payload is under
    126 bytes is built and masked in one expression (header, key, payload XOR the key as one
    integer: RFC 6455 §5.2, §5.3) instead of through ``serialize_frame``; the same bytes.  A small
    uncompressed message on an open connection takes it straight from :meth:`send_message`, and a
    run of them (:meth:`send_messages`) is masked by one XOR."""

    __slots__ = ()

    def send_message(self, kind: str, data: Any) -> None:
        if type(data) is bytes and self.state is _CONN_OPEN and not self.compress:
            n = len(data)
            if n < 126:
                key = self._mask_key()  # type: ignore[misc]
                self._out.append(bytes((0x81 if kind == "text" else 0x82, 0x80 | n)) + key
                                 + (_from_bytes(data, "little")
                                    ^ _from_bytes((key * ((n >> 2) + 1))[:n], "little")).to_bytes(n, "little"))
                return
        Connection.send_message(self, kind, data)

    def send_messages(self, frames: list[tuple[str, bytes]]) -> int | None:
        """Queue a run of whole messages ``(kind, data)`` in order (a read's replies, the blocking API's
        sends): small uncompressed ones, each with its own masking key (RFC 6455 §5.3), are masked by
        one integer XOR over the whole run (zeros over each header and key) and queued as one buffer,
        the bytes :meth:`send_message` would queue one by one.  Returns the payload bytes queued, or
        None (the general path)."""
        if self.state is _CONN_OPEN and not self.compress and frames:
            key_of = self._mask_key
            wire: list[bytes] = []
            masks: list[bytes] = []
            for kind, data in frames:
                n = len(data)
                heads = _MASKED_HEAD.get(kind)
                if n >= 126 or heads is None or type(data) is not bytes:
                    break  # nothing queued yet: the general path takes the whole run
                key = key_of()  # type: ignore[misc]
                wire += (heads[n], key, data)
                masks += (_UNMASKED, (key * ((n >> 2) + 1))[:n])
            else:
                data = b"".join(wire)
                size = len(data)
                self._out.append((_from_bytes(data, "little")
                                  ^ _from_bytes(b"".join(masks), "little")).to_bytes(size, "little"))
                return size - 6 * len(frames)  # 2-byte headers, 4-byte keys
        return Connection.send_messages(self, frames)

    def _frame(self, opcode: int, payload: Any, rsv1: bool = False) -> bytes:
        n = len(payload)
        if n < 126 and type(payload) is bytes:
            key = self._mask_key()  # type: ignore[misc]
            return (bytes(((0xC0 if rsv1 else 0x80) | opcode, 0x80 | n)) + key
                    + (_from_bytes(payload, "little")
                       ^ _from_bytes((key * ((n >> 2) + 1))[:n], "little")).to_bytes(n, "little"))
        return Connection._frame(self, opcode, payload, rsv1)


def mask_keys(loop: Loop) -> Any:
    """The masking keys for one loop's client frames (RFC 6455 §5.3: unpredictable, from a strong
    source): 4-byte slices of ``os.urandom`` read 1 KiB at a time instead of a system call per frame.
    A callable returning the next key, all in C (``next`` on an endless chain of 256-key blocks);
    called only on its loop's thread."""
    keys = _mask_keys.get(loop)
    if keys is None:
        keys = _mask_keys[loop] = functools.partial(
            next, itertools.chain.from_iterable(map(_keys_from_urandom, itertools.repeat(1024))))
    return keys


# -- reasons ----------------------------------------------------------------------------------------


def failure_reason(exc: BaseException) -> Any:
    """The terminate (or ``("down", ...)``) reason of a failed attempt to open a connection.

    ``("error", ("status", N))`` for a refused upgrade; ``("error", name)`` otherwise: ``"timeout"``
    (open_timeout), ``"nxdomain"`` (the name does not resolve), ``"tls"`` (handshake or certificate),
    ``"proxy"``, ``"badhandshake"`` (a 101 that breaks RFC 6455 §4.1 or RFC 7692), ``"baduri"``, or
    the errno name of a socket error (``"econnrefused"`` ...).
    """
    if isinstance(exc, InvalidStatus):
        return ("error", ("status", exc.status))
    if isinstance(exc, (OpenTimeout, socket.timeout, TimeoutError)):
        return ("error", "timeout")
    if isinstance(exc, ProxyError):
        return ("error", "proxy")
    if isinstance(exc, InvalidURI):
        return ("error", "baduri")
    if isinstance(exc, InvalidHandshake):
        return ("error", "badhandshake")
    if isinstance(exc, ssl.SSLError):
        return ("error", "tls")
    if isinstance(exc, socket.gaierror):
        return ("error", "nxdomain")
    if isinstance(exc, OSError):
        return ("error", errno.errorcode.get(exc.errno, "closed").lower() if exc.errno else "closed")
    return ("crash", crash_class(exc), exc)


def _parent_server(loop: Loop) -> Any:
    """The Server whose handler is running on this thread, if any (it closes our client on shutdown)."""
    from ..server import Server
    pid = loop.self_pid
    conn = getattr(pid, "_conn", None)
    # a client's handler starting another client: that client's server, if any; else a server's connection
    owner = conn.parent if isinstance(conn, ClientSession) else getattr(conn, "owner", None)
    return owner if isinstance(owner, Server) else None


# -- the session ------------------------------------------------------------------------------------


class ClientSession:
    """One client Pid: its handler, its state between connections, its retries (the processes' owner).

    Everything but :meth:`__init__` runs on ``loop``'s thread.
    """

    #: a server that has this session among its connections does not count it in max_connections
    counted = False
    stats = None
    #: the latest connection's process (kept after it closed: the blocking API reads its Close frames)
    last_proc: WebSocketProcess | None = None
    #: the blocking API's ``Inbox.hold_failure``, given to each process (``WebSocketProcess.hold_failure``)
    hold_failure: Any = None
    #: the blocking API's ``Inbox.take_messages``, given to each process (``WebSocketProcess.take_messages``)
    take_messages: Any = None

    def __init__(self, loop: Loop, target: WsURL, handler: Any, state: Any, options: ClientOptions,
                 parent: Any = None) -> None:
        self.loop = loop
        self.target = target
        self.handler = handler
        self.state = state
        self.options = options
        self.parent = parent
        self.pid = Pid(self, loop)
        self.proc: WebSocketProcess | None = None
        self.pending: deque = deque()
        #: what ``terminate`` gets as PartialReq: the URL asked for
        self.partial = {"url": str(target), "scheme": "wss" if target.secure else "ws", "host": target.host,
                        "port": target.port, "path": target.resource}
        #: the current (or last) connection: url, subprotocol, extensions, response headers
        self.info: dict | None = None
        #: set once the session is over and its socket closed (the blocking API waits on it)
        self.finished = threading.Event()
        self._done = False
        self._stopping = False
        self._released = False
        self._retries_used = 0    # reconnections since the last connection that opened
        self._failures = 0        # failed attempts in a row (the backoff's exponent)
        self._timer: Any = None
        self._opened_at = 0.0
        self._dropped = 0
        self.cid = f"c{next(_cids):x}"

    def __repr__(self) -> str:
        return f"<ClientSession {self.cid} {self.target} {self.pid!r}>"

    # -- starting ----------------------------------------------------------------------

    def begin(self, opened: Opened | None = None) -> None:
        """Start: adopt a connection opened by the caller, or open one."""
        if self.parent is not None:
            self.parent.connections[self] = None
        if opened is not None:
            self._opened(opened)
        else:
            self._connect()

    def _connect(self) -> None:
        self._timer = None
        if self._done or self._stopping:
            return
        target, options, loop = self.target, self.options, self.loop

        def attempt() -> None:
            try:
                opened = open_connection(target, options)
            except BaseException as exc:  # every outcome goes back to the loop
                loop.call_soon_threadsafe(self._open_failed, exc)
                return
            loop.call_soon_threadsafe(self._opened, opened)

        log.debug("[%s] connecting to %s", self.cid, target)
        threading.Thread(target=attempt, name=f"cowboy_ws connect {target}", daemon=True).start()

    def _opened(self, opened: Opened) -> None:
        if self._done or self._stopping:
            opened.sock.close()
            self._release()
            return
        sock = opened.sock
        sock.setblocking(False)
        ws = self.options.ws
        conn = ClientProtocol("client", max_frame_size=ws.max_frame_size, validate_utf8=ws.validate_utf8,
                              deflate=opened.deflate, mask_key=mask_keys(self.loop))
        proc = WebSocketProcess(self, sock, self.handler, self.state, self.partial, ws, conn, self.cid,
                                pid=self.pid)
        if self.hold_failure is not None:
            proc.hold_failure = self.hold_failure
        if self.take_messages is not None:
            proc.take_messages = self.take_messages
        self.proc = self.last_proc = proc
        self.info = {"url": str(opened.url), "subprotocol": opened.subprotocol, "extensions": opened.extensions,
                     "headers": list(opened.response.headers)}
        self._opened_at = self.loop.time()
        log.debug("[%s] connected to %s (subprotocol %s, extensions %s)", self.cid, opened.url,
                  opened.subprotocol, opened.extensions)
        proc.start(opened.rest)
        pending = self.pending
        while pending and proc.phase is OPEN:  # what was sent to the Pid while it connected
            proc.deliver(pending.popleft())

    def _open_failed(self, exc: BaseException) -> None:
        if self._done or self._stopping:
            self._release()
            return
        reason = failure_reason(exc)
        self._failures += 1
        retry = self._may_retry(reason)
        log.log(logging.INFO if retry else logging.WARNING, "[%s] could not connect to %s: %s%s", self.cid,
                self.target, exc, " (retrying)" if retry else "")
        if retry:
            self._schedule()
        else:
            self._end(reason)

    # -- the Pid's target ---------------------------------------------------------------------

    def deliver(self, msg: Any) -> None:
        """A message for ``websocket_info``: to the open connection, else kept until the next one opens."""
        if self._done:
            return
        proc = self.proc
        if proc is not None and proc.phase is OPEN and not self.pending:
            proc.deliver(msg)
        elif len(self.pending) < MAX_PENDING:
            self.pending.append(msg)
        else:
            self._dropped += 1
            if self._dropped == 1:
                log.warning("[%s] %d messages wait for the connection to come back: dropping new ones",
                            self.cid, MAX_PENDING)

    def send_broadcast(self, frame: Any, wire: bytes, compressed: dict | None = None) -> None:
        """A broadcast to a group this client joined: sent (masked) on the open connection, if any."""
        proc = self.proc
        if proc is not None:
            proc.send_broadcast(frame, wire, compressed)

    # -- the processes' owner ---------------------------------------------------------------------

    def _forget(self, proc: WebSocketProcess) -> None:
        """A connection's socket is closed."""
        if proc is self.proc:
            self.proc = None
        self._release()

    def _connection_lost(self, proc: WebSocketProcess, mailbox: Any) -> bool:
        """The handler's part of ``proc`` ended with ``proc.reason``: True keeps the Pid (the session
        reconnects and the handler gets ``("down", reason)``), False lets ``proc`` end it (terminate)."""
        reason = proc.reason
        if self.loop.time() - self._opened_at >= max(STABLE_AFTER, self.options.retry_timeout):
            self._retries_used = 0  # it was up long enough: a fresh budget, the first delay again
            self._failures = 0
        else:
            self._failures += 1     # up and down at once (a server that fails every connection): back off
        if self._done or self._stopping or not self._may_retry(reason):
            self._done = True
            self._cancel_timer()
            self.loop.call_soon(self._release)  # after proc's terminate (the socket may be closed already)
            return False
        self.state = proc.state
        if mailbox:
            self.pending.extendleft(reversed(mailbox))
        self.loop.call_soon(self._down, reason)
        return True

    def _may_retry(self, reason: Any) -> bool:
        retry = self.options.retry
        if retry is not None and self._retries_used >= retry:
            return False
        if reason == "stop" or reason == "shutdown":
            return False
        if type(reason) is tuple:
            if reason[0] == "crash":
                return False
            detail = reason[1] if len(reason) > 1 else None
            if reason[0] == "error":
                if type(detail) is tuple and detail[0] == "status":
                    return detail[1] >= 500 or self.options.retry_refused
                if detail == "baduri":
                    return False
        return True

    def _down(self, reason: Any) -> None:
        """websocket_info(("down", reason), state), then a reconnection after the backoff."""
        if self._done or self._stopping:
            return
        info = self.handler.websocket_info
        loop = self.loop
        loop.self_pid = self.pid
        try:
            result = info(("down", reason), self.state)
            stop = self._apply_down(result)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:
            log.error("[%s] handler %r crashed on ('down', ...)", self.cid, self.handler, exc_info=exc)
            self._end(("crash", crash_class(exc), exc))
            return
        finally:
            loop.self_pid = None
        if stop:
            self._end("stop")
        else:
            self._schedule()

    def _apply_down(self, result: Any) -> bool:
        """A call result while no connection is open: the state is kept, frames are dropped; True for stop."""
        if not isinstance(result, tuple) or len(result) < 2:
            raise BadResult(f"callback returned {short(result)}, not a call result: expected {RESULT_FORMS}")
        tag, n = result[0], len(result)
        if tag == "stop" and n == 2:
            self.state = result[1]
            return True
        if tag == "ok" and n in (2, 3):
            frames: list = []
            self.state = result[1]
        elif tag == "reply" and n in (3, 4):
            frames = normalize(result[1], commands=False)
            self.state = result[2]
        elif isinstance(tag, list) and n in (2, 3):
            frames = normalize(tag, commands=True)
            self.state = result[1]
        else:
            raise BadResult(f"callback returned {short(result)}: expected {RESULT_FORMS}")
        if frames:
            log.warning("[%s] the connection is down: %d frame(s)/command(s) from ('down', ...) dropped",
                        self.cid, len(frames))
        return False

    def _schedule(self) -> None:
        """The next attempt after retry_timeout x 2^(failed attempts), capped, with jitter."""
        self._retries_used += 1
        options = self.options
        delay = min(options.retry_timeout * (2 ** min(self._failures, 32)), options.max_retry_timeout)
        delay *= 0.5 + random.random() / 2
        log.info("[%s] reconnecting to %s in %.2fs (attempt %d%s)", self.cid, self.target, delay,
                 self._retries_used, f" of {options.retry}" if options.retry is not None else "")
        self._timer = self.loop.call_later(delay, self._connect)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # -- ending ---------------------------------------------------------------------------------

    def _end(self, reason: Any) -> None:
        """The session is over without an open connection to end it: the Pid exits, ``terminate`` runs."""
        if self._done:
            self._release()
            return
        self._done = True
        self._cancel_timer()
        self.pending.clear()
        self.pid._exit("normal")
        terminate = getattr(self.handler, "terminate", None)
        if terminate is not None:
            loop = self.loop
            loop.self_pid = self.pid
            try:
                terminate(reason, self.partial, self.state)
            except KeyboardInterrupt:
                raise
            except BaseException:
                log.exception("[%s] terminate raised", self.cid)
            finally:
                loop.self_pid = None
        self._release()

    def _release(self) -> None:
        """Once over and without a socket: leave the parent server, wake the blocking API."""
        if not self._done or self._released:
            return
        proc = self.proc
        if proc is not None and proc.phase is not CLOSED:
            return
        self._released = True
        self.pending.clear()
        if self.parent is not None:
            self.parent._forget(self)
        self.finished.set()

    def stop(self, reason: Any = "shutdown") -> None:
        """Close the connection with 1001 (terminate reason ``"shutdown"``) and stop retrying."""
        if self._done:
            return
        self._stopping = True
        self._cancel_timer()
        proc = self.proc
        if proc is not None and proc.phase is OPEN:
            proc.close_going_away()
        else:
            self._end(reason)

    # what a Server calls on its connections
    def close_going_away(self) -> None:
        """The parent server shuts down: as :meth:`stop`."""
        self.stop()

    def close(self) -> None:
        """The parent server's loop ends: drop the connection now."""
        self._stopping = True
        proc = self.proc
        if proc is not None and proc.phase is not CLOSED:
            proc._finish()
        self._end("shutdown")


# -- the API ---------------------------------------------------------------------------------------


def _check_handler(handler: Any) -> None:
    from ..handler import describe
    name = describe(handler)
    for callback in ("websocket_handle", "websocket_info"):
        if not callable(getattr(handler, callback, None)):
            raise TypeError(f"{name} is not a client handler: it has no callable {callback} "
                            "(websocket_handle(frame, state) and websocket_info(info, state) are required)")
    for callback in ("websocket_init", "terminate"):
        value = getattr(handler, callback, None)
        if value is not None and not callable(value):
            raise TypeError(f"{name}: {callback} is not callable")


def start(url: str, handler: Any, state: Any = None, opts: dict | None = None) -> Pid:
    """Open a client connection run by ``handler`` (gun's ``gun:open`` + ``gun:ws_upgrade``, with the
    handler's callbacks instead of messages); returns its Pid at once.

    ``handler``: a module, class or instance with ``websocket_handle(frame, state)`` and
    ``websocket_info(info, state)``, optionally ``websocket_init(state)`` and
    ``terminate(reason, partial_req, state)``: the server's contract (docs/design.md), the same call
    results and commands.  ``opts``: the WebSocket options (times in ms: ``close_timeout``,
    ``idle_timeout`` (default ``"infinity"``), ``ping_interval``/``ping_timeout``, ``max_frame_size``
    ...) and the client's: ``compress``, ``subprotocols``, ``headers``, ``origin``, ``ssl``,
    ``open_timeout`` (ms), ``proxy``, ``max_redirects``, ``retry`` (count or ``"infinity"``, default
    0), ``retry_timeout`` (ms, default 5000), ``max_retry_timeout``, ``retry_refused``.

    Called from a callback on a loop (a server's handler), the connection runs on that loop and
    closes with 1001 when that server shuts down; otherwise on the process's background loop.
    A bad URL, handler or option raises here; everything later goes to the handler.
    """
    from .opening import parse_url
    from .options import from_handler_opts
    _check_handler(handler)
    options = from_handler_opts(opts)
    target = parse_url(url)
    loop = current_loop()
    parent = None
    if loop is not None:
        parent = _parent_server(loop)
    else:
        loop = background_loop()
    session = ClientSession(loop, target, handler, state, options, parent)
    if loop.in_loop_thread():
        session.begin()
    else:
        loop.call_soon_threadsafe(session.begin)
    return session.pid


def _session_of(pid: Pid) -> ClientSession | None:
    conn = pid._conn
    return conn if isinstance(conn, ClientSession) else None


def stop(pid: Pid) -> None:
    """Stop a client started by :func:`start` (thread-safe): Close 1001, ``terminate`` with
    ``"shutdown"``, no more retries.  Nothing happens if it already ended."""
    session = _session_of(pid)
    if session is None:
        if pid._conn is not None:
            raise TypeError(f"{pid!r} is not a client started by cowboy_ws.client.start")
        return
    if session.loop.in_loop_thread():
        session.stop()
    else:
        session.loop.call_soon_threadsafe(session.stop)


def info(pid: Pid | None = None) -> dict | None:
    """The current (or last) connection of a client Pid (default ``self()``): ``url`` (after
    redirects), ``subprotocol``, ``extensions``, ``headers`` of the 101 answer; None before the first
    connection opened or for another Pid."""
    if pid is None:
        from ..process import self as self_pid
        pid = self_pid()
    session = _session_of(pid)
    return None if session is None else session.info
