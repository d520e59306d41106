"""``edgeguard detect --fdr q`` measured: Benjamini-Hochberg over combined conformal p-values on random mixtures
of clean MNIST test digits and out-of-distribution images (Fashion-MNIST test images; generated noise where
Fashion-MNIST is not installed), repeated over random draws.

    python -m benchmarks.fdr_mixtures [--q 0.1] [--draws 50] [--size 1000] [--fractions 0.01 0.1 0.5]

prints JSON: for each outlier fraction the mean false-discovery proportion over the draws (the FDR), its standard
error, and the power (the mean share of outliers selected).

The guarantee needs clean images exchangeable with the calibration digits (MNIST training images 55000-59999).
The clean pool is a random sample of the whole MNIST test set; a second block draws it from the test set's first
5,000 digits alone, a writer group whose clean p-values run small (13% below 0.1 where 10% are expected), to show
what a shift of the clean images does to the FDR.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass

import numpy as np

from edgeguard import Guard
from edgeguard.fdr import benjamini_hochberg

POOL = 4000  # clean and outlier images screened once each; the draws resample these p-values


@dataclass(frozen=True)
class Mixture:
    outlier_fraction: float
    q: float
    draws: int
    size: int
    fdr: float  # mean false-discovery proportion over the draws
    fdr_se: float  # its standard error
    power: float  # mean share of the outliers selected
    mean_selected: float


def outlier_images(count: int, seed: int = 0) -> tuple[np.ndarray, str]:
    """Out-of-distribution images: Fashion-MNIST test images, or uniform noise where it is not installed."""
    from train.data import load_fashion_mnist

    try:
        x, _ = load_fashion_mnist("test")
        return x[:count], "fashion-mnist test"
    except FileNotFoundError:
        return np.random.default_rng(seed).integers(0, 256, (count, 28, 28), dtype=np.uint8), "uniform noise"


def pools(guard: Guard, clean: np.ndarray, outliers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Combined p-values (``Verdict.p_value``) of the clean images and of the outliers."""
    return (np.array([v.p_value for v in guard.screen(clean)]),
            np.array([v.p_value for v in guard.screen(outliers)]))


def measure(clean_p: np.ndarray, outlier_p: np.ndarray, *, fraction: float, q: float, draws: int, size: int,
            seed: int = 0) -> Mixture:
    """``draws`` mixtures of ``size`` p-values, ``round(fraction * size)`` (at least 1) of them outliers, drawn
    without replacement from the pools; BH at ``q`` on each."""
    rng = np.random.default_rng(seed)
    n_out = max(1, round(fraction * size))
    fdp, power, selected = [], [], []
    for _ in range(draws):
        p = np.concatenate([rng.choice(clean_p, size - n_out, replace=False),
                            rng.choice(outlier_p, n_out, replace=False)])
        is_outlier = np.arange(size) >= size - n_out
        chosen = benjamini_hochberg(p, q)
        fdp.append((chosen & ~is_outlier).sum() / max(1, chosen.sum()))
        power.append((chosen & is_outlier).sum() / n_out)
        selected.append(chosen.sum())
    return Mixture(fraction, q, draws, size, float(np.mean(fdp)), float(np.std(fdp, ddof=1) / np.sqrt(draws)),
                   float(np.mean(power)), float(np.mean(selected)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--q", type=float, default=0.1)
    parser.add_argument("--draws", type=int, default=50)
    parser.add_argument("--size", type=int, default=1000, help="p-values in one mixture")
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.01, 0.1, 0.5])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    from train.data import load_mnist

    guard = Guard.load(providers="cpu")
    test_x = load_mnist(download=False).test_x
    outliers, kind = outlier_images(POOL, args.seed)
    report: dict[str, object] = {"outliers": kind, "pool": POOL}
    rng = np.random.default_rng(args.seed)
    for name, clean in [("mnist_test_random", test_x[rng.choice(len(test_x), POOL, replace=False)]),
                        ("mnist_test_first_5000", test_x[:POOL])]:
        clean_p, outlier_p = pools(guard, clean, outliers)
        report[name] = {"clean_p_below_q": float((clean_p <= args.q).mean()),
                        "mixtures": [asdict(measure(clean_p, outlier_p, fraction=f, q=args.q, draws=args.draws,
                                                    size=args.size, seed=args.seed)) for f in args.fractions]}
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
