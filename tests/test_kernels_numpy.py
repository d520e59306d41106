"""edgeguard.kernels_numpy (the numba-free backend) against the numba kernels, and Guard on both."""

import subprocess
import sys

import numpy as np
import pytest

from edgeguard import kernels as K
from edgeguard import kernels_numpy as N
from tests.test_kernels import images, latents, random_probs

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
    x = images(b)
    recon = images(b * k, seed=1)
    mu, logvar = latents(b, d)
    probs = random_probs(b, k, 10)
    got, want = N.vote(probs), K.vote(probs)
    for g, w in zip(got[:3], want[:3]):
        np.testing.assert_array_equal(g, w)
    for g, w in zip(got[3:], want[3:]):
        np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-7)
    logits = (3 * np.random.default_rng(b).normal(size=(b * k, 10))).astype(np.float32)
    np.testing.assert_allclose(N.softmax(logits), K.softmax(logits), rtol=1e-6, atol=1e-8)
    labels, majority = want[0], want[1]
    np.testing.assert_array_equal(N.input_agreement(labels, majority), K.input_agreement(labels, majority))
    for g, w in zip(N.recon_errors(x, recon, k), K.recon_errors(x, recon, k)):
        np.testing.assert_allclose(g, w, rtol=1e-6)
    np.testing.assert_allclose(N.kl_divergence(mu, logvar), K.kl_divergence(mu, logvar), rtol=1e-5)
    np.testing.assert_allclose(N.posterior_spread(logvar), K.posterior_spread(logvar), rtol=1e-6)


def test_vote_ties_as_numba():
    # two votes each for 7 and 2 (7 has more summed probability), then equal sums: the smaller label
    p = np.full((2, 4, 10), 0.01, np.float32)
    p[0, [0, 2], 7], p[0, [1, 3], 2] = 0.9, 0.8
    p[1, [0, 2], 7], p[1, [1, 3], 2] = 0.9, 0.9
    np.testing.assert_array_equal(N.vote(p)[1], [7, 2])
    np.testing.assert_array_equal(K.vote(p)[1], [7, 2])


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
def test_fused_score_equals_the_separate_kernels(backend, b, k, d):
    from edgeguard.calibration import SIGNALS

    rng = np.random.default_rng(b * k)
    x, recon = images(b), images(b * k, seed=2)
    mu, logvar = latents(b, d)
    logits = (3 * rng.normal(size=(b * (k + 1), 10))).astype(np.float32)
    logits[: min(b, 1) * 3] = 0.0  # an all-equal row: argmax ties go to the first label
    label, confidence, labels, majority, n_distinct, agreement, scores = backend.score(x, logits, recon, mu, logvar, k)
    probs = K.softmax(logits)
    want = K.vote(np.ascontiguousarray(probs[b:].reshape(b, k, 10)))
    np.testing.assert_array_equal(label, probs[:b].argmax(axis=1))
    np.testing.assert_allclose(confidence, probs[:b].max(axis=1), rtol=1e-6)
    for got, expected in zip((labels, majority, n_distinct), want[:3]):
        np.testing.assert_array_equal(got, expected)
    np.testing.assert_allclose(agreement, want[3], rtol=1e-6)
    separate = {"disagreement": 1.0 - want[3], "input_mismatch": 1.0 - K.input_agreement(want[0], label),
                "vote_entropy": want[4], "recon_mse": K.recon_errors(x, recon, k)[0],
                "recon_mse_min": K.recon_errors(x, recon, k)[1], "kl": K.kl_divergence(mu, logvar),
                "posterior_spread": K.posterior_spread(logvar), "low_confidence": 1.0 - probs[:b].max(axis=1)}
    assert list(backend.SCORE_NAMES) == list(separate) and set(backend.SCORE_NAMES) == set(SIGNALS)
    assert scores.shape == (b, len(SIGNALS)) and scores.dtype == np.float32
    for j, name in enumerate(backend.SCORE_NAMES):
        np.testing.assert_allclose(scores[:, j], separate[name], rtol=1e-5, atol=1e-7, err_msg=name)


def test_fused_score_checks_its_inputs():
    x, mu = images(2), np.zeros((2, 4), np.float32)
    with pytest.raises(ValueError, match="logits must have shape"):
        K.score(x, np.zeros((5, 10), np.float32), images(4), mu, mu, 2)
    with pytest.raises(TypeError, match="float32"):
        K.score(x, np.zeros((6, 10)), images(4), mu, mu, 2)


@pytest.mark.parametrize("combination", ["fisher", "min_p"])
@pytest.mark.parametrize("b,s", [(9, 4), (1, 1), (0, 3), (5, 5)])
def test_p_values_match_the_conformal_formula(combination, b, s):
    from edgeguard.calibration import COMBINATIONS
    from edgeguard.kernels_numpy import conformal_p

    rng = np.random.default_rng(b * 10 + s)
    table = np.sort(rng.gamma(2.0, size=(s, 300)).astype(np.float32), axis=1)
    combined = np.sort(rng.gamma(3.0, size=250).astype(np.float32))
    scores = rng.gamma(2.0, size=(b, s)).astype(np.float32)
    scores[:, 0] = table[0, rng.integers(0, 300, b)]  # ties with calibration scores count as ">="
    want = np.stack([conformal_p(table[j], scores[:, j]) for j in range(s)], axis=1).reshape(b, s)
    want_combined = conformal_p(combined, COMBINATIONS[combination](want).astype(np.float32))
    for backend in (N, K):
        p, p_combined = backend.p_values(table, scores, combined, combination == "min_p")
        assert p.dtype == p_combined.dtype == np.float64
        np.testing.assert_array_equal(p, want)
        np.testing.assert_array_equal(p_combined, want_combined)


def test_p_values_kernel_rejects_bad_shapes():
    table, combined = np.zeros((3, 5), np.float32), np.zeros(4, np.float32)
    with pytest.raises(ValueError, match="scores"):
        K.p_values(table, np.zeros((2, 4), np.float32), combined, False)
    with pytest.raises(TypeError, match="float32"):
        K.p_values(table, np.zeros((2, 3)), combined, False)
    with pytest.raises(ValueError, match="non-empty"):
        K.p_values(table, np.zeros((2, 3), np.float32), combined[:0], False)
