"""The shipped ONNX models as differentiable PyTorch modules (for attacks on the shipped bundle).

The bundle ships only ONNX files, and the exporter folded the classifier's BatchNorm into its
convolutions, so the PyTorch training modules cannot simply be re-loaded. ``OnnxModule`` instead
interprets the ONNX graph with torch operations, its initializers held as (frozen) parameters: the
same arithmetic as onnxruntime, with gradients. Only the operators our exporter emits are supported;
anything else is a clear ``NotImplementedError`` naming the operator.

``load_shipped`` returns the three modules and checks them against onnxruntime
(``parity`` -> max abs difference per model, must be <= PARITY_TOLERANCE). ``onnx_parity`` and
``require_parity`` are the one parity check, shared with export/onnx_export.py.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from torch import nn

from edgeguard.contract import MODEL_NAMES, PARITY_TOLERANCE, SIDE, SIGNATURES


def _attrs(node) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _pads2d(pads, n=2):
    """ONNX pads (begin..., end...) -> torch symmetric padding, or None when asymmetric."""
    pads = list(pads or [0] * 2 * n)
    begin, end = pads[:n], pads[n:]
    return tuple(begin) if begin == end else None


class OnnxModule(nn.Module):
    """Runs one ONNX graph (single input) with torch ops; outputs a tensor or a tuple of tensors."""

    def __init__(self, model: onnx.ModelProto):
        super().__init__()
        graph = model.graph
        init_names = {t.name for t in graph.initializer}
        self._keys: dict[str, str] = {}
        for i, t in enumerate(graph.initializer):
            key = f"p{i}"
            self._keys[t.name] = key
            array = numpy_helper.to_array(t).copy()
            if array.dtype.kind == "f":
                self.register_parameter(key, nn.Parameter(torch.from_numpy(array.astype(np.float32)),
                                                          requires_grad=False))
            else:
                self.register_buffer(key, torch.from_numpy(array))
        inputs = [i.name for i in graph.input if i.name not in init_names]
        if len(inputs) != 1:
            raise NotImplementedError(f"expected one graph input, got {inputs}")
        self.input_name = inputs[0]
        self.output_names = [o.name for o in graph.output]
        self._nodes = [(n.op_type, list(n.input), list(n.output), _attrs(n)) for n in graph.node]
        for op, *_ in self._nodes:
            if op not in _OPS:
                raise NotImplementedError(f"ONNX operator {op!r} is not supported by train.from_onnx")

    def forward(self, x: torch.Tensor):
        env: dict[str, object] = {self.input_name: x}
        for name, key in self._keys.items():
            env[name] = getattr(self, key)
        for op, ins, outs, attrs in self._nodes:
            args = [env[i] if i else None for i in ins]
            result = _OPS[op](attrs, *args)
            if not isinstance(result, tuple):
                result = (result,)
            for name, value in zip(outs, result):
                env[name] = value
        out = tuple(env[o] for o in self.output_names)
        return out[0] if len(out) == 1 else out


# -- operators: tensors are torch tensors; shape arithmetic runs on small int64 tensors ----------

def _conv(a, x, w, b=None):
    if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise NotImplementedError("Conv auto_pad")
    pad = _pads2d(a.get("pads"))
    if pad is None:
        p = a["pads"]
        x, pad = F.pad(x, (p[1], p[3], p[0], p[2])), (0, 0)
    return F.conv2d(x, w, b, stride=tuple(a.get("strides", (1, 1))), padding=pad,
                    dilation=tuple(a.get("dilations", (1, 1))), groups=a.get("group", 1))


def _conv_transpose(a, x, w, b=None):
    pad = _pads2d(a.get("pads"))
    if pad is None or "output_shape" in a:
        raise NotImplementedError("ConvTranspose with asymmetric pads or output_shape")
    return F.conv_transpose2d(x, w, b, stride=tuple(a.get("strides", (1, 1))), padding=pad,
                              output_padding=tuple(a.get("output_padding", (0, 0))),
                              dilation=tuple(a.get("dilations", (1, 1))), groups=a.get("group", 1))


def _maxpool(a, x):
    pad = _pads2d(a.get("pads"))
    if pad is None:
        raise NotImplementedError("MaxPool with asymmetric pads")
    return F.max_pool2d(x, tuple(a["kernel_shape"]), tuple(a.get("strides", a["kernel_shape"])), pad,
                        tuple(a.get("dilations", (1, 1))), ceil_mode=bool(a.get("ceil_mode", 0)))


def _gemm(a, x, w, b=None):
    x = x.t() if a.get("transA", 0) else x
    w = w.t() if a.get("transB", 0) else w
    y = a.get("alpha", 1.0) * (x @ w)
    return y if b is None else y + a.get("beta", 1.0) * b


def _reshape(a, x, shape):
    shape = [int(s) for s in shape.tolist()]
    if not a.get("allowzero", 0):
        shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return x.reshape(shape)


def _slice(a, x, starts, ends, axes=None, steps=None):
    starts, ends = starts.tolist(), ends.tolist()
    axes = axes.tolist() if axes is not None else list(range(len(starts)))
    steps = steps.tolist() if steps is not None else [1] * len(starts)
    index = [slice(None)] * x.dim()
    for s, e, ax, st in zip(starts, ends, axes, steps):
        index[ax] = slice(int(s), int(min(e, x.shape[ax])), int(st))
    return x[tuple(index)]


def _constant(a):
    return torch.from_numpy(numpy_helper.to_array(a["value"]).copy())


def _shape(a, x):
    return torch.tensor(list(x.shape), dtype=torch.int64)


def _div(a, x, y):
    if not x.is_floating_point() and not y.is_floating_point():
        return torch.div(x, y, rounding_mode="trunc")
    return x / y


_OPS = {
    "Conv": _conv,
    "ConvTranspose": _conv_transpose,
    "Relu": lambda a, x: F.relu(x),
    "Sigmoid": lambda a, x: torch.sigmoid(x),
    "Tanh": lambda a, x: torch.tanh(x),
    "MaxPool": _maxpool,
    "Flatten": lambda a, x: x.flatten(a.get("axis", 1)) if a.get("axis", 1) == 1 else x.reshape(
        int(np.prod(x.shape[: a["axis"]])), -1),
    "Gemm": _gemm,
    "MatMul": lambda a, x, y: x @ y,
    "Add": lambda a, x, y: x + y,
    "Sub": lambda a, x, y: x - y,
    "Mul": lambda a, x, y: x * y,
    "Div": _div,
    "Reshape": _reshape,
    "Slice": _slice,
    "Constant": _constant,
    "Shape": _shape,
    "Gather": lambda a, x, i: torch.index_select(x, a.get("axis", 0), i.reshape(-1)).reshape(
        *x.shape[: a.get("axis", 0)], *i.shape, *x.shape[a.get("axis", 0) + 1:]),
    "Identity": lambda a, x: x,
}


@dataclass
class ShippedModels:
    encoder: OnnxModule
    decoder: OnnxModule
    classifier: OnnxModule
    paths: dict[str, Path]

    def modules(self) -> dict[str, OnnxModule]:
        return {"encoder": self.encoder, "decoder": self.decoder, "classifier": self.classifier}


def load_onnx(path: str | os.PathLike[str]) -> OnnxModule:
    return OnnxModule(onnx.load(os.fspath(path))).eval()


def load_shipped(bundle: str | os.PathLike[str] | None = None) -> ShippedModels:
    """The bundle's three models (None: the shipped one) as torch modules (weights frozen)."""
    from edgeguard.bundle import load_bundle

    loaded = load_bundle(bundle)  # verifies sha256
    root = Path(loaded.path)
    paths = {name: root / loaded.info.models[name].file for name in MODEL_NAMES}
    return ShippedModels(**{name: load_onnx(paths[name]) for name in MODEL_NAMES}, paths=paths)


