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
declared inputs and outputs (read from the protobuf by hand, without onnxruntime) compared with the names
the runtime feeds and with ``latent_dim`` and ``n_classes``. An edit that stays consistent (say, a better
``metrics.clean_accuracy``) can only be caught against a digest kept outside the bundle:
``load_bundle(path, manifest_sha256=...)``, with the digest that ``edgeguard info`` shows for the bundle you trust.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from edgeguard import calibration as _calibration
from edgeguard.calibration import SIGNALS, decode_scores
from edgeguard.errors import BundleError

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
MODEL_NAMES = ("encoder", "decoder", "classifier")
MAX_MODEL_BYTES = 64 * 1024 * 1024
MAX_MANIFEST_BYTES = 16 * 1024 * 1024
MAX_K = 1024  # the CLI's limit too
SIDE = 28
#: name -> (input name, output names in order): what guard.py feeds and unpacks.
SIGNATURES = {"encoder": ("image", ("mu", "logvar")), "decoder": ("z", ("recon",)),
              "classifier": ("image", ("logits",))}
_SHA256 = re.compile(r"[0-9a-f]{64}")
#: Guard.load's ``calibration`` choice -> the manifest entry that holds it: "digits" were calibrated as
#: 28x28 images (the held-out split), "camera" on the same digits filmed and found in frames (export/camera.py).
CALIBRATIONS = {"digits": "calibration", "camera": "camera_calibration"}


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
    manifest_sha256: str = ""  # of manifest.json as read: pin it to detect any edit

    @property
    def latent_dim(self) -> int:
        return int(self.manifest["latent_dim"])

    @property
    def default_k(self) -> int:
        return int(self.manifest["default_k"])

    @property
    def calibration(self) -> dict | None:
        return self.manifest.get("calibration")

    @property
    def camera_calibration(self) -> dict | None:
        """The calibration on filmed digits that ``edgeguard webcam`` uses, when the bundle has one."""
        return self.manifest.get("camera_calibration")


def read_manifest(path: Path) -> dict:
    """The manifest of the bundle folder ``path``, checked for the fields the runtime relies on."""
    return _read_manifest(path)[0]


def _read_manifest(path: Path) -> tuple[dict, str]:
    """(the checked manifest, the sha256 of its bytes)."""
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
    check_manifest(manifest, file)
    return manifest, sha256_bytes(data)


def _no_duplicate_keys(pairs: list) -> dict:
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"duplicate key {next(k for k in keys if keys.count(k) > 1)!r}")
    return dict(pairs)


def _no_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def _positive_int(value, limit: int) -> bool:
    return type(value) is int and 0 < value <= limit


def check_manifest(manifest, file: Path) -> None:
    """Raises BundleError unless every field the runtime uses has the right type and the fields agree."""
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
    files = set()
    for name in MODEL_NAMES:
        spec = models[name]
        if not (isinstance(spec, dict) and isinstance(spec.get("file"), str) and isinstance(spec.get("sha256"), str)):
            raise bad(f"model {name!r} needs a 'file' and a 'sha256'")
        if not _SHA256.fullmatch(spec["sha256"]):
            raise bad(f"model {name!r}: sha256 must be 64 lowercase hex digits")
        if spec["file"] in files:
            raise bad(f"model {name!r} names {spec['file']!r}, which another model already uses")
        files.add(spec["file"])
        want_input, want_outputs = SIGNATURES[name]
        if spec.get("input") != want_input or spec.get("outputs") != list(want_outputs):
            raise bad(f"model {name!r} must take {want_input!r} and give {', '.join(map(repr, want_outputs))} "
                      f"(the names the runtime uses); the manifest says {spec.get('input')!r} -> {spec.get('outputs')!r}")
    for key, limit in (("latent_dim", 4096), ("default_k", MAX_K), ("n_classes", 1000)):
        if not _positive_int(manifest.get(key), limit):
            raise bad(f"{key!r} must be an integer from 1 to {limit}, got {manifest.get(key)!r}")
    if manifest["n_classes"] < 2:
        raise bad("'n_classes' must be at least 2")
    for key in ("metrics", "provenance", "input"):
        if key in manifest and not isinstance(manifest[key], dict):
            raise bad(f"{key!r} must be a JSON object")
    for key in CALIBRATIONS.values():
        if manifest.get(key) is not None:
            _check_calibration(manifest[key], manifest["default_k"], bad, key)


