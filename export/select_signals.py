"""python -m export.select_signals: choose the verdict's signals and combination on held-out data only.

The MNIST test set and the report's out-of-distribution sets only measure; every choice is made here, on:
- the held-out split (the last 5,000 MNIST training images, never trained on), halved: the even-indexed half
  fits each candidate's calibration, the odd-indexed half gives clean false alarms and the digits attacked
  (FGSM, PGD and C&W on the shipped models, successful attacks only);
- out-of-distribution *selection* data: Fashion-MNIST training images, Gaussian and uniform noise, generated
  scribbles and shapes (``train/outliers.py``) and letters from the training fonts (``train/glyphs.py``; never
  the report's Hershey fonts), each with this module's own seed. (Inverted digits are not among them: the
  28x28 rule, edgeguard/contrast.py, reads dark ink on light paper as a digit.)

On the same data it fits the kind rule that names a flagged image's cause (``export/kinds.py``).

The rule (``choose``): among the candidates whose clean false-alarm rate is within two standard errors of alpha,
the highest mean of (mean detection rate over the attacks, mean AUROC over the OOD sets); ties within 0.001 go
to fewer signals. The figures of every candidate and the choice are stored in the manifest's
``calibration.selection`` by ``python -m export.calibrate --select`` (and by ``python -m export``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from edgeguard.bundle import shipped_bundle_path
from edgeguard.calibration import SIGNALS, Calibration
from edgeguard.guard import Guard
from export.kinds import fit_kind_rule
from export.measure import analyze_all
from train import attacks as A
from train.from_onnx import load_shipped
from train.glyphs import glyphs
from train.outliers import non_digits

ALPHA = 0.01
SPLIT = "held-out MNIST training images 55000-59999: even-indexed half fits, odd-indexed half evaluates"
SEED = 4242  # the selection's own noise and outliers; the robustness report uses others

CANDIDATES: dict[str, tuple[tuple[str, ...], str]] = {  # name -> (signals, combination)
    "all 8, Fisher": (tuple(SIGNALS), "fisher"),
    "all 8, min-p": (tuple(SIGNALS), "min_p"),
    "consistency only, Fisher": (("disagreement", "input_mismatch", "vote_entropy"), "fisher"),
    "reconstruction only, Fisher": (("recon_mse", "recon_mse_min", "kl", "posterior_spread"), "fisher"),
    "input_mismatch + recon_mse_min + kl, Fisher": (("input_mismatch", "recon_mse_min", "kl"), "fisher"),
    "input_mismatch + recon_mse + low_confidence, Fisher": (("input_mismatch", "recon_mse", "low_confidence"),
                                                            "fisher"),
    "input_mismatch + recon_mse + low_confidence, min-p": (("input_mismatch", "recon_mse", "low_confidence"),
                                                           "min_p"),
    "input_mismatch + recon_mse + posterior_spread + low_confidence, Fisher": (
        ("input_mismatch", "recon_mse", "posterior_spread", "low_confidence"), "fisher"),
    "input_mismatch + recon_mse + kl + low_confidence, Fisher": (
        ("input_mismatch", "recon_mse", "kl", "low_confidence"), "fisher"),
}


@dataclass(frozen=True)
class Sizes:
    attacked: int = 500  # held-out digits attacked (of the evaluating half)
    ood: int = 1000  # images per OOD selection set
    pgd_steps: int = 40
    cw_steps: int = 100

    @classmethod
    def quick(cls) -> Sizes:
        return cls(attacked=100, ood=200, pgd_steps=10, cw_steps=30)


def selection_data(guard: Guard, val_x: np.ndarray, val_y: np.ndarray, sizes: Sizes,
                   bundle: Path | None = None) -> dict[str, Any]:
    """The screened signals of every selection set: fit, clean, each attack's successes, each OOD set."""
    fit_x, eval_x, eval_y = val_x[0::2], val_x[1::2], val_y[1::2]
    fit = analyze_all(guard, fit_x).signals
    clean_screen = analyze_all(guard, eval_x)
    right = np.flatnonzero(clean_screen.label == eval_y)[: sizes.attacked]
    x = torch.from_numpy(eval_x[right].astype(np.float32) / 255.0).unsqueeze(1)
    y = torch.from_numpy(eval_y[right].astype(np.int64))
    torch.manual_seed(SEED)
    classifier = load_shipped(bundle).classifier
    adversarial = {
        "FGSM eps=0.1": A.fgsm(classifier, x, y, eps=0.1),
        "FGSM eps=0.3": A.fgsm(classifier, x, y, eps=0.3),
        "PGD-Linf eps=0.3": A.pgd_linf(classifier, x, y, eps=0.3, steps=sizes.pgd_steps, seed=SEED),
        "C&W-L2": A.cw_l2(classifier, x, y, c=10.0, steps=sizes.cw_steps, lr=0.05),  # as the report
    }
    attacks, attack_counts = {}, {}
    for name, adv in adversarial.items():
        screen = analyze_all(guard, adv.numpy().reshape(-1, 28, 28).astype(np.float32))
        success = screen.label != y.numpy()
        attacks[name] = {s: v[success] for s, v in screen.signals.items()}
        attack_counts[name] = int(success.sum())
    rng = np.random.default_rng(SEED)
    n = sizes.ood
    ood_images = {
        "Gaussian noise": np.clip(rng.normal(0.5, 0.25, (n, 28, 28)), 0, 1).astype(np.float32),
        "uniform noise": rng.random((n, 28, 28), dtype=np.float32),
        "scribbles and shapes": non_digits(n, SEED)[0],
        "letters, training fonts": glyphs(n, SEED)[0],
    }
    try:
        from train.data import load_fashion_mnist

        ood_images = {"Fashion-MNIST train": load_fashion_mnist("train")[0][:n].astype(np.float32) / 255.0,
                      **ood_images}
    except FileNotFoundError:
        pass  # recorded: the sizes name the sets used
    ood = {name: analyze_all(guard, images).signals for name, images in ood_images.items()}
    return {"fit": fit, "clean": clean_screen.signals, "attacks": attacks, "ood": ood,
            "sizes": {"fit": len(fit_x), "clean": len(eval_x), "attacked": len(right),
                      "attack_successes": attack_counts, "ood": {k: len(v) for k, v in ood_images.items()}}}


