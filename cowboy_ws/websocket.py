"""The handler state machine of an upgraded connection (Cowboy's ``cowboy_websocket``).

One :class:`WebSocketProcess` per connection.  It reads the socket, feeds the
sans-IO :class:`~cowboy_ws.protocol.connection.Connection`, calls the handler's
``websocket_init`` / ``websocket_handle`` / ``websocket_info``, interprets their
results (docs/design.md, the contract table) and calls ``terminate`` exactly once.

Lifecycle: one field, :attr:`WebSocketProcess.phase`, moves through the phases of
:mod:`cowboy_ws.lifecycle` (``handshake -> open -> closing -> draining -> closed``)
by four transition methods: :meth:`start`, :meth:`_begin_close`, :meth:`_drain`
and :meth:`_finish`.  Every close code the runtime decides comes from
:data:`cowboy_ws.protocol.closecodes.RUNTIME_CLOSES`.

Faults stay in their connection: whatever a callback raises (any exception,
``SystemExit``...) or returns that is not a call result closes this connection
with 1011 and terminate reason ``("crash", class, exc)``; an unexpected error of
the runtime or the protocol layer on this connection does the same.  Only
``KeyboardInterrupt`` goes through, to stop the server.

Output is batched: callbacks only queue frames; the loop flushes each dirty
connection once per round, so everything produced by one read leaves in one
``send``.  What the kernel does not take waits in a :class:`~cowboy_ws.sendbuffer.SendBuffer`:
above ``send_high_water`` bytes the connection stops reading (Cowboy's
``{active, false}``) until it drains below ``send_low_water``; a handler that keeps
pushing to a peer already behind past ``max_send_buffer`` gets the connection
closed with 1008, reason ``("error", "send_buffer_overflow")``.  With
``ping_interval`` set, the server pings and closes with 1011 (reason
``"timeout"``) when nothing arrives within ``ping_timeout`` ms.

Both roles run here (the role is the protocol connection's, ``conn.role``): a
server's connection (:mod:`cowboy_ws.http` upgrades it) and a client's
(:mod:`cowboy_ws.client` opens it).  The process does not know a server or a
client manager, only its *owner* (:class:`Owner`): the loop it runs on, where
its numbers go (``stats``) and whom to tell when its socket is closed
(``_forget``).  The roles differ only when closing (RFC 6455 §7.1.1: the server
closes the TCP connection first, the client waits for that) and when the
handler's part ends (a client owner with retries left keeps the Pid and
reconnects instead of calling ``terminate``: :meth:`Owner._connection_lost`).
"""

from __future__ import annotations

import errno
import logging
import selectors
import socket
import ssl
import time
import weakref
from collections import deque
from typing import Any, Protocol, cast

from .lifecycle import CLOSED, CLOSING, DRAINING, HANDSHAKE, OPEN, check_transition, crash_class
from .metrics import payload_size
from .options import WebSocketOptions
from .outframes import COMMANDS, BadResult, normalize, normalize_frame, short
from .process import Pid
from .protocol.closecodes import RUNTIME_CLOSES
from .protocol.connection import CLOSED as CONN_CLOSED
from .protocol.connection import OPEN as CONN_OPEN
from .protocol.connection import Connection
from .protocol.kernels import send_many
from .req import DEFAULT_REQ_FILTER_FIELDS
from .sendbuffer import WOULD_BLOCK, SendBuffer

log = logging.getLogger(__name__)
_monotonic = time.monotonic


def _index(events: list, event: Any) -> int:
    """Where ``event`` (that very object) is in ``events``."""
    return next(i for i, e in enumerate(events) if e is event)


_READ, _WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE
_NO_ARG: Any = object()  # _call's second callback argument, when there is none

#: Bytes asked of one recv on a TLS socket, and before the upgrade (plain sockets use the loop's buffer).
READ_SIZE = 65536
#: Above this many bytes queued in several buffers, flush with sendmsg (no join copy) instead of one send.
SENDMSG_MIN = 32768

#: The call results a callback may return (for error messages).
RESULT_FORMS = ('("ok", state[, "hibernate"]), ("reply", frame_or_frames, state[, "hibernate"]), '
                '([frame_or_command, ...], state[, "hibernate"]) or ("stop", state)')


#: The options in use, each kept once: a handler's ``init`` that returns options gets a new merged
#: WebSocketOptions per connection (about 260 bytes each), equal to its neighbours' (frozen: shareable).
_OPTIONS: weakref.WeakValueDictionary[WebSocketOptions, WebSocketOptions] = weakref.WeakValueDictionary()


def _shared_options(opts: WebSocketOptions) -> WebSocketOptions:
    """``opts``, or the equal WebSocketOptions already in use."""
    try:
        return _OPTIONS.setdefault(opts, opts)
    except TypeError:  # an unhashable value among them (an ignored Cowboy option given as a map)
        return opts


