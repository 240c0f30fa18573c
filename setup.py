"""setup.py: hosts the optional cffi build of the C speedups (see _speedups/).

All metadata lives in pyproject.toml.  This file only decides whether to build
the C extension ``cowboy_ws._speedups`` (cffi API mode, out-of-line, through
cffi's setuptools integration: ``cffi_modules``), from ``COWBOY_WS_SPEEDUPS``:

* unset (or ``auto``): build it if the compiler works; a failed build is
  reported and the install goes on, pure Python;
* ``yes``: build it; a failed build fails the install;
* ``no``: do not build it (pure Python).

The same works for ``pip install .`` (the extension lands in the installed
package) and ``pip install -e .`` (setuptools puts it in the source tree, next
to ``cowboy_ws/__init__.py``).  ``cowboy_ws.backend()`` then says ``"c"``.

Wheels: with the extension built, one ``cp310-abi3`` wheel serves CPython 3.10
and later (cffi compiles it for the stable ABI, ``Py_LIMITED_API``); without it
(``no``, or a failed build in auto mode) the wheel is pure, ``py3-none-any``.

A failed build in auto mode is only visible in pip's output with ``-v``, so it
is also recorded in the package (``cowboy_ws/_speedups_build.txt``, read by
:mod:`cowboy_ws._backendinfo`; so is ``no``): ``python -m cowboy_ws --version``
and the server's start-up line then say why the backend is pure Python and, when
the build failed, how to get C.
"""

from __future__ import annotations

import os
import re
import sys

from setuptools import setup
from setuptools.command.bdist_wheel import bdist_wheel
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

_MODES = {"": "auto", "auto": "auto", "yes": "yes", "1": "yes", "true": "yes", "on": "yes",
          "no": "no", "0": "no", "false": "no", "off": "no"}


def _mode() -> str:
    raw = os.environ.get("COWBOY_WS_SPEEDUPS", "")
    try:
        return _MODES[raw.strip().lower()]
    except KeyError:
        sys.exit(f"COWBOY_WS_SPEEDUPS={raw!r}: expected yes, no, or unset")


def _say(message: str) -> None:
    # pip shows a build's output with -v, or when the build fails
    print(f"cowboy_ws: {message}", file=sys.stderr, flush=True)


MODE = _mode()
HERE = os.path.dirname(os.path.abspath(__file__))
#: Written into the package when the C speedups are not built: "failed: <why>" (auto mode) or
#: "skipped: COWBOY_WS_SPEEDUPS=no" (keep in step with cowboy_ws/_backendinfo.py).
BUILD_NOTE_FILE = "_speedups_build.txt"
#: The oldest CPython the abi3 wheel is for: requires-python in pyproject.toml.
LIMITED_API_TAG = "cp310"
#: Extensions whose build failed (auto mode): the wheel leaves them out and is pure.
FAILED: dict[str, str] = {}


def _remove_inplace_builds() -> None:
    """Remove a C extension an earlier editable install left in the source tree."""
    import glob
    for path in glob.glob(os.path.join(HERE, "cowboy_ws", "_speedups.*")):
        if path.endswith((".so", ".pyd")):
            _say(f"removing the earlier build {os.path.relpath(path, HERE)}")
            os.remove(path)
    _record(os.path.join(HERE, "cowboy_ws"), None)


