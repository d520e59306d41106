"""Writes and updates a bundle's manifest.json."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from edgeguard.bundle import sha256_bytes
from edgeguard.contract import FORMAT_VERSION, MANIFEST, N_CLASSES, SIDE, SIGNATURES
from export.onnx_export import FILES, OPSET

INPUT_SPEC = {
    "shape": [SIDE, SIDE],
    "onnx_shape": ["batch", 1, SIDE, SIDE],
    "dtype": "float32",
    "range": [0.0, 1.0],
    "normalisation": "pixel / 255, white ink on a black background, digit centred by centre of mass (MNIST)",
}


def build_manifest(bundle_dir: Path, meta: dict, *, default_k: int = 10) -> dict:
    """A fresh manifest for the ONNX files in bundle_dir, from a training run's metadata."""
    bundle_dir = Path(bundle_dir)
    cfg = meta["config"]
    models = {}
    for name, file in FILES.items():
        models[name] = {
            "file": file,
            "sha256": sha256_bytes((bundle_dir / file).read_bytes()),
            "input": SIGNATURES[name][0],
            "outputs": list(SIGNATURES[name][1]),
        }
    return {
        "format_version": FORMAT_VERSION,
        "name": "edgeguard-mnist",
        "created": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
        "models": models,
        "input": INPUT_SPEC,
        "latent_dim": int(cfg["latent_dim"]),
        "n_classes": N_CLASSES,
        "default_k": default_k,
        "provenance": {
            "data_files_sha256": meta["data_files"],
            "train_images": meta["train_images"],
            "seed": cfg["seed"],
            "epochs": {"vae": cfg["vae_epochs"], "classifier": cfg["clf_epochs"]},
            "beta": cfg["beta"],
            "quick": cfg["quick"],
            "git_commit": meta["git_commit"],
            "torch_version": meta["torch_version"],
            "onnx_opset": OPSET,
            "training_seconds": meta["seconds"],
            "training_config": {k: v for k, v in cfg.items() if k not in ("out", "data_dir", "extra")},
        },
        "metrics": {},
        "calibration": None,
        "camera_calibration": None,  # export/camera.py, after the digit calibration
    }


def read(bundle_dir: Path) -> dict:
    return json.loads((Path(bundle_dir) / MANIFEST).read_text())


def write(bundle_dir: Path, manifest: dict) -> Path:
    path = Path(bundle_dir) / MANIFEST
    path.write_text(json.dumps(manifest, indent=1) + "\n")
    return path


def update(bundle_dir: Path, **fields) -> dict:
    manifest = read(bundle_dir)
    manifest.update(fields)
    write(bundle_dir, manifest)
    return manifest
