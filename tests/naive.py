"""Plain-NumPy twins of edgeguard.kernels, written for clarity, not speed."""

import numpy as np

GOLDEN = np.uint64(0x9E3779B97F4A7C15)
MUL1 = np.uint64(0xBF58476D1CE4E5B9)
MUL2 = np.uint64(0x94D049BB133111EB)
SEED_SALT = np.uint64(0x5EED5EED5EED5EED)
TWO_GOLDEN = np.uint64(2 * 0x9E3779B97F4A7C15 % 2**64)


def mix64(z):
    """splitmix64 finaliser on a uint64 array (wrap-around arithmetic)."""
    z = np.asarray(z, np.uint64)
    z = (z ^ (z >> np.uint64(30))) * MUL1
    z = (z ^ (z >> np.uint64(27))) * MUL2
    return z ^ (z >> np.uint64(31))


def image_seeds(x, seed):
    words = x.view(np.uint32).astype(np.uint64)
    pairs = words[:, 0::2] | (words[:, 1::2] << np.uint64(32))
    h = mix64(np.full(x.shape[0], np.uint64(seed % 2**64)) ^ SEED_SALT)
    for t in range(pairs.shape[1]):
        h = mix64((h ^ pairs[:, t]) + GOLDEN)
    return h


def normal_noise(seeds, k, d):
    counter = np.arange(k * d, dtype=np.uint64)
    base = seeds[:, None] + counter[None, :] * TWO_GOLDEN
    x1 = mix64(base + GOLDEN)
    x2 = mix64(base + TWO_GOLDEN)
    u1 = ((x1 >> np.uint64(11)).astype(np.float64) + 1.0) / 2.0**53
    u2 = (x2 >> np.uint64(11)).astype(np.float64) / 2.0**53
    eps = np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)
    return eps.reshape(-1, d)  # float64; row i*k + j, column c = counter j*d + c


def sample_latents(mu, logvar, seeds, k):
    eps = normal_noise(seeds, k, mu.shape[1])
    mu64 = np.repeat(mu.astype(np.float64), k, axis=0)
    std = np.repeat(np.exp(0.5 * logvar.astype(np.float64)), k, axis=0)
    return (mu64 + std * eps).astype(np.float32)


def softmax(logits):
    x = logits.astype(np.float64)
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def vote(probs):
    b, k, c = probs.shape
    labels = probs.argmax(axis=2)
    majority = np.empty(b, np.int64)
    n_distinct = np.empty(b, np.int64)
    agreement = np.empty(b, np.float32)
    entropy = np.empty(b, np.float32)
    for i in range(b):
        counts = np.bincount(labels[i], minlength=c)
        psum = probs[i].astype(np.float64).sum(axis=0)
        # most votes, then largest summed probability, then smallest label
        maj = min(range(c), key=lambda lab: (-counts[lab], -psum[lab], lab))
        q = counts[counts > 0] / k
        majority[i] = maj
        n_distinct[i] = len(q)
        agreement[i] = counts[maj] / k
        entropy[i] = -(q * np.log(q)).sum()
    return labels.astype(np.int64), majority, n_distinct, agreement, entropy


def input_agreement(labels, input_labels):
    return (labels == input_labels[:, None]).mean(axis=1).astype(np.float32)


def recon_errors(x, recon, k):
    r = recon.astype(np.float64).reshape(x.shape[0], k, x.shape[1])
    mse = ((r - x.astype(np.float64)[:, None, :]) ** 2).mean(axis=2)
    return mse.mean(axis=1).astype(np.float32), mse.min(axis=1).astype(np.float32)


def kl_divergence(mu, logvar):
    m, lv = mu.astype(np.float64), logvar.astype(np.float64)
    return (0.5 * (np.exp(lv) + m**2 - 1.0 - lv).sum(axis=1)).astype(np.float32)


def posterior_spread(logvar):
    return np.exp(0.5 * logvar.astype(np.float64)).mean(axis=1).astype(np.float32)
