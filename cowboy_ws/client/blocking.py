"""The blocking API: ``connect(url)`` for scripts, tests and threads (websockets' sync client, in Cowboy terms).

Design (docs/design.md, "The client"): the connection does not run on the caller's thread.  The
opening handshake does (blocking, bounded by ``open_timeout``); then the socket is handed to the
process's background loop, where a :class:`~cowboy_ws.websocket.WebSocketProcess` with the client
role runs it with a built-in handler, :class:`Inbox`: the same machine as every other connection
(pongs answered while nobody calls :meth:`ClientConnection.recv`, keepalive pings, the closing
handshake within ``close_timeout``, every limit).  The inbox hands each InFrame, the very tuple
``websocket_handle`` got, to the caller through a deque (a read's text and binary messages in one
``extend``: :meth:`Inbox.take_messages`, the process's hook before its per-event dispatch):

* :meth:`~ClientConnection.recv` pops from it without a lock while it holds something; only an
  empty queue waits on a condition, and the loop notifies it once per loop round, not per message.
* The queue is bounded: past ``max_queue`` messages or ``max_queue_bytes`` payload bytes the inbox
  answers ``("active", False)`` and the socket is no longer read (the server's data waits in TCP
  buffers: backpressure, bounded memory); :meth:`recv` reactivates it below a quarter of both.
* :meth:`~ClientConnection.send` checks the frame on the caller's thread (a bad one raises there)
  and appends it to an :class:`Outbox` whose drain the loop runs once per burst (one
  ``call_soon_threadsafe``, not one per message): safe from any thread, in order; a burst's
  messages are framed by one ``send_messages`` call (masked by one XOR) and leave in one ``send``
  system call.  A sender waits while more than ``send_high_water`` bytes are unsent (the peer
  does not read).

* A protocol failure (the server's bad frame, RFC 6455 §7.1.7) that follows messages the reader
  has not answered yet (queued, or taken and the reader not back in ``recv``) is held
  (:meth:`Inbox.hold_failure`): nothing more is read, and our Close waits until the reader asks for
  the next message (or ``close_timeout``), so its answers leave before the Close, as a handler's
  replies would.

A frame tuple crosses threads as it is: no copy, no per-message lock.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections import deque
from collections.abc import Iterator
from itertools import islice
from operator import itemgetter
from typing import Any

from ..lifecycle import OPEN
from ..loop import current_loop
from ..outframes import normalize, normalize_frame
from ..protocol.limits import MAX_FRAME_SIZE
from .errors import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from .opening import Opened, open_connection, parse_url
from .options import ENV_PROXY, MAX_QUEUE, MAX_QUEUE_BYTES, MAX_REDIRECTS, ClientOptions, ws_options
from .session import STABLE_AFTER, ClientSession, background_loop

log = logging.getLogger(__name__)

__all__ = ["ClientConnection", "connect", "connect_forever"]

_OK = ("ok", None)
_STOP_READING = ("active", False)
_PAUSE = ([_STOP_READING], None)
_kind = itemgetter(0)
_payload = itemgetter(1)
#: How often a sender blocked by backpressure looks again (s).
_SEND_POLL = 0.001


def closed_from(reason: Any, proc: Any) -> ConnectionClosed:
    """The :class:`ConnectionClosed` for a terminate reason (docs/design.md, exit paths)."""
    if type(reason) is tuple and reason[0] == "remote":
        return ConnectionClosed(reason[1], bytes(reason[2]), "remote", reason)
    if reason == "remote":
        return ConnectionClosed(1005, b"", "remote", reason)
    if type(reason) is tuple and reason[0] == "error" and reason[1] in ("badframe", "badencoding", "badsize"):
        code = proc.conn.close_code if proc is not None and proc.conn.close_code else 1002
        return ConnectionClosed(code, b"", "local", reason)  # we failed the connection (RFC 6455 §7.1.7)
    sent = proc.close_sent if proc is not None else None
    if sent is not None:
        code, payload = sent
        return ConnectionClosed(1005 if code is None else code, bytes(payload), "local", reason)
    return ConnectionClosed(1006, b"", "remote", reason)  # TCP lost without a Close (§7.1.5)


class Inbox:
    """The built-in handler of a blocking connection: InFrames into a bounded queue for :meth:`recv`.

    Its callbacks run on the loop thread; ``queue``, ``waiting``, ``paused`` and ``closed`` are
    shared with the caller's thread as described in the module docstring.
    """

    def __init__(self, options: ClientOptions, control: bool) -> None:
        self.queue: deque = deque()
        self.cond = threading.Condition(threading.Lock())
        self.waiting = False        # a recv() waits on cond (set and cleared by the caller's thread)
        self.paused = False         # reading stopped: the queue is full (changed under cond)
        self.in_bytes = 0           # payload bytes queued, ever (the loop thread's count)
        self.out_bytes = 0          # payload bytes taken, ever (the caller's count)
        self.high = options.max_queue
        self.high_bytes = options.max_queue_bytes
        self.low = max(1, self.high // 4)
        self.low_bytes = max(1, self.high_bytes // 4)
        self.control = control
        self.closed: ConnectionClosed | None = None
        self.pings: dict[bytes, threading.Event] = {}
        self.ping_lock = threading.Lock()
        self.loop: Any = None
        self.session: ClientSession | None = None
        self.held = False           # a protocol failure waits for the reader (hold_failure; under cond)
        self.busy = False           # the reader took a message and has not asked for the next (its flag)
        self.outbox: Outbox | None = None  # the connection's sends (hold_failure drains them first)

    # -- the handler (loop thread) ----------------------------------------------------------

    def websocket_handle(self, frame: tuple, state: Any) -> tuple:
        kind = frame[0]
        if kind == "pong":
            self._pong(frame[1])
            if not self.control:
                return _OK
        elif kind == "ping" and not self.control:
            return _OK
        queue = self.queue
        queue.append(frame)
        self.in_bytes += len(frame[1])
        if self.waiting:
            self.loop.mark_dirty(self)  # notify once, at the end of this loop round (flush)
        if len(queue) >= self.high or self.in_bytes - self.out_bytes >= self.high_bytes:
            with self.cond:  # checked again under the lock recv() waits with: no lost wake-up
                if len(queue) >= self.high or self.in_bytes - self.out_bytes >= self.high_bytes:
                    self.paused = True
                    return _PAUSE
        return _OK

    def take_messages(self, events: list) -> bool:
        """A read's events, when they are all text and binary messages (the usual read): queued at
        once, as :meth:`websocket_handle` would queue them one by one; else False (the process
        hands them over one by one)."""
        kinds = list(map(_kind, events))
        if kinds.count("text") + kinds.count("binary") != len(kinds):
            return False
        queue = self.queue
        queue.extend(events)
        self.in_bytes += sum(map(len, map(_payload, events)))
        if self.waiting:
            self.loop.mark_dirty(self)
        if len(queue) >= self.high or self.in_bytes - self.out_bytes >= self.high_bytes:
            with self.cond:
                if len(queue) >= self.high or self.in_bytes - self.out_bytes >= self.high_bytes:
                    self.paused = True
                    self.session.proc._command(_STOP_READING)  # type: ignore[union-attr]
        return True

    def websocket_info(self, info: Any, state: Any) -> tuple:
        return _OK

    def terminate(self, reason: Any, partial_req: Any, state: Any) -> None:
        session = self.session
        self.closed = closed_from(reason, session.last_proc if session is not None else None)
        log.debug("connection closed: %s", self.closed)
        with self.cond:
            self.cond.notify_all()

    def hold_failure(self) -> bool:
        """The server's bad frame failed the connection (RFC 6455 §7.1.7): hold the failure while the
        reader has messages from before it to take (queued, or the last one taken and the reader
        not back in :meth:`~ClientConnection.recv` yet: it may be answering it), so that what it
        sends in answer leaves before our Close, as a handler's replies would.  The reader's next
        ``recv`` on an empty queue releases it (``close_timeout`` at the latest).  What it sent
        already is framed first: its drain may be waiting behind this read in the loop round."""
        outbox = self.outbox
        if outbox is not None and outbox.items:
            outbox.drain()
        with self.cond:
            if self.queue or self.busy:
                self.held = True
                self.cond.notify_all()
                return True
            return False

    def flush(self) -> None:
        """End of a loop round (Loop.mark_dirty): wake a waiting recv()."""
        with self.cond:
            self.cond.notify_all()

    def fault(self, exc: BaseException) -> None:  # pragma: no cover - flush cannot fail
        log.error("blocking client: notifying the reader failed", exc_info=exc)

    def _pong(self, data: bytes) -> None:
        """A Pong answers the Ping with its payload and every earlier one (RFC 6455 §5.5.3)."""
        pings = self.pings
        if not pings:
            return
        with self.ping_lock:
            if data not in pings:
                return
            for key in list(pings):
                pings.pop(key).set()
                if key == data:
                    break


class Outbox:
    """What callers' threads send, in order, for the loop thread to frame: ``(kind, data)`` for a
    text or binary message, or a list of normalized frames ``(kind, data, code)``.

    One callback per batch, not per message: a sender appends, and schedules :meth:`drain` only
    when none is pending.  The loop clears ``scheduled`` *before* it drains, so an item appended
    after the drain started is either drained by it or finds ``scheduled`` false and schedules
    another (deque appends and pops are atomic).
    """

    __slots__ = ("items", "scheduled", "session", "post")

    def __init__(self, session: ClientSession, post: Any) -> None:
        self.items: deque = deque()
        self.scheduled = False
        self.session = session
        self.post = post

    def put(self, item: Any) -> None:
        """Any thread."""
        self.items.append(item)
        if not self.scheduled:
            self.scheduled = True
            self.post(self.drain)

    def drain(self) -> None:
        """The loop thread: frame everything queued, on the open connection (else it is dropped).

        A run of messages is framed by one ``send_messages`` call (one masking pass)."""
        self.scheduled = False
        items = self.items
        proc = self.session.proc
        if proc is None or proc.phase is not OPEN:
            items.clear()
            return
        conn = proc.conn
        # what is queued now, popped in C (only this thread pops, so popleft never finds it empty)
        batch = list(islice(iter(items.popleft, None), len(items)))
        if not batch:  # an earlier drain took them
            return
        if list not in map(type, batch):  # only messages: the usual case
            if conn.can_send:
                conn.send_messages(batch)
        else:
            run: list = []
            for item in batch:
                if type(item) is tuple:
                    run.append(item)
                    continue
                if run:
                    if conn.can_send:
                        conn.send_messages(run)
                    run = []
                for frame in item:
                    if proc.phase is not OPEN:
                        break
                    proc._command(frame)
                if proc.phase is not OPEN:  # a Close: what follows it is dropped
                    items.clear()
                    run = []
                    break
            if run and conn.can_send:
                conn.send_messages(run)
        proc.loop.mark_dirty(proc)


def _release_failure(session: ClientSession) -> None:
    proc = session.proc
    if proc is not None:
        proc.release_failure()


def _resume(session: ClientSession) -> None:
    proc = session.proc
    if proc is not None and proc.phase is OPEN:
        proc._command(("active", True))


class ClientConnection:
    """An open client connection (blocking API): a context manager and an iterator of InFrames.

    Attributes: ``url`` (the URL that answered, after redirects), ``subprotocol`` (the server's
    choice or None), ``extensions`` (the negotiated ``Sec-WebSocket-Extensions``, parsed),
    ``response_headers`` (the 101 answer's ``(name, value)`` pairs, names lower-cased),
    ``local_address``, ``remote_address``.
    """

    def __init__(self, opened: Opened, options: ClientOptions, control: bool = False) -> None:
        if current_loop() is not None:
            opened.sock.close()
            raise RuntimeError("the blocking client cannot run on a loop's thread (it would wait for its own "
                               "loop): in a handler, use cowboy_ws.client.start(url, handler, state, opts)")
        self.url = str(opened.url)
        self.subprotocol = opened.subprotocol
        self.extensions = opened.extensions
        self.response = opened.response
        self.response_headers = list(opened.response.headers)
        try:
            self.local_address = opened.sock.getsockname()
            self.remote_address = opened.sock.getpeername()
        except OSError:
            self.local_address = self.remote_address = None
        self._options = options
        self._close_wait = options.ws.close_timeout / 1000.0 + 1.0
        self._high = options.ws.send_high_water
        self._low = options.ws.send_low_water
        loop = background_loop()
        inbox = self._inbox = Inbox(options, control)
        inbox.loop = loop
        session = self._session = ClientSession(loop, opened.url, inbox, None, options)
        inbox.session = session
        session.hold_failure = inbox.hold_failure
        session.take_messages = inbox.take_messages
        self._loop = loop
        self._post = loop.call_soon_threadsafe
        self._closing = False
        self._post(session.begin, opened)
        self._outbox = inbox.outbox = Outbox(session, self._post)
        self._put = self._outbox.put

    def __repr__(self) -> str:
        state = "closed" if self._inbox.closed is not None else "open"
        return f"<ClientConnection {self.url} {state}>"

    # -- sending ----------------------------------------------------------------------------

    def send(self, message: Any) -> None:
        """Send one OutFrame or a list of them (RFC 6455 §5.6): ``("text", data)``, ``("binary", data)``,
        ``"ping"``, ``("ping", data)``, ``"pong"``, ``("close", code, reason)`` ... (data: bytes-like,
        str or a list of those), or a plain ``str`` (a text message; but ``"ping"``, ``"pong"`` and
        ``"close"`` are those frames, as in a handler's result) or bytes-like (binary).

        Thread-safe; the frame is checked here (a bad one raises ``TypeError`` naming it).  Raises
        :class:`ConnectionClosed` once the connection is closed or closing.  Blocks while more than
        ``send_high_water`` bytes wait for a peer that does not read.
        """
        if self._inbox.closed is not None or self._closing:
            raise self._closed_error()
        if type(message) is tuple and len(message) == 2:
            kind, data = message
            if type(data) is bytes and (kind == "text" or kind == "binary"):
                proc = self._session.proc
                if proc is not None and proc.sendbuf.size > self._high:
                    self._backpressure()
                outbox = self._outbox  # Outbox.put inlined: the per-message path
                outbox.items.append(message)
                if not outbox.scheduled:
                    outbox.scheduled = True
                    self._post(outbox.drain)
                return
        if isinstance(message, str) and message not in ("close", "ping", "pong"):
            self._backpressure()
            self._put(("text", message.encode()))
            return
        if isinstance(message, (bytes, bytearray, memoryview)):
            self._backpressure()
            self._put(("binary", bytes(message)))  # a snapshot for the loop thread
            return
        items = message if isinstance(message, list) else [message]
        frames = normalize([("text", m) if isinstance(m, str) and m not in ("close", "ping", "pong")
                            else ("binary", m) if isinstance(m, (bytes, bytearray, memoryview)) else m
                            for m in items], commands=False)
        if any(frame[0] == "close" for frame in frames):
            self._closing = True
        self._backpressure()
        self._put(frames)

    def _backpressure(self) -> None:
        proc = self._session.proc
        if proc is None or proc.sendbuf.size <= self._high:
            return
        while proc.sendbuf.size > self._low and proc.phase is OPEN:
            time.sleep(_SEND_POLL)
        if self._inbox.closed is not None:
            raise self._closed_error()

    def ping(self, data: bytes | str | None = None) -> threading.Event:
        """Send a Ping (RFC 6455 §5.5.2); the returned Event is set when its Pong (or a later one) arrives.

        ``data`` defaults to 4 random bytes (at most 125 bytes)."""
        payload = os.urandom(4) if data is None else data.encode() if isinstance(data, str) else bytes(data)
        normalize_frame(("ping", payload))  # checks the size
        event = threading.Event()
        inbox = self._inbox
        with inbox.ping_lock:
            inbox.pings[payload] = event
        self.send(("ping", payload))
        return event

    # -- receiving --------------------------------------------------------------------------

    def recv(self, timeout: float | None = None) -> tuple:
        """The next InFrame, exactly as ``websocket_handle`` would get it: ``("text", bytes)`` (valid
        UTF-8, RFC 6455 §8.1), ``("binary", bytes)``, and with ``control=True`` ``("ping", bytes)`` /
        ``("pong", bytes)``.  Waits up to ``timeout`` seconds (None: no limit) and raises
        ``TimeoutError``; raises :class:`ConnectionClosed` once the connection is over and every
        message received before that was taken.  One thread at a time should call it.
        """
        inbox = self._inbox
        inbox.busy = True  # before the pop: a failure parsed meanwhile is held for this message's answer
        try:
            frame = inbox.queue.popleft()
        except IndexError:
            return self._recv_wait(timeout)  # (it clears busy under the lock)
        inbox.out_bytes += len(frame[1])
        if inbox.paused:
            self._maybe_resume()
        return frame

    def _recv_wait(self, timeout: float | None) -> tuple:
        if current_loop() is not None:
            raise RuntimeError("recv() would block a loop's thread (and wait for its own loop)")
        inbox = self._inbox
        queue = inbox.queue
        deadline = None if timeout is None else time.monotonic() + timeout
        with inbox.cond:
            inbox.busy = False
            while not queue:
                if inbox.closed is not None:
                    raise self._closed_error()
                if inbox.held:  # every message before the bad frame was taken (and answered): fail now
                    inbox.held = False
                    self._post(_release_failure, self._session)
                if inbox.paused:
                    self._maybe_resume()
                inbox.waiting = True
                if queue:  # the loop appended after our first look: it may not have seen waiting
                    inbox.waiting = False
                    break
                if deadline is None:
                    inbox.cond.wait()
                else:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        inbox.waiting = False
                        raise TimeoutError(f"no message within {timeout} s")
                    inbox.cond.wait(left)
                inbox.waiting = False
        return self.recv()

    def _maybe_resume(self) -> None:
        inbox = self._inbox
        if len(inbox.queue) <= inbox.low and inbox.in_bytes - inbox.out_bytes <= inbox.low_bytes:
            inbox.paused = False
            self._post(_resume, self._session)

    def __iter__(self) -> Iterator[tuple]:
        """InFrames until the connection closes: a normal close (1000, 1001) ends the iteration, any
        other raises :class:`ConnectionClosed`."""
        while True:
            try:
                yield self.recv()
            except ConnectionClosed as exc:
                if exc.ok:
                    return
                raise

    # -- closing ----------------------------------------------------------------------------

    def close(self, code: int = 1000, reason: bytes | str = b"") -> None:
        """Close (RFC 6455 §7.1.2): send a Close with ``code`` and ``reason`` and wait for the closing
        handshake and the server's FIN, at most ``close_timeout`` (then TCP is dropped).  Messages
        received before the server's Close stay available to :meth:`recv`.  Idempotent."""
        frame = normalize_frame(("close", code, reason))
        if self._inbox.closed is None and not self._closing:
            self._closing = True
            self._put([frame])
        if current_loop() is not None:
            return  # on a loop's thread: the Close is queued, waiting here would block that loop
        if not self._session.finished.wait(self._close_wait):  # pragma: no cover - the loop's timer drops TCP
            log.warning("closing %s did not finish within %.1f s", self.url, self._close_wait)

    @property
    def closed(self) -> ConnectionClosed | None:
        """None while open; then what :meth:`recv` raises."""
        return self._inbox.closed

    @property
    def pid(self) -> Any:
        """The connection's Pid (its messages are ignored: the blocking API has no websocket_info)."""
        return self._session.pid

    def _closed_error(self) -> ConnectionClosed:
        closed = self._inbox.closed
        if closed is None:  # closing: our Close is queued, the handshake is not over yet
            return ConnectionClosed(1000, b"", "local", "stop")
        return ConnectionClosed(closed.code, closed.reason, closed.side, closed.terminate_reason)

    def __enter__(self) -> ClientConnection:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _options(compress: bool, subprotocols: Any, headers: Any, origin: str | None, ssl: Any, open_timeout: float,
             close_timeout: float, max_frame_size: Any, proxy: Any, ping_interval: float | None,
             ping_timeout: float, max_queue: int, max_queue_bytes: int, max_redirects: int, validate_utf8: bool,
             deflate_opts: Any, idle_timeout: float | None, extra: dict | None = None) -> ClientOptions:
    def ms(name: str, value: Any, none_ok: bool) -> Any:
        if value is None and none_ok:
            return None
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{name}: expected a positive number of seconds{' or None' if none_ok else ''}, "
                             f"not {value!r}")
        return max(1, round(value * 1000))

    ws: dict = {"compress": compress, "max_frame_size": max_frame_size, "validate_utf8": validate_utf8,
                "close_timeout": ms("close_timeout", close_timeout, False),
                "ping_interval": ms("ping_interval", ping_interval, True),
                "ping_timeout": ms("ping_timeout", ping_timeout, False),
                "idle_timeout": ms("idle_timeout", idle_timeout, True)}
    if deflate_opts is not None:
        ws["deflate_opts"] = deflate_opts
    return ClientOptions(ws=ws_options(ws), subprotocols=subprotocols or (), headers=headers or (), origin=origin,
                         ssl=ssl, open_timeout=open_timeout, proxy=proxy, max_redirects=max_redirects,
                         max_queue=max_queue, max_queue_bytes=max_queue_bytes, **(extra or {}))


def connect(url: str, *, compress: bool = False, subprotocols: list[str] | None = None,
            headers: Any = None, origin: str | None = None, ssl: Any = None, open_timeout: float = 10,
            close_timeout: float = 5, max_frame_size: int | str | None = MAX_FRAME_SIZE, proxy: Any = ENV_PROXY,
            ping_interval: float | None = None, ping_timeout: float = 20, control: bool = False,
            max_queue: int = MAX_QUEUE, max_queue_bytes: int = MAX_QUEUE_BYTES, max_redirects: int = MAX_REDIRECTS,
            validate_utf8: bool = True, deflate_opts: dict | None = None,
            idle_timeout: float | None = None) -> ClientConnection:
    """Open a WebSocket connection (RFC 6455 §4.1) and return it once upgraded; times in seconds.

    ``url``: ``ws://`` or ``wss://``, host name, IPv4 or ``[IPv6]``.  ``compress`` offers
    permessage-deflate (RFC 7692; ``deflate_opts``: a dict of
    :class:`~cowboy_ws.protocol.deflate.DeflateOptions` fields, e.g. ``{"server_max_window_bits":
    10}``).  ``subprotocols`` are offered in order; ``headers`` (pairs or a dict) and ``origin`` are
    added to the request.  ``ssl``: an ``ssl.SSLContext`` for wss (default: verified against the
    system CAs, with SNI and the hostname check).  ``proxy``: by default ``https_proxy`` /
    ``http_proxy`` / ``no_proxy`` from the environment; None for none; or ``"http://host:port"``
    (CONNECT), ``"socks5://host:port"`` (needs python-socks).  Redirects are followed up to
    ``max_redirects``, never from wss to ws.  ``max_frame_size`` bounds a frame, an inflated
    message and a reassembled one (1009 past it; ``None`` or ``"infinity"``: no limit).
    ``ping_interval``/``ping_timeout``: keepalive (1011 when nothing arrives in time).
    ``control=True`` makes :meth:`~ClientConnection.recv` return pings and pongs too.

    Raises :class:`~cowboy_ws.client.InvalidURI`, :class:`~cowboy_ws.client.InvalidStatus` (a
    refused upgrade: status, headers, body), :class:`~cowboy_ws.client.InvalidHandshake`,
    :class:`~cowboy_ws.client.OpenTimeout` (nothing within ``open_timeout``), ``ssl.SSLError``
    (e.g. a certificate that does not verify) or ``OSError``.
    """
    options = _options(compress, subprotocols, headers, origin, ssl, open_timeout, close_timeout, max_frame_size,
                       proxy, ping_interval, ping_timeout, max_queue, max_queue_bytes, max_redirects, validate_utf8,
                       deflate_opts, idle_timeout)
    if current_loop() is not None:
        raise RuntimeError("cowboy_ws.client.connect() blocks: it cannot run on a loop's thread; in a handler, "
                           "use cowboy_ws.client.start(url, handler, state, opts)")
    opened = open_connection(parse_url(url), options)
    return ClientConnection(opened, options, control)


def backoff_delay(options: ClientOptions, failures: int) -> float:
    """Seconds before the next attempt: retry_timeout x 2^failures, capped, drawn in [half, all] (jitter)."""
    delay = min(options.retry_timeout * (2 ** min(failures, 32)), options.max_retry_timeout)
    return delay * (0.5 + random.random() / 2)


def connect_forever(url: str, *, retry: int | str = "infinity", retry_timeout: float = 5.0,
                    max_retry_timeout: float = 60.0, retry_refused: bool = False,
                    **kwargs: Any) -> Iterator[ClientConnection]:
    """Yield a new connection each time the previous one is lost (websockets' ``for ws in connect()``)::

        for ws in cowboy_ws.client.connect_forever("ws://127.0.0.1:8080/ws"):
            try:
                for frame in ws:
                    ...
            except cowboy_ws.ConnectionClosed:
                continue

    ``kwargs`` are :func:`connect`'s.  Before each new attempt it waits ``retry_timeout`` seconds,
    doubled after each failed attempt up to ``max_retry_timeout``, each delay drawn between half of
    it and all of it.  ``retry``: how many attempts in a row may fail before the last error is
    raised (``"infinity"``: never give up); a connection lost within a second (or ``retry_timeout``)
    of opening counts as a failed attempt, and when that uses up ``retry`` the iteration ends.  A
    refused upgrade (4xx) is raised at once unless
    ``retry_refused``; 5xx, TLS and network errors are retried.  Asking for the next connection
    closes the current one if it is still open; leaving the loop closes it too.
    """
    options = _options(False, None, None, None, None, 10, 5, MAX_FRAME_SIZE, None, None, 20, MAX_QUEUE,
                       MAX_QUEUE_BYTES, MAX_REDIRECTS, True, None, None,
                       extra={"retry": retry, "retry_timeout": retry_timeout, "max_retry_timeout": max_retry_timeout,
                              "retry_refused": retry_refused})
    parse_url(url)  # a bad URL raises now, not after a first delay
    failures = 0
    first = True
    while True:
        if not first:
            delay = backoff_delay(options, failures)
            log.info("reconnecting to %s in %.2f s", url, delay)
            time.sleep(delay)
        first = False
        try:
            ws = connect(url, **kwargs)
        except InvalidURI:
            raise
        except (InvalidHandshake, OSError) as exc:  # OSError: network and TLS (ssl.SSLError) errors
            if isinstance(exc, InvalidStatus) and exc.status < 500 and not retry_refused:
                raise
            failures += 1
            if options.retry is not None and failures > options.retry:
                raise
            log.info("could not connect to %s: %s", url, exc)
            continue
        opened_at = time.monotonic()
        try:
            yield ws
        finally:
            if ws.closed is None:
                ws.close()
        if time.monotonic() - opened_at >= max(STABLE_AFTER, options.retry_timeout):
            failures = 0   # it was up long enough: a fresh budget, the first delay again
        else:
            failures += 1  # up and down at once: back off (and count it against retry)
            if options.retry is not None and failures > options.retry:
                return
