"""Numba kernels for screening: latent sampling, voting and scoring.

Every public function checks dtypes, shapes and contiguity in plain Python
(TypeError for a wrong dtype, ValueError for a wrong shape or layout), then
runs a compiled kernel that writes into preallocated outputs.  Kernels looping
over the batch come in a serial and a ``parallel=True`` variant sharing the
same per-image code, so results never depend on batch composition, position
or thread count.  Arrays are float32, labels/counts int64, seeds uint64.
"""

from __future__ import annotations

import os
import sys
import threading
import time


def _configure_numba_cache() -> None:
    """Point numba's on-disk cache somewhere writable.

    An existing ``NUMBA_CACHE_DIR`` wins.  Otherwise, if this package's
    directory is not writable (e.g. a system-wide install), use
    ``$XDG_CACHE_HOME/edgeguard/numba`` (default ``~/.cache/edgeguard/numba``).
    Works whether or not numba has already been imported.
    """
    cache_dir = os.environ.get("NUMBA_CACHE_DIR", "")
    if not cache_dir:
        pkg_dir = os.path.dirname(os.path.abspath(__file__))
        pycache = os.path.join(pkg_dir, "__pycache__")
        in_tree_ok = os.access(pkg_dir, os.W_OK) and (
            not os.path.isdir(pycache) or os.access(pycache, os.W_OK)
        )
        if in_tree_ok:
            return
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(
            os.path.expanduser("~"), ".cache"
        )
        cache_dir = os.path.join(base, "edgeguard", "numba")
        os.environ["NUMBA_CACHE_DIR"] = cache_dir
    numba_mod = sys.modules.get("numba")
    if numba_mod is not None:  # numba read its config already: update it directly
        numba_mod.config.CACHE_DIR = cache_dir


_configure_numba_cache()

import numpy as np  # noqa: E402
from numba import njit, prange  # noqa: E402
from numba import types as nt  # noqa: E402

from edgeguard.kernels_numpy import SCORE_NAMES  # noqa: E402  (numba-free: numpy only)

__all__ = [
    "FASTMATH",
    "N_PIXELS",
    "PARALLEL_MIN_BATCH",
    "image_seeds",
    "input_agreement",
    "kl_divergence",
    "normal_noise",
    "p_values",
    "posterior_spread",
    "recon_errors",
    "sample_latents",
    "SCORE_NAMES",
    "score",
    "softmax",
    "vote",
    "warmup",
]

#: The only fastmath flags used anywhere (never nnan/ninf: NaN/inf must survive).
FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}

#: Pixels per flattened image.
N_PIXELS = 784

#: Batches with at least this many images use the parallel variants.
#: Measured with benchmarks/kernel_threshold.py on a 2-core AMD EPYC (omp
#: layer, 2 threads, K=8, D=16), median microseconds serial/parallel:
#:   B=16:  seeds 32/20   sample 55/32   recon 19/15  vote 6.0/6.2  kl 3.7/7.7
#:   B=32:  seeds 61/35   sample 110/59  recon 32/21  vote 9.2/9.8  kl 5.1/5.6
#:   B=64:  seeds 117/62  sample 221/110 recon 60/37  vote 15/11    kl 8.0/7.0
#:   B=128: seeds 231/121 sample 536/217 recon 114/68 vote 28/17    kl 14/10
#: The heavy kernels break even near B=16, the light ones near B=48-64.  64
#: keeps small interactive batches serial: when another process keeps the
#: cores busy a parallel launch can stall for a scheduler time slice (~8 ms).
PARALLEL_MIN_BATCH = 64

_SERIAL = dict(cache=True, nogil=True, fastmath=FASTMATH)
_PARALLEL = dict(cache=True, nogil=True, fastmath=FASTMATH, parallel=True)
_HELPER = dict(cache=True, nogil=True, fastmath=FASTMATH)

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
_ONE = np.uint64(1)
_TWO = np.uint64(2)
_INV_2_53 = 1.0 / 9007199254740992.0
_TWO_PI = 2.0 * np.pi

