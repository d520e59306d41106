"""The physical limit: FLOPs per screened image counted from the ONNX graphs, against this machine's matmul speed.

Nothing heavier than numpy is imported at module level (``matmul_gflops`` may run itself in a subprocess).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time

import numpy as np

from benchmarks.latency.common import K_BATCH, K_SINGLE, ROOT, Plan, all_cores, skipped

# onnx ops whose multiply-adds are counted (bias, activations, pooling and element-wise ops are left out), and ops
# that also do multiply-adds but are not counted here: a graph with one of those is refused rather than undercounted.
MAC_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
UNCOUNTED_MAC_OPS = ("Einsum", "ConvInteger", "MatMulInteger", "QLinearConv", "QLinearMatMul", "QGemm")


def count_flops(model_bytes: bytes, batch: int = 1) -> dict[str, int]:
    """FLOPs (2 x multiply-adds) of the Conv/ConvTranspose/Gemm/MatMul nodes of an ONNX model at ``batch``, by op
    type. ValueError when the graph has an op with multiply-adds not counted here, or when shape inference leaves
    a counted node's shapes unknown."""
    import onnx
    from onnx import shape_inference

    model = onnx.load_from_string(model_bytes)
    uncounted = sorted({n.op_type for n in model.graph.node if n.op_type in UNCOUNTED_MAC_OPS})
    if uncounted:
        raise ValueError(f"{', '.join(uncounted)} nodes: their multiply-adds are not counted here")
    for value in model.graph.input:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param or not dim.dim_value:
                dim.dim_value = batch
    model = shape_inference.infer_shapes(model, strict_mode=True)
    graph = model.graph
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in [*graph.input, *graph.value_info, *graph.output]}
    shapes.update({t.name: list(t.dims) for t in graph.initializer})
    flops: dict[str, int] = {}
    for node in graph.node:
        if node.op_type not in MAC_OPS:
            continue
        try:
            a_shape, w_shape, out_shape = shapes[node.input[0]], shapes[node.input[1]], shapes[node.output[0]]
        except KeyError as e:
            raise ValueError(f"{node.op_type} {node.name!r}: shape inference gave no shape for {e}") from None
        if not a_shape or not w_shape or not out_shape or min(a_shape + w_shape + out_shape) < 1:
            raise ValueError(f"{node.op_type} {node.name!r}: shape inference left unknown dimensions")
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Conv":  # W (Cout, Cin/g, kh, kw): each output element is Cin/g*kh*kw MACs
            macs = int(np.prod(out_shape)) * int(np.prod(w_shape[1:]))
        elif node.op_type == "ConvTranspose":  # W (Cin, Cout/g, kh, kw): each input element scatters Cout/g*kh*kw
            macs = int(np.prod(a_shape)) * int(np.prod(w_shape[1:]))
        elif node.op_type == "Gemm":  # A (M, K) or, with transA, (K, M); out (M, N)
            macs = int(np.prod(out_shape)) * (a_shape[0] if attrs.get("transA", 0) else a_shape[-1])
        else:  # MatMul, numpy semantics: each output element is a dot product over A's last axis
            macs = int(np.prod(out_shape)) * a_shape[-1]
        flops[node.op_type] = flops.get(node.op_type, 0) + 2 * macs
    return flops


def matmul_gflops(threads: int, repeats: int, n: int = 512) -> float:
    """numpy float32 n x n matmul GFLOP/s with BLAS limited to ``threads`` (median of ``repeats``)."""
    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    b = np.random.default_rng(1).random((n, n), dtype=np.float32)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # a subprocess with the BLAS thread count fixed by the environment
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": str(threads),
               "MKL_NUM_THREADS": str(threads)}
        code = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); from benchmarks.latency.roofline import "
                f"matmul_gflops; print(matmul_gflops({threads}, {repeats}, {n}))")
        proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        return float(proc.stdout.strip().splitlines()[-1])
    with threadpool_limits(limits=threads):
        for _ in range(3):
            a @ b
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - t0)
    return 2.0 * n**3 / statistics.median(times) / 1e9


def ort_matmul_gflops(repeats: int, n: int = 512) -> float | None:
    """The same matmul through onnxruntime (MLAS, the library the runtime's convolutions use), 1 thread."""
    try:
        import onnxruntime as ort
        from onnx import TensorProto, helper
    except ImportError:
        return None
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "mm",
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, [n, n]) for x in "ab"],
                              [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = 1, 1
    session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    feed = {"a": np.random.default_rng(0).random((n, n), dtype=np.float32),
            "b": np.random.default_rng(1).random((n, n), dtype=np.float32)}
    for _ in range(3):
        session.run(None, feed)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - t0)
    return 2.0 * n**3 / statistics.median(times) / 1e9


def section_roofline(args, plan: Plan, result: dict) -> dict:
    """FLOPs per pass and per screened image, matmul GFLOP/s, and what share of it the measured ``single`` and
    ``throughput`` sections of ``result`` reach."""
    from edgeguard.bundle import load_bundle

    try:
        import onnx  # noqa: F401 - count_flops needs it
    except ImportError:
        return skipped("the onnx package is not installed (pip install onnx): FLOPs not counted")
    bundle = load_bundle(args.bundle)
    per_model = {}
    for name, data in bundle.models.items():
        try:
            per_model[name] = count_flops(data)
        except Exception as e:  # an op or a graph this counter does not handle: say so rather than guess
            return skipped(f"FLOPs of the {name} graph not counted: {type(e).__name__}: {e}")
    per_pass = {name: sum(f.values()) for name, f in per_model.items()}

    def per_image(k):
        return per_pass["encoder"] + k * per_pass["decoder"] + (k + 1) * per_pass["classifier"]

    gflops_1t = matmul_gflops(1, plan.matmul_repeats)
    gflops_all = matmul_gflops(all_cores(), plan.matmul_repeats)
    ort_1t = ort_matmul_gflops(plan.matmul_repeats)
    flops10 = per_image(K_BATCH)
    out = {"skipped": False, "reason": None,
           "flops_per_pass": per_pass, "flops_by_op": per_model,
           "flops_per_image": {f"k{k}": per_image(k) for k in K_SINGLE},
           "counted": "2 x multiply-adds of Conv/ConvTranspose/Gemm/MatMul (onnx shape inference, batch 1); "
                      "encoder once, decoder K times, classifier K+1 times",
           "matmul_gflops_1t": gflops_1t, "matmul_gflops_all": gflops_all, "ort_matmul_gflops_1t": ort_1t,
           "floor_ms_k10": flops10 / (gflops_1t * 1e9) * 1e3}
    single = {r["k"]: r for r in result.get("single", {}).get("rows", [])}
    if K_BATCH in single:
        achieved = flops10 / (single[K_BATCH]["p50_ms"] / 1e3) / 1e9
        out["achieved_gflops_batch1"] = achieved
        out["fraction_batch1"] = achieved / gflops_1t
    for row in result.get("throughput", {}).get("rows", []):
        if row["threads"] == 1 and row["batch"] == 256:
            achieved = flops10 * row["images_per_s"] / 1e9
            out["achieved_gflops_batch256"] = achieved
            out["fraction_batch256"] = achieved / gflops_1t
    return out
