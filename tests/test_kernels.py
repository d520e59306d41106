"""edgeguard.kernels against the plain-loop twins in tests/naive.py."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from edgeguard import kernels as K
from edgeguard import kernels_numba
from edgeguard.contract import N_PIXELS, SCORE_NAMES
from tests import naive

ROOT = Path(__file__).resolve().parents[1]
P = N_PIXELS
VARIANTS = pytest.mark.parametrize("par", [False, True], ids=["serial", "parallel"])
SHAPES = pytest.mark.parametrize("b,k,d", [(7, 5, 16), (1, 1, 1), (1, 8, 3), (6, 1, 1)])
IMPOSSIBLE = -200.0  # a logit whose softmax probability is exactly 0 in float32 (and adds nothing to the sum)


def rng(seed=0):
    return np.random.default_rng(seed)


def images(b, seed=0):
    return rng(seed).random((b, P), dtype=np.float32)


def latents(b, d, seed=0):
    r = rng(seed)
    mu = r.normal(size=(b, d)).astype(np.float32)
    logvar = r.normal(-1.0, 1.0, size=(b, d)).astype(np.float32)
    return mu, logvar


def score_inputs(b, k, d, c=10, seed=0):
    """x, logits (B*(k+1), C), recon (B*k, 784), mu, logvar: random, as Guard.analyze passes them."""
    mu, logvar = latents(b, d, seed)
    logits = (3 * rng(seed + 1).normal(size=(b * (k + 1), c))).astype(np.float32)
    return images(b, seed), logits, images(b * k, seed + 2), mu, logvar


def subset(inputs, k, idx):
    """The score inputs of the images ``idx`` alone."""
    x, logits, recon, mu, logvar = inputs
    b, rows = len(x), [r for i in idx for r in range(i * k, (i + 1) * k)]
    return x[idx], np.concatenate([logits[idx], logits[b:][rows]]), recon[rows], mu[idx], logvar[idx]


def one_hot_logits(rows, c=10):
    """Logits whose softmax rows are exact: each row a {label: logit} dict, every other label impossible."""
    out = np.full((len(rows), c), IMPOSSIBLE, np.float32)
    for r, row in enumerate(rows):
        for label, logit in row.items():
            out[r, label] = logit
    return out


def votes(recon_logits, c=10):
    """Score inputs for images whose reconstructions have the given logits (B, k, C); zero images and latents."""
    b, k, _ = recon_logits.shape
    logits = np.concatenate([np.zeros((b, c), np.float32), recon_logits.reshape(b * k, c)])
    zeros = np.zeros((b, 1), np.float32)
    return np.zeros((b, P), np.float32), logits, np.zeros((b * k, P), np.float32), zeros, zeros


def assert_score_equal(got, want):
    label, confidence, labels, majority, n_distinct, agreement, scores = got
    assert label.dtype == labels.dtype == majority.dtype == n_distinct.dtype == np.int64
    assert confidence.dtype == agreement.dtype == scores.dtype == np.float32
    assert scores.shape == (len(label), len(SCORE_NAMES))
    for g, w in zip((label, labels, majority, n_distinct), (want[0], want[2], want[3], want[4])):
        np.testing.assert_array_equal(g, w)
    np.testing.assert_allclose(confidence, want[1], rtol=1e-6)
    np.testing.assert_allclose(agreement, want[5], rtol=1e-6)
    for j, name in enumerate(SCORE_NAMES):
        np.testing.assert_allclose(scores[:, j], want[6][:, j], rtol=1e-5, atol=1e-7, err_msg=name)


# ---------------------------------------------------------------- seeds


@VARIANTS
@pytest.mark.parametrize("b", [1, 9])
def test_image_seeds_match_twin(par, b):
    x = images(b)
    for seed in (0, 12345, 2**64 - 1, -3):
        got = K.image_seeds(x, seed, parallel=par)
        assert got.dtype == np.uint64 and got.shape == (b,)
        np.testing.assert_array_equal(got, naive.image_seeds(x, seed))


def test_image_seeds_independent_of_batch():
    x = images(20)
    full = K.image_seeds(x, 7)
    perm = rng(1).permutation(20)
    np.testing.assert_array_equal(K.image_seeds(x[perm], 7), full[perm])
    np.testing.assert_array_equal(K.image_seeds(x[3:4], 7), full[3:4])


def test_image_seeds_differ():
    x = images(50)
    x[1] = x[0]
    x[1, 400] = np.nextafter(x[0, 400], np.float32(2))  # one ulp in one pixel
    s = K.image_seeds(x, 0)
    assert len(set(s.tolist())) == 50
    assert not np.any(s == K.image_seeds(x, 1))
    zeros = np.zeros((1, P), np.float32)
    assert len({int(K.image_seeds(zeros, seed)[0]) for seed in range(100)}) == 100


# ---------------------------------------------------------------- sampling


@VARIANTS
@SHAPES
def test_sample_latents_matches_twin(par, b, k, d):
    mu, logvar = latents(b, d)
    seeds = K.image_seeds(images(b), 3)
    z = K.sample_latents(mu, logvar, seeds, k, parallel=par)
    assert z.dtype == np.float32 and z.shape == (b * k, d)
    want = naive.sample_latents(mu, logvar, seeds, k)
    np.testing.assert_allclose(z, want, rtol=1e-6, atol=1e-6)
    assert np.mean(z == want) > 0.999  # essentially bit-for-bit
    zeros = np.zeros_like(mu)
    eps = K.sample_latents(zeros, zeros, seeds, k, parallel=par)  # mu 0, std 1: the noise itself
    np.testing.assert_allclose(eps, naive.normal_noise(seeds, k, d), rtol=1e-6, atol=1e-6)
    mean = np.repeat(mu, k, axis=0)
    std = np.repeat(np.exp(0.5 * logvar), k, axis=0)
    np.testing.assert_allclose(z, mean + std * eps, rtol=1e-5, atol=1e-5)


def test_sample_latents_same_image_same_z():
    x = images(30)
    mu, logvar = latents(30, 8)
    k = 4
    seeds = K.image_seeds(x, 11)
    z = K.sample_latents(mu, logvar, seeds, k)
    for idx in ([5], [29, 5, 0], list(range(30))[::-1]):
        sub = K.sample_latents(mu[idx], logvar[idx], K.image_seeds(x[idx], 11), k)
        pos = idx.index(5)
        np.testing.assert_array_equal(sub[pos * k:(pos + 1) * k], z[5 * k:6 * k])
    # reproducible call to call, and a different seed changes everything
    np.testing.assert_array_equal(K.sample_latents(mu, logvar, seeds, k), z)
    z2 = K.sample_latents(mu, logvar, K.image_seeds(x, 12), k)
    assert not np.any(z2 == z)


def test_noise_distribution():
    zeros = np.zeros((1000, 10), np.float32)
    eps = K.sample_latents(zeros, zeros, np.arange(1000, dtype=np.uint64), 20).ravel()
    assert eps.size == 200_000
    assert abs(eps.mean()) < 0.02
    assert abs(eps.std() - 1.0) < 0.02
    assert abs(np.mean(np.abs(eps) < 1.0) - 0.6827) < 0.01
    assert np.all(np.isfinite(eps))


# ---------------------------------------------------------------- score: softmax, vote and signals


@VARIANTS
@pytest.mark.parametrize("b,k,d", [(9, 8, 16), (1, 1, 1), (3, 1, 4), (20, 4, 3)])
def test_score_matches_twin(par, b, k, d):
    inputs = score_inputs(b, k, d, seed=b + k)
    inputs[1][0] = 0.0  # an all-equal row: the first label wins the argmax
    inputs[1][b] = [1000, -1000, 0, 0, 0, 0, 0, 0, 0, 1000]  # would overflow a naive exp
    inputs[2][0] = inputs[0][0]  # a perfect reconstruction: recon_mse_min is exactly 0 when k > 1
    got = K.score(*inputs, k, parallel=par)
    assert_score_equal(got, naive.score(*inputs, k))
    assert got[0][0] == 0 and got[1][0] == pytest.approx(0.1)
    if k > 1:
        assert got[6][0, SCORE_NAMES.index("recon_mse_min")] == 0.0


@VARIANTS
def test_score_softmax_is_stable(par):
    x, _, recon, mu, logvar = score_inputs(2, 1, 2)
    logits = np.array([[1000, -1000, 0, 0, 0, 0, 0, 0, 0, 1000], [3.0] * 10, [0.0] * 10, [0.0] * 10], np.float32)
    label, confidence, *_ = K.score(x, logits, recon, mu, logvar, 1, parallel=par)
    assert label.tolist() == [0, 0]
    np.testing.assert_allclose(confidence, [0.5, 0.1], rtol=1e-6)


@VARIANTS
def test_vote_tie_breaks(par):
    image_a = [{7: 0.0}, {2: 0.0, 5: -1.0}, {7: 0.0}, {2: 0.0, 5: -1.0}]  # 2 votes each; 7 has more probability
    image_b = [{8: 0.0}, {3: 0.0}, {8: 0.0}, {3: 0.0}]  # an exact tie in votes and probability: the smaller label
    image_c = [{4: 0.0, 9: 0.0}, {4: 0.0}, {6: 0.0, 1: -1.0}, {6: 0.0, 1: -1.0}]  # a tied argmax: the first label
    recon_logits = one_hot_logits(image_a + image_b + image_c).reshape(3, 4, 10)
    inputs = votes(recon_logits)
    got = K.score(*inputs, 4, parallel=par)
    _, _, labels, majority, n_distinct, agreement, scores = got
    assert majority.tolist() == [7, 3, 4]
    assert labels.tolist() == [[7, 2, 7, 2], [8, 3, 8, 3], [4, 4, 6, 6]]
    assert n_distinct.tolist() == [2, 2, 2]
    np.testing.assert_allclose(agreement, 0.5)
    np.testing.assert_allclose(scores[:, SCORE_NAMES.index("vote_entropy")], np.log(2), rtol=1e-6)
    assert_score_equal(got, naive.score(*inputs, 4))


@VARIANTS
def test_vote_unanimous(par):
    recon_logits = one_hot_logits([{5: 0.0}] * 6 + [{0: 0.0}] * 6).reshape(2, 6, 10)
    _, _, labels, majority, n_distinct, agreement, scores = K.score(*votes(recon_logits), 6, parallel=par)
    assert (labels == [[5], [0]]).all()
    assert majority.tolist() == [5, 0]
    assert n_distinct.tolist() == [1, 1]
    assert agreement.tolist() == [1.0, 1.0]
    assert scores[:, SCORE_NAMES.index("vote_entropy")].tolist() == [0.0, 0.0]
    assert scores[:, SCORE_NAMES.index("disagreement")].tolist() == [0.0, 0.0]


@settings(max_examples=150, deadline=None)
@given(hnp.arrays(np.float32, hnp.array_shapes(min_dims=3, max_dims=3, max_side=6),
                  elements=st.sampled_from([0.0, 1.0, 2.0, IMPOSSIBLE])))
def test_vote_ties_property(recon_logits):
    # few distinct logits -> frequent ties in argmax, votes and summed probability
    b, k, c = recon_logits.shape
    _, confidence, labels, majority, n_distinct, agreement, scores = K.score(*votes(recon_logits, c), k)
    for i in range(b):
        want = naive.vote([naive.softmax_row(row) for row in recon_logits[i]])
        assert (labels[i].tolist(), majority[i], n_distinct[i]) == tuple(want[:3])
        assert agreement[i] == pytest.approx(want[3], rel=1e-6)
        assert scores[i, SCORE_NAMES.index("vote_entropy")] == pytest.approx(want[4], rel=1e-6, abs=1e-7)
    np.testing.assert_allclose(confidence, 1.0 / c, rtol=1e-6)


@VARIANTS
@pytest.mark.parametrize("b,d", [(25, 16), (1, 1)])
def test_latent_signals_of_a_standard_posterior(par, b, d):
    x, _, recon, _, _ = score_inputs(b, 1, d)
    zero = np.zeros((b, d), np.float32)
    *_, scores = K.score(x, np.zeros((2 * b, 10), np.float32), recon, zero, zero, 1, parallel=par)
    assert scores[:, SCORE_NAMES.index("kl")].tolist() == [0.0] * b
    assert scores[:, SCORE_NAMES.index("posterior_spread")].tolist() == [1.0] * b


# ---------------------------------------------------------------- large batch


def test_large_batch_serial_equals_parallel():
    b, k, d = 5000, 4, 8
    assert b >= K.PARALLEL_MIN_BATCH
    x = images(b)
    mu, logvar = latents(b, d)
    seeds = K.image_seeds(x, 1, parallel=False)
    np.testing.assert_array_equal(K.image_seeds(x, 1, parallel=True), seeds)
    np.testing.assert_array_equal(K.image_seeds(x, 1), seeds)  # auto picks parallel
    few = [0, 1, 2500, b - 1]  # the plain loops are slow: a few images of the batch
    np.testing.assert_array_equal(seeds[few], naive.image_seeds(x[few], 1))

    def both(fn, *args):
        s, p = fn(*args, parallel=False), fn(*args, parallel=True)
        for a, c in zip(s if isinstance(s, tuple) else (s,), p if isinstance(p, tuple) else (p,)):
            np.testing.assert_array_equal(a, c)
        return s

    z = both(K.sample_latents, mu, logvar, seeds, k)
    rows = [r for i in few for r in range(i * k, (i + 1) * k)]
    np.testing.assert_allclose(z[rows], naive.sample_latents(mu[few], logvar[few], seeds[few], k), rtol=1e-6,
                               atol=1e-6)
    inputs = (x, rng().normal(size=(b * (k + 1), 10)).astype(np.float32), rng(2).random((b * k, P), np.float32),
              mu, logvar)
    got = both(K.score, *inputs, k)
    assert_score_equal(tuple(a[few] for a in got), naive.score(*subset(inputs, k, few), k))


def test_empty_batch():
    x = np.zeros((0, P), np.float32)
    mu = np.zeros((0, 4), np.float32)
    assert K.image_seeds(x, 0).shape == (0,)
    assert K.sample_latents(mu, mu, np.zeros(0, np.uint64), 3).shape == (0, 4)
    label, _, labels, *_, scores = K.score(x, np.zeros((0, 10), np.float32), np.zeros((0, P), np.float32), mu, mu, 3)
    assert label.shape == (0,) and labels.shape == (0, 3) and scores.shape == (0, len(SCORE_NAMES))
    p, p_combined = K.p_values(np.zeros((2, 5), np.float32), np.zeros((0, 2), np.float32), np.zeros(3, np.float32),
                               False)
    assert p.shape == (0, 2) and p_combined.shape == (0,)


# ---------------------------------------------------------------- validation

f32, f64 = np.float32, np.float64
X = np.zeros((2, P), f32)
MU = np.zeros((2, 4), f32)
SEEDS = np.zeros(2, np.uint64)
LOGITS = np.zeros((6, 10), f32)  # B=2, k=2
RECON = np.zeros((4, P), f32)


@pytest.mark.parametrize("call,match", [
    (lambda: K.image_seeds(X.astype(f64), 0), "float32"),
    (lambda: K.image_seeds(X.tolist(), 0), "float32"),
    (lambda: K.image_seeds(X, 1.5), "int"),
    (lambda: K.sample_latents(MU.astype(f64), MU, SEEDS, 2), "float32"),
    (lambda: K.sample_latents(MU, MU, SEEDS.astype(np.int64), 2), "uint64"),
    (lambda: K.sample_latents(MU, MU, SEEDS, 2.0), "int"),
    (lambda: K.score(X, LOGITS.astype(f64), RECON, MU, MU, 2), "float32"),
    (lambda: K.score(X, LOGITS, RECON.astype(f64), MU, MU, 2), "float32"),
    (lambda: K.score(X, LOGITS, RECON, MU, MU.astype(np.float16), 2), "float32"),
    (lambda: K.score(X, LOGITS, RECON, MU, MU, 2.0), "int"),
])
def test_wrong_dtype_raises_type_error(call, match):
    with pytest.raises(TypeError, match=match):
        call()


@pytest.mark.parametrize("call,match", [
    (lambda: K.image_seeds(np.zeros((2, 783), f32), 0), r"\(B, 784\)"),
    (lambda: K.image_seeds(np.zeros(P, f32), 0), "2-D"),
    (lambda: K.image_seeds(np.zeros((P, 2), f32).T, 0), "C-contiguous"),
    (lambda: K.sample_latents(MU, np.zeros((2, 5), f32), SEEDS, 2), r"\(2, 4\)"),
    (lambda: K.sample_latents(MU, MU, np.zeros(3, np.uint64), 2), r"\(B,\)"),
    (lambda: K.sample_latents(MU, MU, SEEDS, 0), ">= 1"),
    (lambda: K.sample_latents(np.zeros((2, 0), f32), np.zeros((2, 0), f32), SEEDS, 1), "D >= 1"),
    (lambda: K.score(X, LOGITS[0], RECON, MU, MU, 2), "2-D"),
    (lambda: K.score(X, LOGITS, np.zeros((3, P), f32), MU, MU, 2), r"\(B\*k, 784\) = \(4, 784\)"),
    (lambda: K.score(X, LOGITS, RECON, MU, MU, 0), ">= 1"),
    (lambda: K.score(X, LOGITS, RECON, MU, np.zeros((3, 4), f32), 2), r"\(2, 4\)"),
    (lambda: K.score(X, LOGITS, RECON, MU, np.zeros((2, 8), f32)[:, ::2], 2), "C-contiguous"),
])
def test_wrong_shape_raises_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ---------------------------------------------------------------- warmup & cache


def test_warmup():
    """warmup compiles (or loads) every kernel and returns the seconds it took; speed is the benchmark's."""
    seconds = K.warmup()
    assert isinstance(seconds, float) and seconds >= 0.0


