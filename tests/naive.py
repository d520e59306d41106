"""Plain-loop twins of the kernels, an oracle independent of edgeguard.kernels and edgeguard.kernels_numpy.

One element at a time, in Python ints and floats: splitmix64 with the 64-bit wrap-around written out,
Box-Muller per element, softmax, the vote by counting, the signals as sums over pixels and latent
dimensions, and the conformal p-values by counting calibration scores. Written from the definitions in
the kernels' docstrings, for clarity, not speed (keep the batches small).
"""

from __future__ import annotations

import math

import numpy as np

MASK = 2**64 - 1
GOLDEN = 0x9E3779B97F4A7C15
MUL1 = 0xBF58476D1CE4E5B9
MUL2 = 0x94D049BB133111EB
SEED_SALT = 0x5EED5EED5EED5EED
F32 = np.float32


def mix64(z: int) -> int:
    """splitmix64 finaliser on one 64-bit integer."""
    z = ((z ^ (z >> 30)) * MUL1) & MASK
    z = ((z ^ (z >> 27)) * MUL2) & MASK
    return z ^ (z >> 31)


def image_seed(image: np.ndarray, seed: int) -> int:
    """The hash of one float32 image's bytes: its uint32 words two by two (low word first) into a mix chain."""
    words = [int(w) for w in image.view(np.uint32)]
    h = mix64((seed % 2**64) ^ SEED_SALT)
    for t in range(len(words) // 2):
        pair = words[2 * t] | (words[2 * t + 1] << 32)
        h = mix64(((h ^ pair) + GOLDEN) & MASK)
    return h


def image_seeds(x: np.ndarray, seed: int) -> np.ndarray:
    return np.array([image_seed(image, seed) for image in x], dtype=np.uint64)


def normal(key: int, counter: int) -> float:
    """Standard normal number ``counter`` of the stream keyed by ``key``: stream positions 2c+1 and 2c+2
    (splitmix64 of key + position * golden) give u1 in (0, 1] and u2 in [0, 1), then Box-Muller."""
    x1 = mix64((key + (2 * counter + 1) * GOLDEN) & MASK)
    x2 = mix64((key + (2 * counter + 2) * GOLDEN) & MASK)
    u1 = ((x1 >> 11) + 1) / 2**53
    u2 = (x2 >> 11) / 2**53
    return math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)


def normal_noise(seeds: np.ndarray, k: int, d: int) -> np.ndarray:
    """(B*k, d) float64: row i*k + j, column c is number j*d + c of the stream keyed by seeds[i]."""
    out = np.empty((len(seeds) * k, d))
    for i, key in enumerate(seeds):
        for j in range(k):
            for c in range(d):
                out[i * k + j, c] = normal(int(key), j * d + c)
    return out


def sample_latents(mu: np.ndarray, logvar: np.ndarray, seeds: np.ndarray, k: int) -> np.ndarray:
    b, d = mu.shape
    z = np.empty((b * k, d), np.float32)
    for i in range(b):
        for j in range(k):
            for c in range(d):
                eps = normal(int(seeds[i]), j * d + c)
                z[i * k + j, c] = float(mu[i, c]) + math.exp(0.5 * float(logvar[i, c])) * eps
    return z


def argmax(row) -> int:
    """The first index of the largest value (a NaN never wins)."""
    best = 0
    for c in range(1, len(row)):
        if row[c] > row[best]:
            best = c
    return best


def softmax_row(logits) -> list:
    """float32 probabilities of one row: exp(x - max) / sum, in float64."""
    top = float(logits[argmax(logits)])
    exps = [math.exp(float(v) - top) for v in logits]
    total = 0.0
    for e in exps:
        total += e
    return [F32(e / total) for e in exps]


def softmax(logits: np.ndarray) -> np.ndarray:
    return np.array([softmax_row(row) for row in logits], np.float32).reshape(logits.shape)


