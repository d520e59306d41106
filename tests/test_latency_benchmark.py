"""benchmarks/latency.py: the --quick --json run has every field, its pieces compute what they claim.

No timing assertions: speed is judged by reading the benchmark's output, not by tests.
"""

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from benchmarks import latency as L
from edgeguard import kernels as K
from edgeguard import kernels_numpy as KN
from edgeguard.guard import as_batch

ROOT = Path(__file__).resolve().parents[1]
STATUSES = {"PASS", "MISS", "SKIP"}


def run_benchmark(*args, env=None, timeout=900):
    proc = subprocess.run([sys.executable, "-m", "benchmarks.latency", *args], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """One real `--quick --json` run (about 30 s) with the markdown and docs outputs, shared by the tests."""
    out = tmp_path_factory.mktemp("latency")
    proc = run_benchmark("--quick", "--json", "--out", str(out / "latency.md"), "--docs", str(out / "performance.md"))
    return SimpleNamespace(result=json.loads(proc.stdout), md=(out / "latency.md").read_text(),
                           docs=(out / "performance.md").read_text(), stderr=proc.stderr)


def positive(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool) and x > 0 and np.isfinite(x)


@pytest.mark.slow
def test_quick_json_has_every_section(quick):
    r = quick.result
    assert set(L.SECTIONS) | {"schema", "command", "created", "quick", "machine", "bundle", "targets",
                              "elapsed_s"} <= set(r)
    assert r["schema"] == L.SCHEMA and r["quick"] is True
    m = r["machine"]
    assert m["cpu"] and m["cores"] >= 1
    assert {"python", "numpy", "onnxruntime", "numba"} <= {k for k, v in m["versions"].items() if v}
    assert set(r["bundle"]["sha256"]) == {"encoder", "decoder", "classifier"}
    for name in L.SECTIONS:  # everything was selected: nothing is skipped for want of selection
        assert "not selected" not in str(r[name].get("reason"))


@pytest.mark.slow
def test_quick_latency_throughput_and_cold_start(quick):
    r = quick.result
    rows = r["single"]["rows"]
    assert [row["k"] for row in rows] == list(L.K_SINGLE)
    for row in rows:
        assert row["calls"] == L.QUICK.single_calls
        assert all(positive(row[f]) for f in ("p50_ms", "p95_ms", "p99_ms", "mean_ms"))
        assert row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"]
    got = {(row["batch"], row["threads"]) for row in r["throughput"]["rows"]}
    assert got == {(b, t) for b in L.QUICK.batches for t in (1, L.all_cores())}
    assert all(positive(row["images_per_s"]) and row["k"] == L.K_BATCH for row in r["throughput"]["rows"])
    cold = r["cold_start"]
    assert cold["command"].endswith("detect one.png")
    assert cold["numba_command"].endswith("detect --kernels numba one.png")
    for key in ("plain_s", "numba_warm_cache_s"):
        assert positive(cold[key]["median"]) and len(cold[key]["runs"]) == L.QUICK.cold_warm_runs
    assert cold["numba_empty_cache_s"]["median"] is None and cold["numba_empty_cache_s"]["note"]  # no compile in --quick
    phases = cold["phases_ms"]
    assert "error" not in phases, phases
    assert phases["numba imported"] is False, "the plain `edgeguard detect one.png` path imported numba"
    assert positive(phases["total"]) and positive(phases["Guard.load, numpy kernels (bundle sha256, sessions)"])
    assert positive(phases["+ import numba (numba backend only)"])
    assert positive(phases["+ import edgeguard.kernels (numba cache load)"])


@pytest.mark.slow
def test_quick_stages_and_kernels(quick):
    r = quick.result
    (row,) = r["stages"]["rows"]
    assert list(row["ms"]) == list(L.STAGES) and all(positive(v) for v in row["ms"].values())
    assert row["matches_guard"] is True, "the staged copy of Guard.screen drifted from Guard.screen"
    assert abs(sum(row["share"].values()) - 1.0) < 1e-9
    kernels = {k["kernel"] for k in r["kernels"]["rows"]}
    assert kernels == {"image_seeds", "sample_latents", "softmax", "vote", "input_agreement", "recon_errors",
                       "kl_divergence", "posterior_spread", "score"}
    assert all(positive(k["numba_us"]) and positive(k["vectorised_us"]) for k in r["kernels"]["rows"])
    parity = r["kernels"]["numpy_pipeline_parity"]  # Guard.load(kernels="numpy") against the numba Guard
    assert parity["same_verdicts"] and parity["same_labels"]


@pytest.mark.slow
def test_quick_reference_roofline_targets(quick):
    r = quick.result
    ref = r["reference"]
    if ref["skipped"]:
        assert ref["reason"]
    else:
        (row,) = ref["rows"]
        assert row["batch"] == 1 and row["threads"] == 1
        assert all(positive(row[f]) for f in ("runtime_ms", "torch_ms", "numpy_post_ms", "speedup_vs_torch",
                                               "speedup_vs_numpy_post"))
        assert set(ref["parity"]) == {"max_abs_mu_difference", "input_label_agreement", "same_weights"}
        if ref["lean_vs_runtime"] is not None:  # the all-savings prototype gives the runtime's verdicts
            assert ref["lean_vs_runtime"]["same_verdicts"] and positive(row["lean_speedup_vs_torch"])
        widths = ref["classifier_widths"]
        if widths["skipped"]:
            assert widths["reason"]
        else:
            assert [w["keep"] for w in widths["rows"]] == list(L.CLASSIFIER_KEEP)
            assert all(positive(w[f]) for w in widths["rows"] for f in ("runtime_ms", "torch_ms", "speedup_vs_torch"))
    rf = r["roofline"]
    if rf["skipped"]:
        assert rf["reason"]
    else:
        assert rf["flops_per_image"]["k10"] == (rf["flops_per_pass"]["encoder"] + 10 * rf["flops_per_pass"]["decoder"]
                                                + 11 * rf["flops_per_pass"]["classifier"])
        assert positive(rf["matmul_gflops_1t"]) and positive(rf["floor_ms_k10"]) and positive(rf["fraction_batch1"])
    targets = {t["key"]: t for t in r["targets"]}
    assert set(targets) == {key for key, *_ in L.TARGETS}
    for t in targets.values():
        assert t["status"] in STATUSES
        assert (t["status"] == "SKIP") == (t["measured"] is None)
    assert targets["p50_k10_ms"]["status"] != "SKIP" and targets["cold_start_warm_s"]["status"] != "SKIP"
    assert targets["p50_k10_ms"]["measured"] == r["single"]["rows"][1]["p50_ms"]
    assert targets["cold_start_warm_s"]["measured"] == r["cold_start"]["plain_s"]["median"]  # the plain command
    protos = r["prototypes"]
    assert {"fused_graphs", "unchecked_kernels", "optimization_level", "slim_classifier", "k_sweep", "encoder_call",
            "cold_start"} <= set(protos)
    assert set(protos["k_sweep"]["ms"]) == {"1", "2", "4", "6", "8", "10"}
    assert all(v is True for v in protos["fused_graphs"]["rows"][0]["same_verdicts"].values())
    assert protos["unchecked_kernels"]["rows"][0]["same_verdicts"] is True
    assert set(protos["cold_start"]["median_s"]) == {"current", "gc_frozen"}
    assert all(positive(v) for v in protos["cold_start"]["median_s"].values())


@pytest.mark.slow
def test_quick_markdown_and_docs(quick):
    r = quick.result
    for text in (quick.md, quick.docs):
        assert r["machine"]["cpu"] in text
        assert "python -m benchmarks.latency" in text
        for t in r["targets"]:
            assert t["target"] in text
    assert "## Stages, batch 1" in quick.md and "## Kernels" in quick.md
    assert "## Cold start in a fresh process" in quick.md
    assert quick.docs.startswith("## Performance")
    cold = r["cold_start"]
    assert f"`{cold['command']}`" in quick.docs and f"`{cold['numba_command']}`" in quick.docs


def test_reference_skipped_without_torch(tmp_path):
    """A runtime-only install (torch absent) still runs, and says why the reference was skipped."""
    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "__init__.py").write_text("raise ImportError('torch hidden by the test')\n")
    proc = run_benchmark("--quick", "--json", "--sections", "reference",
                         env={"PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])})
    r = json.loads(proc.stdout)
    assert r["reference"]["skipped"] is True
    assert "torch is not installed" in r["reference"]["reason"]
    assert r["single"]["skipped"] and "not selected" in r["single"]["reason"]
    assert {t["status"] for t in r["targets"]} == {"SKIP"}


def test_reference_skipped_without_checkpoints(tmp_path):
    args = SimpleNamespace(run=str(tmp_path / "no-run"), bundle=None)
    out = L.section_reference(args, L.QUICK)
    assert out["skipped"] is True
    assert "no PyTorch checkpoints" in out["reason"] or "torch is not installed" in out["reason"]


def test_bad_section_is_refused():
    proc = subprocess.run([sys.executable, "-m", "benchmarks.latency", "--sections", "single,warp"], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "warp" in proc.stderr


def test_count_flops_by_hand():
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    def weight(name, *shape):
        return numpy_helper.from_array(np.zeros(shape, np.float32), name)

    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),  # (N,4,6,6): 4*36 outputs x 2*3*3
        helper.make_node("ConvTranspose", ["c1", "w2"], ["c2"], strides=[2, 2], pads=[1, 1, 1, 1]),  # 4*36 in x 3*4*4
        helper.make_node("Flatten", ["c2"], ["f"]),  # (N, 3*12*12)
        helper.make_node("Gemm", ["f", "w3"], ["g"], transB=1),  # 432 -> 5
        helper.make_node("MatMul", ["g", "w4"], ["y"]),  # 5 -> 7
    ]
    graph = helper.make_graph(nodes, "t", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 2, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 7])],
                              initializer=[weight("w1", 4, 2, 3, 3), weight("w2", 4, 3, 4, 4),
                                           weight("w3", 5, 432), weight("w4", 5, 7)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    flops = L.count_flops(model.SerializeToString(), batch=3)
    assert flops == {"Conv": 2 * 3 * (4 * 36) * (2 * 9), "ConvTranspose": 2 * 3 * (4 * 36) * (3 * 16),
                     "Gemm": 2 * 3 * 5 * 432, "MatMul": 2 * 3 * 7 * 5}


def test_shipped_bundle_flops_match_what_onnxruntime_computes():
    """count_flops (onnx shape inference) against the shapes onnxruntime really produces, node by node, whatever
    layers the bundle has: every counted node's input and output are made graph outputs and read back."""
    onnx = pytest.importorskip("onnx")
    import onnxruntime as ort
    from onnx import helper, numpy_helper

    from edgeguard.bundle import load_bundle

    bundle = load_bundle(None)
    for name, data in bundle.models.items():
        model = onnx.load_from_string(data)
        weights = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        nodes = [n for n in model.graph.node if n.op_type in L.MAC_OPS]
        assert nodes, f"{name}: no Conv/ConvTranspose/Gemm/MatMul node"
        outputs = {o.name for o in model.graph.output}
        for tensor in {t for n in nodes for t in (n.input[0], n.output[0])} - outputs:
            model.graph.output.append(helper.ValueInfoProto(name=tensor))
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        shape = (1, bundle.latent_dim) if name == "decoder" else (1, 1, 28, 28)
        values = dict(zip([o.name for o in session.get_outputs()],
                          session.run(None, {model.graph.input[0].name: np.zeros(shape, np.float32)})))
        want: dict[str, int] = {}
        for n in nodes:
            a, y, w = values[n.input[0]], values[n.output[0]], weights[n.input[1]]
            trans_a = any(attr.name == "transA" and attr.i for attr in n.attribute)
            macs = {"Conv": y.size * w[0].size, "ConvTranspose": a.size * w[0].size,
                    "Gemm": y.size * (a.shape[0] if trans_a else a.shape[-1]), "MatMul": y.size * a.shape[-1]}
            want[n.op_type] = want.get(n.op_type, 0) + 2 * macs[n.op_type]
        assert L.count_flops(data) == want, name


# Graphs of other architectures, made by hand (no torch): an MLP decoder (two Gemm + Sigmoid + Reshape, no
# ConvTranspose) and a classifier of strided convolutions without pooling (one BatchNormalization left unfused).


def _weights(rng, **shapes):
    from onnx import numpy_helper

    return [numpy_helper.from_array((0.1 * rng.normal(size=s)).astype(np.float32), name) for name, s in shapes.items()]


def mlp_decoder(d: int, hidden: int = 48, seed: int = 0) -> bytes:
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes = [helper.make_node("Gemm", ["z", "w1", "b1"], ["h"], transB=1), helper.make_node("Relu", ["h"], ["a"]),
             helper.make_node("Gemm", ["a", "w2", "b2"], ["o"], transB=1), helper.make_node("Sigmoid", ["o"], ["s"]),
             helper.make_node("Reshape", ["s", "shape"], ["recon"])]
    inits = [*_weights(rng, w1=(hidden, d), b1=(hidden,), w2=(784, hidden), b2=(784,)),
             numpy_helper.from_array(np.array([-1, 1, 28, 28], np.int64), "shape")]
    graph = helper.make_graph(nodes, "mlp_decoder", [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["n", d])],
                              [helper.make_tensor_value_info("recon", TensorProto.FLOAT, ["n", 1, 28, 28])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def strided_classifier(w: int = 8, group: int = 1, seed: int = 0) -> bytes:
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes = [helper.make_node("Conv", ["image", "c1", "c1b"], ["x1"], strides=[2, 2], pads=[2, 2, 2, 2]),  # 14x14
             helper.make_node("BatchNormalization", ["x1", "bn_s", "bn_b", "bn_m", "bn_v"], ["n1"]),
             helper.make_node("Relu", ["n1"], ["r1"]),
             helper.make_node("Conv", ["r1", "c2", "c2b"], ["x2"], strides=[2, 2], pads=[1, 1, 1, 1], group=group),
             helper.make_node("Relu", ["x2"], ["r2"]),  # 7x7
             helper.make_node("Conv", ["r2", "c3", "c3b"], ["x3"]), helper.make_node("Relu", ["x3"], ["r3"]),  # 5x5
             helper.make_node("Flatten", ["r3"], ["f"]), helper.make_node("Gemm", ["f", "fc", "fcb"], ["logits"], transB=1)]
    variance = numpy_helper.from_array(rng.uniform(0.5, 2.0, size=w).astype(np.float32), "bn_v")
    inits = [*_weights(rng, c1=(w, 1, 5, 5), c1b=(w,), bn_s=(w,), bn_b=(w,), bn_m=(w,), c2=(2 * w, w // group, 3, 3),
                       c2b=(2 * w,), c3=(4 * w, 2 * w, 3, 3), c3b=(4 * w,), fc=(10, 4 * w * 25), fcb=(10,)), variance]
    graph = helper.make_graph(nodes, "strided_classifier",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["n", 1, 28, 28])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 10])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def test_graph_builders_handle_other_architectures():
    pytest.importorskip("onnx")
    import onnxruntime as ort

    from edgeguard.bundle import load_bundle

    def session(data):
        return ort.InferenceSession(data, providers=["CPUExecutionProvider"])

    bundle = load_bundle(None)
    d, k, w = bundle.latent_dim, 3, 8
    models = {"encoder": bundle.models["encoder"], "decoder": mlp_decoder(d), "classifier": strided_classifier(w)}
    assert L.count_flops(models["decoder"], batch=2) == {"Gemm": 2 * 2 * (48 * d + 784 * 48)}
    conv_macs = w * 14 * 14 * 25 + 2 * w * 7 * 7 * w * 9 + 4 * w * 5 * 5 * 2 * w * 9
    assert L.count_flops(models["classifier"]) == {"Conv": 2 * conv_macs, "Gemm": 2 * 10 * 4 * w * 25}

    x = as_batch(L.synthetic_digits(2, seed=3)).reshape(-1, 1, 28, 28)
    eps = np.random.default_rng(0).normal(size=(2, k, d)).astype(np.float32)
    mu, logvar = session(models["encoder"]).run(None, {"image": x})
    z = (mu[:, None] + np.exp(0.5 * logvar[:, None]) * eps).reshape(-1, d)
    (recon,) = session(models["decoder"]).run(None, {"z": z})
    (logits,) = session(models["classifier"]).run(None, {"image": np.concatenate([x, recon])})
    got_recon, got_logits = session(L.build_fused_decoder_classifier(models)).run(None, {"z": z, "image": x})
    np.testing.assert_allclose(got_recon, recon, atol=1e-6)
    np.testing.assert_allclose(got_logits, logits, rtol=1e-5, atol=1e-5)
    *_, all_recon, all_logits = session(L.build_fused_all(models, k, d, split_encoder=True)).run(
        None, {"image": x, "eps": eps})
    np.testing.assert_allclose(all_recon, recon, atol=1e-5)
    np.testing.assert_allclose(all_logits, logits, rtol=1e-4, atol=1e-4)

    slim = L.build_slim_classifier(models["classifier"], 0.5)  # every hidden layer (and the BatchNorm) halved
    (slim_logits,) = session(slim).run(None, {"image": x})
    assert slim_logits.shape == (2, 10)
    half = w // 2
    slim_macs = half * 14 * 14 * 25 + w * 7 * 7 * half * 9 + 2 * w * 5 * 5 * w * 9
    assert L.count_flops(slim) == {"Conv": 2 * slim_macs, "Gemm": 2 * 10 * 2 * w * 25}


def test_graph_walkers_refuse_what_they_cannot_handle():
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    from edgeguard.bundle import load_bundle

    with pytest.raises(ValueError, match="grouped"):
        L.build_slim_classifier(strided_classifier(group=2), 0.5)
    with pytest.raises(ValueError, match="no hidden layer"):
        L.build_slim_classifier(_one_layer(), 0.5)
    d = load_bundle(None).latent_dim
    with pytest.raises(ValueError, match="not a Slice or Split"):  # mu and logvar from two heads: nothing to split
        L.build_split_encoder(_two_head_encoder(d), d)
    einsum = helper.make_graph([helper.make_node("Einsum", ["x", "x"], ["y"], equation="ij,ij->i")], "e",
                               [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
                               [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n"])])
    with pytest.raises(ValueError, match="Einsum"):
        L.count_flops(helper.make_model(einsum, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())


def _one_layer() -> bytes:
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Flatten", ["image"], ["f"]),
                               helper.make_node("Gemm", ["f", "w"], ["logits"], transB=1)], "linear",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["n", 1, 28, 28])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 10])],
                              _weights(np.random.default_rng(0), w=(10, 784)))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def _two_head_encoder(d: int) -> bytes:
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Flatten", ["image"], ["f"]), helper.make_node("Gemm", ["f", "wm"], ["mu"], transB=1),
             helper.make_node("Gemm", ["f", "wl"], ["logvar"], transB=1)]
    graph = helper.make_graph(nodes, "two_heads",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["n", 1, 28, 28])],
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, ["n", d]) for o in ("mu", "logvar")],
                              _weights(np.random.default_rng(0), wm=(d, 784), wl=(d, 784)))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