_f32_2d = nt.float32[:, ::1]
_f32_3d = nt.float32[:, :, ::1]
_f32_1d = nt.float32[::1]
_f64_2d = nt.float64[:, ::1]
_f64_1d = nt.float64[::1]
_i64_2d = nt.int64[:, ::1]
_i64_1d = nt.int64[::1]
_u64_1d = nt.uint64[::1]
_u32_2d = nt.uint32[:, ::1]


# --------------------------------------------------------------------------
# per-element / per-image helpers (shared by both variants)


@njit(nt.uint64(nt.uint64), **_HELPER)
def _mix64(z):
    """splitmix64 finaliser: a bijective 64-bit mixer."""
    z = (z ^ (z >> _S30)) * _MUL1
    z = (z ^ (z >> _S27)) * _MUL2
    return z ^ (z >> _S31)


@njit(nt.uint64(nt.uint32[::1], nt.uint64), **_HELPER)
def _hash_words(words, seed):
    """Hash an even number of uint32 words, two per 64-bit mixing step."""
    h = _mix64(seed ^ _SEED_SALT)
    for t in range(words.shape[0] // 2):
        w = nt.uint64(words[2 * t]) | (nt.uint64(words[2 * t + 1]) << _S32)
        h = _mix64((h ^ w) + _GOLDEN)
    return h


@njit(nt.float64(nt.uint64, nt.int64), **_HELPER)
def _normal(key, counter):
    """Standard normal number ``counter`` of the stream keyed by ``key``.

    Two splitmix64 outputs (stream positions 2c+1, 2c+2) give u1 in (0, 1]
    and u2 in [0, 1); Box-Muller turns them into one normal, in float64.
    """
    base = key + _TWO * nt.uint64(counter) * _GOLDEN
    x1 = _mix64(base + _GOLDEN)
    x2 = _mix64(base + _TWO * _GOLDEN)
    u1 = (nt.float64(x1 >> _S11) + 1.0) * _INV_2_53
    u2 = nt.float64(x2 >> _S11) * _INV_2_53
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(_TWO_PI * u2)


@njit(nt.void(nt.float32[::1], nt.float32[::1], nt.uint64, nt.int64, _f32_2d),
      **_HELPER)
def _sample_image(mu, logvar, key, k, out):
    """Write the k samples of one image into ``out`` (k, D)."""
    d = mu.shape[0]
    for j in range(k):
        for c in range(d):
            eps = _normal(key, j * d + c)
            out[j, c] = mu[c] + np.exp(0.5 * nt.float64(logvar[c])) * eps


@njit(nt.void(_f32_1d, _f32_1d), **_HELPER)
def _softmax_row(x, out):
    m = x[0]
    for c in range(1, x.shape[0]):
        if x[c] > m:
            m = x[c]
    s = 0.0
    for c in range(x.shape[0]):
        s += np.exp(nt.float64(x[c]) - m)
    for c in range(x.shape[0]):
        out[c] = np.exp(nt.float64(x[c]) - m) / s


@njit(nt.Tuple((nt.int64, nt.int64, nt.float64, nt.float64))(_f32_2d, _i64_1d),
      **_HELPER)
def _vote_image(p, labels):
    """Vote over one image's (K, C) probabilities.

    Fills ``labels`` and returns (majority, n_distinct, agreement, entropy).
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


@njit(nt.UniTuple(nt.float64, 2)(nt.float32[::1], _f32_2d), **_HELPER)
def _recon_image(x, recon):
    """Mean and min over K of the per-pixel MSE between x and each recon row."""
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


@njit(nt.float64(_i64_1d, nt.int64), **_HELPER)
def _agree_image(labels, label):
    """Share of one image's K labels equal to ``label``."""
    n = 0
    for j in range(labels.shape[0]):
        n += labels[j] == label
    return n / labels.shape[0]


@njit(nt.float64(_f32_1d, _f32_1d), **_HELPER)
def _kl_image(mu, logvar):
    s = 0.0
    for c in range(mu.shape[0]):
        lv = nt.float64(logvar[c])
        m = nt.float64(mu[c])
        s += np.exp(lv) + m * m - 1.0 - lv
    return 0.5 * s


@njit(nt.float64(_f32_1d), **_HELPER)
def _spread_image(logvar):
    s = 0.0
    for c in range(logvar.shape[0]):
        s += np.exp(0.5 * nt.float64(logvar[c]))
    return s / logvar.shape[0]


# --------------------------------------------------------------------------
# batch loops: serial and parallel twins with identical bodies

_SIG_SEEDS = nt.void(_u32_2d, nt.uint64, _u64_1d)


@njit(_SIG_SEEDS, **_SERIAL)
def _image_seeds_serial(words, seed, out):
    for i in range(words.shape[0]):
        out[i] = _hash_words(words[i], seed)


@njit(_SIG_SEEDS, **_PARALLEL)
def _image_seeds_parallel(words, seed, out):
    for i in prange(words.shape[0]):
        out[i] = _hash_words(words[i], seed)


_SIG_SAMPLE = nt.void(_f32_2d, _f32_2d, _u64_1d, nt.int64, _f32_2d)


@njit(_SIG_SAMPLE, **_SERIAL)
def _sample_serial(mu, logvar, seeds, k, out):
    for i in range(mu.shape[0]):
        _sample_image(mu[i], logvar[i], seeds[i], k, out[i * k:(i + 1) * k])


@njit(_SIG_SAMPLE, **_PARALLEL)
def _sample_parallel(mu, logvar, seeds, k, out):
    for i in prange(mu.shape[0]):
        _sample_image(mu[i], logvar[i], seeds[i], k, out[i * k:(i + 1) * k])


_SIG_NOISE = nt.void(_u64_1d, nt.int64, _f32_2d)


@njit(_SIG_NOISE, **_SERIAL)
def _noise_serial(seeds, k, out):
    d = out.shape[1]
    for i in range(seeds.shape[0]):
        for j in range(k):
            for c in range(d):
                out[i * k + j, c] = _normal(seeds[i], j * d + c)


@njit(_SIG_NOISE, **_PARALLEL)
def _noise_parallel(seeds, k, out):
    d = out.shape[1]
    for i in prange(seeds.shape[0]):
        for j in range(k):
            for c in range(d):
                out[i * k + j, c] = _normal(seeds[i], j * d + c)


_SIG_SOFTMAX = nt.void(_f32_2d, _f32_2d)


@njit(_SIG_SOFTMAX, **_SERIAL)
def _softmax_serial(x, out):
    for i in range(x.shape[0]):
        _softmax_row(x[i], out[i])


@njit(_SIG_SOFTMAX, **_PARALLEL)
def _softmax_parallel(x, out):
    for i in prange(x.shape[0]):
        _softmax_row(x[i], out[i])


_SIG_VOTE = nt.void(_f32_3d, _i64_2d, _i64_1d, _i64_1d, _f32_1d, _f32_1d)


@njit(_SIG_VOTE, **_SERIAL)
def _vote_serial(probs, labels, majority, n_distinct, agreement, entropy):
    for i in range(probs.shape[0]):
        majority[i], n_distinct[i], agreement[i], entropy[i] = _vote_image(
            probs[i], labels[i])


@njit(_SIG_VOTE, **_PARALLEL)
def _vote_parallel(probs, labels, majority, n_distinct, agreement, entropy):
    for i in prange(probs.shape[0]):
        majority[i], n_distinct[i], agreement[i], entropy[i] = _vote_image(
            probs[i], labels[i])


_SIG_AGREE = nt.void(_i64_2d, _i64_1d, _f32_1d)


@njit(_SIG_AGREE, **_SERIAL)
def _agree_serial(labels, input_labels, out):
    for i in range(labels.shape[0]):
        out[i] = _agree_image(labels[i], input_labels[i])


@njit(_SIG_AGREE, **_PARALLEL)
def _agree_parallel(labels, input_labels, out):
    for i in prange(labels.shape[0]):
        out[i] = _agree_image(labels[i], input_labels[i])


_SIG_RECON = nt.void(_f32_2d, _f32_2d, nt.int64, _f32_1d, _f32_1d)


@njit(_SIG_RECON, **_SERIAL)
def _recon_serial(x, recon, k, mse_mean, mse_min):
    for i in range(x.shape[0]):
        mse_mean[i], mse_min[i] = _recon_image(x[i], recon[i * k:(i + 1) * k])


@njit(_SIG_RECON, **_PARALLEL)
def _recon_parallel(x, recon, k, mse_mean, mse_min):
    for i in prange(x.shape[0]):
        mse_mean[i], mse_min[i] = _recon_image(x[i], recon[i * k:(i + 1) * k])


_SIG_KL = nt.void(_f32_2d, _f32_2d, _f32_1d)


@njit(_SIG_KL, **_SERIAL)
def _kl_serial(mu, logvar, out):
    for i in range(mu.shape[0]):
        out[i] = _kl_image(mu[i], logvar[i])


@njit(_SIG_KL, **_PARALLEL)
def _kl_parallel(mu, logvar, out):
    for i in prange(mu.shape[0]):
        out[i] = _kl_image(mu[i], logvar[i])


_SIG_SPREAD = nt.void(_f32_2d, _f32_1d)


@njit(_SIG_SPREAD, **_SERIAL)
def _spread_serial(logvar, out):
    for i in range(logvar.shape[0]):
        out[i] = _spread_image(logvar[i])


@njit(_SIG_SPREAD, **_PARALLEL)
def _spread_parallel(logvar, out):
    for i in prange(logvar.shape[0]):
        out[i] = _spread_image(logvar[i])


_SIG_SCORE_IMAGE = nt.Tuple((nt.int64, nt.int64, nt.int64, nt.float32, nt.float64))(
    _f32_1d, _f32_1d, _f32_2d, _f32_2d, _f32_1d, _f32_1d, _i64_1d, _f32_1d, _f32_2d, _f32_1d)


@njit(_SIG_SCORE_IMAGE, **_HELPER)
def _score_image(x, logits_in, logits_rec, recon, mu, logvar, labels, p_in, p_rec, out):
    """Everything ``score`` computes for one image, with the same arithmetic as the
    separate kernels.  Fills labels (K,) and out with the signals in SCORE_NAMES
    order; returns (label, majority, n_distinct, confidence, agreement)."""
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


_SIG_SCORE = nt.void(_f32_2d, _f32_2d, _f32_2d, _f32_2d, _f32_2d, nt.int64, _i64_1d,
                     _f32_1d, _i64_2d, _i64_1d, _i64_1d, _f32_1d, _f32_2d)


@njit(_SIG_SCORE, **_SERIAL)
def _score_serial(x, logits, recon, mu, logvar, k, label, confidence, labels,
                  majority, n_distinct, agreement, out):
    b = x.shape[0]
    p_in = np.empty(logits.shape[1], np.float32)
    p_rec = np.empty((k, logits.shape[1]), np.float32)
    for i in range(b):
        label[i], majority[i], n_distinct[i], confidence[i], agreement[i] = _score_image(
            x[i], logits[i], logits[b + i * k:b + (i + 1) * k], recon[i * k:(i + 1) * k],
            mu[i], logvar[i], labels[i], p_in, p_rec, out[i])


@njit(_SIG_SCORE, **_PARALLEL)
def _score_parallel(x, logits, recon, mu, logvar, k, label, confidence, labels,
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
def _p_values_serial(table, scores, combined, use_min_p, p, p_combined):
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


# --------------------------------------------------------------------------
# validation


def _check_array(name, a, dtype, ndim):
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy {np.dtype(dtype).name} array, "
                        f"got {type(a).__name__}")
    if a.dtype != dtype:
        raise TypeError(f"{name} must have dtype {np.dtype(dtype).name}, got {a.dtype}")
    if a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {a.shape}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous (use np.ascontiguousarray)")


def _check_shape(name, a, expected, text):
    if a.shape != expected:
        raise ValueError(f"{name} must have shape {text} = {expected}, got {a.shape}")


def _check_positive_int(name, v):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(v).__name__}")
    if v < 1:
        raise ValueError(f"{name} must be >= 1, got {v}")
    return int(v)


