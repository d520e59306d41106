"""Latency, throughput, cold start and per-stage cost of the shipped bundle, against a PyTorch eager reference.

Run (from the repository root):

    python -m benchmarks.latency                          # full run, tables on stdout
    python -m benchmarks.latency --out reports/latency.md --docs docs/performance.md
    python -m benchmarks.latency --quick --json           # < 30 s; what the tests run

The runtime has two kernel backends (``Guard.load(kernels=...)``): ``numba`` (edgeguard/kernels.py, the default
for the API, and ``edgeguard detect`` from ``edgeguard.cli.NUMBA_MIN_IMAGES`` files on) and ``numpy``
(edgeguard/kernels_numpy.py: no numba import, what a plain ``edgeguard detect one.png`` uses). "The runtime" below
is ``guard.screen`` with the numba backend unless a section says otherwise.

Sections (``--sections`` picks some):

- ``single``: p50/p95/p99 of ``guard.screen`` on one image, K in {1, 10, 32}, one intra-op thread.
- ``throughput``: images/s at batch 1, 8, 64, 256, 1024, K=10, with one thread and with all cores.
- ``cold_start``: wall time of a fresh ``edgeguard detect one.png`` (the target; numpy backend through
  ``--kernels auto``) and of ``edgeguard detect --kernels numba one.png`` with a warm and with an empty numba
  cache; and where the plain command's time goes in a fresh process (plus what importing numba would add).
- ``stages``: encoder, sampling, decoder, classifier, voting and scoring, verdict: the pieces of
  ``Guard.analyze``/``Guard.screen`` called directly.
- ``kernels``: each numba kernel against its NumPy twins (edgeguard/kernels_numpy.py and tests/naive.py), and
  whether a numpy-backend Guard gives the numba Guard's verdicts.
- ``reference``: the same weights in PyTorch eager (benchmarks/reference.py) and the numpy backend
  (``Guard.load(kernels="numpy")``: onnxruntime with NumPy post-processing), measured interleaved with the runtime
  in the same process (rounds of A B C, medians); and, at batch 1, both sides with the classifier cut to 1/2 and
  1/4 of its channels (timing only), which shows how much of the batch-1 gap a leaner classifier can close. Needs
  torch and the training checkpoints (``--run``); skipped, with the reason, when they are absent.
- ``roofline``: FLOPs per screened image counted from the ONNX graphs (Conv, ConvTranspose, Gemm, MatMul; needs
  the ``onnx`` package) against this machine's single-core float32 matmul GFLOP/s.
- ``prototypes``: runtime changes measured before anyone makes them (fused ONNX graphs, session options,
  chunked batches, worker threads, a slimmer classifier, K, a gc-frozen cold start), each against the current
  runtime in the same run. The graph builders work from whatever layers the bundle has; a prototype that cannot
  handle a graph reports ``skipped`` with the reason.

Timings are medians; ratios come from the same run, interleaved. Tests run ``--quick --json`` and check the
fields, never the times. The runtime (numpy, onnxruntime, numba) is all this needs; torch and onnx add sections.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Nothing heavier than numpy is imported at module level (the matmul subprocess imports this module).

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = 1
SIDE, N_PIXELS, N_CLASSES = 28, 784, 10
K_SINGLE = (1, 10, 32)
K_BATCH = 10
SECTIONS = ("single", "throughput", "cold_start", "stages", "kernels", "reference", "roofline", "prototypes")
STAGES = ("input", "encoder", "sampling", "decoder", "classifier", "voting_scoring", "verdict")

# The targets, on a 2-core CPU with one intra-op thread: (key, text, limit, unit, higher is better).
TARGETS = (
    ("p50_k10_ms", "p50 single-image latency, K=10, 1 thread", 0.5, "ms", False),
    ("speedup_torch_b1", "speed-up over PyTorch eager, batch 1, 1 thread", 5.0, "x", True),
    ("speedup_torch_b256", "speed-up over PyTorch eager, batch 256, 1 thread", 1.5, "x", True),
    ("cold_start_warm_s", "cold start `edgeguard detect one.png`, warm numba cache", 1.0, "s", False),
)
TARGET_LIMITS = {key: limit for key, _, limit, *_ in TARGETS}


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
    proto_rounds: int


FULL = Plan(single_calls=2000, single_warmup=100, batches=(1, 8, 64, 256, 1024), batch_min_s=1.5, batch_min_calls=5,
            cold_warm_runs=7, cold_empty_runs=2, stage_calls=500, stage_batches=(1, 256),
            kernel_batches=(1, 256), kernel_rounds=15, ref_batches=(1, 8, 64, 256), ref_all_core_batches=(1, 256),
            ref_rounds=31, round_s=0.06, matmul_repeats=30, proto_rounds=31)
QUICK = Plan(single_calls=150, single_warmup=20, batches=(1, 64), batch_min_s=0.1, batch_min_calls=2,
             cold_warm_runs=1, cold_empty_runs=0, stage_calls=40, stage_batches=(1,),
             kernel_batches=(1,), kernel_rounds=3, ref_batches=(1,), ref_all_core_batches=(),
             ref_rounds=3, round_s=0.03, matmul_repeats=5, proto_rounds=3)


# ----------------------------------------------------------------------------------------------- helpers


def log(message: str) -> None:
    """Progress goes to stderr; stdout holds only the results."""
    print(message, file=sys.stderr, flush=True)


def percentiles_ms(seconds) -> dict[str, float]:
    a = np.asarray(seconds, np.float64) * 1e3
    p50, p95, p99 = np.percentile(a, [50, 95, 99])
    return {"p50_ms": float(p50), "p95_ms": float(p95), "p99_ms": float(p99), "mean_ms": float(a.mean()),
            "min_ms": float(a.min())}


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


def skipped(reason: str) -> dict:
    return {"skipped": True, "reason": reason}


def importable(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


# --------------------------------------------------------------- pieces of Guard.screen, for the copies here


def signals_from(kernels, x: np.ndarray, mu, logvar, recon, logits, k: int):
    """What Guard.analyze does after the networks, with ``kernels`` (edgeguard.kernels or edgeguard.kernels_numpy):
    (label, confidence, labels, majority, n_distinct, agreement, signals)."""
    *head, scores = kernels.score(x, logits, recon.reshape(x.shape[0] * k, N_PIXELS), mu, logvar, k)
    return (*head, dict(zip(kernels.SCORE_NAMES, scores.T)))


def verdicts_from(guard, label, confidence, labels, majority, n_distinct, agreement, signals, p_values=None):
    """Guard.screen's verdict step on arrays from any of the pipelines here (``p_values``: a stand-in for
    ``guard.calibration.p_values``)."""
    from edgeguard.guard import Screening, make_verdicts

    s = Screening(label=label, confidence=confidence, labels=labels, purified_label=majority,
                  n_distinct=n_distinct, agreement=agreement, signals=signals)
    p_values = p_values or (lambda sig: guard.calibration.p_values(sig, guard._k))  # as Guard.screen does
    return make_verdicts(s, *p_values(signals), guard.alpha)


# ------------------------------------------------------------------------------------------------ single


def load_guard(bundle, k: int, threads: int, kernels: str = "numba"):
    from edgeguard.guard import Guard

    guard = Guard.load(bundle, providers="cpu", k=k, threads=threads, kernels=kernels)
    guard.warmup()
    return guard


def section_single(args, plan: Plan) -> dict:
    image = synthetic_digits(1, seed=1)[0]
    rows = []
    with numba_threads(1):
        for k in K_SINGLE:
            guard = load_guard(args.bundle, k, threads=1)
            for _ in range(plan.single_warmup):
                guard.screen(image)
            times = []
            for _ in range(plan.single_calls):
                t0 = time.perf_counter()
                guard.screen(image)
                times.append(time.perf_counter() - t0)
            rows.append({"k": k, "threads": 1, "calls": plan.single_calls, **percentiles_ms(times)})
            log(f"  single K={k}: p50 {rows[-1]['p50_ms']:.3f} ms")
    return {"image": "synthetic digit, uint8 (28, 28)", "rows": rows}


# -------------------------------------------------------------------------------------------- throughput


def section_throughput(args, plan: Plan) -> dict:
    images = synthetic_digits(max(plan.batches), seed=2)
    rows = []
    for threads in (1, all_cores()):
        guard = load_guard(args.bundle, K_BATCH, threads=threads)
        with numba_threads(threads):
            for b in plan.batches:
                batch = images[:b]
                guard.screen(batch)
                n = max(plan.batch_min_calls, calls_for(lambda: guard.screen(batch), plan.batch_min_s))
                times = []
                for _ in range(n):
                    t0 = time.perf_counter()
                    guard.screen(batch)
                    times.append(time.perf_counter() - t0)
                median = statistics.median(times)
                rows.append({"batch": b, "k": K_BATCH, "threads": threads, "calls": n, "median_ms": median * 1e3,
                             "images_per_s": b / median})
                log(f"  throughput B={b} threads={threads}: {b / median:,.0f} images/s")
    return {"note": "onnxruntime intra-op threads and numba threads both set to `threads`", "rows": rows}


# -------------------------------------------------------------------------------------------- cold start


def cli_command() -> list[str]:
    script = Path(sys.executable).with_name("edgeguard")
    return [str(script)] if script.exists() else [sys.executable, "-m", "edgeguard"]


def write_png(path: Path) -> None:
    import cv2

    if not cv2.imwrite(str(path), synthetic_digits(1, seed=3)[0]):
        raise RuntimeError(f"could not write {path}")


def timed_run(cmd: list[str], env: dict, cwd: Path) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
    return wall


# Phases of a cold `edgeguard detect one.png` in a fresh process, in the order the CLI does them (its imports, the
# preprocessing import in `detect`, then Guard.load with the numpy backend that `--kernels auto` picks for one
# file). The "+ ..." lines come after the total, in the same process: what the numba backend would add to it.
_PHASES = r"""
import json, sys, time
t0 = start = time.perf_counter(); ph = {}
def mark(name):
    global t0
    t = time.perf_counter(); ph[name] = (t - t0) * 1e3; t0 = t
