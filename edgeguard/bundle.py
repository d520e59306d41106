"""Find, verify and read a model bundle: a folder of ONNX files and the manifest.json that describes them.

Every model file is checked against the manifest's sha256 before onnxruntime sees it, and the verified
bytes (not the file again) are what the sessions load. Nothing in a bundle is ever executed as code:
the manifest is JSON and the models are ONNX graphs.

What the sha256 entries cannot protect is the manifest itself: whoever can edit it can also recompute any
digest or signature stored inside the bundle. So the manifest is checked for internal consistency instead,
before onnxruntime sees anything: a strict type check of every field the runtime uses (``format_version``,
``models``, ``latent_dim``, ``n_classes``, ``default_k``, ``calibration`` and the optional
``camera_calibration``; unknown extra fields are allowed), each calibration block decoded and cross-checked
(known signals, finite sorted scores, one ``n``, computed with ``k == default_k``), and each ONNX graph's
declared inputs and outputs (read from the protobuf by hand in onnx_graph.py, before onnxruntime) compared
with the names the runtime feeds and with ``latent_dim`` and ``n_classes``. An edit that stays consistent (say, a better
``metrics.clean_accuracy``) can only be caught against a digest kept outside the bundle:
``load_bundle(path, manifest_sha256=...)``, with the digest that ``edgeguard info`` shows for the bundle you trust.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from edgeguard.calibration import Calibration
from edgeguard.contract import CALIBRATIONS, FORMAT_VERSION, MANIFEST, MAX_K, MODEL_NAMES, SIGNATURES
from edgeguard.errors import BundleError
from edgeguard.kinds import KindRule
from edgeguard.onnx_graph import check_graph, onnx_signature

__all__ = ["Bundle", "Manifest", "ModelEntry", "check_manifest", "load_bundle", "load_manifest", "onnx_signature",
           "read_manifest", "sha256_bytes", "shipped_bundle_path"]

MAX_MODEL_BYTES = 64 * 1024 * 1024
MAX_MANIFEST_BYTES = 16 * 1024 * 1024
BUNDLE_ID_DIGITS = 12  # hex digits of the manifest's sha256 in a bundle's id (Manifest.bundle_id, Verdict.bundle_id)
_SHA256 = re.compile(r"[0-9a-f]{64}")


def shipped_bundle_path() -> Path:
    """The bundle that ships inside the package (edgeguard/models)."""
    return Path(str(resources.files("edgeguard") / "models"))


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class ModelEntry:
    """One model of the manifest's ``models``."""

    file: str  # a file name inside the bundle folder
    sha256: str
    input: str  # contract.SIGNATURES: the names the runtime feeds and unpacks
    outputs: tuple[str, ...]


@dataclass(frozen=True, eq=False)
class Manifest:
    """A bundle's manifest.json, checked and typed: built only by ``check_manifest`` (through ``load_manifest``
    and ``load_bundle``), so every field holds what its type says."""

    format_version: int
    models: dict[str, ModelEntry]  # contract.MODEL_NAMES -> entry
    latent_dim: int
    n_classes: int
    default_k: int
    #: ``Guard.load``'s calibration choice ("digits", "camera"; contract.CALIBRATIONS) -> the decoded calibration,
    #: for the entries the manifest holds (a null entry, an uncalibrated bundle, is left out).
    calibrations: dict[str, Calibration]
    metrics: dict[str, Any]  # measured by export/measure.py ({} when absent)
    provenance: dict[str, Any]  # how the models were trained ({} when absent)
    input: dict[str, Any]  # the input the models expect, in words ({} when absent)
    name: str | None  # None when absent (or not a string)
    created: str | None  # ISO 8601 time of the export; None when absent (or not a string)
    raw: dict[str, Any] = field(repr=False)  # the JSON object as read, unknown fields included
    sha256: str = ""  # of manifest.json as read
    kind_rule: KindRule | None = None  # adversarial or out_of_distribution (edgeguard.kinds); None when absent

    @property
    def bundle_id(self) -> str | None:
        """The bundle's short id: the first 12 hex digits of manifest.json's sha256 (which covers every model's
        digest and the calibration); None for a manifest checked without its digest."""
        return self.sha256[:BUNDLE_ID_DIGITS] or None

    @property
    def calibration(self) -> Calibration | None:
        """The digit calibration (``calibration`` in the manifest), or None for an uncalibrated bundle."""
        return self.calibrations.get("digits")

    @property
    def camera_calibration(self) -> Calibration | None:
        """The calibration on filmed digits that ``edgeguard webcam`` uses, when the bundle has one."""
        return self.calibrations.get("camera")


