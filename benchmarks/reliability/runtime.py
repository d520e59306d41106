"""Screening under load: threads sharing one Guard, sustained load (resident memory), determinism across
processes, batch compositions and thread counts, and numba's workqueue threading layer.

``image_pool`` is the mixed set of inputs every check here screens.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from edgeguard.contract import SIDE

ROOT = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- shared helpers


def image_pool(n: int = 256, seed: int = 0) -> np.ndarray:
    """n MNIST-style uint8 images (SIDE x SIDE): drawn digits (preprocessed), noise, strokes and near-blank ones.

    Deterministic for a seed; accuracy does not matter, only that every kind of input is there.
    """
    import cv2

    from edgeguard.normalize import preprocess

    rng = np.random.default_rng(seed)
    out = np.zeros((n, SIDE, SIDE), np.uint8)
    for i in range(n):
        kind = i % 4
        if kind in (0, 1):  # a drawn digit, made MNIST-style by the runtime's own preprocessing
            canvas = np.zeros((64, 48), np.uint8)
            cv2.putText(canvas, str(int(rng.integers(10))), (int(rng.integers(2, 10)), int(rng.integers(44, 58))),
                        cv2.FONT_HERSHEY_SIMPLEX, float(rng.uniform(1.3, 1.8)), 255, int(rng.integers(2, 6)))
            out[i] = np.rint(preprocess(canvas) * 255).astype(np.uint8)
        elif kind == 2:  # noise
            out[i] = rng.integers(0, 256, (SIDE, SIDE), dtype=np.uint8)
        else:  # a few random strokes
            canvas = np.zeros((SIDE, SIDE), np.uint8)
            for _ in range(int(rng.integers(1, 4))):
                p, q = rng.integers(4, 24, 2), rng.integers(4, 24, 2)
                cv2.line(canvas, (int(p[0]), int(p[1])), (int(q[0]), int(q[1])), int(rng.integers(80, 256)), 2)
            out[i] = canvas
    return out


def verdict_digest(verdicts) -> str:
    """sha256 of the verdicts' JSON (floats written exactly): equal digests mean identical verdicts and scores."""
    text = json.dumps([v.to_dict() for v in verdicts], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def rss_bytes() -> int | None:
    """Resident set size of this process (VmRSS from /proc, else psutil), or None when unknown."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import psutil
    except ImportError:
        return None
    return psutil.Process().memory_info().rss


def batch_sizes(count: int, seed: int, choices=(1, 2, 3, 5, 8)) -> list[int]:
    rng = np.random.default_rng(seed)
    return [int(s) for s in rng.choice(choices, count)]


# --------------------------------------------------------------------------- concurrency and load


def concurrent_vs_serial(guard, threads: int = 8, screens: int = 25, seed: int = 0) -> dict:
    """``threads`` threads share one Guard, each making ``screens`` screen calls of varied batches;
    every call's verdicts are compared with the same call made serially."""
    pool = image_pool(128, seed)
    rng = np.random.default_rng(seed)
    plans = []
    for t in range(threads):
        calls = []
        for size in batch_sizes(screens, seed + 1 + t):
            calls.append(rng.integers(0, len(pool), size))
        plans.append(calls)
    reference = {}
    for index in {int(i) for calls in plans for call in calls for i in call}:
        reference[index] = guard.screen(pool[index])[0]

    def work(calls):
        bad = 0
        for call in calls:
            got = guard.screen(pool[call])
            bad += sum(v != reference[int(i)] for v, i in zip(got, call))
        return bad

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as executor:
        mismatches = sum(executor.map(work, plans))
    return {"threads": threads, "calls": threads * screens, "images": sum(len(c) for p in plans for c in p),
            "mismatches": int(mismatches), "seconds": round(time.perf_counter() - start, 2)}


def sustained_memory(guard, images: int = 2000, seed: int = 0, sizes=(1, 2, 3, 5, 8, 13, 32, 64)) -> dict:
    """Screens ``images`` images in calls of varied batch sizes; RSS after a warm-up (the first tenth) vs later."""
    pool = image_pool(256, seed)
    rng = np.random.default_rng(seed)
    warmup = max(images // 10, 64)
    done = calls = 0
    samples = []  # (images done, rss)
    baseline = None
    start = time.perf_counter()
    while done < images:
        size = min(int(rng.choice(sizes)), images - done)
        index = rng.integers(0, len(pool), size)
        guard.screen(pool[index])
        done += size
        calls += 1
        if baseline is None and done >= warmup:
            baseline = rss_bytes()
            samples.append((done, baseline))
        elif baseline is not None and calls % 50 == 0:
            samples.append((done, rss_bytes()))
    samples.append((done, rss_bytes()))
    if baseline is None:
        return {"images": done, "calls": calls, "growth_pct": None}
    values = [r for _, r in samples]
    return {"images": done, "calls": calls, "seconds": round(time.perf_counter() - start, 1),
            "rss_after_warmup_mb": round(baseline / 2**20, 1), "rss_end_mb": round(values[-1] / 2**20, 1),
            "rss_max_mb": round(max(values) / 2**20, 1),
            "growth_pct": round(100.0 * (values[-1] - baseline) / baseline, 2),
            "max_growth_pct": round(100.0 * (max(values) - baseline) / baseline, 2)}


# --------------------------------------------------------------------------- determinism


def batch_composition(guard, n: int = 200, seed: int = 0) -> dict:
    """Each image screened alone vs inside batches of other sizes and orders (serial and parallel kernels)."""
    pool = image_pool(n, seed)
    alone = [guard.screen(pool[i])[0] for i in range(n)]
    rng = np.random.default_rng(seed)
    mismatches = compositions = 0
    for size in (7, 63, 64, n):  # 64 = kernels.PARALLEL_MIN_BATCH: both kernel variants
        order = rng.permutation(n)
        for begin in range(0, n, size):
            part = order[begin : begin + size]
            got = guard.screen(pool[part])
            mismatches += sum(v != alone[int(i)] for v, i in zip(got, part))
            compositions += 1
    return {"images": n, "batches": compositions, "mismatches": int(mismatches)}


def thread_counts(n: int = 130, seed: int = 0) -> dict:
    """onnxruntime intra-op threads 1 and 2, numba threads 1 and 2: identical verdicts (n >= 64: parallel kernels)."""
    import numba

    from edgeguard import Guard

    pool = image_pool(n, seed)
    digests = {}
    before = numba.get_num_threads()
    try:
        for ort_threads in (1, 2):
            for numba_threads in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
                numba.set_num_threads(numba_threads)
                guard = Guard.load(providers="cpu", threads=ort_threads)
                digests[(ort_threads, numba_threads)] = verdict_digest(guard.screen(pool))
    finally:
        numba.set_num_threads(before)
    return {"settings": [f"ort={o}, numba={m}" for o, m in digests], "images": n,
            "distinct_results": len(set(digests.values()))}


_CHILD = """
import json, sys
sys.path.insert(0, {root!r})
from benchmarks.reliability.runtime import image_pool, verdict_digest
from edgeguard import Guard
guard = Guard.load(providers="cpu")
print(json.dumps(verdict_digest(guard.screen(image_pool({n}, {seed})))))
"""


def across_processes(n: int = 64, seed: int = 0, processes: int = 1) -> dict:
    """The same images screened in fresh Python processes and in this one: the same verdicts and scores."""
    from edgeguard import Guard

    here = verdict_digest(Guard.load(providers="cpu").screen(image_pool(n, seed)))
    there = []
    for _ in range(processes):
        run = subprocess.run([sys.executable, "-c", _CHILD.format(root=str(ROOT), n=n, seed=seed)],
                             capture_output=True, text=True, timeout=300, cwd=tempfile.gettempdir())
        there.append(json.loads(run.stdout.strip().splitlines()[-1]) if run.returncode == 0 else run.stderr[-300:])
    return {"images": n, "processes": processes, "equal": all(d == here for d in there), "digest": here[:16]}


# --------------------------------------------------------------------------- threading layer


_WORKQUEUE_CHILD = """
import sys
sys.path.insert(0, {root!r})
import numpy as np
from concurrent.futures import ThreadPoolExecutor
from benchmarks.reliability.runtime import image_pool
from edgeguard import Guard
guard = Guard.load(providers="cpu")
x = image_pool(80)
with ThreadPoolExecutor(4) as pool:
    list(pool.map(lambda _: guard.screen(x), range(8)))
import numba
print(numba.threading_layer())
"""


def workqueue_threads(timeout: float = 300) -> dict:
    """4 threads screening batches of 80 (parallel kernels) under numba's workqueue layer, its fallback
    where neither OpenMP nor TBB is available (e.g. many macOS installs)."""
    env = dict(os.environ, NUMBA_THREADING_LAYER="workqueue")
    run = subprocess.run([sys.executable, "-c", _WORKQUEUE_CHILD.format(root=str(ROOT))], capture_output=True,
                         text=True, timeout=timeout, env=env, cwd=tempfile.gettempdir())
    last = (run.stderr.strip().splitlines() or [""])[0]
    return {"returncode": run.returncode, "ok": run.returncode == 0, "message": last[:200]}
