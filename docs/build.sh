#!/usr/bin/env bash
# Build the documentation into docs/_build/html, warnings as errors (-W), every cross-reference
# checked (-n), every page re-read (-E: a warning of an unchanged page is not hidden by a cache).
# Needs the docs extra: pip install -e '.[docs]'.  Extra arguments go to sphinx-build.
set -euo pipefail
cd "$(dirname "$0")"
python -m sphinx -b html -E -a -W --keep-going -n -q . _build/html "$@"
echo "docs: built docs/_build/html/index.html"
