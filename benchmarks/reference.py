"""The PyTorch eager reference that the runtime is measured against.

This is the obvious batched ``torch.no_grad`` implementation a researcher would write with the training modules:
encoder, K latent samples with ``torch.randn``, decoder, the classifier on inputs and reconstructions in one call,
the vote with torch ops, MSE/KL scores and, when a calibration is given, the conformal p-values with
``torch.searchsorted``. It produces the same numbers as ``Guard.screen`` (up to the random draws) but no
``Verdict`` objects, so comparing it with ``Guard.screen`` is, if anything, unfair to the runtime.

Its weights are the bundle's own (``TorchReference.from_bundle``), so it needs no training checkpoint: the
training modules (``train.models.VAE`` and ``Classifier``, sized from the manifest and the graphs) are built and
each Conv / Gemm initializer of the shipped ONNX graphs is copied into the matching ``nn.Conv2d`` / ``nn.Linear``,
in graph order, shapes and attributes checked. The exporter folded the classifier's BatchNorm into its
convolutions, so when a graph has no BatchNormalization node the module's BatchNorm layers become identities (the
folded convolutions already hold them; keeping BatchNorm would only add work the runtime does not do). The result
is then checked against onnxruntime, model by model, on a few hundred digit-like and noise images, and refused
(``ParityError``) unless every output is within ``edgeguard.contract.PARITY_TOLERANCE``.

Only ``benchmarks.latency`` imports this module, and only after checking that torch is there: the runtime itself
never needs torch.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import nn

from edgeguard.contract import PARITY_TOLERANCE, SIDE

WEIGHTS = ("the bundle's ONNX initializers copied into train.models.VAE and Classifier (the classifier's "
           "BatchNorm, folded into its convolutions on export, as identities)")


class WeightMappingError(ValueError):
    """The bundle's graphs do not map onto the training modules (another architecture)."""


class ParityError(ValueError):
    """The modules built from the bundle do not compute what onnxruntime computes from it."""


# ONNX operator -> the torch layer that holds its initializers
_LAYERS = {"Conv": nn.Conv2d, "Gemm": nn.Linear, "BatchNormalization": nn.BatchNorm2d}