def _check_calibration(entry, default_k: int, bad, key: str = "calibration") -> None:
    """Checks one calibration entry (``key``: its name in the manifest, which the messages start with)."""
    if not isinstance(entry, dict):
        raise bad(f"{key!r} must be a JSON object (or null for an uncalibrated bundle)")
    signals = entry.get("signals")
    if not (isinstance(signals, list) and signals and all(isinstance(s, str) for s in signals)):
        raise bad(f"{key}: 'signals' must be a non-empty list of signal names")
    unknown = [s for s in signals if s not in SIGNALS]
    if unknown or len(set(signals)) != len(signals):
        raise bad(f"{key}: 'signals' must name distinct known signals ({', '.join(SIGNALS)}); got {signals}")
    scores = entry.get("scores")
    if not isinstance(scores, dict) or set(scores) != set(signals):
        raise bad(f"{key}: 'scores' must hold exactly one entry per listed signal")
    combinations = getattr(_calibration, "COMBINATIONS", {"fisher": None})
    if entry.get("combination", "fisher") not in combinations:
        raise bad(f"{key}: unknown combination {entry.get('combination')!r}; "
                  f"expected one of {', '.join(combinations)}")
    n = entry.get("n")
    if type(n) is not int or n < 1:
        raise bad(f"{key}: 'n' must be a positive integer, got {n!r}")
    for name, block in [*scores.items(), ("combined", entry.get("combined"))]:
        if not (isinstance(block, dict) and block.get("dtype") == "float32" and type(block.get("n")) is int):
            raise bad(f"{key}: {name!r} must be an object with 'n', 'dtype': 'float32' and 'base64'")
        try:
            values = decode_scores(block)
        except BundleError as e:
            raise bad(f"{key}: {name!r}: {e}") from None
        if values.size != n:
            raise bad(f"{key}: {name!r} holds {values.size} scores but 'n' is {n}")
    k = entry.get("k")
    if type(k) is not int or k != default_k:
        raise bad(f"{key}: computed with k={k!r} but 'default_k' is {default_k}; "
                  "the p-values are only valid for the k they were calibrated with (recalibrate)")
    if type(entry.get("seed")) is not int or entry["seed"] < 0:
        raise bad(f"{key}: 'seed' must be a non-negative integer, got {entry.get('seed')!r}")
    rates = entry.get("test_false_alarm_rate", {})
    if not (isinstance(rates, dict) and all(isinstance(v, (int, float)) and math.isfinite(v) for v in rates.values())):
        raise bad(f"{key}: 'test_false_alarm_rate' must map alphas to numbers")


def _model_file(root: Path, name: str, relative: str) -> Path:
    """The model file named in the manifest, refused when it points outside the bundle folder."""
    if not relative or os.path.isabs(relative) or Path(relative).name != relative or relative in (".", ".."):
        raise BundleError(f"{root / MANIFEST}: model {name!r} names {relative!r}, which is not a file inside the bundle")
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
    manifest, digest_of_manifest = _read_manifest(root)
    if manifest_sha256 is not None and digest_of_manifest != str(manifest_sha256).lower():
        raise BundleError(f"{root / MANIFEST}: sha256 {digest_of_manifest[:12]}… is not the pinned "
                          f"{str(manifest_sha256)[:12]}…; the bundle is not the one you trust")
    models = {}
    for name in MODEL_NAMES:
        spec = manifest["models"][name]
        file = _model_file(root, name, spec["file"])
        try:
            if file.is_symlink() or not file.is_file():
                raise BundleError(f"{file}: model file listed in the manifest is missing")
            if file.stat().st_size > MAX_MODEL_BYTES:
                raise BundleError(f"{file}: model file is larger than {MAX_MODEL_BYTES} bytes")
            data = file.read_bytes()
        except OSError as e:
            raise BundleError(f"{file}: cannot read the model file ({e.strerror or e})") from None
        digest = sha256_bytes(data)
        if digest != spec["sha256"]:
            raise BundleError(
                f"{file}: sha256 {digest[:12]}… does not match the manifest ({spec['sha256'][:12]}…); "
                "the bundle was modified or is corrupt"
            )
        _check_graph(name, data, manifest, file)
        models[name] = data
    return Bundle(path=root, manifest=manifest, models=models, manifest_sha256=digest_of_manifest)


