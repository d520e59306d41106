"""The reliability report: malformed inputs, fuzzing, bundle integrity, concurrency, memory, determinism.

    python -m benchmarks.reliability            # the full run (about 15 minutes on 2 busy cores)
    python -m benchmarks.reliability --quick    # the same checks, smaller (about 1 minute)
    python -m benchmarks.reliability --sustained 20000   # full, with a shorter sustained-load run

writes reports/reliability.md (``--out`` to change). Every number in it is computed by this run. The
functions here are also what tests/test_hardening.py calls with small sizes.
"""

from __future__ import annotations

import argparse
import ast
import base64
import contextlib
import hashlib
import json
import os
import pathlib
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.corpus.make_corpus import CASES, MARKER, SKIPPED, make_corpus  # noqa: E402

DEFAULT_OUT = ROOT / "reports" / "reliability.md"
FULL = dict(fuzz_s=120, screen_fuzz=3000, threads=8, screens_per_thread=1000, sustained=200_000, processes=2)
QUICK = dict(fuzz_s=8, screen_fuzz=300, threads=8, screens_per_thread=25, sustained=2_000, processes=1)


# --------------------------------------------------------------------------- shared helpers


def image_pool(n: int = 256, seed: int = 0) -> np.ndarray:
    """n MNIST-style uint8 images (28x28): drawn digits (preprocessed), noise, strokes and near-blank ones.

    Deterministic for a seed; accuracy does not matter, only that every kind of input is there.
    """
    import cv2

    from edgeguard.normalize import preprocess

    rng = np.random.default_rng(seed)
    out = np.zeros((n, 28, 28), np.uint8)
    for i in range(n):
        kind = i % 4
        if kind in (0, 1):  # a drawn digit, made MNIST-style by the runtime's own preprocessing
            canvas = np.zeros((64, 48), np.uint8)
            cv2.putText(canvas, str(int(rng.integers(10))), (int(rng.integers(2, 10)), int(rng.integers(44, 58))),
                        cv2.FONT_HERSHEY_SIMPLEX, float(rng.uniform(1.3, 1.8)), 255, int(rng.integers(2, 6)))
            out[i] = np.rint(preprocess(canvas) * 255).astype(np.uint8)
        elif kind == 2:  # noise
            out[i] = rng.integers(0, 256, (28, 28), dtype=np.uint8)
        else:  # a few random strokes
            canvas = np.zeros((28, 28), np.uint8)
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
from benchmarks.reliability import image_pool, verdict_digest
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


# --------------------------------------------------------------------------- malformed inputs


def drop_dac_prefix() -> list[str] | None:
    """A command prefix under which a chmod-000 file is really unreadable, or None.

    As root, chmod does not stop reads; dropping CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from the
    bounding set (setpriv) makes the kernel check the permission bits for root too.
    """
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return None
    prefix = [setpriv, "--bounding-set", "-dac_override,-dac_read_search"]
    with tempfile.TemporaryDirectory() as folder:
        probe = Path(folder) / "probe"
        probe.write_text("x")
        probe.chmod(0)
        try:
            check = subprocess.run(prefix + ["cat", str(probe)], capture_output=True, timeout=30)
        except OSError:
            return None
    return prefix if check.returncode != 0 and b"ermission denied" in check.stderr else None


def corpus_through_cli(dest: Path) -> dict:
    """Every corpus case in one real `edgeguard detect --json` process (the unreadable file truly unreadable)."""
    paths = make_corpus(dest)
    prefix = drop_dac_prefix()
    names = [n for n in paths if not (n == "unreadable" and prefix is None)]
    args = [os.fspath(paths[n]) for n in names]
    run = subprocess.run((prefix or []) + [sys.executable, "-m", "edgeguard", "detect", "--json", *args],
                         capture_output=True, text=True, timeout=600, cwd=ROOT)
    errors = [line for line in run.stderr.splitlines() if line.strip()]
    verdicts = [json.loads(line) for line in run.stdout.splitlines() if line.strip()]
    rows = []
    for name in names:
        case, path = CASES[name], os.fspath(paths[name])
        expect = case.cli_expect or case.expect
        fragment = case.cli_fragment if case.cli_expect else case.fragment
        mine = [line for line in errors if line.startswith(f"error: {path}:")]
        if expect == "refused":
            ok = len(mine) == 1 and fragment.lower() in mine[0].lower()
            got = mine[0] if len(mine) == 1 else f"{len(mine)} error lines"
        else:
            seen = [v for v in verdicts if v["source"] == path or v["source"].startswith(path + os.sep)]
            ok = len(seen) == 1 and not mine
            got = f"{len(seen)} verdict(s): {seen[0]['verdict'] if seen else '-'}"
        rows.append({"case": name, "what": case.what, "expect": expect, "ok": ok, "got": got})
    return {"rows": rows, "exit_code": run.returncode, "traceback": "Traceback" in run.stderr,
            "stray_stderr": [line for line in errors if not line.startswith("error: ")],
            "unreadable": "setpriv without CAP_DAC_OVERRIDE" if prefix else ("not root: chmod 000" if prefix == []
                                                                              else "skipped (no setpriv)"),
            "marker_created": (dest / MARKER).exists()}


