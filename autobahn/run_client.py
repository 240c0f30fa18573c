"""Run the Autobahn|Testsuite in client mode against cowboy_ws.client, with kosoku's fuzzing server.

For each kernel backend present (pure Python always; the C backend when built) and each
category, this serves the cases with ``kosoku.run_fuzzingserver`` on a free loopback port and
starts the client under test in a subprocess (``COWBOY_WS_PURE=1`` for pure Python):
``python autobahn/run_client.py --drive URL``.  The client asks ``/getCaseCount``, runs every case
at ``/runCase?case=N&agent=cowboy_ws`` with permessage-deflate offered, echoing every text and
binary message back (the handler API by default, ``--api blocking`` for the blocking one), then
calls ``/updateReports?agent=cowboy_ws``.  Reports go to ``autobahn/reports/client-<backend>/``;
the run prints a table per category and exits non-zero unless every case is OK or INFORMATIONAL
(behaviour and close behaviour alike: no NON-STRICT, FAILED or UNIMPLEMENTED) and complete.

Usage::

    python autobahn/run_client.py                      # full suite (517 cases) on every backend
    python autobahn/run_client.py --quick              # categories 1-7, 9, 10 (301 cases)
    python autobahn/run_client.py --backend c --categories 12 13 --api blocking
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from run import ALL_CATEGORIES, CASE_COUNTS, QUICK_CATEGORIES, available_backends, print_table, verdict, write_reports  # noqa: E402

AGENT = "cowboy_ws"
SELF = str(Path(__file__).resolve())
#: What passes in client mode: the verdicts of the suite's own notion of conformance, strictly.
PASSING = {"OK", "INFORMATIONAL"}
#: Per-category timeout (s) for the whole category (server and client); 12.x/13.x are the long ones.
TIMEOUTS = {"9": 300, "12": 600, "13": 600}
DEFAULT_TIMEOUT = 120
#: One case's limit in the client (s): a case that hangs is stopped and the run goes on.
CASE_TIMEOUT = 90
#: Messages up to 64 MiB (9.x sends 16 MiB), as the server runner's --max-frame-size.
MAX_FRAME_SIZE = 64 << 20


# -- the client under test (the --drive subprocess) ---------------------------------------------


class Echo:
    """The handler API's echo client: every text and binary message back, as it came."""

    @staticmethod
    def websocket_handle(frame, state):
        if frame[0] == "text" or frame[0] == "binary":
            return ("reply", frame, state)
        return ("ok", state)

    @staticmethod
    def websocket_info(info, state):
        return ("ok", state)

    @staticmethod
    def terminate(reason, partial_req, state):
        state["reason"] = reason
        state["done"].set()


def run_case_handler(url: str) -> object:
    from cowboy_ws import client
    state = {"done": threading.Event(), "reason": None}
    pid = client.start(url, Echo, state, {"compress": True, "max_frame_size": MAX_FRAME_SIZE})
    if not state["done"].wait(CASE_TIMEOUT):
        client.stop(pid)
        state["done"].wait(10)
        return ("timeout", CASE_TIMEOUT)
    return state["reason"]


def run_case_blocking(url: str) -> object:
    from cowboy_ws import client
    deadline = time.monotonic() + CASE_TIMEOUT
    try:
        ws = client.connect(url, compress=True, max_frame_size=MAX_FRAME_SIZE, proxy=None)
    except Exception as exc:  # the case decides whether that was right
        return ("connect", exc)
    with ws:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return ("timeout", CASE_TIMEOUT)
            try:
                frame = ws.recv(left)
            except client.ConnectionClosed as closed:
                return closed.terminate_reason
            except TimeoutError:
                return ("timeout", CASE_TIMEOUT)
            try:
                ws.send(frame)
            except client.ConnectionClosed as closed:
                return closed.terminate_reason


def drive(base: str, api: str) -> int:
    """The client under test: count the cases, run each, ask for the reports."""
    from cowboy_ws import client
    with client.connect(f"{base}/getCaseCount", proxy=None) as ws:
        count = int(ws.recv(30)[1])
    run_case = run_case_handler if api == "handler" else run_case_blocking
    for case in range(1, count + 1):
        reason = run_case(f"{base}/runCase?case={case}&agent={AGENT}")
        if type(reason) is tuple and reason[0] == "timeout":
            print(f"case {case}: no end within {CASE_TIMEOUT} s", file=sys.stderr)
    try:
        with client.connect(f"{base}/updateReports?agent={AGENT}", proxy=None) as ws:
            for _ in ws:
                pass
    except client.ConnectionClosed:
        pass  # the fuzzing server drops this one without a Close
    return 0


