"""Find, verify and read a model bundle: a folder of ONNX files and the manifest.json that describes them.

Every model file is checked against the manifest's sha256 before onnxruntime sees it, and the verified
bytes (not the file again) are what the sessions load. Nothing in a bundle is ever executed as code:
the manifest is JSON and the models are ONNX graphs.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from edgeguard.errors import BundleError

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
MODEL_NAMES = ("encoder", "decoder", "classifier")
MAX_MODEL_BYTES = 64 * 1024 * 1024


def shipped_bundle_path() -> Path:
    """The bundle that ships inside the package (edgeguard/models)."""
    return Path(str(resources.files("edgeguard") / "models"))


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Bundle:
    path: Path
    manifest: dict
    models: dict[str, bytes]  # name -> verified ONNX bytes

    @property
    def latent_dim(self) -> int:
        return int(self.manifest["latent_dim"])

    @property
    def default_k(self) -> int:
        return int(self.manifest["default_k"])

    @property
    def calibration(self) -> dict | None:
        return self.manifest.get("calibration")


def read_manifest(path: Path) -> dict:
    """The manifest of the bundle folder ``path``, checked for the fields the runtime relies on."""
    file = path / MANIFEST
    try:
        manifest = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(f"{path}: not a model bundle (no {MANIFEST})") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BundleError(f"{file}: unreadable manifest ({e})") from None
    if not isinstance(manifest, dict):
        raise BundleError(f"{file}: the manifest must be a JSON object")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise BundleError(
            f"{file}: format_version {manifest.get('format_version')!r} is not supported (expected {FORMAT_VERSION})"
        )
    models = manifest.get("models")
    if not isinstance(models, dict) or set(models) != set(MODEL_NAMES):
        raise BundleError(f"{file}: 'models' must describe exactly {', '.join(MODEL_NAMES)}")
    for name, spec in models.items():
        if not (isinstance(spec, dict) and isinstance(spec.get("file"), str) and isinstance(spec.get("sha256"), str)):
            raise BundleError(f"{file}: model {name!r} needs a 'file' and a 'sha256'")
    for key in ("latent_dim", "default_k"):
        if not (isinstance(manifest.get(key), int) and manifest[key] > 0):
            raise BundleError(f"{file}: {key!r} must be a positive integer")
    return manifest


def _model_file(root: Path, name: str, relative: str) -> Path:
    """The model file named in the manifest, refused when it points outside the bundle folder."""
    if not relative or os.path.isabs(relative) or Path(relative).name != relative or relative in (".", ".."):
        raise BundleError(f"{root / MANIFEST}: model {name!r} names {relative!r}, which is not a file inside the bundle")
    return root / relative


def load_bundle(path: str | os.PathLike[str] | None = None) -> Bundle:
    """Reads and verifies a bundle; ``None`` means the shipped one."""
    root = shipped_bundle_path() if path is None else Path(path)
    if not root.is_dir():
        raise BundleError(f"{root}: no such bundle folder")
    manifest = read_manifest(root)
    models = {}
    for name in MODEL_NAMES:
        spec = manifest["models"][name]
        file = _model_file(root, name, spec["file"])
        if file.is_symlink() or not file.is_file():
            raise BundleError(f"{file}: model file listed in the manifest is missing")
        if file.stat().st_size > MAX_MODEL_BYTES:
            raise BundleError(f"{file}: model file is larger than {MAX_MODEL_BYTES} bytes")
        data = file.read_bytes()
        digest = sha256_bytes(data)
        if digest != spec["sha256"]:
            raise BundleError(
                f"{file}: sha256 {digest[:12]}… does not match the manifest ({spec['sha256'][:12]}…); "
                "the bundle was modified or is corrupt"
            )
        models[name] = data
    return Bundle(path=root, manifest=manifest, models=models)
