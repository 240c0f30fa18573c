"""Erlang-style processes for connections: ``Pid``, ``self()``, timers and process groups.

Each WebSocket connection is a "process" with a :class:`Pid`.  ``pid.send(msg)``
delivers ``msg`` to the handler's ``websocket_info`` on the connection's loop,
from any thread, in order; a message to a connection that is gone is dropped
silently, like ``Pid ! Msg`` to a dead process.

Process groups mirror Erlang's ``pg``: :func:`join`, :func:`leave`,
:func:`members`; :func:`broadcast` frames a message once and hands the same
bytes to every member.

Nodes.  Every OS process is a node with its own id (:func:`node`; a worker of
``--workers`` is one, a forked child gets a new one).  A Pid carries its node
and its number there, and travels between nodes as just that pair (in the bus
codec, :mod:`cowboy_ws.bus_codec`, and when pickled), so a Pid put in a message
or a group can be used from any node: :meth:`Pid.send` to a Pid of another node,
and the members other nodes have in a group, go through the messaging backend
(:mod:`cowboy_ws.messaging`): by default none (a message to another node is
dropped), with ``Server(redis_url=...)`` Redis pub/sub
(:mod:`cowboy_ws.redis_backend`).  Only local Pids join and leave groups (as in
``pg``); :func:`members` and :func:`broadcast` span every node.
"""

from __future__ import annotations

import itertools
import os
import secrets
import socket
import threading
import weakref
from collections.abc import Hashable
from typing import Any

from .loop import Loop, current_loop
from .messaging import Backend, LocalBackend
from .outframes import encode_broadcast, flatten_broadcast

_ids = itertools.count(1)


def _new_node_id() -> str:
    host = socket.gethostname().split(".")[0] or "host"
    return f"{host}:{os.getpid()}:{secrets.token_hex(4)}"


#: This process's node id (Erlang's ``node()``); a forked child gets a fresh one.
_node = _new_node_id()
#: Local Pids whose number left the process (pickled, sent to another node in a message, or a group
#: member that left its groups alive), by number: with the group members (:meth:`_Groups.member`),
#: what a Pid of this node coming back, or a message from another node, resolves to.  Weak: a Pid
#: that is gone is gone from here too; a Pid that never leaves the process costs nothing.
_registry: weakref.WeakValueDictionary[int, Pid] = weakref.WeakValueDictionary()
#: The messaging backend (cowboy_ws.messaging): where messages to other nodes go.
_backend: Backend = LocalBackend()


def node() -> str:
    """``node()``: this process's node id."""
    return _node


def nodes() -> list[str]:
    """``nodes()``: the other nodes the messaging backend knows to be up (none without Redis)."""
    return _backend.nodes()


