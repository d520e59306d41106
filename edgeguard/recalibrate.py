"""Calibrate on your own data: fit the calibration on a deployment's clean digits and write a new bundle.

``calibrate_bundle`` (and ``edgeguard calibrate``) screens the user's clean MNIST-style digits with the base
bundle's models (K, seed and kernels as for screening), fits ``Calibration.fit`` on their scores with the base
calibration's own signals and combination, and writes a new bundle folder: the base bundle's verified model bytes
(as ``load_bundle`` read and checked them, not read again) and a manifest that is the base's with ``calibration``
replaced. Nothing is written unless the whole calibration succeeded: the bundle is written into a temporary folder
beside ``out_dir``, verified with ``load_bundle``, and only then renamed into place.

The minimum size (``min_images``): a conformal p-value is never below 1/(n+1), and the false-alarm rate a
calibration on n clean images gives on new ones is itself random, spread by about sqrt(alpha (1 - alpha) / n),
roughly sqrt(alpha / n). Requiring n >= ceil(4 / alpha) keeps that spread at most alpha / 2: 400 images for
alpha 0.01, 80 for alpha 0.05.

The new manifest, besides the new ``calibration`` entry (with ``k``, ``seed``, ``n`` and a ``provenance`` block:
what it was fitted on, when, and the base bundle's path and manifest sha256):
- ``camera_calibration`` is the base's, kept and marked as fitted on filmed MNIST digits (``edgeguard webcam``
  prefers it; ``--calibration digits`` uses yours); it is dropped when ``k`` differs from the base's ``default_k``
  (its p-values are only valid for the K they were calibrated with, and ``default_k`` becomes the new ``k``);
- ``metrics`` and ``robustness`` are the base's, marked as measured on the base bundle with its calibration.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import math
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeguard import __version__
from edgeguard.bundle import Bundle, load_bundle, sha256_bytes, shipped_bundle_path
from edgeguard.calibration import Calibration
from edgeguard.contract import MANIFEST, MODEL_NAMES, N_CLASSES, SIDE
from edgeguard.errors import BundleError, CalibrationError
from edgeguard.guard import Guard, as_batch

__all__ = ["CalibrationSummary", "calibrate_bundle", "check_out_dir", "min_images"]

BATCH = 256
MAX_RECORDED_INPUTS = 20  # the manifest records at most this many of the inputs given, each cut to 200 characters
IN_SAMPLE = "the calibration images themselves (in-sample)"


def min_images(alpha: float) -> int:
    """The fewest clean images that calibrate for ``alpha``: ceil(4 / alpha) (see the module's docstring)."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be a number strictly between 0 and 1, got {alpha!r}")
    return math.ceil(4 / alpha - 1e-9)


def _too_few(n: int, alpha: float) -> str:
    return (f"need at least {min_images(alpha)} clean images to calibrate for alpha {alpha:g} (got {n}): a conformal "
            "p-value is never below 1/(n+1), and the false-alarm rate's spread, about sqrt(alpha/n), must stay within "
            "alpha/2, so n >= 4/alpha")


@dataclass(frozen=True)
class CalibrationSummary:
    """What ``calibrate_bundle`` fitted and wrote."""

    path: str  # the new bundle folder
    n: int  # clean images calibrated on
    alpha: float  # the alpha it was checked for (n >= min_images(alpha))
    min_images: int
    k: int
    seed: int
    combination: str
    signals: tuple[str, ...]
    #: signal -> {"yours": ..., "base": ...}: the 1 - alpha quantile of the clean scores (above it, the signal fires);
    #: "base" is None when the base was calibrated with another K
    quantiles: dict[str, dict[str, float | None]]
    flagged_share: float  # share of the calibration images themselves flagged at alpha (about alpha by construction)
    base_bundle: str
    base_manifest_sha256: str
    manifest_sha256: str  # of the new manifest.json: pin it with load_bundle(path, manifest_sha256=...)
    #: with labels: accuracy, clean_but_wrong_rate (of the images judged clean, the share whose label is wrong), counts;
    #: measured on the calibration images themselves
    labelled: dict[str, Any] | None = None
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["signals"], d["notes"] = list(self.signals), list(self.notes)
        return d

    def describe(self) -> list[str]:
        """The summary in lines of text (``edgeguard calibrate`` prints them)."""
        lines = [f"wrote {self.path}: the base bundle's models, calibrated on {self.n} clean images "
                 f"(alpha {self.alpha:g} needs at least {self.min_images})",
                 f"signals: {self.combination} combination of {', '.join(self.signals)} (k={self.k}, seed={self.seed})",
                 *(f"  {name}: 1-alpha quantile of the clean scores {q['yours']:.4g}"
                   + (f" (base bundle {q['base']:.4g})" if q["base"] is not None else "")
                   for name, q in self.quantiles.items()),
                 f"flagged at alpha {self.alpha:g} on the calibration images themselves: {self.flagged_share:.2%}"]
        if (y := self.labelled) is not None:
            lines.append(f"with labels, on the calibration images themselves: accuracy {y['accuracy']:.2%}, "
                         f"clean but wrong {y['clean_but_wrong_rate']:.2%} "
                         f"({y['clean_but_wrong']} of {y['clean']} judged clean)")
        lines += [f"note: {note}" for note in self.notes]
        lines.append(f"use it: edgeguard detect --bundle {self.path} ...  (manifest sha256 {self.manifest_sha256})")
        return lines


def check_out_dir(out_dir: str | os.PathLike[str], base: str | os.PathLike[str] | None = None, *,
                  force: bool = False) -> Path:
    """``out_dir`` as a Path, or a CalibrationError when writing the new bundle there is refused: it is (or holds) the
    base bundle or the shipped one, it is a symlink or a file, or it is a non-empty folder (with ``force``, a folder
    holding a bundle's manifest.json is replaced; any other non-empty folder never is)."""
    out = Path(out_dir)
    where = out.resolve()
    for protected, what in ((Path(base) if base is not None else shipped_bundle_path(), "the base bundle"),
                            (shipped_bundle_path(), "the shipped bundle")):
        if protected.resolve().is_relative_to(where):
            raise CalibrationError(f"{out}: --out is or holds {what}; write the new bundle to another folder")
    if out.is_symlink():
        raise CalibrationError(f"{out}: --out is a symlink; name a folder")
    if out.exists():
        if not out.is_dir():
            raise CalibrationError(f"{out}: exists and is not a folder")
        if any(out.iterdir()):
            if not force:
                raise CalibrationError(f"{out}: folder exists and is not empty; pass --force to replace the bundle "
                                       "in it")
            if not (out / MANIFEST).is_file():
                raise CalibrationError(f"{out}: folder is not empty and holds no bundle ({MANIFEST}); "
                                       "not replaced, even with --force")
    return out


def calibrate_bundle(images: np.ndarray, out_dir: str | os.PathLike[str], *,
                     base: str | os.PathLike[str] | None = None, labels: Sequence[int] | np.ndarray | None = None,
                     alpha: float = 0.01, inputs: Sequence[str] | None = None, k: int | None = None, seed: int = 0,
                     providers: str | Sequence[str] = "auto", kernels: str = "numpy", force: bool = False,
                     on_progress: Callable[[int], None] | None = None) -> CalibrationSummary:
    """Fits the calibration on clean ``images`` and writes a new bundle to ``out_dir``; returns what it did.

    ``images``: the deployment's clean digits, MNIST-style as ``Guard.screen`` takes them (uint8 or float32 in
    [0, 1], shaped (N,28,28) or (N,1,28,28); make other images MNIST-style with ``edgeguard.preprocess`` first).
    ``base``: the bundle whose models and signals are used (None: the shipped one). ``labels``: the true digit of
    each image (optional; adds accuracy and the clean-but-wrong rate, in-sample). ``alpha``: the false-alarm rate
    the calibration is meant for; fewer than ``min_images(alpha)`` images is refused. ``inputs``: what the images
    came from, recorded (truncated) in the manifest. ``k``, ``seed``, ``providers``, ``kernels``: as ``Guard.load``
    (``k`` becomes the new bundle's ``default_k``). ``force``: replace an existing bundle folder at ``out_dir``.
    ``on_progress``: called with the number of images after each screened batch.

    Raises CalibrationError (too few images, bad labels, a refused ``out_dir``, a failed write), BundleError or
    ProviderError (the base bundle), TypeError or ValueError (bad arguments). Nothing is written unless it returns.
    """
    need = min_images(alpha)
    out = check_out_dir(out_dir, base, force=force)
    x = as_batch(images).reshape(-1, SIDE, SIDE)  # checked, float32 in [0, 1]
    n = len(x)
    if n < need:
        raise CalibrationError(_too_few(n, alpha))
    truth = _check_labels(labels, n)
    guard = Guard.load(base, providers=providers, k=k, seed=seed, alpha=alpha, kernels=kernels)
    base_calibration = guard.calibration
    if base_calibration is None:
        raise BundleError(f"{guard.bundle.path}: the base bundle is not calibrated; its calibration names the signals "
                          "and the combination to fit (run `python -m export.calibrate`)")
    signals, predicted = _screen(guard, x, on_progress)
    calibration = Calibration.fit(signals, base_calibration.signals, base_calibration.combination)
    _, p = calibration.p_values(signals)
    clean = p >= alpha  # calibration.decide: clean exactly when the combined p-value is at least alpha
    labelled = None if truth is None else _label_metrics(predicted, truth, clean)
    flagged_share = round(float(np.mean(~clean)), 6)
    in_sample = {"alpha": alpha, "flagged_share": flagged_share, "measured_on": IN_SAMPLE,
                 **({"labels": labelled} if labelled else {})}
    manifest, notes = _new_manifest(guard, calibration, alpha=alpha, inputs=inputs, n=n, in_sample=in_sample)
    digest = _write_bundle(out, base, guard.bundle, manifest, force)
    same_k = base_calibration.k == guard.k  # the base's scores are only comparable when computed with the same K
    quantiles = {s: {"yours": _quantile(calibration.scores[s], alpha),
                     "base": _quantile(base_calibration.scores[s], alpha) if same_k else None}
                 for s in calibration.signals}
    return CalibrationSummary(
        path=os.fspath(out), n=n, alpha=alpha, min_images=need, k=guard.k, seed=guard.seed,
        combination=calibration.combination, signals=calibration.signals, quantiles=quantiles,
        flagged_share=flagged_share, base_bundle=os.fspath(guard.bundle.path),
        base_manifest_sha256=guard.bundle.manifest_sha256, manifest_sha256=digest, labelled=labelled,
        notes=tuple(notes))


def _check_labels(labels: Sequence[int] | np.ndarray | None, n: int) -> np.ndarray | None:
    if labels is None:
        return None
    y = np.asarray(labels)
    if y.shape != (n,):
        raise CalibrationError(f"labels: {y.size} label(s) for {n} images; give one label per image")
    if y.dtype.kind not in "iu" or (y.size and (y.min() < 0 or y.max() >= N_CLASSES)):
        raise CalibrationError(f"labels must be integers from 0 to {N_CLASSES - 1}")
    return y.astype(np.int64)


def _screen(guard: Guard, x: np.ndarray,
            on_progress: Callable[[int], None] | None) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Every signal and the classifier's label of each image, screened in batches."""
    parts, predicted = [], []
    for start in range(0, len(x), BATCH):
        screening = guard.analyze(x[start : start + BATCH])
        parts.append(screening.signals)
        predicted.append(screening.label)
        if on_progress is not None:
            on_progress(len(screening.label))
    return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}, np.concatenate(predicted)


