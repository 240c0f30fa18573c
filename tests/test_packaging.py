"""Packaging: what the user is told about the kernel backend, and the metadata (no builds here).

The builds themselves (sdist, the cp310-abi3 and py3-none-any wheels, installs into fresh
venvs, a failing compiler, pytest in the unpacked sdist) run in ``.ci/run``.  Here: the
``--version`` text and the server's start-up line for an install whose C build failed
(a copy of the package without the extension, with the note setup.py writes), for one
built without C on purpose, and the metadata the wheel tags rely on.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import cowboy_ws
from cowboy_ws import _backendinfo
from cowboy_ws.protocol import kernels

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = None

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = Path(cowboy_ws.__file__).resolve().parent
TIMEOUT = 15.0
FAILED_NOTE = "failed: the compiler 'false' exited with status 1"


def installed_copy(tmp_path: Path, note: str | None) -> Path:
    """A copy of the package as a failed (or skipped) C build installs it: no extension, maybe a note."""
    site = tmp_path / "site"
    shutil.copytree(PACKAGE, site / "cowboy_ws",
                    ignore=shutil.ignore_patterns("__pycache__", "_speedups.*", _backendinfo.BUILD_NOTE_FILE))
    if note is not None:
        (site / "cowboy_ws" / _backendinfo.BUILD_NOTE_FILE).write_text(note + "\n")
    return site


def python_in(site: Path, **env: str) -> tuple[list[str], dict]:
    """This interpreter with only ``site`` and site-packages on its path: ``-S`` skips the .pth files,
    so an editable install's import hook cannot hand out the checkout's extension."""
    environ = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "COWBOY_WS_PURE")}
    environ.update(PYTHONPATH=os.pathsep.join([str(site), *sitepackages()]), PYTHONUNBUFFERED="1", **env)
    return [sys.executable, "-S"], environ


def sitepackages() -> list[str]:
    import site
    return [p for p in site.getsitepackages() + [site.getusersitepackages()] if os.path.isdir(p)]


def run_from(site: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    cmd, environ = python_in(site, **env)
    return subprocess.run([*cmd, *args], cwd=site, env=environ, capture_output=True, text=True, timeout=TIMEOUT)


def startup_line(site: Path) -> str:
    """The server's start-up line when ``python -m cowboy_ws --port 0`` runs from ``site``."""
    cmd, environ = python_in(site)
    proc = subprocess.Popen([*cmd, "-m", "cowboy_ws", "--port", "0"], cwd=site, env=environ,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + TIMEOUT
        assert proc.stdout is not None
        for line in proc.stdout:
            if "listening on" in line:
                return line
            assert time.monotonic() < deadline, "no start-up line"
        raise AssertionError(f"the server exited ({proc.wait()}) without its start-up line")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_version_names_the_backend():
    backend = run_from(ROOT, "-c", "import cowboy_ws; print(cowboy_ws.backend())").stdout.strip()
    r = run_from(ROOT, "-m", "cowboy_ws", "--version")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"cowboy_ws {cowboy_ws.__version__} (backend {backend}, Python ")


def test_version_when_pure_is_forced():
    r = run_from(ROOT, "-m", "cowboy_ws", "--version", COWBOY_WS_PURE="1")
    assert r.returncode == 0, r.stderr
    assert "(backend python," in r.stdout and "COWBOY_WS_PURE is set" in r.stdout
    assert "COWBOY_WS_SPEEDUPS" not in r.stdout


def test_failed_build_version_says_why_and_how_to_get_c(tmp_path):
    site = installed_copy(tmp_path, FAILED_NOTE)
    r = run_from(site, "-m", "cowboy_ws", "--version")
    assert r.returncode == 0, r.stderr
    first, second = r.stdout.strip().splitlines()
    assert first.startswith(f"cowboy_ws {cowboy_ws.__version__} (backend python, Python ")
    assert "failed to build" in second and "the compiler 'false' exited with status 1" in second
    assert "C compiler" in second and "COWBOY_WS_SPEEDUPS=yes pip install" in second and "--no-cache-dir" in second