class Pid:
    """The address of a connection process; hashable, printable, picklable, safe to share between threads.

    Two Pids are equal when they name the same process (node and number), also when
    one was unpickled from a message.  ``pickle`` keeps only ``(node, id)``: unpickled
    on its own node it is the live Pid again; elsewhere it is a remote Pid whose
    :meth:`send` goes through the messaging backend.
    """

    __slots__ = ("id", "node", "exit_reason", "_conn", "_loop", "__weakref__")

    def __init__(self, conn: Any, loop: Loop) -> None:
        self.id = next(_ids)
        #: The node id of the process this Pid belongs to (:func:`node` for local ones)
        self.node = _node
        #: None while alive; then ``"normal"``, or ``("shutdown", x)`` after the ``shutdown_reason`` command
        self.exit_reason: Any = None
        self._conn = conn
        self._loop: Loop | None = loop  # None for another node's Pid (or an unpickled dead one)

    @classmethod
    def _named(cls, node_id: str, pid_id: int) -> Pid:
        """A Pid that is not (or no longer) a connection of this process: remote, or local and dead."""
        pid = cls.__new__(cls)
        pid.id = pid_id
        pid.node = node_id
        pid.exit_reason = None if node_id != _node else "noproc"
        pid._conn = None
        pid._loop = None
        return pid

    def __repr__(self) -> str:
        if self.node == _node:
            return f"<Pid 0.{self.id}.0>"
        return f"<Pid {self.node}.{self.id}>"

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if other.__class__ is not Pid:
            return NotImplemented
        return self.id == other.id and self.node == other.node

    def __ne__(self, other: object) -> bool:
        result = self.__eq__(other)
        return result if result is NotImplemented else not result

    def __hash__(self) -> int:
        return hash((self.id, self.node))

    def __reduce__(self) -> tuple:
        if self._conn is not None:
            _registry[self.id] = self  # its number left the process: it must be found by it
        return (_unpickle_pid, (self.node, self.id))

    @property
    def local(self) -> bool:
        """Whether the process lives in this OS process (this node)."""
        return self.node == _node

    @property
    def alive(self) -> bool:
        """Local: the connection is open.  Remote: its node is known to be up (pg's view)."""
        if self._conn is not None:
            return True
        if self.node == _node:
            return False
        return _backend.node_alive(self.node)

    def send(self, msg: Any) -> None:
        """``Pid ! Msg``: queue ``msg`` for ``websocket_info``; thread-safe, ordered, dropped if dead.

        To a Pid of another node the message is encoded now (as Erlang copies it) with the
        bus codec and goes through the messaging backend: what the bus cannot carry raises
        TypeError here, a message past the bus size limit ValueError (:mod:`cowboy_ws.bus_codec`).
        """
        conn = self._conn
        if conn is None:
            if self.node != _node:
                _backend.send(self, msg)
            return
        # a Pid with a connection has its loop
        if self._loop.in_loop_thread():  # type: ignore[union-attr]
            conn.deliver(msg)
        else:
            self._loop.call_soon_threadsafe(self._deliver, msg)  # type: ignore[union-attr]

    def _deliver(self, msg: Any) -> None:
        conn = self._conn
        if conn is not None:
            conn.deliver(msg)

    def _exit(self, reason: Any = "normal") -> None:
        """The process ended with ``reason``: later messages are dropped; it leaves every group."""
        self.exit_reason = reason
        self._conn = None
        _groups.leave_all(self)


def _unpickle_pid(node_id: str, pid_id: int) -> Pid:
    """What a pickled Pid becomes: the live local Pid, else a Pid naming it."""
    if node_id == _node:
        pid = local_pid(pid_id)
        if pid is not None:
            return pid
    return Pid._named(node_id, pid_id)


def local_pid(pid_id: int) -> Pid | None:
    """The live local Pid with this number (what the backends deliver to), or None."""
    pid = _registry.get(pid_id)
    return pid if pid is not None else _groups.member(pid_id)


def pid_from_ref(node_id: str, pid_id: int) -> Pid:
    """The Pid named by ``(node, number)`` (as :func:`pid_ref` gives it): the live one if it is local."""
    return _unpickle_pid(node_id, pid_id)


def pid_ref(obj: Any) -> tuple[str, int] | None:
    """``(node, number)`` of a Pid (a live local one stays findable by number), or None for anything else."""
    if obj.__class__ is not Pid:
        return None
    if obj._conn is not None:
        _registry[obj.id] = obj  # its number leaves the process: it must be found by it
    return obj.node, obj.id


def self() -> Pid:
    """``self()``: the Pid of the connection whose callback is running on this thread."""
    loop = current_loop()
    pid = loop.self_pid if loop is not None else None
    if pid is None:
        raise RuntimeError("cowboy_ws.self() called outside a websocket callback")
    return pid


