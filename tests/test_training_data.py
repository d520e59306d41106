"""What the models are trained on beside MNIST: captured digits (train/capture.py) and non-digits
(train/glyphs.py, train/outliers.py), kept apart from the report's test sets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from train.capture import capture, mixed
from train.glyphs import CHARACTERS, DIGIT_LIKE, font_files, glyphs
from train.trainer import TrainConfig, to_tensor


def test_capture_keeps_the_runtime_scale_and_is_seeded(mnist):
    x = to_tensor(mnist.test_x[:64])
    a = capture(x, torch.Generator().manual_seed(1))
    b = capture(x, torch.Generator().manual_seed(1))
    assert a.shape == x.shape and torch.equal(a, b)
    assert float(a.min()) >= 0.0
    torch.testing.assert_close(a.amax(dim=(1, 2, 3)), torch.ones(64))  # ink peak at full scale, as at run time
    assert float((a - x).abs().mean()) > 0.02  # it does change the digits


def test_mixed_captures_only_its_share(mnist):
    x = to_tensor(mnist.test_x[:400])
    out = mixed(x, torch.Generator().manual_seed(2), share=0.25)
    changed = (out - x).abs().amax(dim=(1, 2, 3)) > 0
    assert 0.15 < float(changed.float().mean()) < 0.35


def test_glyphs_are_mnist_style_and_never_digit_like():
    images, chars = glyphs(60, seed=5)
    assert images.shape == (60, 28, 28) and images.dtype == np.float32
    assert images.max(axis=(1, 2)).min() == 1.0
    assert not set(chars) & (DIGIT_LIKE | set("0123456789"))
    assert set(chars) <= set(CHARACTERS)


def test_training_outliers_share_no_font_with_the_report():
    """The report draws letters with OpenCV's Hershey fonts; training glyphs come from TrueType files."""
    assert font_files() and all(f.endswith(".ttf") for f in font_files())
    assert not any("hershey" in f.lower() for f in font_files())


def test_outlier_seeds_differ_from_the_selections():
    from export.select_signals import SEED

    cfg = TrainConfig(out="unused")
    assert SEED not in (cfg.outlier_seed + cfg.seed, cfg.outlier_seed + cfg.seed + 1)


def test_recipe_ablation_quick(tmp_path, mnist_files):
    """The recipe ablation's command runs a variant end to end (quick training) and reports every set."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-m", "benchmarks.recipe_ablation", "--variants", "B", "--quick",
                          "--out", str(tmp_path)], cwd=root, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    line = json.loads(out.stdout.splitlines()[-1])
    assert line["variant"] == "B" and line["overrides"] == {"outliers": 20000}
    for signal in ("recon_mse", "posterior_spread", "low_confidence", "kl", "mismatch"):
        assert set(line[signal]) == {"clean", "fgsm0.1", "fgsm0.3", "non_digits", "captured"}
    assert (tmp_path / "results.jsonl").read_text().count("\n") == 1


def test_clutter_shapes_are_what_a_page_holds_besides_digits():
    from train.outliers import CLUTTER_KINDS, clutter_shapes, non_digits

    images, kinds = clutter_shapes(200, 3)
    assert images.shape == (200, 28, 28) and images.dtype == np.float32
    assert set(kinds) == set(CLUTTER_KINDS) and 0.0 <= images.min() and images.max() <= 1.0
    assert np.array_equal(clutter_shapes(20, 3)[0], images[:20])  # seeded
    assert not np.array_equal(clutter_shapes(20, 4)[0], images[:20])
    # the default kinds (and so the signal selection's held-out shapes) are drawn as before
    assert set(non_digits(100, 3)[1]).isdisjoint(CLUTTER_KINDS)