def _check_images(name, x):
    _check_array(name, x, np.float32, 2)
    if x.shape[1] != N_PIXELS:
        raise ValueError(f"{name} must have shape (B, {N_PIXELS}), got {x.shape}")


def _check_latents(mu, logvar):
    _check_array("mu", mu, np.float32, 2)
    _check_array("logvar", logvar, np.float32, 2)
    if mu.shape[1] < 1:
        raise ValueError(f"mu must have shape (B, D) with D >= 1, got {mu.shape}")
    _check_shape("logvar", logvar, mu.shape, "mu.shape")


_PARALLEL_LOCK = threading.Lock()


def _variant(serial, parallel, batch, use_parallel):
    if use_parallel is None:
        use_parallel = batch >= PARALLEL_MIN_BATCH
    return _serialised(parallel) if use_parallel else serial


def _serialised(kernel):
    """A parallel kernel, run under a lock unless numba's threading layer is known to be thread-safe.

    OpenMP and TBB accept parallel launches from several Python threads; numba's fallback 'workqueue'
    layer aborts the process instead. The layer is only known after the first parallel launch.
    """
    import numba

    def call(*args):
        try:
            layer = numba.threading_layer()
        except ValueError:  # no parallel kernel has run yet
            layer = None
        if layer in ("omp", "tbb"):
            return kernel(*args)
        with _PARALLEL_LOCK:
            return kernel(*args)

    return call


