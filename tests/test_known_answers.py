"""Known answers: numbers from outside the code (published SplitMix64 outputs, hand-computed conformal
p-values) and numbers frozen when the kernels were written, checked against both kernel backends.

A change that moves any of these changes every verdict's noise or p-value: it must be deliberate.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgeguard import kernels as numba_kernels
from edgeguard import kernels_numpy

BACKENDS = [pytest.param(numba_kernels, id="numba"), pytest.param(kernels_numpy, id="numpy")]

# The first five outputs of SplitMix64 (Vigna's splitmix64.c) seeded with 1234567, as published
# (Rosetta Code, "Pseudo-random numbers/Splitmix64").
SPLITMIX64_1234567 = [6457827717110365317, 3203168211198807973, 9817491932198370423, 4593380528125082431,
                      16408922859458223821]


def box_muller(a: int, b: int) -> float:
    """The kernels' normal draw from two 64-bit words: u1 in (0, 1], u2 in [0, 1), 53 bits each."""
    u1 = ((a >> 11) + 1) / 2.0**53
    u2 = (b >> 11) / 2.0**53
    return math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)


@pytest.mark.parametrize("kernels", BACKENDS)
def test_latent_noise_is_box_muller_over_published_splitmix64(kernels):
    """An image seed s draws its eps from SplitMix64 seeded with s: outputs 1-2 give eps[0], 3-4 eps[1]."""
    seeds = np.array([1234567], np.uint64)
    z = kernels.sample_latents(np.zeros((1, 2), np.float32), np.zeros((1, 2), np.float32), seeds, 1)
    expected = [box_muller(*SPLITMIX64_1234567[0:2]), box_muller(*SPLITMIX64_1234567[2:4])]
    np.testing.assert_allclose(z[0], expected, rtol=0, atol=1e-6)


def _images() -> np.ndarray:
    ramp = (np.arange(784, dtype=np.float32) / 783).reshape(1, 784)
    return np.ascontiguousarray(np.vstack([np.zeros((1, 784), np.float32), ramp]))


@pytest.mark.parametrize("kernels", BACKENDS)
def test_image_seeds_are_frozen(kernels):
    # Frozen when the kernels were written: the hash of an all-black image and of a ramp, seeds 0 and 7.
    assert kernels.image_seeds(_images(), 0).tolist() == [9400673537464095893, 11322947463705853554]
    assert kernels.image_seeds(_images()[1:], 7).tolist() == [813644785009615850]


@pytest.mark.parametrize("kernels", BACKENDS)
def test_one_images_latents_are_frozen(kernels):
    mu = np.array([[0.5, -1.0, 2.0]], np.float32)
    logvar = np.array([[0.0, -2.0, 1.0]], np.float32)
    z = kernels.sample_latents(mu, logvar, kernels.image_seeds(_images()[1:], 7), 2)
    frozen = [[0.41432673, -0.08630383, 2.381198], [0.1074277, -1.1417508, 4.416435]]
    np.testing.assert_allclose(z, frozen, rtol=0, atol=2e-6)


@pytest.mark.parametrize("kernels", BACKENDS)
def test_conformal_p_values_by_hand(kernels):
    """p = (1 + #{calibration scores >= s}) / (n + 1), worked out by hand for n = 4."""
    table = np.array([[0.1, 0.2, 0.3, 0.4]], np.float32)  # one signal's sorted clean scores
    combined = np.array([0.5, 1.0, 2.0, 3.0], np.float32)  # sorted clean Fisher statistics
    scores = np.array([[0.0], [0.25], [0.4], [0.5]], np.float32)
    p, p_combined = kernels.p_values(table, scores, combined, False)
    # 0.0: all 4 are >= it -> 5/5; 0.25: 0.3 and 0.4 -> 3/5; 0.4: itself counts -> 2/5; 0.5: none -> 1/5.
    np.testing.assert_allclose(p[:, 0], [1.0, 0.6, 0.4, 0.2], rtol=1e-12)
    # Fisher's statistic -2 ln p: 0, 1.02, 1.83, 3.22; how many of `combined` are >= each: 4, 2, 2, 0.
    np.testing.assert_allclose(p_combined, [5 / 5, 3 / 5, 3 / 5, 1 / 5], rtol=1e-12)


@pytest.mark.parametrize("kernels", BACKENDS)
def test_two_signals_fisher_and_min_p_by_hand(kernels):
    table = np.array([[0.1, 0.2, 0.3, 0.4], [1.0, 2.0, 3.0, 4.0]], np.float32)
    scores = np.array([[0.25, 4.5]], np.float32)  # p = 3/5 and 1/5
    combined = np.array([1.0, 2.0, 4.0, 5.0], np.float32)
    p, fisher = kernels.p_values(table, scores, combined, False)
    np.testing.assert_allclose(p, [[0.6, 0.2]], rtol=1e-12)
    # Fisher: -2 (ln 0.6 + ln 0.2) = 4.24 -> only 5.0 is >= it -> (1 + 1) / 5.
    assert -2 * (math.log(0.6) + math.log(0.2)) == pytest.approx(4.2406, abs=1e-4)
    np.testing.assert_allclose(fisher, [2 / 5], rtol=1e-12)
    # min-p (Tippett): -ln 0.2 = 1.61 -> 2.0, 4.0 and 5.0 are >= it -> (1 + 3) / 5.
    _, tippett = kernels.p_values(table, scores, combined, True)
    np.testing.assert_allclose(tippett, [4 / 5], rtol=1e-12)