@contextlib.contextmanager
def unreadable(path: Path):
    """In-process stand-in for a permission error on ``path`` (root reads chmod-000 files)."""
    real = pathlib.Path.read_bytes

    def read_bytes(self):
        if os.fspath(self) == os.fspath(path):
            raise PermissionError(13, "Permission denied", os.fspath(self))
        return real(self)

    pathlib.Path.read_bytes = read_bytes
    try:
        yield
    finally:
        pathlib.Path.read_bytes = real


def corpus_through_api(guard, dest: Path) -> dict:
    """Every corpus case through Guard.screen_file: a Verdict, or an InputError naming the file."""
    from edgeguard.errors import InputError

    paths = make_corpus(dest)
    rows = []
    for name, path in paths.items():
        case = CASES[name]
        guard_ctx = unreadable(path) if name == "unreadable" else contextlib.nullcontext()
        try:
            with guard_ctx:
                verdict = guard.screen_file(path)
            got, outcome = f"verdict {verdict.verdict}", "screened"
        except InputError as e:
            got, outcome = str(e), "refused"
            if case.expect == "refused" and not (case.fragment.lower() in str(e).lower() and path.name in str(e)
                                                 and "\n" not in str(e)):
                outcome = "refused (wrong message)"
        except Exception as e:  # a bug
            got, outcome = f"{type(e).__name__}: {e}", "crash"
        rows.append({"case": name, "what": case.what, "expect": case.expect, "ok": outcome == case.expect,
                     "got": got})
    return {"rows": rows, "marker_created": (dest / MARKER).exists()}


def screen_fuzz(guard, count: int = 300, seed: int = 0) -> dict:
    """Random arrays (shapes, dtypes, value ranges, layouts) into Guard.screen: verdicts or TypeError/ValueError."""
    rng = np.random.default_rng(seed)
    dtypes = [np.uint8, np.float32, np.float64, np.float16, np.int32, np.uint16, np.bool_, np.int8]
    shapes = [(28, 28), (1, 28, 28), (3, 28, 28), (2, 1, 28, 28), (0, 28, 28), (28,), (27, 28), (28, 28, 1),
              (1, 1, 1, 28, 28), (2, 3, 28, 28), (784,), ()]
    counts = {"verdicts": 0, "TypeError": 0, "ValueError": 0, "crash": 0}
    examples = []
    for _ in range(count):
        dtype = dtypes[int(rng.integers(len(dtypes)))]
        shape = shapes[int(rng.integers(len(shapes)))]
        scale = float(rng.choice([1.0, 255.0, 1e30, -1.0]))
        values = rng.random(shape) * scale
        if rng.random() < 0.1 and values.size:
            values.flat[int(rng.integers(values.size))] = rng.choice([np.nan, np.inf, -np.inf])
        with np.errstate(all="ignore"):
            array = values.astype(dtype)
        if rng.random() < 0.2 and array.ndim >= 2:
            array = np.swapaxes(array, -1, -2)  # non-contiguous
        try:
            verdicts = guard.screen(array)
            ok = len(verdicts) == (array.shape[0] if array.ndim >= 3 else 1)
            counts["verdicts" if ok else "crash"] += 1
        except TypeError:
            counts["TypeError"] += 1
        except ValueError:
            counts["ValueError"] += 1
        except Exception as e:
            counts["crash"] += 1
            examples.append(f"{dtype.__name__}{shape}: {type(e).__name__}: {e}")
    return {"cases": count, **counts, "examples": examples[:5]}


# --------------------------------------------------------------------------- bundle integrity


def _edit_manifest(change):
    def apply(root: Path) -> dict:
        file = root / "manifest.json"
        manifest = json.loads(file.read_text())
        change(manifest)
        file.write_text(json.dumps(manifest))
        return {}
    return apply


def _edit_text(change):
    def apply(root: Path) -> dict:
        file = root / "manifest.json"
        file.write_text(change(file.read_text()))
        return {}
    return apply