def vote(probs) -> tuple[list, int, int, float, float]:
    """One image's (K, C) probabilities -> (labels, majority, n_distinct, agreement, entropy), by counting:
    each sample votes for its argmax; the most votes win, then the larger summed probability, then the
    smaller label."""
    k, n_classes = len(probs), len(probs[0])
    labels = [argmax(row) for row in probs]
    counts = [labels.count(c) for c in range(n_classes)]
    summed = [0.0] * n_classes
    for row in probs:
        for c in range(n_classes):
            summed[c] += float(row[c])
    majority = 0
    for c in range(1, n_classes):
        if counts[c] > counts[majority] or (counts[c] == counts[majority] and summed[c] > summed[majority]):
            majority = c
    entropy = 0.0
    for c in range(n_classes):
        if counts[c]:
            entropy -= counts[c] / k * math.log(counts[c] / k)
    return labels, majority, sum(1 for n in counts if n), counts[majority] / k, entropy


def mse(a, b) -> float:
    total = 0.0
    for p, q in zip(a, b):
        total += (float(p) - float(q)) ** 2
    return total / len(a)


def kl_divergence(mu, logvar) -> float:
    """KL(N(mu, exp(logvar)) || N(0, I)) of one image."""
    total = 0.0
    for m, lv in zip(mu, logvar):
        total += math.exp(float(lv)) + float(m) ** 2 - 1.0 - float(lv)
    return 0.5 * total


def posterior_spread(logvar) -> float:
    """The mean posterior standard deviation exp(logvar/2) of one image."""
    return sum(math.exp(0.5 * float(lv)) for lv in logvar) / len(logvar)


def score(x, logits, recon, mu, logvar, k):
    """What kernels.score returns, one image at a time: (label, confidence, labels (B, k), majority,
    n_distinct, agreement, scores (B, 8) in the order disagreement, input_mismatch, vote_entropy,
    recon_mse, recon_mse_min, kl, posterior_spread, low_confidence)."""
    b = len(x)
    label, confidence, labels, majority, n_distinct, agreement = [], [], [], [], [], []
    scores = np.empty((b, 8), np.float32)
    for i in range(b):
        p_in = softmax_row(logits[i])
        own = argmax(p_in)
        rows = [softmax_row(logits[b + i * k + j]) for j in range(k)]
        votes, top, distinct, share, entropy = vote(rows)
        errors = [mse(recon[i * k + j], x[i]) for j in range(k)]
        mismatch = sum(1 for v in votes if v == own) / k
        scores[i] = [F32(1) - F32(share), F32(1) - F32(mismatch), entropy, sum(errors) / k, min(errors),
                     kl_divergence(mu[i], logvar[i]), posterior_spread(logvar[i]), F32(1) - p_in[own]]
        label.append(own)
        confidence.append(p_in[own])
        labels.append(votes)
        majority.append(top)
        n_distinct.append(distinct)
        agreement.append(share)
    ints = [np.array(a, np.int64) for a in (label, labels, majority, n_distinct)]
    return (ints[0], np.array(confidence, np.float32), ints[1].reshape(b, k), ints[2], ints[3],
            np.array(agreement, np.float32), scores)


def conformal_p(calibration, s: float) -> float:
    """(1 + #{calibration scores >= s}) / (n + 1)."""
    at_least = sum(1 for t in calibration if t >= s)
    return (1.0 + at_least) / (len(calibration) + 1.0)


def p_values(table, scores, combined, use_min_p: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per-signal conformal p-values (B, S) and the combined p-value (B,): Fisher's -2 sum(log p)
    (or Tippett's -log(min p)) as a float32, itself conformally calibrated against ``combined``."""
    p = np.empty((len(scores), len(table)))
    p_combined = np.empty(len(scores))
    for i, row in enumerate(scores):
        total = 0.0
        for j, s in enumerate(row):
            p[i, j] = conformal_p(table[j], s)
            total += math.log(p[i, j])
        stat = F32(-math.log(min(p[i])) if use_min_p else -2.0 * total)
        p_combined[i] = conformal_p(combined, stat)
    return p, p_combined
