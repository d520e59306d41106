"""Shared fixtures: MNIST, the shipped bundle's Guard and one screening of the whole test set."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="session")
def mnist():
    from train.data import load_mnist

    try:
        return load_mnist(download=False)
    except FileNotFoundError as e:
        pytest.skip(f"MNIST not available: {e}")


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
