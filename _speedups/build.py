"""cffi build script (API mode, out-of-line) of the C kernels: ``cowboy_ws._speedups``.

setup.py hands ``ffibuilder`` to cffi's setuptools integration
(``cffi_modules=["_speedups/build.py:ffibuilder"]``), so ``pip install .`` and
``pip install -e .`` compile it into the package.  ``COWBOY_WS_SPEEDUPS`` decides
how (DESIGN.md, conventions):

* unset: build it if the compiler works; a failed build is reported and the
  install goes on pure Python (the extension is ``optional``);
* ``yes``: a failed build fails the install;
* ``no``: setup.py does not load this script at all.

For a quick in-place build while developing (from the repository root)::

    python _speedups/build.py     # writes cowboy_ws/_speedups.<this interpreter's tag>.so

``CFLAGS`` from the environment is added by setuptools as usual; the kernels
need no ``-march``: the masking loop is compiled for SSE2 and AVX2 and picked
at load time.
"""

from __future__ import annotations

import os

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))

#: Keep in step with speedups.h (cffi's cdef takes no preprocessor input).
CDEF = """
void cw_mask(char *dst, const char *src, size_t n, const char *key);
void cw_unmask_at(char *dst, const char *base, size_t offset, size_t n);
void cw_unmask_join(char *dst, const char *head, size_t offset, size_t n_head, const char *tail,
                    size_t n_tail);
int64_t cw_utf8_feed(const char *data, size_t n, int64_t state);
int64_t cw_parse_frames(const char *src, char *dst, size_t n, size_t pos, int flags, int64_t limit,
                        int64_t *rec, size_t cap);
int64_t cw_parse_simple(const char *src, char *dst, size_t n, size_t pos, int flags, int64_t limit,
                        int64_t *rec, size_t cap);
int64_t cw_send_many(const int *fds, size_t n, const char *buf, size_t len, int64_t *out);

#define CW_CHECK_UTF8 16
#define CW_MASK_REQUIRED 1
#define CW_RSV1_ALLOWED 2
#define CW_HAS_LIMIT 4
#define CW_LEAVE_LARGE 8
#define CW_LARGE_PAYLOAD 8192

#define CW_E_RSV23 1
#define CW_E_RSV1 2
#define CW_E_RSV1_CTRL 3
#define CW_E_OPCODE 4
#define CW_E_CTRL_FRAG 5
#define CW_E_CTRL_LONG 6
#define CW_E_UNMASKED 7
#define CW_E_MASKED 8
#define CW_E_LEN16 9
#define CW_E_LEN64_TOP 10
#define CW_E_LEN64 11
#define CW_E_TOO_BIG 12
"""


def _rel(path: str) -> str:
    """``path`` relative to the working directory when possible: setuptools wants relative sources."""
    try:
        rel = os.path.relpath(path)
    except ValueError:  # another drive (Windows)
        return path
    return path if rel.startswith("..") else rel


def _compile_args() -> list[str]:
    if os.name == "nt":
        return ["/O2"]
    return ["-O3", "-std=c99", "-Wall", "-Wextra", "-Wno-unused-parameter"]


def make_builder(absolute: bool = False, optional: bool | None = None) -> FFI:
    """The FFI builder; ``absolute`` paths for ``ffi.compile``, which changes directory."""
    if optional is None:  # unset COWBOY_WS_SPEEDUPS: a failed build is a warning, the install goes on pure
        optional = os.environ.get("COWBOY_WS_SPEEDUPS", "").strip().lower() in ("", "auto")
    fix = (lambda p: p) if absolute else _rel
    builder = FFI()
    builder.cdef(CDEF)
    builder.set_source(
        "cowboy_ws._speedups",
        '#include "speedups.h"',
        sources=[fix(os.path.join(HERE, "speedups.c"))],
        include_dirs=[fix(HERE)],
        depends=[fix(os.path.join(HERE, "speedups.h"))],
        extra_compile_args=_compile_args(),
        optional=optional,
    )
    return builder


ffibuilder = make_builder()


if __name__ == "__main__":
    import glob
    import shutil
    import sys

    # python _speedups/build.py [PACKAGE_DIR]: build with this interpreter into PACKAGE_DIR
    # (default: the source tree's cowboy_ws/, as an editable install would)
    root = os.path.dirname(HERE)
    dest_dir = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else os.path.join(root, "cowboy_ws")
    tmp = os.path.join(root, "build", f"cffi-inplace-{sys.implementation.cache_tag}")
    os.chdir(root)
    so = make_builder(absolute=True, optional=False).compile(tmpdir=tmp, verbose=True)
    tag = os.path.basename(so).split(".")[1]  # e.g. cpython-311-x86_64-linux-gnu
    for old in glob.glob(os.path.join(dest_dir, f"_speedups.{tag}.*")) + \
            glob.glob(os.path.join(dest_dir, "_speedups.abi3.*")):
        os.remove(old)
    dest = os.path.join(dest_dir, os.path.basename(so))
    shutil.copy2(so, dest)
    print("built", dest)