import numpy; mark("import numpy")
import typer, rich.console; mark("import typer, rich")
import edgeguard.cli; mark("import edgeguard.cli")
from edgeguard.normalize import load_and_preprocess; mark("import edgeguard.normalize (cv2)")
import onnxruntime; mark("import onnxruntime")
from edgeguard.guard import Guard; mark("import edgeguard.guard")
guard = Guard.load(sys.argv[2] or None, providers="cpu", kernels="numpy")
mark("Guard.load, numpy kernels (bundle sha256, sessions)")
image = load_and_preprocess(sys.argv[1]); mark("preprocess one.png")
guard.screen(image, sources=[sys.argv[1]]); mark("first screen")
ph["total"] = (time.perf_counter() - start) * 1e3
ph["numba imported"] = "numba" in sys.modules
t0 = time.perf_counter()
import numba; mark("+ import numba (numba backend only)")
import edgeguard.kernels; mark("+ import edgeguard.kernels (numba cache load)")
ph["+ scipy imported (by numba)"] = "scipy" in sys.modules
print(json.dumps(ph))
"""


def section_cold_start(args, plan: Plan) -> dict:
    cmd = cli_command()
    with tempfile.TemporaryDirectory(prefix="edgeguard-cold-") as tmp:
        tmp = Path(tmp)
        png = tmp / "one.png"
        write_png(png)
        bundle = ["--bundle", str(args.bundle)] if args.bundle else []
        plain = [*cmd, "detect", str(png), *bundle]
        numba = [*cmd, "detect", "--kernels", "numba", str(png), *bundle]
        base_env = {key: v for key, v in os.environ.items() if key != "NUMBA_CACHE_DIR"}
        empty = []
        for i in range(plan.cold_empty_runs):  # each in a fresh, empty cache directory
            cache = tmp / f"numba-empty-{i}"
            cache.mkdir()
            empty.append(timed_run(numba, {**base_env, "NUMBA_CACHE_DIR": str(cache)}, ROOT))
            log(f"  cold start, --kernels numba, empty numba cache: {empty[-1]:.2f} s")
        if empty:  # the last empty cache is warm now
            warm_env, warm_cache = {**base_env, "NUMBA_CACHE_DIR": str(tmp / f"numba-empty-{len(empty) - 1}")}, "temp"
        else:  # --quick: the cache this process has just used (warm: the kernels ran here) instead of a ~15 s compile
            warm_env, warm_cache = warm_default_cache()
        runs = {"plain": [], "numba": []}
        for _ in range(plan.cold_warm_runs):  # interleaved
            runs["plain"].append(timed_run(plain, warm_env, ROOT))
            runs["numba"].append(timed_run(numba, warm_env, ROOT))
        log(f"  cold start, plain: median {statistics.median(runs['plain']):.2f} s; --kernels numba, warm numba "
            f"cache: median {statistics.median(runs['numba']):.2f} s")
        interpreter = [timed_run([sys.executable, "-c", "pass"], warm_env, ROOT) for _ in range(3)]
        proc = subprocess.run([sys.executable, "-c", _PHASES, str(png), str(args.bundle or "")], env=warm_env, cwd=ROOT,
                              capture_output=True, text=True)
        phases = json.loads(proc.stdout) if proc.returncode == 0 else {"error": proc.stderr.strip()[-300:]}
    name = " ".join([Path(cmd[0]).name, *cmd[1:]])
    return {
        "command": f"{name} detect one.png",
        "numba_command": f"{name} detect --kernels numba one.png",
        "warm_cache": warm_cache,
        "plain_s": spread(runs["plain"]),
        "numba_warm_cache_s": spread(runs["numba"]),
        "numba_empty_cache_s": spread(empty) if empty else
        {"median": None, "min": None, "runs": [], "note": "not measured with --quick (it compiles every kernel)"},
        "python_startup_s": statistics.median(interpreter),
        "phases_ms": phases,
    }


def warm_default_cache() -> tuple[dict, str]:
    """The environment of this process, whose numba cache (NUMBA_CACHE_DIR or the package's own) is warm once
    the kernels have been loaded here."""
    from edgeguard import kernels

    kernels.warmup()
    return dict(os.environ), os.environ.get("NUMBA_CACHE_DIR") or "default"


def spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "runs": values}


# ------------------------------------------------------------------------------------------------ stages


def staged_screen(guard, images, clock: dict[str, float]):
    """Guard.analyze + Guard.screen, piece by piece as they do it (with the guard's kernel backend), adding each
    stage's seconds to ``clock``."""
    from edgeguard.guard import as_batch, kernel_backend

    kernels, s = kernel_backend(guard.kernels), guard._sessions
    t0 = time.perf_counter()
    x = as_batch(images)
    b, k = x.shape[0], guard.k
    image = x.reshape(b, 1, SIDE, SIDE)
    t1 = time.perf_counter()
    mu, logvar = s["encoder"].run(None, {"image": image})
    t2 = time.perf_counter()
    z = kernels.sample_latents(mu, logvar, kernels.image_seeds(x, guard.seed), k)
    t3 = time.perf_counter()
    (recon,) = s["decoder"].run(None, {"z": z})
    t4 = time.perf_counter()
    (logits,) = s["classifier"].run(None, {"image": np.concatenate([image, recon])})
    t5 = time.perf_counter()
    parts = signals_from(kernels, x, mu, logvar, recon, logits, k)
    t6 = time.perf_counter()
    verdicts = verdicts_from(guard, *parts)
    t7 = time.perf_counter()
    for name, dt in zip(STAGES, np.diff([t0, t1, t2, t3, t4, t5, t6, t7])):
        clock[name] += dt
    return verdicts


def section_stages(args, plan: Plan) -> dict:
    out = []
    images = synthetic_digits(max(plan.stage_batches), seed=4)
    with numba_threads(1):
        guard = load_guard(args.bundle, K_BATCH, threads=1)
        for b in plan.stage_batches:
            batch = images[:b]
            matches = staged_screen(guard, batch, dict.fromkeys(STAGES, 0.0)) == guard.screen(batch)
            calls = max(3, plan.stage_calls if b == 1 else plan.stage_calls // 50)
            per_stage = {name: [] for name in STAGES}
            whole = []
            for _ in range(calls):  # alternate: one staged call, one real Guard.screen
                clock = dict.fromkeys(STAGES, 0.0)
                staged_screen(guard, batch, clock)
                for name in STAGES:
                    per_stage[name].append(clock[name])
                t0 = time.perf_counter()
                guard.screen(batch)
                whole.append(time.perf_counter() - t0)
            ms = {name: statistics.median(v) * 1e3 for name, v in per_stage.items()}
            total = sum(ms.values())
            out.append({"batch": b, "k": K_BATCH, "threads": 1, "calls": calls, "ms": ms,
                        "share": {name: v / total for name, v in ms.items()}, "sum_ms": total,
                        "screen_ms": statistics.median(whole) * 1e3, "matches_guard": bool(matches)})
            log(f"  stages B={b}: " + ", ".join(f"{n} {v:.3f}" for n, v in ms.items()) + " ms")
    return {"rows": out}


# ----------------------------------------------------------------------------------------------- kernels


def naive_twins():
    """tests/naive.py when it is importable (a source checkout), else None."""
    try:
        from tests import naive
    except ImportError:
        return None
    return naive


def kernel_cases(b: int, k: int, d: int = 16, seed: int = 0):
    """name -> (numba call, tests/naive.py call or None, edgeguard.kernels_numpy call)."""
    from edgeguard import kernels as K
    from edgeguard import kernels_numpy as KN

    rng = np.random.default_rng(seed)
    x = rng.random((b, N_PIXELS), dtype=np.float32)
    mu = rng.normal(size=(b, d)).astype(np.float32)
    logvar = rng.normal(-1.0, 1.0, size=(b, d)).astype(np.float32)
    seeds = K.image_seeds(x, 0)
    recon = rng.random((b * k, N_PIXELS), dtype=np.float32)
    logits = (3 * rng.normal(size=(b * (k + 1), N_CLASSES))).astype(np.float32)  # the inputs', then the recons'
    probs = np.ascontiguousarray(K.softmax(logits)[b:].reshape(b, k, N_CLASSES))
    labels, majority, *_ = K.vote(probs)
    nv = naive_twins()
    arguments = {"image_seeds": (x, 0), "sample_latents": (mu, logvar, seeds, k), "softmax": (logits,),
                 "vote": (probs,), "input_agreement": (labels, majority), "recon_errors": (x, recon, k),
                 "kl_divergence": (mu, logvar), "posterior_spread": (logvar,),
                 "score": (x, logits, recon, mu, logvar, k)}

    def call(module, name, a):
        fn = getattr(module, name, None)
        return None if fn is None else (lambda: fn(*a))

    return {name: (call(K, name, a), call(nv, name, a), call(KN, name, a)) for name, a in arguments.items()}


def section_kernels(args, plan: Plan) -> dict:
    from edgeguard import kernels as K

    K.warmup()
    rows = []
    with numba_threads(1):
        for b in plan.kernel_batches:
            for name, (fast, naive, vec) in kernel_cases(b, K_BATCH).items():
                variants = {"numba": fast, "vectorised": vec, **({"naive": naive} if naive else {})}
                t = interleaved(variants, plan.kernel_rounds, plan.round_s / 10)
                row = {"kernel": name, "batch": b, "k": K_BATCH, "numba_us": statistics.median(t["numba"]) * 1e6,
                       "vectorised_us": statistics.median(t["vectorised"]) * 1e6,
                       "speedup_vs_vectorised": paired_ratio(t["vectorised"], t["numba"]),
                       "naive_us": statistics.median(t["naive"]) * 1e6 if naive else None,
                       "speedup_vs_naive": paired_ratio(t["naive"], t["numba"]) if naive else None}
                rows.append(row)
    return {"note": "numba threads = 1; numba = the public edgeguard.kernels functions (validation included); "
                    "vectorised = edgeguard.kernels_numpy (the numpy backend, no validation); naive = tests/naive.py; "
                    "score = softmax, vote, input_agreement, recon_errors, kl_divergence and posterior_spread in one "
                    "call (what Guard.analyze calls)",
            "naive_twins": "tests/naive.py" if naive_twins() else None, "rows": rows,
            "numpy_pipeline_parity": numpy_parity(args)}


def numpy_parity(args, n: int = 64) -> dict:
    """Does a numpy-backend Guard give what the numba one gives? (on n synthetic digits)"""
    images = synthetic_digits(n, seed=7)
    numba_guard = load_guard(args.bundle, K_BATCH, threads=1)
    numpy_guard = load_guard(args.bundle, K_BATCH, threads=1, kernels="numpy")
    return {"images": n, **verdict_agreement(numpy_guard.screen(images), numba_guard.screen(images))}


# --------------------------------------------------------------------------------------------- reference


def section_reference(args, plan: Plan) -> dict:
    try:
        import torch
    except ImportError:
        return skipped("torch is not installed (runtime-only install): reference not measured")
    from benchmarks.reference import TorchReference, missing_checkpoints

    run = Path(args.run)
    missing = missing_checkpoints(run)
    if missing:
        return skipped(f"no PyTorch checkpoints in {run} (missing {', '.join(missing)}): reference not measured")
    try:
        from edgeguard.bundle import load_bundle
        from edgeguard.calibration import Calibration

        entry = load_bundle(args.bundle).calibration
        reference = TorchReference.load(run, k=K_BATCH, calibration=Calibration.from_manifest(entry) if entry else None)
    except Exception as e:  # a checkpoint from another architecture, a broken file: say so and go on
        return skipped(f"could not load the checkpoints in {run}: {type(e).__name__}: {e}")

    images = synthetic_digits(max(plan.ref_batches + plan.ref_all_core_batches), seed=5)
    torch_threads_before = torch.get_num_threads()
    rows, parity, lean_check = [], None, None
    try:
        for threads, batches in ((1, plan.ref_batches), (all_cores(), plan.ref_all_core_batches)):
            if not batches:
                continue
            torch.set_num_threads(threads)
            guard = load_guard(args.bundle, K_BATCH, threads=threads)
            numpy_guard = load_guard(args.bundle, K_BATCH, threads=threads, kernels="numpy")
            lean = lean_variant(guard)
            if parity is None:
                parity = reference_parity(guard, reference, images[:64])
                if lean is not None:
                    lean_check = verdict_agreement(lean(images[:64]), guard.screen(images[:64]))
            with numba_threads(threads):
                for b in batches:
                    batch = images[:b]
                    variants = {
                        "runtime": lambda: guard.screen(batch),
                        "torch": lambda: reference.screen(reference.to_tensor(batch)),
                        "numpy_post": lambda: numpy_guard.screen(batch),
                    }
                    if lean is not None:
                        variants["lean"] = lambda: lean(batch)
                    t = interleaved(variants, rounds := plan.ref_rounds if b < 256 else max(3, plan.ref_rounds // 3),
                                    plan.round_s)
                    row = {"batch": b, "k": K_BATCH, "threads": threads, "rounds": rounds,
                           "runtime_ms": statistics.median(t["runtime"]) * 1e3,
                           "torch_ms": statistics.median(t["torch"]) * 1e3,
                           "numpy_post_ms": statistics.median(t["numpy_post"]) * 1e3,
                           "speedup_vs_torch": paired_ratio(t["torch"], t["runtime"]),
                           "speedup_vs_numpy_post": paired_ratio(t["numpy_post"], t["runtime"])}
                    if lean is not None:
                        row["lean_ms"] = statistics.median(t["lean"]) * 1e3
                        row["lean_speedup_vs_torch"] = paired_ratio(t["torch"], t["lean"])
                    rows.append(row)
                    log(f"  reference B={b} threads={threads}: runtime {row['runtime_ms']:.3f} ms, torch "
                        f"{row['torch_ms']:.3f} ms ({row['speedup_vs_torch']:.2f}x), numpy backend "
                        f"{row['numpy_post_ms']:.3f} ms ({row['speedup_vs_numpy_post']:.2f}x)")
        torch.set_num_threads(1)
        widths = classifier_widths(args, plan, reference, images[:1])
    finally:
        torch.set_num_threads(torch_threads_before)
    return {"skipped": False, "reason": None, "run": str(run), "torch_threads": "matched to onnxruntime's",
            "parity": parity, "rows": rows, "classifier_widths": widths,
            "variants": {"runtime": "guard.screen (Verdict objects)",
                         "torch": "benchmarks/reference.py TorchReference.screen (tensors, p-values)",
                         "numpy_post": "Guard.load(kernels='numpy'): onnxruntime with NumPy post-processing "
                                       "(edgeguard.kernels_numpy), what `edgeguard detect` uses below "
                                       "NUMBA_MIN_IMAGES files",
                         "lean": "prototype: every per-call saving measured in `prototypes` together (one "
                                 "onnxruntime call, seed and noise kernels without per-call checks, lean p-values)"},
            "lean_vs_runtime": lean_check}


CLASSIFIER_KEEP = (1.0, 0.5, 0.25)


def classifier_widths(args, plan: Plan, reference, image: np.ndarray) -> dict:
    """What a leaner classifier buys against the reference, batch 1, K=10, 1 thread: the classifier with
    ``CLASSIFIER_KEEP`` of its channels on both sides (the runtime: the bundle's graph with sliced weights; PyTorch:
    a train.models.Classifier of that width). Timing only: neither smaller classifier is trained."""
    import copy

    import onnxruntime as ort

    from edgeguard.sessions import session_options
    from train.models import Classifier

    guard = load_guard(args.bundle, K_BATCH, threads=1)
    width = reference.clf.net[0].out_channels
    first_layer = {keep: max(1, round(width * keep)) for keep in CLASSIFIER_KEEP}
    variants = {}
    for keep in CLASSIFIER_KEEP:
        runtime, torch_ref = guard, reference
        if keep != 1.0:
            try:
                graph = build_slim_classifier(guard.bundle.models["classifier"], keep)
            except Exception as e:  # noqa: BLE001 - no onnx, or a graph the slicer cannot handle: say why, go on
                return skipped(f"{type(e).__name__}: {e}")
            runtime = with_sessions(guard, {"classifier": ort.InferenceSession(
                graph, session_options(1), providers=["CPUExecutionProvider"])})
            torch_ref = copy.copy(reference)
            torch_ref.clf = Classifier(first_layer[keep]).eval()
        x = torch_ref.to_tensor(image)
        variants[f"runtime_{keep}"] = lambda runtime=runtime: runtime.screen(image)
        variants[f"torch_{keep}"] = lambda torch_ref=torch_ref, x=x: torch_ref.screen(x)
    with numba_threads(1):
        t = interleaved(variants, plan.ref_rounds, plan.round_s)
    rows = [{"keep": keep, "first_layer_channels": first_layer[keep],
             "runtime_ms": statistics.median(t[f"runtime_{keep}"]) * 1e3,
             "torch_ms": statistics.median(t[f"torch_{keep}"]) * 1e3,
             "speedup_vs_torch": paired_ratio(t[f"torch_{keep}"], t[f"runtime_{keep}"])} for keep in CLASSIFIER_KEEP]
    for r in rows:
        log(f"  classifier x{r['keep']}: runtime {r['runtime_ms']:.3f} ms, torch {r['torch_ms']:.3f} ms "
            f"({r['speedup_vs_torch']:.2f}x)")
    return {"skipped": False, "rows": rows,
            "note": "the classifier cut to a share of its channels on both sides (runtime: the bundle's graph, "
                    "weights sliced; PyTorch: train.models.Classifier of that width); timing only, not trained"}


def reference_parity(guard, reference, images: np.ndarray) -> dict:
    """Do the checkpoints hold the bundle's weights? (Timing compares the same architecture either way.)"""
    x = reference.to_tensor(images)
    ref = reference.screen(x)
    from edgeguard.guard import as_batch

    mu, _ = guard._sessions["encoder"].run(None, {"image": as_batch(images).reshape(-1, 1, SIDE, SIDE)})
    s = guard.analyze(images)
    max_mu = float(np.abs(ref["mu"].numpy() - mu).max())
    return {"max_abs_mu_difference": max_mu, "input_label_agreement": float((ref["label"].numpy() == s.label).mean()),
            "same_weights": max_mu < 1e-3}


# ---------------------------------------------------------------------------------------------- roofline

# onnx ops whose multiply-adds are counted (bias, activations, pooling and element-wise ops are left out), and ops
# that also do multiply-adds but are not counted here: a graph with one of those is refused rather than undercounted.
MAC_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
UNCOUNTED_MAC_OPS = ("Einsum", "ConvInteger", "MatMulInteger", "QLinearConv", "QLinearMatMul", "QGemm")


def count_flops(model_bytes: bytes, batch: int = 1) -> dict[str, int]:
    """FLOPs (2 x multiply-adds) of the Conv/ConvTranspose/Gemm/MatMul nodes of an ONNX model at ``batch``, by op
    type. ValueError when the graph has an op with multiply-adds not counted here, or when shape inference leaves
    a counted node's shapes unknown."""
    import onnx
    from onnx import shape_inference

    model = onnx.load_from_string(model_bytes)
    uncounted = sorted({n.op_type for n in model.graph.node if n.op_type in UNCOUNTED_MAC_OPS})
    if uncounted:
        raise ValueError(f"{', '.join(uncounted)} nodes: their multiply-adds are not counted here")
    for value in model.graph.input:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param or not dim.dim_value:
                dim.dim_value = batch
    model = shape_inference.infer_shapes(model, strict_mode=True)
    graph = model.graph
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in [*graph.input, *graph.value_info, *graph.output]}
    shapes.update({t.name: list(t.dims) for t in graph.initializer})
    flops: dict[str, int] = {}
    for node in graph.node:
        if node.op_type not in MAC_OPS:
            continue
        try:
            a_shape, w_shape, out_shape = shapes[node.input[0]], shapes[node.input[1]], shapes[node.output[0]]
        except KeyError as e:
            raise ValueError(f"{node.op_type} {node.name!r}: shape inference gave no shape for {e}") from None
        if not a_shape or not w_shape or not out_shape or min(a_shape + w_shape + out_shape) < 1:
            raise ValueError(f"{node.op_type} {node.name!r}: shape inference left unknown dimensions")
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Conv":  # W (Cout, Cin/g, kh, kw): each output element is Cin/g*kh*kw MACs
            macs = int(np.prod(out_shape)) * int(np.prod(w_shape[1:]))
        elif node.op_type == "ConvTranspose":  # W (Cin, Cout/g, kh, kw): each input element scatters Cout/g*kh*kw
            macs = int(np.prod(a_shape)) * int(np.prod(w_shape[1:]))
        elif node.op_type == "Gemm":  # A (M, K) or, with transA, (K, M); out (M, N)
            macs = int(np.prod(out_shape)) * (a_shape[0] if attrs.get("transA", 0) else a_shape[-1])
        else:  # MatMul, numpy semantics: each output element is a dot product over A's last axis
            macs = int(np.prod(out_shape)) * a_shape[-1]
        flops[node.op_type] = flops.get(node.op_type, 0) + 2 * macs
    return flops


def matmul_gflops(threads: int, repeats: int, n: int = 512) -> float:
    """numpy float32 n x n matmul GFLOP/s with BLAS limited to ``threads`` (median of ``repeats``)."""
    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    b = np.random.default_rng(1).random((n, n), dtype=np.float32)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        threadpool_limits = None
    if threadpool_limits is None:  # a subprocess with the BLAS thread count fixed by the environment
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": str(threads),
               "MKL_NUM_THREADS": str(threads)}
        code = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); from benchmarks.latency import matmul_gflops; "
                f"print(matmul_gflops({threads}, {repeats}, {n}))")
        proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        return float(proc.stdout.strip().splitlines()[-1])
    with threadpool_limits(limits=threads):
        for _ in range(3):
            a @ b
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - t0)
    return 2.0 * n**3 / statistics.median(times) / 1e9


