"""PyTorch models -> ONNX files with a dynamic batch axis, checked by onnx.checker and by parity runs."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from train.models import VAE, Classifier

OPSET = 17
PARITY_TOLERANCE = 1e-4
FILES = {"encoder": "encoder.onnx", "decoder": "decoder.onnx", "classifier": "classifier.onnx"}
# name -> (input name, output names); the runtime relies on these names.
SIGNATURES = {
    "encoder": ("image", ["mu", "logvar"]),
    "decoder": ("z", ["recon"]),
    "classifier": ("image", ["logits"]),
}


def _modules(vae: VAE, clf: Classifier) -> dict[str, torch.nn.Module]:
    return {"encoder": vae.encoder.eval(), "decoder": vae.decoder.eval(), "classifier": clf.eval()}


def _example(name: str, latent_dim: int) -> torch.Tensor:
    return torch.zeros(2, latent_dim) if name == "decoder" else torch.zeros(2, 1, 28, 28)


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
                input_names=[input_name], output_names=output_names, opset_version=opset,
                dynamic_axes={n: {0: "batch"} for n in [input_name, *output_names]},
                do_constant_folding=True,
            )
        model = onnx.load(str(path))
        onnx.checker.check_model(model, full_check=True)
        paths[name] = path
    return paths


@torch.no_grad()
def parity(vae: VAE, clf: Classifier, out_dir: Path, images: np.ndarray) -> dict[str, float]:
    """Max abs difference between onnxruntime and PyTorch outputs, per model, on the given images.

    Raises ValueError when any model differs by more than PARITY_TOLERANCE.
    """
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    mu, logvar = vae.encoder(x)
    inputs = {"encoder": x, "decoder": mu, "classifier": x}
    result = {}
    for name, module in _modules(vae, clf).items():
        session = ort.InferenceSession(str(Path(out_dir) / FILES[name]), providers=["CPUExecutionProvider"])
        expected = module(inputs[name])
        expected = expected if isinstance(expected, tuple) else (expected,)
        got = session.run(None, {SIGNATURES[name][0]: inputs[name].numpy()})
        result[name] = float(max(np.abs(g - e.numpy()).max() for g, e in zip(got, expected)))
    bad = {n: d for n, d in result.items() if d > PARITY_TOLERANCE}
    if bad:
        raise ValueError(f"ONNX parity failed (max abs difference > {PARITY_TOLERANCE}): {bad}")
    return result
