"""RSS per idle *compressing* connection for each permessage-deflate setting, against websockets.

Each measurement starts a fresh server (bench/_servers.py, pinned to one core), opens one warm-up
connection, then ``--conns`` connections that each offer ``permessage-deflate;
client_max_window_bits`` and echo ``--messages`` ~1 KiB JSON documents (scenario 3's pool,
compressed by the client with context takeover), so that every compressor and decompressor has
been through a few KiB of data, and reads the server's RSS (after ``gc.collect()``):
KiB/conn = (RSS after the connections - RSS after the warm-up) / conns.  cowboy_ws is measured
awake and hibernated (the handler returns ``hibernate``), with its default settings and with
scenario 3's variants (``echo.DEFLATE_VARIANTS``); websockets with its defaults (context takeover,
window 12, memory level 5, zlib level 6).  Medians of interleaved rounds, [min - max].

    python bench/deflate_memory.py                 # ~5 minutes on 2 cores
    python bench/deflate_memory.py --conns 500 --rounds 1
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from _servers import ServerProc, cowboy_backend_c_available, env_for  # noqa: E402
from echo import (  # noqa: E402
    DEFLATE_OFFER,
    DEFLATE_VARIANTS,
    OP_TEXT,
    DeflateStream,
    _read_frame,
    close_all,
    json_pool,
    ws_open_many,
)


def echo_all(socks: list[socket.socket], stream: DeflateStream, k: int, batch: int = 256) -> None:
    """Every connection sends the stream's first ``k`` messages, one at a time, and reads each echo."""
    frames = stream.frames(0)
    for start in range(0, len(socks), batch):
        group = socks[start:start + batch]
        for i in range(k):
            frame = frames(i, 1)
            for s in group:
                s.sendall(frame)
            for s in group:
                b0, _payload = _read_frame(s)
                if b0 & 0x0F != OP_TEXT:
                    raise ConnectionError(f"unexpected reply frame type {b0:#x}")


def measure(label: str, script: str, pure: bool, opts: dict | None, hibernate: bool, n: int, k: int,
            core: int | None, pool: list[bytes]) -> dict:
    extra = {"BENCH_DEFLATE_OPTS": json.dumps(opts)} if opts else {}
    srv = ServerProc(label, script, env_for(pure=pure, compress=True, hibernate=hibernate, extra=extra), core)
    socks: list[socket.socket] = []
    try:
        warm, neg = ws_open_many(srv.port, "/", 1, DEFLATE_OFFER)
        assert neg is not None
        stream = DeflateStream.get(neg, pool, k)
        echo_all(warm, stream, k)
        close_all(warm)
        time.sleep(0.3)
        srv.gc()
        rss0 = srv.rss_kib()
        socks, neg = ws_open_many(srv.port, "/", n, DEFLATE_OFFER, deadline=time.monotonic() + 300)
        assert neg is not None
        echo_all(socks, DeflateStream.get(neg, pool, k), k)
        time.sleep(0.3)
        srv.gc()
        rssn = srv.rss_kib()
        return {"kib_per_conn": (rssn - rss0) / n, "rss0": rss0, "rssn": rssn, "neg": neg.header}
    finally:
        srv.stop()
        close_all(socks)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--conns", type=int, default=2000, help="connections per measurement (default 2000)")
    ap.add_argument("--messages", type=int, default=8, help="JSON messages each connection echoes (default 8)")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds (default 2)")
    ap.add_argument("--json", metavar="FILE", help="write every measurement to FILE")
    args = ap.parse_args(argv)
    if args.conns < 1 or args.messages < 1 or args.rounds < 1:
        ap.error("--conns, --messages and --rounds must be at least 1")
    cores = sorted(os.sched_getaffinity(0))
    server_core = cores[0] if len(cores) >= 2 else None
    if len(cores) >= 2:
        os.sched_setaffinity(0, {cores[1]})
    has_c, note = cowboy_backend_c_available()
    base = "cowboy_ws C" if has_c else "cowboy_ws pure"
    short = "C" if has_c else "pure"
    pool = json_pool()
    # label, script, pure, deflate_opts, hibernate
    variants: list[tuple[str, str, bool, dict | None, bool]] = []
    for suffix, opts in [("", None)] + [(" " + s, o) for s, o in DEFLATE_VARIANTS.items()]:
        for hib in (False, True):
            name = (base if not suffix else short + suffix) + (" hibernate" if hib else "")
            variants.append((name, "cowboy_ws", not has_c, opts, hib))
    try:
        __import__("websockets")
        variants.append(("websockets", "websockets", False, None, False))
    except ImportError as exc:
        print(f"websockets skipped: {exc}")
    print(f"bench/deflate_memory.py: {args.conns} connections x {args.messages} JSON messages each, "
          f"{args.rounds} rounds; {note}")
    results: dict[str, list[dict]] = {v[0]: [] for v in variants}
    errors: dict[str, str] = {}
    for r in range(args.rounds):
        for v in (variants if r % 2 == 0 else variants[::-1]):
            if v[0] in errors:
                continue
            try:
                results[v[0]].append(measure(*v, args.conns, args.messages, server_core, pool))
            except Exception as exc:
                errors[v[0]] = f"{type(exc).__name__}: {exc}"
        print(f"  round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    ws = [x["kib_per_conn"] for x in results.get("websockets", [])]
    print(f"{'server / setting':<34} {'KiB/conn':>22} {'vs websockets':>13}  answered")
    for name, *_ in variants:
        runs = results[name]
        if not runs:
            print(f"{name:<34} failed: {errors.get(name)}")
            continue
        per = [x["kib_per_conn"] for x in runs]
        vs = f"{statistics.median(per) / statistics.median(ws):.2f}x" if ws else "-"
        print(f"{name:<34} {statistics.median(per):>7.1f} [{min(per):.1f} - {max(per):.1f}]".ljust(57)
              + f" {vs:>13}  {runs[0]['neg']!r}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "results": results, "errors": errors}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
