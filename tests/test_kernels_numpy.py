"""edgeguard.kernels_numpy (the numba-free backend) against the numba kernels and the plain loops, and Guard on both."""

import subprocess
import sys

import numpy as np
import pytest

from edgeguard import kernels as K
from edgeguard import kernels_numpy as N
from edgeguard.contract import SCORE_NAMES
from tests import naive
from tests.test_kernels import assert_score_equal, images, latents, one_hot_logits, score_inputs, votes

SHAPES = pytest.mark.parametrize("b,k,d", [(7, 5, 16), (1, 1, 1), (1, 10, 16), (0, 3, 4)])


@SHAPES
def test_sampling_matches_numba(b, k, d):
    x = images(b, seed=b + k)
    mu, logvar = latents(b, d, seed=d)
    for seed in (0, 7, 2**64 - 1):
        seeds = N.image_seeds(x, seed)
        np.testing.assert_array_equal(seeds, K.image_seeds(x, seed))
        np.testing.assert_allclose(N.sample_latents(mu, logvar, seeds, k), K.sample_latents(mu, logvar, seeds, k),
                                   rtol=1e-6, atol=1e-6)


@SHAPES
def test_scores_match_numba(b, k, d):
    inputs = score_inputs(b, k, d)
    got, want = N.score(*inputs, k), K.score(*inputs, k)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and g.shape == w.shape
    for i in (0, 2, 3, 4):  # label, labels, majority, n_distinct
        np.testing.assert_array_equal(got[i], want[i])
    for i in (1, 5):  # confidence, agreement
        np.testing.assert_allclose(got[i], want[i], rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(got[6], want[6], rtol=1e-5, atol=1e-7)


def test_vote_ties_as_numba():
    # two votes each for 7 and 2 (7 has more summed probability), then equal sums: the smaller label
    recon_logits = one_hot_logits([{7: 0.0}, {2: 0.0, 5: -1.0}, {7: 0.0}, {2: 0.0, 5: -1.0},
                                   {7: 0.0}, {2: 0.0}, {7: 0.0}, {2: 0.0}]).reshape(2, 4, 10)
    inputs = votes(recon_logits)
    np.testing.assert_array_equal(N.score(*inputs, 4)[3], [7, 2])
    np.testing.assert_array_equal(K.score(*inputs, 4)[3], [7, 2])


def test_guard_same_verdicts_on_both_backends(mnist):
    from edgeguard import Guard

    batch = np.concatenate([mnist.test_x[:48], np.random.default_rng(0).integers(0, 256, (16, 28, 28), np.uint8)])
    fast, plain = Guard.load(providers="cpu", kernels="numba"), Guard.load(providers="cpu", kernels="numpy")
    for ours, theirs in zip(fast.screen(batch), plain.screen(batch)):
        assert (ours.verdict, ours.labels, ours.purified_label, ours.reasons) == \
               (theirs.verdict, theirs.labels, theirs.purified_label, theirs.reasons)
        for name, value in ours.scores.items():
            assert theirs.scores[name] == pytest.approx(value, rel=1e-5, abs=1e-6)
    assert sum(v.flagged for v in plain.screen(batch[48:])) == 16  # noise is flagged on either backend


def test_unknown_backend_is_refused():
    from edgeguard import Guard

    with pytest.raises(ValueError, match="kernels must be one of numba, numpy"):
        Guard.load(providers="cpu", kernels="cuda")


def test_numpy_backend_never_imports_numba(tmp_path):
    code = ("import sys, numpy as np\nfrom edgeguard import Guard\n"
            "g = Guard.load(providers='cpu', kernels='numpy')\n"
            "v = g.screen(np.zeros((28, 28), np.uint8))\n"
            "assert 'numba' not in sys.modules, 'numba was imported'\nprint(v[0].verdict)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("backend", [K, N], ids=["numba", "numpy"])
@pytest.mark.parametrize("b,k,d", [(5, 10, 16), (1, 1, 3), (70, 4, 16), (0, 2, 2)])
def test_score_matches_the_plain_loops(backend, b, k, d):
    from edgeguard.calibration import SIGNALS

    x, logits, recon, mu, logvar = score_inputs(b, k, d, seed=b * k)
    logits[: min(b, 1) * 3] = 0.0  # an all-equal row: argmax ties go to the first label
    got = backend.score(x, logits, recon, mu, logvar, k)
    assert backend.SCORE_NAMES == SCORE_NAMES and list(SIGNALS) == list(SCORE_NAMES)  # the kernels' column order
    assert_score_equal(got, naive.score(x, logits, recon, mu, logvar, k))


def test_fused_score_checks_its_inputs():
    x, mu = images(2), np.zeros((2, 4), np.float32)
    with pytest.raises(ValueError, match="logits must have shape"):
        K.score(x, np.zeros((5, 10), np.float32), images(4), mu, mu, 2)
    with pytest.raises(TypeError, match="float32"):
        K.score(x, np.zeros((6, 10)), images(4), mu, mu, 2)


@pytest.mark.parametrize("combination", ["fisher", "min_p"])
@pytest.mark.parametrize("b,s", [(9, 4), (1, 1), (0, 3), (5, 5)])
def test_p_values_match_the_conformal_formula(combination, b, s):
    rng = np.random.default_rng(b * 10 + s)
    table = np.sort(rng.gamma(2.0, size=(s, 300)).astype(np.float32), axis=1)
    combined = np.sort(rng.gamma(3.0, size=250).astype(np.float32))
    scores = rng.gamma(2.0, size=(b, s)).astype(np.float32)
    scores[:, 0] = table[0, rng.integers(0, 300, b)]  # ties with calibration scores count as ">="
    want, want_combined = naive.p_values(table, scores, combined, combination == "min_p")
    for backend in (N, K):
        p, p_combined = backend.p_values(table, scores, combined, combination == "min_p")
        assert p.dtype == p_combined.dtype == np.float64
        np.testing.assert_array_equal(p, want.reshape(b, s))
        np.testing.assert_array_equal(p_combined, want_combined)


def test_p_values_kernel_rejects_bad_shapes():
    table, combined = np.zeros((3, 5), np.float32), np.zeros(4, np.float32)
    with pytest.raises(ValueError, match="scores"):
        K.p_values(table, np.zeros((2, 4), np.float32), combined, False)
    with pytest.raises(TypeError, match="float32"):
        K.p_values(table, np.zeros((2, 3)), combined, False)
    with pytest.raises(ValueError, match="non-empty"):
        K.p_values(table, np.zeros((2, 3), np.float32), combined[:0], False)
