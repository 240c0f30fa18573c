"""An echo round trip against an *installed* cowboy_ws (CI: after installing a built sdist or wheel).

    python .ci/echo_smoke.py EXPECTED [CHECKOUT]

EXPECTED is the backend the install should have: ``c``, ``python`` (built without C on
purpose, COWBOY_WS_SPEEDUPS=no) or ``python-failed`` (the C build failed: the start-up line
and ``--version`` must say how to get C).  CHECKOUT, when given, is the source tree the
package must *not* be imported from.  Run it from a directory outside the checkout: the
script's own directory (.ci/) is what Python puts first on sys.path, not the checkout.

Starts ``cowboy_ws.Server`` with the built-in echo handler on 127.0.0.1:0, then a raw-socket
client (no dependency beyond the standard library) sends a text and a 64 KiB binary message
(masked: the kernels' masking and parsing run), checks the echoes, and closes with 1000.
"""

from __future__ import annotations

import base64
import logging
import os
import socket
import struct
import subprocess
import sys
import threading

import cowboy_ws
from cowboy_ws.examples import echo

TIMEOUT = 10.0


def recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError(f"connection closed after {len(data)} of {n} bytes")
        data += chunk
    return data


def send_frame(sock: socket.socket, opcode: int, payload: bytes) -> None:
    key = os.urandom(4)
    n = len(payload)
    head = bytes([0x80 | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    sock.sendall(head + key + masked)


def recv_frame(sock: socket.socket) -> tuple[int, bytes]:
    b0, b1 = recv_exact(sock, 2)
    assert b0 & 0x80 and not b1 & 0x80, (b0, b1)  # FIN, unmasked (server to client)
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", recv_exact(sock, 2))[0]
    elif n == 127:
        n = struct.unpack("!Q", recv_exact(sock, 8))[0]
    return b0 & 0x0F, recv_exact(sock, n)


def round_trip(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall((f"GET /echo HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                      f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
                     .encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += recv_exact(sock, 1)
        assert head.startswith(b"HTTP/1.1 101 "), head
        send_frame(sock, 0x1, "hello, cowboy_ws ✓".encode())
        assert recv_frame(sock) == (0x1, "hello, cowboy_ws ✓".encode())
        blob = os.urandom(65536)
        send_frame(sock, 0x2, blob)
        assert recv_frame(sock) == (0x2, blob)
        send_frame(sock, 0x8, struct.pack("!H", 1000))
        assert recv_frame(sock) == (0x8, struct.pack("!H", 1000))


def main() -> int:
    expected = sys.argv[1]
    checkout = os.path.realpath(sys.argv[2]) if len(sys.argv) > 2 else None
    where = os.path.realpath(cowboy_ws.__file__)
    print(f"cowboy_ws {cowboy_ws.__version__} from {where}, backend {cowboy_ws.backend()}")
    if checkout and where.startswith(checkout + os.sep):
        sys.exit(f"cowboy_ws imported from the checkout {checkout}, not from the installed package")
    if cowboy_ws.backend() != expected.split("-")[0]:
        sys.exit(f"backend {cowboy_ws.backend()!r}, expected {expected!r}")

    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    logging.getLogger("cowboy_ws").addHandler(Keep())
    logging.getLogger("cowboy_ws").setLevel(logging.INFO)
    server = cowboy_ws.Server([("/echo", echo, None)], port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        round_trip(server.port)
    finally:
        server.shutdown()
        thread.join(TIMEOUT)
    startup = next(line for line in lines if "listening on" in line)
    print("start-up line:", startup)
    version = subprocess.run([sys.executable, "-m", "cowboy_ws", "--version"], capture_output=True, text=True,
                             check=True).stdout.strip()
    print("--version:", version)
    for text in (startup, version):
        assert f"backend {cowboy_ws.backend()}" in text, text
        if expected == "python-failed":
            assert "failed to build" in text and "COWBOY_WS_SPEEDUPS=yes" in text, text
        elif expected == "python":
            assert "COWBOY_WS_SPEEDUPS=no" in text and "failed" not in text, text
        elif expected == "c":
            assert "COWBOY_WS_SPEEDUPS" not in text, text
    print("echo round trip OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
