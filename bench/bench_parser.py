"""Incoming-frame parsing speed: 16-byte masked text frames, frames/s of CPU time.

What a server does with every message it receives, before any handler runs:
parse the header, unmask the payload (RFC 6455 §5.2-§5.3), and, on the full
connection path, turn frames into messages (checking UTF-8 for text, §8.1).

Parsers compared (all pure Python unless noted):

* ``cowboy FrameParser (C)`` / ``(pure)``  ``cowboy_ws.protocol.frames.FrameParser.feed``
  (frames only)
* ``cowboy Connection (C)`` / ``(pure)``  ``cowboy_ws.protocol.connection.Connection("server")
  .receive_data`` (messages, UTF-8 checked).  The backend is chosen at import: the
  ``(C)`` rows use cowboy_ws as imported (C when built and ``COWBOY_WS_PURE`` is unset),
  the ``(pure)`` rows a second copy of the package imported with ``COWBOY_WS_PURE=1``
  in the same process, so every row is measured in the same interleaved rounds
* ``websockets Frame.parse``  the generator-based ``websockets.frames.Frame.parse`` on a
  ``websockets.streams.StreamReader`` (frames only; unmasks with websockets' C ``speedups``)
* ``websockets Protocol``  ``websockets.protocol.Protocol(SERVER)`` (state OPEN)
  ``receive_data`` + ``events_received`` (frames as events; C mask; no UTF-8 check at
  this layer: websockets decodes text later, in its asyncio/sync connection)
* ``websockets Protocol, py mask``  the same with ``apply_mask`` swapped for websockets'
  own pure-Python ``websockets.utils.apply_mask``
* ``wsproto FrameProtocol``  ``wsproto.frame_protocol.FrameProtocol(client=False)``
  ``receive_bytes`` + ``received_frames`` (text decoded to str)
* ``wsproto Connection``  ``wsproto.connection.Connection(SERVER)`` ``receive_data`` + ``events``
* ``aiohttp WebSocketReader (C)``  aiohttp's Cython ``_websocket.reader_c.WebSocketReader``
  (its default) ``feed_data`` into a ``WebSocketDataQueue`` whose deque is cleared after each
  feed (messages, text decoded to str; a new reader + queue per 1000-frame buffer)
* ``picows WSProtocol (C)``  picows' Cython ``WSProtocol`` (server side, after a handshake)
  on a fake transport, fed with ``get_buffer`` / ``buffer_updated`` as asyncio does; a
  Python ``WSListener.on_ws_frame`` takes each payload as bytes and counts

Each is fed a buffer of ``--frames`` (default 1000) frames in chunks of 1000, 64
(about what one TCP read brings under load) and 1 frame(s). The table gives the
median over ``--rounds`` (>= 5) interleaved rounds of frames/s of CPU time
(``time.process_time``), us/frame, and the ratios to ``websockets Protocol`` and to
``cowboy Connection (C)`` at the same chunk size (> 1 is faster)::

    python bench/bench_parser.py             # about 65 s
    python bench/bench_parser.py --quick     # about 15 s
    python bench/bench_parser.py --profile   # cProfile of cowboy Connection (pure), top 10 by tottime
    python bench/bench_parser.py --callgrind # instructions/frame under valgrind: noise-free, ~4 min
    python -m pytest bench/bench_parser.py --benchmark-only   # pytest-benchmark, CPU timer
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from cowboy_ws.protocol import kernels  # noqa: E402
from cowboy_ws.protocol.connection import Connection  # noqa: E402
from cowboy_ws.protocol.frames import OP_TEXT, FrameParser, serialize_frame  # noqa: E402


def _import_pure_cowboy() -> tuple[type, type]:
    """A second copy of cowboy_ws imported with ``COWBOY_WS_PURE=1``: (FrameParser, Connection).

    The backend is chosen at import, so the pure one is a separate set of module
    objects living beside the ones above (which keep whatever backend the
    environment selected); ``sys.modules`` is put back afterwards.
    """
    saved = {k: m for k, m in sys.modules.items() if k == "cowboy_ws" or k.startswith("cowboy_ws.")}
    old_env = os.environ.get("COWBOY_WS_PURE")
    for k in saved:
        del sys.modules[k]
    os.environ["COWBOY_WS_PURE"] = "1"
    try:
        from cowboy_ws.protocol import kernels as pk
        from cowboy_ws.protocol.connection import Connection as PConnection
        from cowboy_ws.protocol.frames import FrameParser as PFrameParser
        assert pk.BACKEND == "python"
    finally:
        for k in [k for k in sys.modules if k == "cowboy_ws" or k.startswith("cowboy_ws.")]:
            del sys.modules[k]
        sys.modules.update(saved)
        if old_env is None:
            del os.environ["COWBOY_WS_PURE"]
        else:
            os.environ["COWBOY_WS_PURE"] = old_env
    return PFrameParser, PConnection


PureFrameParser, PureConnection = _import_pure_cowboy()

PAYLOAD = b"0123456789abcdef"  # 16 bytes, ASCII text
KEY = bytes.fromhex("37fa213d")
FRAME_LEN = 2 + 4 + len(PAYLOAD)  # header + mask key + payload: 22 bytes


def build_buffer(n: int) -> bytes:
    """``n`` masked 16-byte text frames, each with its own masking key as a client would."""
    out = bytearray()
    for i in range(n):
        key = ((i * 0x9E3779B1) & 0xFFFFFFFF).to_bytes(4, "big") if i else KEY
        out += serialize_frame(OP_TEXT, PAYLOAD, mask_key=key)
    assert len(out) == n * FRAME_LEN
    return bytes(out)


def chunks(buf: bytes, per_chunk: int) -> list[bytes]:
    step = per_chunk * FRAME_LEN
    return [buf[i:i + step] for i in range(0, len(buf), step)]


# --- the parsers: each factory returns a function that consumes a list of chunks and returns
# --- the number of frames/messages it got (so that the work is not optimised away and is checked)

def _need_c() -> None:
    if kernels.BACKEND != "c":
        raise ImportError(f"cowboy_ws C backend not active: {kernels.C_UNAVAILABLE}")


def cowboy_frameparser_c() -> Callable[[list[bytes]], int]:
    _need_c()
    return _cowboy_frameparser(FrameParser)


def cowboy_frameparser() -> Callable[[list[bytes]], int]:
    return _cowboy_frameparser(PureFrameParser)


def _cowboy_frameparser(cls: type) -> Callable[[list[bytes]], int]:
    p = cls(mask_required=True)
    feed = p.feed

    def run(parts: list[bytes]) -> int:
        n = 0
        for part in parts:
            n += len(feed(part))
        return n
    return run


def cowboy_connection_c() -> Callable[[list[bytes]], int]:
    _need_c()
    return _cowboy_connection(Connection)


def cowboy_connection() -> Callable[[list[bytes]], int]:
    return _cowboy_connection(PureConnection)


def _cowboy_connection(cls: type) -> Callable[[list[bytes]], int]:
    c = cls("server")
    receive = c.receive_data

    def run(parts: list[bytes]) -> int:
        n = 0
        for part in parts:
            for ev in receive(part):
                n += ev[0] == "text"
        return n
    return run


def websockets_frame_parse() -> Callable[[list[bytes]], int]:
    from websockets.frames import Frame
    from websockets.streams import StreamReader
    reader = StreamReader()
    parse = Frame.parse
    read_exact = reader.read_exact

    def run(parts: list[bytes]) -> int:
        n = 0
        for part in parts:
            reader.feed_data(part)
            while reader.buffer:  # chunks hold whole frames
                gen = parse(read_exact, mask=True, max_size=1 << 20, extensions=None)
                try:
                    next(gen)
                except StopIteration as stop:
                    n += stop.value.opcode == 1
                else:
                    raise AssertionError("partial frame")
        return n
    return run


def _websockets_protocol() -> Callable[[list[bytes]], int]:
    from websockets.protocol import SERVER, Protocol, State
    p = Protocol(SERVER)
    assert p.state is State.OPEN
    receive, events = p.receive_data, p.events_received

    def run(parts: list[bytes]) -> int:
        n = 0
        for part in parts:
            receive(part)
            n += len(events())
        return n
    return run


def websockets_protocol() -> Callable[[list[bytes]], int]:
    import websockets.frames
    from websockets.speedups import apply_mask
    websockets.frames.apply_mask = apply_mask
    return _websockets_protocol()


def websockets_protocol_pymask() -> Callable[[list[bytes]], int]:
    import websockets.frames
    import websockets.utils
    websockets.frames.apply_mask = websockets.utils.apply_mask
    inner = _websockets_protocol()

    def run(parts: list[bytes]) -> int:
        websockets.frames.apply_mask = websockets.utils.apply_mask
        try:
            return inner(parts)
        finally:
            from websockets.speedups import apply_mask
            websockets.frames.apply_mask = apply_mask
    return run


def wsproto_frameprotocol() -> Callable[[list[bytes]], int]:
    from wsproto.frame_protocol import FrameProtocol
    p = FrameProtocol(client=False, extensions=[])
    receive, frames = p.receive_bytes, p.received_frames

    def run(parts: list[bytes]) -> int:
        n = 0
        for part in parts:
            receive(part)
            for _ in frames():
                n += 1
        return n
    return run


def wsproto_connection() -> Callable[[list[bytes]], int]:
    from wsproto.connection import Connection as WConnection, ConnectionType
    c = WConnection(ConnectionType.SERVER)
    receive, events = c.receive_data, c.events

    def run(parts: list[bytes]) -> int:
        n = 0
        for part in parts:
            receive(part)
            for _ in events():
                n += 1
        return n
    return run


def aiohttp_reader() -> Callable[[list[bytes]], int]:
    """aiohttp's Cython ``reader_c.WebSocketReader`` (what aiohttp uses by default) into its queue."""
    from aiohttp._websocket.reader_c import WebSocketDataQueue, WebSocketReader

    class _Protocol:  # what the queue touches for flow control
        _reading_paused = False

        def pause_reading(self) -> None:
            raise AssertionError("queue limit reached")

        def resume_reading(self) -> None:
            pass
    proto = _Protocol()

    def run(parts: list[bytes]) -> int:
        # a fresh queue per buffer: the queue's byte count (_size, read-only) only shrinks
        # through the async read(); the buffer is cleared after every feed instead
        q = WebSocketDataQueue(proto, 1 << 30, loop=None)
        r = WebSocketReader(q, 1 << 20, False, True)  # max_msg_size, compress, decode_text
        feed, buffer = r.feed_data, q._buffer
        n = 0
        for part in parts:
            feed(part)
            n += len(buffer)
            buffer.clear()
        return n
    return run


