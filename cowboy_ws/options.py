"""WebSocket options (Cowboy's ``cowboy_websocket:opts()``), with Cowboy 2.18's defaults, and the
server's own limits.

A route or the server gives defaults; the fourth element of ``init``'s result
overrides them per connection; ``set_options`` changes some of them later.

Every default limit of the runtime is decided here (the protocol's own are in
:mod:`cowboy_ws.protocol.limits`): a hostile or broken peer meets one of them
and gets a clear answer on the wire (an HTTP status or a close code) and a log
line, never unbounded memory or a spinning loop.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from .protocol.deflate import DeflateOptions
from .protocol.errors import UsageError
from .protocol.limits import MAX_FRAME_SIZE

#: Cowboy's idle_timeout default (ms).
IDLE_TIMEOUT = 60_000
#: How long to wait for the peer's Close after sending ours before dropping TCP (ms).  The same
#: deadline bounds how long a Close may wait behind unsent data for a peer that stopped reading.
CLOSE_TIMEOUT = 5_000
#: Send buffer (bytes accepted from the handler that the kernel did not take yet) above which the
#: connection stops reading the socket, like Cowboy's ``{active, false}`` under backpressure ...
SEND_HIGH_WATER = 1 << 20
#: ... until it drains below this mark (bytes).
SEND_LOW_WATER = 256 << 10
#: Hard limit (bytes): a peer already behind by more than the high-water mark while the handler keeps
#: adding past this is closed with 1008, terminate reason ``("error", "send_buffer_overflow")``.  One
#: message larger than this to a peer that keeps up is still sent.
MAX_SEND_BUFFER = 16 << 20
#: Keepalive: send a Ping every ``ping_interval`` ms (off by default, as in Cowboy) and close with
#: 1011 "keepalive ping timeout" (as websockets does), reason ``"timeout"``, when nothing at all was
#: received within ``ping_timeout`` ms of it.
PING_INTERVAL: int | None = None  # "infinity"
PING_TIMEOUT = 20_000

# -- the server's limits (Server(...) keyword arguments) ------------------------------------

#: Seconds from accept within which a client must complete the TLS handshake and send a whole
#: request head.  An absolute deadline: trickling bytes (slowloris) does not extend it.  408 if
#: part of a request came, else a plain close.
HANDSHAKE_TIMEOUT = 10.0
#: Open connections (in handshake or upgraded) a server keeps; past it a new client gets 503.
MAX_CONNECTIONS = 100_000
#: Seconds a refused client has to read our answer (4xx/5xx) while we discard what it still sends,
#: so that closing with unread input does not reset the connection before the answer is read.
LINGER_TIMEOUT = 2.0
#: Refused clients kept lingering at once; past it they are closed right after the answer.
MAX_LINGERING = 1024
#: Seconds given to connections to finish their closing handshakes on shutdown.
SHUTDOWN_GRACE = 5.0
#: Accept failing with EMFILE/ENFILE/ENOBUFS/ENOMEM: stop accepting for this long (s), doubling
#: up to ACCEPT_BACKOFF_MAX while it keeps failing.
ACCEPT_BACKOFF = 0.1
ACCEPT_BACKOFF_MAX = 1.0


#: The server's default permessage-deflate settings: zlib-ng level 1, and no *server* context
#: takeover (RFC 7692 §7.1.1.1 lets a server add server_no_context_takeover on its own), so no
#: deflater lives with an idle connection and a broadcast is compressed once for every receiver.
#: deflate_opts={"server_context_takeover": "takeover", "server_max_window_bits": 12, ...} trades
#: memory and CPU for fewer bytes on the wire (each setting measured: docs/howto/compression.md).
SERVER_DEFLATE = DeflateOptions(server_context_takeover=False)

#: Cowboy 2.18 options that mean nothing for this runtime, accepted (type-checked) and ignored:
#: ``active_n`` (Cowboy's {active, N} socket mode: here a readable socket is read once per loop
#: round), ``data_delivery`` / ``data_delivery_flow`` (relaying frames to another process, for
#: WebSocket over HTTP/2, which this server does not speak), ``dynamic_buffer*`` (Cowboy sizes
#: a per-connection receive buffer; here one buffer per loop serves every connection).
IGNORED_COWBOY_OPTIONS = ("active_n", "data_delivery", "data_delivery_flow", "dynamic_buffer",
                          "dynamic_buffer_initial_average", "dynamic_buffer_initial_size")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _limit(name: str, value: Any, minimum: int) -> int | None:
    """An int >= minimum, or "infinity"/None (returned as None: no limit)."""
    if value is None or value == "infinity":
        return None
    if not _is_int(value) or value < minimum:
        raise ValueError(f"websocket option {name}: expected an int >= {minimum} or 'infinity', not {value!r}")
    return value


def _int(name: str, value: Any, minimum: int) -> int:
    if not _is_int(value) or value < minimum:
        raise ValueError(f"websocket option {name}: expected an int >= {minimum}, not {value!r}")
    return value


def _check_ignored(name: str, value: Any) -> None:
    """Type-check a Cowboy option this runtime ignores (a typo'd value is still an error)."""
    if name in ("active_n", "data_delivery_flow", "dynamic_buffer_initial_size"):
        _int(name, value, 1)
    elif name == "dynamic_buffer_initial_average":
        _int(name, value, 0)
    elif name == "data_delivery":
        if value not in ("emit_message", "relay"):
            raise ValueError(f"websocket option data_delivery: expected 'emit_message' or 'relay', not {value!r}")
    elif name == "dynamic_buffer":
        if not (value is False or (isinstance(value, tuple) and len(value) == 2 and all(
                _is_int(v) and v > 0 for v in value) and value[0] <= value[1])):
            raise ValueError(f"websocket option dynamic_buffer: expected False or (min, max) with "
                             f"0 < min <= max, not {value!r}")


@dataclasses.dataclass(frozen=True)
class WebSocketOptions:
    """Per-connection options (Cowboy's ``cowboy_websocket:opts()`` and this server's own).

    Limits given as ``"infinity"`` are stored as ``None`` (no limit), once, here.
    ``idle_timeout`` and ``max_frame_size`` may be 0 (Erlang's ``timeout()`` includes 0).
    A value of the wrong type or range raises ValueError naming the option and what it
    accepts.  Cowboy options this runtime has no use for are accepted and ignored
    (:data:`IGNORED_COWBOY_OPTIONS`).
    """

    compress: bool = False
    idle_timeout: int | None = IDLE_TIMEOUT
    max_frame_size: int | None = MAX_FRAME_SIZE
    validate_utf8: bool = True
    req_filter: Callable[[Any], dict] | None = None
    deflate_opts: DeflateOptions = SERVER_DEFLATE
    close_timeout: int = CLOSE_TIMEOUT
    send_high_water: int = SEND_HIGH_WATER
    send_low_water: int = SEND_LOW_WATER
    max_send_buffer: int | None = MAX_SEND_BUFFER
    ping_interval: int | None = PING_INTERVAL
    ping_timeout: int = PING_TIMEOUT
    #: Cowboy options accepted and ignored, as given (see IGNORED_COWBOY_OPTIONS)
    ignored: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        fix = object.__setattr__  # frozen: normalize once, here
        for name in ("compress", "validate_utf8"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"websocket option {name}: expected True or False, not {getattr(self, name)!r}")
        fix(self, "idle_timeout", _limit("idle_timeout", self.idle_timeout, 0))
        fix(self, "max_frame_size", _limit("max_frame_size", self.max_frame_size, 0))
        fix(self, "max_send_buffer", _limit("max_send_buffer", self.max_send_buffer, 1))
        fix(self, "ping_interval", _limit("ping_interval", self.ping_interval, 1))
        for name in ("close_timeout", "send_high_water", "send_low_water", "ping_timeout"):
            _int(name, getattr(self, name), 1)
        if self.send_low_water > self.send_high_water:
            raise ValueError(f"websocket option send_low_water ({self.send_low_water}) must not exceed "
                             f"send_high_water ({self.send_high_water})")
        if self.req_filter is not None and not callable(self.req_filter):
            raise ValueError(f"websocket option req_filter: expected a function of the Req, not {self.req_filter!r}")
        if not isinstance(self.deflate_opts, DeflateOptions):
            raise ValueError(f"websocket option deflate_opts: expected a dict of deflate settings, "
                             f"not {self.deflate_opts!r}")
        for name, value in self.ignored:
            _check_ignored(name, value)

    def replace(self, **changes: Any) -> WebSocketOptions:
        return dataclasses.replace(self, **changes)

    def merged(self, overrides: dict | None) -> WebSocketOptions:
        """These options with ``overrides`` (a Cowboy-style opts map) applied; unknown keys raise."""
        if not overrides:
            return self
        if not isinstance(overrides, dict):
            raise ValueError(f"websocket options must be a dict, not {overrides!r}")
        fields = {f.name for f in dataclasses.fields(self)} - {"ignored"}
        unknown = set(overrides) - fields - set(IGNORED_COWBOY_OPTIONS)
        if unknown:
            raise ValueError(f"unknown websocket option(s): {', '.join(sorted(map(str, unknown)))} "
                             f"(known: {', '.join(sorted(fields | set(IGNORED_COWBOY_OPTIONS)))})")
        changes = {k: v for k, v in overrides.items() if k in fields}
        ignored = dict(self.ignored)
        ignored.update((k, v) for k, v in overrides.items() if k in IGNORED_COWBOY_OPTIONS)
        if ignored:
            changes["ignored"] = tuple(ignored.items())
        deflate = changes.get("deflate_opts")
        if isinstance(deflate, dict):
            try:
                changes["deflate_opts"] = self.deflate_opts.updated(deflate)
            except UsageError as exc:
                raise ValueError(f"websocket option {exc}") from None
        return dataclasses.replace(self, **changes)
