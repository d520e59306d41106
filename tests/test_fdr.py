"""--fdr: the Benjamini-Hochberg selection, by hand and on mixtures of clean and out-of-distribution images."""

from __future__ import annotations

import numpy as np
import pytest

from edgeguard.fdr import benjamini_hochberg


def test_benjamini_hochberg_by_hand():
    # m = 6, q = 0.1: thresholds 0.0167, 0.0333, 0.05, 0.0667, 0.0833, 0.1 against the sorted
    # 0.005, 0.01, 0.03, 0.04 | 0.2, 0.5: ranks 1-4 pass, 5 and 6 do not.
    p = [0.01, 0.04, 0.03, 0.005, 0.2, 0.5]
    assert benjamini_hochberg(p, 0.1).tolist() == [True, True, True, True, False, False]
    # Step-up: rank 1 (0.04 > 0.0333) fails but rank 2 (0.045 <= 0.0667) passes, so both are selected.
    assert benjamini_hochberg([0.9, 0.045, 0.04], 0.1).tolist() == [False, True, True]
    assert benjamini_hochberg([0.04, 0.9], 0.1).tolist() == [True, False]  # m = 2: 0.04 <= 0.05
    assert benjamini_hochberg([0.06, 0.9], 0.1).tolist() == [False, False]  # 0.06 > 0.05, 0.9 > 0.1
    assert benjamini_hochberg([], 0.1).tolist() == []


def test_benjamini_hochberg_ties_and_bad_arguments():
    assert benjamini_hochberg([0.02, 0.02, 0.02], 0.05).all()
    for q in (0.0, 1.5, float("nan"), True):
        with pytest.raises(ValueError):
            benjamini_hochberg([0.1], q)
    with pytest.raises(ValueError):
        benjamini_hochberg([0.1, float("nan")], 0.1)
    with pytest.raises(ValueError):
        benjamini_hochberg([1.2], 0.1)


@pytest.fixture(scope="module")
def pooled(guard, mnist):
    """Combined p-values of 2,000 clean MNIST test digits drawn at random from the whole test set (its two halves
    are different writer groups: clean p-values run small on the first, large on the second; fdr_mixtures.py)
    and 1,000 out-of-distribution images."""
    from benchmarks.fdr_mixtures import outlier_images, pools

    outliers, _ = outlier_images(1000)
    clean = mnist.test_x[np.random.default_rng(0).choice(len(mnist.test_x), 2000, replace=False)]
    return pools(guard, clean, outliers)


@pytest.mark.parametrize("fraction", [0.01, 0.1, 0.5])
def test_fdr_is_controlled_on_mixtures(pooled, fraction):
    from benchmarks.fdr_mixtures import measure

    clean_p, outlier_p = pooled
    result = measure(clean_p, outlier_p, fraction=fraction, q=0.1, draws=50, size=500, seed=1)
    assert result.fdr <= 0.1 + 2 * result.fdr_se, result
    assert result.power > 0.5, result  # far from empty: the outliers are found


def test_without_control_the_mixture_test_sees_false_discoveries(pooled):
    """The check above can fail: selecting at p < 0.2 per image (no BH) on a mostly clean mixture gives an FDR
    well over 0.1."""
    clean_p, outlier_p = pooled
    rng = np.random.default_rng(0)
    fdp = []
    for _ in range(50):
        p = np.concatenate([rng.choice(clean_p, 495, replace=False), rng.choice(outlier_p, 5, replace=False)])
        chosen = p < 0.2
        fdp.append(chosen[:495].sum() / max(1, chosen.sum()))
    assert np.mean(fdp) > 0.1
