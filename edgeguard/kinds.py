"""The kind of a flagged image: an attack on a digit (``adversarial``) or not a digit (``out_of_distribution``).

Whether an image is flagged is the calibrated p-value's call (edgeguard.calibration); what kind of problem it is
is this rule's. It is linear in the logs of the raw signals (every column ``kernels.score`` writes), standardised:

    adversarial  <=>  coef . ((log(scores + EPS) - mean) / scale) + intercept > 0

``export/kinds.py`` fits it on held-out data only (attacks on held-out digits against generated non-digits,
noise and Fashion-MNIST training images) and writes it to the manifest's ``kind_rule``; the robustness report
measures it on the test sets. A bundle without a ``kind_rule`` falls back to the group rule in
``edgeguard.calibration.decide``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeguard.contract import SCORE_NAMES
from edgeguard.errors import BundleError

EPS = 1e-4  # keeps the log of a zero score finite


def features(scores: dict[str, np.ndarray], names: tuple[str, ...]) -> np.ndarray:
    """(B, F) float64: log(score + EPS) of each named signal."""
    return np.log(np.stack([np.asarray(scores[n], np.float64) for n in names], axis=1) + EPS)


@dataclass(frozen=True)
class KindRule:
    names: tuple[str, ...]  # the signals it reads, from contract.SCORE_NAMES
    mean: np.ndarray  # (F,)
    scale: np.ndarray  # (F,)
    coef: np.ndarray  # (F,)
    intercept: float

    def adversarial(self, scores: dict[str, np.ndarray]) -> np.ndarray:
        """(B,) bool: which images the rule calls attacks (meaningful for flagged images only)."""
        return self.adversarial_features(features(scores, self.names))

    def adversarial_features(self, f: np.ndarray) -> np.ndarray:
        """The same from ``features`` (B, F) already computed."""
        return np.asarray((f - self.mean) / self.scale @ self.coef + self.intercept > 0)

    def to_manifest(self) -> dict[str, Any]:
        return {"signals": list(self.names), "mean": self.mean.tolist(), "scale": self.scale.tolist(),
                "coef": self.coef.tolist(), "intercept": self.intercept}

    @classmethod
    def from_manifest(cls, entry: object) -> KindRule:
        """Checks the manifest's ``kind_rule`` entry (BundleError naming what is wrong)."""
        if not isinstance(entry, dict):
            raise BundleError(f"kind_rule: must be an object, got {type(entry).__name__}")
        names = entry.get("signals")
        if not (isinstance(names, list) and names and all(n in SCORE_NAMES for n in names)):
            raise BundleError(f"kind_rule: 'signals' must be a non-empty list of {', '.join(SCORE_NAMES)}")
        arrays = {}
        for key in ("mean", "scale", "coef"):
            value = entry.get(key)
            if not (isinstance(value, list) and len(value) == len(names)
                    and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                            for v in value)):
                raise BundleError(f"kind_rule: {key!r} must be {len(names)} finite numbers")
            arrays[key] = np.asarray(value, np.float64)
        if (arrays["scale"] <= 0).any():
            raise BundleError("kind_rule: 'scale' must be positive")
        intercept = entry.get("intercept")
        if not (isinstance(intercept, (int, float)) and not isinstance(intercept, bool) and math.isfinite(intercept)):
            raise BundleError("kind_rule: 'intercept' must be a finite number")
        return cls(tuple(names), arrays["mean"], arrays["scale"], arrays["coef"], float(intercept))
