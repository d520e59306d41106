"""Shared fixtures: MNIST, the shipped bundle's Guard and one screening of the whole test set."""

from __future__ import annotations

import os
import re

import numpy as np
import pytest

#: Skip reasons that mean "the data or a package the suite needs is missing". Outside CI such a test skips;
#: in CI (CI=true) it fails, so a broken data install cannot turn the suite green by skipping.
MISSING = re.compile(r"MNIST|Fashion|dataset-fashion-mnist|USPS|could not import", re.IGNORECASE)


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.skipped and in_ci() and not hasattr(report, "wasxfail"):
        reason = str(report.longrepr[-1]) if isinstance(report.longrepr, tuple) else str(report.longrepr)
        if MISSING.search(reason):
            report.outcome = "failed"
            report.longrepr = f"CI=true and data the suite needs is missing: {reason}"


@pytest.fixture(scope="session", autouse=True)
def _never_download():
    """Tests never touch the internet: where MNIST is not on disk (--data-dir, $EDGEGUARD_DATA,
    ../shared/data/mnist or the cache), code that would download it skips the test instead.
    The download path itself is tested against a local server (tests/test_data.py)."""
    from train import data

    def refuse(dest, **kwargs):
        pytest.skip(f"MNIST not available locally (not downloading into {dest} during tests)")

    with pytest.MonkeyPatch.context() as patch:  # session-wide, so module fixtures see it too
        patch.setattr(data, "download_mnist", refuse)
        yield


@pytest.fixture(scope="session")
def mnist():
    from train.data import load_mnist

    try:
        return load_mnist(download=False)
    except FileNotFoundError as e:
        pytest.skip(f"MNIST not available: {e}")


def mnist_on_disk():
    """The folder MNIST lies in on this machine (``train.data.find_mnist``: --data-dir, $EDGEGUARD_DATA,
    ../shared/data/mnist or the cache), or a skip: for tests that run a benchmark as another process, which the
    patch of ``_never_download`` does not reach, so that process would download MNIST where it is missing. The
    reason names MNIST, so in CI (CI=true) the skip is a failure, as for every test whose data is missing."""
    from train.data import find_mnist

    try:
        return find_mnist(download=False)
    except FileNotFoundError as e:
        pytest.skip(f"MNIST not available locally, and the benchmark process would download it: {e}")


@pytest.fixture(scope="session")
def mnist_files():
    """``mnist_on_disk()`` as a fixture: request it in a test (or a fixture) that runs a benchmark process."""
    return mnist_on_disk()


@pytest.fixture(scope="session")
def guard():
    from edgeguard import Guard

    return Guard.load(providers="cpu")


@pytest.fixture(scope="session")
def test_screening(guard, mnist):
    """The runtime's raw screening of all 10,000 MNIST test images (computed once per session)."""
    from export.measure import analyze_all

    return analyze_all(guard, mnist.test_x)


@pytest.fixture
def digits(mnist) -> np.ndarray:
    return mnist.test_x[:64]