def _record(package_dir: str, note: str | None) -> None:
    """Write (or, with ``note`` None, remove) the note on the missing C speedups that the runtime reads."""
    path = os.path.join(package_dir, BUILD_NOTE_FILE)
    if note is None:
        if os.path.exists(path):
            os.remove(path)
        return
    os.makedirs(package_dir, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(note + "\n")


def _short_reason(exc: BaseException) -> str:
    """One line for the runtime's message: the compiler's command line is long and says little."""
    text = " ".join(str(exc).split())
    failed = re.search(r"Command '\[\s*'([^']+)'.*returned non-zero exit status (-?\d+)", text)
    if failed:
        text = f"the compiler {failed.group(1)!r} exited with status {failed.group(2)}"
    return text[:200] or type(exc).__name__


class BuildExt(build_ext):
    """Reports how the C speedups went; cffi's own build_ext subclasses this one."""

    def _built_path(self, ext) -> str:  # type: ignore[no-untyped-def]
        return os.path.join(self.build_lib, self.get_ext_filename(self.get_ext_fullname(ext.name)))

    def build_extension(self, ext):  # type: ignore[no-untyped-def]
        package_dir = os.path.join(self.build_lib, "cowboy_ws")
        try:
            super().build_extension(ext)
        except Exception as exc:
            if MODE == "yes":
                _say(f"building the C speedups {ext.name} failed: {exc}")
                raise
            _say(f"building the C speedups {ext.name} failed ({exc}); installing pure Python "
                 "(COWBOY_WS_SPEEDUPS=yes makes this an error, =no skips the build)")
            reason = _short_reason(exc)
            FAILED[ext.name] = reason
            if os.path.exists(self._built_path(ext)):  # an earlier build's, in a reused build/ directory
                os.remove(self._built_path(ext))
            _record(package_dir, f"failed: {reason}")
            return
        FAILED.pop(ext.name, None)
        _record(package_dir, None)
        _say(f"built the C speedups {ext.name}")

    def copy_extensions_to_source(self) -> None:
        # editable install / --inplace: skip the extension if its build failed (auto mode)
        keep = []
        for ext in self.extensions:
            if os.path.exists(self._built_path(ext)) or MODE == "yes":
                keep.append(ext)
                _record(os.path.join(HERE, "cowboy_ws"), None)
            else:
                _remove_inplace_builds()
                _record(os.path.join(HERE, "cowboy_ws"), f"failed: {FAILED.get(ext.name, 'not built')}")
        all_exts, self.extensions = self.extensions, keep
        try:
            super().copy_extensions_to_source()
        finally:
            self.extensions = all_exts


class BuildPy(build_py):
    """With ``COWBOY_WS_SPEEDUPS=no``, notes in the package that it is pure Python on purpose."""

    def run(self) -> None:
        super().run()
        if MODE == "no":
            _record(os.path.join(HERE if self.editable_mode else self.build_lib, "cowboy_ws"),
                    "skipped: COWBOY_WS_SPEEDUPS=no")


class BdistWheel(bdist_wheel):
    """Tags the wheel from what the build produced: ``cp310-abi3`` with the extension, else ``py3-none-any``."""

    def run_command(self, command: str) -> None:
        super().run_command(command)
        if command == "build":  # bdist_wheel.run builds first, then installs into the wheel and names it
            self._retag()

    def _retag(self) -> None:
        exts = list(self.distribution.ext_modules or [])
        if not exts:
            return
        if any(ext.name in FAILED for ext in exts):
            _say("the C speedups did not build: the wheel is pure Python (py3-none-any)")
            self.distribution.ext_modules = []  # installed as purelib, no build_ext rerun
            self.root_is_pure = True
            self.py_limited_api = False
        elif all(getattr(ext, "py_limited_api", False) for ext in exts):
            # cffi builds for the stable ABI (Py_LIMITED_API) unless the interpreter cannot
            # (debug or free-threaded builds): then the wheel keeps this interpreter's tag
            self.py_limited_api = LIMITED_API_TAG
            self._validate_py_limited_api()


def _speedups() -> dict:
    if MODE == "no":
        _say("COWBOY_WS_SPEEDUPS=no: not building the C speedups, pure Python")
        _remove_inplace_builds()
        return {}
    try:
        import cffi  # noqa: F401  (a build requirement in pyproject.toml)
    except ImportError as exc:
        if MODE == "yes":
            sys.exit(f"COWBOY_WS_SPEEDUPS=yes but cffi does not import: {exc}")
        _say(f"cffi does not import ({exc}): not building the C speedups, pure Python")
        _remove_inplace_builds()
        return {}
    return {"cffi_modules": ["_speedups/build.py:ffibuilder"]}


setup(cmdclass={"build_ext": BuildExt, "build_py": BuildPy, "bdist_wheel": BdistWheel}, **_speedups())
