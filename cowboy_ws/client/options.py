"""The client's options, normalized once (as :mod:`cowboy_ws.options` does for the server).

The handler API (:func:`cowboy_ws.client.start`) takes a Cowboy/gun-style dict whose times are
milliseconds; the blocking API (:func:`cowboy_ws.client.connect`) takes keyword arguments whose
times are seconds, as websockets' do.  Both end up here, in one :class:`ClientOptions`.  The
WebSocket part (frame limits, timeouts of an open connection, keepalive, permessage-deflate
settings, backpressure) is a :class:`~cowboy_ws.options.WebSocketOptions`, the same object the
server uses, so every limit means the same on both sides.
"""

from __future__ import annotations

import dataclasses
import ssl as _ssl
from collections.abc import Mapping
from typing import Any

from ..options import WebSocketOptions
from ..protocol.deflate import DeflateOptions
from ..protocol.errors import UsageError
from ..protocol.headers import is_token

__all__ = ["CLIENT_DEFLATE", "CLOSE_TIMEOUT", "ClientOptions", "ENV_PROXY", "MAX_REDIRECTS", "OPEN_TIMEOUT",
           "RETRY_TIMEOUT", "MAX_RETRY_TIMEOUT", "MAX_QUEUE", "MAX_QUEUE_BYTES", "from_handler_opts"]

#: Seconds to open a connection: DNS, TCP, proxy, TLS, the HTTP upgrade and its redirects together.
OPEN_TIMEOUT = 10.0
#: Seconds for the closing handshake (the server's Close, then its FIN), as the server's close_timeout.
CLOSE_TIMEOUT = 5.0
#: Redirects (301, 302, 303, 307, 308) followed before giving up; never from wss to ws.
MAX_REDIRECTS = 5
#: First delay before a reconnection (ms, gun's retry_timeout); it doubles after each failed attempt ...
RETRY_TIMEOUT = 5000
#: ... up to this (ms); each delay is then drawn between half of it and all of it (jitter).
MAX_RETRY_TIMEOUT = 60_000
#: Blocking API: messages received but not yet taken by recv() past which the socket is not read
#: (backpressure: the server's sends then wait in TCP buffers) ...
MAX_QUEUE = 1024
#: ... or payload bytes in them, whichever comes first; reading resumes below a quarter of both.
MAX_QUEUE_BYTES = 4 << 20


class _EnvProxy:
    """The default of ``proxy``: read ``https_proxy`` / ``http_proxy`` / ``no_proxy`` from the environment."""

    def __repr__(self) -> str:
        return "ENV_PROXY"

    def __reduce__(self) -> str:
        return "ENV_PROXY"


ENV_PROXY: Any = _EnvProxy()

#: The client's default permessage-deflate settings, the mirror of the server's (SERVER_DEFLATE):
#: zlib-ng level 1, no *client* context takeover, so the offer is ``permessage-deflate;
#: client_no_context_takeover; client_max_window_bits`` (RFC 7692 §7.1.1.2, §7.1.2.2: we announce
#: that we take no context over, and accept a window the server picks).  Our deflater is dropped
#: after each message instead of living with every idle connection; the server keeps the choice
#: for its own direction.  ``deflate_opts={"client_context_takeover": True}`` trades memory for ratio.
CLIENT_DEFLATE = DeflateOptions(client_context_takeover=False)

#: The client's own defaults of the WebSocket options: no idle timeout (a client connection that
#: waits for the server is not idle by mistake; websockets has none either) and CLIENT_DEFLATE.
CLIENT_WS_DEFAULTS: dict[str, Any] = {"idle_timeout": None, "deflate_opts": CLIENT_DEFLATE}

#: Keys of the handler API's opts that are not WebSocketOptions fields.
CLIENT_KEYS = ("subprotocols", "headers", "origin", "ssl", "open_timeout", "proxy", "max_redirects", "retry",
               "retry_timeout", "max_retry_timeout", "retry_refused", "max_queue", "max_queue_bytes")
#: WebSocketOptions fields a client uses (req_filter is the server's: the client has no request to filter).
WS_KEYS = ("compress", "idle_timeout", "max_frame_size", "validate_utf8", "deflate_opts", "close_timeout",
           "send_high_water", "send_low_water", "max_send_buffer", "ping_interval", "ping_timeout")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclasses.dataclass(frozen=True)