def _flip_byte(name: str):
    def apply(root: Path) -> dict:
        path = root / f"{name}.onnx"
        data = bytearray(path.read_bytes())
        data[len(data) // 3] ^= 0x40
        path.write_bytes(bytes(data))
        return {}
    return apply


def _remove(file: str):
    def apply(root: Path) -> dict:
        (root / file).unlink()
        return {}
    return apply


def _symlinked_model(root: Path) -> dict:
    outside = root.parent / "elsewhere.onnx"
    shutil.copy(root / "encoder.onnx", outside)
    (root / "encoder.onnx").unlink()
    os.symlink(outside, root / "encoder.onnx")
    return {}


def _replaced_with_pickle(root: Path) -> dict:
    """A pickle in place of a model, with the manifest's sha256 recomputed by the editor."""
    import pickle

    from tests.corpus.make_corpus import Booby

    data = pickle.dumps(Booby(root.parent / MARKER))
    (root / "encoder.onnx").write_bytes(data)
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["models"]["encoder"]["sha256"] = hashlib.sha256(data).hexdigest()
    (root / "manifest.json").write_text(json.dumps(manifest))
    return {}


def _first_scores(manifest) -> dict:
    calibration = manifest["calibration"]
    return calibration["scores"][calibration["signals"][0]]


def _scores_unsorted(manifest):
    entry = _first_scores(manifest)
    values = np.frombuffer(base64.b64decode(entry["base64"]), "<f4")[::-1].copy()
    entry["base64"] = base64.b64encode(values.tobytes()).decode()


def _metrics_with_pin(root: Path) -> dict:
    pin = hashlib.sha256((root / "manifest.json").read_bytes()).hexdigest()
    _edit_manifest(lambda m: m["metrics"].update(clean_accuracy=0.999))(root)
    return {"manifest_sha256": pin}


@dataclass(frozen=True)
class Tamper:
    what: str
    apply: object  # (bundle folder) -> extra load_bundle keyword arguments
    fragment: str


TAMPERS: dict[str, Tamper] = {
    "flip_encoder": Tamper("one byte changed in encoder.onnx", _flip_byte("encoder"), "does not match the manifest"),
    "flip_decoder": Tamper("one byte changed in decoder.onnx", _flip_byte("decoder"), "does not match the manifest"),
    "flip_classifier": Tamper("one byte changed in classifier.onnx", _flip_byte("classifier"),
                              "does not match the manifest"),
    "missing_encoder": Tamper("encoder.onnx deleted", _remove("encoder.onnx"), "missing"),
    "missing_classifier": Tamper("classifier.onnx deleted", _remove("classifier.onnx"), "missing"),
    "missing_manifest": Tamper("manifest.json deleted", _remove("manifest.json"), "no manifest.json"),
    "symlinked_model": Tamper("encoder.onnx a symlink to a file outside the bundle", _symlinked_model, "missing"),
    "path_traversal": Tamper("manifest names ../../etc/passwd",
                             _edit_manifest(lambda m: m["models"]["encoder"].update(file="../../etc/passwd")),
                             "not a file inside the bundle"),
    "absolute_path": Tamper("manifest names /etc/passwd",
                            _edit_manifest(lambda m: m["models"]["decoder"].update(file="/etc/passwd")),
                            "not a file inside the bundle"),
    "sha256_entry": Tamper("a sha256 entry changed",
                           _edit_manifest(lambda m: m["models"]["decoder"].update(sha256="0" * 64)),
                           "does not match the manifest"),
    "sha256_not_hex": Tamper("a sha256 entry that is not a digest",
                             _edit_manifest(lambda m: m["models"]["decoder"].update(sha256="x")), "64 lowercase hex"),
    "same_file_twice": Tamper("two models naming the same file",
                              _edit_manifest(lambda m: m["models"]["decoder"].update(
                                  file=m["models"]["encoder"]["file"])), "already uses"),
    "pickle_as_model": Tamper("a pickle in place of encoder.onnx, sha256 recomputed", _replaced_with_pickle,
                              "not a well-formed ONNX model"),
    "latent_dim": Tamper("latent_dim 16 -> 8", _edit_manifest(lambda m: m.update(latent_dim=m["latent_dim"] // 2)),
                         "does not match the manifest"),
    "latent_dim_bool": Tamper("latent_dim true", _edit_manifest(lambda m: m.update(latent_dim=True)), "latent_dim"),
    "n_classes": Tamper("n_classes 10 -> 9", _edit_manifest(lambda m: m.update(n_classes=9)),
                        "does not match the manifest"),
    "default_k": Tamper("default_k 10 -> 12 (calibrated with 10)", _edit_manifest(lambda m: m.update(default_k=12)),
                        "computed with k=10"),
    "default_k_huge": Tamper("default_k 10**9", _edit_manifest(lambda m: m.update(default_k=10**9)), "from 1 to"),
    "format_version": Tamper("format_version true", _edit_manifest(lambda m: m.update(format_version=True)),
                             "format_version"),
    "input_name": Tamper("decoder input renamed z -> latent",
                         _edit_manifest(lambda m: m["models"]["decoder"].update(input="latent")),
                         "names the runtime uses"),
    "outputs_swapped": Tamper("encoder outputs listed as logvar, mu",
                              _edit_manifest(lambda m: m["models"]["encoder"].update(outputs=["logvar", "mu"])),
                              "names the runtime uses"),
    "calibration_unhashable": Tamper("a calibration signal that is a list",
                                     _edit_manifest(lambda m: m["calibration"]["signals"].append(["kl"])),
                                     "signal names"),
    "calibration_unknown": Tamper("a calibration signal nobody computes",
                                  _edit_manifest(lambda m: m["calibration"]["signals"].append("magic")),
                                  "known signals"),
    "calibration_base64": Tamper("calibration scores that are not base64",
                                 _edit_manifest(lambda m: _first_scores(m).update(base64="@@@")),
                                 "malformed"),
    "calibration_unsorted": Tamper("calibration scores reversed (unsorted)", _edit_manifest(_scores_unsorted),
                                   "sorted"),
    "calibration_n": Tamper("calibration n changed", _edit_manifest(lambda m: m["calibration"].update(n=5)),
                            "but 'n' is 5"),
    "calibration_combined": Tamper("calibration combined block removed",
                                   _edit_manifest(lambda m: m["calibration"].pop("combined")), "'combined'"),
    "calibration_combination": Tamper("calibration combination renamed to one the runtime lacks",
                                      _edit_manifest(lambda m: m["calibration"].update(combination="magic")),
                                      "unknown combination"),
    "calibration_type": Tamper("calibration a string", _edit_manifest(lambda m: m.update(calibration="yes")),
                               "must be a JSON object"),
    "duplicate_key": Tamper("a duplicated key (\"latent_dim\" twice)",
                            _edit_text(lambda t: t.replace('"latent_dim"', '"latent_dim": 8, "latent_dim"', 1)),
                            "duplicate key"),
    "nan_constant": Tamper("NaN in the JSON", _edit_text(lambda t: t.replace('"n_classes": 10', '"n_classes": NaN')),
                           "NaN is not valid JSON"),
    "deep_nesting": Tamper("JSON nested 100,000 deep", _edit_text(lambda t: "[" * 100_000 + "]" * 100_000),
                           "nested too deeply"),
    "not_json": Tamper("manifest.json holds text", _edit_text(lambda t: "models: yes"), "unreadable manifest"),
    "metrics_pinned": Tamper("metrics.clean_accuracy raised, bundle pinned by manifest_sha256", _metrics_with_pin,
                             "not the pinned"),
}


class _OnnxruntimeTouched(AssertionError):
    pass


@contextlib.contextmanager
def forbid_onnxruntime():
    """Any onnxruntime.InferenceSession created inside the block raises (and is counted)."""
    import onnxruntime

    from edgeguard import sessions

    calls = []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise _OnnxruntimeTouched("onnxruntime saw the model")

    saved = (onnxruntime.InferenceSession, sessions.ort.InferenceSession)
    onnxruntime.InferenceSession = sessions.ort.InferenceSession = refuse
    try:
        yield calls
    finally:
        onnxruntime.InferenceSession, sessions.ort.InferenceSession = saved


def tampered_copy(name: str, folder: Path) -> tuple[Path, dict]:
    """A copy of the shipped bundle in ``folder`` with tamper ``name`` applied -> (bundle, load kwargs)."""
    from edgeguard.bundle import shipped_bundle_path

    root = folder / "bundle"
    shutil.copytree(shipped_bundle_path(), root)
    return root, TAMPERS[name].apply(root) or {}


def bundle_integrity() -> dict:
    """Every tamper: refused with BundleError naming the problem, before onnxruntime sees anything."""
    from edgeguard.bundle import load_bundle
    from edgeguard.errors import BundleError
    from edgeguard.guard import Guard

    rows = []
    for name, tamper in TAMPERS.items():
        with tempfile.TemporaryDirectory() as folder:
            root, kwargs = tampered_copy(name, Path(folder))
            with forbid_onnxruntime() as calls:
                try:
                    if kwargs:
                        load_bundle(root, **kwargs)
                    else:
                        Guard.load(root, providers="cpu")
                    got, ok = "loaded", False
                except BundleError as e:
                    got = str(e)
                    ok = tamper.fragment.lower() in got.lower() and "\n" not in got
                except _OnnxruntimeTouched:
                    got, ok = "reached onnxruntime", False
                except Exception as e:
                    got, ok = f"{type(e).__name__}: {e}", False
            marker = (Path(folder) / MARKER).exists()
            rows.append({"case": name, "what": tamper.what, "ok": ok and not calls and not marker,
                         "onnxruntime_calls": len(calls), "got": got.replace(str(root), "<bundle>")[:240]})
    return {"rows": rows}


FORBIDDEN_CALLS = {"eval", "exec", "compile", "__import__", "execfile"}
FORBIDDEN_MODULES = {"pickle", "cPickle", "dill", "joblib", "marshal", "shelve", "torch", "yaml", "cloudpickle"}


def code_execution_scan(package: Path = ROOT / "edgeguard") -> dict:
    """AST scan of the runtime: no eval/exec, no pickle-like modules, no np.load(allow_pickle=True),
    no importlib of names from data. Returns the offending places (none expected)."""
    hits = []
    files = sorted(package.glob("*.py"))
    for file in files:
        tree = ast.parse(file.read_text(encoding="utf-8"), filename=str(file))
        for node in ast.walk(tree):
            where = f"{file.name}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                hits += [f"{where} imports {n}" for n in names if n.split(".")[0] in FORBIDDEN_MODULES | {"importlib"}
                         and not n.startswith("importlib.resources") and n != "importlib"]
                if isinstance(node, ast.ImportFrom) and node.module == "importlib":
                    hits += [f"{where} imports importlib.{a.name}" for a in node.names if a.name != "resources"]
            elif isinstance(node, ast.Call):
                func = node.func
                name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
                if isinstance(func, ast.Name) and name in FORBIDDEN_CALLS:  # the builtins (not re.compile)
                    hits.append(f"{where} calls {name}()")
                if name == "load" and any(k.arg == "allow_pickle" and not (isinstance(k.value, ast.Constant)
                                                                         and k.value.value is False)
                                          for k in node.keywords):
                    hits.append(f"{where} calls load(allow_pickle=...) not False")
                if name == "import_module":
                    hits.append(f"{where} calls import_module()")
    return {"files": len(files), "hits": hits}


# --------------------------------------------------------------------------- webcam


def write_video(path: Path, frames: int = 30, size=(320, 240)) -> Path:
    """A small MJPG .avi of drawn digits on paper."""
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, size)
    for i in range(frames):
        frame = np.full((size[1], size[0], 3), 225, np.uint8)
        cv2.putText(frame, str(i % 10), (size[0] // 3 + i, size[1] * 2 // 3), cv2.FONT_HERSHEY_SIMPLEX, 4,
                    (20, 20, 20), 8)
        writer.write(frame)
    writer.release()
    return path


def noise_frame(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (480, 640, 3), dtype=np.uint8)


def tiny_contours_frame(count: int = 500) -> np.ndarray:
    import cv2

    frame = np.full((480, 640, 3), 230, np.uint8)
    for i in range(count):
        row, col = divmod(i, 25)
        cv2.circle(frame, (12 + col * 25, 12 + row * 23), 3, (20, 20, 20), -1)
    return frame


def many_digits_frame(count: int = 60) -> np.ndarray:
    """``count`` digit-sized marks: more candidates than any frame should screen."""
    import cv2

    frame = np.full((480, 640, 3), 230, np.uint8)
    for i in range(count):
        row, col = divmod(i, 10)
        cv2.putText(frame, str(i % 10), (8 + col * 63, 70 + row * 78), cv2.FONT_HERSHEY_SIMPLEX, 2, (20, 20, 20), 5)
    return frame


@contextlib.contextmanager
def captured_fd2():
    """Everything written to file descriptor 2 inside the block (C libraries included) -> the yielded list."""
    lines: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield lines
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            lines += [line for line in capture.read().decode("utf-8", "replace").splitlines() if line.strip()]


def webcam_checks(guard, folder: Path) -> dict:
    try:
        from edgeguard import webcam
    except ImportError as e:
        return {"available": False, "why": str(e)}
    from edgeguard.errors import InputError

    rows = []
    video = write_video(folder / "video.avi")
    data = video.read_bytes()
    (folder / "half.avi").write_bytes(data[: len(data) // 2])
    (folder / "head.avi").write_bytes(data[:300])
    for name in ("half.avi", "head.avi"):
        start = time.perf_counter()
        with captured_fd2() as stray:
            try:
                summary = webcam.run(guard, folder / name, display=False)
                got = summary.message
                ok = summary.stopped in ("truncated", "end") and "\n" not in got
            except InputError as e:
                got, ok = str(e), "\n" not in str(e)
            except Exception as e:
                got, ok = f"{type(e).__name__}: {e}", False
        if stray:
            got += f" — and {len(stray)} stray stderr line(s): {' / '.join(line[:60] for line in stray)}"
        rows.append({"case": f"truncated video ({name})", "ok": ok and not stray,
                     "got": got.replace(str(folder), "<tmp>"), "seconds": round(time.perf_counter() - start, 3)})
    for name, frame in (("noise frame 640x480", noise_frame()), ("500 tiny contours", tiny_contours_frame()),
                        ("60 digit-sized marks", many_digits_frame())):
        batches = []
        real = guard.screen

        def counting(images, **kwargs):
            batches.append(len(images))
            return real(images, **kwargs)

        guard.screen = counting
        start = time.perf_counter()
        try:
            results = webcam.process_frame(guard, frame, max_digits=8)
            got, ok = f"{len(results)} digits, screen batches {batches}", len(batches) <= 1 and sum(batches) <= 8
        except Exception as e:
            got, ok = f"{type(e).__name__}: {e}", False
        finally:
            del guard.screen
        rows.append({"case": name, "ok": ok, "got": got, "seconds": round(time.perf_counter() - start, 3)})
    return {"available": True, "rows": rows}


# --------------------------------------------------------------------------- threading layer


_WORKQUEUE_CHILD = """
import sys
sys.path.insert(0, {root!r})
import numpy as np
from concurrent.futures import ThreadPoolExecutor
from benchmarks.reliability import image_pool
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


# --------------------------------------------------------------------------- the report


def _status(ok: bool) -> str:
    return "pass" if ok else "**FAIL**"


def run_all(quick: bool, log=print, **overrides) -> tuple[list[dict], dict]:
    from edgeguard import Guard

    sizes = {**(QUICK if quick else FULL), **overrides}
    guard = Guard.load(providers="cpu")
    guard.warmup()
    rows, details = [], {}

    def row(check, tried, cases, result, ok):
        rows.append({"check": check, "tried": tried, "cases": cases, "result": result, "status": _status(ok)})
        log(f"{_status(ok):9} {check}: {result}")

    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        cli = corpus_through_cli(folder / "cli")
        details["cli"] = cli
        good = sum(r["ok"] for r in cli["rows"])
        row("Malformed inputs: `edgeguard detect`", f"every corpus case in one `detect --json` run "
            f"(unreadable file: {cli['unreadable']})", len(cli["rows"]),
            f"{good}/{len(cli['rows'])} as expected (one `error:` line naming the file, or a verdict); "
            f"exit code {cli['exit_code']}; traceback: {'yes' if cli['traceback'] else 'no'}; "
            f"stray stderr lines: {len(cli['stray_stderr'])}",
            good == len(cli["rows"]) and cli["exit_code"] == 2 and not cli["traceback"] and not cli["stray_stderr"])
        api = corpus_through_api(guard, folder / "api")
        details["api"] = api
        good = sum(r["ok"] for r in api["rows"])
        row("Malformed inputs: `Guard.screen_file`", "every corpus case (unreadable: Path.read_bytes patched "
            "to raise PermissionError)", len(api["rows"]),
            f"{good}/{len(api['rows'])} as expected (InputError naming the file, or a Verdict)",
            good == len(api["rows"]))
        marker = cli["marker_created"] or api["marker_created"]
        row("Pickled `.npy` refused without unpickling", "object.npy whose `__reduce__` would create a marker file",
            2, f"marker file created: {'yes' if marker else 'no'}", not marker)

        log("fuzzing image decoding ...")
        from benchmarks.fuzz_decode import fuzz

        fz = fuzz(sizes["fuzz_s"], engine="mutate", seed=0, out=None, guard=guard)
        details["fuzz"] = fz
        row("Fuzzing image decoding (mutate engine)", f"`python -m benchmarks.fuzz_decode --engine mutate --seconds "
            f"{sizes['fuzz_s']}`: mutated PNG/JPEG/BMP/TIFF/PNM/.npy files, loaded and screened", fz["inputs"],
            f"{fz['accepted']} screened, {fz['refused']} refused (InputError); findings {fz['findings']}; "
            f"slowest input {fz['slowest_input_s']} s", fz["total_findings"] == 0)
        try:
            import atheris  # noqa: F401
            have_atheris = True
        except ImportError:
            have_atheris = False
        if have_atheris:
            run = subprocess.run([sys.executable, "-m", "benchmarks.fuzz_decode", "--engine", "atheris", "--seconds",
                                  str(sizes["fuzz_s"]), "--json", "--out", str(folder / "atheris")],
                                 capture_output=True, text=True, timeout=sizes["fuzz_s"] + 300, cwd=ROOT)
            lines = [line for line in run.stdout.splitlines() if line.startswith("{")]
            at = json.loads(lines[-1]) if lines else {"inputs": 0, "total_findings": -1, "findings": run.stderr[-200:]}
            details["atheris"] = at
            row("Fuzzing image decoding (atheris)", f"`python -m benchmarks.fuzz_decode --engine atheris --seconds "
                f"{sizes['fuzz_s']}` (coverage-guided on edgeguard.normalize)", at["inputs"],
                f"{at.get('accepted', 0)} screened, {at.get('refused', 0)} refused; findings {at['findings']}",
                run.returncode == 0 and at["total_findings"] == 0)
        sf = screen_fuzz(guard, sizes["screen_fuzz"])
        details["screen_fuzz"] = sf
        row("Fuzzing `Guard.screen` arrays", "random shapes, dtypes, value ranges, NaN/inf, non-contiguous",
            sf["cases"], f"{sf['verdicts']} verdicts, {sf['TypeError']} TypeError, {sf['ValueError']} ValueError, "
            f"{sf['crash']} other", sf["crash"] == 0)

        log("bundle integrity ...")
        bi = bundle_integrity()
        details["bundle"] = bi
        good = sum(r["ok"] for r in bi["rows"])
        row("Bundle integrity", "changed bytes, missing files, edited/malformed manifests, paths outside the bundle, "
            "a pickle posing as a model (see the table below)", len(bi["rows"]),
            f"{good}/{len(bi['rows'])} refused with a BundleError naming the problem; onnxruntime sessions created: "
            f"{sum(r['onnxruntime_calls'] for r in bi['rows'])}", good == len(bi["rows"]))
        scan = code_execution_scan()
        details["scan"] = scan
        row("No code from the bundle is executed", f"AST scan of {scan['files']} runtime modules for eval/exec/"
            "compile/__import__/importlib, pickle-like modules, np.load(allow_pickle=True)", scan["files"],
            f"{len(scan['hits'])} findings" + (f": {scan['hits']}" if scan["hits"] else ""), not scan["hits"])

        log("concurrency ...")
        cc = concurrent_vs_serial(guard, sizes["threads"], sizes["screens_per_thread"])
        details["concurrency"] = cc
        row("Concurrency", f"{cc['threads']} threads sharing one Guard, {sizes['screens_per_thread']} screen calls "
            f"each (batches of 1-8)", cc["calls"], f"{cc['mismatches']} of {cc['images']} verdicts differ from "
            f"serial screening ({cc['seconds']} s)", cc["mismatches"] == 0)
        wq = workqueue_threads()
        details["workqueue"] = wq
        row("Concurrency under numba's workqueue layer", "4 threads screening batches of 80 with "
            "NUMBA_THREADING_LAYER=workqueue (numba's fallback without OpenMP/TBB)", 8,
            "completed" if wq["ok"] else f"process aborted (exit {wq['returncode']}): {wq['message']}", wq["ok"])

        log(f"sustained load ({sizes['sustained']:,} images) ...")
        sm = sustained_memory(guard, sizes["sustained"])
        details["memory"] = sm
        row("Sustained load, resident memory", f"{sm['images']:,} images in {sm['calls']:,} screen calls of batch "
            "sizes 1-64; RSS after the first tenth vs the end", sm["images"],
            f"RSS {sm['rss_after_warmup_mb']} MB -> {sm['rss_end_mb']} MB (max {sm['rss_max_mb']} MB): growth "
            f"{sm['growth_pct']}% (max {sm['max_growth_pct']}%) in {sm['seconds']} s", sm["max_growth_pct"] < 5)

        log("determinism ...")
        ap = across_processes(processes=sizes["processes"])
        details["processes"] = ap
        row("Determinism across processes", f"{ap['images']} images screened here and in {ap['processes']} fresh "
            "process(es)", ap["images"], f"identical verdicts and scores: {'yes' if ap['equal'] else 'no'}",
            ap["equal"])
        bc = batch_composition(guard)
        details["batches"] = bc
        row("Determinism across batch compositions", "each image alone vs in batches of 7, 63, 64 and 200, shuffled "
            "(serial and parallel kernels)", bc["batches"], f"{bc['mismatches']} of {bc['images'] * 4} differ",
            bc["mismatches"] == 0)
        tc = thread_counts()
        details["threads"] = tc
        row("Determinism across thread counts", f"{', '.join(tc['settings'])} on {tc['images']} images",
            len(tc["settings"]), f"{tc['distinct_results']} distinct result(s)", tc["distinct_results"] == 1)

        log("webcam ...")
        wc = webcam_checks(guard, folder)
        details["webcam"] = wc
        if wc["available"]:
            good = sum(r["ok"] for r in wc["rows"])
            row("Webcam robustness", "truncated videos through `webcam.run`; noise, 500 tiny contours and 60 "
                "digit-sized marks through `process_frame`", len(wc["rows"]),
                f"{good}/{len(wc['rows'])} ended cleanly with a one-line message and nothing else on stderr, or "
                f"screened at most max_digits regions in one batch; slowest {max(r['seconds'] for r in wc['rows'])} s",
                good == len(wc["rows"]))
    details["skipped"] = dict(SKIPPED)
    return rows, details


def render(rows: list[dict], details: dict, command: str, seconds: float) -> str:
    import cv2
    import numba
    import onnxruntime

    from edgeguard import __version__

    lines = [
        "# Reliability report",
        "",
        f"Generated by `{command}` in {seconds:.0f} s on {platform.machine()} with {os.cpu_count()} CPU cores, Python "
        f"{platform.python_version()}, edgeguard {__version__}, onnxruntime {onnxruntime.__version__}, numba "
        f"{numba.__version__} ({_layer()}), OpenCV {cv2.__version__}. Every number below is computed by that run.",
        "",
        "| check | what was tried | cases | result | status |",
        "| --- | --- | ---: | --- | --- |",
    ]
    for r in rows:
        lines.append(f"| {r['check']} | {r['tried']} | {r['cases']:,} | {r['result']} | {r['status']} |")
    lines += ["", "## Malformed inputs, case by case", "",
              "Policy: a file that decodes to something that can hold a digit is screened (16-bit scaled to 8 bits, "
              "alpha composited onto the background that contrasts with the ink, palettes expanded, CMYK converted "
              "by the decoder); one with no digit in it (1x1, all black, all white) is refused as blank; GIF "
              "(animated or not) is refused with a hint to convert it; a file the decoder reports as damaged is "
              "refused even when it produced pixels. A folder is walked without following symlinks, so a "
              "symlink loop adds nothing.", "",
              "| case | what | expected (API / CLI) | API (`Guard.screen_file`) | CLI line or verdict |",
              "| --- | --- | --- | --- | --- |"]
    cli = {r["case"]: r for r in details["cli"]["rows"]}
    for r in details["api"]["rows"]:
        c = cli.get(r["case"], {"got": "not run", "expect": "-"})
        expect = r["expect"] if c["expect"] in (r["expect"], "-") else f"{r['expect']} / {c['expect']}"
        lines.append(f"| {r['case']} | {r['what']} | {expect} | {_cell(_short(r['got']))} | "
                     f"{_cell(_short(c['got']))} |")
    if details.get("skipped"):
        lines += ["", f"Not built here: {details['skipped']}."]
    lines += ["", "## Bundle tampering, case by case", "",
              "Each case is a copy of the shipped bundle with one change, loaded with onnxruntime's "
              "`InferenceSession` replaced by a function that fails: a case passes only when the refusal "
              "comes first. A consistent edit of an informational field (for example a better "
              "`metrics.clean_accuracy`) is only detectable against a digest kept outside the bundle, "
              "`load_bundle(path, manifest_sha256=...)`; a digest or signature stored inside the bundle "
              "would be recomputed by whoever edits it, so it is not offered.", "",
              "| case | what | refused with | status |", "| --- | --- | --- | --- |"]
    for r in details["bundle"]["rows"]:
        lines.append(f"| {r['case']} | {r['what']} | {_cell(r['got'])} | {_status(r['ok'])} |")
    fz = details["fuzz"]
    lines += ["", "## Fuzzing", "",
              f"Mutate engine, {fz['inputs']:,} inputs in {fz['seconds']} s; most common refusals: "
              + "; ".join(f"{k} ({v})" for k, v in fz["top_refusals"].items()) + "."]
    if details.get("atheris"):
        at = details["atheris"]
        lines.append(f"atheris: {at.get('inputs', 0):,} inputs in {at.get('seconds', '?')} s, findings "
                     f"{at.get('findings')}.")
    lines += ["", "Run longer with `python -m benchmarks.fuzz_decode --seconds 600 --out fuzz-findings/`.", ""]
    if details.get("webcam", {}).get("available"):
        lines += ["## Webcam", "", "| case | result | seconds | status |", "| --- | --- | ---: | --- |"]
        for r in details["webcam"]["rows"]:
            lines.append(f"| {r['case']} | {_cell(r['got'])} | {r['seconds']} | {_status(r['ok'])} |")
        lines.append("")
    return "\n".join(lines)


def _layer() -> str:
    import numba

    try:
        return f"threading layer {numba.threading_layer()}"
    except ValueError:
        return "threading layer not chosen"


def _short(text: str) -> str:
    for marker in ("/cli/", "/api/"):
        if marker in text:
            text = text.split(marker, 1)[1]
    return text


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.reliability", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (about a minute)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"report file (default {DEFAULT_OUT})")
    parser.add_argument("--sustained", type=int, default=None,
                        help="images in the sustained-load run (default 200,000; --quick 2,000)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    overrides = {"sustained": args.sustained} if args.sustained else {}
    rows, details = run_all(args.quick, log=lambda text: print(text, file=sys.stderr, flush=True), **overrides)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    command = "python -m benchmarks.reliability" + (" --quick" if args.quick else "") + (
        f" --sustained {args.sustained}" if args.sustained else "")
    args.out.write_text(render(rows, details, command, time.perf_counter() - start) + "\n", encoding="utf-8")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0 if all(r["status"] == "pass" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
