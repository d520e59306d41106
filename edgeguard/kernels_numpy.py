"""Vectorised NumPy twins of the numba kernels in ``edgeguard.kernels``, for one-shot processes.

Same maths, same counter-based normal stream, float64 accumulation, so screenings match the numba
kernels to float32 rounding (the tests check signals and verdicts agree). Why a second backend:
importing numba and loading the compiled kernels from its cache takes about a second, which is
most of a fresh ``edgeguard detect one.png``; these need only NumPy. Long-running processes
(the webcam, an embedding app, big batches) are better served by the numba kernels, which make
fewer Python-level calls per screening.

Inputs are the arrays ``Guard.analyze`` passes (float32/uint64/int64, C-contiguous, shapes
already checked); ``edgeguard.kernels`` is the validated public API. The public names are what
``Guard`` calls (``image_seeds``, ``sample_latents``, ``score``, ``p_values``, ``warmup``) and the
conformal pieces ``edgeguard.calibration`` uses (``conformal_p``, ``fisher``, ``min_p``).
"""

from __future__ import annotations

import time

import numpy as np

from edgeguard.contract import SCORE_NAMES

__all__ = ["SCORE_NAMES", "conformal_p", "fisher", "image_seeds", "min_p", "normal_noise", "p_values",
           "sample_latents", "score", "warmup"]

#: What ``score`` returns: label, confidence, labels (B, k), majority, n_distinct, agreement, scores (B, S).
ScoreResult = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_TWO_GOLDEN = np.uint64(2 * 0x9E3779B97F4A7C15 % 2**64)
_MUL1 = np.uint64(0xBF58476D1CE4E5B9)
_MUL2 = np.uint64(0x94D049BB133111EB)
_SALT = np.uint64(0x5EED5EED5EED5EED)


def _mix64(z: np.ndarray) -> np.ndarray:
    z = (z ^ (z >> np.uint64(30))) * _MUL1
    z = (z ^ (z >> np.uint64(27))) * _MUL2
    return z ^ (z >> np.uint64(31))


def image_seeds(x: np.ndarray, seed: int) -> np.ndarray:
    """The 64-bit hash of each image's bytes and ``seed`` (see ``edgeguard.kernels.image_seeds``)."""
    words = x.view(np.uint32).astype(np.uint64)
    pairs = words[:, 0::2] | (words[:, 1::2] << np.uint64(32))
    with np.errstate(over="ignore"):
        h = _mix64(np.full(x.shape[0], np.uint64(int(seed) % 2**64)) ^ _SALT)
        for t in range(pairs.shape[1]):  # a hash chain: sequential by nature, vectorised over the batch
            h = _mix64((h ^ pairs[:, t]) + _GOLDEN)
    return h


def normal_noise(seeds: np.ndarray, k: int, d: int) -> np.ndarray:
    """The standard-normal eps of ``sample_latents``: (B*k, d), in float64."""
    with np.errstate(over="ignore"):
        base = seeds[:, None] + np.arange(k * d, dtype=np.uint64)[None, :] * _TWO_GOLDEN
        x1, x2 = _mix64(base + _GOLDEN), _mix64(base + _TWO_GOLDEN)
    u1 = ((x1 >> np.uint64(11)).astype(np.float64) + 1.0) / 2.0**53
    u2 = (x2 >> np.uint64(11)).astype(np.float64) / 2.0**53
    return (np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)).reshape(-1, d)


def sample_latents(mu: np.ndarray, logvar: np.ndarray, seeds: np.ndarray, k: int) -> np.ndarray:
    """z = mu + exp(logvar/2) * eps, shape (B*k, D), image-major rows."""
    b, d = mu.shape
    eps = normal_noise(seeds, k, d).reshape(b, k, d)
    z = mu[:, None, :].astype(np.float64) + np.exp(0.5 * logvar[:, None, :].astype(np.float64)) * eps
    return z.reshape(b * k, d).astype(np.float32)


