"""What the latency benchmark measures and how it times things: the plan, the targets, timing helpers, inputs.

Nothing heavier than numpy is imported at module level.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeguard.contract import SIDE

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = 1
K_SINGLE = (1, 10, 32)
K_BATCH = 10
SECTIONS = ("single", "throughput", "cold_start", "stages", "kernels", "reference", "roofline", "ray")
STAGES = ("input", "encoder", "sampling", "decoder", "classifier", "voting_scoring", "verdict")

# The targets, on a 2-core CPU with one intra-op thread: (key, text, limit, unit, higher is better).
TARGETS = (
    ("p50_k10_ms", "p50 single-image latency, K=10, 1 thread", 0.5, "ms", False),
    ("speedup_torch_b1", "speed-up over PyTorch eager, batch 1, 1 thread", 5.0, "x", True),
    ("speedup_torch_b256", "speed-up over PyTorch eager, batch 256, 1 thread", 1.5, "x", True),
    ("cold_start_warm_s", "cold start `edgeguard detect one.png`, warm numba cache", 1.0, "s", False),
)


@dataclass(frozen=True)
class Plan:
    """How much to measure: the full run or ``--quick``."""

    single_calls: int
    single_warmup: int
    batches: tuple[int, ...]
    batch_min_s: float
    batch_min_calls: int
    cold_warm_runs: int
    cold_empty_runs: int
    stage_calls: int
    stage_batches: tuple[int, ...]
    kernel_batches: tuple[int, ...]
    kernel_rounds: int
    ref_batches: tuple[int, ...]
    ref_all_core_batches: tuple[int, ...]
    ref_rounds: int
    round_s: float
    matmul_repeats: int


FULL = Plan(single_calls=2000, single_warmup=100, batches=(1, 8, 64, 256, 1024), batch_min_s=1.5, batch_min_calls=5,
            cold_warm_runs=7, cold_empty_runs=2, stage_calls=500, stage_batches=(1, 256),
            kernel_batches=(1, 256), kernel_rounds=15, ref_batches=(1, 8, 64, 256), ref_all_core_batches=(1, 256),
            ref_rounds=31, round_s=0.06, matmul_repeats=30)
QUICK = Plan(single_calls=150, single_warmup=20, batches=(1, 64), batch_min_s=0.1, batch_min_calls=2,
             cold_warm_runs=1, cold_empty_runs=0, stage_calls=40, stage_batches=(1,),
             kernel_batches=(1,), kernel_rounds=3, ref_batches=(1, 256), ref_all_core_batches=(),
             ref_rounds=3, round_s=0.03, matmul_repeats=5)


def log(message: str) -> None:
    """Progress goes to stderr; stdout holds only the results."""
    print(message, file=sys.stderr, flush=True)


def skipped(reason: str) -> dict:
    return {"skipped": True, "reason": reason}


# ------------------------------------------------------------------------------------------------ timing


def percentiles_ms(seconds) -> dict[str, float]:
    a = np.asarray(seconds, np.float64) * 1e3
    p50, p95, p99 = np.percentile(a, [50, 95, 99])
    return {"p50_ms": float(p50), "p95_ms": float(p95), "p99_ms": float(p99), "mean_ms": float(a.mean()),
            "min_ms": float(a.min())}


def spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "runs": values}


def per_call(fn, calls: int) -> float:
    """Mean seconds per call over ``calls`` back-to-back calls."""
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t0) / calls


def calls_for(fn, seconds: float) -> int:
    """How many calls of ``fn`` fill about ``seconds`` (at least 1)."""
    t = per_call(fn, 1)
    return max(1, int(seconds / max(t, 1e-7)))


def interleaved(variants: dict, rounds: int, round_s: float) -> dict[str, list[float]]:
    """Rounds of A B C ...: each round times every variant for about ``round_s`` (order rotated each round).

    Returns name -> seconds per call, one value per round, so ratios can be paired round by round.
    """
    names = list(variants)
    for fn in variants.values():  # warm each one up, then size its rounds
        fn()
    inner = {name: calls_for(variants[name], round_s) for name in names}
    out: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            out[name].append(per_call(variants[name], inner[name]))
    return out


def paired_ratio(slow: list[float], fast: list[float]) -> float:
    """Median over rounds of slow/fast (each round's two numbers were taken side by side)."""
    return float(statistics.median(s / f for s, f in zip(slow, fast)))


@contextmanager
def numba_threads(n: int | None):
    """Run numba's parallel kernels on ``n`` threads (None: all), restoring the setting after."""
    import numba

    before = numba.get_num_threads()
    numba.set_num_threads(n or numba.config.NUMBA_NUM_THREADS)
    try:
        yield
    finally:
        numba.set_num_threads(before)


def all_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


# ------------------------------------------------------------------------------------------ what is timed


def synthetic_digits(n: int, seed: int = 0) -> np.ndarray:
    """uint8 (n, 28, 28) digit-like strokes (white on black, MNIST scale). Timing does not depend on content,
    but the calibration and the vote see something shaped like a digit, not noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIDE, 0:SIDE].astype(np.float32)
    out = np.empty((n, SIDE, SIDE), np.uint8)
    for i in range(n):
        img = np.zeros((SIDE, SIDE), np.float32)
        for _ in range(rng.integers(1, 4)):  # one to three strokes
            (x0, y0), (x1, y1) = rng.uniform(6, 22, size=(2, 2))
            t = np.linspace(0.0, 1.0, 24, dtype=np.float32)[:, None, None]
            px, py = x0 + t * (x1 - x0), y0 + t * (y1 - y0)
            d2 = ((xx - px) ** 2 + (yy - py) ** 2).min(axis=0)
            img = np.maximum(img, np.exp(-d2 / 2.0))
        out[i] = np.clip(img * 255.0, 0, 255).astype(np.uint8)
    return out


def load_guard(bundle, k: int, threads: int, kernels: str = "numba"):
    """A warmed-up Guard on the CPU."""
    from edgeguard.guard import Guard

    guard = Guard.load(bundle, providers="cpu", k=k, threads=threads, kernels=kernels)
    guard.warmup()
    return guard


def machine_info() -> dict:
    cpu, info = platform.processor() or platform.machine(), {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    if info.get("model name"):
        cpu = info["model name"]
    flags = set(info.get("flags", "").split())
    versions = {"python": platform.python_version()}
    for name in ("numpy", "onnxruntime", "numba", "onnx", "torch", "edgeguard"):
        try:
            module = __import__(name)
            versions[name] = getattr(module, "__version__", "?")
        except ImportError:
            versions[name] = None
    return {"cpu": cpu, "cpu_family_model": f"{info.get('cpu family', '?')}/{info.get('model', '?')}",
            "simd": sorted(flags & {"avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni"}),
            "cores": all_cores(), "logical_cpus": os.cpu_count(), "os": platform.platform(),
            "versions": versions, "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}
