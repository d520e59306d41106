"""Models, training, ONNX export and the shipped bundle's manifest."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from edgeguard.bundle import load_bundle, shipped_bundle_path
from edgeguard.contract import MODEL_NAMES, N_CLASSES, PARITY_TOLERANCE, SIGNATURES
from train.models import LATENT_DIM, VAE, Classifier, vae_loss


def test_model_shapes():
    vae, clf = VAE(), Classifier()
    x = torch.rand(5, 1, 28, 28)
    mu, logvar = vae.encoder(x)
    assert mu.shape == logvar.shape == (5, LATENT_DIM)
    recon = vae.decoder(mu)
    assert recon.shape == (5, 1, 28, 28)
    assert float(recon.min()) >= 0.0 and float(recon.max()) <= 1.0
    assert clf(x).shape == (5, 10)
    loss, bce, kl = vae_loss(recon, x, mu, logvar)
    assert loss.ndim == 0 and float(kl) >= 0.0


def test_models_are_edge_sized():
    params = {name: sum(p.numel() for p in m.parameters())
              for name, m in {"encoder": VAE().encoder, "decoder": VAE().decoder, "classifier": Classifier()}.items()}
    # The decoder is the largest: two dense layers (16 x 512 and 512 x 784) run faster than transposed
    # convolutions at small batch (see train/models.py); 0.41 M parameters, 1.6 MB as float32 ONNX.
    assert all(n < 500_000 for n in params.values()), params
    assert sum(params.values()) < 1_000_000, params


@pytest.fixture(scope="module")
def quick_bundle(tmp_path_factory, mnist):
    """A --quick training run exported to a bundle (the whole train -> export -> calibrate path)."""
    from export.__main__ import build_bundle
    from train.trainer import TrainConfig, train

    root = tmp_path_factory.mktemp("quick")
    meta = train(TrainConfig(out=root / "run", quick=True, quick_size=1024, progress=False))
    manifest = build_bundle(root / "run", root / "bundle", quick=True, n_measure=300)
    return root, meta, manifest


def test_quick_round_trip_writes_a_complete_manifest(quick_bundle):
    root, meta, manifest = quick_bundle
    assert meta["train_images"] == 1024
    assert set(meta["distillation_validation_metrics"]) == {"before_distillation", "teacher", "judge"}
    assert manifest["format_version"] == 1
    assert manifest["latent_dim"] == LATENT_DIM and manifest["default_k"] == 10
    assert manifest["input"]["shape"] == [28, 28] and manifest["input"]["range"] == [0.0, 1.0]
    prov = manifest["provenance"]
    assert set(prov["data_files_sha256"]) == {"train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                              "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"}
    assert prov["seed"] == 0 and prov["quick"] is True and prov["git_commit"]
    config = prov["training_config"]  # every hyperparameter, so the bundle can be retrained from its manifest
    assert config["refine_weight"] > 0 and config["latent_dim"] == LATENT_DIM and "out" not in config
    metrics = manifest["metrics"]
    for key in ("clean_accuracy", "purified_accuracy", "unanimous_share"):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["test_images"] == 300
    assert set(manifest["calibration"]["signals"]) and manifest["calibration"]["n"] == 300
    camera = manifest["camera_calibration"]  # the same held-out digits, filmed (export/camera.py)
    assert camera["signals"] == manifest["calibration"]["signals"] and camera["found"]["digits"] == 300
    assert 0 < camera["n"] <= 300 and set(camera["test_false_alarm_rate"]) == {"0.001", "0.01", "0.05", "0.1"}
    info = load_bundle(root / "bundle").info  # verifies every sha256; the manifest, typed
    assert {name: (m.input, m.outputs) for name, m in info.models.items()} == SIGNATURES
    assert (info.latent_dim, info.n_classes, info.default_k) == (LATENT_DIM, N_CLASSES, 10)
    assert info.calibration.n == 300 and info.calibration.k == 10 and info.camera_calibration.n == camera["n"]
    assert info.metrics == metrics and info.provenance == prov and info.created == manifest["created"]


def test_export_and_torch_copy_share_one_parity_check(monkeypatch):
    """export/onnx_export.py's parity and train.from_onnx's check_parity: one helper, one tolerance."""
    from export import onnx_export
    from train import from_onnx

    assert from_onnx.PARITY_TOLERANCE == PARITY_TOLERANCE and not hasattr(onnx_export, "PARITY_TOLERANCE")
    assert from_onnx.require_parity({"encoder": PARITY_TOLERANCE}, "ONNX") == {"encoder": PARITY_TOLERANCE}
    with pytest.raises(ValueError, match=r"ONNX parity failed \(max abs difference > 0.0001\): \{'decoder'"):
        from_onnx.require_parity({"encoder": 0.0, "decoder": 2 * PARITY_TOLERANCE}, "ONNX")
    calls = []
    monkeypatch.setattr(onnx_export, "onnx_parity", lambda *args: calls.append(args) or {"encoder": 1.0})
    with pytest.raises(ValueError, match="ONNX parity failed"):
        onnx_export.parity(VAE(), Classifier(), Path("out"), np.zeros((1, 28, 28), np.uint8))
    assert set(calls[0][0]) == set(calls[0][1]) == set(MODEL_NAMES)


def test_export_parity_and_checker(quick_bundle, mnist):
    root, _, manifest = quick_bundle
    diffs = manifest["metrics"]["onnx_parity_max_abs"]
    assert set(diffs) == set(MODEL_NAMES) and max(diffs.values()) <= PARITY_TOLERANCE
    from train.trainer import load_models

    vae, clf, _ = load_models(root / "run")
    x = torch.from_numpy(mnist.test_x[:7].astype(np.float32) / 255).unsqueeze(1)
    for name in MODEL_NAMES:
        model = onnx.load(str(root / "bundle" / f"{name}.onnx"))
        onnx.checker.check_model(model)
        assert max(op.version for op in model.opset_import if op.domain in ("", "ai.onnx")) >= 17
        assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # dynamic batch axis
    # A batch size that was never exported (7) runs and matches PyTorch.
    session = ort.InferenceSession(str(root / "bundle" / "classifier.onnx"), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = clf(x).numpy()
    assert np.abs(session.run(None, {"image": x.numpy()})[0] - expected).max() <= PARITY_TOLERANCE


def test_checkpoints_are_plain_state_dicts(quick_bundle):
    root, _, _ = quick_bundle
    state = torch.load(root / "run" / "vae.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())


def test_distillation_pulls_the_classifier_toward_its_teacher(tmp_path):
    """Stage 6 with the whole loss on the teacher: a teacher that always says 3 outweighs random labels."""
    from train.trainer import TrainConfig, train_classifier

    class AlwaysThree(torch.nn.Module):
        def forward(self, x):
            return torch.nn.functional.one_hot(torch.full((len(x),), 3), 10).float() * 10.0

    torch.manual_seed(0)
    x, y = torch.rand(256, 1, 28, 28), torch.randint(0, 10, (256,))
    cfg = TrainConfig(out=tmp_path, progress=False, batch_size=64, distill_weight=1.0)
    clf = train_classifier(cfg, VAE().eval(), x, y, torch.Generator().manual_seed(0), epochs=3, lr=3e-3,
                           teacher=AlwaysThree())
    with torch.no_grad():
        assert (clf(x).argmax(1) == 3).float().mean() > 0.9


def test_training_is_deterministic(tmp_path):
    from train.trainer import TrainConfig, train

    runs = []
    for name in ("a", "b"):
        cfg = TrainConfig(out=tmp_path / name, quick=True, quick_size=256, val_size=64, progress=False)
        runs.append(train(cfg))
    for file in ("vae.pt", "classifier.pt"):
        a = torch.load(tmp_path / "a" / file, weights_only=True)
        b = torch.load(tmp_path / "b" / file, weights_only=True)
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert runs[0]["validation_metrics"] == runs[1]["validation_metrics"]


# -- the shipped bundle -------------------------------------------------------------------------

SHIPPED = shipped_bundle_path()


def test_shipped_files_match_manifest():
    manifest = json.loads((SHIPPED / "manifest.json").read_text())
    for name in MODEL_NAMES:
        spec = manifest["models"][name]
        data = (SHIPPED / spec["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == spec["sha256"], name
        assert len(data) < 2_000_000  # small enough for the wheel (the whole bundle is about 2.3 MB)


@pytest.mark.parametrize("metric, target", [("clean_accuracy", 0.993), ("purified_accuracy", 0.990),
                                            ("unanimous_share", 0.98)])
def test_shipped_bundle_meets_foundation_targets(metric, target):
    """The export step measured these on the 10,000 test images (test_runtime re-measures them)."""
    manifest = json.loads((SHIPPED / "manifest.json").read_text())
    metrics = manifest["metrics"]
    assert metrics["test_images"] == 10_000 and not manifest["provenance"]["quick"]
    assert max(metrics["onnx_parity_max_abs"].values()) <= PARITY_TOLERANCE
    assert metrics[metric] >= target, f"{metric} {metrics[metric]}"


def test_package_data_includes_the_bundle():
    text = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert '"models/*.onnx"' in text and '"models/manifest.json"' in text


def test_train_cli_passes_the_model_widths(monkeypatch, tmp_path):
    """`python -m train --vae-width N --encoder-width N` trains a VAE of that size (the latency trials' command)."""
    import train.trainer
    from train.__main__ import main

    seen = {}

    def fake_train(cfg):
        seen["cfg"] = cfg
        return {"validation_metrics": {}, "seconds": 0.0}

    monkeypatch.setattr(train.trainer, "train", fake_train)
    assert main(["--out", str(tmp_path), "--vae-width", "256", "--encoder-width", "32", "--no-progress"]) == 0
    assert (seen["cfg"].vae_width, seen["cfg"].encoder_width) == (256, 32)
    assert main(["--out", str(tmp_path), "--no-progress"]) == 0
    assert (seen["cfg"].vae_width, seen["cfg"].encoder_width) == (512, 64)