def picows_protocol() -> Callable[[list[bytes]], int]:
    """picows' Cython ``WSProtocol`` (server side) on a fake transport, fed through
    ``get_buffer``/``buffer_updated`` as asyncio does; a Python ``WSListener`` counts the frames."""
    import asyncio
    import logging
    from picows import WSListener, WSMsgType
    from picows.picows import WSAutoPingStrategy, WSProtocol

    class _Sock:
        def setsockopt(self, *a: object) -> None:
            pass

        def getsockopt(self, *a: object) -> int:
            return 0

        def fileno(self) -> int:
            return -1

    class _Transport(asyncio.Transport):
        def __init__(self) -> None:
            super().__init__()
            self.out = bytearray()

        def get_extra_info(self, name: str, default: object = None) -> object:
            return {"socket": _Sock(), "peername": ("127.0.0.1", 1), "sockname": ("127.0.0.1", 2)}.get(name)

        def write(self, data: bytes) -> None:  # type: ignore[override]
            self.out += data

        def get_write_buffer_size(self) -> int:
            return 0

    class _Listener(WSListener):
        n = 0

        def on_ws_frame(self, transport: object, frame: object) -> None:
            if frame.msg_type == WSMsgType.TEXT:  # type: ignore[attr-defined]
                frame.get_payload_as_bytes()  # type: ignore[attr-defined]
                self.n += 1

    listener = _Listener()
    logger = logging.getLogger("bench.picows")
    logger.setLevel(logging.WARNING)

    async def make() -> WSProtocol:  # WSProtocol wants a running loop when built
        return WSProtocol(None, None, False, lambda req: listener, logger, True, None,
                          False, 10.0, 10.0, WSAutoPingStrategy.PING_WHEN_IDLE, True,
                          1 << 20, None, 64 * 1024)
    loop = asyncio.new_event_loop()  # kept open: the protocol holds it
    proto = loop.run_until_complete(make())
    transport = _Transport()
    proto.connection_made(transport)
    get_buffer, updated = proto.get_buffer, proto.buffer_updated

    def feed(data: bytes) -> None:
        buf = get_buffer(-1)
        n = len(data)
        if len(buf) >= n:  # the usual case: one copy, as the event loop's recv_into would do
            buf[:n] = data
            updated(n)
            return
        view = memoryview(data)
        while view:
            buf = get_buffer(-1)
            k = min(len(buf), len(view))
            buf[:k] = view[:k]
            updated(k)
            view = view[k:]
    feed(b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
         b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    if not transport.out.startswith(b"HTTP/1.1 101"):
        raise ImportError(f"picows handshake on a fake transport failed: {bytes(transport.out[:60])!r}")

    def run(parts: list[bytes]) -> int:
        listener.n = 0
        for part in parts:
            feed(part)
        return listener.n
    return run


PARSERS: dict[str, Callable[[], Callable[[list[bytes]], int]]] = {
    "cowboy FrameParser (C)": cowboy_frameparser_c,
    "cowboy Connection (C)": cowboy_connection_c,
    "cowboy FrameParser (pure)": cowboy_frameparser,
    "cowboy Connection (pure)": cowboy_connection,
    "websockets Frame.parse": websockets_frame_parse,
    "websockets Protocol": websockets_protocol,
    "websockets Protocol, py mask": websockets_protocol_pymask,
    "wsproto FrameProtocol": wsproto_frameprotocol,
    "wsproto Connection": wsproto_connection,
    "aiohttp WebSocketReader (C)": aiohttp_reader,
    "picows WSProtocol (C)": picows_protocol,
}
BASELINE = "websockets Protocol"
BASELINE_C = "cowboy Connection (C)"
CHUNKS = (1000, 64, 1)


def available() -> dict[str, Callable[[], Callable[[list[bytes]], int]]]:
    out = {}
    for name, factory in PARSERS.items():
        try:
            fn = factory()
            fn([build_buffer(2)])
        except Exception as exc:  # not installed, no C backend, or a peer's internals changed
            print(f"# skipping {name}: {type(exc).__name__}: {exc}", file=sys.stderr)
            continue
        out[name] = factory
    return out


def measure_once(run: Callable[[list[bytes]], int], parts: list[bytes], nframes: int, budget: float) -> float:
    """Frames/s of CPU time, one round: repeat the whole buffer until ``budget`` s of CPU."""
    reps = 0
    t0 = time.process_time()
    while True:
        got = run(parts)
        reps += 1
        t = time.process_time() - t0
        if t >= budget:
            break
    if got != nframes:
        raise AssertionError(f"expected {nframes} frames, got {got}")
    return reps * nframes / t


def bench(nframes: int, rounds: int, budget: float, chunk_sizes: tuple[int, ...]) -> None:
    buf = build_buffer(nframes)
    parsers = available()
    cases = [(name, c) for c in chunk_sizes for name in parsers]
    runs = {}
    for name, c in cases:  # one parser object per case, warmed up
        run = parsers[name]()
        parts = chunks(buf, c)
        measure_once(run, parts, nframes, budget / 4)
        runs[name, c] = (run, parts)
    results: dict[tuple[str, int], list[float]] = {k: [] for k in cases}
    for r in range(rounds):  # interleaved: every case once per round
        order = cases if r % 2 == 0 else cases[::-1]
        for key in order:
            run, parts = runs[key]
            results[key].append(measure_once(run, parts, nframes, budget))
    print(f"16-byte masked text frames, {nframes} per buffer; CPU time (process_time), "
          f"median of {rounds} interleaved rounds of >= {budget:.2f} s; kernels backend: {kernels.BACKEND}")
    print(f"vs ws = frames/s / frames/s of {BASELINE!r}, vs C = the same over {BASELINE_C!r}, "
          f"at the same chunk size (> 1: faster)")
    print(f"{'parser':<30} {'frames/feed':>11} {'frames/s':>11} {'us/frame':>9} {'vs ws':>6} {'vs C':>6} "
          f"{'spread':>7}")
    for c in chunk_sizes:
        base = statistics.median(results[BASELINE, c]) if (BASELINE, c) in results else None
        base_c = statistics.median(results[BASELINE_C, c]) if (BASELINE_C, c) in results else None
        for name in parsers:
            vals = results[name, c]
            med = statistics.median(vals)
            spread = (max(vals) - min(vals)) / med
            ratio = f"{med / base:6.2f}" if base else "     -"
            ratio_c = f"{med / base_c:6.2f}" if base_c else "     -"
            print(f"{name:<30} {c:>11} {med:>11,.0f} {1e6 / med:>9.3f} {ratio} {ratio_c} {spread:>6.0%}")
        print()


def profile(nframes: int) -> None:
    import cProfile
    import pstats
    buf = build_buffer(nframes)
    for label, factory, c in (("cowboy Connection, 64 frames/feed", cowboy_connection, 64),
                              ("cowboy Connection, 1 frame/feed", cowboy_connection, 1)):
        run = factory()
        parts = chunks(buf, c)
        pr = cProfile.Profile()  # default (wall) timer: cheaper than process_time
        pr.enable()
        for _ in range(200):
            run(parts)
        pr.disable()
        print(f"== {label} (pure): {200 * nframes} frames, top 10 by tottime")
        pstats.Stats(pr).sort_stats("tottime").print_stats(10)


def callgrind(nframes: int, chunk_sizes: str, quick: bool) -> None:
    """Instructions per frame (Ir) of each parser: a run with 1 + R buffers minus a run with 1 (warm-up)."""
    import re
    import shutil
    import subprocess
    import tempfile
    if not shutil.which("valgrind"):
        print("valgrind not found")
        return
    reps = 2 if quick else 5

    def ir(name: str, chunk: int, r: int) -> int:
        with tempfile.TemporaryDirectory() as d:
            out = subprocess.run(
                ["valgrind", "--tool=callgrind", f"--callgrind-out-file={d}/cg.out", sys.executable,
                 os.path.abspath(__file__), "--only", name, "--chunks", str(chunk), "--frames", str(nframes),
                 "--reps", str(r)], capture_output=True, text=True, timeout=600)
        m = re.search(r"Collected : (\d+)", out.stderr)
        if not m:
            raise RuntimeError(out.stderr[-2000:])
        return int(m.group(1))

    print(f"instructions per 16-byte masked text frame (callgrind Ir; {reps} x {nframes} frames "
          f"more than a warm-up run; ratio = websockets Protocol / this, > 1: fewer instructions)")
    for chunk in (int(c) for c in chunk_sizes.split(",")):
        rows = {}
        for name in available():
            rows[name] = (ir(name, chunk, 1 + reps) - ir(name, chunk, 1)) / (reps * nframes)
        base = rows.get(BASELINE)
        for name, v in rows.items():
            ratio = f"{base / v:6.2f}" if base else "     -"
            print(f"{name:<30} {chunk:>6} frames/feed {v:>9,.0f} Ir/frame {ratio}")
        print()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="about 15 s instead of about 65 s")
    ap.add_argument("--frames", type=int, default=1000, help="frames per buffer (default 1000)")
    ap.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 7, --quick 5)")
    ap.add_argument("--budget", type=float, default=None,
                    help="CPU seconds per case per round (default 0.25, --quick 0.08)")
    ap.add_argument("--chunks", default=None, help="comma-separated frames per feed (default 1000,64,1)")
    ap.add_argument("--profile", action="store_true", help="cProfile cowboy's Connection path instead")
    ap.add_argument("--callgrind", action="store_true",
                    help="instructions/frame of each parser under valgrind --tool=callgrind (slow, noise-free)")
    ap.add_argument("--only", default=None, help=argparse.SUPPRESS)  # one case, untimed: callgrind's child
    ap.add_argument("--reps", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.only is not None:
        run = PARSERS[args.only]()
        parts = chunks(build_buffer(args.frames), int(args.chunks or 64))
        for _ in range(args.reps):
            run(parts)
        return
    if args.callgrind:
        callgrind(args.frames, args.chunks or "64", args.quick)
        return
    if args.profile:
        profile(args.frames)
        return
    rounds = args.rounds or (5 if args.quick else 7)
    budget = args.budget or (0.08 if args.quick else 0.25)
    chunk_sizes = tuple(int(x) for x in args.chunks.split(",")) if args.chunks else CHUNKS
    chunk_sizes = tuple(c for c in chunk_sizes if 0 < c <= args.frames)
    bench(args.frames, max(rounds, 1), budget, chunk_sizes)


# --- pytest-benchmark: one call = one 1000-frame buffer, timed with process_time -----------------

cpu_time = pytest.mark.benchmark(timer=time.process_time)


@cpu_time
@pytest.mark.parametrize("chunk", CHUNKS, ids=[f"{c}-per-feed" for c in CHUNKS])
@pytest.mark.parametrize("name", list(PARSERS))
def test_bench_parse(benchmark, name: str, chunk: int) -> None:
    if name.startswith("websockets"):
        pytest.importorskip("websockets")
    if name.startswith("wsproto"):
        pytest.importorskip("wsproto")
    if name.startswith("aiohttp"):
        pytest.importorskip("aiohttp._websocket.reader_c")
    if name.startswith("picows"):
        pytest.importorskip("picows")
    if name.endswith("(C)") and name.startswith("cowboy") and kernels.BACKEND != "c":
        pytest.skip(f"cowboy_ws C backend not active: {kernels.C_UNAVAILABLE}")
    run = PARSERS[name]()
    parts = chunks(build_buffer(1000), chunk)
    benchmark.group = f"parse-16B-{chunk}-per-feed"
    benchmark.extra_info["frames"] = 1000
    assert benchmark(run, parts) == 1000


if __name__ == "__main__":
    main()
