"""Erlang-style processes for connections: ``Pid``, ``self()``, timers and process groups.

Each WebSocket connection is a "process" with a :class:`Pid`.  ``pid.send(msg)``
delivers ``msg`` to the handler's ``websocket_info`` on the connection's loop,
from any thread, in order; a message to a connection that is gone is dropped
silently, like ``Pid ! Msg`` to a dead process.

Process groups mirror Erlang's ``pg``: :func:`join`, :func:`leave`,
:func:`members`; :func:`broadcast` frames a message once and hands the same
bytes to every member.
"""

from __future__ import annotations

import itertools
import threading
from typing import Any, Hashable

from .loop import Loop

_ids = itertools.count(1)
_local = threading.local()


class Pid:
    """The address of a connection process; hashable, printable, safe to share between threads."""

    __slots__ = ("id", "exit_reason", "_conn", "_loop", "__weakref__")

    def __init__(self, conn: Any, loop: Loop) -> None:
        self.id = next(_ids)
        #: None while alive; then ``"normal"``, or ``("shutdown", x)`` after the ``shutdown_reason`` command
        self.exit_reason: Any = None
        self._conn = conn
        self._loop = loop

    def __repr__(self) -> str:
        return f"<Pid 0.{self.id}.0>"

    @property
    def alive(self) -> bool:
        return self._conn is not None

    def send(self, msg: Any) -> None:
        """``Pid ! Msg``: queue ``msg`` for ``websocket_info``; thread-safe, ordered, dropped if dead."""
        conn = self._conn
        if conn is None:
            return
        if self._loop.in_loop_thread():
            conn.deliver(msg)
        else:
            self._loop.call_soon_threadsafe(self._deliver, msg)

    def _deliver(self, msg: Any) -> None:
        conn = self._conn
        if conn is not None:
            conn.deliver(msg)

    def _exit(self, reason: Any = "normal") -> None:
        """The process ended with ``reason``: later messages are dropped; it leaves every group."""
        self.exit_reason = reason
        self._conn = None
        _groups.leave_all(self)


def self() -> Pid:
    """``self()``: the Pid of the connection whose callback is running on this thread."""
    pid = getattr(_local, "pid", None)
    if pid is None:
        raise RuntimeError("cowboy_ws.self() called outside a websocket callback")
    return pid


def _set_self(pid: Pid | None) -> None:
    _local.pid = pid


class TimerRef:
    """What :func:`send_after` returns; pass it to :func:`cancel_timer`."""

    __slots__ = ("_timer", "_loop")

    def __init__(self, timer: Any, loop: Loop) -> None:
        self._timer = timer
        self._loop = loop

    def __repr__(self) -> str:
        return f"<TimerRef {id(self):#x}>"


def send_after(ms: int, pid: Pid, msg: Any) -> TimerRef:
    """``erlang:send_after(Ms, Pid, Msg)``: deliver ``msg`` to ``pid`` after ``ms`` milliseconds.

    Call it from a callback (the timer lives on the target's loop).
    """
    loop = pid._loop
    if not loop.in_loop_thread():
        raise RuntimeError("send_after must be called from the target connection's loop thread")
    timer = loop.call_later(ms / 1000.0, _fire, pid, msg)
    return TimerRef(timer, loop)


def _fire(pid: Pid, msg: Any) -> None:
    pid._deliver(msg)


def cancel_timer(ref: TimerRef) -> int | bool:
    """``erlang:cancel_timer(Ref)``: milliseconds that were left, or False if it already fired or was cancelled."""
    timer = ref._timer
    if timer.cancelled:
        return False
    left = timer.when - ref._loop.time()
    timer.cancel()
    if left < 0:
        return False
    return int(left * 1000)


class _Groups:
    """Process groups (Erlang ``pg``), shared by every loop of the process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._groups: dict[Hashable, dict[Pid, None]] = {}
        self._of: dict[Pid, set[Hashable]] = {}

    def join(self, group: Hashable, pid: Pid) -> None:
        with self._lock:
            self._groups.setdefault(group, {})[pid] = None
            self._of.setdefault(pid, set()).add(group)

    def leave(self, group: Hashable, pid: Pid) -> None:
        with self._lock:
            members = self._groups.get(group)
            if members is not None:
                members.pop(pid, None)
                if not members:
                    del self._groups[group]
            groups = self._of.get(pid)
            if groups is not None:
                groups.discard(group)
                if not groups:
                    del self._of[pid]

    def leave_all(self, pid: Pid) -> None:
        with self._lock:
            for group in self._of.pop(pid, ()):
                members = self._groups.get(group)
                if members is not None:
                    members.pop(pid, None)
                    if not members:
                        del self._groups[group]

    def members(self, group: Hashable) -> list[Pid]:
        with self._lock:
            return list(self._groups.get(group, ()))

    def which_groups(self) -> list[Hashable]:
        with self._lock:
            return list(self._groups)


_groups = _Groups()


def join(group: Hashable, pid: Pid | None = None) -> None:
    """``pg:join``: add ``pid`` (default ``self()``) to ``group``."""
    _groups.join(group, pid or self())


def leave(group: Hashable, pid: Pid | None = None) -> None:
    """``pg:leave``: remove ``pid`` (default ``self()``) from ``group``."""
    _groups.leave(group, pid or self())


def members(group: Hashable) -> list[Pid]:
    """``pg:get_members``: the Pids in ``group``."""
    return _groups.members(group)


def which_groups() -> list[Hashable]:
    """``pg:which_groups``."""
    return _groups.which_groups()


def broadcast(group: Hashable, frame: Any, *, exclude: Pid | None = None) -> int:
    """Send one OutFrame to every member of ``group``; returns how many were reached.

    The frame is serialized once and the same bytes are queued on every member
    that sends uncompressed; members with permessage-deflate active compress it
    with their own context (RFC 7692 §7.2.1: each connection has its own).
    """
    from .websocket import encode_broadcast  # the connection layer owns framing

    targets = [pid for pid in _groups.members(group) if pid is not exclude and pid._conn is not None]
    if not targets:
        return 0
    wire = encode_broadcast(frame)
    for pid in targets:
        conn = pid._conn
        if conn is None:
            continue
        if pid._loop.in_loop_thread():
            conn.send_broadcast(frame, wire)
        else:
            pid._loop.call_soon_threadsafe(_remote_broadcast, pid, frame, wire)
    return len(targets)


def _remote_broadcast(pid: Pid, frame: Any, wire: bytes) -> None:
    conn = pid._conn
    if conn is not None:
        conn.send_broadcast(frame, wire)
