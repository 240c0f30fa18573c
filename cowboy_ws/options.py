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
from typing import Any, Callable, Union

from .protocol.deflate import DeflateOptions
from .protocol.limits import MAX_FRAME_SIZE

Limit = Union[int, str]  # an int, or "infinity"

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
PING_INTERVAL = "infinity"
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
#: takeover (RFC 7692 §7.1.1.1 lets a server add server_no_context_takeover on its own), so the
#: deflater is dropped after each message instead of living with every idle connection.
#: Measured in-process on 1 KiB JSON documents (RSS per deflater, CPU per message, compressed/raw):
#:   zlib-ng  w15 ml8, takeover:     208 KiB deflater per connection, 1.7 us/msg, ratio 0.17
#:   stdlib   w12 ml5, takeover:      30 KiB per connection,          7.9 us/msg, ratio 0.14
#:   zlib-ng  no takeover (chosen):    0 KiB while idle, ~3 us/msg (a fresh deflater each message)
#: deflate_opts={"server_context_takeover": True} trades the memory back for a better ratio.
SERVER_DEFLATE = DeflateOptions(server_context_takeover=False)


@dataclasses.dataclass(frozen=True)
class WebSocketOptions:
    """Per-connection options; see DESIGN.md for each one's meaning."""

    compress: bool = False
    idle_timeout: Limit = IDLE_TIMEOUT
    max_frame_size: Limit = MAX_FRAME_SIZE
    validate_utf8: bool = True
    req_filter: Callable[[Any], dict] | None = None
    deflate_opts: DeflateOptions = SERVER_DEFLATE
    close_timeout: int = CLOSE_TIMEOUT
    send_high_water: int = SEND_HIGH_WATER
    send_low_water: int = SEND_LOW_WATER
    max_send_buffer: Limit = MAX_SEND_BUFFER
    ping_interval: Limit = PING_INTERVAL
    ping_timeout: int = PING_TIMEOUT

    def __post_init__(self) -> None:
        for name in ("idle_timeout", "max_frame_size", "max_send_buffer", "ping_interval"):
            value = getattr(self, name)
            if value != "infinity" and not (isinstance(value, int) and value > 0):
                raise ValueError(f"{name} must be a positive int or 'infinity', not {value!r}")
        for name in ("close_timeout", "send_high_water", "send_low_water", "ping_timeout"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value > 0):
                raise ValueError(f"{name} must be a positive int, not {value!r}")
        if self.send_low_water > self.send_high_water:
            raise ValueError(f"send_low_water ({self.send_low_water}) must not exceed "
                             f"send_high_water ({self.send_high_water})")

    def replace(self, **changes: Any) -> "WebSocketOptions":
        return dataclasses.replace(self, **changes)

    def merged(self, overrides: dict | None) -> "WebSocketOptions":
        """These options with ``overrides`` (a Cowboy-style opts map) applied; unknown keys raise."""
        if not overrides:
            return self
        fields = {f.name for f in dataclasses.fields(self)}
        unknown = set(overrides) - fields
        if unknown:
            raise ValueError(f"unknown websocket option(s): {', '.join(sorted(unknown))}")
        changes = dict(overrides)
        deflate = changes.get("deflate_opts")
        if isinstance(deflate, dict):
            changes["deflate_opts"] = dataclasses.replace(self.deflate_opts, **deflate)
        return dataclasses.replace(self, **changes)

    @property
    def frame_limit(self) -> int | None:
        """max_frame_size as the protocol core takes it (None for infinity)."""
        return None if self.max_frame_size == "infinity" else self.max_frame_size  # type: ignore[return-value]

    @property
    def send_limit(self) -> int | None:
        """max_send_buffer in bytes (None for infinity)."""
        return None if self.max_send_buffer == "infinity" else self.max_send_buffer  # type: ignore[return-value]