def _attrs(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _drop_batchnorm(module: nn.Module) -> None:
    for name, child in list(module.named_children()):
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            setattr(module, name, nn.Identity())
        else:
            _drop_batchnorm(child)


def _copy(layer: nn.Module, node, weights: dict[str, np.ndarray], where: str) -> None:
    """One ONNX node's initializers into one torch layer, after checking that the layer computes the node."""
    try:
        arrays = [weights[name] for name in node.input[1:] if name]
    except KeyError as e:
        raise WeightMappingError(f"{where}: input {e} of {node.op_type} is not an initializer") from None
    a = _attrs(node)
    if node.op_type == "Conv":
        k = len(layer.kernel_size)
        want = {"strides": list(layer.stride), "pads": list(layer.padding) * 2, "dilations": list(layer.dilation),
                "group": layer.groups}
        got = {"strides": list(a.get("strides", [1] * k)), "pads": list(a.get("pads", [0] * 2 * k)),
               "dilations": list(a.get("dilations", [1] * k)), "group": a.get("group", 1)}
        if got != want or a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            raise WeightMappingError(f"{where}: Conv {got} is not the module's {want}")
        params = [layer.weight, layer.bias]
    elif node.op_type == "Gemm":
        if a.get("transA", 0) or a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0:
            raise WeightMappingError(f"{where}: Gemm with transA, alpha or beta is not an nn.Linear")
        if not a.get("transB", 0):
            arrays[0] = arrays[0].T
        params = [layer.weight, layer.bias]
    else:  # BatchNormalization, left unfused
        layer.eps = float(a.get("epsilon", 1e-5))
        params = [layer.weight, layer.bias, layer.running_mean, layer.running_var]
    if len(arrays) != sum(p is not None for p in params):
        raise WeightMappingError(f"{where}: {node.op_type} has {len(arrays)} initializers, the module "
                                 f"{sum(p is not None for p in params)}")
    for param, array in zip([p for p in params if p is not None], arrays):
        if tuple(param.shape) != array.shape:
            raise WeightMappingError(f"{where}: {node.op_type} initializer of shape {array.shape}, the module's "
                                     f"{type(layer).__name__} wants {tuple(param.shape)}")
        with torch.no_grad():
            param.copy_(torch.tensor(np.asarray(array, np.float32)))


def load_onnx_weights(model, module: nn.Module, name: str = "model") -> nn.Module:
    """Copies an ONNX graph's (``onnx.ModelProto``) weights into ``module``, layer by layer in graph order.

    Conv -> nn.Conv2d, Gemm -> nn.Linear, BatchNormalization -> nn.BatchNorm2d; with no BatchNormalization node in
    the graph (folded on export), the module's BatchNorm layers are replaced by ``nn.Identity``. Any other node
    that reads a float initializer, or a count, type, shape or attribute that does not match, is a
    ``WeightMappingError``. Returns ``module`` in eval mode.
    """
    from onnx import numpy_helper

    graph = model.graph
    weights = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    nodes = [n for n in graph.node if n.op_type in _LAYERS]
    for n in graph.node:
        if n.op_type not in _LAYERS and any(i in weights and weights[i].dtype.kind == "f" for i in n.input):
            raise WeightMappingError(f"{name}: {n.op_type} node {n.name!r} holds weights the training modules "
                                     "have no layer for")
    if not any(n.op_type == "BatchNormalization" for n in nodes):
        _drop_batchnorm(module)
    layers = [m for m in module.modules() if isinstance(m, tuple(_LAYERS.values()))]
    if [n.op_type for n in nodes] != [next(op for op, t in _LAYERS.items() if isinstance(m, t)) for m in layers]:
        raise WeightMappingError(f"{name}: graph layers {[n.op_type for n in nodes]} do not match the module's "
                                 f"{[type(m).__name__ for m in layers]}")
    for i, (node, layer) in enumerate(zip(nodes, layers)):
        _copy(layer, node, weights, f"{name} layer {i} ({node.name or node.op_type})")
    return module.eval()


def modules_from_bundle(bundle=None):
    """(vae, classifier, loaded bundle): ``train.models`` modules holding the bundle's weights (None: the shipped
    bundle; its sha256 is verified). Not yet checked against onnxruntime: ``onnx_parity`` does that."""
    import onnx

    from edgeguard.bundle import load_bundle
    from train.models import VAE, Classifier

    loaded = load_bundle(bundle)
    graphs = {name: onnx.load_from_string(data) for name, data in loaded.models.items()}
    config = (loaded.manifest.get("provenance") or {}).get("training_config") or {}
    sizes = {key: config[cfg] for key, cfg in (("width", "vae_width"), ("encoder_width", "encoder_width"))
             if cfg in config}
    vae = VAE(loaded.latent_dim, **sizes)
    convs = [n for n in graphs["classifier"].graph.node if n.op_type == "Conv"]
    inits = {t.name: tuple(t.dims) for t in graphs["classifier"].graph.initializer}
    if not convs or convs[0].input[1] not in inits:
        raise WeightMappingError("classifier: the graph does not start with a Conv of the training Classifier")
    clf = Classifier(width=inits[convs[0].input[1]][0])  # the first convolution's output channels
    load_onnx_weights(graphs["encoder"], vae.encoder, "encoder")
    load_onnx_weights(graphs["decoder"], vae.decoder, "decoder")
    load_onnx_weights(graphs["classifier"], clf, "classifier")
    return vae.eval(), clf.eval(), loaded


def parity_images(n_digits: int = 256, n_noise: int = 64, seed: int = 11) -> np.ndarray:
    """uint8 (n_digits + n_noise, 28, 28): digit-like strokes, then uniform noise (every pixel value)."""
    from benchmarks.latency.common import synthetic_digits

    noise = np.random.default_rng(seed).integers(0, 256, size=(n_noise, SIDE, SIDE), dtype=np.uint8)
    return np.concatenate([synthetic_digits(n_digits, seed=seed), noise])


@torch.no_grad()
def onnx_parity(vae: nn.Module, clf: nn.Module, models: dict[str, bytes], images: np.ndarray, k: int = 4,
                seed: int = 0) -> dict[str, float]:
    """Max abs difference between the torch modules and onnxruntime (one thread), per model: the encoder on the
    images (mu and logvar), the decoder on K latents sampled from onnxruntime's posterior, the classifier on the
    images and onnxruntime's reconstructions."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    sessions = {name: ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
                for name, data in models.items()}

    def run(name: str, x: np.ndarray) -> list[np.ndarray]:
        s = sessions[name]
        return s.run(None, {s.get_inputs()[0].name: x})

    x = TorchReference.to_tensor(images)
    mu, logvar = run("encoder", x.numpy())
    eps = np.random.default_rng(seed).standard_normal((len(mu), k, mu.shape[1])).astype(np.float32)
    z = (mu[:, None] + np.exp(0.5 * logvar)[:, None] * eps).reshape(-1, mu.shape[1])
    (recon,) = run("decoder", z)
    both = np.concatenate([x.numpy(), recon])
    (logits,) = run("classifier", both)
    t_mu, t_logvar = vae.encoder(x)
    pairs = {"encoder": [(mu, t_mu), (logvar, t_logvar)], "decoder": [(recon, vae.decoder(torch.from_numpy(z)))],
             "classifier": [(logits, clf(torch.from_numpy(both)))]}
    return {name: float(max(np.abs(a - b.numpy()).max() for a, b in p)) for name, p in pairs.items()}


def vote(p: torch.Tensor):
    """Majority vote over (B, K, C) probabilities, as kernels.vote defines it, with torch ops:
    (labels (B,K), majority, n_distinct, agreement, entropy)."""
    k = p.shape[1]
    labels = p.argmax(dim=2)
    counts = torch.nn.functional.one_hot(labels, p.shape[2]).sum(dim=1)  # (B, C)
    # most votes, then the larger summed probability (< k + 1), then the smaller label (argmax takes the first)
    majority = (counts * (k + 1) + p.sum(dim=1, dtype=torch.float64)).argmax(dim=1)
    share = counts / k
    agreement = share.gather(1, majority[:, None]).squeeze(1)
    entropy = -torch.special.xlogy(share, share).sum(dim=1)
    return labels, majority, (counts > 0).sum(dim=1), agreement, entropy


class TorchReference:
    """Screens a batch with the training-time PyTorch modules, eagerly (``from_bundle``: the bundle's weights)."""

    def __init__(self, vae: torch.nn.Module, clf: torch.nn.Module, *, k: int, seed: int = 0,
                 calibration=None):
        self.encoder, self.decoder, self.clf = vae.encoder.eval(), vae.decoder.eval(), clf.eval()
        self.k = k
        self.generator = torch.Generator().manual_seed(seed)
        self.calibration = None
        self.parity: dict[str, float] | None = None  # per model, against onnxruntime (from_bundle)
        self.parity_images = 0
        if calibration is not None:  # edgeguard.calibration.Calibration -> tensors
            self.calibration = (
                tuple(calibration.signals),
                {name: torch.from_numpy(np.asarray(s, np.float32)) for name, s in calibration.scores.items()},
                torch.from_numpy(np.asarray(calibration.combined, np.float32)),
            )

    @classmethod
    def from_bundle(cls, bundle: str | os.PathLike[str] | None = None, *, k: int, seed: int = 0, calibration=None,
                    images: np.ndarray | None = None) -> TorchReference:
        """The training modules with the bundle's weights (None: the shipped bundle), checked against onnxruntime
        on ``images`` (default ``parity_images()``): a ``ParityError`` when any model differs by more than
        PARITY_TOLERANCE, a ``WeightMappingError`` when the graphs are not the training modules'."""
        vae, clf, loaded = modules_from_bundle(bundle)
        images = parity_images() if images is None else images
        parity = onnx_parity(vae, clf, loaded.models, images)
        bad = {name: d for name, d in parity.items() if not d <= PARITY_TOLERANCE}
        if bad:
            raise ParityError(f"{loaded.path}: the PyTorch modules built from the ONNX weights differ from "
                              f"onnxruntime by more than {PARITY_TOLERANCE} (max abs difference {bad}, {len(images)} "
                              "images); refusing to time a different network")
        reference = cls(vae, clf, k=k, seed=seed, calibration=calibration)
        reference.parity, reference.parity_images = parity, len(images)
        return reference

    @staticmethod
    def to_tensor(images: np.ndarray) -> torch.Tensor:
        """uint8 (B,28,28) or float32 [0,1] -> float32 (B,1,28,28), as a researcher's data loader would."""
        x = torch.from_numpy(np.asarray(images))
        if x.dtype == torch.uint8:
            x = x.float() / 255.0
        return x.reshape(-1, 1, SIDE, SIDE)

    @torch.no_grad()
    def screen(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        b, k = x.shape[0], self.k
        mu, logvar = self.encoder(x)
        std = torch.exp(0.5 * logvar)
        eps = torch.randn(b, k, mu.shape[1], generator=self.generator)
        z = (mu.unsqueeze(1) + std.unsqueeze(1) * eps).reshape(b * k, -1)
        recon = self.decoder(z)
        probs = torch.softmax(self.clf(torch.cat([x, recon])), dim=1)
        confidence, label = probs[:b].max(dim=1)
        labels, majority, n_distinct, agreement, entropy = vote(probs[b:].reshape(b, k, -1))
        mse = ((recon.reshape(b, k, -1) - x.reshape(b, 1, -1)) ** 2).mean(dim=2)
        signals = {
            "disagreement": 1.0 - agreement,
            "input_mismatch": 1.0 - (labels == label[:, None]).float().mean(dim=1),
            "vote_entropy": entropy,
            "recon_mse": mse.mean(dim=1),
            "recon_mse_min": mse.min(dim=1).values,
            "kl": 0.5 * (logvar.exp() + mu**2 - 1.0 - logvar).sum(dim=1),
            "posterior_spread": std.mean(dim=1),
            "low_confidence": 1.0 - confidence,
        }
        out = {"label": label, "confidence": confidence, "labels": labels, "purified_label": majority,
               "n_distinct": n_distinct, "agreement": agreement, "mu": mu, **signals}
        if self.calibration is not None:
            names, scores, combined = self.calibration
            p_values = torch.stack([self._conformal_p(scores[n], signals[n].float()) for n in names], dim=1)
            out["p_value"] = self._conformal_p(combined, (-2.0 * torch.log(p_values).sum(dim=1)).float())
        return out

    @staticmethod
    def _conformal_p(sorted_scores: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        n = sorted_scores.numel()
        at_least = n - torch.searchsorted(sorted_scores, s.contiguous(), side="left")
        return (1.0 + at_least.double()) / (n + 1.0)
