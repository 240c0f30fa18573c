"""Directives that generate parts of the cowboy_ws reference from the code at build time.

``.. cowboy-cli-help::``
    the output of ``python -m cowboy_ws --help`` (``build_parser().format_help()``), so the CLI
    page shows the options of this checkout.
``.. cowboy-ws-options::``
    a table of every field of :class:`cowboy_ws.options.WebSocketOptions` with its default, read
    from the dataclass.
``cowboy_ws.NAME`` in a cross-reference
    resolves to where ``NAME`` is defined (``cowboy_ws.join`` -> ``cowboy_ws.process.join``): the
    reference documents each name in its module, users write the package's names.
``.. cowboy-server-options::``
    a table of every keyword argument of :class:`cowboy_ws.server.Server` with its default, read
    from its signature.

The descriptions of the two tables are below (``WS_OPTIONS``, ``SERVER_OPTIONS``); the names and
defaults never are: every option the code has is listed with the default the code has.  An option
without a description here is still listed (with "-"; ``sphinx-build -v`` names it), so that a new
keyword argument does not break the documentation build; add its line here.  Descriptions of
options the code does not have (yet, or any more) are not shown.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
from typing import Any

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

log = logging.getLogger(__name__)

#: WebSocketOptions field -> (unit, description in MyST-free reStructuredText).
WS_OPTIONS: dict[str, tuple[str, str]] = {
    "compress": ("", "Accept permessage-deflate (RFC 7692) when the client offers it."),
    "idle_timeout": ("ms", "Close (1000, reason ``\"timeout\"``) a connection that received nothing for this "
                           "long; only received data resets it. ``\"infinity\"``: never; 0 is valid."),
    "max_frame_size": ("bytes", "Largest frame payload, inflated payload and reassembled message; bigger "
                                "closes with 1009. ``\"infinity\"``: no limit; 0 allows only empty frames."),
    "validate_utf8": ("", "Check that text messages and close reasons are UTF-8 (1007 if not)."),
    "req_filter": ("", "A function of the :class:`~cowboy_ws.req.Req` returning the *partial Req* "
                       "``terminate`` gets; ``None`` is :func:`~cowboy_ws.req.default_req_filter`."),
    "deflate_opts": ("", "permessage-deflate settings: Cowboy's ``deflate_opts`` map (``level``, "
                         "``mem_level``, ``strategy``, ``server_context_takeover``, ``client_context_takeover``, "
                         "``server_max_window_bits``, ``client_max_window_bits``), checked; see the compression "
                         "how-to."),
    "close_timeout": ("ms", "Time to finish a closing handshake (closing and draining) before TCP is dropped."),
    "send_high_water": ("bytes", "Send buffer above which the connection stops reading the socket "
                                 "(backpressure) ..."),
    "send_low_water": ("bytes", "... until it drains below this."),
    "max_send_buffer": ("bytes", "Past it, with a peer that does not read, the connection closes with 1008, "
                                 "reason ``(\"error\", \"send_buffer_overflow\")``. ``\"infinity\"``: no limit."),
    "ping_interval": ("ms", "Send a keepalive ping this often. ``\"infinity\"``: off."),
    "ping_timeout": ("ms", "Close with 1011 (reason ``\"timeout\"``) when nothing arrives within this long "
                           "after a keepalive ping."),
}

#: Server keyword argument -> description.
SERVER_OPTIONS: dict[str, str] = {
    "host": "Address to bind; an address with ``:`` binds IPv6.",
    "port": "TCP port; 0 picks a free one (read :attr:`Server.port <cowboy_ws.server.Server.port>`).",
    "ssl_context": "An :class:`ssl.SSLContext` (server side): serve ``wss://``.",
    "backlog": "``listen()`` backlog.",
    "ws_options": "Default WebSocket options for every route (a dict or a "
                  ":class:`~cowboy_ws.options.WebSocketOptions`); route opts and ``init`` override them.",
    "handshake_timeout": "Seconds from accept to the end of the request head (and TLS handshake): an "
                         "absolute deadline; 408 past it.",
    "shutdown_grace": "Seconds :meth:`~cowboy_ws.server.Server.shutdown` waits for closing handshakes.",
    "max_connections": "Open connections (handshaking or upgraded) kept at once; past it 503.",
    "allowed_origins": "``None``: any ``Origin``; else the allowed values (``None`` in it allows a request "
                       "without ``Origin``); others get 403 before ``init``.",
    "sock": "Serve this already listening socket instead of binding one.",
    "reuse_port": "Bind with ``SO_REUSEPORT`` (several processes on one port).",
    "redis_url": "``redis://`` or ``rediss://`` URL: Pids, groups and broadcast span every server on that "
                 "Redis (needs the ``redis`` extra).",
    "redis_prefix": "Prefix of the Redis channels and keys (separate clusters on one Redis).",
    "node_ttl": "Seconds of silence after which a node is taken for dead (``None``: "
                ":data:`cowboy_ws.redis_backend.NODE_TTL`).",
    "cluster_secret": "Shared secret authenticating the bus (HMAC-SHA256); ``None``: the "
                      "``COWBOY_WS_CLUSTER_SECRET`` environment variable, else unauthenticated (logged).",
    "cluster_codec": "``\"msgpack\"`` (plain data and Pids) or ``\"pickle\"`` (any object; decoding runs code).",
    "redis_ssl_ca": "CA file for a ``rediss://`` Redis certificate.",
    "redis_ssl_cert": "Client certificate for Redis (``rediss://``).",
    "redis_ssl_key": "Key of ``redis_ssl_cert``.",
    "messaging": "A messaging backend object instead of ``redis_url`` (not both).",
    "metrics_port": "Serve Prometheus metrics at ``/metrics`` on this port while running (0 picks a free "
                    "one); ``None``: no metrics.",
    "metrics_host": "Address of the metrics endpoint (``None``: ``host``).",
    "metrics_snapshot": "Where a worker of :mod:`cowboy_ws.workers` writes its numbers for the "
                        "supervisor's metrics.",
}

_INFINITY_FIELDS = ("idle_timeout", "max_frame_size", "max_send_buffer", "ping_interval")


def _int(value: int) -> str:
    return f"{value:_}" if abs(value) >= 10_000 else str(value)


def _bytes(value: int) -> str:
    for unit, size in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if value >= size and value % size == 0:
            return f"{_int(value)} ({value // size} {unit})"
    return _int(value)


def _ws_default(name: str, value: Any, unit: str) -> str:
    if value is None:
        if name in _INFINITY_FIELDS:
            return '``"infinity"``'
        if name == "req_filter":
            return ":func:`~cowboy_ws.req.default_req_filter`"
        return "``None``"
    if dataclasses.is_dataclass(value):
        fields = ", ".join(f"{f.name}={getattr(value, f.name)!r}" for f in dataclasses.fields(value))
        return f"``{fields}``"
    if isinstance(value, bool):
        return f"``{value}``"
    if isinstance(value, int):
        return (_bytes(value) if unit == "bytes" else _int(value)) + (f" {unit}" if unit == "ms" else "")
    return f"``{value!r}``"


def _table(directive: SphinxDirective, header: list[str], rows: list[list[str]],
           widths: list[int]) -> list[nodes.Node]:
    """A list-table built from reStructuredText cells (use the directive from reStructuredText:
    ``eval-rst`` in a Markdown page)."""
    lines = [".. list-table::", "   :header-rows: 1", f"   :widths: {' '.join(map(str, widths))}", ""]
    for row in [header] + rows:
        for i, cell in enumerate(row):
            lines.append(f"   {'*' if i == 0 else ' '} - {cell}")
    container = nodes.container()
    directive.state.nested_parse(StringList(lines, source="cowboy_docs"), directive.content_offset, container)
    return container.children


class WsOptions(SphinxDirective):
    """Every WebSocketOptions field, its default (from the dataclass) and what it does."""

    def run(self) -> list[nodes.Node]:
        from cowboy_ws.options import WebSocketOptions

        defaults = WebSocketOptions()
        rows = []
        names = [f.name for f in dataclasses.fields(WebSocketOptions) if f.name != "ignored"]
        for name in names:
            unit, text = WS_OPTIONS.get(name, ("", ""))
            if name not in WS_OPTIONS:
                log.info("WebSocketOptions.%s has no description in docs/_ext/cowboy_docs.py (WS_OPTIONS)",
                         name, location=self.get_location())
            rows.append([f"``{name}``", _ws_default(name, getattr(defaults, name), unit), text or "-"])
        return _table(self, ["option", "default", "what it does"], rows, [20, 25, 55])


class ServerOptions(SphinxDirective):
    """Every keyword argument of Server, its default (from the signature) and what it does."""

    def run(self) -> list[nodes.Node]:
        from cowboy_ws.server import Server

        params = [p for p in inspect.signature(Server.__init__).parameters.values()
                  if p.kind is inspect.Parameter.KEYWORD_ONLY]
        rows = []
        for p in params:
            if p.name not in SERVER_OPTIONS:
                log.info("Server(%s=...) has no description in docs/_ext/cowboy_docs.py (SERVER_OPTIONS)",
                         p.name, location=self.get_location())
            default = p.default
            shown = _int(default) if isinstance(default, int) and not isinstance(default, bool) else repr(default)
            rows.append([f"``{p.name}``", f"``{shown}``", SERVER_OPTIONS.get(p.name, "-")])
        return _table(self, ["keyword", "default", "what it does"], rows, [20, 20, 60])


class CliHelp(SphinxDirective):
    """The ``--help`` text of ``python -m cowboy_ws``, generated from its argparse parser."""

    def run(self) -> list[nodes.Node]:
        from cowboy_ws.__main__ import build_parser

        old = os.environ.get("COLUMNS")
        os.environ["COLUMNS"] = "100"  # argparse wraps to the terminal: fix the width
        try:
            text = build_parser().format_help()
        finally:
            if old is None:
                del os.environ["COLUMNS"]
            else:
                os.environ["COLUMNS"] = old
        block = nodes.literal_block(text, text)
        block["language"] = "text"
        return [block]


def resolve_package_alias(app: Sphinx, env: Any, node: Any, contnode: nodes.Node) -> nodes.Node | None:
    """``cowboy_ws.join`` (what users write) -> ``cowboy_ws.process.join`` (where it is documented)."""
    if node.get("refdomain") != "py":
        return None
    parts = node.get("reftarget", "").split(".")
    if len(parts) < 2 or parts[0] != "cowboy_ws":
        return None
    import cowboy_ws

    if parts[1] not in cowboy_ws.__all__:
        return None
    obj = getattr(cowboy_ws, parts[1])
    module = getattr(obj, "__module__", None)
    if not module or module == "cowboy_ws":
        return None
    target = ".".join([module, getattr(obj, "__qualname__", parts[1])] + parts[2:])
    return env.get_domain("py").resolve_xref(env, node["refdoc"], app.builder, node["reftype"], target,
                                             node, contnode)


def setup(app: Sphinx) -> dict:
    app.connect("missing-reference", resolve_package_alias)
    app.add_directive("cowboy-cli-help", CliHelp)
    app.add_directive("cowboy-ws-options", WsOptions)
    app.add_directive("cowboy-server-options", ServerOptions)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
