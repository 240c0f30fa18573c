"""Which kernel backend runs, and, when it is pure Python by accident, why and how to get C.

``python -m cowboy_ws --version`` and the server's start-up line use it.  pip hides a
failed C build (auto mode) unless run with ``-v``, so setup.py notes in the package why
the C speedups are missing (:data:`BUILD_NOTE_FILE`, keep the name in step with setup.py):
``failed: <why>``, or ``skipped: COWBOY_WS_SPEEDUPS=no``.
"""

from __future__ import annotations

import importlib.util
import os
import platform

from .protocol import kernels

#: Written by setup.py next to this module when the C speedups were not built.
BUILD_NOTE_FILE = "_speedups_build.txt"
#: Where the installed package (and so the note) is.
PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))

HOW_TO_GET_C = ("for the C backend install a C compiler and the Python headers (e.g. apt install gcc python3-dev), "
                "then reinstall with COWBOY_WS_SPEEDUPS=yes (a failed build then stops the install and shows why), "
                "e.g. COWBOY_WS_SPEEDUPS=yes pip install --force-reinstall --no-deps --no-cache-dir cowboy-ws")


def build_note() -> tuple[str, str] | None:
    """``("failed", why)`` or ``("skipped", why)`` from the install; None when nothing was noted."""
    try:
        with open(os.path.join(PACKAGE_DIR, BUILD_NOTE_FILE), encoding="utf-8") as f:
            kind, _, why = f.read().strip().partition(": ")
    except OSError:
        return None
    return (kind, why or "unknown") if kind in ("failed", "skipped") else ("failed", kind or "unknown")


def extension_present() -> bool:
    """Whether the C extension ``cowboy_ws._speedups`` is installed (loading or not)."""
    try:
        return importlib.util.find_spec("cowboy_ws._speedups") is not None
    except (ImportError, ValueError):
        return False


def pure_note() -> str | None:
    """Why the backend is pure Python and, unless on purpose, how to get C; None for C or ``COWBOY_WS_PURE``."""
    if kernels.BACKEND == "c" or kernels.pure_forced():
        return None
    if extension_present():  # there, but it does not load (cffi missing, a build for another Python, ...)
        return f"pure Python: {kernels.C_UNAVAILABLE}"
    note = build_note()
    if note is None:
        return f"pure Python: the C speedups are not built in this install; {HOW_TO_GET_C}"
    kind, why = note
    if kind == "skipped":
        return f"pure Python: installed without the C speedups ({why})"
    return f"pure Python: the C speedups failed to build when cowboy_ws was installed ({why}); {HOW_TO_GET_C}"


def version_text(version: str) -> str:
    """What ``python -m cowboy_ws --version`` prints."""
    line = f"cowboy_ws {version} (backend {kernels.BACKEND}, Python {platform.python_version()})"
    if kernels.pure_forced():
        return f"{line}: pure Python because {kernels.C_UNAVAILABLE}"
    note = pure_note()
    return f"{line}\n{note}" if note else line
