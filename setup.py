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
"""

from __future__ import annotations

import os
import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext

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


def _remove_inplace_builds() -> None:
    """Remove a C extension an earlier editable install left in the source tree."""
    import glob
    for path in glob.glob(os.path.join(HERE, "cowboy_ws", "_speedups.*")):
        if path.endswith((".so", ".pyd")):
            _say(f"removing the earlier build {os.path.relpath(path, HERE)}")
            os.remove(path)


class BuildExt(build_ext):
    """Reports how the C speedups went; cffi's own build_ext subclasses this one."""

    def build_extension(self, ext):  # type: ignore[no-untyped-def]
        try:
            super().build_extension(ext)
        except Exception as exc:
            if MODE == "yes":
                _say(f"building the C speedups {ext.name} failed: {exc}")
                raise
            _say(f"building the C speedups {ext.name} failed ({exc}); installing pure Python "
                 "(COWBOY_WS_SPEEDUPS=yes makes this an error, =no skips the build)")
            return
        _say(f"built the C speedups {ext.name}")

    def copy_extensions_to_source(self) -> None:
        # editable install / --inplace: skip the extension if its build failed (auto mode)
        keep = []
        for ext in self.extensions:
            built = os.path.join(self.build_lib, self.get_ext_filename(self.get_ext_fullname(ext.name)))
            if os.path.exists(built) or MODE == "yes":
                keep.append(ext)
            else:
                _remove_inplace_builds()
        all_exts, self.extensions = self.extensions, keep
        try:
            super().copy_extensions_to_source()
        finally:
            self.extensions = all_exts


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


setup(cmdclass={"build_ext": BuildExt}, **_speedups())
