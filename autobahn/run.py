"""Run the Autobahn|Testsuite fuzzing client against cowboy_ws, with kosoku.

For each kernel backend present (pure Python always; the C backend when built)
this starts ``python -m cowboy_ws --port P --compress --max-frame-size 67108864``
on a free loopback port, drives the suite one category per kosoku call (each
under a timeout: kosoku has no watchdog, and a partial run keeps what it got),
writes Autobahn-format reports under ``autobahn/reports/<backend>/``, prints a
table per category and exits non-zero unless every case is OK or INFORMATIONAL
(behaviour and close behaviour alike) and the set of non-passing cases equals
``autobahn/expected_failures.json`` (which must stay empty).

Usage::

    python autobahn/run.py                      # full suite (517 cases) on every backend
    python autobahn/run.py --quick              # categories 1-7, 9, 10 (301 cases)
    python autobahn/run.py --backend python --categories 12 13
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
ALL_CATEGORIES = ["1", "2", "3", "4", "5", "6", "7", "9", "10", "12", "13"]
QUICK_CATEGORIES = ["1", "2", "3", "4", "5", "6", "7", "9", "10"]
#: Cases per category in the Autobahn|Testsuite (517 in all).
CASE_COUNTS = {"1": 16, "2": 11, "3": 7, "4": 10, "5": 20, "6": 145, "7": 37, "9": 54, "10": 1,
               "12": 90, "13": 126}
PASSING = {"OK", "INFORMATIONAL"}
BEHAVIORS = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED"]
#: Per-category timeout (s): 12.x/13.x (compression) take minutes on 2 cores.
TIMEOUTS = {"9": 300, "12": 600, "13": 600}
DEFAULT_TIMEOUT = 120


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def available_backends() -> list[str]:
    """"python" always; "c" when the C speedups import."""
    out = subprocess.run([sys.executable, "-c", "import cowboy_ws; print(cowboy_ws.backend())"],
                         capture_output=True, text=True, cwd=ROOT, timeout=60)
    return ["python", "c"] if out.stdout.strip() == "c" else ["python"]


class ServerProcess:
    """``python -m cowboy_ws`` in a subprocess on a free port, for one backend."""

    def __init__(self, backend: str) -> None:
        self.backend = backend
        self.port = free_port()
        env = dict(os.environ)
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        if backend == "python":
            env["COWBOY_WS_PURE"] = "1"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cowboy_ws", "--host", "127.0.0.1", "--port", str(self.port),
             "--compress", "--max-frame-size", "67108864"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.proc.stderr.read()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("server did not start listening within 30 s")

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.proc.stderr:
            self.proc.stderr.close()


def run_category(url: str, category: str, concurrency: int) -> tuple[list, str | None]:
    """Run one category; returns (results, error text or None)."""
    import kosoku

    async def go() -> list:
        try:
            return await kosoku.run_fuzzingclient(url, [f"{category}.*"], None, concurrency)
        except kosoku.FailureError as failure:
            return list(failure.results)

    timeout = TIMEOUTS.get(category, DEFAULT_TIMEOUT)
    try:
        return asyncio.run(asyncio.wait_for(go(), timeout)), None
    except asyncio.TimeoutError:
        return [], f"category {category} timed out after {timeout} s"


def verdict(result) -> tuple[str, str]:
    return result.behavior.value, result.behavior_close.value


def print_table(title: str, by_category: dict[str, list], errors: list[str], expected_default: int = 0) -> None:
    """The verdicts per category and in total; ``expected_default``: how many cases a key not in CASE_COUNTS
    (a single case id, as run_client.py takes) stands for."""
    print(f"\n{title}")
    header = f"{'category':>8} {'cases':>5} " + " ".join(f"{b:>13}" for b in BEHAVIORS) + "   close verdicts"
    print(header)
    print("-" * len(header))
    totals: collections.Counter = collections.Counter()
    close_totals: collections.Counter = collections.Counter()
    for category, results in by_category.items():
        counts = collections.Counter(verdict(r)[0] for r in results)
        closes = collections.Counter(verdict(r)[1] for r in results)
        totals.update(counts)
        close_totals.update(closes)
        missing = CASE_COUNTS.get(category, expected_default) - len(results)
        extra = f"   (missing {missing})" if missing > 0 else ""
        print(f"{category:>8} {len(results):>5} " + " ".join(f"{counts.get(b, 0):>13}" for b in BEHAVIORS)
              + "   " + ", ".join(f"{k} {v}" for k, v in sorted(closes.items())) + extra)
    print("-" * len(header))
    n = sum(len(r) for r in by_category.values())
    print(f"{'total':>8} {n:>5} " + " ".join(f"{totals.get(b, 0):>13}" for b in BEHAVIORS)
          + "   " + ", ".join(f"{k} {v}" for k, v in sorted(close_totals.items())))
    for error in errors:
        print(f"ERROR: {error}")


def write_reports(results: list, outdir: Path) -> None:
    outdir.mkdir(parents=True, exist_ok=True)
    try:
        from kosoku._report import write_reports as kosoku_write
    except ImportError:  # the report writer is kosoku's internal API: keep a JSON summary regardless
        kosoku_write = None
    if kosoku_write is not None:
        kosoku_write(results, str(outdir))
    summary = {r.case_id: {"behavior": r.behavior.value, "behaviorClose": r.behavior_close.value,
                           "duration": r.duration} for r in results}
    (outdir / "summary.json").write_text(json.dumps(summary, indent=1, sort_keys=True))


def run_backend(backend: str, categories: list[str], concurrency: int, report_root: Path) -> dict:
    """Run ``categories`` against one backend; returns {'results', 'errors', 'failing', 'missing'}."""
    server = ServerProcess(backend)
    by_category: dict[str, list] = {}
    errors: list[str] = []
    try:
        for category in categories:
            results, error = run_category(server.url, category, concurrency)
            by_category[category] = results
            if error:
                errors.append(error)
            if not server.alive():
                errors.append(f"server died during category {category}")
                server = ServerProcess(backend)
    finally:
        server.stop()
    results = [r for rs in by_category.values() for r in rs]
    write_reports(results, report_root / backend)
    print_table(f"Autobahn|Testsuite on cowboy_ws, backend {backend!r}", by_category, errors)
    failing = sorted(r.case_id for r in results if not set(verdict(r)) <= PASSING)
    missing = {c: CASE_COUNTS[c] - len(by_category[c]) for c in categories
               if len(by_category[c]) < CASE_COUNTS[c]}
    for r in results:
        if r.case_id in failing:
            print(f"  {r.case_id}: {verdict(r)} {r.result} / {r.result_close}")
    return {"results": results, "errors": errors, "failing": failing, "missing": missing}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["python", "c", "all"], default="all")
    parser.add_argument("--categories", nargs="+", default=None, help="e.g. 1 2 12 (default: all)")
    parser.add_argument("--quick", action="store_true", help="categories 1-7, 9, 10 only")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--reports", type=Path, default=HERE / "reports")
    args = parser.parse_args(argv)
    categories = args.categories or (QUICK_CATEGORIES if args.quick else ALL_CATEGORIES)
    backends = available_backends() if args.backend == "all" else [args.backend]
    expected = set(json.loads((HERE / "expected_failures.json").read_text()))
    status = 0
    for backend in backends:
        outcome = run_backend(backend, categories, args.concurrency, args.reports)
        failing = set(outcome["failing"])
        n = len(outcome["results"])
        print(f"backend {backend}: {n - len(failing)}/{n} cases OK or INFORMATIONAL; "
              f"NON-STRICT {sum(1 for r in outcome['results'] if r.behavior.value == 'NON-STRICT')}; "
              f"reports in {args.reports / backend}/")
        if failing != expected:
            print(f"backend {backend}: non-passing cases {sorted(failing)} differ from "
                  f"expected_failures.json {sorted(expected)}")
            status = 1
        if outcome["errors"] or outcome["missing"]:
            print(f"backend {backend}: incomplete run: {outcome['errors']} missing {outcome['missing']}")
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