@dataclass(frozen=True)
class Bundle:
    path: Path
    info: Manifest  # the manifest, checked and typed
    models: dict[str, bytes]  # name -> verified ONNX bytes

    @property
    def manifest(self) -> dict[str, Any]:
        """The manifest's JSON object as read (typed access: ``info``)."""
        return self.info.raw

    @property
    def manifest_sha256(self) -> str:
        """Of manifest.json as read: pin it to detect any edit."""
        return self.info.sha256

    @property
    def latent_dim(self) -> int:
        return self.info.latent_dim

    @property
    def default_k(self) -> int:
        return self.info.default_k

    @property
    def calibration(self) -> dict[str, Any] | None:
        """The manifest's ``calibration`` entry as read (decoded: ``info.calibration``)."""
        entry = self.manifest.get("calibration")
        return entry if isinstance(entry, dict) else None

    @property
    def camera_calibration(self) -> dict[str, Any] | None:
        """The manifest's ``camera_calibration`` entry as read (decoded: ``info.camera_calibration``)."""
        entry = self.manifest.get("camera_calibration")
        return entry if isinstance(entry, dict) else None


def read_manifest(path: Path) -> dict[str, Any]:
    """The manifest of the bundle folder ``path`` as a JSON object, checked (typed: ``load_manifest``)."""
    return _read_manifest(path).raw


def load_manifest(path: str | os.PathLike[str] | None = None) -> Manifest:
    """The manifest of the bundle folder ``path`` (None: the shipped bundle), checked and typed; the model files
    are not read (``load_bundle`` verifies them)."""
    return _read_manifest(shipped_bundle_path() if path is None else Path(path))


def _read_manifest(path: Path) -> Manifest:
    file = path / MANIFEST
    try:
        if file.is_symlink():
            raise BundleError(f"{file}: the manifest must be a file inside the bundle, not a symlink")
        size = file.stat().st_size
        if size > MAX_MANIFEST_BYTES:
            raise BundleError(f"{file}: the manifest is larger than {MAX_MANIFEST_BYTES} bytes")
        data = file.read_bytes()
        manifest = json.loads(data.decode("utf-8"), object_pairs_hook=_no_duplicate_keys,
                              parse_constant=_no_constant)
    except FileNotFoundError:
        raise BundleError(f"{path}: not a model bundle (no {MANIFEST})") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, ValueError) as e:
        raise BundleError(f"{file}: unreadable manifest ({e})") from None
    except RecursionError:
        raise BundleError(f"{file}: unreadable manifest (nested too deeply)") from None
    return check_manifest(manifest, file, sha256_bytes(data))


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"duplicate key {next(k for k in keys if keys.count(k) > 1)!r}")
    return dict(pairs)


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def _positive_int(value: object, limit: int) -> bool:
    return type(value) is int and 0 < value <= limit