@torch.no_grad()
def onnx_parity(modules: Mapping[str, nn.Module], paths: Mapping[str, Path], images: np.ndarray) -> dict[str, float]:
    """Max abs difference between onnxruntime (each model's ONNX file in ``paths``) and the torch ``modules``,
    per model, on images (uint8, or float in [0, 1]); the decoder is fed the torch encoder's mu."""
    x = images.astype(np.float32)
    x = (x / 255.0 if images.dtype == np.uint8 else x).reshape(-1, 1, SIDE, SIDE).astype(np.float32)
    mu, _ = modules["encoder"](torch.from_numpy(x))
    inputs = {"encoder": x, "decoder": mu.numpy(), "classifier": x}
    result = {}
    for name in MODEL_NAMES:
        session = ort.InferenceSession(str(paths[name]), providers=["CPUExecutionProvider"])
        got = session.run(None, {SIGNATURES[name][0]: inputs[name]})
        expected = modules[name](torch.from_numpy(inputs[name]))
        expected = expected if isinstance(expected, tuple) else (expected,)
        result[name] = float(max(np.abs(g - e.numpy()).max() for g, e in zip(got, expected)))
    return result


def require_parity(result: dict[str, float], what: str) -> dict[str, float]:
    """``result`` (an ``onnx_parity``), or ValueError naming ``what`` when a model differs by more than
    PARITY_TOLERANCE (the contract's)."""
    bad = {n: d for n, d in result.items() if d > PARITY_TOLERANCE}
    if bad:
        raise ValueError(f"{what} parity failed (max abs difference > {PARITY_TOLERANCE}): {bad}")
    return result


def parity(models: ShippedModels, images: np.ndarray) -> dict[str, float]:
    """Max abs difference between the torch modules and onnxruntime, per model, on images (uint8 or [0,1])."""
    return onnx_parity(models.modules(), models.paths, images)


def check_parity(models: ShippedModels, images: np.ndarray) -> dict[str, float]:
    return require_parity(parity(models, images), "torch/onnxruntime")
