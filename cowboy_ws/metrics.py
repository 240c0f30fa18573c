"""Prometheus metrics: ``Server(metrics_port=N)`` / ``--metrics-port N`` (extra ``cowboy-ws[metrics]``).

Counting must cost (almost) nothing on the per-message path, so the connections
count into plain integers of one :class:`Stats` per server, on the loop thread; the
metric families of ``prometheus_client`` are built only when ``/metrics`` is
scraped (a custom collector).  With metrics off a server has no Stats and each
counting site is one ``is not None`` test.

Exposed at ``http://HOST:N/metrics`` (Prometheus text format 0.0.4, on its own port):

==========================================  =======  ==================================================
metric                                      type     labels
==========================================  =======  ==================================================
``cowboy_ws_connections``                   gauge    WebSocket connections open (upgraded, not closed)
``cowboy_ws_connections_total``             counter  WebSocket connections upgraded
``cowboy_ws_messages_received_total``       counter  ``kind``: text / binary (whole messages)
``cowboy_ws_messages_sent_total``           counter  ``kind``
``cowboy_ws_bytes_received_total``          counter  ``kind``: message payload bytes (after inflating)
``cowboy_ws_bytes_sent_total``              counter  ``kind``: message payload bytes (before deflating)
``cowboy_ws_closes_total``                  counter  ``code``, ``side``: local (we closed first) / remote
``cowboy_ws_handler_crashes_total``         counter  callbacks that raised or returned a bad result
``cowboy_ws_handshake_refusals_total``      counter  ``status``: the HTTP status of a refused request
``cowboy_ws_send_buffer_paused``            gauge    connections whose reading is paused by backpressure
==========================================  =======  ==================================================

A connection that ends without any Close (TCP lost) counts as ``code="1006"``, ``side="remote"``.
Broadcast deliveries count as sent messages of each member.  A read's messages (and the replies they
get on the fast path) are counted once per read, in bulk: the protocol connection adds up what it
parses (``Connection.counts``; the C parser's records sum a run of small messages), and a read's
replies are counted with the one call that frames them (:meth:`Stats.sent_all`).  With ``--workers N`` the parent
serves the metrics of every worker, each sample labelled ``worker="i"``; the workers write
their numbers to a directory every :data:`SNAPSHOT_INTERVAL` seconds, so a scrape sees them at
most that old.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

log = logging.getLogger(__name__)

__all__ = ["SNAPSHOT_INTERVAL", "MetricsServer", "Stats", "StatsCollector"]

#: Seconds between two snapshots of a worker's numbers (``--workers``).
SNAPSHOT_INTERVAL = 1.0
#: Seconds a scrape's request may take to arrive (a slow client cannot hold the server up longer).
REQUEST_TIMEOUT = 2.0

_ZEROS = (0, 0, 0, 0)

_COUNTERS = ("connections", "in_text", "in_binary", "in_text_bytes", "in_binary_bytes", "out_text",
             "out_binary", "out_text_bytes", "out_binary_bytes", "crashes")


class Stats:
    """One server's numbers, written on its loop thread, read by the scrape."""

    __slots__ = ("open", "paused", *_COUNTERS, "closes", "refusals")

    # the counters, set from _COUNTERS in __init__ (declared for type checkers)
    connections: int
    in_text: int
    in_binary: int
    in_text_bytes: int
    in_binary_bytes: int
    out_text: int
    out_binary: int
    out_text_bytes: int
    out_binary_bytes: int
    crashes: int

    def __init__(self) -> None:
        self.open = 0          # gauge: upgraded and not closed
        self.paused = 0        # gauge: reading paused by backpressure
        for name in _COUNTERS:
            setattr(self, name, 0)
        self.closes: dict[tuple[int, str], int] = {}
        self.refusals: dict[int, int] = {}

    def closed(self, code: int | None, side: str) -> None:
        key = (1005 if code is None else code, side)
        self.closes[key] = self.closes.get(key, 0) + 1

    def sent(self, kind: str, size: int) -> None:
        """One message sent outside the handler's fast path (commands, broadcasts)."""
        if kind == "text":
            self.out_text += 1
            self.out_text_bytes += size
        else:
            self.out_binary += 1
            self.out_binary_bytes += size

    def received(self, counts: list[int]) -> None:
        """Add a connection's ``[text, text bytes, binary, binary bytes]`` (messages received) and zero them."""
        self.in_text += counts[0]
        self.in_text_bytes += counts[1]
        self.in_binary += counts[2]
        self.in_binary_bytes += counts[3]
        counts[:] = _ZEROS

    def sent_all(self, frames: list[tuple[str, bytes]], size: int | None = None) -> None:
        """Count messages sent, ``(kind, payload)`` each, as :meth:`sent` would; ``size``: the payload
        bytes of them all when they are known to be of one kind (the kind of the first)."""
        if size is not None:
            if frames[0][0] == "text":
                self.out_text += len(frames)
                self.out_text_bytes += size
            else:
                self.out_binary += len(frames)
                self.out_binary_bytes += size
            return
        for kind, data in frames:
            self.sent(kind, len(data))

    def refused(self, status: int) -> None:
        self.refusals[status] = self.refusals.get(status, 0) + 1

    def snapshot(self) -> dict[str, Any]:
        """The numbers as plain JSON data (what a worker writes for the parent)."""
        data: dict[str, Any] = {name: getattr(self, name) for name in ("open", "paused", *_COUNTERS)}
        data["closes"] = [[code, side, n] for (code, side), n in list(self.closes.items())]
        data["refusals"] = [[status, n] for status, n in list(self.refusals.items())]
        return data

    def write_snapshot(self, path: str) -> None:
        """Write :meth:`snapshot` to ``path`` atomically (a reader never sees half a file)."""
        tmp = f"{path}.tmp"
        with open(tmp, "w") as f:
            json.dump(self.snapshot(), f)
        os.replace(tmp, path)


