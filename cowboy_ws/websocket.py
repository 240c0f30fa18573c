"""The handler state machine of an upgraded connection (Cowboy's ``cowboy_websocket``).

One :class:`WebSocketProcess` per connection.  It reads the socket, feeds the
sans-IO :class:`~cowboy_ws.protocol.connection.Connection`, calls the handler's
``websocket_init`` / ``websocket_handle`` / ``websocket_info`` and interprets
their results exactly as the contract table of DESIGN.md says, and calls
``terminate`` exactly once, whatever the exit path.

Output is batched: callbacks only queue frames; the loop flushes each dirty
connection once per round, so everything produced by one read leaves in one
``send``.

Backpressure: what the kernel did not take waits in a per-connection send
buffer.  Above ``send_high_water`` bytes the connection stops reading the
socket (Cowboy's ``{active, false}``: a peer that does not read cannot make us
produce more replies, pongs included) until the buffer drains below
``send_low_water``; a handler that keeps pushing to a peer already behind past
``max_send_buffer`` gets the connection closed with 1008 and terminate reason
``("error", "send_buffer_overflow")``.  Every Close waits at most
``close_timeout`` ms behind unsent data before TCP is dropped.  With
``ping_interval`` set, the server pings and closes with 1011 (reason
``"timeout"``) when nothing arrives within ``ping_timeout`` ms.
"""

from __future__ import annotations

import errno
import logging
import selectors
import socket
import ssl
import time
from collections import deque
from typing import Any

from .options import WebSocketOptions
from .outframes import COMMANDS as _COMMANDS, BadResult, iodata as _iodata, normalize_frame
from .process import Pid
from .protocol import closecodes
from .protocol.connection import CLOSED, OPEN, Connection, encode_close_payload
from .protocol.errors import UsageError

log = logging.getLogger(__name__)
_monotonic = time.monotonic
_READ, _WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE
_NO_ARG: Any = object()  # _call's second callback argument, when there is none

#: Bytes asked of one recv on a TLS socket, and before the upgrade (plain sockets use the loop's buffer).
READ_SIZE = 65536
#: Above this many bytes queued in several buffers, flush with sendmsg (no join copy) instead of one send.
SENDMSG_MIN = 32768
_COALESCE = 65536  # in the send buffer, buffers smaller than this are joined into one send
_KEEPALIVE_REASON = b"keepalive ping timeout"  # what websockets says with its 1011


