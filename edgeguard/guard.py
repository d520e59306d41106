"""Guard: screens digit images and says whether to trust the classifier's answer.

One screening of a batch of B images with K samples each flows one way:

    x (B,28,28) -> contrast.standardize (polarity, background, ink peak) -> x
      -> encoder -> mu, logvar (B,D) -> kernels.sample_latents -> z (B*K,D)
      -> decoder -> recon (B*K,28,28);  x + recon -> classifier -> logits
      -> kernels.score (vote and every signal, one call) -> signals (B,S) -> calibration, kind rule -> Verdict per image

"kernels" is edgeguard.kernels (numba) or its NumPy twin edgeguard.kernels_numpy, chosen at load.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np
import onnxruntime as ort

from edgeguard.bundle import Bundle, load_bundle
from edgeguard.calibration import SIGNALS, Calibration, decide
from edgeguard.contract import CALIBRATIONS, N_PIXELS, SIDE
from edgeguard.contrast import standardize
from edgeguard.errors import BundleError, InputError
from edgeguard.kinds import KindRule
from edgeguard.sessions import create_session, providers_from_choice

if TYPE_CHECKING:  # edgeguard.sheet imports this module; it is imported where used
    from edgeguard.sheet import FoundDigit, ImageResult

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Verdict:
    """What EdgeGuard concluded about one image."""

    label: int  # the classifier's label for the input
    confidence: float  # its max softmax probability
    purified_label: int  # the majority label over the K reconstructions
    n_distinct: int  # how many different labels the K reconstructions got
    agreement: float  # share of the K reconstructions voting for the purified label
    labels: tuple[int, ...]  # the K reconstructions' labels
    scores: dict[str, float]  # every signal (higher = less like a clean digit)
    p_values: dict[str, float]  # conformal p-value of each calibrated signal
    p_value: float  # the combined p-value
    verdict: str  # clean, adversarial, out_of_distribution or uncertain
    reasons: tuple[str, ...]  # the signals that fired
    source: str | None = None  # the file it came from, when there was one
    bundle_id: str | None = None  # the bundle that screened it: a prefix of its manifest's sha256 (`edgeguard info`)

    @property
    def flagged(self) -> bool:
        return self.verdict != "clean"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: every field in order (tuples as lists, the dicts copied), then ``flagged``. Built field by
        field: ``dataclasses.asdict`` deep-copies each value, which took a third of ``edgeguard detect``'s time."""
        d = {f.name: getattr(self, f.name) for f in _VERDICT_FIELDS}
        d["scores"], d["p_values"] = dict(self.scores), dict(self.p_values)
        d["labels"], d["reasons"], d["flagged"] = list(self.labels), list(self.reasons), self.flagged
        return d


_VERDICT_FIELDS = fields(Verdict)


@dataclass
class Screening:
    """The raw per-image arrays of one screening, before the verdict."""

    label: np.ndarray
    confidence: np.ndarray
    labels: np.ndarray  # (B, K)
    purified_label: np.ndarray
    n_distinct: np.ndarray
    agreement: np.ndarray
    signals: dict[str, np.ndarray] = field(default_factory=dict)
    recon: np.ndarray | None = None  # (B, K, 28, 28), only when asked for
    blank: np.ndarray | None = None  # (B,) bool: no ink above the background (edgeguard.contrast)


def as_batch(images: object) -> np.ndarray:
    """One image or a batch -> contiguous float32 (B, 784) in [0, 1], or a clear TypeError/ValueError.

    uint8 pixels are divided by 255; floats of any precision (float32, float64 such as ``x / 255.0``, float16)
    must already lie in [0, 1] and are checked before they are rounded to float32."""
    if not isinstance(images, np.ndarray):
        raise TypeError(f"images must be a numpy array (uint8 or float), got {type(images).__name__}")
    is_float = np.issubdtype(images.dtype, np.floating)
    if images.dtype != np.uint8 and not is_float:
        raise TypeError(f"images must be uint8 (0..255) or float (0..1), got dtype {images.dtype}")
    shape = images.shape
    if not (shape == (SIDE, SIDE) or len(shape) == 3 and shape[1:] == (SIDE, SIDE)
            or len(shape) == 4 and shape[1:] == (1, SIDE, SIDE)):
        raise ValueError(f"images must be shaped (28,28), (B,28,28) or (B,1,28,28), got {shape}")
    if is_float and images.size:
        if not np.isfinite(images).all():
            raise ValueError("images contain NaN or infinity")
        lo, hi = float(images.min()), float(images.max())
        if lo < 0.0 or hi > 1.0:
            raise ValueError(f"float images must lie in [0, 1], got values in [{lo:.3g}, {hi:.3g}] "
                             "(divide 0..255 pixels by 255, or pass them as uint8)")
    x = images.astype(np.float32) / np.float32(255.0) if images.dtype == np.uint8 else images
    return np.ascontiguousarray(x.reshape(-1, N_PIXELS), dtype=np.float32)


