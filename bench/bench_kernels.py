"""Throughput of the pure-Python kernels: masking (RFC 6455 §5.3) and UTF-8 validation (§8.1).

Run as a script for a table in GB/s of CPU time (``time.process_time``, median of
several rounds)::

    python bench/bench_kernels.py            # mask and utf8 throughput
    python bench/bench_kernels.py crossover  # int-XOR vs translate, to set TRANSLATE_THRESHOLD
    python bench/bench_kernels.py utf8-sizes # validate_utf8 in us per call, pure and C, 64 B .. 64 KiB

or under pytest-benchmark (also timed with ``time.process_time``)::

    python -m pytest bench/bench_kernels.py --benchmark-only

Payloads over a few hundred KiB depend on malloc: with glibc's defaults each call
gives its buffers back to the OS and page-faults them in again (mask at 1 MiB runs
at about 0.5 GB/s instead of 0.9). ``MALLOC_TOP_PAD_=16777216`` in the environment
gives the steady state of a long-running server, which has a grown heap anyway.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from cowboy_ws.protocol import mask as mask_mod  # noqa: E402
from cowboy_ws.protocol.mask import mask  # noqa: E402
from cowboy_ws.protocol.utf8 import Utf8Validator, validate_utf8  # noqa: E402

KEY = bytes.fromhex("37fa213d")
MASK_SIZES = {"16B": 16, "125B": 125, "1KiB": 1024, "64KiB": 65536, "1MiB": 1 << 20}


def _text(kind: str, n: int) -> bytes:
    unit = {
        "ascii": "The quick brown fox jumps over the lazy dog. ",
        "latin": "Größenmaßstäbe für Übergänge à la française. ",
        "cjk": "漢字かな交じり文は日本語の表記法である。",
        "emoji": "😀🎉🚀✨",
    }[kind].encode("utf-8")
    data = unit * (n // len(unit) + 1)
    data = data[:n]
    while not validate_utf8(data):  # do not cut a character
        data = data[:-1]
    return data


UTF8_CASES = {f"{k}-{s}": (k, n) for k in ("ascii", "latin", "cjk", "emoji") for s, n in (("1KiB", 1024), ("64KiB", 65536), ("1MiB", 1 << 20))}


def _mask_int(data: bytes, key: bytes) -> bytes:
    """The small-payload path of :func:`mask` forced at any size."""
    n = len(data)
    return (int.from_bytes(data, "little") ^ int.from_bytes((key * ((n >> 2) + 1))[:n], "little")).to_bytes(n, "little")


def _mask_translate(data: bytes, key: bytes) -> bytes:
    """The large-payload path of :func:`mask` forced at any size."""
    t = mask_mod._TABLES
    out = bytearray(data)
    out[0::4] = out[0::4].translate(t[key[0]])
    out[1::4] = out[1::4].translate(t[key[1]])
    out[2::4] = out[2::4].translate(t[key[2]])
    out[3::4] = out[3::4].translate(t[key[3]])
    return bytes(out)


def _feed_fragments(data: bytes, size: int = 4096) -> None:
    v = Utf8Validator()
    mv = memoryview(data)
    for i in range(0, len(data), size):
        v.feed(mv[i : i + size])
    v.feed(b"", final=True)


def measure(fn: Callable[[], object], nbytes: int, rounds: int = 7, budget: float = 0.05) -> float:
    """GB/s of CPU time: median over ``rounds`` of a loop sized to take about ``budget`` seconds.

    A warm-up of about ``2 * budget`` comes first.
    """
    t = time.process_time()
    while time.process_time() - t < 2 * budget:
        fn()
    reps = 1
    while True:
        t = time.process_time()
        for _ in range(reps):
            fn()
        if time.process_time() - t >= budget / 10 or reps > 1 << 20:
            break
        reps *= 4
    reps = max(1, int(reps * budget / max(time.process_time() - t, 1e-6) / 10))
    times = []
    for _ in range(rounds):
        t = time.process_time()
        for _ in range(reps):
            fn()
        times.append((time.process_time() - t) / reps)
    return nbytes / statistics.median(times) / 1e9


UTF8_SIZES = {"64B": 64, "1KiB": 1024, "8KiB": 8192, "64KiB": 65536}


def utf8_sizes() -> None:
    """validate_utf8 per call, in us (timeit, min of 5 repeats, in-process, hot cache), for each backend:
    ASCII and 2-byte ("é") text at 64 B .. 64 KiB (RFC 6455 §8.1: every text payload is validated)."""
    import timeit

    backends = [("python", validate_utf8)]
    try:
        from cowboy_ws.protocol import _ckernels
    except ImportError as exc:
        print(f"(C backend not built: {exc})")
    else:
        backends.append(("c", _ckernels.validate_utf8))
    print("validate_utf8, us per call (timeit: min of 5 repeats)")
    print(f"  {'case':>14} " + " ".join(f"{name:>8}" for name, _ in backends))
    for kind, unit in (("ascii", b"a"), ("e-acute", "é".encode())):
        for size, n in UTF8_SIZES.items():
            d = unit * (n // len(unit))
            number = 100_000 if n <= 1024 else 10_000
            cols = [min(timeit.repeat(lambda f=f, d=d: f(d), number=number, repeat=5)) / number * 1e6
                    for _, f in backends]
            print(f"  {kind + '-' + size:>14} " + " ".join(f"{c:8.3f}" for c in cols))


def main(argv: list[str]) -> None:
    if argv[:1] == ["utf8-sizes"]:
        utf8_sizes()
        return
    if argv[:1] == ["crossover"]:
        print(f"{'size':>8} {'int-XOR':>9} {'translate':>9}  GB/s (threshold now {mask_mod.TRANSLATE_THRESHOLD})")
        for n in (64, 125, 256, 384, 448, 512, 576, 640, 768, 1024, 4096, 32768, 65536, 1 << 20):
            d = os.urandom(n)
            a = measure(lambda: _mask_int(d, KEY), n)
            b = measure(lambda: _mask_translate(d, KEY), n)
            print(f"{n:>8} {a:>9.3f} {b:>9.3f}")
        return
    print("mask (RFC 6455 §5.3), GB/s of CPU time")
    for name, n in MASK_SIZES.items():
        d = os.urandom(n)
        print(f"  {name:>7}: {measure(lambda: mask(d, KEY), n):7.3f}")
    print("utf8 (RFC 6455 §8.1), GB/s of CPU time: Utf8Validator.feed(final=True) / validate_utf8 / 4 KiB fragments")
    for name, (kind, n) in UTF8_CASES.items():
        d = _text(kind, n)
        v = Utf8Validator()
        a = measure(lambda: v.feed(d, True), len(d))
        b = measure(lambda: validate_utf8(d), len(d))
        c = measure(lambda: _feed_fragments(d), len(d))
        print(f"  {name:>12}: {a:7.3f} {b:7.3f} {c:7.3f}")


# --- pytest-benchmark ----------------------------------------------------------------------------

cpu_time = pytest.mark.benchmark(timer=time.process_time)


@cpu_time
@pytest.mark.parametrize("size", MASK_SIZES.values(), ids=MASK_SIZES.keys())
def test_bench_mask(benchmark, size: int) -> None:
    data = os.urandom(size)
    benchmark.group = "mask"
    benchmark.extra_info["bytes"] = size
    assert benchmark(mask, data, KEY) == mask(data, KEY)


@cpu_time
@pytest.mark.parametrize("case", UTF8_CASES.values(), ids=UTF8_CASES.keys())
def test_bench_utf8_feed(benchmark, case: tuple[str, int]) -> None:
    data = _text(*case)
    v = Utf8Validator()
    benchmark.group = "utf8-feed"
    benchmark.extra_info["bytes"] = len(data)
    benchmark(v.feed, data, True)


@cpu_time
@pytest.mark.parametrize("case", UTF8_CASES.values(), ids=UTF8_CASES.keys())
def test_bench_utf8_fragments(benchmark, case: tuple[str, int]) -> None:
    data = _text(*case)
    benchmark.group = "utf8-fragments-4KiB"
    benchmark.extra_info["bytes"] = len(data)
    benchmark(_feed_fragments, data)


if __name__ == "__main__":
    main(sys.argv[1:])
