"""Numba kernels for screening: what ``Guard`` calls (``image_seeds``, ``sample_latents``, ``score``, ``p_values``).

Every public function checks dtypes, shapes and contiguity in plain Python
(TypeError for a wrong dtype, ValueError for a wrong shape or layout), then
runs a compiled kernel (edgeguard/kernels_numba.py) that writes into
preallocated outputs.  Kernels looping over the batch come in a serial and a
``parallel=True`` variant sharing the same per-image code, so results never
depend on batch composition, position or thread count.  Arrays are float32,
labels/counts int64, seeds uint64.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np

from edgeguard.contract import N_PIXELS, SCORE_NAMES
from edgeguard.kernels_numba import (
    FASTMATH,
    image_seeds_parallel,
    image_seeds_serial,
    p_values_serial,
    sample_parallel,
    sample_serial,
    score_parallel,
    score_serial,
)
from edgeguard.kernels_numpy import ScoreResult

__all__ = ["FASTMATH", "N_PIXELS", "PARALLEL_MIN_BATCH", "SCORE_NAMES", "image_seeds", "p_values", "sample_latents",
           "score", "warmup"]

#: Batches with at least this many images use the parallel variants.
#: Measured with benchmarks/kernel_threshold.py on a 2-core AMD EPYC (omp
#: layer, 2 threads, K=8, D=16), median microseconds serial/parallel, when
#: the signals had a kernel each (``score`` now runs them in one loop):
#:   B=16:  seeds 32/20   sample 55/32   recon 19/15  vote 6.0/6.2  kl 3.7/7.7
#:   B=32:  seeds 61/35   sample 110/59  recon 32/21  vote 9.2/9.8  kl 5.1/5.6
#:   B=64:  seeds 117/62  sample 221/110 recon 60/37  vote 15/11    kl 8.0/7.0
#:   B=128: seeds 231/121 sample 536/217 recon 114/68 vote 28/17    kl 14/10
#: The heavy kernels break even near B=16, the light ones near B=48-64.  64
#: keeps small interactive batches serial: when another process keeps the
#: cores busy a parallel launch can stall for a scheduler time slice (~8 ms).
PARALLEL_MIN_BATCH = 64


# --------------------------------------------------------------------------
# validation


def _check_array(name: str, a: object, dtype: type[np.generic], ndim: int) -> None:
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy {np.dtype(dtype).name} array, "
                        f"got {type(a).__name__}")
    if a.dtype != dtype:
        raise TypeError(f"{name} must have dtype {np.dtype(dtype).name}, got {a.dtype}")
    if a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {a.shape}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous (use np.ascontiguousarray)")


def _check_shape(name: str, a: np.ndarray, expected: tuple[int, ...], text: str) -> None:
    if a.shape != expected:
        raise ValueError(f"{name} must have shape {text} = {expected}, got {a.shape}")


def _check_positive_int(name: str, v: object) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(v).__name__}")
    if v < 1:
        raise ValueError(f"{name} must be >= 1, got {v}")
    return int(v)


def _check_images(name: str, x: np.ndarray) -> None:
    _check_array(name, x, np.float32, 2)
    if x.shape[1] != N_PIXELS:
        raise ValueError(f"{name} must have shape (B, {N_PIXELS}), got {x.shape}")


def _check_latents(mu: np.ndarray, logvar: np.ndarray) -> None:
    _check_array("mu", mu, np.float32, 2)
    _check_array("logvar", logvar, np.float32, 2)
    if mu.shape[1] < 1:
        raise ValueError(f"mu must have shape (B, D) with D >= 1, got {mu.shape}")
    _check_shape("logvar", logvar, mu.shape, "mu.shape")


_PARALLEL_LOCK = threading.Lock()
_Kernel = Callable[..., None]


def _variant(serial: _Kernel, parallel: _Kernel, batch: int, use_parallel: bool | None) -> _Kernel:
    if use_parallel is None:
        use_parallel = batch >= PARALLEL_MIN_BATCH
    return _serialised(parallel) if use_parallel else serial


def _serialised(kernel: _Kernel) -> _Kernel:
    """A parallel kernel, run under a lock unless numba's threading layer is known to be thread-safe.

    OpenMP and TBB accept parallel launches from several Python threads; numba's fallback 'workqueue'
    layer aborts the process instead. The layer is only known after the first parallel launch.
    """
    import numba

    def call(*args: object) -> None:
        try:
            layer = numba.threading_layer()
        except ValueError:  # no parallel kernel has run yet
            layer = None
        if layer in ("omp", "tbb"):
            kernel(*args)
            return
        with _PARALLEL_LOCK:
            kernel(*args)

    return call


# --------------------------------------------------------------------------
# public API
# ``parallel``: None picks by PARALLEL_MIN_BATCH; True/False forces a variant.


def image_seeds(x: np.ndarray, seed: int, *, parallel: bool | None = None) -> np.ndarray:
    """Deterministic 64-bit hash of each image's bytes and ``seed``: (B,) uint64.

    ``seed`` is any int, taken modulo 2**64.  For a fixed image the map
    seed -> hash is a bijection, so different seeds always give different values.
    """
    _check_images("x", x)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    out = np.empty(x.shape[0], np.uint64)
    fn = _variant(image_seeds_serial, image_seeds_parallel, x.shape[0], parallel)
    fn(x.view(np.uint32), np.uint64(int(seed) % 2**64), out)
    return out


def sample_latents(mu: np.ndarray, logvar: np.ndarray, seeds: np.ndarray, k: int, *,
                   parallel: bool | None = None) -> np.ndarray:
    """z = mu + exp(logvar/2) * eps, shape (B*k, D), image-major rows.

    eps at row i*k + j, column d is standard normal number j*D + d of the
    counter-based stream keyed by seeds[i] (splitmix64, then Box-Muller).
    """
    _check_latents(mu, logvar)
    _check_array("seeds", seeds, np.uint64, 1)
    _check_shape("seeds", seeds, mu.shape[:1], "(B,)")
    k = _check_positive_int("k", k)
    out = np.empty((mu.shape[0] * k, mu.shape[1]), np.float32)
    _variant(sample_serial, sample_parallel, mu.shape[0], parallel)(
        mu, logvar, seeds, k, out)
    return out


def score(x: np.ndarray, logits: np.ndarray, recon: np.ndarray, mu: np.ndarray, logvar: np.ndarray, k: int, *,
          parallel: bool | None = None) -> ScoreResult:
    """One screening's post-processing in one call: softmax of every logits
    row, the vote over each image's k reconstructions, and every signal.

    x (B, 784); logits (B + B*k, C): the B inputs' rows, then the
    reconstructions' (image-major); recon (B*k, 784); mu, logvar (B, D).
    Returns ``(label, confidence, labels (B,k), majority, n_distinct,
    agreement, scores (B, len(SCORE_NAMES)))``: label and confidence are the
    input's argmax and max softmax probability; labels each reconstruction's
    argmax (the first on ties; a NaN never wins); majority the most frequent
    label, ties broken by the larger probability summed over the k samples,
    then by the smaller label; n_distinct the number of different labels;
    agreement = count(majority)/k.  The signals, in SCORE_NAMES order:
    1 - agreement; 1 - the share of labels equal to label; the natural-log
    entropy of the label histogram; the mean and the min over k of the
    per-pixel MSE between x and its reconstructions (summed in float64);
    KL(N(mu, exp(logvar)) || N(0, I)); the mean posterior std exp(logvar/2);
    1 - confidence.
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
    _variant(score_serial, score_parallel, b, parallel)(
        x, logits, recon, mu, logvar, k, label, confidence, labels, majority,
        n_distinct, agreement, scores)
    return label, confidence, labels, majority, n_distinct, agreement, scores


def p_values(table: np.ndarray, scores: np.ndarray, combined: np.ndarray,
             use_min_p: bool) -> tuple[np.ndarray, np.ndarray]:
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
    p_values_serial(table, scores, combined, bool(use_min_p), p, p_combined)
    return p, p_combined


def warmup() -> float:
    """Run every kernel (both variants) once on tiny inputs; return seconds taken."""
    t0 = time.perf_counter()
    x = np.zeros((2, N_PIXELS), np.float32)
    mu = np.zeros((2, 3), np.float32)
    for par in (False, True):
        seeds = image_seeds(x, 0, parallel=par)
        sample_latents(mu, mu, seeds, 2, parallel=par)
        score(x, np.zeros((6, 10), np.float32), np.zeros((4, N_PIXELS), np.float32),
              mu, mu, 2, parallel=par)
    p_values(mu, np.zeros((2, 2), np.float32), x[0, :3], False)
    return time.perf_counter() - t0