# --------------------------------------------------------------------------
# public API
# ``parallel``: None picks by PARALLEL_MIN_BATCH; True/False forces a variant.


def image_seeds(x, seed, *, parallel=None):
    """Deterministic 64-bit hash of each image's bytes and ``seed``: (B,) uint64.

    ``seed`` is any int, taken modulo 2**64.  For a fixed image the map
    seed -> hash is a bijection, so different seeds always give different values.
    """
    _check_images("x", x)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    out = np.empty(x.shape[0], np.uint64)
    fn = _variant(_image_seeds_serial, _image_seeds_parallel, x.shape[0], parallel)
    fn(x.view(np.uint32), np.uint64(int(seed) % 2**64), out)
    return out


def sample_latents(mu, logvar, seeds, k, *, parallel=None):
    """z = mu + exp(logvar/2) * eps, shape (B*k, D), image-major rows.

    eps is ``normal_noise(seeds, k, D)``: row i*k + j, column d is number
    j*D + d of the counter-based stream keyed by seeds[i].
    """
    _check_latents(mu, logvar)
    _check_array("seeds", seeds, np.uint64, 1)
    _check_shape("seeds", seeds, mu.shape[:1], "(B,)")
    k = _check_positive_int("k", k)
    out = np.empty((mu.shape[0] * k, mu.shape[1]), np.float32)
    _variant(_sample_serial, _sample_parallel, mu.shape[0], parallel)(
        mu, logvar, seeds, k, out)
    return out


