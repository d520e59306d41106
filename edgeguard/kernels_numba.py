"""The compiled loops behind ``edgeguard.kernels``, which checks their inputs and picks the serial or parallel
twin: call that module, not this one.

Every kernel writes into preallocated outputs.  The batch loops come in a serial and a ``parallel=True`` twin
sharing the same per-image code, so results never depend on batch composition, position or thread count.
Only the batch loops carry signatures, so only they load from numba's cache at import; the per-image helpers
are compiled into them.  All of them stay in this one file: numba's cache is invalidated by edits to the file
of the cached function, not to the files of the functions it calls.
"""
# (numba kernels carry numba signatures, or take their callers' types, instead of Python annotations)

from __future__ import annotations

import os
import sys
from pathlib import Path

from edgeguard.kernel_cache import numba_cache_root


def _configure_numba_cache() -> None:
    """Point numba's on-disk cache somewhere writable (``kernel_cache.numba_cache_root``: an existing
    ``NUMBA_CACHE_DIR`` wins; a system-wide install uses ``$XDG_CACHE_HOME/edgeguard/numba``). Works whether or
    not numba has already been imported."""
    cache_dir = numba_cache_root(Path(__file__))
    if cache_dir is None:  # numba's default: __pycache__ beside this file
        return
    os.environ["NUMBA_CACHE_DIR"] = cache_dir
    numba_mod = sys.modules.get("numba")
    if numba_mod is not None:  # numba read its config already: update it directly
        numba_mod.config.CACHE_DIR = cache_dir


_configure_numba_cache()

from typing import TypedDict  # noqa: E402

import numpy as np  # noqa: E402
from numba import njit, prange  # noqa: E402
from numba import types as nt  # noqa: E402

#: The only fastmath flags used anywhere (never nnan/ninf: NaN/inf must survive).
FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}


class _Options(TypedDict, total=False):
    cache: bool
    nogil: bool
    fastmath: set[str]
    parallel: bool


_HELPER: _Options = {"cache": True, "nogil": True, "fastmath": FASTMATH}
_SERIAL: _Options = {"cache": True, "nogil": True, "fastmath": FASTMATH}
_PARALLEL: _Options = {"cache": True, "nogil": True, "fastmath": FASTMATH, "parallel": True}

# splitmix64 constants (Steele, Lea & Flood 2014); np.uint64 so numba keeps
# the arithmetic in uint64 instead of promoting to float64.
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MUL1 = np.uint64(0xBF58476D1CE4E5B9)
_MUL2 = np.uint64(0x94D049BB133111EB)
_SEED_SALT = np.uint64(0x5EED5EED5EED5EED)
_S11 = np.uint64(11)
_S27 = np.uint64(27)
_S30 = np.uint64(30)
_S31 = np.uint64(31)
_S32 = np.uint64(32)
_TWO = np.uint64(2)
_INV_2_53 = 1.0 / 9007199254740992.0
_TWO_PI = 2.0 * np.pi

_f32_2d = nt.float32[:, ::1]
_f32_1d = nt.float32[::1]
_f64_2d = nt.float64[:, ::1]
_f64_1d = nt.float64[::1]
_i64_2d = nt.int64[:, ::1]
_i64_1d = nt.int64[::1]
_u64_1d = nt.uint64[::1]
_u32_2d = nt.uint32[:, ::1]


# --------------------------------------------------------------------------
# per-element / per-image helpers (shared by both variants; no signature:
# compiled for the types of their callers, into them)


@njit(**_HELPER)
def _mix64(z):
    """splitmix64 finaliser: a bijective 64-bit mixer (z: uint64)."""
    z = (z ^ (z >> _S30)) * _MUL1
    z = (z ^ (z >> _S27)) * _MUL2
    return z ^ (z >> _S31)


