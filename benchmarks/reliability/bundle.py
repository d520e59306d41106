"""Tampered bundles (each refused with a BundleError before onnxruntime sees a model) and the AST scan
showing the runtime executes no code from a bundle.
"""

from __future__ import annotations

import ast
import base64
import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.corpus import MARKER, Booby

ROOT = Path(__file__).resolve().parents[2]


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
    files = sorted(package.rglob("*.py"))  # subpackages too
    for file in files:
        tree = ast.parse(file.read_text(encoding="utf-8"), filename=str(file))
        for node in ast.walk(tree):
            where = f"{file.relative_to(package).as_posix()}:{getattr(node, 'lineno', 0)}"
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
