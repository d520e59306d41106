"""The lab's experiments, each screened through the real runtime (edgeguard.Guard, onnxruntime, K samples):
attacks on the bundle's own classifier weights, out-of-distribution sets, Experiment B (confidence vs
reconstruction loss, calibration) and the adaptive (EOT) attack.

Nothing here chooses anything: the verdict's signals are chosen on held-out data by ``export/select_signals.py``
and the report only renders that record (the manifest's ``calibration.selection``). The MNIST test images and
the OOD sets below only measure."""

from __future__ import annotations

import string
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from scipy.stats import spearmanr
from tqdm import tqdm

from benchmarks import report_figures as figs
from benchmarks.robustness.metrics import ece, fit_temperature, risk_coverage, softmax
from edgeguard.calibration import Calibration, decide
from edgeguard.contract import SIDE
from edgeguard.guard import Guard, Screening
from edgeguard.kinds import KindRule
from edgeguard.normalize import preprocess
from export.measure import analyze_all
from train import attacks as A
from train.data import load_fashion_mnist
from train.outliers import clutter_shapes

ALPHA = 0.01
CLUTTER_SEED = 31_000  # added to the report's seed for its frames & lines (training uses 7000 and up)
FGSM_EPS = (0.05, 0.1, 0.2, 0.3)
PGD = dict(eps=0.3, steps=40, step_size=0.01)  # torchattacks.PGD, random start
PGD_NAME = f"PGD-Linf eps={PGD['eps']}"
CW = dict(c=10.0, kappa=0.0, lr=0.05)  # torchattacks.CW; steps: SIZES["cw_steps"]
UNBOUNDED = dict(eps=1.0, steps=40, step_size=0.05)  # the sanity check: PGD with an unbounded budget
ADAPTIVE_EPS = (0.1, 0.2, 0.3)
ADAPTIVE_PLAIN_STEPS = 40  # the undefended comparison: plain PGD, step eps / ADAPTIVE_PLAIN_STEP_DIV
ADAPTIVE_PLAIN_STEP_DIV = 16
EOT_DRAWS = 20
GAUSSIAN_NOISE = (0.5, 0.25)  # mean, standard deviation (then clipped to [0, 1])
LETTER_ROTATION = 12.0  # degrees, uniform in +-
ECE_BINS = 15

SIZES = {
    # clean: MNIST test images screened clean; attack: images attacked by FGSM/PGD/C&W; lbfgs: by L-BFGS;
    # ood: images per OOD set; adaptive: images per adaptive setting; calib: calibration-split images;
    # usps: USPS test images screened (full: the whole split); usps_half: USPS images per half for edgeguard
    # calibrate (full: half of train + test pooled; never fewer than recalibrate.min_images(ALPHA)).
    "full": dict(clean=10000, attack=2000, cw=2000, cw_steps=100, lbfgs=2000, lbfgs_search=5, lbfgs_iter=30,
                 ood=2000, adaptive=100, adaptive_steps=60, adaptive_cw_steps=100, calib=5000, unbounded=500,
                 usps=2007, usps_half=4649),
    "quick": dict(clean=300, attack=100, cw=50, cw_steps=30, lbfgs=10, lbfgs_search=3, lbfgs_iter=15,
                  ood=100, adaptive=6, adaptive_steps=5, adaptive_cw_steps=5, calib=300, unbounded=50,
                  usps=300, usps_half=400),
}

# Characters for the letters/symbols OOD set: those easily read as a digit are left out.
DIGIT_LIKE = set("OoQDIl1iLjJ|ZzSsbBgqGTt")
CHARACTERS = [c for c in string.ascii_letters + "#$%&*+=?@<>{}[]~^" if c not in DIGIT_LIKE]
FONTS = [cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_COMPLEX, cv2.FONT_HERSHEY_TRIPLEX,
         cv2.FONT_HERSHEY_PLAIN, cv2.FONT_HERSHEY_SCRIPT_SIMPLEX, cv2.FONT_HERSHEY_COMPLEX_SMALL,
         cv2.FONT_ITALIC | cv2.FONT_HERSHEY_SIMPLEX]


