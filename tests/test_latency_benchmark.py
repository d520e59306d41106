"""benchmarks/latency/: the --quick --json run has every field, its pieces compute what they claim.

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

from benchmarks.latency import common as C
from benchmarks.latency import measure, roofline
from edgeguard import kernels as K
from edgeguard import kernels_numpy as KN
from edgeguard.contract import PARITY_TOLERANCE
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
    assert set(C.SECTIONS) | {"schema", "command", "created", "quick", "machine", "bundle", "targets",
                              "elapsed_s"} <= set(r)
    assert r["schema"] == C.SCHEMA and r["quick"] is True
    m = r["machine"]
    assert m["cpu"] and m["cores"] >= 1
    assert {"python", "numpy", "onnxruntime", "numba"} <= {k for k, v in m["versions"].items() if v}
    assert set(r["bundle"]["sha256"]) == {"encoder", "decoder", "classifier"}
    for name in C.SECTIONS:  # everything was selected: nothing is skipped for want of selection
        assert "not selected" not in str(r[name].get("reason"))
    assert "prototypes" not in r and "classifier_widths" not in r["reference"]


@pytest.mark.slow
def test_quick_latency_throughput_and_cold_start(quick):
    r = quick.result
    rows = r["single"]["rows"]
    assert [row["k"] for row in rows] == list(C.K_SINGLE)
    for row in rows:
        assert row["calls"] == C.QUICK.single_calls
        assert all(positive(row[f]) for f in ("p50_ms", "p95_ms", "p99_ms", "mean_ms"))
        assert row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"]
    got = {(row["batch"], row["threads"]) for row in r["throughput"]["rows"]}
    assert got == {(b, t) for b in C.QUICK.batches for t in (1, C.all_cores())}
    assert all(positive(row["images_per_s"]) and row["k"] == C.K_BATCH for row in r["throughput"]["rows"])
    cold = r["cold_start"]
    assert cold["command"].endswith("detect one.png")
    assert cold["numba_command"].endswith("detect --kernels numba one.png")
    for key in ("plain_s", "numba_warm_cache_s"):
        assert positive(cold[key]["median"]) and len(cold[key]["runs"]) == C.QUICK.cold_warm_runs
    empty = cold["numba_empty_cache_s"]
    assert empty["median"] is None and empty["note"]  # no compile in --quick
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
    assert list(row["ms"]) == list(C.STAGES) and all(positive(v) for v in row["ms"].values())
    assert row["matches_guard"] is True, "the staged copy of Guard.screen drifted from Guard.screen"
    assert abs(sum(row["share"].values()) - 1.0) < 1e-9
    assert [k["kernel"] for k in r["kernels"]["rows"]] == list(measure.KERNELS)
    assert all(positive(k["numba_us"]) and positive(k["vectorised_us"]) for k in r["kernels"]["rows"])
    parity = r["kernels"]["numpy_pipeline_parity"]  # Guard.load(kernels="numpy") against the numba Guard
    assert parity["same_verdicts"] and parity["same_labels"]


@pytest.mark.slow
def test_quick_reference_roofline_targets(quick):
    """The PyTorch reference runs on a fresh clone: its weights come from the shipped ONNX files, not checkpoints."""
    r = quick.result
    ref = r["reference"]
    if r["machine"]["versions"]["torch"] is None or r["machine"]["versions"]["onnx"] is None:
        assert ref["skipped"] and "is not installed" in ref["reason"]
    else:
        assert ref["skipped"] is False, ref["reason"]
        assert [(row["batch"], row["threads"]) for row in ref["rows"]] == [(b, 1) for b in C.QUICK.ref_batches]
        for row in ref["rows"]:
            assert all(positive(row[f]) for f in ("runtime_ms", "torch_ms", "numpy_post_ms", "speedup_vs_torch",
                                                   "speedup_vs_numpy_post"))
        parity = ref["parity"]
        assert parity["same_weights"] is True and parity["input_label_agreement"] == 1.0
        assert parity["max_abs_mu_difference"] <= parity["tolerance"] == PARITY_TOLERANCE
        assert set(parity["onnx_max_abs_difference"]) == {"encoder", "decoder", "classifier"}
        assert max(parity["onnx_max_abs_difference"].values()) <= PARITY_TOLERANCE
        assert parity["onnx_parity_images"] >= 256
        assert "ONNX" in ref["weights"]
        targets = {t["key"]: t for t in r["targets"]}
        rows = {row["batch"]: row for row in ref["rows"]}
        assert targets["speedup_torch_b1"]["measured"] == rows[1]["speedup_vs_torch"]
        assert targets["speedup_torch_b256"]["measured"] == rows[256]["speedup_vs_torch"]
        assert "PyTorch reference: skipped" not in quick.docs and "batch 256: " in quick.docs
    rf = r["roofline"]
    if rf["skipped"]:
        assert rf["reason"]
    else:
        assert rf["flops_per_image"]["k10"] == (rf["flops_per_pass"]["encoder"] + 10 * rf["flops_per_pass"]["decoder"]
                                                + 11 * rf["flops_per_pass"]["classifier"])
        assert positive(rf["matmul_gflops_1t"]) and positive(rf["floor_ms_k10"]) and positive(rf["fraction_batch1"])
    targets = {t["key"]: t for t in r["targets"]}
    assert set(targets) == {key for key, *_ in C.TARGETS}
    for t in targets.values():
        assert t["status"] in STATUSES
        assert (t["status"] == "SKIP") == (t["measured"] is None)
    assert targets["p50_k10_ms"]["status"] != "SKIP" and targets["cold_start_warm_s"]["status"] != "SKIP"
    assert targets["p50_k10_ms"]["measured"] == r["single"]["rows"][1]["p50_ms"]
    assert targets["cold_start_warm_s"]["measured"] == r["cold_start"]["plain_s"]["median"]  # the plain command


@pytest.mark.slow
def test_quick_ray_section(quick):
    """One process against Ray with 2 actors on the same digits: every row comes back, the rates are measured."""
    ry = quick.result["ray"]
    if ry.get("skipped"):
        assert "not installed" in ry["reason"]
        return
    assert ry["actors"] == 2 and ry["rows_back"] == ry["images"] == 2000
    assert all(positive(ry[f]) for f in ("guard_screen_images_per_s", "one_process_images_per_s",
                                         "ray_images_per_s", "ray_steady_images_per_s"))
    assert ry["ray_images_per_s"] * ry["ray_wall_s"] == pytest.approx(ry["images"])
    assert "Ray Data: 2,000 images" in quick.md


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


def test_latency_benchmark_imports_nothing_from_tests():
    """benchmarks/ runs without the test suite: no module of the latency benchmark imports tests/."""
    import ast

    for path in [*(ROOT / "benchmarks" / "latency").glob("*.py"), ROOT / "benchmarks" / "reference.py"]:
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(n == "tests" or n.startswith("tests.") for n in names), path


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
    flops = roofline.count_flops(model.SerializeToString(), batch=3)
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
        nodes = [n for n in model.graph.node if n.op_type in roofline.MAC_OPS]
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
        assert roofline.count_flops(data) == want, name


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


def strided_classifier(w: int = 8, seed: int = 0) -> bytes:
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes = [helper.make_node("Conv", ["image", "c1", "c1b"], ["x1"], strides=[2, 2], pads=[2, 2, 2, 2]),  # 14x14
             helper.make_node("BatchNormalization", ["x1", "bn_s", "bn_b", "bn_m", "bn_v"], ["n1"]),
             helper.make_node("Relu", ["n1"], ["r1"]),
             helper.make_node("Conv", ["r1", "c2", "c2b"], ["x2"], strides=[2, 2], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["x2"], ["r2"]),  # 7x7
             helper.make_node("Conv", ["r2", "c3", "c3b"], ["x3"]), helper.make_node("Relu", ["x3"], ["r3"]),  # 5x5
             helper.make_node("Flatten", ["r3"], ["f"]),
             helper.make_node("Gemm", ["f", "fc", "fcb"], ["logits"], transB=1)]
    variance = numpy_helper.from_array(rng.uniform(0.5, 2.0, size=w).astype(np.float32), "bn_v")
    inits = [*_weights(rng, c1=(w, 1, 5, 5), c1b=(w,), bn_s=(w,), bn_b=(w,), bn_m=(w,), c2=(2 * w, w, 3, 3),
                       c2b=(2 * w,), c3=(4 * w, 2 * w, 3, 3), c3b=(4 * w,), fc=(10, 4 * w * 25), fcb=(10,)), variance]
    graph = helper.make_graph(nodes, "strided_classifier",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["n", 1, 28, 28])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 10])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def test_count_flops_handles_other_architectures():
    pytest.importorskip("onnx")
    import onnxruntime as ort

    d, w = 16, 8
    decoder, classifier = mlp_decoder(d), strided_classifier(w)
    assert roofline.count_flops(decoder, batch=2) == {"Gemm": 2 * 2 * (48 * d + 784 * 48)}
    conv_macs = w * 14 * 14 * 25 + 2 * w * 7 * 7 * w * 9 + 4 * w * 5 * 5 * 2 * w * 9
    assert roofline.count_flops(classifier) == {"Conv": 2 * conv_macs, "Gemm": 2 * 10 * 4 * w * 25}
    for data, feed in ((decoder, {"z": np.zeros((2, d), np.float32)}),  # graphs onnxruntime runs, not just counts
                       (classifier, {"image": np.zeros((2, 1, 28, 28), np.float32)})):
        (out,) = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, feed)
        assert out.shape[0] == 2


def test_count_flops_refuses_what_it_does_not_count():
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    einsum = helper.make_graph([helper.make_node("Einsum", ["x", "x"], ["y"], equation="ij,ij->i")], "e",
                               [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
                               [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n"])])
    with pytest.raises(ValueError, match="Einsum"):
        roofline.count_flops(helper.make_model(einsum, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())


def test_kernel_arguments_run_on_both_backends():
    """The kernels section feeds each backend the arrays Guard passes: both accept them and agree."""
    from edgeguard.bundle import load_bundle
    from edgeguard.calibration import Calibration

    calibration = Calibration.from_manifest(load_bundle(None).calibration)
    for name, args in measure.kernel_arguments(3, C.K_BATCH, calibration).items():
        fast, vec = getattr(K, name)(*args), getattr(KN, name)(*args)
        for got, want in zip(fast if isinstance(fast, tuple) else (fast,), vec if isinstance(vec, tuple) else (vec,)):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=name)


def test_vote_ties_numpy_and_torch_twins_follow_the_kernel():
    # 4 samples: labels 2, 5, 2, 5 (a 2-2 tie); class 5 has the larger summed probability -> majority 5
    probs = np.full((1, 4, 10), 0.01, np.float32)
    for j, (lab, p) in enumerate([(2, 0.6), (5, 0.9), (2, 0.6), (5, 0.9)]):
        probs[0, j, lab] = p
    probs /= probs.sum(axis=2, keepdims=True)
    # kernels.score votes over the softmax of the reconstructions' logits: log-probabilities give these back
    x, mu = np.zeros((1, 784), np.float32), np.zeros((1, 16), np.float32)
    logits = np.log(np.concatenate([probs[0, :1], probs[0]])).astype(np.float32)  # the input's row, then the 4
    recon = np.zeros((4, 784), np.float32)
    _, _, labels, majority, n_distinct, agreement, scores = K.score(x, logits, recon, mu, mu, 4)
    entropy = scores[:, K.SCORE_NAMES.index("vote_entropy")]
    want = (labels, majority, n_distinct, agreement, entropy)
    assert majority[0] == 5
    *_, np_labels, np_majority, np_distinct, np_agreement, np_scores = KN.score(x, logits, recon, mu, mu, 4)
    np_entropy = np_scores[:, KN.SCORE_NAMES.index("vote_entropy")]
    for got, w in zip((np_labels, np_majority, np_distinct, np_agreement, np_entropy), want):
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
    images = C.synthetic_digits(6, seed=0)
    out = reference.screen(reference.to_tensor(images))
    x = as_batch(images).reshape(-1, 1, 28, 28)
    mu, _ = ort.InferenceSession(str(paths["encoder"]), providers=["CPUExecutionProvider"]).run(None, {"image": x})
    (logits,) = ort.InferenceSession(str(paths["classifier"]), providers=["CPUExecutionProvider"]).run(
        None, {"image": x})
    np.testing.assert_allclose(out["mu"].numpy(), mu, atol=1e-4)
    np.testing.assert_array_equal(out["label"].numpy(), logits.argmax(axis=1))
    assert out["labels"].shape == (6, 4) and out["recon_mse"].shape == (6,)


def test_reference_is_built_from_the_shipped_onnx():
    """No checkpoint needed: train.models' modules get the bundle's ONNX weights (BatchNorm folded on export ->
    identities) and compute what onnxruntime computes, model by model and through a whole screening."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from benchmarks.reference import TorchReference
    from edgeguard.guard import Guard
    from train.models import Decoder, Encoder

    reference = TorchReference.from_bundle(None, k=C.K_BATCH)
    assert set(reference.parity) == {"encoder", "decoder", "classifier"}
    assert max(reference.parity.values()) <= PARITY_TOLERANCE and reference.parity_images >= 256
    assert isinstance(reference.encoder, Encoder) and isinstance(reference.decoder, Decoder)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in reference.clf.modules())
    images = C.synthetic_digits(32, seed=3)
    out = reference.screen(reference.to_tensor(images))
    guard = Guard.load(providers="cpu", k=C.K_BATCH)
    mu, _ = guard.sessions["encoder"].run(None, {"image": as_batch(images).reshape(-1, 1, 28, 28)})
    np.testing.assert_allclose(out["mu"].numpy(), mu, atol=PARITY_TOLERANCE)
    np.testing.assert_array_equal(out["label"].numpy(), guard.analyze(images).label)
    assert out["labels"].shape == (32, C.K_BATCH)