def test_failed_build_startup_line_says_how_to_get_c(tmp_path):
    line = startup_line(installed_copy(tmp_path, FAILED_NOTE))
    assert re.search(r"listening on http://127\.0\.0\.1:\d+ \(backend python, compress off\); pure Python: ", line)
    assert "failed to build" in line and "COWBOY_WS_SPEEDUPS=yes pip install" in line


def test_no_extension_and_no_note_still_says_how_to_get_c(tmp_path):
    r = run_from(installed_copy(tmp_path, None), "-m", "cowboy_ws", "--version")
    assert r.returncode == 0, r.stderr
    assert "(backend python," in r.stdout and "not built" in r.stdout and "COWBOY_WS_SPEEDUPS=yes" in r.stdout


def test_pure_on_purpose_says_so_without_a_remedy(tmp_path):
    site = installed_copy(tmp_path, "skipped: COWBOY_WS_SPEEDUPS=no")
    r = run_from(site, "-m", "cowboy_ws", "--version")
    assert r.returncode == 0, r.stderr
    assert "installed without the C speedups (COWBOY_WS_SPEEDUPS=no)" in r.stdout
    assert "failed" not in r.stdout and "COWBOY_WS_SPEEDUPS=yes" not in r.stdout
    line = startup_line(site)
    assert "(backend python, compress off); pure Python: installed without the C speedups" in line


def test_pure_note_reads_the_note(tmp_path, monkeypatch):
    monkeypatch.setattr(kernels, "BACKEND", "python")
    monkeypatch.delenv("COWBOY_WS_PURE", raising=False)
    monkeypatch.setattr(_backendinfo, "extension_present", lambda: False)
    monkeypatch.setattr(_backendinfo, "PACKAGE_DIR", str(tmp_path))
    assert "not built" in _backendinfo.pure_note()
    (tmp_path / _backendinfo.BUILD_NOTE_FILE).write_text("failed: boom\n")
    assert _backendinfo.build_note() == ("failed", "boom")
    assert "failed to build when cowboy_ws was installed (boom); for the C backend" in _backendinfo.pure_note()
    (tmp_path / _backendinfo.BUILD_NOTE_FILE).write_text("garbled")
    assert _backendinfo.build_note() == ("failed", "garbled")
    monkeypatch.setattr(kernels, "BACKEND", "c")
    assert _backendinfo.pure_note() is None


@pytest.mark.skipif(kernels.BACKEND != "c", reason="the C backend is not built here")
def test_no_note_when_c_runs():
    assert _backendinfo.pure_note() is None
    assert _backendinfo.version_text("9.9") == (f"cowboy_ws 9.9 (backend c, Python "
                                                f"{'.'.join(map(str, sys.version_info[:3]))})")


# ---- metadata -------------------------------------------------------------------------------------

def pyproject() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


@pytest.mark.skipif(tomllib is None, reason="tomllib: Python 3.11+")
def test_license_and_classifiers():
    project = pyproject()["project"]
    assert project["license"] == "ISC" and project["license-files"] == ["LICENSE"]
    assert "ISC License" in (ROOT / "LICENSE").read_text()
    assert not [c for c in project["classifiers"] if c.startswith("License ::")]  # PEP 639: the expression only
    minor = int(project["requires-python"].removeprefix(">=3."))
    for v in range(minor, 14):
        assert f"Programming Language :: Python :: 3.{v}" in project["classifiers"]
    assert project["keywords"] and project["urls"]
    setuptools_min = re.search(r"setuptools>=(\d+)", " ".join(pyproject()["build-system"]["requires"]))
    assert setuptools_min and int(setuptools_min.group(1)) >= 77  # license = "ISC" needs PEP 639 support


@pytest.mark.skipif(tomllib is None, reason="tomllib: Python 3.11+")
def test_abi3_tag_matches_requires_python():
    """setup.py tags the C wheel for the oldest supported CPython: cp310-abi3 for requires-python >=3.10."""
    minor = int(pyproject()["project"]["requires-python"].removeprefix(">=3."))
    assert f'LIMITED_API_TAG = "cp3{minor}"' in (ROOT / "setup.py").read_text()


def test_note_file_name_in_step_with_setup_py():
    assert f'BUILD_NOTE_FILE = "{_backendinfo.BUILD_NOTE_FILE}"' in (ROOT / "setup.py").read_text()
