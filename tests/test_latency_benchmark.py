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
    assert positive(cold["warm_cache_s"]["median"]) and len(cold["warm_cache_s"]["runs"]) == L.QUICK.cold_warm_runs
    assert "empty_cache_s" in cold and "median" in cold["empty_cache_s"]
    phases = cold["phases_ms"]
    assert "error" not in phases, phases
    assert positive(phases["total"]) and positive(phases["import edgeguard.kernels (numba cache load)"])


@pytest.mark.slow
def test_quick_stages_and_kernels(quick):
    r = quick.result
    (row,) = r["stages"]["rows"]
    assert list(row["ms"]) == list(L.STAGES) and all(positive(v) for v in row["ms"].values())
    assert row["matches_guard"] is True, "the staged copy of Guard.screen drifted from Guard.screen"
    assert abs(sum(row["share"].values()) - 1.0) < 1e-9
    kernels = {k["kernel"] for k in r["kernels"]["rows"]}
    assert kernels == {"image_seeds", "sample_latents", "softmax", "vote", "input_agreement", "recon_errors",
                       "kl_divergence", "posterior_spread"}
    assert all(positive(k["numba_us"]) and positive(k["vectorised_us"]) for k in r["kernels"]["rows"])
    parity = r["kernels"]["numpy_pipeline_parity"]
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
    rf = r["roofline"]
    if rf["skipped"]:
        assert "onnx" in rf["reason"]
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
    protos = r["prototypes"]
    assert {"fused_graphs", "unchecked_kernels", "optimization_level", "slim_classifier", "k_sweep", "encoder_call",
            "cold_start"} <= set(protos)
    assert set(protos["k_sweep"]["ms"]) == {"1", "2", "4", "6", "8", "10"}
    assert all(v is True for v in protos["fused_graphs"]["rows"][0]["same_verdicts"].values())
    assert protos["unchecked_kernels"]["rows"][0]["same_verdicts"] is True
    assert set(protos["cold_start"]["median_s"]) == {"current", "gc_frozen", "numba_free"}
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
    assert quick.docs.startswith("## Performance")


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
    onnx = pytest.importorskip("onnx")
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


def test_shipped_bundle_flops_match_its_weights():
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper

    from edgeguard.bundle import load_bundle

    models = load_bundle(None).models
    weights = {name: [numpy_helper.to_array(t) for t in onnx.load_from_string(data).graph.initializer
                      if len(t.dims) >= 2]  # weights, not biases, in graph order (the Gemm first in the classifier)
               for name, data in models.items()}

    def size(name, i):
        return int(weights[name][i].size)

    # train/models.py: the encoder's convs (stride 2) output 14x14 then 7x7; the decoder's ConvTransposes read
    # 7x7 then 14x14; the classifier's convs output 28x28, 14x14 and 5x5. Every MAC is 2 FLOPs.
    enc, dec, clf = (L.count_flops(models[n]) for n in ("encoder", "decoder", "classifier"))
    assert enc == {"Conv": 2 * (size("encoder", 0) * 14 * 14 + size("encoder", 1) * 7 * 7),
                   "Gemm": 2 * size("encoder", 2)}
    assert dec == {"Gemm": 2 * size("decoder", 0), "ConvTranspose": 2 * (size("decoder", 1) * 7 * 7
                                                                         + size("decoder", 2) * 14 * 14)}
    assert clf["Gemm"] == 2 * size("classifier", 0)
    assert clf["Conv"] == 2 * (size("classifier", 1) * 28 * 28 + size("classifier", 2) * 14 * 14
                               + size("classifier", 3) * 5 * 5)


@pytest.mark.parametrize("b,k", [(1, 10), (5, 3), (3, 1)])
def test_numpy_twins_equal_the_kernels(b, k):
    rng = np.random.default_rng(b * 100 + k)
    x = rng.random((b, K.N_PIXELS), dtype=np.float32)
    mu = rng.normal(size=(b, 16)).astype(np.float32)
    logvar = rng.normal(-1, 1, size=(b, 16)).astype(np.float32)
    seeds = K.image_seeds(x, 7)
    np.testing.assert_array_equal(L.np_image_seeds(x, 7), seeds)
    np.testing.assert_allclose(L.np_sample_latents(mu, logvar, seeds, k), K.sample_latents(mu, logvar, seeds, k),
                               rtol=1e-6, atol=1e-6)
    logits = (3 * rng.normal(size=(b * k, 10))).astype(np.float32)
    np.testing.assert_allclose(L.np_softmax(logits), K.softmax(logits), rtol=1e-6, atol=1e-7)
    probs = K.softmax(logits).reshape(b, k, 10)
    probs[0, :, :] = probs[0, :1, :]  # all K identical: a unanimous vote
    for got, want in zip(L.np_vote(probs), K.vote(probs)):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
        assert got.dtype == want.dtype
    labels, majority, *_ = K.vote(probs)
    np.testing.assert_allclose(L.np_input_agreement(labels, majority), K.input_agreement(labels, majority))
    recon = rng.random((b * k, K.N_PIXELS), dtype=np.float32)
    for got, want in zip(L.np_recon_errors(x, recon, k), K.recon_errors(x, recon, k)):
        np.testing.assert_allclose(got, want, rtol=1e-6)
    np.testing.assert_allclose(L.np_kl_divergence(mu, logvar), K.kl_divergence(mu, logvar), rtol=1e-6)
    np.testing.assert_allclose(L.np_posterior_spread(logvar), K.posterior_spread(logvar), rtol=1e-6)


def test_vote_ties_numpy_and_torch_twins_follow_the_kernel():
    # 4 samples: labels 2, 5, 2, 5 (a 2-2 tie); class 5 has the larger summed probability -> majority 5
    probs = np.full((1, 4, 10), 0.01, np.float32)
    for j, (lab, p) in enumerate([(2, 0.6), (5, 0.9), (2, 0.6), (5, 0.9)]):
        probs[0, j, lab] = p
    want = K.vote(probs)
    assert want[1][0] == 5
    for got, w in zip(L.np_vote(probs), want):
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
    x = L.as_batch_np(images).reshape(-1, 1, 28, 28)
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
    signals = guard.analyze(images).signals
    want_p, want_combined = guard.calibration.p_values(signals)
    got_p, got_combined = L.lean_p_values(guard.calibration, signals)
    np.testing.assert_array_equal(got_combined, want_combined)
    for name in want_p:
        np.testing.assert_array_equal(got_p[name], want_p[name])
    d = guard.bundle.latent_dim
    split = ort.InferenceSession(L.build_split_encoder(guard.bundle.models["encoder"], d),
                                 providers=["CPUExecutionProvider"])
    x = L.as_batch_np(images).reshape(-1, 1, 28, 28)
    for got, want in zip(split.run(None, {"image": x}), guard._sessions["encoder"].run(None, {"image": x})):
        np.testing.assert_array_equal(got, want)
    lean = L.lean_variant(guard)
    agreement = L.verdict_agreement(lean(images), guard.screen(images))
    assert agreement["same_verdicts"] and agreement["same_labels"]
    assert agreement["max_abs_score_difference"] < 1e-4  # z in float32 inside the graph, not float64 in numba