def payload_size(frame: bytes) -> int:
    """The payload length of a serialized unmasked frame: its header is 2 bytes, 4 with a 126 length
    byte, 10 with 127 (RFC 6455 §5.2)."""
    length = frame[1] & 0x7F
    return len(frame) - (2 if length < 126 else 4 if length == 126 else 10)


def read_snapshots(directory: str) -> list[tuple[str, dict[str, Any]]]:
    """``[(worker, snapshot), ...]`` from the files workers wrote in ``directory`` (unreadable ones skipped)."""
    out: list[tuple[str, dict[str, Any]]] = []
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return out
    for name in names:
        if not (name.startswith("worker-") and name.endswith(".json")):
            continue
        try:
            with open(os.path.join(directory, name)) as f:
                out.append((name[len("worker-"):-len(".json")], json.load(f)))
        except (OSError, ValueError):
            continue
    return out


class StatsCollector:
    """A ``prometheus_client`` collector over snapshots: ``sources()`` -> ``[(worker or None, snapshot)]``."""

    def __init__(self, sources: Callable[[], Iterable[tuple[str | None, dict[str, Any]]]]) -> None:
        self.sources = sources

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        snaps = list(self.sources())
        extra = ["worker"] if any(worker is not None for worker, _ in snaps) else []

        def family(cls: Any, name: str, doc: str, labels: list[str],
                   values: Callable[[dict[str, Any]], Iterable[tuple[list[str], float]]]) -> Any:
            fam = cls(name, doc, labels=labels + extra)
            for worker, snap in snaps:
                for label_values, value in values(snap):
                    fam.add_metric(label_values + ([worker] if extra else []), value)
            return fam

        def plain(key: str) -> Callable[[dict[str, Any]], list[tuple[list[str], float]]]:
            return lambda s: [([], s.get(key, 0))]

        def by_kind(prefix: str, suffix: str = "") -> Callable[[dict[str, Any]], list[tuple[list[str], float]]]:
            return lambda s: [([kind], s.get(f"{prefix}_{kind}{suffix}", 0)) for kind in ("text", "binary")]

        yield family(GaugeMetricFamily, "cowboy_ws_connections", "WebSocket connections open", [], plain("open"))
        yield family(CounterMetricFamily, "cowboy_ws_connections", "WebSocket connections upgraded", [],
                     plain("connections"))
        yield family(CounterMetricFamily, "cowboy_ws_messages_received", "Messages received", ["kind"],
                     by_kind("in"))
        yield family(CounterMetricFamily, "cowboy_ws_messages_sent", "Messages sent", ["kind"], by_kind("out"))
        yield family(CounterMetricFamily, "cowboy_ws_bytes_received", "Message payload bytes received",
                     ["kind"], by_kind("in", "_bytes"))
        yield family(CounterMetricFamily, "cowboy_ws_bytes_sent", "Message payload bytes sent", ["kind"],
                     by_kind("out", "_bytes"))
        yield family(CounterMetricFamily, "cowboy_ws_closes", "Connections closed, by close code and side",
                     ["code", "side"], lambda s: [([str(c), side], n) for c, side, n in s.get("closes", ())])
        yield family(CounterMetricFamily, "cowboy_ws_handler_crashes", "Handler crashes", [], plain("crashes"))
        yield family(CounterMetricFamily, "cowboy_ws_handshake_refusals", "Requests refused, by HTTP status",
                     ["status"], lambda s: [([str(st)], n) for st, n in s.get("refusals", ())])
        yield family(GaugeMetricFamily, "cowboy_ws_send_buffer_paused",
                     "Connections whose reading is paused by backpressure", [], plain("paused"))