class Guard:
    """Screens digit images with a VAE and a classifier. Create with ``Guard.load``; thread-safe."""

    def __init__(self, bundle: Bundle, sessions: dict[str, ort.InferenceSession], *, k: int, seed: int,
                 alpha: float, calibration: Calibration | None, kernels: str = "numba",
                 calibration_name: str = "digits") -> None:
        self.bundle = bundle
        self.kernels = kernels  # the backend's name, a key of KERNELS
        self._backend = kernel_backend(kernels)  # the backend's module
        self._sessions = sessions
        self.k, self.seed, self.alpha = k, seed, alpha
        self.calibration = calibration
        self.calibration_name = calibration_name  # which of the bundle's calibrations: a key of CALIBRATIONS
        self.providers = list(sessions["classifier"].get_providers())
        self._warm = threading.Lock()

    @classmethod
    def load(cls, bundle: str | os.PathLike[str] | None = None, providers: str | Sequence[str] = "auto",
             k: int | None = None, seed: int = 0, alpha: float = 0.01, threads: int = 1,
             kernels: str = "numba", calibration: str = "digits") -> Guard:
        """Loads and verifies a bundle (None: the shipped one) and creates its onnxruntime sessions.

        ``providers``: "auto" (CUDA when this onnxruntime has it, else the CPU, logged at DEBUG), "cpu", "cuda"
        (a ProviderError without it), or onnxruntime provider names: a list, or one string, comma-separated for
        several ("CPUExecutionProvider"). A name onnxruntime does not know is a ProviderChoiceError (a ValueError).
        ``kernels``: "numba" (compiled kernels; fastest per call, about a second to import) or "numpy"
        (the NumPy twins; same results, for one-shot processes such as ``edgeguard detect``).
        ``calibration``: which clean scores the p-values are calibrated on: "digits" (the held-out
        digits as 28x28 images, for image files) or "camera" (the same digits filmed on paper and found in
        the frames, for ``edgeguard.webcam``; a BundleError when the bundle has no camera calibration)."""
        if kernels not in KERNELS:
            raise ValueError(f"kernels must be one of {', '.join(KERNELS)}, got {kernels!r}")
        if not isinstance(calibration, str) or calibration not in CALIBRATIONS:
            raise ValueError(f"calibration must be one of {', '.join(CALIBRATIONS)}, got {calibration!r}")
        k = _check_int("k", k, minimum=1) if k is not None else None
        seed = _check_int("seed", seed, minimum=0)
        threads = _check_int("threads", threads, minimum=0)
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 < alpha < 1.0:
            raise ValueError(f"alpha must be a number strictly between 0 and 1, got {alpha!r}")
        loaded = load_bundle(bundle)
        chosen_calibration = loaded.info.calibrations.get(calibration)
        if chosen_calibration is None and calibration == "camera":
            raise BundleError(f"{loaded.path}: the bundle has no camera calibration; "
                              "run `python -m export.calibrate --only camera` or use the digit calibration")
        chosen = providers_from_choice(providers)
        key = providers.strip().lower() if isinstance(providers, str) else None
        fallback = logging.DEBUG if key == "auto" else logging.WARNING  # a warning only when something was asked for
        sessions = {name: create_session(name, data, chosen, threads=threads, strict=key == "cuda",
                                         fallback_level=fallback)
                    for name, data in loaded.models.items()}
        return cls(loaded, sessions, k=k or loaded.default_k, seed=seed, alpha=float(alpha),
                   calibration=chosen_calibration, kernels=kernels, calibration_name=calibration)

    @property
    def manifest(self) -> dict[str, Any]:
        """The manifest's JSON object as read (typed: ``bundle.info``)."""
        return self.bundle.manifest

    @property
    def bundle_id(self) -> str | None:
        """The bundle's short id (a prefix of its manifest's sha256), as every Verdict of this guard carries it."""
        return self.bundle.info.bundle_id

    @property
    def sessions(self) -> dict[str, ort.InferenceSession]:
        """The onnxruntime session of each model, by name (for benchmarks that time one stage)."""
        return dict(self._sessions)

    # -- the pipeline -------------------------------------------------------------------------
    def analyze(self, images: np.ndarray, *, keep_recon: bool = False) -> Screening:
        """Runs the models and kernels on the images made standard by the 28x28 rule (edgeguard.contrast);
        returns raw scores (no calibration needed)."""
        x, blank = standardize(as_batch(images))
        b, k, kernels = x.shape[0], self.k, self._backend
        image = x.reshape(b, 1, SIDE, SIDE)
        mu, logvar = self._sessions["encoder"].run(None, {"image": image})
        z = kernels.sample_latents(mu, logvar, kernels.image_seeds(x, self.seed), k)
        (recon,) = self._sessions["decoder"].run(None, {"z": z})
        (logits,) = self._sessions["classifier"].run(None, {"image": np.concatenate([image, recon])})
        label, confidence, labels, majority, n_distinct, agreement, scores = kernels.score(
            x, logits, recon.reshape(b * k, N_PIXELS), mu, logvar, k)
        signals = dict(zip(kernels.SCORE_NAMES, scores.T))
        return Screening(label=label, confidence=confidence, labels=labels, purified_label=majority,
                         n_distinct=n_distinct, agreement=agreement, signals=signals,
                         recon=recon.reshape(b, k, SIDE, SIDE) if keep_recon else None, blank=blank)

    def screen(self, images: np.ndarray, *, sources: Sequence[str | None] | None = None,
               calibration: str | None = None) -> list[Verdict]:
        """Screens one image or a batch (uint8, or floats in [0, 1]; ``as_batch``): a Verdict per image.
        ``calibration``: another of the bundle's calibrations ("digits", "camera") for this call; None: the
        guard's own."""
        chosen = self.calibration if calibration is None else self._calibration(calibration)
        if chosen is None:
            raise BundleError(f"{self.bundle.path}: the bundle is not calibrated; run `python -m export.calibrate`")
        s = self.analyze(images)
        return make_verdicts(s, *chosen.p_values(s.signals, self._backend), self.alpha, sources,
                             self.bundle.info.kind_rule, bundle_id=self.bundle_id)

    def screen_regions(self, image: np.ndarray, *, max_digits: int = 64, ink: str = "auto",
                       calibration: str | None = None) -> list[FoundDigit]:
        """Every digit found in ``image`` (BGR or gray; a photo of a sheet, a ZIP code, a form) by the region
        finder the webcam uses, screened in one batch: a ``FoundDigit`` (index in reading order, box, screening)
        per digit. ``calibration``: None for the one meant for cut-out digits (edgeguard.sheet)."""
        from edgeguard.sheet import screen_regions

        return screen_regions(self, image, max_digits=max_digits, ink=ink, calibration=calibration)

    def screen_image(self, image: np.ndarray | str | os.PathLike[str], *, digits: str = "auto",
                     max_digits: int = 64) -> ImageResult:
        """An image (an array or a file) screened as ``edgeguard detect --digits`` does: one digit ("one"), each
        digit found ("all"), or whichever it holds ("auto"): an ``ImageResult`` (status, digits, reading,
        all_clean). One digit is screened exactly as ``screen_file``/``screen`` would."""
        from edgeguard.sheet import screen_image

        return screen_image(self, image, digits=digits, max_digits=max_digits)

    def screen_file(self, path: str | os.PathLike[str]) -> Verdict:
        """Loads an image file (PNG, JPEG, BMP, PGM, TIFF or .npy), makes it MNIST-style and screens it."""
        from edgeguard.normalize import load_and_preprocess

        image = load_and_preprocess(path)
        return self.screen(image, sources=[os.fspath(path)])[0]

    def screen_bytes(self, data: bytes | bytearray | memoryview, source: str | None = None) -> Verdict:
        """An image file's bytes (an upload: PNG, JPEG, BMP, PNM, TIFF or .npy, sniffed from the content), read
        by the hardened decoder ``edgeguard detect`` uses for files, made MNIST-style and screened, as
        ``screen_file`` does a file. ``source`` (a name for the input, say the upload's) is the verdict's
        ``source`` and is named in any error. Raises :class:`InputError` (one line) for bytes that cannot be
        read safely or hold no digit, TypeError when ``data`` is not bytes."""
        from edgeguard.decode import decode_image
        from edgeguard.normalize import preprocess

        image = decode_image(data, source)
        try:
            x = preprocess(image)
        except InputError as err:
            raise (err.with_path(source) if source is not None else err) from None
        return self.screen(x, sources=[source])[0]

    def _calibration(self, name: str) -> Calibration:
        if not isinstance(name, str) or name not in CALIBRATIONS:
            raise ValueError(f"calibration must be one of {', '.join(CALIBRATIONS)}, got {name!r}")
        if name == self.calibration_name and self.calibration is not None:
            return self.calibration
        found = self.bundle.info.calibrations.get(name)
        if found is None:
            raise BundleError(f"{self.bundle.path}: the bundle has no {name} calibration")
        return found

    def use_kernels(self, name: str) -> None:
        """Switch the kernel backend ("numba" or "numpy": the same results) for the calls that start after this
        one: ``edgeguard detect`` screens its first chunks with the NumPy twins while numba loads in the
        background, then moves to numba."""
        if name not in KERNELS:
            raise ValueError(f"kernels must be one of {', '.join(KERNELS)}, got {name!r}")
        self._backend, self.kernels = kernel_backend(name), name

    def warmup(self) -> dict[str, float]:
        """Compiles the kernels and runs every model once; returns the seconds each step took."""
        with self._warm:
            t0 = time.perf_counter()
            kernel_s = self._backend.warmup()
            t1 = time.perf_counter()
            self.analyze(np.zeros((1, SIDE, SIDE), np.float32))
            t2 = time.perf_counter()
        return {"kernels_s": kernel_s, "first_screen_s": t2 - t1, "total_s": t2 - t0}


