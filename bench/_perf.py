"""Where a server's CPU goes: ``perf record`` of its process over one measured run (``echo.py --perf``).

Linux ``perf`` samples the server process (user and kernel side: it needs
``kernel.perf_event_paranoid`` <= 1 or root for the kernel's symbols) during the
last round of a scenario; the samples are split by where the code lives (the
kernel, the CPython interpreter, the server's compiled extensions, libc) and by
symbol, and each share is turned into microseconds per message with the CPU per
message measured in the same run (``getrusage``, perf's own overhead included:
a few percent at 999 Hz).  The point is the split, not the absolute figures:
which part a faster server would have to shrink.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from typing import Any

#: Samples per second: low enough that perf's overhead stays small, high enough for ~1 s runs.
FREQ = 999


def perf_missing() -> str | None:
    """Why ``perf record`` cannot sample another process here, or None when it can."""
    if shutil.which("perf") is None:
        return "perf is not installed"
    try:
        with open("/proc/sys/kernel/perf_event_paranoid") as f:
            paranoid = int(f.read())
    except (OSError, ValueError):
        paranoid = 2
    if paranoid > 1 and os.geteuid() != 0:
        return f"kernel.perf_event_paranoid is {paranoid} (needs <= 1, or root)"
    return None


def category(dso: str) -> str:
    """The part of the process a shared object stands for."""
    if dso.startswith("[kernel"):
        return "kernel"
    if dso.startswith("libpython"):
        return "interpreter"
    if dso.startswith(("libc.", "libc-", "ld-linux")):
        return "libc"
    if dso.endswith(".so") or ".so." in dso:
        return "extensions"
    return "other"


CATEGORIES = ("kernel", "interpreter", "extensions", "libc", "other")


class PerfRecorder:
    """Records one run per server label; :meth:`report` prints the split."""

    def __init__(self, top: int) -> None:
        self.top = top
        self.dir = tempfile.mkdtemp(prefix="bench-perf-")
        self.files: dict[str, str] = {}

    def record(self, key: str, pid: int, fn: Callable[[], Any]) -> Any:
        """Run ``fn()`` with ``perf record`` attached to ``pid``; the samples are kept under ``key``."""
        path = os.path.join(self.dir, f"{len(self.files)}.data")
        proc = subprocess.Popen(["perf", "record", "-q", "-F", str(FREQ), "-p", str(pid), "-o", path],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.3)  # attached before the measured run starts (not inside its clock)
        try:
            return fn()
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            self.files[key] = path

    def split(self, key: str) -> tuple[dict[str, float], list[tuple[float, str, str]]]:
        """Shares (0-1) by category, and the symbols ``(share, category, name)``, largest first."""
        out = subprocess.run(["perf", "report", "-i", self.files[key], "--stdio", "-q", "--sort", "dso,sym",
                              "-t", "|"], capture_output=True, text=True, timeout=120, check=False).stdout
        shares = dict.fromkeys(CATEGORIES, 0.0)
        symbols: list[tuple[float, str, str]] = []
        for line in out.splitlines():
            parts = [p.strip() for p in line.split("|")]
            if len(parts) != 3 or not parts[0].endswith("%"):
                continue
            share = float(parts[0].rstrip("%")) / 100
            cat = category(parts[1])
            shares[cat] += share
            symbols.append((share, cat, parts[2][4:] if parts[2][:1] == "[" else parts[2]))
        total = sum(shares.values()) or 1.0
        return ({k: v / total for k, v in shares.items()},
                sorted(((s / total, c, n) for s, c, n in symbols), reverse=True))

    def report(self, key: str, cpu_us: float, unit: str) -> str:
        """The split of ``cpu_us`` (CPU per ``unit`` in the recorded run) as printable lines."""
        shares, symbols = self.split(key)
        head = " + ".join(f"{cat} {cpu_us * shares[cat]:.2f} ({shares[cat]:.0%})" for cat in CATEGORIES
                          if shares[cat] >= 0.005)
        lines = [f"-- {key}: perf of its last round, {cpu_us:.2f} us/{unit} = {head}"]
        for share, cat, name in symbols[:self.top]:
            lines.append(f"   {share:6.1%} {cpu_us * share:7.2f} us  {cat:<11s} {name}")
        return "\n".join(lines)

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