# -- the ONNX graphs' declared inputs and outputs, read without onnxruntime ------------------------------
# A minimal protobuf reader for the few ModelProto fields needed (onnx.proto3 field numbers):
# ModelProto.graph=7, functions=25; GraphProto.node=1, initializer=5, input=11, output=12,
# sparse_initializer=15; ValueInfoProto.name=1, type=2; TypeProto.tensor_type=1;
# Tensor.elem_type=1, shape=2; TensorShapeProto.dim=1; Dimension.dim_value=1, dim_param=2;
# NodeProto.attribute=5; AttributeProto.t=5, g=6, tensors=10, graphs=11, sparse_tensor=22,
# sparse_tensors=23; TensorProto.name=8, external_data=13, data_location=14; FunctionProto.node=7.

_FLOAT = 1  # TensorProto.DataType.FLOAT
_MAX_DEPTH = 16  # nested subgraphs


class _Malformed(Exception):
    pass


def _varint(buf, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise _Malformed("bad varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _fields(buf):
    """(field number, wire type, value) of each field of one message: an int or a memoryview."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 2:
            size, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + size], pos + size
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, pos = buf[pos : pos + size], pos + size
        else:
            raise _Malformed(f"wire type {wire}")
        if number == 0 or pos > end:
            raise _Malformed("truncated message")
        yield number, wire, value


def _only(buf, number: int):
    """The one length-delimited field ``number`` of a message (None when absent); duplicates are refused."""
    found = [value for n, wire, value in _fields(buf) if n == number]
    if len(found) > 1:
        raise _Malformed(f"field {number} appears {len(found)} times")
    if found and not isinstance(found[0], memoryview):
        raise _Malformed(f"field {number} has the wrong wire type")
    return found[0] if found else None


def _text(value) -> str:
    try:
        return bytes(value).decode("utf-8")
    except (TypeError, UnicodeDecodeError):
        raise _Malformed("bad string") from None


def _value_info(buf) -> tuple[str, int | None, list]:
    """(name, element type, dims): each dim an int, a symbolic name (str) or None."""
    name = _text(_only(buf, 1) or b"")
    tensor = _only(_only(buf, 2) or b"", 1)
    if tensor is None:
        return name, None, []
    elem = [v for n, w, v in _fields(tensor) if n == 1 and w == 0]
    dims = []
    for n, w, dim in _fields(tensor):
        if n == 2 and w == 2:
            for m, _, d in _fields(dim):
                if m == 1:
                    dims.append(_dim(d))
    return name, elem[-1] if elem else None, dims


def _dim(buf):
    for n, w, v in _fields(buf):
        if n == 1 and w == 0:
            return v
        if n == 2 and w == 2:
            return _text(v)
    return None


def _tensor_is_external(buf) -> bool:
    return any((n == 14 and w == 0 and v == 1) or n == 13 for n, w, v in _fields(buf))


def _graph_uses_external_data(graph, depth: int = 0) -> bool:
    if depth > _MAX_DEPTH:
        raise _Malformed("subgraphs nested too deeply")
    for n, w, v in _fields(graph):
        if w != 2:
            continue
        if n == 5 and _tensor_is_external(v):
            return True
        if n == 15 and any(_tensor_is_external(t) for m, x, t in _fields(v) if m in (1, 2) and x == 2):
            return True
        if n == 1 and _node_uses_external_data(v, depth):
            return True
    return False


def _node_uses_external_data(node, depth: int) -> bool:
    for n, w, attribute in _fields(node):
        if n != 5 or w != 2:
            continue
        for m, x, v in _fields(attribute):
            if x != 2:
                continue
            if m in (5, 10) and _tensor_is_external(v):
                return True
            if m in (22, 23) and any(_tensor_is_external(t) for k, y, t in _fields(v) if k in (1, 2) and y == 2):
                return True
            if m in (6, 11) and _graph_uses_external_data(v, depth + 1):
                return True
    return False


def onnx_signature(data: bytes) -> tuple[list, list, bool]:
    """(inputs, outputs, uses external data) declared by an ONNX model; inputs exclude initializers.

    Raises ValueError for bytes that are not a well-formed ONNX model.
    """
    try:
        model = memoryview(data)
        graph = _only(model, 7)
        if graph is None:
            raise _Malformed("no graph")
        initializers = {_text(_only(v, 8) or b"") for n, w, v in _fields(graph) if n == 5 and w == 2}
        inputs = [_value_info(v) for n, w, v in _fields(graph) if n == 11 and w == 2]
        outputs = [_value_info(v) for n, w, v in _fields(graph) if n == 12 and w == 2]
        external = _graph_uses_external_data(graph) or any(
            _node_uses_external_data(node, 0)
            for n, w, function in _fields(model) if n == 25 and w == 2
            for m, x, node in _fields(function) if m == 7 and x == 2)
    except (_Malformed, IndexError, ValueError) as e:
        raise ValueError(f"not a well-formed ONNX model ({e})") from None
    return [i for i in inputs if i[0] not in initializers], outputs, external


def _check_graph(name: str, data: bytes, manifest: dict, file: Path) -> None:
    """The model's declared inputs and outputs must be what the runtime feeds and what the manifest says."""
    try:
        inputs, outputs, external = onnx_signature(data)
    except ValueError as e:
        raise BundleError(f"{file}: {e}") from None
    if external:
        raise BundleError(f"{file}: the model refers to external data files; a bundle's models must be self-contained")
    image, d, c = [1, SIDE, SIDE], manifest["latent_dim"], manifest["n_classes"]
    expected_in = {"encoder": image, "decoder": [d], "classifier": image}[name]
    expected_out = {"encoder": [[d], [d]], "decoder": [image], "classifier": [[c]]}[name]
    want_input, want_outputs = SIGNATURES[name]
    problems = []
    if [i[0] for i in inputs] != [want_input]:
        problems.append(f"inputs {[i[0] for i in inputs]} (expected [{want_input!r}])")
    if [o[0] for o in outputs] != list(want_outputs):
        problems.append(f"outputs {[o[0] for o in outputs]} (expected {list(want_outputs)})")
    if not problems:
        for (tensor, elem, dims), expected in zip(inputs + outputs, [expected_in, *expected_out]):
            if elem != _FLOAT or len(dims) != 1 + len(expected):
                problems.append(f"{tensor!r} is not a float32 tensor of rank {1 + len(expected)}")
            elif not isinstance(dims[0], str):
                problems.append(f"{tensor!r} has a fixed batch size {dims[0]!r} (expected a dynamic batch axis)")
            elif any(isinstance(got, int) and got != want for got, want in zip(dims[1:], expected)):
                problems.append(f"{tensor!r} has shape {['batch', *dims[1:]]}, expected {['batch', *expected]} "
                                f"(the manifest says latent_dim {d}, n_classes {c})")
    if problems:
        raise BundleError(f"{file}: the {name} graph does not match the manifest: {'; '.join(problems)}")
