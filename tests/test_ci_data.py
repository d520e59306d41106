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


BENCHMARK_TESTS = '''
def test_runs_a_benchmark_process(mnist_files):
    assert mnist_files.is_dir()
'''


def _run_benchmark_test(tmp_path: Path, ci: str, data: Path) -> subprocess.CompletedProcess[str]:
    (tmp_path / "conftest.py").write_text("from tests.conftest import mnist_files, pytest_runtest_makereport  "
                                          "# noqa: F401\n")
    (tmp_path / "test_sample.py").write_text(BENCHMARK_TESTS)
    env = {**os.environ, "CI": ci, "PYTHONPATH": str(ROOT), "EDGEGUARD_DATA": str(data)}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", str(tmp_path)],
                          cwd=tmp_path, env=env, capture_output=True, text=True)


def test_benchmark_process_tests_skip_without_local_mnist(tmp_path):
    """Where MNIST is not on disk, a test that would run a benchmark process (which would download it) skips,
    saying why; in CI it fails instead."""
    empty, sample = tmp_path / "no-mnist", tmp_path / "sample"
    empty.mkdir()
    sample.mkdir()
    outside = _run_benchmark_test(sample, "", empty)
    assert outside.returncode == 0 and "1 skipped" in outside.stdout, outside.stdout
    assert "MNIST not available locally" in outside.stdout
    ci = _run_benchmark_test(sample, "true", empty)  # the skip in the fixture's setup becomes an error
    assert ci.returncode == 1 and "skipped" not in ci.stdout, ci.stdout
    assert "CI=true and data the suite needs is missing: Skipped: MNIST not available locally" in ci.stdout

