#!/usr/bin/env bash
# Build the documentation into docs/_build/html, warnings as errors (-W), every cross-reference
# checked (-n), every page re-read (-E: a warning of an unchanged page is not hidden by a cache),
# after running the code the pages show against real servers (docs/check_examples.py, about 15 s;
# DOCS_EXAMPLES=0 skips it).  Needs the docs extra: pip install -e '.[docs]'.  Extra arguments go
# to sphinx-build.
set -euo pipefail
cd "$(dirname "$0")"
if [ "${DOCS_EXAMPLES:-1}" != 0 ]; then
    python check_examples.py
fi
python -m sphinx -b html -E -a -W --keep-going -n -q . _build/html "$@"
echo "docs: built docs/_build/html/index.html"
