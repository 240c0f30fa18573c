"""The command line: ``python -m cowboy_ws [MODULE[:HANDLER]] [options]``.

With no handler it serves the built-in echo handler (:mod:`cowboy_ws.examples.echo`)
on every path of ``127.0.0.1:8080``; a plain ``GET`` gets a small HTML page that
talks to it.  ``MODULE:HANDLER`` imports ``MODULE`` and serves its attribute
``HANDLER`` (a module, a class or an instance with the Cowboy callbacks) on every
path (route pattern ``"_"``); ``MODULE`` alone serves the module itself.

The server logs one line when it listens (address with the real port, kernel
backend, compression).  SIGINT / SIGTERM shut it down gracefully: every
connection gets Close 1001 (RFC 6455 §7.4.1), ``terminate`` runs, and the
process exits 0.  A second signal stops at once without waiting for the peers'
closing handshakes.

The Autobahn|Testsuite fuzzing client drives::

    python -m cowboy_ws --port 9001 --compress --max-frame-size 67108864
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import ssl
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any

from . import __version__
from .handler import HandlerError as HandlerCheckError
from .handler import check_handler, is_websocket_handler
from .options import (
    HANDSHAKE_TIMEOUT,
    MAX_CONNECTIONS,
    MAX_SEND_BUFFER,
    PING_TIMEOUT,
    SEND_HIGH_WATER,
    SERVER_DEFLATE,
)
from .protocol.errors import UsageError

log = logging.getLogger("cowboy_ws")

DEFAULT_HANDLER = "cowboy_ws.examples.echo"

EPILOG = """\
examples:
  python -m cowboy_ws                                   echo on ws://127.0.0.1:8080/ (any path)
  python -m cowboy_ws --port 9001 --compress --max-frame-size 67108864
                                                        what the Autobahn fuzzing client expects
  python -m cowboy_ws --compress --deflate-opts server_context_takeover=takeover,server_max_window_bits=12
                                                        fewer bytes on the wire for more memory per
                                                        connection (docs/howto/compression.md)
  python -m cowboy_ws cowboy_ws.examples.chat           a module as the handler
  python -m cowboy_ws myapp.ws:ChatHandler --port 0     an attribute (module, class or instance)
  python -m cowboy_ws --certfile cert.pem --keyfile key.pem --port 8443
                                                        wss:// with TLS
  python -m cowboy_ws cowboy_ws.examples.chat --workers 4 --redis redis://127.0.0.1:6379/0
                                                        4 processes on one port; rooms span them
                                                        (and every other server on that Redis)

