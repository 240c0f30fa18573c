"""Autobahn|Testsuite in client mode (kosoku's fuzzing server) against cowboy_ws.client: a quick subset.

Categories 1-5, 7 and 10 whole, and one case each of 9 (a 64 KiB text message), 12 (compression)
and 13 (the offers of 13.2 and 13.5: client_no_context_takeover, a 9-bit window), on each kernel
backend, with the handler API; and categories 1-5 and a few more cases with the blocking API.  The whole suite (517
cases) runs through ``python autobahn/run_client.py`` (see autobahn/README.md).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "autobahn"))

pytest.importorskip("kosoku", reason="kosoku is in the test extra: pip install -e '.[test]'")
import run_client  # noqa: E402

CATEGORIES = ["1", "2", "3", "4", "5", "7", "10", "9.1.1", "12.1.1", "13.2.1", "13.5.1"]
CASES = 16 + 11 + 7 + 10 + 20 + 37 + 1 + 4


def _check(outcome: dict, count: int) -> None:
    assert outcome["errors"] == []
    assert outcome["missing"] == {}
    assert len(outcome["results"]) == count
    assert outcome["failing"] == []
    assert not any(r.behavior.value == "NON-STRICT" for r in outcome["results"])


@pytest.mark.parametrize("backend", run_client.available_backends())
def test_autobahn_client_subset(tmp_path, backend):
    """Every case OK or INFORMATIONAL (behaviour and close), none missing, on each backend."""
    _check(run_client.run_backend(backend, CATEGORIES, tmp_path), CASES)


def test_autobahn_client_blocking_api(tmp_path):
    """The blocking API echoes too (framing, pings, UTF-8, the closing handshake, compression),
    strict: categories 3-5 hold a message and a protocol error in one read (3.2-3.4, 4.1.3-4.2.5,
    5.15), and the echo of the message must leave before the Close (``Inbox.hold_failure``)."""
    cases = ["1", "2", "3", "4", "5", "6.4.1", "7.1.1", "7.5.1", "9.1.1", "13.2.1"]
    _check(run_client.run_backend(run_client.available_backends()[-1], cases, tmp_path, api="blocking"),
           16 + 11 + 7 + 10 + 20 + 5)