def test_reference_parity_on_mnist(mnist):
    """The ONNX-loaded modules against onnxruntime on 300 real MNIST test digits (K=10 latents each)."""
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from benchmarks.reference import modules_from_bundle, onnx_parity

    vae, clf, bundle = modules_from_bundle(None)
    parity = onnx_parity(vae, clf, bundle.models, mnist.test_x[:300], k=10)
    assert max(parity.values()) <= PARITY_TOLERANCE, parity


def test_reference_refuses_weights_that_do_not_reproduce_onnxruntime(monkeypatch):
    """A reference that is not the bundle's network is refused, by the constructor and so by the section."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from benchmarks import reference as R

    build = R.modules_from_bundle

    def off_by_a_little(bundle=None):
        vae, clf, loaded = build(bundle)
        with torch.no_grad():
            vae.decoder.net[2].bias += 1e-3  # a stale checkpoint, a wrong layer order: anything but these weights
        return vae, clf, loaded

    monkeypatch.setattr(R, "modules_from_bundle", off_by_a_little)
    with pytest.raises(R.ParityError, match="decoder"):
        R.TorchReference.from_bundle(None, k=4, images=C.synthetic_digits(16, seed=0))
    out = measure.section_reference(SimpleNamespace(bundle=None), C.QUICK)
    assert out["skipped"] is True and "ParityError" in out["reason"]


def test_onnx_weights_that_do_not_fit_the_module_are_refused():
    pytest.importorskip("torch")
    onnx = pytest.importorskip("onnx")
    from benchmarks.reference import WeightMappingError, load_onnx_weights
    from train.models import Classifier, Decoder

    with pytest.raises(WeightMappingError, match="shape"):  # 48 hidden units, the module has 512
        load_onnx_weights(onnx.load_from_string(mlp_decoder(16)), Decoder(16, 512), "decoder")
    for graph in (mlp_decoder(16), strided_classifier(8)):  # other layers; one BatchNorm left unfused, not three
        with pytest.raises(WeightMappingError, match="do not match"):
            load_onnx_weights(onnx.load_from_string(graph), Classifier(8), "classifier")


def test_folded_batchnorm_round_trip(tmp_path):
    """A Classifier with non-trivial BatchNorm statistics, exported (BatchNorm folded into the convolutions) and
    loaded back into a fresh Classifier: the same logits."""
    torch = pytest.importorskip("torch")
    onnx = pytest.importorskip("onnx")
    from benchmarks.reference import load_onnx_weights
    from export.onnx_export import export_models
    from train.models import VAE, Classifier

    torch.manual_seed(1)
    clf = Classifier(8)
    with torch.no_grad():
        for m in clf.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 2.0), m.bias.normal_(), m.running_mean.normal_(), m.running_var.uniform_(0.5, 2)
    paths = export_models(VAE(), clf.eval(), tmp_path)
    loaded = load_onnx_weights(onnx.load(str(paths["classifier"])), Classifier(8), "classifier")
    x = torch.rand(16, 1, 28, 28)
    with torch.no_grad():
        np.testing.assert_allclose(loaded(x).numpy(), clf(x).numpy(), atol=PARITY_TOLERANCE)
