"""Serial vs parallel kernel timings by batch size, to choose PARALLEL_MIN_BATCH.

Run: python -m benchmarks.kernel_threshold [--k 8] [--d 16]
Prints the median time (microseconds) of each kernel's serial and parallel
variant for a range of batch sizes B, and the ratio serial/parallel (>1 means
the parallel variant is faster).
"""

import argparse
import time

import numba
import numpy as np

from edgeguard import kernels as K
from edgeguard.contract import N_CLASSES, N_PIXELS

BATCHES = [1, 4, 8, 16, 32, 48, 64, 96, 128, 256, 1024, 4096]


def median_us(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e6 * float(np.median(times))


def cases(b, k, d):
    """The kernels Guard calls with a ``parallel`` choice, on a batch of B random images."""
    rng = np.random.default_rng(0)
    x = rng.random((b, N_PIXELS), dtype=np.float32)
    mu = rng.normal(size=(b, d)).astype(np.float32)
    logvar = rng.normal(-1, 1, size=(b, d)).astype(np.float32)
    seeds = K.image_seeds(x, 0)
    recon = rng.random((b * k, N_PIXELS), dtype=np.float32)
    logits = rng.normal(size=(b * (k + 1), N_CLASSES)).astype(np.float32)  # the inputs', then the recons'
    return {
        "image_seeds": lambda p: K.image_seeds(x, 0, parallel=p),
        "sample_latents": lambda p: K.sample_latents(mu, logvar, seeds, k, parallel=p),
        "score": lambda p: K.score(x, logits, recon, mu, logvar, k, parallel=p),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--d", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=200)
    args = ap.parse_args()
    K.warmup()
    print(f"threads={numba.get_num_threads()} layer={numba.threading_layer()} "
          f"K={args.k} D={args.d} current PARALLEL_MIN_BATCH={K.PARALLEL_MIN_BATCH}")
    print(f"{'kernel':18s}{'B':>6s}{'serial us':>12s}{'parallel us':>13s}{'ratio':>8s}")
    for b in BATCHES:
        repeats = max(5, args.repeats * 64 // max(b, 64))
        for name, fn in cases(b, args.k, args.d).items():
            fn(False), fn(True)
            s = median_us(lambda fn=fn: fn(False), repeats)
            p = median_us(lambda fn=fn: fn(True), repeats)
            print(f"{name:18s}{b:6d}{s:12.1f}{p:13.1f}{s / p:8.2f}")
        print()


if __name__ == "__main__":
    main()
