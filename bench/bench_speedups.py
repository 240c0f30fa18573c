"""C kernels (``cowboy_ws._speedups``) against the pure-Python reference, measured in the same run.

Masking (RFC 6455 §5.3) in GB/s, UTF-8 validation (§8.1) in GB/s next to
``bytes.decode``, frame parsing (§5.2) in frames/s for 16-byte masked frames
(a client's small messages as a server receives them); each row with the C/pure
ratio.  Times are CPU time
(``time.process_time``), the median of interleaved rounds, so another process on
the machine disturbs them less than wall time would.

    python bench/bench_speedups.py             # the tables
    python bench/bench_speedups.py crossover   # where C starts to win (SMALL_MASK, PARSE_SMALL)
    python -m pytest bench/bench_speedups.py --benchmark-only   # pytest-benchmark, both backends

As a script it re-runs itself with ``MALLOC_TOP_PAD_=16777216`` (the steady
state of a long-running server's heap: see bench_kernels.py) unless set.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from cowboy_ws.protocol import parse  # noqa: E402
from cowboy_ws.protocol.frames import FrameParser, serialize_frame  # noqa: E402
from cowboy_ws.protocol.mask import mask as py_mask  # noqa: E402
from cowboy_ws.protocol.utf8 import Utf8Validator as PyUtf8Validator  # noqa: E402
from cowboy_ws.protocol.utf8 import validate_utf8 as py_validate_utf8  # noqa: E402

try:
    from cowboy_ws.protocol import _ckernels as C  # noqa: E402
except ImportError as exc:  # pragma: no cover
    C = None
    C_MISSING = str(exc)

KEY = bytes.fromhex("37fa213d")
MASK_SIZES = {"16 B": 16, "125 B": 125, "1 KiB": 1024, "64 KiB": 65536, "1 MiB": 1 << 20}
TEXTS = {
    "ascii": "The quick brown fox jumps over the lazy dog. ",
    "latin": "Größenmaßstäbe für Übergänge à la française. ",
    "cjk": "漢字かな交じり文は日本語の表記法である。",
}
TEXT_SIZES = {"1 KiB": 1024, "64 KiB": 65536, "1 MiB": 1 << 20}
BATCHES = (1, 10, 100, 1000)


def text(kind: str, n: int) -> bytes:
    unit = TEXTS[kind].encode()
    data = (unit * (n // len(unit) + 1))[:n]
    while not py_validate_utf8(data):  # do not cut a character
        data = data[:-1]
    return data


def masked_frames(count: int, size: int = 16) -> bytes:
    payload = bytes(range(size))
    return serialize_frame(0x2, payload, mask_key=KEY) * count


class PyParser(FrameParser):
    """The pure-Python FrameParser whatever the selected backend."""

    __slots__ = ()
    _parse = parse.parse_frames


if C is not None:
    class CParser(FrameParser):
        """The C batch parser at every size (the selected one hands short inputs to Python)."""

        __slots__ = ()
        _parse = C.parse_frames_c

    class HybridParser(FrameParser):
        __slots__ = ()
        _parse = C.parse_frames


def measure(fns: dict[str, Callable[[], object]], rounds: int = 7, budget: float = 0.04) -> dict[str, float]:
    """Seconds of CPU time per call of each function: median of ``rounds`` interleaved rounds."""
    reps = {}
    for name, fn in fns.items():
        t = time.process_time()
        while time.process_time() - t < budget:  # warm-up
            fn()
        r = 1
        while True:
            t = time.process_time()
            for _ in range(r):
                fn()
            el = time.process_time() - t
            if el >= budget / 4 or r > 1 << 22:
                break
            r *= 4
        reps[name] = max(1, int(r * budget / max(el, 1e-6)))
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            r = reps[name]
            t = time.process_time()
            for _ in range(r):
                fn()
            times[name].append((time.process_time() - t) / r)
    return {name: statistics.median(ts) for name, ts in times.items()}


def _row(label: str, values: list[str]) -> str:
    return f"  {label:<14}" + "".join(f"{v:>12}" for v in values)


def bench_mask() -> None:
    print("mask (RFC 6455 §5.3), GB/s")
    print(_row("size", ["pure", "C mask", "C/pure"]))
    for label, n in MASK_SIZES.items():
        data = os.urandom(n)
        t = measure({"pure": lambda: py_mask(data, KEY), "c": lambda: C.mask(data, KEY)})
        gb = {k: n / v / 1e9 for k, v in t.items()}
        print(_row(label, [f"{gb['pure']:.3f}", f"{gb['c']:.3f}", f"{gb['c'] / gb['pure']:.1f}x"]))
    print(f"  (C mask XORs one big integer below SMALL_MASK = {C.SMALL_MASK} bytes, as pure Python does:"
          " the call into C costs more there)")


def bench_utf8() -> None:
    print("UTF-8 validation (RFC 6455 §8.1), GB/s: whole message, Utf8Validator.feed(data, final=True)")
    print(_row("text", ["decode", "pure feed", "C feed", "C validate", "C/pure", "C/decode"]))
    for kind in TEXTS:
        for label, n in TEXT_SIZES.items():
            data = text(kind, n)
            pv, cv = PyUtf8Validator(), C.Utf8Validator()
            t = measure({"decode": lambda: data.decode("utf-8"), "pure": lambda: pv.feed(data, True),
                         "c": lambda: cv.feed(data, True), "cval": lambda: C.validate_utf8(data)})
            gb = {k: len(data) / v / 1e9 for k, v in t.items()}
            print(_row(f"{kind} {label}", [f"{gb['decode']:.2f}", f"{gb['pure']:.2f}", f"{gb['c']:.2f}",
                                           f"{gb['cval']:.2f}", f"{gb['c'] / gb['pure']:.1f}x",
                                           f"{gb['c'] / gb['decode']:.1f}x"]))
    print("  (ASCII: both sides end in a word-at-a-time scan; the C DFA runs 4 chains at once on non-ASCII text)")


def bench_parse() -> None:
    print("frame parsing (RFC 6455 §5.2), 16-byte masked frames, million frames/s (server side, one feed per batch)")
    print(_row("frames/feed", ["pure", "C batch", "C/pure", "selected", "sel/pure"]))
    for count in BATCHES:
        wire = masked_frames(count)
        pp, cp, hp = PyParser(mask_required=True), CParser(mask_required=True), HybridParser(mask_required=True)
        t = measure({"pure": lambda: pp.feed(wire), "c": lambda: cp.feed(wire),
                     "h": lambda: hp.feed(wire)})
        fps = {k: count / v / 1e6 for k, v in t.items()}
        print(_row(str(count), [f"{fps['pure']:.2f}", f"{fps['c']:.2f}", f"{fps['c'] / fps['pure']:.1f}x",
                                f"{fps['h']:.2f}", f"{fps['h'] / fps['pure']:.1f}x"]))
    print(f"  (selected = what kernels selects as FrameParser._parse: inputs under PARSE_SMALL = {C.PARSE_SMALL}"
          " bytes go to the pure parser)")


def crossover() -> None:
    print("mask: ns per call, C kernel vs the big-integer XOR (SMALL_MASK now %d)" % C.SMALL_MASK)
    saved = C.SMALL_MASK
    try:
        for n in (16, 32, 64, 96, 128, 160, 192, 256, 384):
            data = os.urandom(n)
            C.SMALL_MASK = 0
            tc = measure({"c": lambda: C.mask(data, KEY)})["c"]
            C.SMALL_MASK = 1 << 30
            ti = measure({"i": lambda: C.mask(data, KEY)})["i"]
            print(f"  {n:>5} B  C {tc * 1e9:7.0f}  int {ti * 1e9:7.0f}")
    finally:
        C.SMALL_MASK = saved
    print("parse: ns per feed, C batch vs pure (PARSE_SMALL now %d)" % C.PARSE_SMALL)
    for count, size in ((1, 16), (2, 16), (3, 16), (4, 16), (6, 16), (1, 64), (1, 100), (1, 125), (1, 200)):
        wire = masked_frames(count, size)
        pp, cp = PyParser(mask_required=True), CParser(mask_required=True)
        t = measure({"pure": lambda: pp.feed(wire), "c": lambda: cp.feed(wire)})
        print(f"  {count} x {size:>3} B ({len(wire):>4} B)  C {t['c'] * 1e9:7.0f}  pure {t['pure'] * 1e9:7.0f}")


def main(argv: list[str]) -> None:
    if C is None:
        sys.exit(f"the C extension is not built ({C_MISSING}): pip install -e .")
    if "MALLOC_TOP_PAD_" not in os.environ:
        os.execve(sys.executable, [sys.executable, *sys.argv],
                  dict(os.environ, MALLOC_TOP_PAD_=str(16 << 20)))
    print(f"python {sys.version.split()[0]}, CPU time, median of 7 interleaved rounds")
    if argv[:1] == ["crossover"]:
        crossover()
        return
    bench_mask()
    bench_utf8()
    bench_parse()


# --- pytest-benchmark ----------------------------------------------------------------------------

cpu_time = pytest.mark.benchmark(timer=time.process_time)
needs_c = pytest.mark.skipif(C is None, reason="the C extension cowboy_ws._speedups is not built")
BACKENDS = ["python", "c"]


@cpu_time
@needs_c
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("size", MASK_SIZES.values(), ids=MASK_SIZES.keys())
def test_bench_mask(benchmark, size: int, backend: str) -> None:
    data = os.urandom(size)
    benchmark.group = f"mask {size} B"
    benchmark.extra_info["bytes"] = size
    fn = py_mask if backend == "python" else C.mask
    assert benchmark(fn, data, KEY) == py_mask(data, KEY)


@cpu_time
@needs_c
@pytest.mark.parametrize("backend", ["decode", *BACKENDS])
@pytest.mark.parametrize("kind", ["ascii", "cjk"])
def test_bench_utf8(benchmark, kind: str, backend: str) -> None:
    data = text(kind, 65536)
    benchmark.group = f"utf8 {kind} 64 KiB"
    benchmark.extra_info["bytes"] = len(data)
    if backend == "decode":
        benchmark(data.decode, "utf-8")
    else:
        v = PyUtf8Validator() if backend == "python" else C.Utf8Validator()
        benchmark(v.feed, data, True)


@cpu_time
@needs_c
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("count", BATCHES)
def test_bench_parse(benchmark, count: int, backend: str) -> None:
    wire = masked_frames(count)
    parser = (PyParser if backend == "python" else CParser)(mask_required=True)
    benchmark.group = f"parse {count} x 16 B masked"
    benchmark.extra_info["frames"] = count
    assert len(benchmark(parser.feed, wire)) == count


if __name__ == "__main__":
    main(sys.argv[1:])