def ort_matmul_gflops(repeats: int, n: int = 512) -> float | None:
    """The same matmul through onnxruntime (MLAS, the library the runtime's convolutions use), 1 thread."""
    try:
        import onnxruntime as ort
        from onnx import TensorProto, helper
    except ImportError:
        return None
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "mm",
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, [n, n]) for x in "ab"],
                              [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = 1, 1
    session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    feed = {"a": np.random.default_rng(0).random((n, n), dtype=np.float32),
            "b": np.random.default_rng(1).random((n, n), dtype=np.float32)}
    for _ in range(3):
        session.run(None, feed)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - t0)
    return 2.0 * n**3 / statistics.median(times) / 1e9


def section_roofline(args, plan: Plan, result: dict) -> dict:
    from edgeguard.bundle import load_bundle

    if not importable("onnx"):
        return skipped("the onnx package is not installed (pip install onnx): FLOPs not counted")
    bundle = load_bundle(args.bundle)
    per_model = {}
    for name, data in bundle.models.items():
        try:
            per_model[name] = count_flops(data)
        except Exception as e:  # an op or a graph this counter does not handle: say so rather than guess
            return skipped(f"FLOPs of the {name} graph not counted: {type(e).__name__}: {e}")
    per_pass = {name: sum(f.values()) for name, f in per_model.items()}

    def per_image(k):
        return per_pass["encoder"] + k * per_pass["decoder"] + (k + 1) * per_pass["classifier"]

    gflops_1t = matmul_gflops(1, plan.matmul_repeats)
    gflops_all = matmul_gflops(all_cores(), plan.matmul_repeats)
    ort_1t = ort_matmul_gflops(plan.matmul_repeats)
    flops10 = per_image(K_BATCH)
    out = {"skipped": False, "reason": None,
           "flops_per_pass": per_pass, "flops_by_op": per_model,
           "flops_per_image": {f"k{k}": per_image(k) for k in K_SINGLE},
           "counted": "2 x multiply-adds of Conv/ConvTranspose/Gemm/MatMul (onnx shape inference, batch 1); "
                      "encoder once, decoder K times, classifier K+1 times",
           "matmul_gflops_1t": gflops_1t, "matmul_gflops_all": gflops_all, "ort_matmul_gflops_1t": ort_1t,
           "floor_ms_k10": flops10 / (gflops_1t * 1e9) * 1e3}
    single = {r["k"]: r for r in result.get("single", {}).get("rows", [])}
    if K_BATCH in single:
        achieved = flops10 / (single[K_BATCH]["p50_ms"] / 1e3) / 1e9
        out["achieved_gflops_batch1"] = achieved
        out["fraction_batch1"] = achieved / gflops_1t
    for row in result.get("throughput", {}).get("rows", []):
        if row["threads"] == 1 and row["batch"] == 256:
            achieved = flops10 * row["images_per_s"] / 1e9
            out["achieved_gflops_batch256"] = achieved
            out["fraction_batch256"] = achieved / gflops_1t
    return out


