"""``python -m cowboy_ws.client URL``: an interactive WebSocket client (``connect`` may precede the URL).

Each line typed is sent as a text message; what arrives is printed (text as it is, binary as
hex), prefixed with ``< `` on a terminal.  Ctrl-D closes the connection (1000), Ctrl-C too.
When stdin is not a terminal it runs without prompts: each line read is sent; at the end of the
input it waits until nothing has arrived for ``--linger`` seconds (0.5; at most ``--close-timeout``),
so that the replies are printed, then closes the connection and exits once the closing handshake
is done::

    printf 'hello\\nworld\\n' | python -m cowboy_ws.client ws://127.0.0.1:8080/ws

Exit status: 0 after a normal close (1000 or 1001), 1 after any other close or a failure to connect.
"""

from __future__ import annotations

import _thread
import argparse
import logging
import ssl
import sys
import threading
import time
from typing import Any, TextIO

from . import ConnectionClosed, InvalidHandshake, InvalidStatus, connect


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m cowboy_ws.client",
        description="Connect to a WebSocket server, send each line typed (or piped in) as a text message, "
                    "print what arrives.")
    parser.add_argument("url", metavar="URL", help="ws:// or wss:// URL")
    parser.add_argument("--compress", action="store_true", help="offer permessage-deflate (RFC 7692)")
    parser.add_argument("--header", "-H", action="append", default=[], metavar="'NAME: VALUE'",
                        help="an extra request header (repeatable)")
    parser.add_argument("--subprotocol", "-p", action="append", default=[], metavar="NAME",
                        help="offer this subprotocol (repeatable, in order of preference)")
    parser.add_argument("--origin", help="the Origin header")
    parser.add_argument("--insecure", "-k", action="store_true",
                        help="wss: do not verify the server's certificate (nor its name)")
    parser.add_argument("--cafile", help="wss: trust the CAs in this PEM file (instead of the system's)")
    parser.add_argument("--open-timeout", type=float, default=10.0, metavar="S", help="default 10 s")
    parser.add_argument("--close-timeout", type=float, default=5.0, metavar="S", help="default 5 s")
    parser.add_argument("--ping-interval", type=float, default=None, metavar="S", help="keepalive pings every S s")
    parser.add_argument("--linger", type=float, default=0.5, metavar="S",
                        help="without a terminal: after the input ends, close once nothing arrived for S s "
                             "(default 0.5, at most --close-timeout)")
    parser.add_argument("--max-frame-size", type=int, default=None, metavar="BYTES",
                        help="largest message accepted (default 1,000,000)")
    parser.add_argument("--log-level", default="WARNING", help="logging level (default WARNING)")
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["connect"]:
        args = args[1:]
    return parser.parse_args(args)


def _headers(values: list[str]) -> list[tuple[str, str]]:
    headers = []
    for value in values:
        name, colon, rest = value.partition(":")
        if not colon or not name.strip():
            raise SystemExit(f"--header {value!r}: expected 'Name: value'")
        headers.append((name.strip(), rest.strip()))
    return headers


def _ssl_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    if args.insecure:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    if args.cafile:
        return ssl.create_default_context(cafile=args.cafile)
    return None


def _show(frame: tuple, out: TextIO, prefix: str) -> None:
    kind, data = frame
    if kind == "text":
        text = data.decode("utf-8")
    else:
        text = f"[binary, {len(data)} bytes] {data[:64].hex(' ')}{' ...' if len(data) > 64 else ''}"
    out.write(f"{prefix}{text}\n")
    out.flush()


def main(argv: list[str] | None = None, stdin: TextIO | None = None, stdout: TextIO | None = None,
         stderr: TextIO | None = None) -> int:
    args = _parse_args(argv)
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    interactive = stdin.isatty()
    kwargs: dict[str, Any] = {}
    if args.max_frame_size is not None:
        kwargs["max_frame_size"] = args.max_frame_size
    try:
        ws = connect(args.url, compress=args.compress, subprotocols=args.subprotocol or None,
                     headers=_headers(args.header), origin=args.origin, ssl=_ssl_context(args),
                     open_timeout=args.open_timeout, close_timeout=args.close_timeout,
                     ping_interval=args.ping_interval, **kwargs)
    except InvalidStatus as exc:
        stderr.write(f"error: {exc.status} {exc.status_reason} from {exc.url}\n")
        if exc.body:
            stderr.write(exc.body.decode("utf-8", "replace").rstrip() + "\n")
        return 1
    except (InvalidHandshake, OSError, ValueError) as exc:
        stderr.write(f"error: cannot connect to {args.url}: {exc}\n")
        return 1
    details = [f"subprotocol {ws.subprotocol}"] if ws.subprotocol else []
    if ws.extensions:
        details.append("extensions " + ", ".join(name for name, _ in ws.extensions))
    stderr.write(f"connected to {ws.url}" + (f" ({'; '.join(details)})" if details else "") + "\n")
    if interactive:
        stderr.write("type a line to send it; Ctrl-D or Ctrl-C to close\n")
    stderr.flush()

    outcome: list[ConnectionClosed] = []
    last = [time.monotonic()]  # when something last arrived

    def receive() -> None:
        prefix = "< " if interactive else ""
        while True:
            try:
                frame = ws.recv()
            except ConnectionClosed as closed:
                outcome.append(closed)
                break
            last[0] = time.monotonic()
            _show(frame, stdout, prefix)
        if interactive and ws.closed is not None and ws.closed.side == "remote":
            _thread.interrupt_main()  # the prompt is waiting for a line that will not be sent

    receiver = threading.Thread(target=receive, name="receiver", daemon=True)
    receiver.start()
    try:
        while True:
            line = input("> ") if interactive else stdin.readline()
            if not interactive and not line:
                break
            try:
                ws.send(("text", line.rstrip("\r\n")))
            except ConnectionClosed:
                break
    except (EOFError, KeyboardInterrupt):
        if interactive:
            stderr.write("\n")
    if not interactive:  # the replies to the last lines may still be on their way
        ended = time.monotonic()
        while ws.closed is None and time.monotonic() - ended < args.close_timeout:
            quiet = time.monotonic() - max(last[0], ended)
            if quiet >= args.linger:
                break
            time.sleep(min(0.05, args.linger - quiet))
    ws.close()
    receiver.join(args.close_timeout + 2)
    closed = outcome[0] if outcome else ws.closed
    if closed is not None:
        reason = f" ({closed.reason.decode('utf-8', 'replace')})" if closed.reason else ""
        who = "the server" if closed.side == "remote" else "us"
        stderr.write(f"connection closed by {who}: {closed.code}{reason}\n")
        return 0 if closed.ok else 1
    return 1


if __name__ == "__main__":
    sys.exit(main())
