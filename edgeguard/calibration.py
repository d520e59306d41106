"""Conformal p-values and the verdict rule.

Each signal is a score where higher means "less like a clean digit". The calibration holds, for each
signal, the sorted scores of the clean held-out calibration split (the last 5,000 MNIST training
images, never trained on). A score s becomes the conformal p-value

    p = (1 + #{calibration scores >= s}) / (n + 1).

The signals in use (chosen in the robustness lab, see reports/robustness.md and export/calibrate.py)
are combined with Fisher's statistic T = -2 * sum(log p_j) (or, when the manifest says
``"combination": "min_p"``, Tippett's T = -log(min_j p_j)), and T is calibrated the same way
against the calibration split's own (leave-one-out) statistics. That final p-value is
valid whatever the dependence between the signals, and unlike Bonferroni it is not conservative:
flagging at p < alpha gives a clean false-alarm rate close to alpha.

The verdict rule (the one place that maps signals to verdicts):

- combined p >= alpha: **clean**.
- otherwise, look at the signals whose own p-value is below alpha ("fired"), by group:
  - a reconstruction/latent signal fired with a p-value no larger than any consistency signal's:
    **out_of_distribution** (the VAE cannot represent the input);
  - else a consistency signal fired: **adversarial** (the reconstructions disagree with each other
    or with the input's label, while the input still looks like a digit);
  - else a reconstruction/latent signal fired: **out_of_distribution**;
  - else (only low confidence, or evidence that is only significant in combination): **uncertain**.
"""

from __future__ import annotations

import base64
import functools
from dataclasses import dataclass

import numpy as np

from edgeguard import kernels_numpy
from edgeguard.errors import BundleError
from edgeguard.kernels_numpy import fisher, min_p

CONSISTENCY, RECONSTRUCTION, CONFIDENCE = "consistency", "reconstruction", "confidence"

#: name -> (group, what a high score means)
SIGNALS: dict[str, tuple[str, str]] = {
    "disagreement": (CONSISTENCY, "the reconstructions' labels disagree (1 - agreement)"),
    "input_mismatch": (CONSISTENCY, "the reconstructions' labels differ from the input's label"),
    "vote_entropy": (CONSISTENCY, "the vote over the reconstructions' labels is spread"),
    "recon_mse": (RECONSTRUCTION, "the reconstructions are far from the input (mean pixel MSE)"),
    "recon_mse_min": (RECONSTRUCTION, "even the closest reconstruction is far from the input"),
    "kl": (RECONSTRUCTION, "the posterior is far from the prior (KL)"),
    "posterior_spread": (RECONSTRUCTION, "the posterior is wide (mean standard deviation)"),
    "low_confidence": (CONFIDENCE, "the classifier is unsure of the input (1 - max softmax)"),
}

VERDICTS = ("clean", "adversarial", "out_of_distribution", "uncertain")


def encode_scores(values: np.ndarray) -> dict:
    """Sorted float32 scores as compact JSON (base64 of the little-endian bytes)."""
    data = np.sort(np.asarray(values, dtype="<f4"))
    return {"n": int(data.size), "dtype": "float32", "base64": base64.b64encode(data.tobytes()).decode("ascii")}


def decode_scores(entry: dict) -> np.ndarray:
    try:
        data = np.frombuffer(base64.b64decode(entry["base64"], validate=True), dtype="<f4").astype(np.float32)
    except (KeyError, TypeError, ValueError) as e:
        raise BundleError(f"calibration scores are malformed ({e})") from None
    if data.size != entry.get("n") or data.size == 0 or not np.all(np.isfinite(data)) or np.any(np.diff(data) < 0):
        raise BundleError("calibration scores must be a non-empty, finite, sorted list matching 'n'")
    return data


#: name -> statistic over the last axis of per-signal p-values (higher = more anomalous)
COMBINATIONS = {"fisher": fisher, "min_p": min_p}


