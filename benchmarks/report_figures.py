"""The robustness report's figures (matplotlib, Agg backend): each function writes one PNG and returns its path."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402

DPI = 110


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def distinct_histogram(hist: dict[str, np.ndarray], path: Path) -> Path:
    """hist: set name -> share of images with 1..10 distinct labels."""
    fig, ax = plt.subplots(figsize=(8, 3.8))
    names = list(hist)
    width = 0.8 / len(names)
    xs = np.arange(1, 11)
    for i, name in enumerate(names):
        ax.bar(xs + (i - (len(names) - 1) / 2) * width, hist[name], width, label=name)
    ax.set_xticks(xs)
    ax.set_xlabel("distinct labels over the K=10 reconstructions")
    ax.set_ylabel("share of images")
    ax.set_yscale("symlog", linthresh=0.01)
    ax.legend(fontsize=7, ncol=2)
    ax.set_title("Consistency under sampling: clean vs successful adversarial images")
    return _save(fig, path)


def roc_curves(curves: dict[str, tuple[np.ndarray, np.ndarray]], title: str, path: Path) -> Path:
    """curves: name -> (negative scores, positive scores); higher score = more anomalous."""
    fig, ax = plt.subplots(figsize=(5, 4.4))
    for name, (neg, pos) in curves.items():
        if len(neg) == 0 or len(pos) == 0:
            continue
        y = np.r_[np.zeros(len(neg)), np.ones(len(pos))]
        fpr, tpr, _ = roc_curve(y, np.r_[neg, pos])
        ax.plot(fpr, tpr, label=name, lw=1.2)
    ax.plot([0, 1], [0, 1], color="grey", lw=0.6, ls=":")
    ax.set_xscale("symlog", linthresh=1e-3)
    ax.set_xlim(0, 1)
    ax.set_xlabel("false positive rate (clean MNIST test)")
    ax.set_ylabel("true positive rate")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=6, loc="lower right")
    return _save(fig, path)


def reliability(bins: list[tuple[np.ndarray, np.ndarray, np.ndarray]], labels: list[str], path: Path) -> Path:
    """bins: per curve (mean confidence, accuracy, count) per bin."""
    fig, ax = plt.subplots(figsize=(4.6, 4.4))
    ax.plot([0, 1], [0, 1], color="grey", lw=0.6, ls=":")
    for (conf, acc, count), label in zip(bins, labels):
        keep = count > 0
        ax.plot(conf[keep], acc[keep], marker="o", ms=3, label=label)
    ax.set_xlabel("mean confidence (bin)")
    ax.set_ylabel("accuracy (bin)")
    ax.set_title("Reliability diagram (15 bins, MNIST test)", fontsize=9)
    ax.legend(fontsize=7)
    return _save(fig, path)


def risk_coverage(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(5, 4))
    for name, (coverage, risk) in curves.items():
        ax.plot(coverage, risk, label=name, lw=1.2)
    ax.set_xlabel("coverage (share of images accepted)")
    ax.set_ylabel("risk (error rate among accepted)")
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.set_title("Risk-coverage on MNIST test", fontsize=9)
    ax.legend(fontsize=7)
    return _save(fig, path)


def confidence_vs_loss(confidence: np.ndarray, loss: np.ndarray, correct: np.ndarray, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.scatter(loss[correct], 1 - confidence[correct] + 1e-7, s=2, alpha=0.3, label="correct")
    ax.scatter(loss[~correct], 1 - confidence[~correct] + 1e-7, s=6, alpha=0.8, color="red", label="wrong")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("reconstruction MSE (mean over K)")
    ax.set_ylabel("1 - max softmax")
    ax.set_title("Confidence vs reconstruction loss (MNIST test)", fontsize=9)
    ax.legend(fontsize=7)
    return _save(fig, path)


def example_grid(rows: dict[str, tuple[np.ndarray, list[str]]], path: Path) -> Path:
    """rows: row name -> (images (n,28,28), captions)."""
    n_cols = max(len(v[0]) for v in rows.values())
    fig, axes = plt.subplots(len(rows), n_cols, figsize=(1.2 * n_cols, 1.35 * len(rows)), squeeze=False)
    for r, (name, (images, captions)) in enumerate(rows.items()):
        for c in range(n_cols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(images):
                ax.imshow(images[c], cmap="gray", vmin=0, vmax=1)
                ax.set_title(captions[c], fontsize=6)
            else:
                ax.axis("off")
            if c == 0:
                ax.set_ylabel(name, fontsize=7)
    return _save(fig, path)


def adaptive_curve(eps: list[float], defended: list[float], undefended: list[float], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(4.6, 3.6))
    ax.plot(eps, undefended, marker="o", label="undefended classifier (PGD)")
    ax.plot(eps, defended, marker="s", label="EdgeGuard vs adaptive EOT-PGD")
    ax.set_xlabel("L-inf budget eps")
    ax.set_ylabel("attack success rate")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=7)
    ax.set_title("Adaptive attack: success (verdict clean, label wrong)", fontsize=8)
    return _save(fig, path)
