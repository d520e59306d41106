"""Detection and calibration metrics for the robustness report: AUROC, AUPR, FPR at 95% TPR, expected
calibration error, temperature scaling, risk-coverage."""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve


def auroc(neg: np.ndarray, pos: np.ndarray) -> float:
    if len(neg) == 0 or len(pos) == 0:
        return float("nan")
    return float(roc_auc_score(np.r_[np.zeros(len(neg)), np.ones(len(pos))], np.r_[neg, pos]))


def aupr(neg: np.ndarray, pos: np.ndarray) -> float:
    if len(neg) == 0 or len(pos) == 0:
        return float("nan")
    return float(average_precision_score(np.r_[np.zeros(len(neg)), np.ones(len(pos))], np.r_[neg, pos]))


def fpr_at_95tpr(neg: np.ndarray, pos: np.ndarray) -> float:
    if len(neg) == 0 or len(pos) == 0:
        return float("nan")
    fpr, tpr, _ = roc_curve(np.r_[np.zeros(len(neg)), np.ones(len(pos))], np.r_[neg, pos])
    return float(fpr[np.searchsorted(tpr, 0.95, side="left")])


def ece(confidence: np.ndarray, correct: np.ndarray, n_bins: int = 15):
    edges = np.linspace(0, 1, n_bins + 1)
    idx = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)
    conf, acc, count = np.zeros(n_bins), np.zeros(n_bins), np.zeros(n_bins)
    for b in range(n_bins):
        m = idx == b
        count[b] = m.sum()
        if count[b]:
            conf[b], acc[b] = confidence[m].mean(), correct[m].mean()
    return float(np.sum(count / len(confidence) * np.abs(acc - conf))), (conf, acc, count)


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    def nll(log_t):
        z = logits / np.exp(log_t)
        z = z - z.max(1, keepdims=True)
        return float(-(z[np.arange(len(z)), labels] - np.log(np.exp(z).sum(1))).mean())

    return float(np.exp(minimize_scalar(nll, bounds=(-3, 3), method="bounded").x))


def risk_coverage(accept_score: np.ndarray, correct: np.ndarray):
    """Accept the highest accept_score first; returns (coverage, risk) and the AURC."""
    order = np.argsort(-accept_score, kind="stable")
    errors = np.cumsum(~correct[order])
    n = np.arange(1, len(order) + 1)
    risk = errors / n
    return (n / len(order), risk), float(risk.mean())