class _QuietHandler(WSGIRequestHandler):
    timeout = REQUEST_TIMEOUT

    def log_message(self, format: str, *args: Any) -> None:  # "format": the stdlib's name
        log.debug("metrics: " + format, *args)  # noqa: G003 - the stdlib's own format string, prefixed


class MetricsServer:
    """``/metrics`` over HTTP on its own port, for one collector (``prometheus_client`` text format).

    :meth:`start` serves from a daemon thread (one server process); a supervisor that has its
    own select loop calls :meth:`handle` when :attr:`socket` is readable instead.
    """

    def __init__(self, host: str, port: int, collector: StatsCollector) -> None:
        try:
            from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
        except ImportError:
            raise ImportError("metrics need prometheus_client: pip install 'cowboy-ws[metrics]'") from None
        # auto_describe off: the gauge cowboy_ws_connections and the counter cowboy_ws_connections_total
        # are two names in the text format, which the registry's name check would take for one.
        registry = CollectorRegistry(auto_describe=False)
        registry.register(collector)

        def app(environ: dict, start_response: Callable[..., Any]) -> list[bytes]:
            if environ.get("PATH_INFO") not in ("/metrics", "/"):
                start_response("404 Not Found", [("Content-Type", "text/plain")])
                return [b"see /metrics\n"]
            body = generate_latest(registry)
            start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST), ("Content-Length", str(len(body)))])
            return [body]

        self.httpd: WSGIServer = make_server(host, port, app, handler_class=_QuietHandler)
        self.httpd.timeout = REQUEST_TIMEOUT
        self.host, self.port = self.httpd.server_address[:2]
        self._thread: threading.Thread | None = None

    @property
    def socket(self) -> Any:
        return self.httpd.socket

    def handle(self) -> None:
        """Answer one request (the listening socket is readable)."""
        self.httpd.handle_request()

    def start(self) -> MetricsServer:
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.5},
                                        name=f"cowboy_ws-metrics:{self.port}", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        if self._thread is not None:
            self.httpd.shutdown()
            self._thread.join(5)
            self._thread = None
        self.httpd.server_close()