def normal_noise(seeds, k, d, *, parallel=None):
    """The standard-normal eps used by ``sample_latents``: (B*k, d) float32."""
    _check_array("seeds", seeds, np.uint64, 1)
    k = _check_positive_int("k", k)
    d = _check_positive_int("d", d)
    out = np.empty((seeds.shape[0] * k, d), np.float32)
    _variant(_noise_serial, _noise_parallel, seeds.shape[0], parallel)(seeds, k, out)
    return out


def softmax(logits, *, parallel=None):
    """Numerically stable row softmax of (N, C) float32 logits."""
    _check_array("logits", logits, np.float32, 2)
    if logits.shape[1] < 1:
        raise ValueError(f"logits must have shape (N, C) with C >= 1, got {logits.shape}")
    out = np.empty_like(logits)
    _variant(_softmax_serial, _softmax_parallel, logits.shape[0], parallel)(logits, out)
    return out


def vote(probs, *, parallel=None):
    """Majority vote over K samples of (B, K, C) class probabilities.

    Returns ``(labels (B,K), majority (B,), n_distinct (B,), agreement (B,),
    entropy (B,))``.  labels is the argmax (first on ties); the majority label
    is the most frequent one, ties broken by the larger probability summed over
    all K samples, then by the smaller label; agreement = count(majority)/K;
    entropy is the natural-log Shannon entropy of the label histogram.
    A NaN probability never wins the argmax.
    """
    _check_array("probs", probs, np.float32, 3)
    b, k, c = probs.shape
    if k < 1 or c < 1:
        raise ValueError(f"probs must have shape (B, K, C) with K, C >= 1, got {probs.shape}")
    labels = np.empty((b, k), np.int64)
    majority = np.empty(b, np.int64)
    n_distinct = np.empty(b, np.int64)
    agreement = np.empty(b, np.float32)
    entropy = np.empty(b, np.float32)
    _variant(_vote_serial, _vote_parallel, b, parallel)(
        probs, labels, majority, n_distinct, agreement, entropy)
    return labels, majority, n_distinct, agreement, entropy


