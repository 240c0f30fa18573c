"""Server instructions per echoed message, end to end over TCP, counted by callgrind: noise-free.

A cowboy_ws echo server runs under ``valgrind --tool=callgrind``; a client (this process, not
under valgrind) upgrades, then sends bursts of ``--inflight`` masked text (or ``--binary``)
messages of ``--size`` bytes and reads every echo before the next burst, then closes.  The
server exits when that connection ends.  Two runs that differ only in the number of bursts give
the instructions of the extra bursts; divided by their messages, that is the server's user-space
instructions per message (the interpreter, the kernels, libc: not the kernel's side of the
system calls), the same on every run of the same code (``PYTHONHASHSEED=0``).

Use it to A/B a change on a busy machine (``--tree`` runs another checkout, e.g. a
``git worktree`` of the previous commit)::

    python bench/echo_instr.py                        # 16 B, 64 in flight, C backend
    python bench/echo_instr.py --pure --size 1024 --inflight 16
    python bench/echo_instr.py --tree /tmp/before     # the same, for another checkout
    python bench/echo_instr.py --size 65536 --inflight 4 --binary --keep /tmp/cg   # 64 KiB; keep
                                                      # the callgrind files for callgrind_annotate

Needs valgrind and a CPython that valgrind runs (the pyenv shim is a shell script: the real
interpreter, ``sys.executable``, is what is run).  About 30 s per figure.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from cowboy_ws.protocol.connection import Connection  # noqa: E402

SERVER = r"""
import sys
sys.path.insert(0, sys.argv[1])
import cowboy_ws
from cowboy_ws.examples import echo

class Echo:  # the built-in echo handler, stopping the server when its connection ends
    init = staticmethod(echo.init)
    websocket_handle = staticmethod(echo.websocket_handle)
    websocket_info = staticmethod(echo.websocket_info)

    @staticmethod
    def terminate(reason, req, state):
        server.loop.call_later(0.05, server.loop.stop)

server = cowboy_ws.Server([("/", Echo(), None)], host="127.0.0.1", port=0)
print(server.port, flush=True)
server.serve_forever()
"""

UPGRADE = (b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


def wire_size(size: int) -> int:
    """Bytes of one unmasked server frame of ``size`` payload bytes (RFC 6455 §5.2)."""
    return size + (2 if size < 126 else 4 if size < 65536 else 10)


def total_instructions(tree: str, bursts: int, size: int, inflight: int, pure: bool, timeout: float,
                       binary: bool = False, keep: str | None = None) -> int:
    """Run the server under callgrind for ``bursts`` bursts; its total instruction count.

    ``keep``: a path prefix; the callgrind output is kept as ``<keep>.<bursts>.out``."""
    env = dict(os.environ, PYTHONHASHSEED="0")
    env.pop("COWBOY_WS_PURE", None)
    if pure:
        env["COWBOY_WS_PURE"] = "1"
    with tempfile.TemporaryDirectory() as tmp:
        out = f"{keep}.{bursts}.out" if keep else os.path.join(tmp, "callgrind.out")
        proc = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                                 sys.executable, "-c", SERVER, tree],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True)
        try:
            port = int(proc.stdout.readline())  # type: ignore[union-attr]
            client = Connection("client", mask_key=lambda: b"abcd")
            send = client.send_binary if binary else client.send_text
            for _ in range(inflight):
                send(b"x" * size)
            burst = client.data_to_send()
            want = inflight * wire_size(size)
            deadline = time.monotonic() + timeout
            with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
                sock.sendall(UPGRADE)
                head = b""
                while b"\r\n\r\n" not in head:
                    chunk = sock.recv(4096)
                    if not chunk:
                        raise RuntimeError("the server closed during the upgrade")
                    head += chunk
                if not head.startswith(b"HTTP/1.1 101"):
                    raise RuntimeError(f"upgrade refused: {head[:60]!r}")
                for _ in range(bursts):
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{bursts} bursts took over {timeout} s")
                    sock.sendall(burst)
                    got = 0
                    while got < want:
                        chunk = sock.recv(1 << 20)
                        if not chunk:
                            raise RuntimeError("the server closed mid-run")
                        got += len(chunk)
                sock.sendall(b"\x88\x82abcd" + bytes((0x03 ^ ord("a"), 0xE8 ^ ord("b"))))  # Close 1000
                sock.recv(16)
            proc.wait(timeout)
            with open(out) as f:
                for line in f:
                    if line.startswith(("summary:", "totals:")):
                        return int(line.split()[1])
            raise RuntimeError("no totals in the callgrind output")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", default=ROOT, help="the checkout whose cowboy_ws runs (default: this one)")
    parser.add_argument("--size", type=int, default=16, help="payload bytes per message (default 16)")
    parser.add_argument("--inflight", type=int, default=64, help="messages per burst (default 64)")
    parser.add_argument("--bursts", type=int, default=0, help="bursts in the longer run (default: by size)")
    parser.add_argument("--pure", action="store_true", help="the pure-Python backend (COWBOY_WS_PURE=1)")
    parser.add_argument("--binary", action="store_true", help="binary messages (default text: UTF-8 checked)")
    parser.add_argument("--keep", metavar="PREFIX", help="keep the callgrind outputs as PREFIX.<bursts>.out")
    parser.add_argument("--timeout", type=float, default=300, help="give up a run after this many seconds")
    args = parser.parse_args()
    long = args.bursts or max(20, min(1200, 16_000 // args.inflight * 16 // max(16, args.size) * 4))
    short = max(1, long // 5)
    a = total_instructions(args.tree, short, args.size, args.inflight, args.pure, args.timeout, args.binary, args.keep)
    b = total_instructions(args.tree, long, args.size, args.inflight, args.pure, args.timeout, args.binary, args.keep)
    per = (b - a) / ((long - short) * args.inflight)
    backend = "pure" if args.pure else "C (if built)"
    kind = "binary" if args.binary else "text"
    print(f"{per:,.0f} instructions per message  ({args.size} B {kind}, {args.inflight} in flight, {backend}, "
          f"bursts {short} vs {long}, tree {args.tree})")


if __name__ == "__main__":
    main()