class WebSocketProcess:
    """An upgraded connection running a Cowboy-style handler."""

    # State that most connections never change lives here as class-level defaults (set on the
    # instance when it changes): fewer instance attributes keep CPython's shared-key instance dict
    # and the specialized attribute loads of the per-message path (measured: 4% CPU per message).
    _pending_size = 0                # bytes in _pending
    _throttled = False               # reading paused: _pending went over send_high_water
    _linger = False                  # we failed the connection: discard input until the peer closes
    _wr_closed = False               # FIN sent
    _ended = False                   # the Pid exited and terminate ran
    _ping_timer: Any = None          # keepalive (ping_interval) timer

    def __init__(self, server: Any, sock: socket.socket, handler: Any, state: Any, partial_req: dict,
                 opts: WebSocketOptions, conn: Connection, cid: str) -> None:
        self.server = server
        self.loop = server.loop
        self.sock = sock
        self.handler = handler
        self.state = state
        self.partial_req = partial_req
        self.opts = opts
        self.conn = conn
        self.cid = cid
        self.pid = Pid(self, self.loop)
        self.is_tls = isinstance(sock, ssl.SSLSocket)
        self.active = True
        self.reason: Any = None            # terminate reason, fixed at the first exit decision
        self.shutdown_reason: Any = "normal"
        self.done = False
        # Both queues are dropped (None) while hibernating and created again when needed.
        self._mailbox: deque[Any] | None = deque()
        self._mailbox_scheduled = False
        self._pending: deque[Any] | None = deque()  # written but not yet accepted by the kernel
        self._events = 0                    # selector interest currently registered
        self._close_after_flush = False
        self._close_timer: Any = None
        self._idle_timer: Any = None
        self._last_recv = self.loop.time()
        self._hibernating = False
        self._handle = getattr(handler, "websocket_handle", None)
        self._info = getattr(handler, "websocket_info", None)

    def __repr__(self) -> str:
        return f"<WebSocketProcess {self.cid} {self.pid!r}>"

    # -- start ---------------------------------------------------------------------

    def start(self, initial: bytes, handshake_response: bytes) -> None:
        """Send the 101 response, run ``websocket_init``, then handle bytes that came with the request."""
        self._pending.append(handshake_response)
        self._pending_size = len(handshake_response)
        self.loop.mark_dirty(self)
        self._set_interest(selectors.EVENT_READ)
        self._arm_idle_timer()
        if self.opts.ping_interval != "infinity":
            self._ping_timer = self.loop.call_later(self.opts.ping_interval / 1000.0, self._keepalive)
        init = getattr(self.handler, "websocket_init", None)
        if init is not None:
            self._call(init, self.state)
        if initial and not self.done and self.conn.state != CLOSED:
            self._receive(initial)

    # -- I/O -----------------------------------------------------------------------

    def _set_interest(self, events: int) -> None:
        if events == self._events or self.done:
            return
        selector = self.loop.selector
        if self._events == 0:
            selector.register(self.sock, events, self._on_ready)
        elif events == 0:
            selector.unregister(self.sock)
        else:
            selector.modify(self.sock, events, self._on_ready)
        self._events = events

    def _wanted_events(self) -> int:
        events = selectors.EVENT_WRITE if self._pending else 0
        if self.active and not self._throttled and not self._close_after_flush:
            events |= selectors.EVENT_READ
        elif self._close_after_flush and (self.conn.state != CLOSED or self._linger):
            events |= selectors.EVENT_READ  # wait for the peer's Close (or its EOF)
        return events

    def _on_ready(self, mask: int) -> None:
        if mask & _WRITE:
            self.flush()
        if mask & _READ and not self.done:
            self._read()

    def _read(self) -> None:
        sock = self.sock
        try:
            if self.is_tls:
                data: Any = sock.recv(READ_SIZE)
                while data and sock.pending():  # decrypted bytes the selector cannot see
                    data += sock.recv(sock.pending())
            else:
                # Into the loop's shared buffer: the protocol core copies out what it keeps
                # (payloads, a partial frame) before the next read reuses it.
                buf = self.loop.read_view
                n = sock.recv_into(buf)
                data = buf[:n] if n else b""
        except (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return
        except OSError as exc:
            self._socket_error(exc)
            return
        if not data:
            self._eof()
            return
        self._last_recv = _monotonic()  # the loop's clock (Loop.time)
        self._receive(data)

    def _receive(self, data: bytes) -> None:
        self._hibernating = False
        events = self.conn.receive_data(data)
        if events:
            self._dispatch(events)
        # the peer's Close answering ours completes the closing handshake: flush finishes (§7.1.1)
        if self.conn.has_data_to_send or (self._close_after_flush and self.conn.state == CLOSED):
            self.loop.mark_dirty(self)

    def flush(self) -> None:
        """Write everything queued in one ``send`` (called once per loop round)."""
        if self.done:
            return
        out = self.conn.buffers_to_send()
        if self._pending:  # the peer is behind: the send buffer's path
            self._flush_pending(out)
            return
        if out:
            count = len(out)
            if 1 < count < 512 and not self.is_tls:
                # the usual pair, a large payload and its header, without map() and sum() (~100 ns)
                total = len(out[0]) + len(out[1]) if count == 2 else sum(map(len, out))
                if total >= SENDMSG_MIN:
                    self._sendmsg(out, total)
                    return
            data = out[0] if len(out) == 1 else b"".join(out)
            try:
                sent = self.sock.send(data)
            except (BlockingIOError, InterruptedError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                sent = 0
            except OSError as exc:
                self._socket_error(exc)
                return
            if sent < len(data):
                self._send_queue().append(memoryview(data)[sent:] if sent else data)
                self._pending_size = len(data) - sent
        self._after_write()

    def _after_write(self) -> None:
        """After a direct write: water marks if the kernel left some, close if due, selector interest."""
        if self._pending:
            if self._pending_size > self.opts.send_high_water:
                self._check_send_buffer(0)
            if not self.done:
                self._set_interest(self._wanted_events())
            return
        if self._close_after_flush:
            self._after_close_flushed()
            return
        if self._events != _READ or self._throttled or not self.active:  # else _wanted_events() is _READ
            self._set_interest(self._wanted_events())

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
            for i, buf in enumerate(out):  # keep what the kernel did not take, in order
                if sent < len(buf):
                    pending = self._send_queue()
                    pending.append(memoryview(buf)[sent:] if sent else buf)
                    pending.extend(out[i + 1:])
                    break
                sent -= len(buf)
            self._pending_size = sum(map(len, self._pending))  # type: ignore[arg-type]
        self._after_write()

    def _send_queue(self) -> deque:
        if self._pending is None:
            self._pending = deque()
        return self._pending

    def _flush_pending(self, out: list) -> None:
        """Write from the send buffer until the kernel refuses more, then apply the water marks."""
        pending = self._pending
        before = self._pending_size
        if out:
            pending.extend(out)
            self._pending_size += sum(map(len, out))
        sock = self.sock
        while pending:
            data = pending[0]
            if len(data) < _COALESCE and len(pending) > 1:  # many small frames: one send
                parts = []
                size = 0
                while pending and size < _COALESCE:
                    part = pending.popleft()
                    parts.append(part)
                    size += len(part)
                data = b"".join(parts)
                pending.appendleft(data)
            try:
                sent = sock.send(data)
            except (BlockingIOError, InterruptedError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                break
            except OSError as exc:
                self._socket_error(exc)
                return
            self._pending_size -= sent
            if sent < len(data):
                pending[0] = memoryview(data)[sent:]
                break
            pending.popleft()
        if self._throttled or self._pending_size > self.opts.send_high_water:
            self._check_send_buffer(before)
            if self.done:
                return
        if not pending and self._close_after_flush:
            self._after_close_flushed()
            return
        self._set_interest(self._wanted_events())

    def _check_send_buffer(self, before: int) -> None:
        """Water marks: pause reading above high, resume below low, 1008 past the hard limit."""
        size = self._pending_size
        opts = self.opts
        if size > opts.send_high_water:
            if not self._throttled:
                self._throttled = True
                log.debug("[%s] peer is slow: %d bytes unsent, reading paused", self.cid, size)
            limit = opts.send_limit
            if limit is not None and size > limit and before >= opts.send_high_water and self.reason is None:
                log.warning("[%s] peer does not read: %d bytes unsent (max_send_buffer %d), closing 1008",
                            self.cid, size, limit)
                self._begin_close(("error", "send_buffer_overflow"), closecodes.POLICY_VIOLATION)
        elif size <= opts.send_low_water:
            self._throttled = False
            log.debug("[%s] send buffer drained to %d bytes, reading resumed", self.cid, size)

    # -- dispatch ------------------------------------------------------------------

    def _dispatch(self, events: list) -> None:
        for event in events:
            if self.done or self.reason is not None:
                if events[-1][0] == "error":  # the protocol layer failed it after our decision: drain too
                    self._linger = True
                return
            kind = event[0]
            if kind == "close":
                code, payload = event[1], event[2]
                self._begin_close(("remote", code, payload) if code is not None else "remote")
            elif kind == "error":
                exc = event[1]
                log.info("[%s] protocol error, closing %d: %s", self.cid, exc.code, exc)
                self._linger = True
                self._begin_close(("error", exc.reason))
            else:
                self._call(self._handle, event, self.state)

    def deliver(self, msg: Any) -> None:
        """A message for ``websocket_info`` (from :meth:`Pid.send`): queue it, handle it this round."""
        if self.done or self.reason is not None:
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
            if self.done or self.reason is not None:
                mailbox.clear()
                return
            self._call(self._info, mailbox.popleft(), self.state)
        if self.conn.has_data_to_send:
            self.loop.mark_dirty(self)
        if mailbox and not self._mailbox_scheduled:
            self._mailbox_scheduled = True
            self.loop.call_soon(self._drain_mailbox)

    def _call(self, callback: Any, arg: Any, state: Any = _NO_ARG) -> None:
        """Run one handler callback, ``callback(arg, state)`` (``callback(arg)`` for websocket_init),
        and apply its result; a raise is a crash (1011)."""
        loop = self.loop
        loop.self_pid = self.pid  # self() inside the callback
        try:
            result = callback(arg) if state is _NO_ARG else callback(arg, state)
            # Fast paths for the two commonest results; everything else goes through _apply.
            if type(result) is tuple and self.reason is None:
                n = len(result)
                if n == 3:
                    tag, frame, new_state = result
                    if tag == "reply" and type(frame) is tuple and len(frame) == 2:
                        kind, data = frame
                        if type(data) is bytes and (kind == "binary" or kind == "text"):
                            self.state = new_state
                            conn = self.conn
                            if conn.state is OPEN or conn.can_send:
                                conn.send_message(kind, data)
                            return
                elif n == 2 and result[0] == "ok":
                    self.state = result[1]
                    return
            self._apply(result)
        except Exception as exc:  # any handler bug: crash this connection only
            self._crash("error", exc)
        finally:
            loop.self_pid = None

    def _crash(self, kind: str, exc: BaseException) -> None:
        log.error("[%s] handler %r crashed", self.cid, self.handler, exc_info=exc)
        if self.reason is None:
            self._begin_close(("crash", kind, exc), closecodes.INTERNAL_ERROR)

    def _apply(self, result: Any) -> None:
        """Interpret a CallResult (DESIGN.md contract table)."""
        if not isinstance(result, tuple) or not result:
            raise BadResult(f"callback returned {result!r}, not a call result tuple")
        tag = result[0]
        n = len(result)
        if tag == "ok" and n in (2, 3):
            self.state = result[1]
            hibernate = self._hibernate_flag(result, 2)
            commands: Any = ()
        elif tag == "reply" and n in (3, 4):
            self.state = result[2]
            hibernate = self._hibernate_flag(result, 3)
            frames = result[1]
            # validate every frame before anything is sent
            commands = [normalize_frame(f) for f in (frames if isinstance(frames, list) else [frames])]
        elif tag == "stop" and n == 2:
            self.state = result[1]
            self._begin_close("stop", closecodes.NORMAL)
            return
        elif isinstance(tag, list) and n in (2, 3):
            self.state = result[1]
            hibernate = self._hibernate_flag(result, 2)
            commands = [c if isinstance(c, tuple) and c and c[0] in _COMMANDS else normalize_frame(c)
                        for c in tag]
        else:
            raise BadResult(f"callback returned {result!r}, not a call result")
        for command in commands:
            self._command(command)
        if hibernate and self.reason is None:
            self._hibernate()

    @staticmethod
    def _hibernate_flag(result: tuple, index: int) -> bool:
        if len(result) <= index:
            return False
        if result[index] != "hibernate":
            raise BadResult(f"expected 'hibernate' as the last element of {result!r}")
        return True

    def _command(self, command: tuple) -> None:
        """Run one command, or send one frame already normalized to ``(kind, data, code)``."""
        name = command[0]
        if name in _COMMANDS:
            if len(command) != 2:
                raise BadResult(f"invalid command {command!r}")
            value = command[1]
            if name == "active":
                self.active = bool(value)
                if not self.done:
                    self._set_interest(self._wanted_events())
            elif name == "deflate":
                self.conn.compress = bool(value) and self.conn.deflate is not None
            elif name == "set_options":
                self._set_options(value)
            else:
                self.shutdown_reason = value
            return
        self._send_frame(command)

    def _set_options(self, options: Any) -> None:
        if not isinstance(options, dict):
            raise BadResult(f"set_options takes a dict, not {options!r}")
        for key, value in options.items():
            if key == "idle_timeout":
                self.opts = self.opts.replace(idle_timeout=value)
                self._last_recv = self.loop.time()
                self._arm_idle_timer()
            elif key == "max_frame_size":
                self.opts = self.opts.replace(max_frame_size=value)
                self.conn.set_max_frame_size(None if value == "infinity" else value)
            else:
                raise BadResult(f"set_options: unknown option {key!r}")

    def _send_frame(self, frame: tuple) -> None:
        kind, data, code = frame
        if not self.conn.can_send or self.reason is not None:
            return  # frames queued after a close frame are dropped
        if kind == "close":
            encode_close_payload(code, data)  # check before committing to close
            self._begin_close("stop", code, data)
            return
        if kind == "text" or kind == "binary":
            self.conn.send_message(kind, _iodata(data))  # iodata may nest lists
        elif kind == "ping":
            self.conn.send_ping(_iodata(data))
        else:
            self.conn.send_pong(_iodata(data))
        self.loop.mark_dirty(self)

    def send_broadcast(self, frame: Any, wire: bytes, compressed: dict | None = None) -> None:
        """Queue a frame serialized once for many connections.

        Compressing connections without context takeover on our side share one
        compressed frame per deflate setting (``compressed``: key -> frame, one
        dict per broadcast and loop); with context takeover each compresses it
        with its own window (RFC 7692 §7.2.1). Control frames (a broadcast ping)
        go out as ``wire`` everywhere (RFC 7692 §6.1).
        """
        conn = self.conn
        if self.done or self.reason is not None or not conn.can_send:
            return
        if conn.compress and not wire[0] & 0x08:  # data frames only: control frames are never compressed
            key = conn.deflate.standalone_key() if compressed is not None else None  # type: ignore[union-attr]
            out = compressed.get(key) if key is not None else None  # type: ignore[union-attr]
            if out is not None:
                conn.send_serialized(out)
            else:
                kind, data, _code = normalize_frame(frame)
                if key is not None:
                    out = compressed[key] = conn.serialize_message(kind, _iodata(data))  # type: ignore[index]
                    conn.send_serialized(out)
                else:
                    conn.send_message(kind, _iodata(data))
        else:
            conn.send_serialized(wire)
        self.loop.mark_dirty(self)

    def _hibernate(self) -> None:
        """Release what an idle connection can rebuild: protocol buffers, zlib objects, empty queues."""
        self._hibernating = True
        self.conn.hibernate()
        if not self._mailbox:
            self._mailbox = None
        if not self._pending:
            self._pending = None

    # -- closing -------------------------------------------------------------------

    def _begin_close(self, reason: Any, code: int | None = None, payload: bytes = b"") -> None:
        """Decide the terminate reason (first decision wins) and start closing.

        ``code`` is the close code to send if this side still may (RFC 6455 §7.1.2);
        when the peer closed or the protocol layer failed the connection, the
        Close frame is already queued by the sans-IO core.
        """
        if self.reason is not None:
            return
        self.reason = reason
        if self._mailbox:
            self._mailbox.clear()
        if self.conn.state == OPEN:
            try:
                self.conn.send_close(code, payload)
            except UsageError:
                self.conn.send_close(closecodes.NORMAL)
        self._close_after_flush = True
        if self._close_timer is None:  # a peer that reads nothing cannot hold the close up for ever
            self._close_timer = self.loop.call_later(self.opts.close_timeout / 1000.0, self._close_timed_out)
        self.loop.mark_dirty(self)

    def _close_timed_out(self) -> None:
        if not self.done:
            log.info("[%s] closing handshake not done within %d ms (%d bytes unsent), dropping TCP",
                     self.cid, self.opts.close_timeout, self._pending_size)
            self._finish()

    def _after_close_flushed(self) -> None:
        """Our Close is written: close now if the handshake is done, else wait for the peer's (§7.1.1).

        After failing the connection (§7.1.7), or after the closing handshake, the peer may still
        be sending: closing with unread input would reset the connection, and the reset can destroy
        our Close before the peer reads it.  So (plain TCP) we send FIN, which is the server closing
        the TCP connection first (§7.1.1), and discard what comes until the peer closes (within
        close_timeout); terminate runs at once.
        """
        if self.conn.state == CLOSED and not self._linger:
            if self.is_tls or self._wr_closed:  # our FIN went out with our Close: the peer has both
                self._finish()
                return
            self._linger = True
        if self._linger:  # the handler is done with this connection: terminate now, drain the socket after
            self._end_process()
        if not self._wr_closed:
            self._wr_closed = True
            try:
                self.sock.shutdown(socket.SHUT_WR) if not self.is_tls else None
            except OSError:
                pass
        if self._close_timer is None:
            self._close_timer = self.loop.call_later(self.opts.close_timeout / 1000.0, self._close_timed_out)
        self._set_interest(selectors.EVENT_READ)

    def close_going_away(self) -> None:
        """Server shutdown: close 1001 and terminate (RFC 6455 §7.4.1)."""
        if self.reason is None:
            self._begin_close("shutdown", closecodes.GOING_AWAY)

    def _eof(self) -> None:
        self.conn.receive_eof()
        if self.reason is None:
            self.reason = ("error", "closed")
        self._finish()

    def _socket_error(self, exc: OSError) -> None:
        if self.reason is None:
            name = errno.errorcode.get(exc.errno or 0, "closed").lower() if exc.errno else "closed"
            self.reason = ("error", name)
        log.debug("[%s] socket error: %s", self.cid, exc)
        self._finish()

    def _on_idle(self) -> None:
        self._idle_timer = None
        if self.done or self.reason is not None:
            return
        timeout = self.opts.idle_timeout
        if timeout == "infinity":
            return
        left = self._last_recv + timeout / 1000.0 - self.loop.time()
        if left > 0:
            self._idle_timer = self.loop.call_later(left, self._on_idle)
            return
        self._begin_close("timeout", closecodes.NORMAL)

    def _keepalive(self) -> None:
        """ping_interval elapsed: send a Ping; nothing received within ping_timeout closes 1011."""
        self._ping_timer = None
        if self.done or self.reason is not None or not self.conn.can_send:
            return
        sent_at = self.loop.time()
        self.conn.send_ping(b"")
        self.loop.mark_dirty(self)
        self._ping_timer = self.loop.call_later(self.opts.ping_timeout / 1000.0, self._keepalive_check, sent_at)

    def _keepalive_check(self, sent_at: float) -> None:
        self._ping_timer = None
        if self.done or self.reason is not None:
            return
        if self._last_recv < sent_at:
            log.info("[%s] no pong (nor anything else) within %d ms of a keepalive ping, closing 1011",
                     self.cid, self.opts.ping_timeout)
            self._begin_close("timeout", closecodes.INTERNAL_ERROR, _KEEPALIVE_REASON)
            return
        interval = self.opts.ping_interval
        if interval != "infinity":
            delay = max(0.0, sent_at + interval / 1000.0 - self.loop.time())
            self._ping_timer = self.loop.call_later(delay, self._keepalive)

    def _arm_idle_timer(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        timeout = self.opts.idle_timeout
        if timeout != "infinity":
            self._idle_timer = self.loop.call_later(timeout / 1000.0, self._on_idle)

    def _finish(self) -> None:
        """Release the socket and call ``terminate`` exactly once."""
        if self.done:
            return
        self.done = True
        if self.reason is None:
            self.reason = ("error", "closed")
        for timer in (self._idle_timer, self._close_timer, self._ping_timer):
            if timer is not None:
                timer.cancel()
        self._idle_timer = self._close_timer = None
        if self._ping_timer is not None:
            self._ping_timer = None
        if self._events:
            try:
                self.loop.selector.unregister(self.sock)
            except (KeyError, ValueError):
                pass
            self._events = 0
        try:
            self.sock.close()
        except OSError:
            pass
        if self._pending:
            self._pending.clear()
        if self._pending_size:
            self._pending_size = 0
        self.server._forget(self)
        self._end_process()
        log.debug("[%s] closed: %r", self.cid, self.reason)

    def _end_process(self) -> None:
        """The handler's side of the end, once: the Pid exits, then ``terminate`` runs."""
        if self._ended:
            return
        self._ended = True
        if self._mailbox:
            self._mailbox.clear()
        # Cowboy exits with {shutdown, Reason} after the shutdown_reason command, else normal.
        self.pid._exit("normal" if self.shutdown_reason == "normal" else ("shutdown", self.shutdown_reason))
        terminate = getattr(self.handler, "terminate", None)
        if terminate is not None:
            self.loop.self_pid = self.pid
            try:
                terminate(self.reason, self.partial_req, self.state)
            except Exception:
                log.exception("[%s] terminate raised", self.cid)
            finally:
                self.loop.self_pid = None
