"""A thin ``selectors`` event loop: readiness callbacks, a timer heap, a wake-up fd.

One loop runs per thread (normally one per process).  Everything a connection
does happens on its loop's thread; other threads talk to it only through
:meth:`Loop.call_soon_threadsafe`, which appends to a queue and pokes the wake-up
socket so the ``select`` call returns.

Write batching lives here too: a connection that produced output calls
:meth:`Loop.mark_dirty`; after every readiness event of one ``select`` round has
been handled, each dirty connection is flushed once, so all frames produced by
one read (or one mailbox batch) leave in one ``send``.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import mmap
import select
import selectors
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

#: Size of the loop's shared receive buffer: with many 64 KiB frames queued (a deep window), one read
#: takes about 16 of them, so fewer reads and bigger batches per loop round (measured: bench/README.md).
READ_BUFFER_SIZE = 1048576
#: Where the receive buffer starts in its page: half a page in.  Socket data that begins a page
#: (sent with sendfile, or from page-aligned buffers) is then never copied to the same offset in
#: a page: loads and stores 4 KiB apart look dependent to the CPU and stall the kernel's copy
#: ("4K aliasing").  Measured with a 64 KiB echo: bench/README.md.
READ_BUFFER_OFFSET = 2048

_current = threading.local()


def current_loop() -> Loop | None:
    """The loop running on this thread, if any."""
    return getattr(_current, "loop", None)


class Timer:
    """A scheduled call; :meth:`cancel` prevents it from running.

    Cancelling drops the callback and its arguments at once: a cancelled timer
    left in the heap (an idle timeout of a connection that is long gone) must not
    keep that connection, its socket and its buffers alive until its deadline.
    """

    __slots__ = ("when", "callback", "args", "cancelled", "_loop")

    def __init__(self, when: float, callback: Callable[..., Any], args: tuple, loop: Loop | None = None) -> None:
        self.when = when
        self.callback = callback
        self.args = args
        self.cancelled = False
        self._loop = loop

    def cancel(self) -> None:
        if not self.cancelled:
            self.cancelled = True
            self.callback = _noop
            self.args = ()
            loop = self._loop
            if loop is not None:
                self._loop = None
                loop._timer_cancelled()


def _noop(*_args: Any) -> None:
    pass


def _run_timer(timer: Timer) -> None:
    """Run a due timer unless it was cancelled after it became due (earlier in the same round)."""
    if not timer.cancelled:
        timer.cancelled = True  # fired: cancel_timer() now answers False
        callback, args = timer.callback, timer.args
        timer.callback, timer.args = _noop, ()
        callback(*args)


_READ, _WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE


if getattr(selectors, "EpollSelector", None) is selectors.DefaultSelector:
    _NOT_IN, _NOT_OUT = ~select.EPOLLIN, ~select.EPOLLOUT

    class _EpollSelector(selectors.EpollSelector):
        """The stdlib's epoll selector with a leaner :meth:`select`, called once per loop round.

        Same result as ``selectors.EpollSelector.select`` (its code, less a helper call per
        ready fd): less CPU per loop round (measured: bench/README.md).
        """

        # the stdlib selector's internals that select() reads (checked by _new_selector)
        _fd_to_key: dict[int, selectors.SelectorKey]
        _selector: select.epoll

        def select(self, timeout: float | None = None) -> list:
            if timeout is None:
                timeout = -1
            elif timeout <= 0:
                timeout = 0
            else:
                timeout = math.ceil(timeout * 1e3) * 1e-3  # epoll counts milliseconds: round up
            fd_to_key = self._fd_to_key
            try:
                ready = self._selector.poll(timeout, len(fd_to_key) or 1)
            except InterruptedError:
                return []
            out = []
            for fd, event in ready:
                key = fd_to_key.get(fd)
                if key is not None:
                    out.append((key, ((event & _NOT_IN and _WRITE) | (event & _NOT_OUT and _READ)) & key.events))
            return out

    _Selector: Any = _EpollSelector
else:  # pragma: no cover - not Linux
    _Selector = selectors.DefaultSelector


def _new_selector() -> selectors.BaseSelector:
    """The loop's selector: :class:`_EpollSelector` where the stdlib's has the internals it reads."""
    selector = _Selector()
    if not (hasattr(selector, "_fd_to_key") and hasattr(selector, "_selector")):  # pragma: no cover
        selector.close()  # a future selectors module laid out otherwise: its own select()
        selector = selectors.DefaultSelector()
    return selector


#: Rebuild the timer heap once it holds this many cancelled timers and they are most of it.
_COMPACT_MIN = 512


class Loop:
    """A single-threaded event loop over :class:`selectors.DefaultSelector` (on Linux, its epoll
    selector with the leaner ``select`` of :class:`_EpollSelector`)."""

    def __init__(self) -> None:
        self.selector = _new_selector()
        #: One receive buffer for every connection of this loop (reads are handled one at a time):
        #: recv_into it avoids allocating (and page-faulting) a fresh buffer per read.  An anonymous
        #: mapping, so that its offset in the page is ours to choose (READ_BUFFER_OFFSET).
        self.read_buffer = mmap.mmap(-1, READ_BUFFER_OFFSET + READ_BUFFER_SIZE)
        #: The part reads go to (sliced per read: one object, not two).
        self.read_view = memoryview(self.read_buffer)[READ_BUFFER_OFFSET:]
        #: permessage-deflate compressors shared by this loop's connections without server
        #: context takeover (see cowboy_ws.protocol.deflate.PerMessageDeflate).
        self.deflaters: dict = {}
        #: The Pid of the connection whose callback is running (``self()``), else None.  An
        #: attribute of the loop, not a threading.local: set twice per callback, and a plain
        #: attribute store is cheaper each time (measured: bench/README.md).
        self.self_pid: Any = None
        self._timers: list[tuple[float, int, Timer]] = []
        self._seq = itertools.count()
        self._ready: deque[tuple[Callable[..., Any], tuple]] = deque()
        self._threadsafe: deque[tuple[Callable[..., Any], tuple]] = deque()
        self._dirty: dict[Any, None] = {}
        self._cancelled = 0                  # cancelled timers still in the heap
        self._running = False
        self._stopping = False
        self.thread_id: int | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._woken = False
        self.selector.register(self._wake_r, selectors.EVENT_READ, self._on_wake)

    # -- scheduling ----------------------------------------------------------------

    @staticmethod
    def time() -> float:
        return time.monotonic()

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> Timer:
        """Run ``callback(*args)`` after ``delay`` seconds (loop thread only)."""
        timer = Timer(time.monotonic() + delay, callback, args, self)
        heapq.heappush(self._timers, (timer.when, next(self._seq), timer))
        return timer

    def _timer_cancelled(self) -> None:
        """Drop cancelled timers from the heap when they are most of it (connection churn with
        long timeouts would otherwise grow it by one entry per closed connection)."""
        self._cancelled += 1
        if self._cancelled >= _COMPACT_MIN and self._cancelled * 2 > len(self._timers):
            self._timers[:] = [entry for entry in self._timers if not entry[2].cancelled]  # in place:
            heapq.heapify(self._timers)                                                 # _run_once holds it
            self._cancelled = 0

    def call_soon(self, callback: Callable[..., Any], *args: Any) -> None:
        """Run ``callback(*args)`` on the next round (loop thread only)."""
        self._ready.append((callback, args))

    def call_soon_threadsafe(self, callback: Callable[..., Any], *args: Any) -> None:
        """Run ``callback(*args)`` on the loop thread; callable from any thread."""
        self._threadsafe.append((callback, args))
        if not self._woken:
            self._woken = True
            try:
                self._wake_w.send(b"\0")
            except (BlockingIOError, OSError):
                pass

    def in_loop_thread(self) -> bool:
        return self.thread_id == threading.get_ident()

    def mark_dirty(self, conn: Any) -> None:
        """Ask for ``conn.flush()`` once at the end of this round."""
        self._dirty[conn] = None

    def _on_wake(self, _mask: int) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    # -- running -------------------------------------------------------------------

    def stop(self) -> None:
        """Make :meth:`run` return after the current round (thread-safe)."""
        self._stopping = True
        self.call_soon_threadsafe(lambda: None)

    def run(self) -> None:
        """Run until :meth:`stop`."""
        self.thread_id = threading.get_ident()
        _current.loop = self
        self._running = True
        self._stopping = False
        try:
            while not self._stopping:
                self._run_once()
        finally:
            self._running = False
            _current.loop = None

    def _run_once(self) -> None:
        timers = self._timers
        if self._ready or self._threadsafe:
            timeout: float | None = 0
        elif timers:
            timeout = max(0.0, timers[0][0] - time.monotonic())
        else:
            timeout = None
        events = self.selector.select(timeout)
        for key, mask in events:
            try:
                key.data(mask)
            except KeyboardInterrupt:
                raise
            except BaseException:  # a callback bug (even a SystemExit) must not stop every other connection
                log.exception("unhandled error in I/O callback %r", key.data)
        self._woken = False
        threadsafe = self._threadsafe
        while threadsafe:
            self._ready.append(threadsafe.popleft())
        if timers:
            now = time.monotonic()
            while timers and timers[0][0] <= now:
                timer = heapq.heappop(timers)[2]
                if timer.cancelled:
                    self._cancelled -= 1
                else:
                    timer._loop = None  # out of the heap: a later cancel() does not count it
                    self._ready.append((_run_timer, (timer,)))
        ready = self._ready
        if ready:
            for _ in range(len(ready)):  # only those queued now: a callback's call_soon waits a round
                callback, args = ready.popleft()
                try:
                    callback(*args)
                except KeyboardInterrupt:
                    raise
                except BaseException:
                    log.exception("unhandled error in callback %r", callback)
        if self._dirty:
            self.flush_dirty()

    def flush_dirty(self) -> None:
        """Flush every connection marked dirty during this round (one send each)."""
        dirty = self._dirty
        while dirty:
            conns = list(dirty)
            dirty.clear()
            for conn in conns:
                try:
                    conn.flush()
                except KeyboardInterrupt:
                    raise
                except BaseException as exc:  # the connection closes (1011) if it can, the loop goes on
                    fault = getattr(conn, "fault", None)
                    if fault is not None:
                        fault(exc)
                    else:
                        log.exception("unhandled error flushing %r", conn)

    def close(self) -> None:
        """Release the selector and wake-up sockets (after :meth:`run` returned)."""
        try:
            self.selector.unregister(self._wake_r)
        except (KeyError, ValueError):
            pass
        self.selector.close()
        self._wake_r.close()
        self._wake_w.close()
