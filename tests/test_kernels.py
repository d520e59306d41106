"""edgeguard.kernels against the plain-NumPy twins in tests/naive.py."""

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
from tests import naive

ROOT = Path(__file__).resolve().parents[1]
P = K.N_PIXELS
VARIANTS = pytest.mark.parametrize("par", [False, True], ids=["serial", "parallel"])
SHAPES = pytest.mark.parametrize("b,k,d", [(7, 5, 16), (1, 1, 1), (1, 8, 3), (6, 1, 1)])


def rng(seed=0):
    return np.random.default_rng(seed)


def images(b, seed=0):
    return rng(seed).random((b, P), dtype=np.float32)


def latents(b, d, seed=0):
    r = rng(seed)
    mu = r.normal(size=(b, d)).astype(np.float32)
    logvar = r.normal(-1.0, 1.0, size=(b, d)).astype(np.float32)
    return mu, logvar


def random_probs(b, k, c, seed=0):
    return naive.softmax(3 * rng(seed).normal(size=(b * k, c)).astype(np.float32)).reshape(b, k, c)


def assert_vote_equal(got, want):
    for g, w in zip(got[:3], want[:3]):
        np.testing.assert_array_equal(g, w)
    np.testing.assert_allclose(got[3], want[3], rtol=1e-6)
    np.testing.assert_allclose(got[4], want[4], rtol=1e-6, atol=1e-7)


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
def test_normal_noise_matches_twin(par, b, k, d):
    seeds = K.image_seeds(images(b), 3)
    got = K.normal_noise(seeds, k, d, parallel=par)
    assert got.dtype == np.float32 and got.shape == (b * k, d)
    np.testing.assert_allclose(got, naive.normal_noise(seeds, k, d), rtol=1e-6, atol=1e-6)


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
    eps = K.normal_noise(seeds, k, d, parallel=par)
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
    eps = K.normal_noise(np.arange(1000, dtype=np.uint64), 20, 10).ravel()
    assert eps.size == 200_000
    assert abs(eps.mean()) < 0.02
    assert abs(eps.std() - 1.0) < 0.02
    assert abs(np.mean(np.abs(eps) < 1.0) - 0.6827) < 0.01
    assert np.all(np.isfinite(eps))


# ---------------------------------------------------------------- softmax


@VARIANTS
def test_softmax_matches_twin(par):
    logits = (5 * rng().normal(size=(40, 10))).astype(np.float32)
    logits[0] = [1000, -1000, 0, 0, 0, 0, 0, 0, 0, 1000]  # would overflow naively
    logits[1] = 3.0
    got = K.softmax(logits, parallel=par)
    np.testing.assert_allclose(got, naive.softmax(logits), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(got[0], [0.5, 0, 0, 0, 0, 0, 0, 0, 0, 0.5])
    np.testing.assert_allclose(got[1], 0.1)
    assert K.softmax(np.ones((3, 1), np.float32)).tolist() == [[1.0]] * 3


# ---------------------------------------------------------------- vote


@VARIANTS
@pytest.mark.parametrize("b,k,c", [(50, 8, 10), (1, 1, 10), (3, 1, 1), (20, 4, 3)])
def test_vote_matches_twin(par, b, k, c):
    probs = random_probs(b, k, c)
    assert_vote_equal(K.vote(probs, parallel=par), naive.vote(probs))


def one_hotish(labels, c=10, hi=0.9):
    """(K, C) rows with argmax at ``labels``; the rest share 1 - hi equally."""
    p = np.full((len(labels), c), (1 - hi) / (c - 1), np.float32)
    p[np.arange(len(labels)), labels] = hi
    return p


@VARIANTS
def test_vote_tie_breaks(par):
    # 2 votes each for labels 7 and 2; label 7 has the larger summed probability
    a = one_hotish([7, 2, 7, 2])
    a[0, 7] = 0.95
    # exact tie in counts and summed probability: the smaller label (3) wins
    b = one_hotish([8, 3, 8, 3])
    # tied argmax inside a sample: first index wins -> labels 4, 4, 6
    c = one_hotish([4, 4, 6])
    c = np.vstack([c, one_hotish([6])])
    c[0, 9] = c[0, 4]
    probs = np.stack([a, b, c])
    labels, majority, n_distinct, agreement, entropy = K.vote(probs, parallel=par)
    assert majority.tolist() == [7, 3, 4]
    assert labels[2].tolist() == [4, 4, 6, 6]
    assert n_distinct.tolist() == [2, 2, 2]
    np.testing.assert_allclose(agreement, 0.5)
    np.testing.assert_allclose(entropy, np.log(2), rtol=1e-6)
    assert_vote_equal((labels, majority, n_distinct, agreement, entropy), naive.vote(probs))


@VARIANTS
def test_vote_unanimous(par):
    probs = np.stack([one_hotish([5] * 6), one_hotish([0] * 6)])
    labels, majority, n_distinct, agreement, entropy = K.vote(probs, parallel=par)
    assert (labels == [[5], [0]]).all()
    assert majority.tolist() == [5, 0]
    assert n_distinct.tolist() == [1, 1]
    assert agreement.tolist() == [1.0, 1.0]
    assert entropy.tolist() == [0.0, 0.0]


@settings(max_examples=150, deadline=None)
@given(hnp.arrays(np.float32, hnp.array_shapes(min_dims=3, max_dims=3, max_side=6),
                  elements=st.sampled_from([0.0, 0.25, 0.5, 1.0])))
def test_vote_ties_property(probs):
    # few distinct values -> frequent ties in argmax, counts and summed probability
    assert_vote_equal(K.vote(probs), naive.vote(probs))


# ---------------------------------------------------------------- scores


@VARIANTS
@pytest.mark.parametrize("b,k", [(30, 6), (1, 1), (4, 1)])
def test_input_agreement_matches_twin(par, b, k):
    labels = rng().integers(0, 3, size=(b, k))
    inputs = rng(1).integers(0, 3, size=b)
    got = K.input_agreement(labels, inputs, parallel=par)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, naive.input_agreement(labels, inputs), rtol=1e-7)


