#!/usr/bin/env bash
# Run the differential tests of the C kernels (tests/test_speedups*.py) under valgrind's memcheck:
#
#   bash _speedups/valgrind.sh          # from anywhere; extra arguments go to pytest
#
# Any memcheck error in the process (invalid read or write, a jump on or use of
# uninitialised memory, a definite leak) makes it exit 1.  CPython's allocator is
# bypassed (PYTHONMALLOC=malloc) so that memcheck sees every block; the
# hypothesis example count is small (COWBOY_WS_DIFF_EXAMPLES, 12 unless set) and
# the exhaustive cases are sampled: about 2 minutes, plus a one-time venv.
# _speedups/valgrind.supp silences one glibc/valgrind false positive (AVX2 wmemcmp).
#
# The interpreter: CPython 3.11 itself is not memcheck-clean with
# PYTHONMALLOC=malloc (longobject.c's maybe_small_long reads the uninitialised
# digit of 0, and the "undefined" small int then spreads through the whole
# interpreter), so this uses the first of python3.12, 3.13, 3.10 found (pyenv
# or PATH; VALGRIND_PYTHON overrides) in a venv under build/valgrind/ with
# cffi, pytest, hypothesis and zlib-ng, and builds the extension for it into a
# copy of the package there (the source tree is not touched).  With no such
# interpreter it falls back to the current one, 3.11 included, with
# --undef-value-errors=no (invalid reads/writes and leaks still checked).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work="$root/build/valgrind"

find_python() {
    if [[ -n "${VALGRIND_PYTHON:-}" ]]; then echo "$VALGRIND_PYTHON"; return; fi
    local v p
    for v in 3.12 3.13 3.10; do
        for p in "$(command -v "python$v" 2>/dev/null || true)" \
                 "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$v".*/bin/"python$v"; do
            if [[ -x "$p" ]] && "$p" -c "import venv, ensurepip" 2>/dev/null; then echo "$p"; return; fi
        done
    done
}

extra=()
base=$(find_python)
if [[ -n "$base" ]]; then
    tag=$("$base" -c "import sys; print(sys.implementation.cache_tag)")
    venv="$work/venv-$tag"
    if [[ ! -x "$venv/bin/python" ]] || ! "$venv/bin/python" -c "import cffi, pytest, hypothesis, zlib_ng" 2>/dev/null; then
        echo "valgrind.sh: making $venv ($base)" >&2
        rm -rf "$venv"
        "$base" -m venv "$venv"
        "$venv/bin/python" -m pip install -q --disable-pip-version-check setuptools cffi pytest hypothesis zlib-ng >&2
    fi
    python="$venv/bin/python"
else
    python=$("${PYTHON:-python}" -c "import sys; print(sys.executable)")  # not a pyenv shim or launcher
    if "$python" -c "import sys; sys.exit(sys.version_info[:2] != (3, 11))"; then
        echo "valgrind.sh: only CPython 3.11 here: --undef-value-errors=no (see the header)" >&2
        extra+=(--undef-value-errors=no)
    fi
fi

# a copy of the package with the extension built for $python, and the test module
stage="$work/stage"
rm -rf "$stage"
mkdir -p "$stage"
cp -r "$root/cowboy_ws" "$stage/"
find "$stage/cowboy_ws" \( -name "_speedups.*.so" -o -name "_speedups.*.pyd" -o -name __pycache__ \) -prune \
    -exec rm -rf {} +
(cd "$root" && "$python" _speedups/build.py "$stage/cowboy_ws" > "$work/build.log" 2>&1) || {
    cat "$work/build.log" >&2
    exit 2
}
cp "$root/tests/test_speedups.py" "$root/tests/test_speedups_messages.py" "$stage/"
printf '[pytest]\n' > "$stage/pytest.ini"

cd "$stage"
"$python" -c "import cowboy_ws._speedups, cowboy_ws; assert cowboy_ws.__file__.startswith('$stage')"
export PYTHONMALLOC=malloc
export COWBOY_WS_DIFF_EXAMPLES=${COWBOY_WS_DIFF_EXAMPLES:-12}
export HYPOTHESIS_NO_PLUGINS=1
# (pytest -s: output capture made a hypothesis test far slower under valgrind; bench/README.md)
# hypothesis' Unicode tables for st.text(): built here at native speed (a minute under valgrind)
export HYPOTHESIS_STORAGE_DIRECTORY="$work/hypothesis"
"$python" -c "from hypothesis.internal.charmap import charmap; charmap()"
echo "valgrind.sh: $("$python" -c 'import sys; print(sys.version.split()[0])'), $COWBOY_WS_DIFF_EXAMPLES examples" >&2
exec valgrind --error-exitcode=1 --errors-for-leak-kinds=definite --leak-check=no \
    --quiet --num-callers=30 --suppressions="$root/_speedups/valgrind.supp" "${extra[@]}" \
    "$python" -m pytest test_speedups.py test_speedups_messages.py -q -s -p no:cacheprovider -x "$@"