class _DefaultPartialReq(tuple):
    """A partial Req of the default ``req_filter``, kept for ``terminate`` as the tuple of its values
    (104 bytes, not a 272-byte dict), its strings shared (:func:`_shared`): a server's connections
    mostly share their method, version, scheme, host, path and peer address (a proxy's)."""

    __slots__ = ()

    @classmethod
    def compact(cls, partial: Any) -> Any:
        """``partial`` as this tuple when it is the default filter's dict, else ``partial`` itself."""
        if type(partial) is not dict or tuple(partial) != DEFAULT_REQ_FILTER_FIELDS:
            return partial
        return cls(_shared(value) for value in partial.values())

    def as_dict(self) -> dict[str, Any]:
        return dict(zip(DEFAULT_REQ_FILTER_FIELDS, self, strict=True))


#: The strings of partial Reqs shared between connections: a bounded table, not ``sys.intern``
#: (the peer chooses the path and the host, and interned strings may be immortal, as on 3.12).
_SHARED: dict[str, str] = {}
_SHARED_MAX, _SHARED_LEN = 4096, 256  # at most ~1 MiB held


def _shared_str(value: str) -> str:
    found = _SHARED.get(value)
    if found is not None:
        return found
    if len(_SHARED) < _SHARED_MAX and len(value) <= _SHARED_LEN:
        _SHARED[value] = value
    return value


def _shared(value: Any) -> Any:
    """A str, or a tuple's strs (the peer address), as the equal string already in the table."""
    if type(value) is str:
        return _shared_str(value)
    if type(value) is tuple:
        return tuple(_shared_str(v) if type(v) is str else v for v in value)
    return value


class Owner(Protocol):
    """What a :class:`WebSocketProcess` needs of whoever started it: a server, or a client's manager.

    ``loop`` runs the process; ``stats`` is a :class:`cowboy_ws.metrics.Stats` or None (metrics
    off: every counting site tests it); ``_forget(process)`` is called once, when the socket is
    closed.  A client's owner also answers ``_connection_lost(process, mailbox)`` when the
    handler's part ends (see :meth:`WebSocketProcess._end_process`); a server is never asked.
    """

    loop: Any
    stats: Any

    def _forget(self, conn: Any) -> None: ...


class ClientOwner(Owner, Protocol):
    """A client's owner (:class:`cowboy_ws.client.session.ClientSession`): it also decides, when the
    handler's part of a connection ends, whether the Pid lives on (True: it reconnects)."""

    def _connection_lost(self, process: WebSocketProcess, mailbox: Any) -> bool: ...


