"""Conformal p-values and the verdict rule.

Each signal is a score where higher means "less like a clean digit". The calibration holds, for each
signal, the sorted scores of the clean held-out calibration split (the last 5,000 MNIST training
images, never trained on). A score s becomes the conformal p-value

    p = (1 + #{calibration scores >= s}) / (n + 1).

The signals in use (chosen on held-out data by export/select_signals.py; the manifest records the choice)
are combined with Fisher's statistic T = -2 * sum(log p_j) (or, when the manifest says
``"combination": "min_p"``, Tippett's T = -log(min_j p_j)), and T is calibrated the same way
against the calibration split's own (leave-one-out) statistics. That final p-value is
valid whatever the dependence between the signals, and unlike Bonferroni it is not conservative:
flagging at p < alpha gives a clean false-alarm rate close to alpha.

The verdict rule (the one place that maps signals to verdicts):

- combined p >= alpha: **clean**.
- otherwise, look at the signals whose own p-value is below alpha ("fired"). If a consistency or
  reconstruction signal fired and the bundle has a kind rule (edgeguard.kinds, fitted on held-out data):
  **adversarial** or **out_of_distribution**, as that rule says. Without a kind rule, by group:
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
import math
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from edgeguard import kernels_numpy
from edgeguard.contract import SCORE_NAMES
from edgeguard.errors import BundleError
from edgeguard.kernels_numpy import fisher, min_p

CONSISTENCY, RECONSTRUCTION, CONFIDENCE = "consistency", "reconstruction", "confidence"

_MEANINGS = {
    "disagreement": (CONSISTENCY, "the reconstructions' labels disagree (1 - agreement)"),
    "input_mismatch": (CONSISTENCY, "the reconstructions' labels differ from the input's label"),
    "vote_entropy": (CONSISTENCY, "the vote over the reconstructions' labels is spread"),
    "recon_mse": (RECONSTRUCTION, "the reconstructions are far from the input (mean pixel MSE)"),
    "recon_mse_min": (RECONSTRUCTION, "even the closest reconstruction is far from the input"),
    "kl": (RECONSTRUCTION, "the posterior is far from the prior (KL)"),
    "posterior_spread": (RECONSTRUCTION, "the posterior is wide (mean standard deviation)"),
    "low_confidence": (CONFIDENCE, "the classifier is unsure of the input (1 - max softmax)"),
}
#: name -> (group, what a high score means), in contract.SCORE_NAMES order (the kernels' columns).
SIGNALS: dict[str, tuple[str, str]] = {name: _MEANINGS[name] for name in SCORE_NAMES}

VERDICTS = ("clean", "adversarial", "out_of_distribution", "uncertain")


def encode_scores(values: np.ndarray) -> dict[str, Any]:
    """Sorted float32 scores as compact JSON (base64 of the little-endian bytes)."""
    data = np.sort(np.asarray(values, dtype="<f4"))
    return {"n": int(data.size), "dtype": "float32", "base64": base64.b64encode(data.tobytes()).decode("ascii")}


def decode_scores(entry: dict[str, Any]) -> np.ndarray:
    try:
        data = np.frombuffer(base64.b64decode(entry["base64"], validate=True), dtype="<f4").astype(np.float32)
    except (KeyError, TypeError, ValueError) as e:
        raise BundleError(f"calibration scores are malformed ({e})") from None
    if data.size != entry.get("n") or data.size == 0 or not np.all(np.isfinite(data)) or np.any(np.diff(data) < 0):
        raise BundleError("calibration scores must be a non-empty, finite, sorted list matching 'n'")
    return data


#: name -> statistic over the last axis of per-signal p-values (higher = more anomalous)
COMBINATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {"fisher": fisher, "min_p": min_p}


@dataclass(frozen=True)
class Calibration:
    signals: tuple[str, ...]
    scores: dict[str, np.ndarray]  # signal -> sorted clean scores
    combined: np.ndarray  # sorted combination statistics of the calibration split
    combination: str = "fisher"  # a key of COMBINATIONS
    # What the manifest entry records beside the scores (None for a calibration just fitted):
    k: int | None = None  # samples per image the scores were computed with
    seed: int | None = None
    test_false_alarm_rate: dict[str, float] | None = None  # alpha (as text) -> clean false-alarm rate measured

    @property
    def n(self) -> int:
        """How many clean images the p-values are calibrated on."""
        return int(self.combined.size)

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

    def to_manifest(self) -> dict[str, Any]:
        name = {"fisher": "Fisher", "min_p": "min-p (Tippett)"}[self.combination]
        return {
            "method": f"conformal p-values per signal, {name} combination, conformally calibrated",
            "combination": self.combination,
            "signals": list(self.signals),
            "scores": {name: encode_scores(self.scores[name]) for name in self.signals},
            "combined": encode_scores(self.combined),
        }

    @classmethod
    def from_manifest(cls, entry: object, default_k: int | None = None, key: str = "calibration") -> Calibration:
        """The calibration in a manifest entry, checked (the one place that checks it).

        Raises BundleError, its message starting with ``key`` (the entry's name in the manifest), unless the entry
        names distinct known signals, holds one finite sorted float32 block of ``n`` scores per signal and for the
        combination, and was computed with ``k == default_k`` (any integer ``k`` when ``default_k`` is None).
        """
        if not isinstance(entry, dict):
            raise BundleError(f"{key!r} must be a JSON object (or null for an uncalibrated bundle)")
        signals = entry.get("signals")
        if not (isinstance(signals, list) and signals and all(isinstance(s, str) for s in signals)):
            raise BundleError(f"{key}: 'signals' must be a non-empty list of signal names")
        unknown = [s for s in signals if s not in SIGNALS]
        if unknown or len(set(signals)) != len(signals):
            raise BundleError(f"{key}: 'signals' must name distinct known signals ({', '.join(SIGNALS)}); "
                              f"got {signals}")
        scores = entry.get("scores")
        if not isinstance(scores, dict) or set(scores) != set(signals):
            raise BundleError(f"{key}: 'scores' must hold exactly one entry per listed signal")
        combination = entry.get("combination", "fisher")  # manifests before the choice was recorded: Fisher
        if combination not in COMBINATIONS:
            raise BundleError(f"{key}: unknown combination {entry.get('combination')!r}; "
                              f"expected one of {', '.join(COMBINATIONS)}")
        n = entry.get("n")
        if type(n) is not int or n < 1:
            raise BundleError(f"{key}: 'n' must be a positive integer, got {n!r}")
        decoded = {}
        for name, block in [*scores.items(), ("combined", entry.get("combined"))]:
            if not (isinstance(block, dict) and block.get("dtype") == "float32" and type(block.get("n")) is int):
                raise BundleError(f"{key}: {name!r} must be an object with 'n', 'dtype': 'float32' and 'base64'")
            try:
                decoded[name] = decode_scores(block)
            except BundleError as e:
                raise BundleError(f"{key}: {name!r}: {e}") from None
            if decoded[name].size != n:
                raise BundleError(f"{key}: {name!r} holds {decoded[name].size} scores but 'n' is {n}")
        k = entry.get("k")
        if type(k) is not int or (default_k is not None and k != default_k):
            raise BundleError(f"{key}: computed with k={k!r} but 'default_k' is {default_k}; "
                              "the p-values are only valid for the k they were calibrated with (recalibrate)")
        seed = entry.get("seed")
        if type(seed) is not int or seed < 0:
            raise BundleError(f"{key}: 'seed' must be a non-negative integer, got {seed!r}")
        rates = entry.get("test_false_alarm_rate", {})
        if not (isinstance(rates, dict)
                and all(isinstance(v, (int, float)) and math.isfinite(v) for v in rates.values())):
            raise BundleError(f"{key}: 'test_false_alarm_rate' must map alphas to numbers")
        return cls(tuple(signals), {s: decoded[s] for s in signals}, decoded["combined"], combination, k=k, seed=seed,
                   test_false_alarm_rate=entry.get("test_false_alarm_rate"))

    @functools.cached_property
    def table(self) -> np.ndarray:
        """(S, n) float32: the signals' sorted clean scores in one array, the layout the kernels take."""
        if len({self.scores[s].size for s in self.signals}) != 1:
            raise ValueError("every signal needs the same number of calibration scores")
        return np.stack([self.scores[s] for s in self.signals]).astype(np.float32)

    def p_values(self, scores: dict[str, np.ndarray],
                 kernels: ModuleType = kernels_numpy) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Per-signal p-values and the combined p-value, for a batch of scores (``kernels``: edgeguard.kernels
        or edgeguard.kernels_numpy; both give the same numbers)."""
        matrix = np.stack([np.asarray(scores[s], np.float32) for s in self.signals], axis=1)
        p, combined = kernels.p_values(self.table, matrix, np.ascontiguousarray(self.combined, np.float32),
                                       self.combination == "min_p")
        return dict(zip(self.signals, p.T)), combined


def decide(p_signals: dict[str, float], p_combined: float, alpha: float,
           adversarial: bool | None = None) -> tuple[str, tuple[str, ...]]:
    """The verdict rule above, for one image: (verdict, reasons). ``adversarial``: the bundle's kind rule's call
    for this image (edgeguard.kinds), which names the kind of a flagged image; None: the group rule does."""
    if p_combined >= alpha:
        return "clean", ()
    fired = sorted((p, name) for name, p in p_signals.items() if p < alpha)
    reasons = tuple(name for _, name in fired)
    best = {group: min((p for p, name in fired if SIGNALS[name][0] == group), default=None)
            for group in (CONSISTENCY, RECONSTRUCTION)}
    recon, consistency = best[RECONSTRUCTION], best[CONSISTENCY]
    if adversarial is not None and (recon is not None or consistency is not None):
        return ("adversarial" if adversarial else "out_of_distribution"), reasons
    if recon is not None and (consistency is None or recon <= consistency):
        return "out_of_distribution", reasons
    if consistency is not None:
        return "adversarial", reasons
    return "uncertain", reasons or ("combined",)
