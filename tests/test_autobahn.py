"""Autobahn|Testsuite categories 1-7, 9 and 10 (301 cases) against `python -m cowboy_ws`, via kosoku.

The full suite including 12.x/13.x (compression) runs in CI through autobahn/run.py.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "autobahn"))

pytest.importorskip("kosoku", reason="kosoku is in the test extra: pip install -e '.[test]'")
import run as autobahn  # noqa: E402


@pytest.mark.parametrize("backend", autobahn.available_backends())
def test_autobahn_core_categories(tmp_path, backend):
    """Every case of categories 1-7, 9, 10 is OK or INFORMATIONAL on each backend; the non-passing set is exactly the expected one."""
    expected = set(json.loads((ROOT / "autobahn" / "expected_failures.json").read_text()))
    outcome = autobahn.run_backend(backend, autobahn.QUICK_CATEGORIES, 2, tmp_path)
    assert outcome["errors"] == []
    assert outcome["missing"] == {}
    assert len(outcome["results"]) == 301
    assert set(outcome["failing"]) == expected
    assert not any(r.behavior.value == "NON-STRICT" for r in outcome["results"])