# -------------------------------------------------------------------------------------------- prototypes
# The graph builders read whatever layers the bundle's graphs have and rely only on the tensor names the runtime
# feeds and reads (image, z; mu, logvar, recon, logits). What one of them cannot handle raises ValueError, and the
# prototype that needs it is reported as skipped, with the reason.


def _opsets(*models):
    """(opset imports, IR version) for a graph merged from ``models``, which must share their opsets (an op can
    change meaning from one opset to the next)."""
    found = {tuple(sorted((o.domain, o.version) for o in m.opset_import)) for m in models}
    if len(found) != 1:
        raise ValueError(f"the graphs were exported with different opsets: {sorted(found)}")
    return list(models[0].opset_import), max(m.ir_version for m in models)


def build_fused_decoder_classifier(models: dict[str, bytes]) -> bytes:
    """One ONNX graph: z (B*K, D), image (B,1,28,28) -> recon, logits of concat(image, recon).

    Made from the shipped decoder and classifier graphs (their nodes and weights as they are) plus a Concat.
    """
    import onnx
    from onnx import compose, helper

    dec = compose.add_prefix(onnx.load_from_string(models["decoder"]), "dec/", rename_inputs=False,
                             rename_outputs=False)
    clf = compose.add_prefix(onnx.load_from_string(models["classifier"]), "clf/", rename_inputs=False,
                             rename_outputs=False)
    opsets, ir_version = _opsets(dec, clf)
    concat = helper.make_node("Concat", ["image", "recon"], ["clf_in"], axis=0, name="concat_inputs_recons")
    clf_nodes = []
    for node in clf.graph.node:
        node = onnx.NodeProto.FromString(node.SerializeToString())
        node.input[:] = ["clf_in" if i == "image" else i for i in node.input]
        clf_nodes.append(node)
    graph = helper.make_graph(
        [*dec.graph.node, concat, *clf_nodes], "edgeguard_decoder_classifier",
        [dec.graph.input[0], clf.graph.input[0]], [dec.graph.output[0], clf.graph.output[0]],
        initializer=[*dec.graph.initializer, *clf.graph.initializer])
    model = helper.make_model(graph, opset_imports=opsets, ir_version=ir_version)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def build_split_encoder(model_bytes: bytes, d: int) -> bytes:
    """The encoder with torch.chunk's exported shape arithmetic (Shape, Gather, Add, Div, Mul, Slices: small nodes
    computing a constant) replaced by one Split of the head's output into mu and logvar (d columns each). The head
    is whatever tensor mu and logvar are both sliced from; ValueError when they are not two slices of one tensor."""
    import onnx
    from onnx import TensorProto, helper, shape_inference

    model = onnx.load_from_string(model_bytes)
    graph = model.graph
    producer = {out: i for i, node in enumerate(graph.node) for out in node.output}
    heads = set()
    for name in ("mu", "logvar"):
        node = graph.node[producer[name]] if name in producer else None
        if node is None or node.op_type not in ("Slice", "Split"):
            raise ValueError(f"the encoder's {name} is not a Slice or Split of one tensor "
                             f"({node.op_type if node is not None else 'no node'} makes it)")
        heads.add(node.input[0])
    if len(heads) != 1:
        raise ValueError("mu and logvar are sliced from different tensors")
    (head,) = heads
    inferred = shape_inference.infer_shapes(model)
    shape = {v.name: [x.dim_value for x in v.type.tensor_type.shape.dim] for v in inferred.graph.value_info}
    if shape.get(head, [None])[-1] != 2 * d:
        raise ValueError(f"the tensor mu and logvar are sliced from is shaped {shape.get(head)}, not (B, {2 * d})")
    needed, todo = set(), [head]  # the nodes the head's value depends on
    while todo:
        i = producer.get(todo.pop())
        if i is not None and i not in needed:
            needed.add(i)
            todo.extend(graph.node[i].input)
    split = helper.make_tensor("mu_logvar_split", TensorProto.INT64, [2], [d, d])
    nodes = [*(node for i, node in enumerate(graph.node) if i in needed),
             helper.make_node("Split", [head, "mu_logvar_split"], ["mu", "logvar"], axis=1)]
    used = {i for n in nodes for i in n.input}
    new = helper.make_graph(nodes, graph.name, graph.input, graph.output,
                            initializer=[*[t for t in graph.initializer if t.name in used], split])
    out = helper.make_model(new, opset_imports=list(model.opset_import), ir_version=model.ir_version)
    onnx.checker.check_model(out)
    return out.SerializeToString()


