"""The sections that time the runtime: single image, throughput, cold start, stages, kernels, PyTorch reference.

Each ``section_*(args, plan)`` returns a JSON-ready dict (``skipped`` with the reason when it cannot run).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np

from benchmarks.latency.common import (
    K_BATCH,
    K_SINGLE,
    ROOT,
    STAGES,
    Plan,
    all_cores,
    calls_for,
    interleaved,
    load_guard,
    log,
    numba_threads,
    paired_ratio,
    percentiles_ms,
    skipped,
    spread,
    synthetic_digits,
)
from edgeguard.contract import N_CLASSES, N_PIXELS, SIDE

# ------------------------------------------------------------------------------------------------ single


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
                screen = partial(guard.screen, images[:b])
                screen()
                n = max(plan.batch_min_calls, calls_for(screen, plan.batch_min_s))
                times = []
                for _ in range(n):
                    t0 = time.perf_counter()
                    screen()
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
        runs: dict[str, list[float]] = {"plain": [], "numba": []}
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


# ------------------------------------------------------------------------------------------------ stages


def staged_screen(guard, images, clock: dict[str, float]):
    """Guard.analyze + Guard.screen, piece by piece as they do it (with the guard's kernel backend), adding each
    stage's seconds to ``clock``."""
    from edgeguard.contrast import standardize
    from edgeguard.guard import Screening, as_batch, kernel_backend, make_verdicts

    kernels, s = kernel_backend(guard.kernels), guard.sessions
    t0 = time.perf_counter()
    x, blank = standardize(as_batch(images))
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
    label, confidence, labels, majority, n_distinct, agreement, scores = kernels.score(
        x, logits, recon.reshape(b * k, N_PIXELS), mu, logvar, k)
    screening = Screening(label=label, confidence=confidence, labels=labels, purified_label=majority,
                          n_distinct=n_distinct, agreement=agreement, signals=dict(zip(kernels.SCORE_NAMES, scores.T)),
                          blank=blank)
    t6 = time.perf_counter()
    verdicts = make_verdicts(screening, *guard.calibration.p_values(screening.signals, kernels), guard.alpha,
                             kind_rule=guard.bundle.info.kind_rule, bundle_id=guard.bundle_id)
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
            per_stage: dict[str, list[float]] = {name: [] for name in STAGES}
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

KERNELS = ("image_seeds", "sample_latents", "score", "p_values")


def kernel_arguments(b: int, k: int, calibration, d: int = 16, seed: int = 0) -> dict[str, tuple]:
    """name -> the arguments Guard passes that kernel, for a batch of ``b`` random images (``calibration``: the
    bundle's, whose table the p-values are looked up in)."""
    from edgeguard import kernels_numpy

    rng = np.random.default_rng(seed)
    x = rng.random((b, N_PIXELS), dtype=np.float32)
    mu = rng.normal(size=(b, d)).astype(np.float32)
    logvar = rng.normal(-1.0, 1.0, size=(b, d)).astype(np.float32)
    seeds = kernels_numpy.image_seeds(x, 0)
    recon = rng.random((b * k, N_PIXELS), dtype=np.float32)
    logits = (3 * rng.normal(size=(b * (k + 1), N_CLASSES))).astype(np.float32)  # the inputs', then the recons'
    *_, scores = kernels_numpy.score(x, logits, recon, mu, logvar, k)
    signals = [kernels_numpy.SCORE_NAMES.index(s) for s in calibration.signals]
    return {"image_seeds": (x, 0), "sample_latents": (mu, logvar, seeds, k),
            "score": (x, logits, recon, mu, logvar, k),
            "p_values": (calibration.table, np.ascontiguousarray(scores[:, signals], np.float32),
                         np.ascontiguousarray(calibration.combined, np.float32), calibration.combination == "min_p")}


def section_kernels(args, plan: Plan) -> dict:
    from edgeguard import kernels, kernels_numpy
    from edgeguard.bundle import load_bundle
    from edgeguard.calibration import Calibration

    calibration = Calibration.from_manifest(load_bundle(args.bundle).calibration)
    kernels.warmup()
    rows = []
    with numba_threads(1):
        for b in plan.kernel_batches:
            for name, a in kernel_arguments(b, K_BATCH, calibration).items():
                fast, vec = getattr(kernels, name), getattr(kernels_numpy, name)
                t = interleaved({"numba": partial(fast, *a), "vectorised": partial(vec, *a)},
                                plan.kernel_rounds, plan.round_s / 10)
                rows.append({"kernel": name, "batch": b, "k": K_BATCH,
                             "numba_us": statistics.median(t["numba"]) * 1e6,
                             "vectorised_us": statistics.median(t["vectorised"]) * 1e6,
                             "speedup_vs_vectorised": paired_ratio(t["vectorised"], t["numba"])})
    return {"note": "numba threads = 1; numba = the public edgeguard.kernels functions (validation included); "
                    "vectorised = edgeguard.kernels_numpy (the numpy backend, no validation); score = softmax, vote "
                    "and every signal in one call (what Guard.analyze calls); p_values = the conformal p-values "
                    "against the bundle's calibration (what Guard.screen calls)",
            "rows": rows, "numpy_pipeline_parity": numpy_parity(args)}


def numpy_parity(args, n: int = 64) -> dict:
    """Does a numpy-backend Guard give what the numba one gives? (on n synthetic digits)"""
    images = synthetic_digits(n, seed=7)
    numba_guard = load_guard(args.bundle, K_BATCH, threads=1)
    numpy_guard = load_guard(args.bundle, K_BATCH, threads=1, kernels="numpy")
    return {"images": n, **verdict_agreement(numpy_guard.screen(images), numba_guard.screen(images))}


def verdict_agreement(ours, theirs) -> dict:
    return {"same_verdicts": [v.verdict for v in ours] == [v.verdict for v in theirs],
            "same_labels": all(a.labels == b.labels and a.label == b.label for a, b in zip(ours, theirs)),
            "max_abs_score_difference": float(max(abs(a.scores[s] - b.scores[s])
                                                  for a, b in zip(ours, theirs) for s in a.scores))}


# --------------------------------------------------------------------------------------------- reference


def section_reference(args, plan: Plan) -> dict:
    try:
        import torch
    except ImportError:
        return skipped("torch is not installed (runtime-only install): reference not measured")
    try:
        import onnx  # noqa: F401  (the reference's weights are read from the bundle's graphs)
    except ImportError:
        return skipped("onnx is not installed (it reads the weights from the bundle): reference not measured")
    from benchmarks.reference import WEIGHTS, ParityError, TorchReference, WeightMappingError
    from edgeguard.bundle import load_bundle
    from edgeguard.calibration import Calibration

    entry = load_bundle(args.bundle).calibration
    try:  # the training modules with the bundle's weights, checked against onnxruntime
        reference = TorchReference.from_bundle(args.bundle, k=K_BATCH,
                                               calibration=Calibration.from_manifest(entry) if entry else None)
    except (WeightMappingError, ParityError) as e:  # a bundle of another architecture: say so and go on
        return skipped(f"refused: {type(e).__name__}: {e}")

    images = synthetic_digits(max(plan.ref_batches + plan.ref_all_core_batches), seed=5)
    torch_threads_before = torch.get_num_threads()
    rows, parity = [], None
    try:
        for threads, batches in ((1, plan.ref_batches), (all_cores(), plan.ref_all_core_batches)):
            if not batches:
                continue
            torch.set_num_threads(threads)
            guard = load_guard(args.bundle, K_BATCH, threads=threads)
            numpy_guard = load_guard(args.bundle, K_BATCH, threads=threads, kernels="numpy")
            if parity is None:
                parity = reference_parity(guard, reference, images[:64])
            with numba_threads(threads):
                for b in batches:
                    batch = images[:b]
                    variants = {"runtime": partial(guard.screen, batch),
                                "torch": partial(reference.screen, reference.to_tensor(batch)),
                                "numpy_post": partial(numpy_guard.screen, batch)}
                    rounds = plan.ref_rounds if b < 256 else max(3, plan.ref_rounds // 3)
                    t = interleaved(variants, rounds, plan.round_s)
                    row = {"batch": b, "k": K_BATCH, "threads": threads, "rounds": rounds,
                           "runtime_ms": statistics.median(t["runtime"]) * 1e3,
                           "torch_ms": statistics.median(t["torch"]) * 1e3,
                           "numpy_post_ms": statistics.median(t["numpy_post"]) * 1e3,
                           "speedup_vs_torch": paired_ratio(t["torch"], t["runtime"]),
                           "speedup_vs_numpy_post": paired_ratio(t["numpy_post"], t["runtime"])}
                    rows.append(row)
                    log(f"  reference B={b} threads={threads}: runtime {row['runtime_ms']:.3f} ms, torch "
                        f"{row['torch_ms']:.3f} ms ({row['speedup_vs_torch']:.2f}x), numpy backend "
                        f"{row['numpy_post_ms']:.3f} ms ({row['speedup_vs_numpy_post']:.2f}x)")
    finally:
        torch.set_num_threads(torch_threads_before)
    return {"skipped": False, "reason": None, "weights": WEIGHTS,
            "torch_threads": "matched to onnxruntime's", "parity": parity, "rows": rows,
            "variants": {"runtime": "guard.screen (Verdict objects)",
                         "torch": "benchmarks/reference.py TorchReference.screen (tensors, p-values)",
                         "numpy_post": "Guard.load(kernels='numpy'): onnxruntime with NumPy post-processing "
                                       "(edgeguard.kernels_numpy), what `edgeguard detect` uses below "
                                       "NUMBA_MIN_IMAGES files"}}


def reference_parity(guard, reference, images: np.ndarray) -> dict:
    """The reference against the runtime: per model, the max abs difference from onnxruntime found when it was
    built (``onnx_max_abs_difference``, on ``onnx_parity_images`` images), and on ``images``, a whole screening's
    mu and input labels against the guard's."""
    from edgeguard.contract import PARITY_TOLERANCE
    from edgeguard.guard import as_batch

    ref = reference.screen(reference.to_tensor(images))
    mu, _ = guard.sessions["encoder"].run(None, {"image": as_batch(images).reshape(-1, 1, SIDE, SIDE)})
    s = guard.analyze(images)
    max_mu = float(np.abs(ref["mu"].numpy() - mu).max())
    onnx = dict(reference.parity or {})
    return {"max_abs_mu_difference": max_mu, "input_label_agreement": float((ref["label"].numpy() == s.label).mean()),
            "same_weights": bool(onnx) and max(onnx.values()) <= PARITY_TOLERANCE and max_mu <= PARITY_TOLERANCE,
            "onnx_max_abs_difference": onnx, "onnx_parity_images": reference.parity_images,
            "tolerance": PARITY_TOLERANCE}