The handler's init/websocket_init/websocket_handle/websocket_info/terminate
follow Cowboy's cowboy_websocket (docs/design.md); its initial state is None.
SIGINT/SIGTERM close every connection with 1001 and exit 0 (with --workers: the
supervisor stops every worker that way, then exits 0).
"""


class HandlerError(Exception):
    """MODULE[:HANDLER] could not be turned into a handler."""


def _limit(what: str):
    """An argparse type: a positive int, or the string ``infinity``."""

    def parse(text: str) -> int | str:
        if text.strip().lower() == "infinity":
            return "infinity"
        try:
            value = int(text, 0)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be a positive integer or 'infinity', not {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{what} must be a positive integer or 'infinity', not {text!r}")
        return value

    parse.__name__ = what  # argparse shows it in "invalid <name> value" messages
    return parse


def _positive_int(what: str):
    def parse(text: str) -> int:
        try:
            value = int(text, 0)
        except ValueError:
            value = 0
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{what} must be a positive integer, not {text!r}")
        return value

    parse.__name__ = what
    return parse


def _positive_float(what: str):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = 0.0
        if not value > 0:
            raise argparse.ArgumentTypeError(f"{what} must be a positive number, not {text!r}")
        return value

    parse.__name__ = what
    return parse


def _deflate_opts(text: str) -> dict[str, int | str]:
    """``KEY=VALUE[,KEY=VALUE...]`` -> a Cowboy ``deflate_opts`` dict (numbers as ints), checked."""
    opts: dict[str, int | str] = {}
    for item in text.split(","):
        key, eq, value = (part.strip() for part in item.partition("="))
        if not key or not eq or not value:
            raise argparse.ArgumentTypeError(f"expected KEY=VALUE[,KEY=VALUE...], not {text!r}")
        opts[key] = int(value) if value.lstrip("-").isdigit() else value
    try:
        SERVER_DEFLATE.updated(opts)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return opts


_deflate_opts.__name__ = "deflate_opts"


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be in 0..65535 (0 picks a free port), not {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m cowboy_ws",
        description="Serve a Cowboy-style WebSocket handler (cowboy_websocket) over HTTP/1.1 or TLS.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "handler", nargs="?", default=DEFAULT_HANDLER, metavar="MODULE[:HANDLER]",
        help="the handler to serve on every path: MODULE:HANDLER takes attribute HANDLER "
             "(dots allowed) of the imported MODULE; MODULE alone uses the module itself "
             f"(default: {DEFAULT_HANDLER})")
    net = parser.add_argument_group("listener")
    net.add_argument("--host", default="127.0.0.1",
                     help="address to bind (default: %(default)s; 0.0.0.0 or :: for every interface)")
    net.add_argument("--port", type=_port, default=8080,
                     help="TCP port (default: %(default)s; 0 picks a free one, shown in the log)")
    net.add_argument("--certfile", metavar="PEM",
                     help="serve wss:// with this certificate chain (PEM)")
    net.add_argument("--keyfile", metavar="PEM",
                     help="private key for --certfile (default: read from the certificate file)")
    net.add_argument("--max-connections", type=_positive_int("max_connections"), metavar="N",
                     help="open connections (handshaking or upgraded) kept at once; past it new clients "
                          f"get 503 (default: {MAX_CONNECTIONS})")
    net.add_argument("--handshake-timeout", type=_positive_float("handshake_timeout"), metavar="SECONDS",
                     help="deadline from accept for the TLS handshake and the whole request head; "
                          f"slower clients get 408 or are closed (default: {HANDSHAKE_TIMEOUT:g})")
    net.add_argument("--allowed-origin", action="append", metavar="ORIGIN", dest="allowed_origins",
                     help="accept WebSocket upgrades only from this Origin (repeat for several; 'null' "
                          "allows requests without Origin); others get 403 (default: any origin)")
    net.add_argument("--metrics-port", type=_port, metavar="PORT",
                     help="serve Prometheus metrics at http://HOST:PORT/metrics (needs "
                          "pip install 'cowboy-ws[metrics]'; with --workers, every worker's; default: off)")
    net.add_argument("--metrics-host", metavar="HOST",
                     help="the address the metrics are served on (default: --host)")
    scale = parser.add_argument_group("scaling (see docs/deployment.md)")
    scale.add_argument("--workers", type=_positive_int("workers"), metavar="N",
                       help="run N worker processes on the port (SO_REUSEPORT), each with its own loop, "
                            "restarted if they die; without --redis each keeps its own groups "
                            "(default: one process, no supervisor)")
    scale.add_argument("--redis", metavar="URL", dest="redis_url",
                       help="share Pids, process groups and broadcast with every worker and server on this "
                            "Redis (redis://[user:password@]host:port/db, rediss:// for TLS); needs "
                            "pip install 'cowboy-ws[redis]' (default: everything stays in the process)")
    scale.add_argument("--redis-prefix", metavar="PREFIX", default="cowboy_ws",
                       help="prefix of the Redis channels and keys, to run separate clusters on one Redis "
                            "(default: %(default)s)")
    scale.add_argument("--node-ttl", type=_positive_float("node_ttl"), metavar="SECONDS",
                       help="a node (worker or server) silent on Redis this long is taken for dead and its "
                            "Pids leave their groups (default: 10)")
    bus = parser.add_argument_group("securing the cluster bus (see docs/deployment.md)")
    secret = bus.add_mutually_exclusive_group()
    secret.add_argument("--cluster-secret", metavar="SECRET",
                        help="shared secret authenticating every message between nodes (HMAC-SHA256); give "
                             "every node the same one (default: the COWBOY_WS_CLUSTER_SECRET environment "
                             "variable; without either the bus is unauthenticated, which is logged)")
    secret.add_argument("--cluster-secret-file", metavar="FILE",
                        help="read the shared secret from FILE (surrounding whitespace ignored)")
    bus.add_argument("--cluster-codec", choices=["msgpack", "pickle"], default="msgpack",
                     help="how messages between nodes are encoded: msgpack (default: plain data and Pids, "
                          "nothing runs when decoded) or pickle (any object; decoding runs code, so only "
                          "with a secret or a Redis nobody else can publish on)")
    bus.add_argument("--redis-ssl-ca", metavar="PEM",
                     help="CA certificate(s) that sign the Redis server's certificate (rediss://)")
    bus.add_argument("--redis-ssl-cert", metavar="PEM",
                     help="client certificate for Redis servers that require one (rediss://)")
    bus.add_argument("--redis-ssl-key", metavar="PEM", help="private key of --redis-ssl-cert")
    ws = parser.add_argument_group("websocket options (cowboy_websocket:opts())")
    ws.add_argument("--compress", action="store_true",
                    help="accept permessage-deflate (RFC 7692) when the client offers it")
    ws.add_argument("--deflate-opts", type=_deflate_opts, metavar="KEY=VALUE,...",
                    help="permessage-deflate settings (Cowboy's deflate_opts; needs --compress): "
                         "server_context_takeover and client_context_takeover (takeover | no_takeover), "
                         "server_max_window_bits and client_max_window_bits (8..15), level (0..9, "
                         "best_speed, best_compression, default, none), mem_level (1..9), strategy "
                         "(default, filtered, huffman_only, rle, fixed), min_size (bytes; smaller messages "
                         "go uncompressed); default: level 1, no server context takeover, window 15; "
                         "trade-offs measured in docs/howto/compression.md")
    ws.add_argument("--max-frame-size", type=_limit("max_frame_size"), metavar="BYTES",
                    help="largest frame, inflated payload and message accepted; bigger ones close "
                         "with 1009 (default: 1000000; 'infinity' for no limit)")
    ws.add_argument("--idle-timeout", type=_limit("idle_timeout"), metavar="MS",
                    help="close a connection that received nothing for MS milliseconds "
                         "(default: 60000; 'infinity' disables)")
    ws.add_argument("--ping-interval", type=_limit("ping_interval"), metavar="MS",
                    help="send a keepalive ping every MS milliseconds (default: off)")
    ws.add_argument("--ping-timeout", type=_positive_int("ping_timeout"), metavar="MS",
                    help="close with 1011 when nothing arrives within MS ms of a keepalive ping "
                         f"(default: {PING_TIMEOUT})")
    ws.add_argument("--max-send-buffer", type=_limit("max_send_buffer"), metavar="BYTES",
                    help="close with 1008 a peer that does not read while this much waits to be sent "
                         f"(default: {MAX_SEND_BUFFER}; reading pauses above {SEND_HIGH_WATER})")
    parser.add_argument("--log-level", default="INFO", type=str.upper,
                        choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
                        help="logging level (default: %(default)s)")
    from ._backendinfo import version_text  # the backend, and how to get C when it is pure by accident
    parser.add_argument("--version", action="version", version=version_text(__version__))
    return parser


def load_handler(spec: str) -> Any:
    """``"pkg.mod:Attr.sub"`` -> that object; ``"pkg.mod"`` -> the module. Raises HandlerError."""
    module_name, sep, attr_path = spec.partition(":")
    module_name = module_name.strip()
    attr_path = attr_path.strip()
    if not module_name or (sep and not attr_path):
        raise HandlerError(f"invalid handler {spec!r}: expected MODULE or MODULE:HANDLER")
    module = _import(module_name)
    obj: Any = module
    if attr_path:
        walked = module_name
        for part in attr_path.split("."):
            if not part.isidentifier():
                raise HandlerError(f"invalid handler {spec!r}: {part!r} is not a Python identifier")
            try:
                obj = getattr(obj, part)
            except AttributeError:
                # "pkg:submodule": a submodule that the package did not import itself.
                if isinstance(obj, ModuleType) and getattr(obj, "__path__", None) is not None:
                    obj = _import(f"{walked}.{part}", missing_ok=True)
                    if obj is not None:
                        walked = f"{walked}.{part}"
                        continue
                raise HandlerError(f"module {module_name!r} has no attribute {attr_path!r}") from None
            walked = f"{walked}.{part}"
    if not (callable(getattr(obj, "init", None)) and is_websocket_handler(obj)):
        raise HandlerError(
            f"{spec!r} is not a WebSocket handler: a handler is a module, class or instance with "
            "init(req, state), websocket_handle(frame, state) and websocket_info(info, state) "
            "(websocket_init and terminate are optional)")
    try:
        check_handler(obj)
    except HandlerCheckError as exc:
        raise HandlerError(f"{spec!r}: {exc}") from None
    return obj


def _import(name: str, missing_ok: bool = False) -> ModuleType | None:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (exc.name == name or name.startswith(exc.name + ".")):
            if missing_ok:
                return None
            raise HandlerError(f"cannot import module {name!r}: no module named {exc.name!r} "
                               "(is it on PYTHONPATH?)") from None
        raise HandlerError(f"cannot import module {name!r}: {exc}") from exc
    except Exception as exc:  # the module itself failed while importing
        raise HandlerError(f"cannot import module {name!r}: {type(exc).__name__}: {exc}") from exc


def build_ssl_context(certfile: str, keyfile: str | None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certfile, keyfile)
    return context


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=getattr(logging, args.log_level),
                        format="%(asctime)s %(levelname)s "
                               + ("[%(process)d] " if args.workers is not None else "")
                               + "%(name)s: %(message)s")

    if args.keyfile and not args.certfile:
        parser.error("--keyfile needs --certfile")
    try:
        handler = load_handler(args.handler)
    except HandlerError as exc:
        parser.error(str(exc))

    ssl_context = None
    if args.certfile:
        try:
            ssl_context = build_ssl_context(args.certfile, args.keyfile)
        except (OSError, ssl.SSLError) as exc:
            parser.error(f"cannot load the TLS certificate/key: {exc}")

    ws_options: dict[str, Any] = {}
    if args.compress:
        ws_options["compress"] = True
    if args.deflate_opts is not None:
        if not args.compress:
            parser.error("--deflate-opts needs --compress")
        ws_options["deflate_opts"] = args.deflate_opts
    if args.max_frame_size is not None:
        ws_options["max_frame_size"] = args.max_frame_size
    if args.idle_timeout is not None:
        ws_options["idle_timeout"] = args.idle_timeout
    for name in ("ping_interval", "ping_timeout", "max_send_buffer"):
        if getattr(args, name) is not None:
            ws_options[name] = getattr(args, name)
    server_kwargs: dict[str, Any] = {}
    if args.max_connections is not None:
        server_kwargs["max_connections"] = args.max_connections
    if args.handshake_timeout is not None:
        server_kwargs["handshake_timeout"] = args.handshake_timeout
    if args.allowed_origins:
        server_kwargs["allowed_origins"] = [None if o == "null" else o for o in args.allowed_origins]
    if args.metrics_port is not None:
        try:
            import prometheus_client  # noqa: F401
        except ImportError:
            parser.error("--metrics-port needs prometheus_client: pip install 'cowboy-ws[metrics]'")
        server_kwargs.update(metrics_port=args.metrics_port, metrics_host=args.metrics_host)
    elif args.metrics_host is not None:
        parser.error("--metrics-host needs --metrics-port")
    cluster_options = ("node_ttl", "cluster_secret", "cluster_secret_file", "redis_ssl_ca", "redis_ssl_cert",
                       "redis_ssl_key")
    if args.redis_url:
        redis_kwargs: dict[str, Any] = dict(redis_url=args.redis_url, redis_prefix=args.redis_prefix,
                                            node_ttl=args.node_ttl, cluster_codec=args.cluster_codec,
                                            cluster_secret=args.cluster_secret, redis_ssl_ca=args.redis_ssl_ca,
                                            redis_ssl_cert=args.redis_ssl_cert, redis_ssl_key=args.redis_ssl_key)
        if args.cluster_secret_file:
            try:
                with open(args.cluster_secret_file, "rb") as f:
                    redis_kwargs["cluster_secret"] = f.read().strip()
            except OSError as exc:
                parser.error(f"--cluster-secret-file: {exc}")
            if not redis_kwargs["cluster_secret"]:
                parser.error(f"--cluster-secret-file: {args.cluster_secret_file} is empty")
        try:
            from .redis_backend import RedisBackend, RedisConfigError
            # redis-py is there, the URL parses, Redis takes the credentials and its certificate is trusted
            RedisBackend.from_server_options(**redis_kwargs).check()
        except (ImportError, ValueError, RedisConfigError) as exc:
            parser.error(f"--redis: {exc}")
        server_kwargs.update({k: v for k, v in redis_kwargs.items() if v is not None})
    else:
        given = [name for name in cluster_options if getattr(args, name) is not None]
        if args.cluster_codec != "msgpack":
            given.append("cluster_codec")
        if given:
            parser.error(f"--{given[0].replace('_', '-')} needs --redis")

    if args.workers is not None:
        from . import workers
        try:
            return workers.serve([("_", handler, None)], workers=args.workers, host=args.host, port=args.port,
                                 ssl_context=ssl_context, ws_options=ws_options, **server_kwargs)
        except OSError as exc:
            print(f"{parser.prog}: error: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}",
                  file=sys.stderr)
            return 1

    from .server import Server  # after logging is set up

    try:
        server = Server([("_", handler, None)], host=args.host, port=args.port,
                        ssl_context=ssl_context, ws_options=ws_options, **server_kwargs)
    except OSError as exc:
        print(f"{parser.prog}: error: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}",
              file=sys.stderr)
        return 1

    signals_seen: list[int] = []

    def on_signal(signum: int, _frame: Any) -> None:
        name = signal.Signals(signum).name
        signals_seen.append(signum)
        if len(signals_seen) == 1:
            log.info("%s received: closing connections (1001), then exiting", name)
            server.shutdown(wait=False)
        else:
            log.warning("%s received again: stopping now", name)
            server.loop.stop()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.serve_forever()
    finally:
        for sig, handler_ in previous.items():
            signal.signal(sig, handler_)
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