def build_fused_all(models: dict[str, bytes], k: int, d: int, *, split_encoder: bool = False) -> bytes:
    """One ONNX graph for the whole network part: image (B,1,28,28), eps (B, K, D) ->
    mu, logvar, recon, logits. eps is the numba counter-based noise (it depends only on the image bytes and the
    seed, so it can be drawn before the encoder runs); z = mu + exp(logvar/2) * eps is computed in the graph
    (float32, where the kernel computes it in float64 and rounds)."""
    import onnx
    from onnx import TensorProto, compose, helper

    encoder = build_split_encoder(models["encoder"], d) if split_encoder else models["encoder"]
    enc = compose.add_prefix(onnx.load_from_string(encoder), "enc/", rename_inputs=False, rename_outputs=False)
    pair = onnx.load_from_string(build_fused_decoder_classifier(models))
    opsets, ir_version = _opsets(enc, pair)
    half = helper.make_tensor("half", TensorProto.FLOAT, [], [0.5])
    shape = helper.make_tensor("z_shape", TensorProto.INT64, [2], [-1, d])
    one = helper.make_tensor("axis1", TensorProto.INT64, [1], [1])
    nodes = [
        helper.make_node("Mul", ["logvar", "half"], ["half_logvar"]),
        helper.make_node("Exp", ["half_logvar"], ["std"]),
        helper.make_node("Unsqueeze", ["std", "axis1"], ["std3"]),
        helper.make_node("Unsqueeze", ["mu", "axis1"], ["mu3"]),
        helper.make_node("Mul", ["std3", "eps"], ["scaled"]),
        helper.make_node("Add", ["mu3", "scaled"], ["z3"]),
        helper.make_node("Reshape", ["z3", "z_shape"], ["z"]),
    ]
    eps = helper.make_tensor_value_info("eps", TensorProto.FLOAT, ["batch", k, d])
    graph = helper.make_graph(
        [*enc.graph.node, *nodes, *pair.graph.node], "edgeguard_all",
        [enc.graph.input[0], eps], [*enc.graph.output, *pair.graph.output],
        initializer=[*enc.graph.initializer, half, shape, one, *pair.graph.initializer])
    model = helper.make_model(graph, opset_imports=opsets, ir_version=ir_version)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def build_slim_classifier(model_bytes: bytes, keep: float) -> bytes:
    """The classifier with every hidden layer cut to ``keep`` of its output channels or features, and the layer
    after it cut to match (weights sliced, NOT retrained): for timing a leaner architecture only; its answers mean
    nothing. Layers are Conv, Gemm and MatMul nodes with constant weights, in graph order (a plain chain: strided
    or pooled convolutions, a Flatten, Linear layers); the last one keeps its outputs (the classes). Per-channel
    constants of the nodes in between (a BatchNormalization, a bias Add) are cut along with their channels.
    ValueError for what this cannot slice (grouped convolutions, computed weights, a feature count that is not a
    multiple of the channels before it); a graph that builds but does not run fails in onnxruntime."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load_from_string(model_bytes)
    graph = model.graph
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    layers = [i for i, n in enumerate(graph.node) if n.op_type in ("Conv", "Gemm", "MatMul")]
    if len(layers) < 2:
        raise ValueError(f"{len(layers)} Conv/Gemm/MatMul layer(s): no hidden layer to slim")
    added = []

    def put(node, j: int, array: np.ndarray) -> None:  # a fresh initializer: a shared one may be cut differently
        name = f"{node.input[j]}/slim{len(added)}"
        added.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        node.input[j] = name

    kept = full = None  # channels of the activation flowing now, after / before slicing (None: not sliced)
    for index, node in enumerate(graph.node):
        op = node.op_type
        if index in layers:
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            if node.input[1] not in inits:
                raise ValueError(f"{op} {node.name!r}: its weights are computed in the graph, not constants")
            w = inits[node.input[1]]
            if op == "Conv":  # W (Cout, Cin, kh, kw)
                if attrs.get("group", 1) != 1:
                    raise ValueError(f"Conv {node.name!r}: grouped convolution")
                out_axis, in_axis = 0, 1
            elif op == "Gemm":  # B (K, N), or (N, K) with transB
                if attrs.get("transA", 0):
                    raise ValueError(f"Gemm {node.name!r}: transA")
                out_axis, in_axis = (0, 1) if attrs.get("transB", 0) else (1, 0)
            elif w.ndim == 2:  # MatMul x @ W, W (K, N)
                out_axis, in_axis = 1, 0
            else:
                raise ValueError(f"MatMul {node.name!r}: weights shaped {w.shape}, not 2-D")
            if kept is not None:  # the inputs: kept channels (x the features per channel after a Flatten) first
                if w.shape[in_axis] % full:
                    raise ValueError(f"{op} {node.name!r}: {w.shape[in_axis]} inputs are not a multiple of the "
                                     f"{full} channels before it")
                w = np.take(w, np.arange(kept * (w.shape[in_axis] // full)), axis=in_axis)
            if index == layers[-1]:
                kept = full = None
            else:
                full = w.shape[out_axis]
                kept = max(1, int(round(full * keep)))
                w = np.take(w, np.arange(kept), axis=out_axis)
                bias = inits.get(node.input[2]) if len(node.input) > 2 else None
                if bias is not None and bias.size > 1:  # (N,) or broadcast (1, N)
                    if bias.shape[-1] != full:
                        raise ValueError(f"{op} {node.name!r}: bias shaped {bias.shape} for {full} outputs")
                    put(node, 2, np.take(bias, np.arange(kept), axis=-1))
            put(node, 1, w)
        elif kept is not None:  # a node between layers: cut its per-channel constants (BatchNormalization, Add)
            for j, name in enumerate(node.input):
                value = inits.get(name)
                if value is None or value.size == 1 or not np.issubdtype(value.dtype, np.floating):
                    continue  # an activation, a scalar, or a shape/axes argument
                axes = [a for a, n in enumerate(value.shape) if n == full]
                if len(axes) != 1:
                    raise ValueError(f"{op} {node.name!r}: constant {name!r} shaped {value.shape} is not per-channel "
                                     f"over the {full} channels")
                put(node, j, np.take(value, np.arange(kept), axis=axes[0]))
    used = {i for n in graph.node for i in n.input}
    kept_inits = [t for t in graph.initializer if t.name in used] + added
    del graph.initializer[:]
    graph.initializer.extend(kept_inits)
    del graph.value_info[:]  # the shapes recorded for the full-width activations
    onnx.checker.check_model(model)
    return model.SerializeToString()


def fused_signals(guard, fused, images: np.ndarray, *, all_in_one: bool):
    """Guard.analyze (numba kernels) with the fused graph(s): 2 onnxruntime calls (encoder; decoder+classifier)
    or 1."""
    from edgeguard import kernels
    from edgeguard.guard import as_batch

    x = as_batch(images)
    b, k = x.shape[0], guard.k
    image = x.reshape(b, 1, SIDE, SIDE)
    seeds = kernels.image_seeds(x, guard.seed)
    if all_in_one:
        d = guard.bundle.latent_dim
        eps = kernels.normal_noise(seeds, k, d).reshape(b, k, d)
        mu, logvar, recon, logits = fused.run(None, {"image": image, "eps": eps})
    else:
        mu, logvar = guard._sessions["encoder"].run(None, {"image": image})
        z = kernels.sample_latents(mu, logvar, seeds, k)
        recon, logits = fused.run(None, {"z": z, "image": image})
    return signals_from(kernels, x, mu, logvar, recon, logits, k)


# The lean pieces call the compiled serial numba kernels for seeds and sampling directly: the inputs were validated
# once (as_batch) and every array in between is made here, so those per-call Python checks and that dispatch are
# skipped (kernels.score, one call per screening, is called through its public function). They use private names of
# edgeguard.kernels (AttributeError or TypeError when those change: the prototypes are then left out).


def lean_seeds(x: np.ndarray, seed: int) -> np.ndarray:
    from edgeguard import kernels as K

    seeds = np.empty(x.shape[0], np.uint64)
    K._image_seeds_serial(x.view(np.uint32), np.uint64(seed % 2**64), seeds)
    return seeds


def lean_signals(guard, images: np.ndarray):
    """Guard.analyze with the serial seed and sampling kernels called directly (3 onnxruntime calls, as now)."""
    from edgeguard import kernels as K
    from edgeguard.guard import as_batch

    x = as_batch(images)
    b, k = x.shape[0], guard.k
    image = x.reshape(b, 1, SIDE, SIDE)
    s = guard._sessions
    mu, logvar = s["encoder"].run(None, {"image": image})
    z = np.empty((b * k, mu.shape[1]), np.float32)
    K._sample_serial(mu, logvar, lean_seeds(x, guard.seed), k, z)
    (recon,) = s["decoder"].run(None, {"z": z})
    (logits,) = s["classifier"].run(None, {"image": np.concatenate([image, recon])})
    return signals_from(K, x, mu, logvar, recon, logits, k)


def lean_screen(guard, whole, images: np.ndarray):
    """Every measured per-call saving together: one onnxruntime call (the split encoder, sampling, decoder and
    classifier in one graph), the seed and noise kernels called directly, lean p-values. Same Verdict objects."""
    from edgeguard import kernels as K
    from edgeguard.guard import as_batch

    x = as_batch(images)
    b, k, d = x.shape[0], guard.k, guard.bundle.latent_dim
    eps = np.empty((b * k, d), np.float32)
    K._noise_serial(lean_seeds(x, guard.seed), k, eps)
    mu, logvar, recon, logits = whole.run(None, {"image": x.reshape(b, 1, SIDE, SIDE), "eps": eps.reshape(b, k, d)})
    return verdicts_from(guard, *signals_from(K, x, mu, logvar, recon, logits, k),
                         p_values=lambda signals: guard.calibration.p_values(signals, K))


def lean_variant(guard):
    """lean_screen bound to a one-graph session for ``guard``, or None (the reason logged) when onnx is missing,
    the graphs cannot be fused or the kernel internals changed: then the variant is left out."""
    try:
        import onnxruntime as ort

        from edgeguard.sessions import session_options

        whole = ort.InferenceSession(build_fused_all(guard.bundle.models, guard.k, guard.bundle.latent_dim,
                                                     split_encoder=True),
                                     session_options(guard._sessions["encoder"].get_session_options()
                                                     .intra_op_num_threads),
                                     providers=["CPUExecutionProvider"])
        lean_screen(guard, whole, synthetic_digits(4, seed=11))
    except Exception as e:  # noqa: BLE001 - an optional variant: whatever stops it, say why and go on
        log(f"  lean prototype left out: {type(e).__name__}: {e}")
        return None
    return lambda batch: lean_screen(guard, whole, batch)


def verdict_agreement(ours, theirs) -> dict:
    return {"same_verdicts": [v.verdict for v in ours] == [v.verdict for v in theirs],
            "same_labels": all(a.labels == b.labels and a.label == b.label for a, b in zip(ours, theirs)),
            "max_abs_score_difference": float(max(abs(a.scores[s] - b.scores[s])
                                                  for a, b in zip(ours, theirs) for s in a.scores))}


def chunked_session(session, rows: int):
    """A stand-in for an onnxruntime session that runs its batch in pieces of at most ``rows`` rows."""

    class Chunked:
        def run(self, names, feed):
            (key, value), = feed.items()
            if len(value) <= rows:
                return session.run(names, feed)
            parts = [session.run(names, {key: value[i:i + rows]}) for i in range(0, len(value), rows)]
            return [np.concatenate(p) for p in zip(*parts)]

        def __getattr__(self, name):
            return getattr(session, name)

    return Chunked()


def with_sessions(guard, sessions: dict):
    """A shallow copy of ``guard`` that runs other sessions (same bundle, calibration, k, seed, kernels)."""
    import copy

    other = copy.copy(guard)
    other._sessions = {**guard._sessions, **sessions}
    return other


def section_prototypes(args, plan: Plan) -> dict:
    """Each candidate change to the runtime, measured interleaved against the current runtime."""
    out: dict = {}
    have_onnx = importable("onnx")
    import onnxruntime as ort

    from edgeguard.sessions import session_options

    images = synthetic_digits(256, seed=6)
    guard = load_guard(args.bundle, K_BATCH, threads=1)
    models = guard.bundle.models
    batches = (1, 256) if plan is FULL else (1,)

    def session(data: bytes):
        return ort.InferenceSession(data, session_options(1), providers=["CPUExecutionProvider"])

    def attempt(name: str, build):
        """build(): what the comparison needs, built and run once; or None, with ``name`` reported as skipped
        (a graph the builders cannot handle, a missing package, changed internals)."""
        try:
            return build()
        except Exception as e:  # noqa: BLE001 - a prototype never stops the benchmark
            out[name] = skipped(f"{type(e).__name__}: {e}")
            log(f"  prototype {name} skipped: {out[name]['reason']}")
            return None

    def compare(name, variants: dict, note: str, check=None, sizes=batches) -> None:
        rows = []
        with numba_threads(1):
            for b in sizes:
                batch = images[:b]
                t = interleaved({key: (lambda f=f: f(batch)) for key, f in variants.items()},
                                plan.proto_rounds if b < 256 else max(3, plan.proto_rounds // 3), plan.round_s)
                base = t["current"]
                row = {"batch": b, "k": K_BATCH, "threads": 1,
                       "ms": {key: statistics.median(v) * 1e3 for key, v in t.items()},
                       "speedup": {key: paired_ratio(base, v) for key, v in t.items() if key != "current"}}
                if check is not None:
                    row["same_verdicts"] = check(batch)
                rows.append(row)
                log(f"  prototype {name} B={b}: " + ", ".join(f"{key} {v:.3f} ms" for key, v in row["ms"].items()))
        out[name] = {"note": note, "rows": rows}

    # 1. fewer onnxruntime calls: decoder+classifier in one graph; everything in one graph.
    def fused():
        pair = session(build_fused_decoder_classifier(models))
        whole = session(build_fused_all(models, K_BATCH, guard.bundle.latent_dim))

        def screen_pair(batch):
            return verdicts_from(guard, *fused_signals(guard, pair, batch, all_in_one=False))

        def screen_whole(batch):
            return verdicts_from(guard, *fused_signals(guard, whole, batch, all_in_one=True))

        screen_pair(images[:2]), screen_whole(images[:2])
        return screen_pair, screen_whole

    if not have_onnx:
        out["fused_graphs"] = skipped("the onnx package is not installed")
    elif built := attempt("fused_graphs", fused):
        screen_pair, screen_whole = built
        compare("fused_graphs", {"current": guard.screen, "decoder+classifier": screen_pair, "one_graph": screen_whole},
                "3 onnxruntime calls (current) vs 2 (decoder+classifier fused with a Concat) vs 1 (encoder, "
                "z = mu + exp(logvar/2)*eps in float32, decoder, classifier; eps from kernels.normal_noise)",
                check=lambda batch: {"decoder+classifier": screen_pair(batch) == guard.screen(batch),
                                     "one_graph": [v.verdict for v in screen_whole(batch)]
                                     == [v.verdict for v in guard.screen(batch)]})

    # 2. less per-call Python: the kernels called without their per-call checks.
    def screen_lean(batch):
        return verdicts_from(guard, *lean_signals(guard, batch))

    if attempt("unchecked_kernels", lambda: screen_lean(images[:8])) is not None:
        same = screen_lean(images[:8]) == guard.screen(images[:8])
        compare("unchecked_kernels", {"current": guard.screen, "unchecked": screen_lean},
                "the serial seed and sampling kernels called directly (inputs validated once by as_batch) vs the "
                "public kernel functions, which check dtype/shape/contiguity and pick a variant on every call "
                "(kernels.score through its public function in both)",
                check=lambda batch: same and screen_lean(batch) == guard.screen(batch), sizes=(1,))

    # 3. session options: graph optimisation level (ALL adds the NCHWc layout transform).
    def sessions_at(level):
        opts = session_options(1)
        opts.graph_optimization_level = level
        return {name: ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
                for name, data in models.items()}

    extended = with_sessions(guard, sessions_at(ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED))
    compare("optimization_level", {"current": guard.screen, "extended": extended.screen},
            "ORT_ENABLE_ALL (current) vs ORT_ENABLE_EXTENDED (no NCHWc layout transform)")

    # 4. chunked batches: the decoder and classifier run big batches in pieces that stay in cache.
    if plan is FULL:
        variants = {"current": guard.screen}
        for rows in (16, 32, 64, 256):
            variants[f"chunks_of_{rows}"] = with_sessions(guard, {
                name: chunked_session(guard._sessions[name], rows) for name in ("decoder", "classifier")}).screen
        compare("chunked_batches", variants,
                "decoder and classifier run in pieces of at most N rows (B*K and B*(K+1) rows in one call now)",
                sizes=(256,))

    # 4b. both cores for throughput: two Python threads, each screening half the batch on one-thread sessions
    # (onnxruntime and the numba kernels release the GIL), against one Guard with 2 intra-op threads.
    if plan is FULL:
        from concurrent.futures import ThreadPoolExecutor

        import numba

        cores = all_cores()
        pool = ThreadPoolExecutor(cores, initializer=numba.set_num_threads, initargs=(1,))
        guard_all = load_guard(args.bundle, K_BATCH, threads=cores)

        chunked = with_sessions(guard, {name: chunked_session(guard._sessions[name], 32)
                                        for name in ("decoder", "classifier")})

        def split_screen(batch, g=guard):
            parts = np.array_split(batch, cores)
            return [v for part in pool.map(g.screen, parts) for v in part]

        def all_threads(batch):
            with numba_threads(cores):
                return guard_all.screen(batch)

        same = split_screen(images) == guard.screen(images) == split_screen(images, chunked)
        compare("worker_threads", {"current": guard.screen, f"threads={cores}": all_threads,
                                   f"{cores}_workers": split_screen,
                                   f"{cores}_workers_chunks_of_32": lambda batch: split_screen(batch, chunked)},
                f"1 intra-op thread (current default) vs one Guard with {cores} intra-op and numba threads vs "
                f"{cores} Python threads each screening a share of the batch with the 1-thread Guard (and with "
                "its decoder/classifier runs cut to 32 rows)",
                check=lambda batch: same, sizes=(64, 256))
        pool.shutdown()

    # 5. a leaner model: the classifier runs K+1 times per image.
    def slim():
        data = build_slim_classifier(models["classifier"], 0.5)
        slim_guard = with_sessions(guard, {"classifier": session(data)})
        slim_guard.screen(images[:2])

        def mflop(graph: bytes) -> str:
            try:
                return f"{sum(count_flops(graph).values()) / 1e6:.2f}"
            except Exception:  # noqa: BLE001 - no onnx shape inference for it: the timing still stands
                return "?"

        return slim_guard.screen, mflop(data), mflop(models["classifier"])

    if not have_onnx:
        out["slim_classifier"] = skipped("the onnx package is not installed")
    elif built := attempt("slim_classifier", slim):
        slim_screen, slim_mflop, full_mflop = built
        compare("slim_classifier", {"current": guard.screen, "classifier_x0.5": slim_screen},
                "classifier with half the channels/features in every hidden layer (weights sliced, not retrained: "
                f"timing only; {slim_mflop} instead of {full_mflop} MFLOP per pass)")

    # 6. latency against K (what K fits a latency budget), 1 thread, batch 1, interleaved across K.
    image = images[:1]
    sweep_ks = (1, 2, 4, 6, 8, 10)
    with numba_threads(1):
        guards = {k: load_guard(args.bundle, k, threads=1) for k in sweep_ks}
        t = interleaved({str(k): (lambda g=g: g.screen(image)) for k, g in guards.items()}, plan.proto_rounds,
                        plan.round_s / 2)
    out["k_sweep"] = {"note": "ms per guard.screen call on one image, 1 thread, by K (interleaved rounds, medians)",
                      "ms": {k: statistics.median(v) * 1e3 for k, v in t.items()}}

    # 7. per-call overhead of session.run on the smallest model (what fusing saves per call).
    enc = guard._sessions["encoder"]
    feed = {"image": np.zeros((1, 1, SIDE, SIDE), np.float32)}
    binding = enc.io_binding()
    binding.bind_cpu_input("image", feed["image"])
    for name in ("mu", "logvar"):
        binding.bind_output(name)
    t = interleaved({"run": lambda: enc.run(None, feed), "run_with_iobinding": lambda: enc.run_with_iobinding(binding)},
                    plan.proto_rounds, plan.round_s)
    out["encoder_call"] = {"note": "one encoder call at batch 1: session.run vs a prepared io_binding",
                           "us": {key: statistics.median(v) * 1e6 for key, v in t.items()}}
    return out


def section_cold_prototypes(args, plan: Plan) -> dict:
    """Cold-start candidates: fresh processes screening one.png (warm numba cache), interleaved, median of runs."""
    runs = max(1, plan.cold_warm_runs)
    with tempfile.TemporaryDirectory(prefix="edgeguard-coldproto-") as tmp:
        png = Path(tmp) / "one.png"
        write_png(png)
        env, _ = warm_default_cache()
        bundle = ["--bundle", str(args.bundle)] if args.bundle else []

        def cli(*options: str) -> list[str]:
            return [*cli_command(), "detect", *options, str(png), *bundle]

        def gc_frozen(*options: str) -> list[str]:
            # The CLI's own main(), its heavy imports done with the collector off, then frozen: the collector never
            # walks those objects again, during the run or in the final collection at exit (CPython's finalisation).
            heavy = "edgeguard.cli, edgeguard.guard, edgeguard.normalize" + (", edgeguard.kernels" if options else "")
            return [sys.executable, "-c", f"import gc, sys\ngc.disable()\nimport {heavy}\ngc.freeze()\ngc.enable()\n"
                    "sys.argv = ['edgeguard', 'detect', *sys.argv[1:]]\nfrom edgeguard.cli import main\nmain()",
                    *options, str(png), *bundle]

        variants = {"current": cli(), "gc_frozen": gc_frozen()}
        if plan is FULL:  # the same idea for the numba backend (what `detect` uses from NUMBA_MIN_IMAGES files on)
            variants.update(numba=cli("--kernels", "numba"), numba_gc_frozen=gc_frozen("--kernels", "numba"))
        times = {key: [] for key in variants}
        for _ in range(runs):  # interleaved
            for key, cmd in variants.items():
                times[key].append(timed_run(cmd, env, ROOT))
        proc = subprocess.run([sys.executable, "-c", _KERNEL_LOAD], env=env, cwd=ROOT, capture_output=True, text=True)
        kernel_load = json.loads(proc.stdout) if proc.returncode == 0 else {"error": proc.stderr.strip()[-300:]}
    return {"note": "wall seconds of a fresh process screening one.png (warm numba cache), interleaved; 'current': "
                    "`edgeguard detect one.png` (numpy kernels through --kernels auto); 'gc_frozen': its main() with "
                    "the heavy imports done with gc disabled, then gc.freeze(), so the collector never walks those "
                    "objects again (nor at interpreter exit); 'numba*' (full run only): the same with --kernels numba",
            "median_s": {key: statistics.median(v) for key, v in times.items()}, "runs": runs,
            "kernel_load_ms": kernel_load}


# How `import edgeguard.kernels` spends its time with a warm cache: each @njit with an explicit signature loads
# its compiled code when the module is imported; the first one also initialises numba's compiler target.
_KERNEL_LOAD = r"""
import json, time
t0 = time.perf_counter()
import numba
ms = {"import numba": (time.perf_counter() - t0) * 1e3}
njit, loads = numba.njit, []
def timed(*a, **kw):
    decorate = njit(*a, **kw)
    def wrap(fn):
        t = time.perf_counter(); out = decorate(fn); loads.append((fn.__name__, (time.perf_counter() - t) * 1e3))
        return out
    return wrap