@dataclass(frozen=True)
class Calibration:
    signals: tuple[str, ...]
    scores: dict[str, np.ndarray]  # signal -> sorted clean scores
    combined: np.ndarray  # sorted combination statistics of the calibration split
    combination: str = "fisher"  # a key of COMBINATIONS

    @classmethod
    def fit(cls, scores: dict[str, np.ndarray], signals: tuple[str, ...] | None = None,
            combination: str = "fisher") -> Calibration:
        """Calibrates on clean scores (one array per signal, same length)."""
        signals = tuple(signals or scores)
        unknown = [s for s in signals if s not in SIGNALS]
        if unknown:
            raise ValueError(f"unknown signal(s): {', '.join(unknown)}")
        if combination not in COMBINATIONS:
            raise ValueError(f"unknown combination {combination!r}; expected one of {', '.join(COMBINATIONS)}")
        sorted_scores = {name: np.sort(np.asarray(scores[name], np.float32)) for name in signals}
        n = len(next(iter(sorted_scores.values())))
        # Leave-one-out p-values of the calibration points themselves: #{others >= s} + 1 over n.
        loo = np.stack([(n - np.searchsorted(sorted_scores[s], np.asarray(scores[s], np.float32), side="left")) / n
                        for s in signals], axis=1)
        return cls(signals, sorted_scores, np.sort(COMBINATIONS[combination](loo)).astype(np.float32), combination)

    def to_manifest(self) -> dict:
        name = {"fisher": "Fisher", "min_p": "min-p (Tippett)"}[self.combination]
        return {
            "method": f"conformal p-values per signal, {name} combination, conformally calibrated",
            "combination": self.combination,
            "signals": list(self.signals),
            "scores": {name: encode_scores(self.scores[name]) for name in self.signals},
            "combined": encode_scores(self.combined),
        }

    @classmethod
    def from_manifest(cls, entry: dict) -> Calibration:
        if not isinstance(entry, dict) or not isinstance(entry.get("signals"), list) or not entry["signals"]:
            raise BundleError("the manifest's calibration must list its signals")
        signals = tuple(entry["signals"])
        unknown = [s for s in signals if s not in SIGNALS]
        if unknown:
            raise BundleError(f"the manifest's calibration names unknown signal(s): {', '.join(map(str, unknown))}")
        scores = entry.get("scores")
        if not isinstance(scores, dict) or any(s not in scores for s in signals):
            raise BundleError("the manifest's calibration lacks scores for some of its signals")
        combination = entry.get("combination", "fisher")  # manifests before the choice was recorded: Fisher
        if combination not in COMBINATIONS:
            raise BundleError(f"the manifest's calibration names an unknown combination {combination!r}; "
                              f"expected one of {', '.join(COMBINATIONS)}")
        return cls(signals, {s: decode_scores(scores[s]) for s in signals}, decode_scores(entry.get("combined", {})),
                   combination)

    @functools.cached_property
    def table(self) -> np.ndarray:
        """(S, n) float32: the signals' sorted clean scores in one array, the layout the kernels take."""
        if len({self.scores[s].size for s in self.signals}) != 1:
            raise ValueError("every signal needs the same number of calibration scores")
        return np.stack([self.scores[s] for s in self.signals]).astype(np.float32)

    def p_values(self, scores: dict[str, np.ndarray], kernels=kernels_numpy) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Per-signal p-values and the combined p-value, for a batch of scores (``kernels``: edgeguard.kernels
        or edgeguard.kernels_numpy; both give the same numbers)."""
        matrix = np.column_stack([np.asarray(scores[s], np.float32) for s in self.signals])
        p, combined = kernels.p_values(self.table, matrix, np.ascontiguousarray(self.combined, np.float32),
                                       self.combination == "min_p")
        return dict(zip(self.signals, p.T)), combined


def decide(p_signals: dict[str, float], p_combined: float, alpha: float) -> tuple[str, tuple[str, ...]]:
    """The verdict rule above, for one image: (verdict, reasons)."""
    if p_combined >= alpha:
        return "clean", ()
    fired = sorted((p, name) for name, p in p_signals.items() if p < alpha)
    reasons = tuple(name for _, name in fired)
    best = {group: min((p for p, name in fired if SIGNALS[name][0] == group), default=None)
            for group in (CONSISTENCY, RECONSTRUCTION)}
    recon, consistency = best[RECONSTRUCTION], best[CONSISTENCY]
    if recon is not None and (consistency is None or recon <= consistency):
        return "out_of_distribution", reasons
    if consistency is not None:
        return "adversarial", reasons
    return "uncertain", reasons or ("combined",)