@VARIANTS
@pytest.mark.parametrize("b,k", [(9, 8), (1, 1), (3, 1)])
def test_recon_errors_matches_twin(par, b, k):
    x = images(b)
    recon = images(b * k, seed=5)
    recon[0] = x[0]  # a perfect reconstruction: min is exactly 0 when k > 1
    got = K.recon_errors(x, recon, k, parallel=par)
    want = naive.recon_errors(x, recon, k)
    for g, w in zip(got, want):
        assert g.dtype == np.float32 and g.shape == (b,)
        np.testing.assert_allclose(g, w, rtol=1e-6, atol=0)
    assert got[1][0] == 0.0


@VARIANTS
@pytest.mark.parametrize("b,d", [(25, 16), (1, 1)])
def test_kl_and_spread_match_twin(par, b, d):
    mu, logvar = latents(b, d)
    np.testing.assert_allclose(K.kl_divergence(mu, logvar, parallel=par),
                               naive.kl_divergence(mu, logvar), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(K.posterior_spread(logvar, parallel=par),
                               naive.posterior_spread(logvar), rtol=1e-6)
    zero = np.zeros((2, d), np.float32)
    assert K.kl_divergence(zero, zero).tolist() == [0.0, 0.0]
    assert K.posterior_spread(zero).tolist() == [1.0, 1.0]


# ---------------------------------------------------------------- large batch


def test_large_batch_serial_equals_parallel():
    b, k, d = 5000, 4, 8
    assert b >= K.PARALLEL_MIN_BATCH
    x = images(b)
    mu, logvar = latents(b, d)
    seeds = K.image_seeds(x, 1, parallel=False)
    np.testing.assert_array_equal(K.image_seeds(x, 1, parallel=True), seeds)
    np.testing.assert_array_equal(K.image_seeds(x, 1), seeds)  # auto picks parallel
    np.testing.assert_array_equal(seeds, naive.image_seeds(x, 1))

    def both(fn, *args):
        s, p = fn(*args, parallel=False), fn(*args, parallel=True)
        for a, c in zip(s if isinstance(s, tuple) else (s,), p if isinstance(p, tuple) else (p,)):
            np.testing.assert_array_equal(a, c)
        return s

    z = both(K.sample_latents, mu, logvar, seeds, k)
    np.testing.assert_allclose(z, naive.sample_latents(mu, logvar, seeds, k), rtol=1e-6, atol=1e-6)
    both(K.normal_noise, seeds, k, d)
    probs = both(K.softmax, rng().normal(size=(b * k, 10)).astype(np.float32)).reshape(b, k, 10)
    labels, majority, *_ = both(K.vote, probs)
    both(K.input_agreement, labels, majority)
    recon = rng(2).random((b * k, P), dtype=np.float32)
    got = both(K.recon_errors, x, recon, k)
    for g, w in zip(got, naive.recon_errors(x, recon, k)):
        np.testing.assert_allclose(g, w, rtol=1e-6)
    both(K.kl_divergence, mu, logvar)
    both(K.posterior_spread, logvar)


def test_empty_batch():
    x = np.zeros((0, P), np.float32)
    mu = np.zeros((0, 4), np.float32)
    assert K.image_seeds(x, 0).shape == (0,)
    assert K.sample_latents(mu, mu, np.zeros(0, np.uint64), 3).shape == (0, 4)
    assert K.vote(np.zeros((0, 3, 10), np.float32))[0].shape == (0, 3)
    assert K.recon_errors(x, x, 2)[0].shape == (0,)


# ---------------------------------------------------------------- validation

f32, f64 = np.float32, np.float64
X = np.zeros((2, P), f32)
MU = np.zeros((2, 4), f32)
SEEDS = np.zeros(2, np.uint64)
LAB = np.zeros((2, 3), np.int64)


@pytest.mark.parametrize("call,match", [
    (lambda: K.image_seeds(X.astype(f64), 0), "float32"),
    (lambda: K.image_seeds(X.tolist(), 0), "float32"),
    (lambda: K.image_seeds(X, 1.5), "int"),
    (lambda: K.sample_latents(MU.astype(f64), MU, SEEDS, 2), "float32"),
    (lambda: K.sample_latents(MU, MU, SEEDS.astype(np.int64), 2), "uint64"),
    (lambda: K.sample_latents(MU, MU, SEEDS, 2.0), "int"),
    (lambda: K.normal_noise(SEEDS.astype(np.uint32), 2, 3), "uint64"),
    (lambda: K.softmax(np.zeros((2, 10), f64)), "float32"),
    (lambda: K.vote(np.zeros((2, 3, 10), f64)), "float32"),
    (lambda: K.input_agreement(LAB.astype(np.int32), np.zeros(2, np.int64)), "int64"),
    (lambda: K.input_agreement(LAB, np.zeros(2, np.int32)), "int64"),
    (lambda: K.recon_errors(X, np.zeros((4, P), f64), 2), "float32"),
    (lambda: K.kl_divergence(MU, MU.astype(np.float16)), "float32"),
    (lambda: K.posterior_spread(MU.astype(f64)), "float32"),
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
    (lambda: K.normal_noise(SEEDS.reshape(1, 2), 2, 3), "1-D"),
    (lambda: K.normal_noise(SEEDS, 2, 0), ">= 1"),
    (lambda: K.softmax(np.zeros(10, f32)), "2-D"),
    (lambda: K.vote(np.zeros((2, 10), f32)), "3-D"),
    (lambda: K.vote(np.zeros((2, 0, 10), f32)), "K, C >= 1"),
    (lambda: K.input_agreement(LAB, np.zeros(3, np.int64)), r"\(B,\)"),
    (lambda: K.recon_errors(X, np.zeros((3, P), f32), 2), r"\(B\*k, 784\) = \(4, 784\)"),
    (lambda: K.recon_errors(X, np.zeros((4, P), f32), 0), ">= 1"),
    (lambda: K.kl_divergence(MU, np.zeros((3, 4), f32)), r"\(2, 4\)"),
    (lambda: K.posterior_spread(np.zeros((2, 8), f32)[:, ::2]), "C-contiguous"),
])
def test_wrong_shape_raises_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ---------------------------------------------------------------- warmup & cache


def test_warmup():
    assert 0.0 <= K.warmup() < 5.0


def test_configure_cache_fallback(monkeypatch, tmp_path):
    import numba

    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(numba.config, "CACHE_DIR", "")
    monkeypatch.setattr(K.os, "access", lambda *a, **kw: False)  # read-only install
    K._configure_numba_cache()
    want = str(tmp_path / "edgeguard" / "numba")
    assert os.environ["NUMBA_CACHE_DIR"] == want
    assert numba.config.CACHE_DIR == want


def test_configure_cache_honours_env(monkeypatch, tmp_path):
    import numba

    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(numba.config, "CACHE_DIR", "")  # numba imported before the env was set
    monkeypatch.setattr(K.os, "access", lambda *a, **kw: False)
    K._configure_numba_cache()
    assert os.environ["NUMBA_CACHE_DIR"] == str(tmp_path)
    assert numba.config.CACHE_DIR == str(tmp_path)


@pytest.mark.slow
def test_numba_cache_dir_honoured(tmp_path):
    cache = tmp_path / "numba-cache"
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache)}
    code = "import edgeguard.kernels as k; k.warmup()"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True, timeout=300)
    assert list(cache.rglob("*.nbi")) and list(cache.rglob("*.nbc"))