def test_only_what_the_runtime_calls_is_public():
    public = {name for name in vars(K) if not name.startswith("_") and callable(getattr(K, name))
              and getattr(getattr(K, name), "__module__", None) == K.__name__}
    assert public == {"image_seeds", "sample_latents", "score", "p_values", "warmup"}


def test_configure_cache_fallback(monkeypatch, tmp_path):
    import numba

    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(numba.config, "CACHE_DIR", "")
    monkeypatch.setattr(kernels_numba.os, "access", lambda *a, **kw: False)  # read-only install
    kernels_numba._configure_numba_cache()
    want = str(tmp_path / "edgeguard" / "numba")
    assert os.environ["NUMBA_CACHE_DIR"] == want
    assert numba.config.CACHE_DIR == want


def test_configure_cache_honours_env(monkeypatch, tmp_path):
    import numba

    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(numba.config, "CACHE_DIR", "")  # numba imported before the env was set
    monkeypatch.setattr(kernels_numba.os, "access", lambda *a, **kw: False)
    kernels_numba._configure_numba_cache()
    assert os.environ["NUMBA_CACHE_DIR"] == str(tmp_path)
    assert numba.config.CACHE_DIR == str(tmp_path)


@pytest.mark.slow
def test_numba_cache_dir_honoured(tmp_path):
    cache = tmp_path / "numba-cache"
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache)}
    code = "import edgeguard.kernels as k; k.warmup()"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True, timeout=300)
    assert list(cache.rglob("*.nbi")) and list(cache.rglob("*.nbc"))