def check_manifest(manifest: object, file: Path, sha256: str = "") -> Manifest:
    """The manifest read from ``file``, typed; BundleError unless every field the runtime uses has the right type
    and the fields agree."""
    def bad(message: str) -> BundleError:
        return BundleError(f"{file}: {message}")

    if not isinstance(manifest, dict):
        raise bad("the manifest must be a JSON object")
    version = manifest.get("format_version")
    if type(version) is not int or version != FORMAT_VERSION:
        raise bad(f"format_version {version!r} is not supported (expected {FORMAT_VERSION})")
    models = manifest.get("models")
    if not isinstance(models, dict) or set(models) != set(MODEL_NAMES):
        raise bad(f"'models' must describe exactly {', '.join(MODEL_NAMES)}")
    entries: dict[str, ModelEntry] = {}
    for name in MODEL_NAMES:
        spec = models[name]
        if not (isinstance(spec, dict) and isinstance(spec.get("file"), str) and isinstance(spec.get("sha256"), str)):
            raise bad(f"model {name!r} needs a 'file' and a 'sha256'")
        if not _SHA256.fullmatch(spec["sha256"]):
            raise bad(f"model {name!r}: sha256 must be 64 lowercase hex digits")
        if any(entry.file == spec["file"] for entry in entries.values()):
            raise bad(f"model {name!r} names {spec['file']!r}, which another model already uses")
        want_input, want_outputs = SIGNATURES[name]
        if spec.get("input") != want_input or spec.get("outputs") != list(want_outputs):
            raise bad(f"model {name!r} must take {want_input!r} and give {', '.join(map(repr, want_outputs))} "
                      "(the names the runtime uses); "
                      f"the manifest says {spec.get('input')!r} -> {spec.get('outputs')!r}")
        entries[name] = ModelEntry(spec["file"], spec["sha256"], want_input, want_outputs)
    for key, limit in (("latent_dim", 4096), ("default_k", MAX_K), ("n_classes", 1000)):
        if not _positive_int(manifest.get(key), limit):
            raise bad(f"{key!r} must be an integer from 1 to {limit}, got {manifest.get(key)!r}")
    if manifest["n_classes"] < 2:
        raise bad("'n_classes' must be at least 2")
    for key in ("metrics", "provenance", "input"):
        if key in manifest and not isinstance(manifest[key], dict):
            raise bad(f"{key!r} must be a JSON object")
    calibrations = {}
    for choice, key in CALIBRATIONS.items():
        if manifest.get(key) is not None:
            try:
                calibrations[choice] = Calibration.from_manifest(manifest[key], manifest["default_k"], key)
            except BundleError as e:
                raise bad(str(e)) from None
    kind_rule = None
    if manifest.get("kind_rule") is not None:
        try:
            kind_rule = KindRule.from_manifest(manifest["kind_rule"])
        except BundleError as e:
            raise bad(str(e)) from None

    def text(key: str) -> str | None:
        value = manifest.get(key)
        return value if isinstance(value, str) else None

    return Manifest(format_version=version, models=entries, latent_dim=manifest["latent_dim"],
                    n_classes=manifest["n_classes"], default_k=manifest["default_k"], calibrations=calibrations,
                    metrics=manifest.get("metrics", {}), provenance=manifest.get("provenance", {}),
                    input=manifest.get("input", {}), name=text("name"), created=text("created"), raw=manifest,
                    sha256=sha256, kind_rule=kind_rule)


def _model_file(root: Path, name: str, relative: str) -> Path:
    """The model file named in the manifest, refused when it points outside the bundle folder."""
    if not relative or os.path.isabs(relative) or Path(relative).name != relative or relative in (".", ".."):
        raise BundleError(f"{root / MANIFEST}: model {name!r} names {relative!r}, "
                          "which is not a file inside the bundle")
    return root / relative


def load_bundle(path: str | os.PathLike[str] | None = None, *, manifest_sha256: str | None = None) -> Bundle:
    """Reads and verifies a bundle; ``None`` means the shipped one.

    ``manifest_sha256``: refuse the bundle unless its manifest.json has exactly this sha256 (a digest kept
    outside the bundle, e.g. in the application's config; since the manifest pins every model's sha256,
    this pins the whole bundle).
    """
    root = shipped_bundle_path() if path is None else Path(path)
    if not root.is_dir():
        raise BundleError(f"{root}: no such bundle folder")
    manifest = _read_manifest(root)
    if manifest_sha256 is not None and manifest.sha256 != str(manifest_sha256).lower():
        raise BundleError(f"{root / MANIFEST}: sha256 {manifest.sha256[:12]}… is not the pinned "
                          f"{str(manifest_sha256)[:12]}…; the bundle is not the one you trust")
    models = {}
    for name in MODEL_NAMES:
        spec = manifest.models[name]
        file = _model_file(root, name, spec.file)
        try:
            if file.is_symlink() or not file.is_file():
                raise BundleError(f"{file}: model file listed in the manifest is missing")
            if file.stat().st_size > MAX_MODEL_BYTES:
                raise BundleError(f"{file}: model file is larger than {MAX_MODEL_BYTES} bytes")
            data = file.read_bytes()
        except OSError as e:
            raise BundleError(f"{file}: cannot read the model file ({e.strerror or e})") from None
        digest = sha256_bytes(data)
        if digest != spec.sha256:
            raise BundleError(
                f"{file}: sha256 {digest[:12]}… does not match the manifest ({spec.sha256[:12]}…); "
                "the bundle was modified or is corrupt"
            )
        check_graph(name, data, manifest.latent_dim, manifest.n_classes, file)
        models[name] = data
    return Bundle(path=root, info=manifest, models=models)
