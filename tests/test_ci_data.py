"""In CI (CI=true) a test that skips because its data is missing fails instead (tests/conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

TESTS = '''
import pytest

def test_data_missing():
    pytest.skip("MNIST not available: no files")

def test_other_skip():
    pytest.skip("running as root: cannot make a file unreadable")
'''


def _run(tmp_path: Path, ci: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "conftest.py").write_text("from tests.conftest import pytest_runtest_makereport  # noqa: F401\n")
    (tmp_path / "test_sample.py").write_text(TESTS)
    env = {**os.environ, "CI": ci, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                          cwd=tmp_path, env=env, capture_output=True, text=True)


def test_missing_data_fails_in_ci(tmp_path):
    result = _run(tmp_path, "true")
    assert result.returncode == 1, result.stdout
    assert "1 failed, 1 skipped" in result.stdout
    assert "CI=true and data the suite needs is missing" in result.stdout


def test_missing_data_skips_outside_ci(tmp_path):
    result = _run(tmp_path, "")
    assert result.returncode == 0, result.stdout
    assert "2 skipped" in result.stdout
