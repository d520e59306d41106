"""Measures a bundle through the real runtime (edgeguard.Guard), so the manifest's figures are the runtime's."""

from __future__ import annotations

import numpy as np

from edgeguard.guard import Guard, Screening

BATCH = 500
ALPHAS = (0.001, 0.01, 0.05, 0.1)  # where the manifest reports clean false-alarm rates


def analyze_all(guard: Guard, images: np.ndarray) -> Screening:
    """Guard.analyze over many images in batches, concatenated."""
    parts = [guard.analyze(images[i : i + BATCH]) for i in range(0, len(images), BATCH)]
    return Screening(
        label=np.concatenate([p.label for p in parts]),
        confidence=np.concatenate([p.confidence for p in parts]),
        labels=np.concatenate([p.labels for p in parts]),
        purified_label=np.concatenate([p.purified_label for p in parts]),
        n_distinct=np.concatenate([p.n_distinct for p in parts]),
        agreement=np.concatenate([p.agreement for p in parts]),
        signals={name: np.concatenate([p.signals[name] for p in parts]) for name in parts[0].signals},
        blank=np.concatenate([p.blank for p in parts if p.blank is not None]) if parts[0].blank is not None else None,
    )


def accuracy_metrics(screening: Screening, labels: np.ndarray) -> dict:
    """The Foundation metrics: clean accuracy, purified accuracy, share with one label over K samples."""
    return {
        "clean_accuracy": round(float(np.mean(screening.label == labels)), 6),
        "purified_accuracy": round(float(np.mean(screening.purified_label == labels)), 6),
        "unanimous_share": round(float(np.mean(screening.n_distinct == 1)), 6),
        "mean_distinct_labels": round(float(np.mean(screening.n_distinct)), 6),
    }


def false_alarm_rates(p_values: np.ndarray) -> dict[str, float]:
    """Share of clean images flagged (p < alpha) at each of ALPHAS, keyed by the alpha as text."""
    return {str(a): round(float(np.mean(p_values < a)), 6) for a in ALPHAS}
