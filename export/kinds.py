"""Fit the kind rule (edgeguard.kinds) on held-out data: attacks on digits against things that are not digits.

The data is ``export/select_signals.py``'s selection data: the successful attacks (FGSM, PGD, C&W) on the
held-out split's evaluating half are the ``adversarial`` class, and its out-of-distribution selection sets
(Fashion-MNIST training images, noise, generated scribbles and shapes, letters from the training fonts with a
seed of their own) the ``out_of_distribution`` class. Only the images the chosen calibration flags at alpha
are used: the rule names the kind of flagged images and nothing else. A logistic regression on the logs of all
eight raw signals, standardised, each class weighted equally and each set equally within its class. Its
five-fold cross-validated figures are recorded beside it; the robustness report measures it on the test sets
(other attacks, other non-digits) that it never saw.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold

from edgeguard.calibration import Calibration
from edgeguard.contract import SCORE_NAMES
from edgeguard.kinds import KindRule, features

REGULARISATION = 1.0  # sklearn's C


def _flagged(calibration: Calibration, signals: dict[str, np.ndarray], alpha: float) -> np.ndarray:
    _, p = calibration.p_values(signals)
    return features({n: signals[n][p < alpha] for n in SCORE_NAMES}, SCORE_NAMES)


def _weights(groups: list[np.ndarray]) -> np.ndarray:
    """Each set the same total weight within its class."""
    return np.concatenate([np.full(len(g), 1.0 / max(len(g), 1)) for g in groups])


def _fit(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> KindRule:
    mean, scale = x.mean(0), x.std(0)
    scale[scale < 1e-9] = 1.0
    model = LogisticRegression(C=REGULARISATION, max_iter=1000)
    model.fit((x - mean) / scale, y, sample_weight=w * len(w) / w.sum())
    return KindRule(SCORE_NAMES, mean, scale, model.coef_[0].astype(np.float64), float(model.intercept_[0]))


def fit_kind_rule(data: dict[str, Any], calibration: Calibration, alpha: float, seed: int = 0) -> dict[str, Any]:
    """The rule fitted on the flagged selection images, and its cross-validated figures per set."""
    attacks = {name: _flagged(calibration, s, alpha) for name, s in data["attacks"].items()}
    others = {name: _flagged(calibration, s, alpha) for name, s in data["ood"].items()}
    sets = {**attacks, **others}
    x = np.concatenate(list(sets.values()))
    y = np.concatenate([np.full(len(v), name in attacks, bool) for name, v in sets.items()])
    source = np.concatenate([np.full(len(v), i) for i, v in enumerate(sets.values())])
    w = np.concatenate([0.5 * _weights(list(attacks.values())), 0.5 * _weights(list(others.values()))])
    right = np.zeros(len(y), bool)
    for train, test in StratifiedKFold(5, shuffle=True, random_state=seed).split(x, source):
        right[test] = _fit(x[train], y[train], w[train]).adversarial_features(x[test]) == y[test]
    rule = _fit(x, y, w)
    cv = {name: round(float(right[source == i].mean()), 4) if (source == i).any() else None
          for i, name in enumerate(sets)}
    return {"rule": rule.to_manifest(), "alpha": alpha,
            "flagged": {name: int(len(v)) for name, v in sets.items()},
            "adversarial": list(attacks), "out_of_distribution": list(others),
            "cross_validated_right": cv,
            "method": "logistic regression on log signals, standardised; classes and sets weighted equally; "
                      "fitted on the flagged held-out selection images"}