def _set_self(pid: Pid | None) -> None:
    """What :func:`self` answers on this thread's loop until the next call (None: outside callbacks)."""
    loop = current_loop()
    if loop is not None:
        loop.self_pid = pid


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

    Call it from a callback: for a local Pid the timer lives on the target's loop
    (call it from that loop's thread); for a Pid of another node, on the calling
    connection's loop, and the message is sent when it fires.
    """
    loop = pid._loop
    if loop is None:  # another node's (or a dead, unpickled) Pid
        loop = current_loop()
        if loop is None:
            raise RuntimeError("send_after to a remote Pid must be called from a connection's loop thread")
        timer = loop.call_later(ms / 1000.0, pid.send, msg)
        return TimerRef(timer, loop)
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
    """Process groups (Erlang ``pg``) of this node's Pids, shared by every loop of the process.

    Each change is announced to the messaging backend under the same lock, so other
    nodes see the changes in the order they happened.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        #: each group's members by number (a local Pid's number names it in this process): also how
        #: a message from another node finds a member (:meth:`member`), without a weak reference each
        self._groups: dict[Hashable, dict[int, Pid]] = {}
        #: each member's groups, by number: the group itself for the usual one, a list for several
        #: (no container for one group; a list is never a group, which must be hashable)
        self._of: dict[int, Any] = {}

    def join(self, group: Hashable, pid: Pid) -> None:
        with self._lock:
            members = self._groups.setdefault(group, {})
            if pid.id in members:
                return
            members[pid.id] = pid
            groups = self._of.get(pid.id, _NO_GROUP)
            self._of[pid.id] = (group if groups is _NO_GROUP else
                                groups + [group] if type(groups) is list else [groups, group])
            _backend.joined(group, pid)

    def leave(self, group: Hashable, pid: Pid) -> None:
        with self._lock:
            members = self._groups.get(group)
            member = members.pop(pid.id, None) if members is not None else None
            if member is None:
                return
            if not members:
                del self._groups[group]
            rest = [g for g in _as_list(self._of.pop(pid.id, _NO_GROUP)) if g != group]
            if rest:
                self._of[pid.id] = rest if len(rest) > 1 else rest[0]
            elif member._conn is not None:
                _registry[pid.id] = member  # other nodes knew its number: it must still be found by it
            _backend.left(group, member)

    def leave_all(self, pid: Pid) -> None:
        with self._lock:
            groups = _as_list(self._of.pop(pid.id, _NO_GROUP))
            if not groups:
                return
            for group in groups:
                members = self._groups.get(group)
                if members is not None:
                    members.pop(pid.id, None)
                    if not members:
                        del self._groups[group]
            _backend.exited(pid, groups)

    def member(self, pid_id: int) -> Pid | None:
        """The member with this number, if it is in a group."""
        with self._lock:
            groups = self._of.get(pid_id, _NO_GROUP)
            if groups is _NO_GROUP:
                return None
            return self._groups[groups[0] if type(groups) is list else groups][pid_id]

    def members(self, group: Hashable) -> list[Pid]:
        with self._lock:
            members = self._groups.get(group)
            return list(members.values()) if members else []

    def which_groups(self) -> list[Hashable]:
        with self._lock:
            return list(self._groups)

    def snapshot(self) -> dict[Hashable, list[int]]:
        """``{group: [pid number, ...]}`` of this node (what a backend tells a node that asks)."""
        with self._lock:
            return {group: list(members) for group, members in self._groups.items()}


_NO_GROUP: Any = object()  # _Groups._of's "not a member" (None may be a group)


def _as_list(groups: Any) -> list:
    """A member's groups as ``_Groups._of`` holds them, as a list (empty for _NO_GROUP)."""
    return [] if groups is _NO_GROUP else groups if type(groups) is list else [groups]


_groups = _Groups()


def _check_local(pid: Pid, what: str) -> Pid:
    if pid.node != _node:
        raise ValueError(f"{what}: {pid!r} is a process of another node; as with pg, only a node's "
                         "own processes join and leave its groups")
    return pid


def join(group: Hashable, pid: Pid | None = None) -> None:
    """``pg:join``: add ``pid`` (default ``self()``, a local Pid) to ``group``."""
    pid = _check_local(pid or self(), "join")
    if pid._conn is None:  # a dead process joins nothing (pg would drop it at once)
        return
    _groups.join(group, pid)


def leave(group: Hashable, pid: Pid | None = None) -> None:
    """``pg:leave``: remove ``pid`` (default ``self()``, a local Pid) from ``group``."""
    _groups.leave(group, _check_local(pid or self(), "leave"))


def members(group: Hashable) -> list[Pid]:
    """``pg:get_members``: the Pids in ``group``, this node's first, then other nodes' (as last heard)."""
    local = _groups.members(group)
    remote = _backend.remote_members(group)
    return local + remote if remote else local


def local_members(group: Hashable) -> list[Pid]:
    """``pg:get_local_members``: this node's Pids in ``group``."""
    return _groups.members(group)


def which_groups() -> list[Hashable]:
    """``pg:which_groups``: groups with members on any node."""
    groups = _groups.which_groups()
    remote = _backend.remote_groups()
    if remote:
        seen = set(groups)
        groups.extend(g for g in remote if g not in seen)
    return groups


def broadcast(group: Hashable, frame: Any, *, exclude: Pid | None = None) -> int:
    """Send one OutFrame to every member of ``group``; returns how many were reached.

    The frame is serialized once and the same bytes are queued on every member
    that sends uncompressed; members with permessage-deflate and no server
    context takeover (the default) share one compressed frame per deflate
    setting; members with context takeover compress it with their own window
    (RFC 7692 §7.2.1).  Members on other nodes: each such node is sent the
    frame once and frames it once.
    """
    targets = [pid for pid in _groups.members(group) if pid is not exclude and pid._conn is not None]
    backend = _backend
    if backend.name != "local":
        kind, data = flatten_broadcast(frame)
        reached = backend.broadcast(group, kind, data, exclude)
        if targets:
            frame = (kind, data)
            _fanout(targets, frame, encode_broadcast(frame))
        return reached + len(targets)
    if not targets:
        return 0
    _fanout(targets, frame, encode_broadcast(frame))
    return len(targets)


def _fanout(targets: list[Pid], frame: Any, wire: bytes) -> None:
    """Queue a serialized frame on local Pids: directly on this thread's loop, one call per other loop."""
    me = threading.get_ident()
    others: dict[Loop, list[Pid]] | None = None
    compressed: dict = {}  # compressed once per deflate setting, for the members that allow it
    here = []
    for pid in targets:
        conn = pid._conn
        if conn is None:
            continue
        loop: Loop = pid._loop  # type: ignore[assignment]  # a Pid with a connection has its loop
        if loop.thread_id == me:
            here.append(conn)
        else:
            if others is None:
                others = {}
            others.setdefault(loop, []).append(pid)
    if here:
        type(here[0]).send_broadcast_all(here, frame, wire, compressed)
    if others:
        for loop, pids in others.items():
            loop.call_soon_threadsafe(_broadcast_on_loop, pids, frame, wire)


def _broadcast_on_loop(pids: list[Pid], frame: Any, wire: bytes) -> None:
    here = [pid._conn for pid in pids if pid._conn is not None]
    if here:
        type(here[0]).send_broadcast_all(here, frame, wire, {})


def deliver_broadcast(group: Hashable, frame: tuple[str, bytes], exclude_id: int | None) -> int:
    """A broadcast from another node: frame it once, queue it on this node's members of ``group``."""
    targets = [pid for pid in _groups.members(group) if pid.id != exclude_id and pid._conn is not None]
    if targets:
        _fanout(targets, frame, encode_broadcast(frame))
    return len(targets)


# -- the messaging backend ------------------------------------------------------------------


class _LocalNode:
    """This process as a messaging backend sees it (:class:`cowboy_ws.messaging.LocalNode`)."""

    def node_id(self) -> str:
        return _node

    def deliver(self, pid_id: int, msg: Any) -> bool:
        pid = local_pid(pid_id)
        if pid is None:
            return False
        pid.send(msg)
        return True

    def deliver_broadcast(self, group: Hashable, kind: str, data: bytes, exclude_id: int | None) -> int:
        return deliver_broadcast(group, (kind, data), exclude_id)

    def membership(self) -> dict[Hashable, list[int]]:
        return _groups.snapshot()

    pid = staticmethod(pid_from_ref)
    pid_ref = staticmethod(pid_ref)


_LOCAL = _LocalNode()


_backend_lock = threading.Lock()


def use_backend(backend: Backend | None) -> Backend:
    """Install ``backend`` (None: back to local) for this process; returns the one it replaced.

    One backend per process: installing a second non-local one while another is in
    use raises RuntimeError (stop and uninstall the first).
    """
    global _backend
    with _backend_lock:
        previous = _backend
        new = backend if backend is not None else LocalBackend()
        if new.name != "local" and previous.name != "local" and previous is not new:
            raise RuntimeError(f"a {previous.name} messaging backend is already installed in this process")
        new.attach(_LOCAL)
        with _groups._lock:  # no announcement is split between two backends
            _backend = new
        return previous


def current_backend() -> Backend:
    """The messaging backend in use (:class:`~cowboy_ws.messaging.LocalBackend` unless Redis is configured)."""
    return _backend


def _after_fork_in_child() -> None:
    """A forked child is a new node: fresh id, no Pids or groups of the parent's, the local backend."""
    global _node, _backend, _groups, _registry, _backend_lock
    _node = _new_node_id()
    _registry = weakref.WeakValueDictionary()
    _groups = _Groups()
    _backend = LocalBackend()
    _backend_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