def _softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def _vote(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(labels, majority, n_distinct, agreement, entropy) of (B, K, C) probabilities, with the tie rules
    of ``edgeguard.kernels.score``."""
    b, k, c = probs.shape
    labels = probs.argmax(axis=2)
    counts = (labels[:, :, None] == np.arange(c)).sum(axis=1)  # (B, C)
    psum = probs.sum(axis=1, dtype=np.float64)  # <= k < k + 1: only breaks ties between equal counts
    majority = (counts * (k + 1.0) + psum).argmax(axis=1)  # then the smaller label (argmax takes the first)
    q = counts / k
    entropy = -np.where(counts > 0, q * np.log(np.where(counts > 0, q, 1.0)), 0.0).sum(axis=1)
    agreement = counts[np.arange(b), majority] / k
    return (labels.astype(np.int64), majority.astype(np.int64), (counts > 0).sum(axis=1).astype(np.int64),
            agreement.astype(np.float32), entropy.astype(np.float32))


def _input_agreement(labels: np.ndarray, input_labels: np.ndarray) -> np.ndarray:
    return (labels == input_labels[:, None]).mean(axis=1).astype(np.float32)


def _recon_errors(x: np.ndarray, recon: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    diff = recon.reshape(x.shape[0], k, x.shape[1]).astype(np.float64) - x[:, None, :]
    mse = np.einsum("bkp,bkp->bk", diff, diff) / x.shape[1]
    return mse.mean(axis=1).astype(np.float32), mse.min(axis=1).astype(np.float32)


def _kl_divergence(mu: np.ndarray, logvar: np.ndarray) -> np.ndarray:
    m, lv = mu.astype(np.float64), logvar.astype(np.float64)
    return (0.5 * (np.exp(lv) + m * m - 1.0 - lv).sum(axis=1)).astype(np.float32)


def _posterior_spread(logvar: np.ndarray) -> np.ndarray:
    return np.exp(0.5 * logvar.astype(np.float64)).mean(axis=1).astype(np.float32)


def score(x: np.ndarray, logits: np.ndarray, recon: np.ndarray, mu: np.ndarray, logvar: np.ndarray,
          k: int) -> ScoreResult:
    """The post-processing of one screening, the signals in SCORE_NAMES order (see ``edgeguard.kernels.score``)."""
    b = x.shape[0]
    probs = _softmax(logits)
    label, confidence = probs[:b].argmax(axis=1), probs[:b].max(axis=1)
    labels, majority, n_distinct, agreement, entropy = _vote(probs[b:].reshape(b, k, probs.shape[1]))
    mse_mean, mse_min = _recon_errors(x, recon, k)
    scores = np.stack([1.0 - agreement, 1.0 - _input_agreement(labels, label), entropy, mse_mean, mse_min,
                       _kl_divergence(mu, logvar), _posterior_spread(logvar), 1.0 - confidence], axis=1)
    return label.astype(np.int64), confidence, labels, majority, n_distinct, agreement, scores


def conformal_p(sorted_scores: np.ndarray, s: np.ndarray) -> np.ndarray:
    """p = (1 + #{calibration >= s}) / (n + 1), vectorised over s (see edgeguard.calibration)."""
    n = sorted_scores.size
    at_least = n - np.searchsorted(sorted_scores, s, side="left")
    return ((1.0 + at_least) / (n + 1.0)).astype(np.float64)


def fisher(p: np.ndarray) -> np.ndarray:
    """Fisher's combination statistic over the last axis: -2 * sum(log p)."""
    return -2.0 * np.log(p).sum(axis=-1)


def min_p(p: np.ndarray) -> np.ndarray:
    """Tippett's (min-p) combination statistic over the last axis: -log(min p) (higher = more anomalous)."""
    return -np.log(p.min(axis=-1))


def p_values(table: np.ndarray, scores: np.ndarray, combined: np.ndarray,
             use_min_p: bool) -> tuple[np.ndarray, np.ndarray]:
    """Conformal p-values of S calibrated signals and their combined p-value (see edgeguard.calibration).

    table (S, n): each signal's sorted clean scores; scores (B, S); combined (m,): the sorted clean
    combination statistics; use_min_p: Tippett's statistic instead of Fisher's. All float32.
    Returns p (B, S) and p_combined (B,), float64.
    """
    p = np.stack([conformal_p(table[j], scores[:, j]) for j in range(table.shape[0])], axis=1).reshape(scores.shape)
    return p, conformal_p(combined, (min_p if use_min_p else fisher)(p).astype(np.float32))


def warmup() -> float:
    """Nothing to compile; here so that both backends answer the same calls."""
    t0 = time.perf_counter()
    return time.perf_counter() - t0