@pytest.mark.slow
def test_prototypes_report_skipped_instead_of_crashing(monkeypatch):
    """A graph the builders cannot handle: the prototypes that need it say why; the others still run."""
    pytest.importorskip("onnx")
    from edgeguard.guard import Guard

    def refuse(*args, **kwargs):
        raise ValueError("no such layers here")

    for name in ("build_fused_decoder_classifier", "build_fused_all", "build_slim_classifier"):
        monkeypatch.setattr(L, name, refuse)
    assert L.lean_variant(Guard.load(None, providers="cpu", k=10)) is None
    out = L.section_prototypes(SimpleNamespace(bundle=None), L.QUICK)
    for name in ("fused_graphs", "slim_classifier"):
        assert out[name] == {"skipped": True, "reason": "ValueError: no such layers here"}
    assert out["optimization_level"]["rows"] and set(out["k_sweep"]["ms"]) == {"1", "2", "4", "6", "8", "10"}


def test_vote_ties_numpy_and_torch_twins_follow_the_kernel():
    # 4 samples: labels 2, 5, 2, 5 (a 2-2 tie); class 5 has the larger summed probability -> majority 5
    probs = np.full((1, 4, 10), 0.01, np.float32)
    for j, (lab, p) in enumerate([(2, 0.6), (5, 0.9), (2, 0.6), (5, 0.9)]):
        probs[0, j, lab] = p
    want = K.vote(probs)
    assert want[1][0] == 5
    for got, w in zip(KN.vote(probs), want):
        np.testing.assert_allclose(got, w, rtol=1e-6)
    torch = pytest.importorskip("torch")
    from benchmarks.reference import vote

    for got, w in zip(vote(torch.from_numpy(probs)), want):
        np.testing.assert_allclose(got.numpy(), w, rtol=1e-6)