class WebSocketProcess:
    """An upgraded connection running a Cowboy-style handler, as a server or as a client.

    ``owner`` (:class:`Owner`) is the server, or the client manager of :mod:`cowboy_ws.client`;
    ``conn.role`` says which side of the protocol this is.  ``pid``: the Pid to answer to
    (a client that reconnects keeps one Pid over several connections); by default a new one.
    """

    # Rarely changed state lives here as class-level defaults (set on the instance when it
    # changes): fewer instance attributes keep the per-message attribute loads specialized.
    _throttled = False               # reading paused: the send buffer went over send_high_water
    _ping_timer: Any = None          # keepalive (ping_interval) timer
    #: the blocking client's hook (``blocking.Inbox.hold_failure``): asked when the peer's bad frame
    #: fails the connection; True holds the failure until :meth:`release_failure`.  None elsewhere.
    hold_failure: Any = None
    #: the blocking client's hook (``blocking.Inbox.take_messages``): given a read's events first;
    #: True when it took them all (text and binary messages only), else they are dispatched one by one
    take_messages: Any = None
    _held: Any = None                # a held failure: (ProtocolError, its close_timeout timer)
    _close_timer: Any = None         # bounds closing + draining (close_timeout)

    #: The Close frame this side sent, ``(code, payload)``, once one is queued by the runtime or the handler
    close_sent: tuple[int | None, bytes] | None = None
    #: "server" or "client": the protocol connection's role (RFC 6455 §7.1.1: who closes TCP first)
    role = "server"

    def __init__(self, owner: Owner, sock: socket.socket, handler: Any, state: Any, partial_req: dict,
                 opts: WebSocketOptions, conn: Connection, cid: str, *, pid: Pid | None = None) -> None:
        self.owner = owner
        self.loop = owner.loop
        if conn.role != "server":
            self.role = conn.role
        self.sock = sock
        #: for a broadcast's writes in one C call (send_broadcast_all), and what the selector watches
        #: (registered by number, the selector's key holds this int instead of one more of its own)
        self.fd = sock.fileno()
        self.handler = handler
        self.state = state
        self._partial_req = _DefaultPartialReq.compact(partial_req)
        self.opts = _shared_options(opts)
        self.conn = conn
        self.cid = cid
        #: the lifecycle phase (cowboy_ws.lifecycle); changed only by the transition methods
        self.phase = HANDSHAKE
        self.pid = Pid(self, self.loop) if pid is None else pid
        self.is_tls = isinstance(sock, ssl.SSLSocket)
        self.active = True                 # the handler's ("active", bool) command
        self.reason: Any = None            # terminate reason, fixed when the phase leaves open
        self.shutdown_reason: Any = "normal"
        self.sendbuf = SendBuffer()        # written but not yet accepted by the kernel
        self._mailbox: deque[Any] | None = None  # made by the first message, dropped (None) on hibernate
        self._mailbox_scheduled = False
        self._events = 0                    # selector interest currently registered
        self._idle_timer: Any = None
        self._last_recv = self.loop.time()
        self._handle = handler.websocket_handle
        self._info = handler.websocket_info
        #: the owner's cowboy_ws.metrics.Stats, None with metrics off (each counting site tests it)
        self.stats = owner.stats
        #: _dispatch's run of replies not queued yet (None outside _dispatch)
        self._replies: list | None = None
        if self.stats is not None:
            conn.counts = [0, 0, 0, 0]  # the messages received, added up by the protocol layer

    def __repr__(self) -> str:
        return f"<WebSocketProcess {self.cid} {self.pid!r} {self.phase}>"

    @property
    def partial_req(self) -> Any:
        """What the ``req_filter`` kept of the Req (what ``terminate`` gets): a new dict each time for
        the default filter's."""
        partial = self._partial_req
        return partial.as_dict() if type(partial) is _DefaultPartialReq else partial

    # -- transitions (cowboy_ws.lifecycle.TRANSITIONS) --------------------------------

    def start(self, initial: bytes, handshake_response: bytes = b"") -> None:
        """handshake -> open: queue the 101 response (a server's; a client sent its request and read
        the answer before), run ``websocket_init``, then the bytes that came with the request or the
        response."""
        self.phase = check_transition(self.phase, OPEN)
        if self.stats is not None:
            self.stats.open += 1
            self.stats.connections += 1
        if handshake_response:
            self.sendbuf.append(handshake_response)
        self.loop.mark_dirty(self)
        self._set_interest(_READ)
        self._arm_idle_timer()
        if self.opts.ping_interval is not None:
            self._ping_timer = self.loop.call_later(self.opts.ping_interval / 1000.0, self._keepalive)
        init = getattr(self.handler, "websocket_init", None)
        if init is not None:
            self._call(init, self.state)
        if initial and self.phase is OPEN:
            self._receive(initial)

    def _begin_close(self, reason: Any, cause: str | None = None,
                     frame: tuple[int | None, bytes] | None = None) -> None:
        """open -> closing: fix the terminate reason, queue our Close if we still may, run ``terminate``.

        Our Close is ``frame`` (the handler's own ``(code, reason)``) or the code of ``cause`` in
        ``RUNTIME_CLOSES``; none is sent when the peer's Close arrived (the core queued the echo,
        RFC 6455 §5.5.1) or the protocol layer failed the connection (it queued its code, §7.1.7).
        The transport then writes the Close out and waits for the peer's (§7.1.2), within
        ``close_timeout``; ``terminate`` does not wait for that.
        """
        if self.phase is not OPEN:
            return
        if self._held is not None:  # a held protocol failure: its Close is the one sent, whatever ends it (§7.1.7)
            err, timer = self._held
            self._held = None
            timer.cancel()
            self.conn.hold_close(False)
            reason, cause, frame = ("error", err.reason), None, None
        self.phase = check_transition(OPEN, CLOSING)
        self.reason = reason
        conn = self.conn
        if conn.state is CONN_OPEN and (cause is not None or frame is not None):
            code, payload = frame if frame is not None else RUNTIME_CLOSES[cause]  # type: ignore[index]
            conn.send_close(code, payload)
            self.close_sent = (code, payload)
            if self.stats is not None:
                self.stats.closed(code, "local")
        elif self.stats is not None:  # the peer's Close (remote), or the core failed the connection (local)
            self.stats.closed(conn.close_code, "remote" if reason == "remote" or reason[0] == "remote" else "local")
        self._cancel_timers()
        self._close_timer = self.loop.call_later(self.opts.close_timeout / 1000.0, self._close_timed_out)
        self.loop.mark_dirty(self)
        self._end_process()

    def _drain(self) -> None:
        """closing -> draining: our Close is written.  The server closes the TCP connection first
        (RFC 6455 §7.1.1): send FIN with it (plain TCP), then read until the peer's Close, if it has
        not come yet, or its FIN (within the close timer).  Input past a Close is discarded: closing
        with unread input would reset the connection, and a reset can destroy our Close before the
        peer reads it.  A client sends no FIN: it reads until the server's FIN (§7.1.1: the client
        SHOULD wait for the server to close), at most until the close timer drops TCP."""
        self.phase = check_transition(CLOSING, DRAINING)
        if not self.is_tls and self.role == "server":  # TLS: no FIN without close_notify; the peer closes on our Close
            try:
                self.sock.shutdown(socket.SHUT_WR)
            except OSError:
                self._finish()  # the peer is already gone
                return
        self._set_interest(_READ)

    def _finish(self, reason: Any = ("error", "closed")) -> None:
        """Any phase -> closed: release the socket; if the handler still ran, ``terminate`` with ``reason``."""
        phase = self.phase
        if phase is CLOSED:
            return
        self.phase = check_transition(phase, CLOSED)
        if self.reason is None:
            self.reason = reason
        self._cancel_timers()
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None
        if self._events:
            try:
                self.loop.selector.unregister(self.fd)
            except (KeyError, ValueError):
                pass
            self._events = 0
        try:
            self.sock.close()
        except OSError:
            pass
        self.sendbuf.clear()
        self.owner._forget(self)
        stats = self.stats
        if stats is not None and phase is not HANDSHAKE:
            stats.open -= 1
            if self._throttled:
                stats.paused -= 1
            if phase is OPEN:  # the TCP connection went without a Close (RFC 6455 §7.1.5: 1006)
                stats.closed(1006, "remote")
        if phase is OPEN or phase is HANDSHAKE:
            self._end_process()
        log.debug("[%s] closed: %r", self.cid, self.reason)

    def _end_process(self) -> None:
        """The handler's side of the end (on leaving open): the Pid exits, then ``terminate`` runs.

        A client whose owner reconnects (``retry``) keeps its Pid instead: the owner gets the
        reason and what was left in the mailbox, and the handler ``websocket_info(("down",
        reason), state)``; ``terminate`` runs only when the client finally stops.
        """
        mailbox = self._mailbox
        self._mailbox = None
        if self.role == "client" and cast("ClientOwner", self.owner)._connection_lost(self, mailbox):
            return
        # Cowboy exits with {shutdown, Reason} after the shutdown_reason command, else normal.
        self.pid._exit("normal" if self.shutdown_reason == "normal" else ("shutdown", self.shutdown_reason))
        terminate = getattr(self.handler, "terminate", None)
        if terminate is not None:
            self.loop.self_pid = self.pid
            try:
                terminate(self.reason, self.partial_req, self.state)
            except KeyboardInterrupt:
                raise
            except BaseException:
                log.exception("[%s] terminate raised", self.cid)
            finally:
                self.loop.self_pid = None

    def fault(self, exc: BaseException) -> None:
        """An unexpected error of the runtime or the protocol layer on this connection: close it 1011
        (terminate gets ``("crash", class, exc)``), or drop it if it is already closing."""
        log.error("[%s] internal error, closing the connection", self.cid, exc_info=exc)
        if self.phase is OPEN:
            try:
                self._begin_close(("crash", crash_class(exc), exc), "crash")
                return
            except KeyboardInterrupt:
                raise
            except BaseException:
                log.exception("[%s] could not close cleanly", self.cid)
        self._finish(("crash", crash_class(exc), exc))

    # -- I/O -----------------------------------------------------------------------

    def _set_interest(self, events: int) -> None:
        if events == self._events or self.phase is CLOSED:
            return
        selector = self.loop.selector
        if self._events == 0:
            selector.register(self.fd, events, self._on_ready)
        elif events == 0:
            selector.unregister(self.fd)
        else:
            selector.modify(self.fd, events, self._on_ready)
        self._events = events

    def _wanted_events(self) -> int:
        events = _WRITE if self.sendbuf.size else 0
        phase = self.phase
        if phase is OPEN:
            if self.active and not self._throttled and self._held is None:
                events |= _READ
        elif phase is DRAINING or self.conn.state is not CONN_CLOSED:
            events |= _READ  # the peer's Close, or its FIN
        return events

    def _on_ready(self, mask: int) -> None:
        try:
            if mask & _WRITE:
                self.flush()
            if mask & _READ and self.phase is not CLOSED:
                self._read()
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # a bug below us must cost this connection only, with a Close
            self.fault(exc)

    def _read(self) -> None:
        sock = self.sock
        try:
            if self.is_tls:
                tls: ssl.SSLSocket = sock  # type: ignore[assignment]  # is_tls: wrapped at accept/connect
                data: Any = tls.recv(READ_SIZE)
                while data and tls.pending():  # decrypted bytes the selector cannot see
                    data += tls.recv(tls.pending())
            else:
                # Into the loop's shared buffer: the protocol core copies out what it keeps
                # (payloads, a partial frame) before the next read reuses it.
                buf = self.loop.read_view
                n = sock.recv_into(buf)
                data = buf[:n] if n else b""
        except WOULD_BLOCK:
            return
        except OSError as exc:
            self._socket_error(exc)
            return
        if not data:
            self.conn.receive_eof()
            self._finish(("error", "closed"))
            return
        self._last_recv = _monotonic()  # the loop's clock (Loop.time)
        self._receive(data)

    def _receive(self, data: Any) -> None:
        conn = self.conn
        events = conn.receive_data(data)
        if events:
            if self.phase is OPEN:
                self._dispatch(events)
            else:
                conn.uncount(events)  # not delivered: not counted
                if self.phase is DRAINING and events[-1][0] == "close" and self.role == "server":
                    self._finish()  # the peer's Close after our Close and FIN: the closing handshake is done
                    return          # (a client reads on until the server's FIN, RFC 6455 §7.1.1)
        counts = conn.counts
        if counts is not None and self.stats is not None:
            self.stats.received(counts)  # metrics: this read's messages, stored once
        # the peer's Close answering ours completes the closing handshake: flush finishes or drains (§7.1.1)
        if conn.has_data_to_send or (self.phase is CLOSING and conn.state is CONN_CLOSED):
            self.loop.mark_dirty(self)

    def flush(self) -> None:
        """Write everything queued in one ``send`` (called once per loop round)."""
        if self.phase is CLOSED:
            return
        out = self.conn.buffers_to_send()
        sendbuf = self.sendbuf
        if sendbuf.size:  # the peer is behind: the send buffer's path
            self._flush_buffered(out)
            return
        if out:
            count = len(out)
            if 1 < count < 512 and not self.is_tls:
                # the usual pair, a large payload and its header, summed without map() and sum()
                total = len(out[0]) + len(out[1]) if count == 2 else sum(map(len, out))
                if total >= SENDMSG_MIN:
                    self._sendmsg(out, total)
                    return
            data = out[0] if count == 1 else b"".join(out)
            try:
                sent = self.sock.send(data)
            except WOULD_BLOCK:
                sent = 0
            except OSError as exc:
                self._socket_error(exc)
                return
            if sent < len(data):
                sendbuf.append(memoryview(data)[sent:] if sent else data)
        self._after_write()

    def _sendmsg(self, out: list, total: int) -> None:
        """Write several large buffers (``total`` bytes) with one sendmsg (header and payload without a join copy)."""
        try:
            sent = self.sock.sendmsg(out)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            self._socket_error(exc)
            return
        if sent < total:
            self.sendbuf.keep_unsent(out, sent)
        self._after_write()

    def _after_write(self) -> None:
        """After a direct write: water marks if the kernel left some, the close if due, selector interest."""
        size = self.sendbuf.size
        if size:
            if size > self.opts.send_high_water:
                self._check_send_buffer(0)
            self._set_interest(self._wanted_events())
        elif self.phase is not OPEN:
            self._close_written()
        elif self._events != _READ or self._throttled or not self.active:  # else _wanted_events() is _READ
            self._set_interest(self._wanted_events())

    def _flush_buffered(self, out: list) -> None:
        """Write from the send buffer until the kernel refuses more, then apply the water marks."""
        sendbuf = self.sendbuf
        before = sendbuf.size
        if out:
            sendbuf.extend(out)
        try:
            sendbuf.write_to(self.sock)
        except OSError as exc:
            self._socket_error(exc)
            return
        if self._throttled or sendbuf.size > self.opts.send_high_water:
            self._check_send_buffer(before)
        if not sendbuf.size and self.phase is not OPEN:
            self._close_written()
            return
        self._set_interest(self._wanted_events())

    def _check_send_buffer(self, before: int) -> None:
        """Water marks: pause reading above high, resume below low, 1008 past the hard limit."""
        size = self.sendbuf.size
        opts = self.opts
        if size > opts.send_high_water:
            if not self._throttled:
                self._throttled = True
                if self.stats is not None:
                    self.stats.paused += 1
                log.debug("[%s] peer is slow: %d bytes unsent, reading paused", self.cid, size)
            limit = opts.max_send_buffer
            if limit is not None and size > limit and before >= opts.send_high_water and self.phase is OPEN:
                log.warning("[%s] peer does not read: %d bytes unsent (max_send_buffer %d), closing 1008",
                            self.cid, size, limit)
                self._begin_close(("error", "send_buffer_overflow"), "send_buffer_overflow")
        elif size <= opts.send_low_water:
            if self.stats is not None and self._throttled:
                self.stats.paused -= 1
            self._throttled = False
            log.debug("[%s] send buffer drained to %d bytes, reading resumed", self.cid, size)

    def _close_written(self) -> None:
        """Closing, and everything up to our Close is written: drain, or close at once over TLS when
        the closing handshake is complete (nothing is left to read).  A client always drains: it
        waits for the server to close TCP (RFC 6455 §7.1.1)."""
        if self.phase is not CLOSING or self.conn.has_data_to_send:
            self._set_interest(self._wanted_events())
            return
        failed = type(self.reason) is tuple and self.reason[0] == "error"  # the peer may still be sending
        if self.is_tls and self.conn.state is CONN_CLOSED and not failed and self.role == "server":
            self._finish()
        else:
            self._drain()

    def _socket_error(self, exc: OSError) -> None:
        name = errno.errorcode.get(exc.errno, "closed").lower() if exc.errno else "closed"
        log.debug("[%s] socket error: %s", self.cid, exc)
        self._finish(("error", name))

    # -- dispatch ------------------------------------------------------------------

    def _dispatch(self, events: list) -> None:
        """Run the handler on a read's events, in order, while the connection is open.

        The per-message hot path: a text or binary message's call is :meth:`_call` inlined (its
        try block is free in CPython 3.11 until something raises); a ``("reply", (kind, bytes),
        state)`` result is collected, and the run of replies is queued by one
        ``Connection.send_messages`` before anything else is queued or done (the order holds).
        With metrics on, the messages are counted by the protocol layer (``conn.counts``), the
        replies once per run, in bulk.  The run is ``self._replies`` meanwhile, so that a frame
        queued by another way (a broadcast the handler makes to a group it is in) goes behind it.
        """
        if self.take_messages is not None and self.take_messages(events):
            return
        handle = self._handle
        loop = self.loop
        pid = self.pid
        replies: list = []
        self._replies = replies
        for event in events:
            if self.phase is not OPEN:
                self.conn.uncount(events[_index(events, event):])  # not delivered: not counted
                break
            kind = event[0]
            if kind == "text" or kind == "binary":
                loop.self_pid = pid  # self() inside the callback
                try:
                    result = handle(event, self.state)
                    if type(result) is tuple and self.phase is OPEN:
                        n = len(result)
                        if n == 3:
                            frame = result[1]
                            if (result[0] == "reply" and type(frame) is tuple and len(frame) == 2
                                    and type(frame[1]) is bytes and (frame[0] == "text" or frame[0] == "binary")):
                                self.state = result[2]
                                replies.append(frame)
                                continue
                        elif n == 2 and result[0] == "ok":
                            self.state = result[1]
                            continue
                    if replies:
                        self._send_replies()
                    self._apply(result)
                except KeyboardInterrupt:
                    self._replies = None
                    raise
                except BaseException as exc:  # Erlang: a crash (error, or exit) ends this process only
                    if replies:
                        self._send_replies()
                    self._crashed(exc)
                continue
            if replies:
                self._send_replies()
            if kind == "close":
                code, payload = event[1], event[2]
                self._begin_close(("remote", code, payload) if code is not None else "remote")
            elif kind == "error":
                err = event[1]
                if self.hold_failure is not None and self.hold_failure():
                    self._hold(err)
                    break  # the last event (the core is failed)
                log.info("[%s] protocol error, closing %d: %s", self.cid, err.code, err)
                self._begin_close(("error", err.reason))
            else:
                self._call(self._handle, event, self.state)
        loop.self_pid = None
        if replies:
            self._send_replies()
        self._replies = None

    def _hold(self, err: Any) -> None:
        """Hold a protocol failure (``hold_failure``): the core's Close waits (``Connection.hold_close``)
        and nothing more is read, while the messages received before the bad frame may still be
        answered; :meth:`release_failure`, or ``close_timeout`` at the latest, fails the connection."""
        log.debug("[%s] protocol error held until the messages before it are taken: %s", self.cid, err)
        self.conn.hold_close(True)
        self._held = (err, self.loop.call_later(self.opts.close_timeout / 1000.0, self.release_failure))
        self._set_interest(self._wanted_events())

    def release_failure(self) -> None:
        """Fail the connection with the held protocol error (RFC 6455 §7.1.7): its Close goes out
        behind whatever was sent meanwhile.  Loop thread; nothing when none is held."""
        if self._held is not None and self.phase is OPEN:
            err = self._held[0]
            log.info("[%s] protocol error, closing %d: %s", self.cid, err.code, err)
            self._begin_close(("error", err.reason))

    def _send_replies(self) -> None:
        """Queue the replies :meth:`_dispatch` collected (``(kind, bytes)`` each), count them, empty the run."""
        replies = self._replies
        conn = self.conn
        if replies and (conn.state is CONN_OPEN or conn.can_send):
            size = conn.send_messages(replies)
            if self.stats is not None:
                self.stats.sent_all(replies, size)
        replies.clear()  # type: ignore[union-attr]

    def deliver(self, msg: Any) -> None:
        """A message for ``websocket_info`` (from :meth:`Pid.send`): queue it, handle it this round."""
        if self.phase is not OPEN:
            return
        if self._mailbox is None:
            self._mailbox = deque()
        self._mailbox.append(msg)
        if not self._mailbox_scheduled:
            self._mailbox_scheduled = True
            self.loop.call_soon(self._drain_mailbox)

    def _drain_mailbox(self) -> None:
        self._mailbox_scheduled = False
        mailbox = self._mailbox
        if mailbox is None:
            return
        # Only what is queued now: a handler that keeps sending to itself yields to others.
        for _ in range(len(mailbox)):
            if self.phase is not OPEN:
                return
            self._call(self._info, mailbox.popleft(), self.state)
        if self.conn.has_data_to_send:
            self.loop.mark_dirty(self)
        if mailbox and not self._mailbox_scheduled and self.phase is OPEN:
            self._mailbox_scheduled = True
            self.loop.call_soon(self._drain_mailbox)

    def _call(self, callback: Any, arg: Any, state: Any = _NO_ARG) -> None:
        """Run one handler callback, ``callback(arg, state)`` (``callback(arg)`` for websocket_init),
        and apply its result; whatever it raises (but KeyboardInterrupt) is a crash (1011).

        (:meth:`_dispatch` has this inlined for a read's text and binary messages.)"""
        loop = self.loop
        loop.self_pid = self.pid  # self() inside the callback
        try:
            result = callback(arg) if state is _NO_ARG else callback(arg, state)
            # Fast paths for the two commonest results; everything else goes through _apply.
            if type(result) is tuple and self.phase is OPEN:
                n = len(result)
                if n == 3:
                    tag, frame, new_state = result
                    if tag == "reply" and type(frame) is tuple and len(frame) == 2:
                        kind, data = frame
                        if type(data) is bytes and (kind == "binary" or kind == "text"):
                            self.state = new_state
                            conn = self.conn
                            if conn.state is CONN_OPEN or conn.can_send:
                                conn.send_message(kind, data)
                                if self.stats is not None:
                                    self.stats.sent(kind, len(data))
                            return
                elif n == 2 and result[0] == "ok":
                    self.state = result[1]
                    return
            self._apply(result)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # Erlang: a crash (error, or exit) ends this process only
            self._crashed(exc)
        finally:
            loop.self_pid = None

    def _crashed(self, exc: BaseException) -> None:
        """A callback raised (anything but KeyboardInterrupt) or returned a bad result: close 1011."""
        kind = crash_class(exc)
        log.error("[%s] handler %r crashed (%s)", self.cid, self.handler, kind, exc_info=exc)
        if self.stats is not None:
            self.stats.crashes += 1
        self._begin_close(("crash", kind, exc), "crash")

    def _apply(self, result: Any) -> None:
        """Interpret a call result (docs/design.md, the contract table); every frame and command of it
        is checked before any is acted on."""
        if self.phase is not OPEN:
            return
        if not isinstance(result, tuple) or not result:
            raise BadResult(f"callback returned {short(result)}, not a call result: expected {RESULT_FORMS}")
        tag = result[0]
        n = len(result)
        if tag == "ok" and n in (2, 3):
            hibernate = self._hibernate_flag(result, 2)
            self.state = result[1]
            commands: list = []
        elif tag == "reply" and n in (3, 4):
            hibernate = self._hibernate_flag(result, 3)
            commands = normalize(result[1], commands=False)
            self.state = result[2]
        elif tag == "stop" and n == 2:
            self.state = result[1]
            self._begin_close("stop", "stop")
            return
        elif isinstance(tag, list) and n in (2, 3):
            hibernate = self._hibernate_flag(result, 2)
            commands = normalize(tag, commands=True)
            self.state = result[1]
        else:
            raise BadResult(f"callback returned {short(result)}: expected {RESULT_FORMS}")
        for command in commands:
            if self.phase is not OPEN:
                break  # what follows a close frame is dropped
            self._command(command)
        if hibernate and self.phase is OPEN:
            self._hibernate()

    @staticmethod
    def _hibernate_flag(result: tuple, index: int) -> bool:
        if len(result) <= index:
            return False
        if result[index] != "hibernate":
            raise BadResult(f"expected 'hibernate' as the last element of {short(result)}")
        return True

    def _command(self, command: tuple) -> None:
        """Run one command, or send one frame already normalized to ``(kind, data, code)``."""
        name = command[0]
        if name in COMMANDS:
            value = command[1]
            if name == "active":
                self.active = value
                self._set_interest(self._wanted_events())
            elif name == "deflate":
                self.conn.compress = value and self.conn.deflate is not None
            elif name == "set_options":
                self._set_options(value)
            else:
                self.shutdown_reason = value
            return
        kind, data, code = command
        if kind == "close":
            self._begin_close("stop", frame=(code, data))
            return
        conn = self.conn
        if not conn.can_send:
            return
        if kind == "text" or kind == "binary":
            conn.send_message(kind, data)
            if self.stats is not None:
                self.stats.sent(kind, len(data))
        elif kind == "ping":
            conn.send_ping(data)
        else:
            conn.send_pong(data)
        self.loop.mark_dirty(self)

    def _set_options(self, options: dict) -> None:
        """Cowboy 2.18's set_options: idle_timeout and max_frame_size change; other keys are ignored."""
        if "idle_timeout" in options:
            self.opts = _shared_options(self.opts.replace(idle_timeout=options["idle_timeout"]))
            self._last_recv = self.loop.time()
            self._arm_idle_timer()
        if "max_frame_size" in options:
            self.opts = _shared_options(self.opts.replace(max_frame_size=options["max_frame_size"]))
            self.conn.set_max_frame_size(self.opts.max_frame_size)

    def send_broadcast(self, frame: Any, wire: bytes, compressed: dict | None = None) -> None:
        """Queue a frame serialized once for many connections.

        Compressing connections without context takeover on our side share one
        compressed frame per deflate setting (``compressed``: key -> frame, one
        dict per broadcast and loop); with context takeover each compresses it
        with its own window (RFC 7692 §7.2.1). Control frames (a broadcast ping)
        go out as ``wire`` everywhere (RFC 7692 §6.1).
        """
        if self._replies:  # the handler now running broadcasts to its own group: its earlier replies first
            self._send_replies()
        conn = self.conn
        if self.phase is not OPEN or not conn.can_send:
            return
        if self.role == "client":  # a client masks each frame with its own key (RFC 6455 §5.3): no shared bytes
            self._command(normalize_frame(frame))
            return
        if conn.compress and not wire[0] & 0x08:  # data frames only: control frames are never compressed
            key = conn.deflate.standalone_key() if compressed is not None else None  # type: ignore[union-attr]
            out = compressed.get(key) if key is not None else None  # type: ignore[union-attr]
            if out is not None:
                conn.send_serialized(out)
            else:
                kind, data, _code = normalize_frame(frame)
                if key is not None:
                    out = compressed[key] = conn.serialize_message(kind, data)  # type: ignore[index]
                    conn.send_serialized(out)
                else:
                    conn.send_message(kind, data)
        elif not self.sendbuf.size and not conn.has_data_to_send and not self.is_tls:
            # Nothing queued: write it now, as asyncio's transport.write does, instead of marking
            # the connection for this round's flush (per member, that flush cost more than the write).
            if self.stats is not None and not wire[0] & 0x08:  # counted before the peer can see it
                self.stats.sent(frame[0], payload_size(wire))
            try:
                sent = self.sock.send(wire)
            except WOULD_BLOCK:
                sent = 0
            except OSError:  # queued instead: the flush meets the error and closes as usual
                sent = -1
            if sent < 0:
                conn.send_serialized(wire)
                self.loop.mark_dirty(self)
            elif sent < len(wire):
                self.sendbuf.append(memoryview(wire)[sent:] if sent else wire)
                self._after_write()  # interest in EVENT_WRITE, the water marks
            return
        else:
            conn.send_serialized(wire)
        if self.stats is not None and not wire[0] & 0x08:  # a data frame: count its payload
            self.stats.sent(frame[0], payload_size(wire))
        self.loop.mark_dirty(self)

    @staticmethod
    def send_broadcast_all(procs: list[WebSocketProcess], frame: Any, wire: bytes, compressed: dict) -> None:
        """:meth:`send_broadcast` on each of ``procs`` (all on this thread's loop), the writes in one C call.

        The members with nothing queued and an uncompressed, plain-TCP server connection get
        ``wire`` written by one ``kernels.send_many`` call (the per-member work out of the
        interpreter); what a kernel buffer did not take waits in that member's send buffer as
        after a flush, and a member whose write failed gets it queued, so that its flush meets
        the error and closes as usual.  The others, and everything without the C kernel, take
        :meth:`send_broadcast`.
        """
        if send_many is None or len(procs) < 16:
            for proc in procs:
                proc.send_broadcast(frame, wire, compressed)
            return
        idle = [p for p in procs if p.phase is OPEN and p.role == "server" and not p.is_tls and not p.sendbuf.size
                and not p.conn.compress and p.conn.state is CONN_OPEN and not p.conn.has_data_to_send
                and not p._replies]
        if len(idle) < len(procs):
            busy = set(idle)
            for proc in procs:
                if proc not in busy:
                    proc.send_broadcast(frame, wire, compressed)
        if not idle:
            return
        stats = idle[0].stats
        if stats is not None and not wire[0] & 0x08:  # data frames: each member's message, counted before
            stats.sent_all([frame] * len(idle), payload_size(wire) * len(idle))  # a peer can see it
        size = len(wire)
        sent = send_many([p.fd for p in idle], wire)
        if min(sent) < size:  # some kernel buffer is full, or a socket failed
            for proc, n in zip(idle, sent, strict=True):
                if n == size:
                    continue
                if n < 0:
                    proc.conn.send_serialized(wire)
                    proc.loop.mark_dirty(proc)
                else:
                    proc.sendbuf.append(memoryview(wire)[n:] if n else wire)
                    proc._after_write()  # interest in EVENT_WRITE, the water marks

    def _hibernate(self) -> None:
        """Release what an idle connection can rebuild: protocol buffers, zlib objects, an empty mailbox."""
        self.conn.hibernate()
        if not self._mailbox:
            self._mailbox = None

    # -- closing -------------------------------------------------------------------

    def close_going_away(self) -> None:
        """Server shutdown (or a client stopped by its owner): close 1001 and terminate (RFC 6455 §7.4.1)."""
        self._begin_close("shutdown", "shutdown")

    def _close_timed_out(self) -> None:
        self._close_timer = None
        if self.phase is CLOSING and self.conn.has_data_to_send:
            # Our Close never reached the kernel (the round that queued it outlasted close_timeout,
            # e.g. a slow terminate): the handshake starts now, with a timer of its own (once: the
            # flush hands everything the core holds over).  RFC 6455 §7.1.1.
            self.flush()
            if self.phase is not CLOSED:
                self._close_timer = self.loop.call_later(self.opts.close_timeout / 1000.0, self._close_timed_out)
            return
        if self.phase is not CLOSED:
            log.info("[%s] closing handshake not done within %d ms (%d bytes unsent), dropping TCP",
                     self.cid, self.opts.close_timeout, self.sendbuf.size)
            self._finish()

    def _cancel_timers(self) -> None:
        """The timers of an open connection (idle, keepalive)."""
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        if self._ping_timer is not None:
            self._ping_timer.cancel()
            self._ping_timer = None

    def _on_idle(self) -> None:
        self._idle_timer = None
        timeout = self.opts.idle_timeout
        if self.phase is not OPEN or timeout is None:
            return
        left = self._last_recv + timeout / 1000.0 - self.loop.time()
        if left > 0:
            self._idle_timer = self.loop.call_later(left, self._on_idle)
            return
        self._begin_close("timeout", "idle_timeout")

    def _keepalive(self) -> None:
        """ping_interval elapsed: send a Ping; nothing received within ping_timeout closes 1011."""
        self._ping_timer = None
        if self.phase is not OPEN or not self.conn.can_send:
            return
        sent_at = self.loop.time()
        self.conn.send_ping(b"")
        self.loop.mark_dirty(self)
        self._ping_timer = self.loop.call_later(self.opts.ping_timeout / 1000.0, self._keepalive_check, sent_at)

    def _keepalive_check(self, sent_at: float) -> None:
        self._ping_timer = None
        if self.phase is not OPEN:
            return
        if self._last_recv < sent_at:
            log.info("[%s] no pong (nor anything else) within %d ms of a keepalive ping, closing 1011",
                     self.cid, self.opts.ping_timeout)
            self._begin_close("timeout", "keepalive_timeout")
            return
        interval = self.opts.ping_interval
        if interval is not None:
            delay = max(0.0, sent_at + interval / 1000.0 - self.loop.time())
            self._ping_timer = self.loop.call_later(delay, self._keepalive)

    def _arm_idle_timer(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        timeout = self.opts.idle_timeout
        if timeout is not None:
            self._idle_timer = self.loop.call_later(timeout / 1000.0, self._on_idle)
