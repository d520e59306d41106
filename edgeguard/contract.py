"""The bundle contract: what the exporter writes and the runtime reads, defined once.

Image size, model names and their ONNX signatures, the signals the kernels compute (in the order
they compute them), the manifest's calibration entries, and the ONNX parity tolerance. ``train/``,
``export/``, ``benchmarks/`` and every runtime module import these names; none defines its own.
"""

from __future__ import annotations

#: An MNIST-style image is SIDE x SIDE pixels; the kernels see it flattened to N_PIXELS.
SIDE = 28
N_PIXELS = SIDE * SIDE
N_CLASSES = 10

FORMAT_VERSION = 1
MANIFEST = "manifest.json"

#: The bundle's models, in pipeline order.
MODEL_NAMES = ("encoder", "decoder", "classifier")
#: name -> (input name, output names in order): what the exporter names and ``Guard`` feeds and unpacks.
SIGNATURES: dict[str, tuple[str, tuple[str, ...]]] = {
    "encoder": ("image", ("mu", "logvar")),
    "decoder": ("z", ("recon",)),
    "classifier": ("image", ("logits",)),
}

#: The signals, in the order ``kernels.score`` writes them as columns (both backends).
SCORE_NAMES = ("disagreement", "input_mismatch", "vote_entropy", "recon_mse",
               "recon_mse_min", "kl", "posterior_spread", "low_confidence")

#: ``Guard.load``'s ``calibration`` choice -> the manifest entry that holds it: "digits" were calibrated as
#: 28x28 images (the held-out split), "camera" on the same digits filmed and found in frames (export/camera.py).
CALIBRATIONS = {"digits": "calibration", "camera": "camera_calibration"}

#: Max abs difference allowed between a shipped ONNX model and the PyTorch model it came from.
PARITY_TOLERANCE = 1e-4

#: The largest K (samples per image) the runtime and the CLI accept.
MAX_K = 1024