def log(msg: str) -> None:
    tqdm.write(msg, file=sys.stderr)


def bar(total: int, desc: str):
    return tqdm(total=total, desc=desc, file=sys.stderr, leave=False, dynamic_ncols=True)


# -- screening through the runtime --------------------------------------------------------------

@dataclass
class Screened:
    s: Screening
    p: dict[str, np.ndarray]
    p_combined: np.ndarray
    verdict: np.ndarray

    @property
    def flagged(self) -> np.ndarray:
        return self.verdict != "clean"

    def subset(self, mask: np.ndarray) -> Screened:
        s = self.s
        sub = Screening(label=s.label[mask], confidence=s.confidence[mask], labels=s.labels[mask],
                        purified_label=s.purified_label[mask], n_distinct=s.n_distinct[mask],
                        agreement=s.agreement[mask], signals={k: v[mask] for k, v in s.signals.items()})
        return Screened(sub, {k: v[mask] for k, v in self.p.items()}, self.p_combined[mask], self.verdict[mask])


def verdicts(calibration: Calibration, signals: dict[str, np.ndarray], alpha: float = ALPHA,
             kind_rule: KindRule | None = None):
    p, pc = calibration.p_values(signals)
    names = list(p)
    kinds = kind_rule.adversarial(signals).tolist() if kind_rule is not None else [None] * len(pc)
    out = np.empty(len(pc), dtype=object)
    for i in range(len(pc)):
        out[i] = decide({n: float(p[n][i]) for n in names}, float(pc[i]), alpha, kinds[i])[0]
    return p, pc, out.astype(str)


def screen(guard: Guard, images: np.ndarray) -> Screened:
    x = np.ascontiguousarray(np.clip(images.reshape(-1, SIDE, SIDE), 0.0, 1.0).astype(np.float32))
    s = analyze_all(guard, x)
    p, pc, v = verdicts(guard.calibration, s.signals, kind_rule=guard.bundle.info.kind_rule)
    return Screened(s, p, pc, v)


# -- OOD sets -------------------------------------------------------------------------------------