def test_torch_reference_matches_exported_onnx(tmp_path):
    """The reference runs the very networks the runtime runs: same mu and input labels after an ONNX export."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    import onnxruntime as ort

    from benchmarks.reference import TorchReference
    from export.onnx_export import export_models
    from train.models import VAE, Classifier

    torch.manual_seed(0)
    vae, clf = VAE().eval(), Classifier().eval()
    paths = export_models(vae, clf, tmp_path)
    reference = TorchReference(vae, clf, k=4)
    images = L.synthetic_digits(6, seed=0)
    out = reference.screen(reference.to_tensor(images))
    x = as_batch(images).reshape(-1, 1, 28, 28)
    mu, _ = ort.InferenceSession(str(paths["encoder"]), providers=["CPUExecutionProvider"]).run(None, {"image": x})
    (logits,) = ort.InferenceSession(str(paths["classifier"]), providers=["CPUExecutionProvider"]).run(
        None, {"image": x})
    np.testing.assert_allclose(out["mu"].numpy(), mu, atol=1e-4)
    np.testing.assert_array_equal(out["label"].numpy(), logits.argmax(axis=1))
    assert out["labels"].shape == (6, 4) and out["recon_mse"].shape == (6,)


def test_fused_graphs_compute_what_the_three_sessions_compute():
    pytest.importorskip("onnx")
    import onnxruntime as ort

    from edgeguard.guard import Guard

    guard = Guard.load(None, providers="cpu", k=10)
    models = guard.bundle.models
    pair = ort.InferenceSession(L.build_fused_decoder_classifier(models), providers=["CPUExecutionProvider"])
    whole = ort.InferenceSession(L.build_fused_all(models, 10, guard.bundle.latent_dim),
                                 providers=["CPUExecutionProvider"])
    images = L.synthetic_digits(4, seed=1)
    want = guard.analyze(images)
    for fused, all_in_one in ((pair, False), (whole, True)):
        label, confidence, labels, majority, n_distinct, agreement, signals = L.fused_signals(
            guard, fused, images, all_in_one=all_in_one)
        np.testing.assert_array_equal(labels, want.labels)
        for name, values in signals.items():
            np.testing.assert_allclose(values, want.signals[name], rtol=1e-4, atol=1e-6)


def test_lean_pieces_compute_what_the_runtime_computes():
    pytest.importorskip("onnx")
    import onnxruntime as ort

    from edgeguard.guard import Guard

    guard = Guard.load(None, providers="cpu", k=10)
    images = L.synthetic_digits(16, seed=2)
    d = guard.bundle.latent_dim
    split = ort.InferenceSession(L.build_split_encoder(guard.bundle.models["encoder"], d),
                                 providers=["CPUExecutionProvider"])
    x = as_batch(images).reshape(-1, 1, 28, 28)
    for got, want in zip(split.run(None, {"image": x}), guard._sessions["encoder"].run(None, {"image": x})):
        np.testing.assert_array_equal(got, want)
    lean = L.lean_variant(guard)
    agreement = L.verdict_agreement(lean(images), guard.screen(images))
    assert agreement["same_verdicts"] and agreement["same_labels"]
    assert agreement["max_abs_score_difference"] < 1e-4  # z in float32 inside the graph, not float64 in numba
