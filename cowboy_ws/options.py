"""WebSocket options (Cowboy's ``cowboy_websocket:opts()``), with Cowboy 2.18's defaults.

A route or the server gives defaults; the fourth element of ``init``'s result
overrides them per connection; ``set_options`` changes some of them later.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Union

from .protocol.deflate import DeflateOptions
from .protocol.limits import MAX_FRAME_SIZE

Limit = Union[int, str]  # an int, or "infinity"

#: Cowboy's idle_timeout default (ms).
IDLE_TIMEOUT = 60_000
#: How long to wait for the peer's Close after sending ours before dropping TCP (ms).
CLOSE_TIMEOUT = 5_000


@dataclasses.dataclass(frozen=True)
class WebSocketOptions:
    """Per-connection options; see DESIGN.md for each one's meaning."""

    compress: bool = False
    idle_timeout: Limit = IDLE_TIMEOUT
    max_frame_size: Limit = MAX_FRAME_SIZE
    validate_utf8: bool = True
    req_filter: Callable[[Any], dict] | None = None
    deflate_opts: DeflateOptions = DeflateOptions()
    close_timeout: int = CLOSE_TIMEOUT

    def __post_init__(self) -> None:
        for name in ("idle_timeout", "max_frame_size"):
            value = getattr(self, name)
            if value != "infinity" and not (isinstance(value, int) and value > 0):
                raise ValueError(f"{name} must be a positive int or 'infinity', not {value!r}")

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