def _label_metrics(predicted: np.ndarray, truth: np.ndarray, clean: np.ndarray) -> dict[str, Any]:
    wrong = predicted != truth
    n_clean, n_wrong = int(clean.sum()), int(wrong.sum())
    return {"accuracy": round(float(np.mean(~wrong)), 6),
            "clean_but_wrong_rate": round(int(np.sum(clean & wrong)) / n_clean, 6) if n_clean else 0.0,
            "clean": n_clean, "clean_but_wrong": int(np.sum(clean & wrong)), "wrong": n_wrong,
            "wrong_flagged_share": round(int(np.sum(~clean & wrong)) / n_wrong, 6) if n_wrong else None,
            "measured_on": IN_SAMPLE}


def _quantile(sorted_scores: np.ndarray, alpha: float) -> float:
    return round(float(np.quantile(sorted_scores, 1 - alpha)), 6)


def _new_manifest(guard: Guard, calibration: Calibration, *, alpha: float, inputs: Sequence[str] | None, n: int,
                  in_sample: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The base manifest with the new calibration in place of the old, and notes on what else changed."""
    bundle = guard.bundle
    manifest = copy.deepcopy(bundle.manifest)
    base_sha = bundle.manifest_sha256
    given = [str(item) for item in (inputs if inputs is not None else [f"an array of {n} images"])]
    entry = calibration.to_manifest()
    entry.update(k=guard.k, seed=guard.seed, n=n, split=f"{n} user images (edgeguard calibrate)", provenance={
        "fitted_on": "user images", "n": n,
        "inputs": [item[:200] for item in given[:MAX_RECORDED_INPUTS]], "inputs_given": len(given),
        "created": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
        "tool": f"edgeguard {__version__} calibrate", "alpha": alpha, "min_images_for_alpha": min_images(alpha),
        "base_bundle": os.fspath(bundle.path), "base_manifest_sha256": base_sha,
    }, in_sample=in_sample)
    manifest["calibration"] = entry
    notes = []
    if guard.k != bundle.default_k:
        notes.append(f"default_k is now {guard.k} (the base's is {bundle.default_k}): the calibration holds for the "
                     "K it was fitted with")
        manifest["default_k"] = guard.k
        if manifest.get("camera_calibration") is not None:
            manifest["camera_calibration"] = None
            notes.append("the base's camera calibration was dropped: it was fitted with another K")
    camera = manifest.get("camera_calibration")
    if isinstance(camera, dict):
        camera["note"] = ("the base bundle's, kept: fitted on held-out MNIST digits filmed on paper, not on the images "
                          "of `calibration`; edgeguard webcam uses it unless --calibration digits")
        notes.append("kept the base's camera calibration (filmed MNIST digits); `edgeguard webcam --calibration "
                     "digits` uses yours")
    for key in ("metrics", "robustness"):
        if isinstance(manifest.get(key), dict) and manifest[key]:
            manifest[key]["note"] = (f"the base bundle's figures (manifest sha256 {base_sha}), measured with its "
                                     "calibration on MNIST; not re-measured with this bundle's calibration")
    return manifest, notes


def _write_bundle(out: Path, base: str | os.PathLike[str] | None, bundle: Bundle, manifest: dict[str, Any],
                  force: bool) -> str:
    """Writes the bundle into a temporary folder beside ``out``, verifies it, renames it into place; its digest."""
    target = out.resolve()
    data = (json.dumps(manifest, indent=1) + "\n").encode("utf-8")
    digest = sha256_bytes(data)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.partial-"))
    except OSError as e:
        raise CalibrationError(f"{out}: cannot write the new bundle ({e.strerror or e})") from None
    try:
        os.chmod(tmp, 0o755)
        for name in MODEL_NAMES:
            (tmp / bundle.info.models[name].file).write_bytes(bundle.models[name])
        (tmp / MANIFEST).write_bytes(data)
        load_bundle(tmp, manifest_sha256=digest)  # what Guard.load(out) will check, before anything is in place
        check_out_dir(out, base, force=force)  # again: something may have appeared at `out` meanwhile
        _publish(tmp, target)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CalibrationError(f"{out}: cannot write the new bundle ({e.strerror or e})") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return digest


def _publish(tmp: Path, target: Path) -> None:
    """Renames ``tmp`` to ``target``, replacing an empty folder or (check_out_dir allowed it) an old bundle."""
    if not target.exists():
        os.rename(tmp, target)
        return
    if not any(target.iterdir()):
        target.rmdir()
        os.rename(tmp, target)
        return
    old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:12]}")
    os.rename(target, old)
    try:
        os.rename(tmp, target)
    except OSError:
        os.rename(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)