class ClientOptions:
    """Everything a client connection is opened and run with (times in seconds except ``ws``'s, in ms)."""

    ws: WebSocketOptions = dataclasses.field(default_factory=lambda: WebSocketOptions(**CLIENT_WS_DEFAULTS))
    subprotocols: tuple[str, ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    origin: str | None = None
    #: None: ``ssl.create_default_context()`` for wss (system CAs, SNI, hostname check)
    ssl: _ssl.SSLContext | None = None
    open_timeout: float = OPEN_TIMEOUT
    #: ENV_PROXY (environment), None (no proxy), or a proxy URL: http://, socks5://, socks5h://, socks4://
    proxy: Any = ENV_PROXY
    max_redirects: int = MAX_REDIRECTS
    #: reconnections after a loss or a failed attempt (None: no limit); handler API and connect_forever
    retry: int | None = 0
    retry_timeout: float = RETRY_TIMEOUT / 1000.0
    max_retry_timeout: float = MAX_RETRY_TIMEOUT / 1000.0
    #: retry a refused upgrade (4xx) too; 5xx and network errors are always retried
    retry_refused: bool = False
    max_queue: int = MAX_QUEUE
    max_queue_bytes: int = MAX_QUEUE_BYTES

    def __post_init__(self) -> None:
        fix = object.__setattr__
        if isinstance(self.subprotocols, str):
            fix(self, "subprotocols", (self.subprotocols,))
        fix(self, "subprotocols", tuple(self.subprotocols or ()))
        for protocol in self.subprotocols:
            if not isinstance(protocol, str) or not is_token(protocol):
                raise ValueError(f"client option subprotocols: {protocol!r} is not a token (RFC 6455 §4.1)")
        given: Any = self.headers or ()
        if isinstance(given, Mapping):
            given = list(given.items())
        checked = []
        for item in given:
            if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)
                    and isinstance(item[1], (str, bytes))):
                raise ValueError(f"client option headers: expected (name, value) pairs or a dict, not {item!r}")
            if not is_token(item[0]):
                raise ValueError(f"client option headers: {item[0]!r} is not a header name")
            checked.append(item)
        fix(self, "headers", tuple(checked))
        if self.origin is not None and not isinstance(self.origin, str):
            raise ValueError(f"client option origin: expected a str, not {self.origin!r}")
        if self.ssl is not None and not isinstance(self.ssl, _ssl.SSLContext):
            raise ValueError(f"client option ssl: expected an ssl.SSLContext or None, not {self.ssl!r}")
        if not (isinstance(self.open_timeout, (int, float)) and not isinstance(self.open_timeout, bool)
                and self.open_timeout > 0):
            raise ValueError(f"client option open_timeout: expected a positive number, not {self.open_timeout!r}")
        if self.proxy is not ENV_PROXY and self.proxy is not None and not isinstance(self.proxy, str):
            raise ValueError(f"client option proxy: expected a proxy URL, None or the default, not {self.proxy!r}")
        if not (_is_int(self.max_redirects) and self.max_redirects >= 0):
            raise ValueError(f"client option max_redirects: expected an int >= 0, not {self.max_redirects!r}")
        retry = self.retry
        if retry == "infinity":
            fix(self, "retry", None)
        elif retry is not None and not (_is_int(retry) and retry >= 0):
            raise ValueError(f"client option retry: expected an int >= 0 or 'infinity', not {retry!r}")
        for name in ("retry_timeout", "max_retry_timeout"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0):
                raise ValueError(f"client option {name}: expected a number >= 0, not {value!r}")
        if not isinstance(self.retry_refused, bool):
            raise ValueError(f"client option retry_refused: expected True or False, not {self.retry_refused!r}")
        for name in ("max_queue", "max_queue_bytes"):
            value = getattr(self, name)
            if not (_is_int(value) and value >= 1):
                raise ValueError(f"client option {name}: expected an int >= 1, not {value!r}")


def ws_options(overrides: dict) -> WebSocketOptions:
    """The client's WebSocketOptions: the client defaults with ``overrides`` applied (checked there)."""
    changes = dict(overrides)
    deflate = changes.get("deflate_opts")
    if isinstance(deflate, dict):
        try:
            changes["deflate_opts"] = CLIENT_DEFLATE.updated(deflate)  # unknown keys listed, values checked
        except (ValueError, UsageError) as exc:
            raise ValueError(f"client option {exc}") from None
    return WebSocketOptions(**CLIENT_WS_DEFAULTS).merged(changes)


def from_handler_opts(opts: dict | None) -> ClientOptions:
    """The handler API's opts (:func:`cowboy_ws.client.start`): times in milliseconds, as gun's and Cowboy's.

    Unknown keys raise ValueError listing the known ones.
    """
    opts = dict(opts or {})
    unknown = set(opts) - set(CLIENT_KEYS) - set(WS_KEYS)
    if unknown:
        raise ValueError(f"unknown client option(s): {', '.join(sorted(map(str, unknown)))} "
                         f"(known: {', '.join(sorted(CLIENT_KEYS + WS_KEYS))})")
    ws = ws_options({k: v for k, v in opts.items() if k in WS_KEYS})
    client = {k: v for k, v in opts.items() if k in CLIENT_KEYS}
    for name in ("open_timeout", "retry_timeout", "max_retry_timeout"):  # ms -> s
        if name in client:
            value = client[name]
            if not (isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0):
                raise ValueError(f"client option {name}: expected milliseconds (a number >= 0), not {value!r}")
            client[name] = value / 1000.0
    return ClientOptions(ws=ws, **client)