numba.njit = timed
import edgeguard.kernels
ms["first kernel (numba target initialisation)"] = loads[0][1]
ms["other helpers"] = sum(t for n, t in loads[1:] if not n.endswith(("_serial", "_parallel")))
ms["serial batch kernels"] = sum(t for n, t in loads if n.endswith("_serial"))
ms["parallel batch kernels"] = sum(t for n, t in loads if n.endswith("_parallel"))
ms["kernels loaded"] = len(loads)
print(json.dumps(ms))
"""


# --------------------------------------------------------------------------------------------- targets


def measured_targets(result: dict) -> dict[str, float | None]:
    single = {r["k"]: r for r in result["single"].get("rows", [])}
    ref = {(r["batch"], r["threads"]): r for r in result["reference"].get("rows", [])}
    cold = result["cold_start"]
    return {
        "p50_k10_ms": single[K_BATCH]["p50_ms"] if K_BATCH in single else None,
        "speedup_torch_b1": ref[(1, 1)]["speedup_vs_torch"] if (1, 1) in ref else None,
        "speedup_torch_b256": ref[(256, 1)]["speedup_vs_torch"] if (256, 1) in ref else None,
        "cold_start_warm_s": cold["plain_s"]["median"] if "plain_s" in cold else None,  # the plain command
    }


def evaluate_targets(result: dict) -> list[dict]:
    values = measured_targets(result)
    rows = []
    for key, text, limit, unit, higher in TARGETS:
        value = values[key]
        status = "SKIP" if value is None else ("PASS" if (value >= limit if higher else value <= limit) else "MISS")
        rows.append({"key": key, "target": text, "limit": limit, "unit": unit,
                     "comparison": ">=" if higher else "<=", "measured": value, "status": status})
    return rows


# ---------------------------------------------------------------------------------------------- output


def fmt(value, digits=3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def yes_no(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict):
        return ", ".join(f"{key}: {yes_no(v)}" for key, v in value.items())
    return "yes" if value else "NO"


def tables(result: dict) -> list[tuple[str, list[str], list[list[str]], str | None]]:
    """(title, columns, rows, note) for every section: shared by the rich and the markdown output."""
    out = []
    m = result["machine"]
    out.append(("Machine", ["cpu", "family/model", "SIMD", "cores", "python", "numpy", "onnxruntime", "numba",
                            "torch", "load avg (start)"],
                [[m["cpu"], m["cpu_family_model"], " ".join(m["simd"]), str(m["cores"]), m["versions"]["python"], m["versions"]["numpy"],
                  m["versions"]["onnxruntime"], m["versions"]["numba"], m["versions"].get("torch") or "-",
                  " ".join(f"{x:.2f}" for x in m["loadavg"]) if m["loadavg"] else "-"]], None))
    targets = result["targets"]
    out.append(("Targets", ["target", "limit", "measured", "status"],
                [[t["target"], f"{t['comparison']} {t['limit']} {t['unit']}",
                  f"{fmt(t['measured'])} {t['unit']}" if t["measured"] is not None else "-", t["status"]]
                 for t in targets], None))
    s = result["single"]
    if "rows" in s:
        out.append(("Single-image latency, guard.screen (1 thread)", ["K", "calls", "p50 ms", "p95 ms", "p99 ms"],
                    [[str(r["k"]), str(r["calls"]), fmt(r["p50_ms"]), fmt(r["p95_ms"]), fmt(r["p99_ms"])]
                     for r in s["rows"]], None))
    tp = result["throughput"]
    if "rows" in tp:
        out.append((f"Batch throughput, K={K_BATCH}", ["batch", "threads", "median ms / call", "images/s"],
                    [[str(r["batch"]), str(r["threads"]), fmt(r["median_ms"]), fmt(r["images_per_s"], 0)]
                     for r in tp["rows"]], tp["note"]))
    c = result["cold_start"]
    if "plain_s" in c:
        out.append(("Cold start in a fresh process", ["command", "kernels", "numba cache", "median s", "min s", "runs"],
                    [[c[command], kernels, cache, fmt(c[key]["median"]), fmt(c[key]["min"]), str(len(c[key]["runs"]))]
                     for command, kernels, cache, key in (
                         ("command", "numpy (auto, 1 file)", "not used", "plain_s"),
                         ("numba_command", "numba", "warm", "numba_warm_cache_s"),
                         ("numba_command", "numba", "empty", "numba_empty_cache_s"))],
                    f"the target is the first row; python -c pass: {c['python_startup_s']:.3f} s"))
        ph = c["phases_ms"]
        out.append((f"Cold start, where the time goes: {c['command']} (fresh process)", ["phase", "ms"],
                    [[name, fmt(v, 1) if isinstance(v, float) else str(v)] for name, v in ph.items()],
                    "'+' lines: imported after the total in the same process, what the numba backend adds"))
    st = result["stages"]
    for r in st.get("rows", []):
        out.append((f"Stages, batch {r['batch']}, K={r['k']}, 1 thread (medians)", ["stage", "ms", "share"],
                    [[name, fmt(r["ms"][name]), f"{100 * r['share'][name]:.0f}%"] for name in STAGES]
                    + [["sum of stages", fmt(r["sum_ms"]), ""], ["guard.screen", fmt(r["screen_ms"]), ""]],
                    f"staged pipeline gives the same verdicts as guard.screen: {r['matches_guard']}"))
    kn = result["kernels"]
    if "rows" in kn:
        parity = kn["numpy_pipeline_parity"]
        out.append(("Kernels: numba vs NumPy twins (1 thread)",
                    ["kernel", "batch", "numba us", "kernels_numpy us", "x", "tests/naive.py us", "x"],
                    [[r["kernel"], str(r["batch"]), fmt(r["numba_us"], 1), fmt(r["vectorised_us"], 1),
                      fmt(r["speedup_vs_vectorised"], 1), fmt(r["naive_us"], 1), fmt(r["speedup_vs_naive"], 1)]
                     for r in kn["rows"]],
                    f"{kn['note']}. Guard with kernels='numpy' vs 'numba' on {parity['images']} digits: same verdicts "
                    f"{yes_no(parity['same_verdicts'])}, same labels {yes_no(parity['same_labels'])}, max |score "
                    f"difference| {parity['max_abs_score_difference']:.2g}"))
    ref = result["reference"]
    if ref.get("skipped"):
        out.append(("Reference", ["skipped"], [[ref["reason"]]], None))
    elif "rows" in ref:
        p = ref["parity"]
        out.append((f"Runtime vs PyTorch eager and vs the numpy kernels backend, K={K_BATCH} (interleaved, medians)",
                    ["batch", "threads", "runtime ms", "torch ms", "speed-up", "numpy backend ms", "speed-up",
                     "lean prototype ms", "its speed-up over torch"],
                    [[str(r["batch"]), str(r["threads"]), fmt(r["runtime_ms"]), fmt(r["torch_ms"]),
                      f"{r['speedup_vs_torch']:.2f}x", fmt(r["numpy_post_ms"]), f"{r['speedup_vs_numpy_post']:.2f}x",
                      fmt(r.get("lean_ms")), f"{r['lean_speedup_vs_torch']:.2f}x" if "lean_ms" in r else "-"]
                     for r in ref["rows"]],
                    f"checkpoints {ref['run']}; same weights as the bundle: {p['same_weights']} (max |mu diff| "
                    f"{p['max_abs_mu_difference']:.2g}, input labels agree on {100 * p['input_label_agreement']:.0f}%)"))
        cw = ref.get("classifier_widths", {})
        if cw.get("rows"):
            out.append((f"A leaner classifier against PyTorch eager, batch 1, K={K_BATCH}, 1 thread (interleaved, medians)",
                        ["classifier channels", "runtime ms", "torch ms", "speed-up"],
                        [[f"x{r['keep']:g} ({r['first_layer_channels']} in the first layer)",
                          fmt(r["runtime_ms"]), fmt(r["torch_ms"]), f"{r['speedup_vs_torch']:.2f}x"]
                         for r in cw["rows"]], cw["note"]))
        elif cw.get("skipped"):
            out.append(("A leaner classifier against PyTorch eager", ["skipped"], [[cw["reason"]]], None))
    rf = result["roofline"]
    if rf.get("skipped"):
        out.append(("Roofline", ["skipped"], [[rf["reason"]]], None))
    else:
        fp = rf["flops_per_pass"]
        rows = [["encoder pass", f"{fp['encoder'] / 1e6:.2f} MFLOP"], ["decoder pass", f"{fp['decoder'] / 1e6:.2f} MFLOP"],
                ["classifier pass", f"{fp['classifier'] / 1e6:.2f} MFLOP"]]
        rows += [[f"per screened image, K={k[1:]}", f"{v / 1e6:.2f} MFLOP"] for k, v in rf["flops_per_image"].items()]
        rows += [["numpy matmul 512x512, 1 thread", f"{rf['matmul_gflops_1t']:.1f} GFLOP/s"],
                 ["numpy matmul 512x512, all cores", f"{rf['matmul_gflops_all']:.1f} GFLOP/s"],
                 ["onnxruntime MatMul 512x512, 1 thread",
                  f"{rf['ort_matmul_gflops_1t']:.1f} GFLOP/s" if rf["ort_matmul_gflops_1t"] else "-"],
                 [f"floor: K={K_BATCH} image at matmul speed, 1 thread", f"{rf['floor_ms_k10']:.3f} ms"]]
        if "achieved_gflops_batch1" in rf:
            rows.append(["achieved, batch 1 (p50, K=10)",
                         f"{rf['achieved_gflops_batch1']:.1f} GFLOP/s = {100 * rf['fraction_batch1']:.0f}% of matmul"])
        if "achieved_gflops_batch256" in rf:
            rows.append(["achieved, batch 256 (1 thread, K=10)",
                         f"{rf['achieved_gflops_batch256']:.1f} GFLOP/s = {100 * rf['fraction_batch256']:.0f}% of matmul"])
        out.append(("Physical limit (roofline)", ["quantity", "value"], rows, rf["counted"]))
    pr = result["prototypes"]
    if not pr.get("skipped"):
        for name, entry in pr.items():
            if not isinstance(entry, dict) or entry.get("skipped"):
                continue
            if "rows" in entry:
                keys = list(entry["rows"][0]["ms"])
                out.append((f"Prototype: {name}", ["batch", *[f"{k} ms" for k in keys], "speed-up", "same verdicts"],
                            [[str(r["batch"]), *[fmt(r["ms"][k]) for k in keys],
                              ", ".join(f"{k} {v:.2f}x" for k, v in r["speedup"].items()),
                              yes_no(r.get("same_verdicts"))] for r in entry["rows"]], entry["note"]))
            elif "ms" in entry:
                out.append((f"Prototype: {name}", [f"K={k}" for k in entry["ms"]],
                            [[fmt(v) + " ms" for v in entry["ms"].values()]], entry["note"]))
            elif "us" in entry:
                out.append((f"Prototype: {name}", list(entry["us"]), [[fmt(v, 1) + " us" for v in entry["us"].values()]],
                            entry["note"]))
            elif "median_s" in entry:
                out.append((f"Prototype: {name}", list(entry["median_s"]),
                            [[fmt(v) + " s" for v in entry["median_s"].values()]], entry["note"]))
    return out


def print_rich(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False, width=None if sys.stdout.isatty() else 150)
    for title, columns, rows, note in tables(result):
        table = Table(title=title, title_justify="left", caption=note, caption_justify="left")
        for col in columns:
            table.add_column(col, overflow="fold")
        for row in rows:
            if row and row[-1] in ("PASS", "MISS", "SKIP"):
                row = [*row[:-1], {"PASS": "[green]PASS[/]", "MISS": "[red]MISS[/]", "SKIP": "[yellow]SKIP[/]"}[row[-1]]]
            table.add_row(*row)
        console.print(table)
    console.print(f"command: {result['command']}  ({result['elapsed_s']:.0f} s)")


def markdown_table(columns, rows) -> str:
    def cell(x):
        return str(x).replace("|", "\\|")

    lines = ["| " + " | ".join(map(cell, columns)) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(map(cell, row)) + " |" for row in rows]
    return "\n".join(lines)


def to_markdown(result: dict) -> str:
    m = result["machine"]
    parts = [
        "# EdgeGuard latency report",
        "",
        f"Generated by `{result['command']}` on {result['created']} ({result['elapsed_s']:.0f} s). "
        f"Machine: {m['cpu']} (family/model {m['cpu_family_model']}, {' '.join(m['simd'])}), {m['cores']} cores, "
        f"{m['os']}, load average at the start {' '.join(f'{x:.2f}' for x in m['loadavg'] or [])}; Python {m['versions']['python']}, numpy "
        f"{m['versions']['numpy']}, onnxruntime {m['versions']['onnxruntime']}, numba {m['versions']['numba']}, "
        f"torch {m['versions'].get('torch') or 'not installed'}. Bundle: `{result['bundle']['path']}` "
        f"(sha256 of the models: {', '.join(f'{k} {v[:12]}' for k, v in result['bundle']['sha256'].items())}).",
        "",
        "Times are medians unless marked p95/p99; ratios are medians of per-round ratios from interleaved rounds "
        "in this same run." + load_note(m),
        "",
    ]
    for title, columns, rows, note in tables(result)[1:]:
        parts += [f"## {title}", "", markdown_table(columns, rows), ""]
        if note:
            parts += [f"_{note}_", ""]
    return "\n".join(parts)


def load_note(machine: dict) -> str:
    """A warning when other work shared the CPU during the run (absolute times are then inflated)."""
    start, end = (machine.get("loadavg") or [0])[0], (machine.get("loadavg_end") or [0])[0]
    if max(start, end) < 1.5:  # this benchmark itself keeps about one core busy
        return ""
    return (f" The 1-minute load average was {start:.1f} at the start and {end:.1f} at the end on {machine['cores']} "
            "cores (this benchmark accounts for about 1): other jobs shared the CPU, so absolute times are "
            "pessimistic; the interleaved ratios are the robust numbers.")


def to_docs(result: dict) -> str:
    """The README's performance section: the machine, the headline medians and ratios, and the command."""
    m = result["machine"]
    single = {r["k"]: r for r in result["single"].get("rows", [])}
    tp = {(r["batch"], r["threads"]): r for r in result["throughput"].get("rows", [])}
    ref = result["reference"]
    cold = result["cold_start"]
    rf = result["roofline"]
    lines = [
        "## Performance",
        "",
        f"Measured with `{result['command']}` on {m['cpu']} ({m['cores']} cores), Python {m['versions']['python']}, "
        f"onnxruntime {m['versions']['onnxruntime']}, numba {m['versions']['numba']}"
        + (f", torch {m['versions']['torch']}" if m["versions"].get("torch") else "") + ", one intra-op thread "
        "unless stated. Medians; ratios from interleaved rounds in the same run. Full tables: "
        "[reports/latency.md](../reports/latency.md)." + load_note(m),
        "",
        markdown_table(["target", "limit", "measured", "status"],
                       [[t["target"], f"{t['comparison']} {t['limit']} {t['unit']}",
                         f"{fmt(t['measured'])} {t['unit']}" if t["measured"] is not None else "not measured",
                         t["status"]] for t in result["targets"]]),
        "",
    ]
    if single:
        lines += ["Single image, `guard.screen`: " + "; ".join(
            f"K={k}: p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms" for k, r in single.items()) + ".", ""]
    if tp:
        rows = sorted({b for b, _ in tp})
        threads = sorted({t for _, t in tp})
        lines += [markdown_table(["batch (K=10)", *[f"images/s, {t} thread{'s' if t > 1 else ''}" for t in threads]],
                                 [[str(b), *[fmt(tp[(b, t)]["images_per_s"], 0) if (b, t) in tp else "-"
                                             for t in threads]] for b in rows]), ""]
    if not ref.get("skipped") and "rows" in ref:
        lines += ["Against the same weights in PyTorch eager (`benchmarks/reference.py`, K=10, one thread for both): "
                  + "; ".join(f"batch {r['batch']}: {r['speedup_vs_torch']:.1f}x faster" for r in ref["rows"]
                              if r["threads"] == 1)
                  + ". Against the numpy kernels backend (`Guard.load(kernels=\"numpy\")`, what `edgeguard detect` "
                  "uses for fewer than `NUMBA_MIN_IMAGES` files), the numba runtime is faster by: "
                  + "; ".join(f"batch {r['batch']}: {r['speedup_vs_numpy_post']:.1f}x" for r in ref["rows"]
                              if r["threads"] == 1) + ".", ""]
        cw = ref.get("classifier_widths", {})
        if cw.get("rows"):
            target = TARGET_LIMITS["speedup_torch_b1"]
            lines += ["With the classifier cut to a share of its channels on both sides (timing only, not trained), "
                      "the batch-1 speed-up becomes: " + "; ".join(
                          f"x{r['keep']:g}: {r['runtime_ms']:.3f} ms, {r['speedup_vs_torch']:.1f}x" for r in cw["rows"])
                      + (". PyTorch's per-operator cost does not shrink with the layers, so in this run a leaner "
                         f"classifier alone does not reach {target:g}x."
                         if max(r["speedup_vs_torch"] for r in cw["rows"]) < target else "."), ""]
    elif ref.get("skipped"):
        lines += [f"PyTorch reference: skipped ({ref['reason']}).", ""]
    if "plain_s" in cold:
        empty = cold["numba_empty_cache_s"]["median"]
        lines += [f"Cold start in a fresh process: `{cold['command']}` (numpy kernels, numba not imported) "
                  f"{cold['plain_s']['median']:.2f} s; `{cold['numba_command']}` "
                  f"{cold['numba_warm_cache_s']['median']:.2f} s with a warm numba cache"
                  + (f", {empty:.2f} s with an empty one (the first run after an install compiles the kernels)"
                     if empty is not None else "") + ".", ""]
    if not rf.get("skipped"):
        lines += [f"One screened image at K=10 costs {rf['flops_per_image']['k10'] / 1e6:.1f} MFLOP (counted from the "
                  f"ONNX graphs); this machine's single-core float32 matmul runs at {rf['matmul_gflops_1t']:.0f} GFLOP/s, "
                  f"so no single-thread implementation of these models can go below {rf['floor_ms_k10']:.2f} ms per "
                  "image at K=10"
                  + (f"; the whole screening reaches {100 * rf['fraction_batch1']:.0f}% of that speed at batch 1"
                     if "fraction_batch1" in rf else "")
                  + (f" and {100 * rf['fraction_batch256']:.0f}% at batch 256" if "fraction_batch256" in rf else "")
                  + ".", ""]
    lines += [f"Reproduce: `{result['command']}` (`--quick` for a 30-second smoke run, `--json` for machine-readable "
              "output).", ""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ main


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.latency", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer iterations and batch sizes (< 30 s)")
    p.add_argument("--json", action="store_true", help="print the results as JSON (and nothing else) on stdout")
    p.add_argument("--out", type=Path, help="write a markdown report here (e.g. reports/latency.md)")
    p.add_argument("--docs", type=Path, help="write the README performance section here (e.g. docs/performance.md)")
    p.add_argument("--run", default="runs/bundle", help="training run with the PyTorch checkpoints (reference)")
    p.add_argument("--bundle", default=None, help="model bundle folder (default: the shipped one)")
    p.add_argument("--sections", default=",".join(SECTIONS),
                   help=f"comma-separated subset of: {', '.join(SECTIONS)}")
    args = p.parse_args(argv)
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = [s for s in args.sections if s not in SECTIONS]
    if unknown:
        p.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    return args


