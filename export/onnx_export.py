"""PyTorch models -> ONNX files with a dynamic batch axis, checked by onnx.checker and by parity runs.

The model names and their input and output names are the bundle contract's (edgeguard.contract.SIGNATURES).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import torch

from edgeguard.contract import MODEL_NAMES, SIDE, SIGNATURES
from train.from_onnx import onnx_parity, require_parity
from train.models import VAE, Classifier

OPSET = 17
FILES = {name: f"{name}.onnx" for name in MODEL_NAMES}


def _modules(vae: VAE, clf: Classifier) -> dict[str, torch.nn.Module]:
    return {"encoder": vae.encoder.eval(), "decoder": vae.decoder.eval(), "classifier": clf.eval()}


def _example(name: str, latent_dim: int) -> torch.Tensor:
    return torch.zeros(2, latent_dim) if name == "decoder" else torch.zeros(2, 1, SIDE, SIDE)


def export_models(vae: VAE, clf: Classifier, out_dir: Path, opset: int = OPSET) -> dict[str, Path]:
    """Writes encoder.onnx, decoder.onnx and classifier.onnx into out_dir and checks each one."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, module in _modules(vae, clf).items():
        input_name, output_names = SIGNATURES[name]
        path = out_dir / FILES[name]
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            torch.onnx.export(
                module, (_example(name, vae.latent_dim),), str(path), dynamo=False,
                input_names=[input_name], output_names=list(output_names), opset_version=opset,
                dynamic_axes={n: {0: "batch"} for n in [input_name, *output_names]},
                do_constant_folding=True,
            )
        model = onnx.load(str(path))
        onnx.checker.check_model(model, full_check=True)
        paths[name] = path
    return paths


def parity(vae: VAE, clf: Classifier, out_dir: Path, images: np.ndarray) -> dict[str, float]:
    """Max abs difference between onnxruntime (the files in out_dir) and PyTorch outputs, per model, on the
    given images (uint8, or float in [0, 1]).

    Raises ValueError when any model differs by more than edgeguard.contract.PARITY_TOLERANCE.
    """
    paths = {name: Path(out_dir) / FILES[name] for name in MODEL_NAMES}
    return require_parity(onnx_parity(_modules(vae, clf), paths, images), "ONNX")
