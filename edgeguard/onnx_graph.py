"""The declared inputs and outputs of an ONNX model, read from its protobuf bytes by hand.

Read here, not with onnxruntime's ``get_inputs()``: a crafted graph (external data files, a wrong signature)
must be refused before onnxruntime parses it.

A minimal protobuf reader for the few ModelProto fields needed (onnx.proto3 field numbers):
ModelProto.graph=7, functions=25; GraphProto.node=1, initializer=5, input=11, output=12,
sparse_initializer=15; ValueInfoProto.name=1, type=2; TypeProto.tensor_type=1;
Tensor.elem_type=1, shape=2; TensorShapeProto.dim=1; Dimension.dim_value=1, dim_param=2;
NodeProto.attribute=5; AttributeProto.t=5, g=6, tensors=10, graphs=11, sparse_tensor=22,
sparse_tensors=23; TensorProto.name=8, external_data=13, data_location=14; FunctionProto.node=7.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from edgeguard.contract import SIDE, SIGNATURES
from edgeguard.errors import BundleError

__all__ = ["Dim", "ValueInfo", "check_graph", "onnx_signature"]

#: One dimension of a declared shape: a size, a symbolic name (a dynamic axis) or None (unknown).
Dim = int | str | None
#: (name, element type or None, dims) of one declared input or output.
ValueInfo = tuple[str, int | None, list[Dim]]
#: A field's value: a varint, or the bytes of a length-delimited or fixed-size field.
_Value = int | memoryview

_FLOAT = 1  # TensorProto.DataType.FLOAT
_MAX_DEPTH = 16  # nested subgraphs


class _Malformed(Exception):
    pass


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
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


def _fields(buf: memoryview) -> Iterator[tuple[int, int, _Value]]:
    """(field number, wire type, value) of each field of one message: an int or a memoryview."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        value: _Value
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


def _messages(buf: memoryview, numbers: tuple[int, ...]) -> Iterator[tuple[int, memoryview]]:
    """(field number, bytes) of each length-delimited field of one message whose number is in ``numbers``."""
    for number, wire, value in _fields(buf):
        if number in numbers and wire == 2 and isinstance(value, memoryview):
            yield number, value


def _only(buf: memoryview, number: int) -> memoryview | None:
    """The one length-delimited field ``number`` of a message (None when absent); duplicates are refused."""
    found = [value for n, wire, value in _fields(buf) if n == number]
    if len(found) > 1:
        raise _Malformed(f"field {number} appears {len(found)} times")
    if found and not isinstance(found[0], memoryview):
        raise _Malformed(f"field {number} has the wrong wire type")
    value = found[0] if found else None
    return value if isinstance(value, memoryview) else None


_EMPTY = memoryview(b"")


def _text(value: memoryview | None) -> str:
    try:
        return bytes(value if value is not None else b"").decode("utf-8")
    except UnicodeDecodeError:
        raise _Malformed("bad string") from None


def _value_info(buf: memoryview) -> ValueInfo:
    """(name, element type, dims): each dim an int, a symbolic name (str) or None."""
    name = _text(_only(buf, 1))
    tensor = _only(_only(buf, 2) or _EMPTY, 1)
    if tensor is None:
        return name, None, []
    elem = [v for n, w, v in _fields(tensor) if n == 1 and w == 0 and isinstance(v, int)]
    dims = [_dim(d) for _, shape in _messages(tensor, (2,)) for m, _, d in _fields(shape) if m == 1]
    return name, elem[-1] if elem else None, dims


def _dim(buf: _Value) -> Dim:
    if not isinstance(buf, memoryview):
        raise _Malformed("a shape dimension has the wrong wire type")
    for n, w, v in _fields(buf):
        if n == 1 and w == 0 and isinstance(v, int):
            return v
        if n == 2 and w == 2 and isinstance(v, memoryview):
            return _text(v)
    return None


def _tensor_is_external(buf: memoryview) -> bool:
    return any((n == 14 and w == 0 and v == 1) or n == 13 for n, w, v in _fields(buf))


def _sparse_is_external(buf: memoryview) -> bool:
    """A SparseTensorProto whose values (1) or indices (2) live in external data."""
    return any(_tensor_is_external(t) for _, t in _messages(buf, (1, 2)))


def _graph_uses_external_data(graph: memoryview, depth: int = 0) -> bool:
    if depth > _MAX_DEPTH:
        raise _Malformed("subgraphs nested too deeply")
    for n, v in _messages(graph, (1, 5, 15)):
        if n == 5 and _tensor_is_external(v):
            return True
        if n == 15 and _sparse_is_external(v):
            return True
        if n == 1 and _node_uses_external_data(v, depth):
            return True
    return False


def _node_uses_external_data(node: memoryview, depth: int) -> bool:
    for _, attribute in _messages(node, (5,)):
        for m, v in _messages(attribute, (5, 6, 10, 11, 22, 23)):
            if m in (5, 10) and _tensor_is_external(v):
                return True
            if m in (22, 23) and _sparse_is_external(v):
                return True
            if m in (6, 11) and _graph_uses_external_data(v, depth + 1):
                return True
    return False


def onnx_signature(data: bytes) -> tuple[list[ValueInfo], list[ValueInfo], bool]:
    """(inputs, outputs, uses external data) declared by an ONNX model; inputs exclude initializers.

    Raises ValueError for bytes that are not a well-formed ONNX model.
    """
    try:
        model = memoryview(data)
        graph = _only(model, 7)
        if graph is None:
            raise _Malformed("no graph")
        initializers = {_text(_only(v, 8)) for _, v in _messages(graph, (5,))}
        inputs = [_value_info(v) for _, v in _messages(graph, (11,))]
        outputs = [_value_info(v) for _, v in _messages(graph, (12,))]
        external = _graph_uses_external_data(graph) or any(
            _node_uses_external_data(node, 0)
            for _, function in _messages(model, (25,)) for _, node in _messages(function, (7,)))
    except (_Malformed, IndexError, ValueError) as e:
        raise ValueError(f"not a well-formed ONNX model ({e})") from None
    return [i for i in inputs if i[0] not in initializers], outputs, external


def check_graph(name: str, data: bytes, latent_dim: int, n_classes: int, file: Path) -> None:
    """Raises BundleError unless model ``name``'s declared inputs and outputs are what the runtime feeds
    (contract.SIGNATURES) with the manifest's ``latent_dim`` and ``n_classes``, and it is self-contained."""
    try:
        inputs, outputs, external = onnx_signature(data)
    except ValueError as e:
        raise BundleError(f"{file}: {e}") from None
    if external:
        raise BundleError(f"{file}: the model refers to external data files; a bundle's models must be self-contained")
    image, d, c = [1, SIDE, SIDE], latent_dim, n_classes
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