def rendered_characters(n: int, seed: int) -> tuple[np.ndarray, list[str]]:
    """Letters and symbols drawn with OpenCV's Hershey fonts (random font, size, thickness, slight
    rotation), made MNIST-style by edgeguard.normalize.preprocess."""
    rng = np.random.default_rng(seed)
    images, chars = [], []
    while len(images) < n:
        ch = CHARACTERS[rng.integers(len(CHARACTERS))]
        font = FONTS[rng.integers(len(FONTS))]
        canvas = np.zeros((96, 96), np.uint8)
        scale = float(rng.uniform(1.6, 2.6)) if font != cv2.FONT_HERSHEY_PLAIN else float(rng.uniform(3.5, 5))
        thick = int(rng.integers(2, 7))
        (w, h), base = cv2.getTextSize(ch, font, scale, thick)
        cv2.putText(canvas, ch, ((96 - w) // 2, (96 + h) // 2), font, scale, 255, thick, cv2.LINE_AA)
        rot = cv2.getRotationMatrix2D((48, 48), float(rng.uniform(-LETTER_ROTATION, LETTER_ROTATION)), 1.0)
        canvas = cv2.warpAffine(canvas, rot, (96, 96))
        try:
            images.append(preprocess(canvas))
            chars.append(ch)
        except ValueError:
            continue
    return np.stack(images).astype(np.float32), chars


def ood_sets(n: int, mnist_test: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    fashion, _ = load_fashion_mnist("test")
    letters, _ = rendered_characters(n, seed)
    return {
        "Fashion-MNIST": fashion[:n].astype(np.float32) / 255.0,
        "Gaussian noise": np.clip(rng.normal(*GAUSSIAN_NOISE, (n, SIDE, SIDE)), 0, 1).astype(np.float32),
        "uniform noise": rng.random((n, SIDE, SIDE), dtype=np.float32),
        "letters & symbols": letters,
        # what a camera's page holds besides digits (train/outliers.py), with a seed no training run uses
        "frames & lines": clutter_shapes(n, seed + CLUTTER_SEED)[0],
    }


# -- the lab ----------------------------------------------------------------------------------------

@dataclass
class AttackResult:
    name: str
    adv: np.ndarray  # (n, SIDE, SIDE) float32
    sc: Screened
    success: np.ndarray  # bool (n,)
    attacked: int
    correct: int
    torch_ort_agreement: float
    l2: np.ndarray
    linf: np.ndarray
    seconds: float
    targeted: bool = False
    extra: dict = field(default_factory=dict)

    @property
    def success_rate(self) -> float:
        return float(self.success.sum() / max(self.correct, 1))


def run_attack(name, fn, lab, x, y, correct, *, targets=None, progress_total=None) -> AttackResult:
    t0 = time.perf_counter()
    pb = bar(progress_total or len(x), name)
    out = fn(pb.update)
    pb.close()
    adv, ok = out if isinstance(out, tuple) else (out, None)
    seconds = time.perf_counter() - t0
    adv_np = adv.detach().numpy().reshape(-1, SIDE, SIDE).astype(np.float32)
    sc = screen(lab.guard, adv_np)
    torch_label = A.predict(lab.models.classifier, torch.from_numpy(adv_np).unsqueeze(1)).numpy()
    yy = y.numpy()
    if targets is not None:
        success = correct & (sc.s.label == targets.numpy())
    else:
        success = correct & (sc.s.label != yy)
    diff = (adv_np - x.numpy().reshape(-1, SIDE, SIDE)).reshape(len(adv_np), -1)
    res = AttackResult(name, adv_np, sc, success, len(x), int(correct.sum()),
                       float(np.mean(torch_label == sc.s.label)), np.linalg.norm(diff, axis=1),
                       np.abs(diff).max(axis=1), seconds, targeted=targets is not None)
    log(f"{name}: success {res.success_rate:.3f} ({int(success.sum())}/{res.correct}), "
        f"detected {np.mean(sc.flagged[success]) if success.any() else float('nan'):.4f}, {seconds:.0f}s")
    return res


@dataclass
class Lab:
    guard: Guard
    models: object
    sizes: dict
    seed: int
    fig_dir: Path
    timings: dict = field(default_factory=dict)


# -- Experiment B ---------------------------------------------------------------------------------

CONF_BINS = (0.0, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99, 0.999, 1.0)


def experiment_b(clean: Screened, y: np.ndarray, logits_test, logits_cal, y_cal, fig_dir: Path) -> dict:
    conf = clean.s.confidence.astype(np.float64)
    loss = clean.s.signals["recon_mse"].astype(np.float64)
    correct = clean.s.label == y
    rows = []
    for lo, hi in zip(CONF_BINS[:-1], CONF_BINS[1:]):
        m = (conf > lo) & (conf <= hi) if lo > 0 else (conf <= hi)
        rows.append([f"({lo}, {hi}]", int(m.sum()), float(loss[m].mean()) if m.any() else float("nan"),
                     float(np.median(loss[m])) if m.any() else float("nan"),
                     float(correct[m].mean()) if m.any() else float("nan")])
    rho, p_rho = spearmanr(conf, loss)
    t = fit_temperature(logits_cal, y_cal)
    p_before = softmax(logits_test.astype(np.float64))
    p_after = softmax(logits_test.astype(np.float64) / t)
    ece_before, bins_before = ece(p_before.max(1), p_before.argmax(1) == y, ECE_BINS)
    ece_after, bins_after = ece(p_after.max(1), p_after.argmax(1) == y, ECE_BINS)
    curves, aurc = {}, {}
    for name, accept in (("max softmax", conf), ("recon loss", -loss), ("combined p-value", clean.p_combined),
                         ("oracle", correct.astype(np.float64))):
        curves[name], aurc[name] = risk_coverage(accept, correct)
    return dict(rows=rows, spearman=float(rho), spearman_p=float(p_rho), temperature=t, ece_before=ece_before,
                ece_after=ece_after, aurc=aurc,
                figures={"reliability": figs.reliability([bins_before, bins_after],
                                                         ["before", f"after (T={t:.2f})"],
                                                         fig_dir / "reliability.png"),
                         "risk_coverage": figs.risk_coverage(curves, fig_dir / "risk_coverage.png"),
                         "confidence_vs_loss": figs.confidence_vs_loss(conf, loss, correct,
                                                                       fig_dir / "confidence_vs_loss.png")})


# -- adaptive attack --------------------------------------------------------------------------------

def adaptive(lab: Lab, x_t, y_t, correct, attacks) -> dict:
    sizes, guard, models = lab.sizes, lab.guard, lab.models
    idx = np.flatnonzero(correct)[: sizes["adaptive"]]
    x, y = x_t[idx], y_t[idx]
    target = A.random_targets(y, seed=lab.seed + 1)
    g = torch.Generator().manual_seed(lab.seed + 2)
    noise = torch.randn(EOT_DRAWS, guard.manifest["latent_dim"], generator=g)
    surrogate = A.DetectorSurrogate.from_calibration(guard.calibration, guard.alpha)
    rows, curve_def, curve_undef = [], [], []
    for eps in ADAPTIVE_EPS:
        pb = bar(len(x), f"adaptive PGD eps={eps}")
        adv = A.adaptive_pgd(models, surrogate, x, target, eps, noise, steps=sizes["adaptive_steps"],
                             batch=50, seed=lab.seed, progress=pb.update)
        pb.close()
        sc = screen(guard, adv.numpy())
        fooled = (sc.verdict == "clean") & (sc.s.label != y.numpy())
        plain = A.pgd_linf(models.classifier, x, y, eps=eps, steps=ADAPTIVE_PLAIN_STEPS,
                           step_size=eps / ADAPTIVE_PLAIN_STEP_DIV, seed=lab.seed)
        undef = float(np.mean(A.predict(models.classifier, plain).numpy() != y.numpy()))
        l2 = (adv - x).flatten(1).norm(dim=1).numpy()
        rows.append([f"EOT-PGD-Linf eps={eps}", len(x), float(np.mean(fooled)),
                     float(np.mean(sc.s.label != y.numpy())), float(np.mean(sc.flagged)),
                     float(np.median(l2[fooled])) if fooled.any() else float("nan"), undef])
        curve_def.append(float(np.mean(fooled)))
        curve_undef.append(undef)
        log(f"adaptive PGD eps={eps}: fooled {np.mean(fooled):.3f} (undefended {undef:.3f})")
    pb = bar(len(x), "adaptive C&W")
    adv = A.adaptive_cw(models, surrogate, x, target, noise, steps=sizes["adaptive_cw_steps"], batch=50,
                        progress=pb.update)
    pb.close()
    sc = screen(guard, adv.numpy())
    fooled = (sc.verdict == "clean") & (sc.s.label != y.numpy())
    l2 = (adv - x).flatten(1).norm(dim=1).numpy()
    cw = attacks["C&W-L2"]
    cw_sel = idx[idx < len(cw.success)]
    undef_l2 = cw.l2[cw_sel][cw.success[cw_sel]]
    rows.append(["EOT-C&W-L2", len(x), float(np.mean(fooled)), float(np.mean(sc.s.label != y.numpy())),
                 float(np.mean(sc.flagged)), float(np.median(l2[fooled])) if fooled.any() else float("nan"),
                 float(np.mean(cw.success[cw_sel])) if len(cw_sel) else float("nan")])
    log(f"adaptive C&W: fooled {np.mean(fooled):.3f}")
    fig = figs.adaptive_curve(list(ADAPTIVE_EPS), curve_def, curve_undef, lab.fig_dir / "adaptive.png")
    return dict(rows=rows, n=len(x), threshold=surrogate.threshold,
                undefended_cw_median_l2=float(np.median(undef_l2)) if len(undef_l2) else float("nan"),
                cw_example=(x[:4].numpy(), adv[:4].numpy(), sc), figure=fig,
                fooled_pgd=dict(zip(ADAPTIVE_EPS, curve_def)), fooled_cw=float(np.mean(fooled)))