# -- the runner ---------------------------------------------------------------------------------


def run_category(backend: str, category: str, api: str) -> tuple[list, str | None]:
    """Serve one category to a client subprocess; returns (results, error text or None)."""
    import kosoku

    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("COWBOY_WS_PURE", None)
    if backend == "python":
        env["COWBOY_WS_PURE"] = "1"
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        env.pop(name, None)
    timeout = TIMEOUTS.get(category.split(".")[0], DEFAULT_TIMEOUT)

    async def go() -> tuple[list, str | None]:
        cases = [category] if "." in category else [f"{category}.*"]  # a case id, or a whole category
        async with kosoku.run_fuzzingserver(cases, host="127.0.0.1", port=0) as server:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, SELF, "--drive", f"ws://127.0.0.1:{server.port}",
                "--api", api, cwd=str(ROOT), env=env, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE)
            error = None
            try:
                try:
                    results = await asyncio.wait_for(server.get_result(), timeout)
                except kosoku.FailureError as failure:
                    results = list(failure.results)
            except asyncio.TimeoutError:
                results, error = [], f"category {category} timed out after {timeout} s"
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except asyncio.TimeoutError:
                proc.kill()
                await proc.wait()
                error = error or f"category {category}: the client did not exit"
            stderr = (await proc.stderr.read()).decode(errors="replace") if proc.stderr else ""
            if proc.returncode != 0 and error is None:
                error = f"category {category}: the client exited with {proc.returncode}: {stderr[-2000:]}"
            elif stderr.strip():
                print(stderr.rstrip(), file=sys.stderr)
            return results, error

    return asyncio.run(go())


def run_backend(backend: str, categories: list[str], report_root: Path, api: str = "handler") -> dict:
    """Run ``categories`` in client mode on one backend; returns {'results', 'errors', 'failing', 'missing',
    'seconds'}."""
    started = time.monotonic()
    by_category: dict[str, list] = {}
    errors: list[str] = []
    for category in categories:
        results, error = run_category(backend, category, api)
        by_category[category] = results
        if error:
            errors.append(error)
    results = [r for rs in by_category.values() for r in rs]
    write_reports(results, report_root / f"client-{backend}")
    print_table(f"Autobahn|Testsuite, client mode: cowboy_ws.client ({api} API), backend {backend!r}", by_category,
                errors, expected_default=1)
    failing = sorted(r.case_id for r in results if not set(verdict(r)) <= PASSING)
    missing = {c: CASE_COUNTS.get(c, 1) - len(by_category[c]) for c in categories
               if len(by_category[c]) < CASE_COUNTS.get(c, 1)}  # a single case id counts 1
    for r in results:
        if r.case_id in failing:
            print(f"  {r.case_id}: {verdict(r)} {r.result} / {r.result_close}")
    return {"results": results, "errors": errors, "failing": failing, "missing": missing,
            "seconds": time.monotonic() - started}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["python", "c", "all"], default="all")
    parser.add_argument("--categories", nargs="+", default=None,
                        help="categories or case ids, e.g. 1 2 12 9.1.1 (default: all)")
    parser.add_argument("--quick", action="store_true", help="categories 1-7, 9, 10 only")
    parser.add_argument("--api", choices=["handler", "blocking"], default="handler",
                        help="the client API under test (default: handler)")
    parser.add_argument("--reports", type=Path, default=HERE / "reports")
    parser.add_argument("--drive", metavar="URL", help=argparse.SUPPRESS)  # the client subprocess
    args = parser.parse_args(argv)
    if args.drive:
        logging.basicConfig(level=logging.ERROR)
        return drive(args.drive, args.api)
    categories = args.categories or (QUICK_CATEGORIES if args.quick else ALL_CATEGORIES)
    backends = available_backends() if args.backend == "all" else [args.backend]
    status = 0
    for backend in backends:
        outcome = run_backend(backend, categories, args.reports, args.api)
        results = outcome["results"]
        n = len(results)
        nonstrict = sum(1 for r in results if r.behavior.value == "NON-STRICT")
        print(f"backend {backend}: {n - len(outcome['failing'])}/{n} cases OK or INFORMATIONAL; "
              f"NON-STRICT {nonstrict}; {outcome['seconds']:.0f} s; reports in {args.reports / ('client-' + backend)}/")
        if outcome["failing"]:
            print(f"backend {backend}: non-passing cases {outcome['failing']}")
            status = 1
        if outcome["errors"] or outcome["missing"]:
            print(f"backend {backend}: incomplete run: {outcome['errors']} missing {outcome['missing']}")
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