def make_verdicts(s: Screening, p_signals: dict[str, np.ndarray], p_combined: np.ndarray, alpha: float,
                  sources: Sequence[str | None] | None = None, kind_rule: KindRule | None = None, *,
                  bundle_id: str | None = None) -> list[Verdict]:
    """Guard.screen's last step: a Verdict per image from a screening, its calibrated p-values and the bundle's
    kind rule (None: the group rule names the kind); each verdict names the bundle by ``bundle_id``."""
    n = len(s.label)
    flagged = bool((p_combined < alpha).any())  # the kind rule is only read for flagged images
    kinds = kind_rule.adversarial(s.signals).tolist() if kind_rule is not None and flagged else [None] * n
    # Python values row by row (tolist() is exact for float32 and far cheaper than per-element float()).
    columns = zip(s.label.tolist(), s.confidence.tolist(), s.purified_label.tolist(), s.n_distinct.tolist(),
                  s.agreement.tolist(), s.labels.tolist(), np.stack(list(s.signals.values()), axis=1).tolist(),
                  np.stack(list(p_signals.values()), axis=1).tolist(), p_combined.tolist(),
                  sources if sources is not None else [None] * n,
                  s.blank.tolist() if s.blank is not None else [False] * n, kinds)
    verdicts = []
    for label, confidence, purified, n_distinct, agreement, labels, scores, ps, p, source, blank, kind in columns:
        ps = dict(zip(p_signals, ps))
        verdict, reasons = ("out_of_distribution", ("blank",)) if blank else decide(ps, p, alpha, kind)
        verdicts.append(Verdict(
            label=label, confidence=confidence, purified_label=purified, n_distinct=n_distinct,
            agreement=agreement, labels=tuple(labels), scores=dict(zip(s.signals, scores)), p_values=ps,
            p_value=p, verdict=verdict, reasons=reasons, source=source, bundle_id=bundle_id,
        ))
    return verdicts


KERNELS = ("numba", "numpy")


def kernel_backend(name: str) -> ModuleType:
    """The kernel module for a backend name (imported on first use: numba is slow to import)."""
    if name == "numpy":
        from edgeguard import kernels_numpy

        return kernels_numpy
    from edgeguard import kernels

    return kernels


def _check_int(name: str, value: object, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


__all__ = ["Guard", "Verdict", "Screening", "as_batch", "SIGNALS", "InputError"]