@njit(**_HELPER)
def _hash_words(words, seed):
    """Hash an even number of uint32 words, two per 64-bit mixing step (seed: uint64)."""
    h = _mix64(seed ^ _SEED_SALT)
    for t in range(words.shape[0] // 2):
        w = nt.uint64(words[2 * t]) | (nt.uint64(words[2 * t + 1]) << _S32)
        h = _mix64((h ^ w) + _GOLDEN)
    return h


@njit(**_HELPER)
def _normal(key, counter):
    """Standard normal number ``counter`` of the stream keyed by ``key`` (uint64), in float64.

    Two splitmix64 outputs (stream positions 2c+1, 2c+2) give u1 in (0, 1]
    and u2 in [0, 1); Box-Muller turns them into one normal.
    """
    base = key + _TWO * nt.uint64(counter) * _GOLDEN
    x1 = _mix64(base + _GOLDEN)
    x2 = _mix64(base + _TWO * _GOLDEN)
    u1 = (nt.float64(x1 >> _S11) + 1.0) * _INV_2_53
    u2 = nt.float64(x2 >> _S11) * _INV_2_53
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(_TWO_PI * u2)


@njit(**_HELPER)
def _sample_image(mu, logvar, key, k, out):
    """Write the k samples of one image into ``out`` (k, D): sample j, column c is
    mu[c] + exp(logvar[c]/2) * normal number j*D + c of the stream keyed by ``key``."""
    d = mu.shape[0]
    for j in range(k):
        for c in range(d):
            eps = _normal(key, j * d + c)
            out[j, c] = mu[c] + np.exp(0.5 * nt.float64(logvar[c])) * eps


@njit(**_HELPER)
def _softmax_row(x, out):
    """Numerically stable softmax of one float32 row, summed in float64."""
    m = x[0]
    for c in range(1, x.shape[0]):
        if x[c] > m:
            m = x[c]
    s = 0.0
    for c in range(x.shape[0]):
        s += np.exp(nt.float64(x[c]) - m)
    for c in range(x.shape[0]):
        out[c] = np.exp(nt.float64(x[c]) - m) / s


@njit(**_HELPER)
def _vote_image(p, labels):
    """Vote over one image's (K, C) probabilities.

    Fills ``labels`` with each sample's argmax (the first on ties; a NaN never
    wins) and returns (majority, n_distinct, agreement, entropy): the majority
    label is the most frequent one, ties broken by the larger probability summed
    over the K samples, then by the smaller label; agreement = count(majority)/K;
    entropy is the natural-log Shannon entropy of the label histogram.
    """
    k, c_n = p.shape
    counts = np.zeros(c_n, np.int64)
    psum = np.zeros(c_n, np.float64)
    for j in range(k):
        best = 0
        for c in range(c_n):
            psum[c] += p[j, c]
            if p[j, c] > p[j, best]:
                best = c
        labels[j] = best
        counts[best] += 1
    maj = 0
    distinct = 0
    ent = 0.0
    for c in range(c_n):
        n = counts[c]
        if n > 0:
            distinct += 1
            q = n / k
            ent -= q * np.log(q)
        if n > counts[maj] or (n == counts[maj] and psum[c] > psum[maj]):
            maj = c
    return maj, distinct, counts[maj] / k, ent


@njit(**_HELPER)
def _recon_image(x, recon):
    """Mean and min over K of the per-pixel MSE between x and each recon row, summed in float64."""
    k, p = recon.shape
    total = 0.0
    best = np.inf
    for j in range(k):
        s = 0.0
        for q in range(p):
            diff = nt.float64(recon[j, q]) - nt.float64(x[q])
            s += diff * diff
        mse = s / p
        total += mse
        best = min(best, mse)
    return total / k, best


@njit(**_HELPER)
def _agree_image(labels, label):
    """Share of one image's K labels equal to ``label``."""
    n = 0
    for j in range(labels.shape[0]):
        n += labels[j] == label
    return n / labels.shape[0]


@njit(**_HELPER)
def _kl_image(mu, logvar):
    """KL(N(mu, exp(logvar)) || N(0, I)) of one image."""
    s = 0.0
    for c in range(mu.shape[0]):
        lv = nt.float64(logvar[c])
        m = nt.float64(mu[c])
        s += np.exp(lv) + m * m - 1.0 - lv
    return 0.5 * s


@njit(**_HELPER)
def _spread_image(logvar):
    """Mean over D of the posterior standard deviation exp(logvar/2) of one image."""
    s = 0.0
    for c in range(logvar.shape[0]):
        s += np.exp(0.5 * nt.float64(logvar[c]))
    return s / logvar.shape[0]


@njit(**_HELPER)
def _score_image(x, logits_in, logits_rec, recon, mu, logvar, labels, p_in, p_rec, out):
    """Everything ``score`` computes for one image.  Fills labels (K,) and out
    with the signals in SCORE_NAMES order; returns (label, majority, n_distinct,
    confidence, agreement)."""
    k = logits_rec.shape[0]
    _softmax_row(logits_in, p_in)
    label = 0
    for c in range(p_in.shape[0]):
        if p_in[c] > p_in[label]:
            label = c
    for j in range(k):
        _softmax_row(logits_rec[j], p_rec[j])
    majority, distinct, agreement, entropy = _vote_image(p_rec, labels)
    mse_mean, mse_min = _recon_image(x, recon)
    one = nt.float32(1.0)
    out[0] = one - nt.float32(agreement)
    out[1] = one - nt.float32(_agree_image(labels, label))
    out[2] = entropy
    out[3] = mse_mean
    out[4] = mse_min
    out[5] = _kl_image(mu, logvar)
    out[6] = _spread_image(logvar)
    out[7] = one - p_in[label]
    return label, majority, distinct, p_in[label], agreement


# --------------------------------------------------------------------------
# batch loops: serial and parallel twins with identical bodies.
# Written out twice, not made from one function: numba's cache does not key on ``parallel``.

_SIG_SEEDS = nt.void(_u32_2d, nt.uint64, _u64_1d)


@njit(_SIG_SEEDS, **_SERIAL)
def image_seeds_serial(words, seed, out):
    for i in range(words.shape[0]):
        out[i] = _hash_words(words[i], seed)


@njit(_SIG_SEEDS, **_PARALLEL)
def image_seeds_parallel(words, seed, out):
    for i in prange(words.shape[0]):
        out[i] = _hash_words(words[i], seed)


_SIG_SAMPLE = nt.void(_f32_2d, _f32_2d, _u64_1d, nt.int64, _f32_2d)


@njit(_SIG_SAMPLE, **_SERIAL)
def sample_serial(mu, logvar, seeds, k, out):
    for i in range(mu.shape[0]):
        _sample_image(mu[i], logvar[i], seeds[i], k, out[i * k:(i + 1) * k])


@njit(_SIG_SAMPLE, **_PARALLEL)
def sample_parallel(mu, logvar, seeds, k, out):
    for i in prange(mu.shape[0]):
        _sample_image(mu[i], logvar[i], seeds[i], k, out[i * k:(i + 1) * k])


_SIG_SCORE = nt.void(_f32_2d, _f32_2d, _f32_2d, _f32_2d, _f32_2d, nt.int64, _i64_1d,
                     _f32_1d, _i64_2d, _i64_1d, _i64_1d, _f32_1d, _f32_2d)


@njit(_SIG_SCORE, **_SERIAL)
def score_serial(x, logits, recon, mu, logvar, k, label, confidence, labels,
                  majority, n_distinct, agreement, out):
    b = x.shape[0]
    p_in = np.empty(logits.shape[1], np.float32)
    p_rec = np.empty((k, logits.shape[1]), np.float32)
    for i in range(b):
        label[i], majority[i], n_distinct[i], confidence[i], agreement[i] = _score_image(
            x[i], logits[i], logits[b + i * k:b + (i + 1) * k], recon[i * k:(i + 1) * k],
            mu[i], logvar[i], labels[i], p_in, p_rec, out[i])


@njit(_SIG_SCORE, **_PARALLEL)
def score_parallel(x, logits, recon, mu, logvar, k, label, confidence, labels,
                    majority, n_distinct, agreement, out):
    b = x.shape[0]
    for i in prange(b):
        p_in = np.empty(logits.shape[1], np.float32)
        p_rec = np.empty((k, logits.shape[1]), np.float32)
        label[i], majority[i], n_distinct[i], confidence[i], agreement[i] = _score_image(
            x[i], logits[i], logits[b + i * k:b + (i + 1) * k], recon[i * k:(i + 1) * k],
            mu[i], logvar[i], labels[i], p_in, p_rec, out[i])


_SIG_P_VALUES = nt.void(_f32_2d, _f32_2d, _f32_1d, nt.boolean, _f64_2d, _f64_1d)


@njit(_SIG_P_VALUES, cache=True, nogil=True)  # no fastmath: the same logs and sums as kernels_numpy
def p_values_serial(table, scores, combined, use_min_p, p, p_combined):
    n, m = table.shape[1], combined.shape[0]
    for i in range(scores.shape[0]):
        total, lowest = 0.0, 1.0
        for j in range(table.shape[0]):
            pj = (1.0 + (n - np.searchsorted(table[j], scores[i, j]))) / (n + 1.0)
            p[i, j] = pj
            total += np.log(pj)
            lowest = min(lowest, pj)
        stat = nt.float32(-np.log(lowest) if use_min_p else -2.0 * total)
        p_combined[i] = (1.0 + (m - np.searchsorted(combined, stat))) / (m + 1.0)
