"""The phases of an upgraded connection and the transitions allowed between them.

One field, :attr:`cowboy_ws.websocket.WebSocketProcess.phase`, holds the phase;
it changes only through :func:`check_transition` (called by the process's few
transition methods), against the table below.  Whether the socket is read at a
given moment also depends on two conditions that are not phases: the handler's
``("active", False)`` command and backpressure (the send buffer above
``send_high_water``); both only matter while ``open``.

====================  =========================================================================
phase                 what holds
====================  =========================================================================
``handshake``         the 101 response is built (a client: the 101 answer was read and checked);
                      nothing ran yet
``open``              the handler runs: websocket_init, then websocket_handle / websocket_info
``closing``           the terminate reason is decided and ``terminate`` has run; our Close (if
                      we may still send one) is queued behind what the handler sent before,
                      and the transport writes it out (still reading, for the peer's Close)
``draining``          our Close is written; a server sends FIN with it (plain TCP: the server
                      closes first, RFC 6455 §7.1.1) and reads until the peer's Close, if it
                      has not come yet, or else until the peer's FIN, discarding input past a
                      Close, so that closing with unread input does not reset the connection
                      before the peer read our Close; all within ``close_timeout`` ms from the
                      start of ``closing`` (RFC 6455 §7.1.2, §7.1.7).  A client sends no FIN:
                      it reads (and discards) until the server's FIN, the server's Close
                      included, within the same ``close_timeout`` (§7.1.1)
``closed``            the socket is closed and the connection forgotten
====================  =========================================================================

``terminate`` runs exactly once, on leaving ``open`` (to ``closing`` or straight to
``closed`` when the TCP connection is already gone), whatever the peer does next.  A
client with retries left (:mod:`cowboy_ws.client`) is the exception: on leaving ``open``
its handler gets ``websocket_info(("down", reason), state)`` instead, and ``terminate``
runs once, when the client finally stops (docs/design.md, "The client").
"""

from __future__ import annotations

HANDSHAKE = "handshake"
OPEN = "open"
CLOSING = "closing"
DRAINING = "draining"
CLOSED = "closed"

#: phase -> the phases it may move to.
TRANSITIONS: dict[str, frozenset[str]] = {
    HANDSHAKE: frozenset({OPEN, CLOSED}),
    OPEN: frozenset({CLOSING, CLOSED}),      # a close decided / the TCP connection lost
    CLOSING: frozenset({DRAINING, CLOSED}),  # Close written and handshake over / timeout, EOF, error
    DRAINING: frozenset({CLOSED}),           # the peer's FIN, close_timeout, an error
    CLOSED: frozenset(),
}


class LifecycleError(RuntimeError):
    """A transition the table does not allow (a bug in the runtime, never the handler's doing)."""


def check_transition(current: str, new: str) -> str:
    """``new`` if the table allows ``current -> new``, else raise :class:`LifecycleError`."""
    if new not in TRANSITIONS[current]:
        raise LifecycleError(f"connection phase {current!r} cannot become {new!r}")
    return new


def crash_class(exc: BaseException) -> str:
    """Cowboy's crash class for what a handler raised: ``"error"`` or ``"exit"``.

    Erlang has three classes: ``error`` (a runtime error), ``exit`` (the process asked to
    end) and ``throw``.  An :class:`Exception` maps to ``"error"``; :class:`SystemExit`,
    :class:`GeneratorExit` and any other :class:`BaseException` that is not an Exception
    map to ``"exit"`` and, as an Erlang ``exit`` in a handler, end that connection only.
    (:class:`KeyboardInterrupt` is never a crash: it stops the server, see
    :meth:`cowboy_ws.Server.serve_forever`.)
    """
    return "error" if isinstance(exc, Exception) else "exit"