def input_agreement(labels, input_labels, *, parallel=None):
    """Share of each image's K reconstruction labels equal to its input label."""
    _check_array("labels", labels, np.int64, 2)
    _check_array("input_labels", input_labels, np.int64, 1)
    if labels.shape[1] < 1:
        raise ValueError(f"labels must have shape (B, K) with K >= 1, got {labels.shape}")
    _check_shape("input_labels", input_labels, labels.shape[:1], "(B,)")
    out = np.empty(labels.shape[0], np.float32)
    _variant(_agree_serial, _agree_parallel, labels.shape[0], parallel)(
        labels, input_labels, out)
    return out


def recon_errors(x, recon, k, *, parallel=None):
    """Per-pixel MSE of each image against its k reconstructions.

    ``recon`` rows are image-major (image i at rows i*k .. i*k+k-1).
    Returns (mean over k, min over k), each (B,) float32; sums in float64.
    """
    _check_images("x", x)
    _check_array("recon", recon, np.float32, 2)
    k = _check_positive_int("k", k)
    _check_shape("recon", recon, (x.shape[0] * k, N_PIXELS), f"(B*k, {N_PIXELS})")
    mse_mean = np.empty(x.shape[0], np.float32)
    mse_min = np.empty(x.shape[0], np.float32)
    _variant(_recon_serial, _recon_parallel, x.shape[0], parallel)(
        x, recon, k, mse_mean, mse_min)
    return mse_mean, mse_min


def kl_divergence(mu, logvar, *, parallel=None):
    """KL(N(mu, exp(logvar)) || N(0, I)) per image: (B,) float32."""
    _check_latents(mu, logvar)
    out = np.empty(mu.shape[0], np.float32)
    _variant(_kl_serial, _kl_parallel, mu.shape[0], parallel)(mu, logvar, out)
    return out


def posterior_spread(logvar, *, parallel=None):
    """Mean over D of the posterior std exp(logvar/2): (B,) float32."""
    _check_array("logvar", logvar, np.float32, 2)
    if logvar.shape[1] < 1:
        raise ValueError(f"logvar must have shape (B, D) with D >= 1, got {logvar.shape}")
    out = np.empty(logvar.shape[0], np.float32)
    _variant(_spread_serial, _spread_parallel, logvar.shape[0], parallel)(logvar, out)
    return out


