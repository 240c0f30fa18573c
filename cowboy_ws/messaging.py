"""The messaging backend: where ``pid.send``, process groups and ``broadcast`` reach past this process.

Erlang gets this from distribution: ``Pid ! Msg`` and ``pg`` work the same whether
the process is on this node or another.  cowboy_ws splits it in two:

* :mod:`cowboy_ws.process` keeps everything about *this* process (a "node"): its
  Pids, their mailboxes, the groups they joined.  It never blocks and never
  does I/O beyond handing work to a connection's loop.
* the active :class:`Backend` is asked for everything beyond it: a message to a
  Pid of another node, the members other nodes have in a group, a broadcast to
  them.  Each local join/leave/exit is announced to it.

Two implementations:

* :class:`LocalBackend` (the default): there is no other node.  A Pid of
  another node (named by ``(node, number)``, or unpickled) can be held and compared, but a
  message to it is dropped, like ``Pid ! Msg`` to a node that cannot be reached.
* :class:`cowboy_ws.redis_backend.RedisBackend` (``Server(redis_url=...)``,
  ``python -m cowboy_ws --redis URL``): Redis pub/sub between nodes; see that module.

The two directions have narrow interfaces, so that a backend never reaches into
:mod:`cowboy_ws.process`:

* process -> backend: :class:`Backend` (send to a remote Pid, membership changed:
  :meth:`Backend.joined` / :meth:`Backend.left` / :meth:`Backend.exited`,
  broadcast to remote members, queries about other nodes);
* backend -> process: :class:`LocalNode`, handed to the backend by
  :func:`cowboy_ws.process.use_backend` through :meth:`Backend.attach` (deliver to a
  local Pid by number, deliver a framed broadcast to the local members of a group,
  this node's membership, and Pids to and from ``(node, number)``).

Every method may be called from any thread, and none may block: a backend that
does I/O hands the work to its own threads.  :meth:`Backend.joined`,
:meth:`Backend.left` and :meth:`Backend.exited` are called with the local group
registry's lock held (so the order of the announcements is the order of the
changes): they only queue, and must not call back into :class:`LocalNode`.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # pragma: no cover
    from .process import Pid

__all__ = ["Backend", "LocalBackend", "LocalNode"]


class LocalNode(Protocol):
    """What a backend may ask of this process (implemented by :mod:`cowboy_ws.process`)."""

    def node_id(self) -> str:
        """This process's node id (a forked child has its own)."""

    def deliver(self, pid_id: int, msg: Any) -> bool:
        """``pid.send(msg)`` to the live local Pid with this number; False if there is none."""

    def deliver_broadcast(self, group: Hashable, kind: str, data: bytes, exclude_id: int | None) -> int:
        """Frame ``(kind, data)`` once and queue it on this node's members of ``group``; how many."""

    def membership(self) -> dict[Hashable, list[int]]:
        """``{group: [pid number, ...]}`` of this node's Pids."""

    def pid(self, node: str, pid_id: int) -> Pid:
        """The Pid named by ``(node, number)``: the live one if it is a local Pid, else a name for it."""

    def pid_ref(self, obj: Any) -> tuple[str, int] | None:
        """``(node, number)`` if ``obj`` is a Pid (a local one stays findable by number), else None."""


class Backend:
    """The interface :mod:`cowboy_ws.process` talks to (and the do-nothing base of both backends)."""

    #: ``"local"`` or ``"redis"``
    name = "local"

    #: the process side, set by :meth:`attach`
    local: LocalNode | None = None

    def attach(self, local: LocalNode) -> None:
        """Called by :func:`cowboy_ws.process.use_backend` before :meth:`start`: the process side."""
        self.local = local

    # -- life cycle (the Server that installed the backend calls these) ------------------------

    def check(self) -> None:
        """Raise if the backend's configuration cannot work (bad credentials, untrusted certificate)."""

    def start(self) -> None:
        """Start whatever threads and connections the backend needs (idempotent)."""

    def wait_ready(self, timeout: float) -> bool:
        """Wait (at most ``timeout`` s) until messages to this node's Pids can arrive; False if not yet."""
        return True

    def stop(self, timeout: float = 2.0) -> None:
        """Say goodbye to the other nodes, flush what is queued (at most ``timeout`` s) and stop."""

    # -- outgoing ----------------------------------------------------------------------------

    def send(self, pid: Pid, msg: Any) -> None:
        """``pid.send(msg)`` for a Pid of another node (local Pids never come here).

        Raises (in the sender) TypeError for a message the bus cannot carry, ValueError for
        one over its size limit.
        """

    def joined(self, group: Hashable, pid: Pid) -> None:
        """A local Pid joined ``group`` (it was not a member)."""

    def left(self, group: Hashable, pid: Pid) -> None:
        """A local Pid left ``group`` (it was a member)."""

    def exited(self, pid: Pid, groups: list) -> None:
        """A local Pid that was in ``groups`` exited: it left all of them."""

    def broadcast(self, group: Hashable, kind: str, data: bytes, exclude: Pid | None) -> int:
        """Send a frame (validated and flattened already) to the members of ``group`` on other nodes.

        Returns how many remote members it was sent to (as far as this node knows).
        Each node that has members gets it once and frames it once for all of them.
        Raises like :meth:`send` for a group or frame the bus cannot carry.
        """
        return 0

    # -- queries -----------------------------------------------------------------------------

    def remote_members(self, group: Hashable) -> list[Pid]:
        """Members of ``group`` on other nodes, as this node last heard."""
        return []

    def remote_groups(self) -> list:
        """Groups that have members on other nodes."""
        return []

    def node_alive(self, node: str) -> bool:
        """Whether another node is known to be up."""
        return False

    def nodes(self) -> list[str]:
        """The other nodes known to be up (Erlang's ``nodes()``)."""
        return []


class LocalBackend(Backend):
    """No other node: everything stays in this process (the default)."""