def command_line(argv) -> str:
    return " ".join(["python -m benchmarks.latency", *argv])


def run(args: argparse.Namespace, argv: list[str]) -> dict:
    from edgeguard.bundle import load_bundle, sha256_bytes

    plan = QUICK if args.quick else FULL
    started = time.perf_counter()
    bundle = load_bundle(args.bundle)
    if not bundle.calibration:
        raise SystemExit(f"error: {bundle.path} is not calibrated, and guard.screen needs the calibration; "
                         "run `python -m export.calibrate` first (or pass --bundle)")
    result: dict = {
        "schema": SCHEMA,
        "command": command_line(argv),
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "machine": machine_info(),
        "bundle": {"path": str(bundle.path.relative_to(ROOT) if bundle.path.is_relative_to(ROOT) else bundle.path),
                   "name": bundle.manifest.get("name"), "latent_dim": bundle.latent_dim,
                   "default_k": bundle.default_k,
                   "sha256": {name: sha256_bytes(data) for name, data in bundle.models.items()}},
    }
    steps = {
        "single": lambda: section_single(args, plan),
        "throughput": lambda: section_throughput(args, plan),
        "cold_start": lambda: section_cold_start(args, plan),
        "stages": lambda: section_stages(args, plan),
        "kernels": lambda: section_kernels(args, plan),
        "reference": lambda: section_reference(args, plan),
        "roofline": lambda: section_roofline(args, plan, result),
        "prototypes": lambda: {**section_prototypes(args, plan), "cold_start": section_cold_prototypes(args, plan)},
    }
    for name in SECTIONS:
        if name not in args.sections:
            result[name] = skipped("not selected (--sections)")
            continue
        log(f"{name} ...")
        gc.collect()
        t0 = time.perf_counter()
        result[name] = steps[name]()
        log(f"{name}: {time.perf_counter() - t0:.1f} s")
    result["machine"]["loadavg_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    result["targets"] = evaluate_targets(result)
    result["elapsed_s"] = time.perf_counter() - started
    return result


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    result = run(args, argv)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(to_markdown(result), encoding="utf-8")
        log(f"wrote {args.out}")
    if args.docs:
        args.docs.parent.mkdir(parents=True, exist_ok=True)
        args.docs.write_text(to_docs(result), encoding="utf-8")
        log(f"wrote {args.docs}")
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print_rich(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