def score(x, logits, recon, mu, logvar, k, *, parallel=None):
    """One screening's post-processing in one call: ``softmax``, ``vote``,
    ``input_agreement``, ``recon_errors``, ``kl_divergence`` and
    ``posterior_spread`` fused, with the same results.

    x (B, 784); logits (B + B*k, C): the B inputs' rows, then the
    reconstructions' (image-major); recon (B*k, 784); mu, logvar (B, D).
    Returns ``(label, confidence, labels (B,k), majority, n_distinct,
    agreement, scores (B, len(SCORE_NAMES)))``: label and confidence are the
    input's argmax and max softmax probability; the rest as in ``vote``.
    """
    _check_images("x", x)
    _check_array("logits", logits, np.float32, 2)
    _check_array("recon", recon, np.float32, 2)
    _check_latents(mu, logvar)
    k = _check_positive_int("k", k)
    b = x.shape[0]
    if logits.shape[0] != b * (k + 1) or logits.shape[1] < 1:
        raise ValueError(f"logits must have shape (B*(k+1), C) = ({b * (k + 1)}, C), got {logits.shape}")
    _check_shape("recon", recon, (b * k, N_PIXELS), f"(B*k, {N_PIXELS})")
    _check_shape("mu", mu, (b, mu.shape[1]), "(B, D)")
    label, majority, n_distinct = (np.empty(b, np.int64) for _ in range(3))
    confidence, agreement = np.empty(b, np.float32), np.empty(b, np.float32)
    labels = np.empty((b, k), np.int64)
    scores = np.empty((b, len(SCORE_NAMES)), np.float32)
    _variant(_score_serial, _score_parallel, b, parallel)(
        x, logits, recon, mu, logvar, k, label, confidence, labels, majority,
        n_distinct, agreement, scores)
    return label, confidence, labels, majority, n_distinct, agreement, scores


def p_values(table, scores, combined, use_min_p):
    """Conformal p-values of S calibrated signals and their combined p-value
    (see edgeguard.calibration): table (S, n) each signal's sorted clean
    scores, scores (B, S), combined (m,) the sorted clean combination
    statistics, all float32; use_min_p: Tippett's statistic instead of Fisher's.
    Returns p (B, S) and p_combined (B,), float64.  Serial: a few
    microseconds per image, never worth threads."""
    _check_array("table", table, np.float32, 2)
    _check_array("scores", scores, np.float32, 2)
    _check_array("combined", combined, np.float32, 1)
    if table.shape[0] < 1 or table.shape[1] < 1 or combined.shape[0] < 1:
        raise ValueError(f"table (S, n) and combined (m,) must be non-empty, got {table.shape} and {combined.shape}")
    _check_shape("scores", scores, (scores.shape[0], table.shape[0]), "(B, S)")
    p = np.empty(scores.shape, np.float64)
    p_combined = np.empty(scores.shape[0], np.float64)
    _p_values_serial(table, scores, combined, bool(use_min_p), p, p_combined)
    return p, p_combined


def warmup():
    """Run every kernel (both variants) once on tiny inputs; return seconds taken."""
    t0 = time.perf_counter()
    x = np.zeros((2, N_PIXELS), np.float32)
    mu = np.zeros((2, 3), np.float32)
    for par in (False, True):
        seeds = image_seeds(x, 0, parallel=par)
        sample_latents(mu, mu, seeds, 2, parallel=par)
        normal_noise(seeds, 2, 3, parallel=par)
        probs = softmax(np.zeros((4, 10), np.float32), parallel=par)
        labels, majority, *_ = vote(probs.reshape(2, 2, 10), parallel=par)
        input_agreement(labels, majority, parallel=par)
        recon_errors(x, np.zeros((4, N_PIXELS), np.float32), 2, parallel=par)
        kl_divergence(mu, mu, parallel=par)
        posterior_spread(mu, parallel=par)
        score(x, np.zeros((6, 10), np.float32), np.zeros((4, N_PIXELS), np.float32),
              mu, mu, 2, parallel=par)
    p_values(mu, np.zeros((2, 2), np.float32), x[0, :3], False)
    return time.perf_counter() - t0