def evaluate(data: dict[str, Any], signals: tuple[str, ...], combination: str, alpha: float) -> dict[str, Any]:
    """One candidate's selection figures."""
    calibration = Calibration.fit(data["fit"], signals, combination)
    _, p_clean = calibration.p_values(data["clean"])
    detection: dict[str, float | None] = {}
    for name, attack_signals in data["attacks"].items():
        _, p = calibration.p_values(attack_signals)
        detection[name] = float(np.mean(p < alpha)) if len(p) else None  # no success to detect (JSON null)
    auroc = {}
    for name, ood_signals in data["ood"].items():
        _, p = calibration.p_values(ood_signals)
        labels = np.r_[np.zeros(len(p_clean)), np.ones(len(p))]
        auroc[name] = float(roc_auc_score(labels, -np.r_[p_clean, p]))
    return {"signals": list(signals), "combination": combination,
            "false_alarm_rate": float(np.mean(p_clean < alpha)), "detection": detection, "auroc": auroc}


def choose(rows: dict[str, dict[str, Any]], alpha: float, n_clean: int) -> str:
    """The rule in the module docstring: the name of the chosen candidate."""
    limit = alpha + 2 * math.sqrt(alpha * (1 - alpha) / n_clean)

    def score(row: dict[str, Any]) -> float:
        detection = [v for v in row["detection"].values() if v is not None]
        return 0.5 * float(np.mean(detection)) + 0.5 * float(np.mean(list(row["auroc"].values())))

    for row in rows.values():
        row["score"] = round(score(row), 6)
    eligible = [name for name, row in rows.items() if row["false_alarm_rate"] <= limit] or list(rows)
    best = max(rows[name]["score"] for name in eligible)
    close = [name for name in eligible if rows[name]["score"] >= best - 1e-3]
    return min(close, key=lambda name: (len(rows[name]["signals"]), -rows[name]["score"]))


def select(bundle: Path, val_x: np.ndarray, val_y: np.ndarray, *, alpha: float = ALPHA,
           sizes: Sizes | None = None) -> dict[str, Any]:
    """Every candidate's figures on the selection data and the chosen one (what the manifest records)."""
    sizes = sizes or Sizes()
    guard = Guard.load(bundle, providers="cpu")
    data = selection_data(guard, val_x, val_y, sizes, bundle)
    rows = {name: evaluate(data, signals, combination, alpha) for name, (signals, combination) in CANDIDATES.items()}
    chosen = choose(rows, alpha, data["sizes"]["clean"])
    signals, combination = tuple(rows[chosen]["signals"]), rows[chosen]["combination"]
    kinds = fit_kind_rule(data, Calibration.fit(data["fit"], signals, combination), alpha)
    return {"rule": "false alarms within 2 SE of alpha; max of mean detection and mean AUROC, halved; "
                    "ties within 0.001 to fewer signals",
            "alpha": alpha, "split": SPLIT, "sizes": data["sizes"], "candidates": rows, "chosen": chosen,
            "signals": rows[chosen]["signals"], "combination": rows[chosen]["combination"], "kinds": kinds}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.select_signals", description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=shipped_bundle_path())
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--quick", action="store_true", help="fewer attacked digits, OOD images and attack steps")
    args = parser.parse_args(argv)
    from train.data import load_mnist

    data = load_mnist(args.data_dir)
    result = select(args.bundle, data.val_x, data.val_y, sizes=Sizes.quick() if args.quick else None)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
