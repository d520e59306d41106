"""Images that hold several digits (a sheet, a ZIP code, a form field): each digit found, screened and read in order.

    image -> one digit or several?                                  (``screen_image``, ``digits="auto"``)
      28x28, or the region finder finds 0 or 1 digit   -> the whole image, today's way: ``preprocess``, one
                                                          screening with the guard's own calibration ("whole");
                                                          only where that finds no digit, the finder's one digit
      2 or more digit regions (``edgeguard.regions``,   -> each cut out and made MNIST-style, all screened in one
      the finder the webcam uses, ``PAGE`` settings)       batch with the calibration meant for cut-out digits
                                                          ("digits"), in reading order
      ink of digit height that cannot be cut into       -> "unseparable": no reading, never one verdict for the
      digits (digits written touching each other)          lot; the digits that could be cut out are still shown

``digits="one"`` always screens the whole image (what ``edgeguard detect`` did before); ``digits="all"`` screens
every region found, even a single one. The calibration for cut-out digits is ``REGIONS_CALIBRATION`` ("camera":
fitted on digits the region finder cut out of filmed frames; chosen on held-out pages, docs/pages.md) when the
bundle has it, else the guard's own.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeguard.contract import SIDE
from edgeguard.contrast import standardize
from edgeguard.decode import load_image, to_gray01
from edgeguard.errors import InputError
from edgeguard.guard import Guard, Verdict
from edgeguard.normalize import preprocess
from edgeguard.regions import PAGE, Box, cut_digits, find_regions, frame_gray

__all__ = ["DIGIT_MODES", "MAX_DIGITS", "REGIONS_CALIBRATION", "STATUSES", "FoundDigit", "ImageResult", "Prepared",
           "regions_calibration", "screen_regions", "screen_image", "prepare", "prepare_many", "screen_prepared",
           "screen_many", "first_record"]

DIGIT_MODES = ("auto", "one", "all")
MAX_DIGITS = 64  # most digits screened in one image (the largest regions are kept)
REGIONS_CALIBRATION = "camera"  # the p-values of digits cut out of an image (docs/pages.md: how it was chosen)
STATUSES = ("whole", "digits", "unseparable")


@dataclass(frozen=True)
class FoundDigit:
    """One digit of an image: its place in reading order, its box and its screening."""

    index: int  # 0-based, in reading order: rows top to bottom, left to right within a row
    box: Box  # x, y, width, height in the image's pixels
    screening: Verdict

    @property
    def label(self) -> int:
        return self.screening.label

    @property
    def flagged(self) -> bool:
        return self.screening.flagged

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "box": list(self.box), **self.screening.to_dict()}


@dataclass(frozen=True)
class ImageResult:
    """What EdgeGuard concluded about one image: one digit (screened whole) or each of its digits."""

    status: str  # "whole" (screened as one digit), "digits" (each digit screened) or "unseparable"
    digits: tuple[FoundDigit, ...]  # in reading order (one for "whole"; those that could be cut out otherwise)
    size: tuple[int, int]  # the image's width and height
    calibration: str  # the calibration of the digits' p-values
    source: str | None = None  # the file, when there was one
    note: str | None = None  # why an image is unseparable

    @property
    def reading(self) -> str | None:
        """The labels in reading order (a ZIP code, a form field); None when the image is unseparable."""
        return None if self.status == "unseparable" else "".join(str(d.label) for d in self.digits)

    @property
    def all_clean(self) -> bool:
        """Every digit was read and called clean (never for an unseparable image)."""
        return self.status != "unseparable" and bool(self.digits) and not any(d.flagged for d in self.digits)

    @property
    def flagged(self) -> bool:
        """Any digit flagged, or the image unseparable: its reading cannot be trusted as it is."""
        return not self.all_clean

    def summary(self) -> dict[str, Any]:
        """The image's part of every record: status, digit count, reading, all_clean, calibration, size, note."""
        return {"status": self.status, "count": len(self.digits), "reading": self.reading,
                "all_clean": self.all_clean, "calibration": self.calibration, "image_size": list(self.size),
                "note": self.note}

    def records(self) -> list[dict[str, Any]]:
        """One JSON-ready record per digit: ``source``, ``index``, ``box``, the screening, and the image's
        summary; an unseparable image with no digit cut out gives one record with ``index`` and ``box`` None."""
        if not self.digits:
            return [{"source": self.source, "index": None, "box": None, **self.summary()}]
        rows = []
        for d in self.digits:
            row = d.to_dict()
            del row["source"]  # the screening's (None for a cut-out digit): the image's comes first instead
            rows.append({"source": self.source, **row, **self.summary()})
        return rows


def first_record(record: dict[str, Any]) -> bool:
    """Whether a verdict record of ``ImageResult.records()`` is its image's first (an image's records count once)."""
    return record.get("index") in (0, None)


def regions_calibration(guard: Guard) -> str:
    """The calibration for digits cut out of an image: ``REGIONS_CALIBRATION`` when the bundle has it, else
    the guard's own."""
    return REGIONS_CALIBRATION if REGIONS_CALIBRATION in guard.bundle.info.calibrations else guard.calibration_name


def screen_regions(guard: Guard, image: np.ndarray, *, max_digits: int = MAX_DIGITS, ink: str = "auto",
                   calibration: str | None = None) -> list[FoundDigit]:
    """Every digit region of ``image`` (BGR or gray) screened, in reading order (``Guard.screen_regions``)."""
    if not isinstance(image, np.ndarray):
        raise TypeError(f"image must be a numpy array, got {type(image).__name__}")
    images, boxes = cut_digits(find_regions(_gray8(image), max_digits, ink, PAGE))
    if not images:
        return []
    verdicts = guard.screen(np.stack(images), calibration=calibration or regions_calibration(guard))
    return [FoundDigit(i, box, v) for i, (box, v) in enumerate(zip(boxes, verdicts))]


def screen_image(guard: Guard, image: np.ndarray | str | os.PathLike[str], *, digits: str = "auto",
                 source: str | None = None, max_digits: int = MAX_DIGITS,
                 calibration: str | None = None) -> ImageResult:
    """One image (an array, or a file to load) screened as one digit or digit by digit (``Guard.screen_image``).

    ``digits``: "auto" (one digit when the region finder finds 0 or 1, else each digit), "one" (always the
    whole image, as ``Guard.screen_file``) or "all" (each region found, even a single one). Raises
    :class:`InputError` (naming the file) when the image cannot be read or holds no digit."""
    if isinstance(image, (str, os.PathLike)):
        source = os.fspath(image) if source is None else source
        image = load_image(image)
    try:
        prepared = prepare(image, digits, max_digits)
    except InputError as err:
        raise (err.with_path(source) if source is not None else err) from None
    return screen_prepared(guard, [prepared], [source], calibration)[0]


@dataclass(frozen=True)
class Prepared:
    """An image made ready for screening: what it holds (``status``) and its MNIST-style digit images."""

    status: str  # as ImageResult.status
    images: np.ndarray  # (n, 28, 28) float32: the whole image (one) or the digits cut out, in reading order
    boxes: tuple[Box, ...]  # each digit's box in the image's pixels (the whole image for "whole")
    size: tuple[int, int]  # the image's width and height
    note: str | None = None


def prepare(image: np.ndarray, digits: str = "auto", max_digits: int = MAX_DIGITS) -> Prepared:
    """Decide whether ``image`` holds one digit or several (see the module's docstring) and make it, or each of
    its digits, MNIST-style. Raises TypeError or :class:`InputError` as ``preprocess`` does."""
    if digits not in DIGIT_MODES:
        raise ValueError(f"digits must be one of {', '.join(DIGIT_MODES)}, got {digits!r}")
    if not isinstance(image, np.ndarray):
        raise TypeError(f"image must be a numpy array, got {type(image).__name__}")
    size = (int(image.shape[1]), int(image.shape[0])) if image.ndim >= 2 else (0, 0)
    if digits == "one" or image.ndim < 2 or image.shape[:2] == (SIDE, SIDE) or min(image.shape[:2]) < 16:
        return _whole(image, size)
    regions = find_regions(_gray8(image), max_digits, "auto", PAGE)
    if regions.joined:
        images, boxes = cut_digits(regions) if regions.found else ([], [])
        what = "ink" if len(regions.joined) == 1 else f"{len(regions.joined)} places"
        note = (f"{what} of digit height, too wide for one digit (digits written touching each other?), at "
                + ", ".join(_box_text(regions.original(b)) for b in regions.joined))
        return Prepared("unseparable", _stack(images), tuple(boxes), size, note)
    least = 2 if digits == "auto" else 1
    if len(regions.found) >= least:
        images, boxes = cut_digits(regions)
        if len(images) >= least:
            return Prepared("digits", _stack(images), tuple(boxes), size)
    try:
        return _whole(image, size)
    except InputError:  # e.g. a vignette that fools the whole image's threshold: the digit the finder saw, if any
        images, boxes = cut_digits(regions)
        if not images:
            raise
        return Prepared("digits", _stack(images), tuple(boxes), size)


def prepare_many(images: list[np.ndarray], digits: str = "auto") -> list[Prepared | InputError]:
    """``prepare`` of each image, or the InputError it raised; the 28x28 uint8 ones (a folder of MNIST-style files,
    the rows of a batch) made standard in one call (``contrast.standardize`` works row by row: the same pixels as
    one call per image, for less)."""
    results: list[Prepared | InputError | None] = [None] * len(images)
    square = [i for i, image in enumerate(images) if image.shape == (SIDE, SIDE) and image.dtype == np.uint8]
    if square:
        x = np.stack([images[i] for i in square]).astype(np.float32) / np.float32(255)
        framed, blank = standardize(x.reshape(len(square), SIDE * SIDE))
        for row, (i, is_blank) in enumerate(zip(square, blank.tolist())):
            if not is_blank:  # a blank one is refused by prepare below, in its own words
                results[i] = Prepared("whole", framed[row].reshape(1, SIDE, SIDE), ((0, 0, SIDE, SIDE),), (SIDE, SIDE))
    for i, done in enumerate(results):
        if done is None:
            try:
                results[i] = prepare(images[i], digits)
            except InputError as err:
                results[i] = err
    return [r for r in results if r is not None]


def screen_prepared(guard: Guard, prepared: list[Prepared], sources: list[str | None],
                    calibration: str | None = None) -> list[ImageResult]:
    """Screen prepared images in two batches: the whole ones with the guard's own calibration (exactly as
    ``Guard.screen`` would), the cut-out digits with ``calibration`` (None: ``regions_calibration``)."""
    calibration = calibration or regions_calibration(guard)
    whole = [p.images for p in prepared if p.status == "whole"]
    cut = [p.images for p in prepared if p.status != "whole"]
    whole_sources = [s for p, s in zip(prepared, sources) if p.status == "whole"]
    whole_verdicts = iter(guard.screen(np.concatenate(whole), sources=whole_sources) if whole else [])
    cut_images = np.concatenate(cut) if cut else np.empty((0, SIDE, SIDE), np.float32)
    cut_verdicts = iter(guard.screen(cut_images, calibration=calibration) if len(cut_images) else [])
    results = []
    digits: tuple[FoundDigit, ...]
    for p, source in zip(prepared, sources):
        if p.status == "whole":
            digits = (FoundDigit(0, p.boxes[0], next(whole_verdicts)),)
            results.append(ImageResult("whole", digits, p.size, guard.calibration_name, source))
        else:
            digits = tuple(FoundDigit(i, box, next(cut_verdicts)) for i, box in enumerate(p.boxes))
            results.append(ImageResult(p.status, digits, p.size, calibration, source, p.note))
    return results


def screen_many(guard: Guard, images: list[np.ndarray | InputError], sources: list[str],
                digits: str = "auto") -> list[ImageResult | InputError]:
    """Each input screened (``prepare_many``, then ``screen_prepared``): its result, or the InputError that refused
    it, naming its source. ``images``: pixels, or the InputError that refused an input as it was read."""
    readable = [image for image in images if not isinstance(image, InputError)]
    made = iter(prepare_many(readable, digits))
    done: list[Prepared | InputError] = []
    for image, source in zip(images, sources):
        step = image if isinstance(image, InputError) else next(made)
        done.append(step.with_path(source) if isinstance(step, InputError) else step)
    prepared = [p for p in done if isinstance(p, Prepared)]
    screened = iter(screen_prepared(guard, prepared, [s for p, s in zip(done, sources) if isinstance(p, Prepared)])
                    if prepared else [])
    return [next(screened) if isinstance(p, Prepared) else p for p in done]


def _whole(image: np.ndarray, size: tuple[int, int]) -> Prepared:
    """Today's path: the whole image made MNIST-style (``preprocess``)."""
    return Prepared("whole", preprocess(image)[np.newaxis], ((0, 0, *size),), size)


def _stack(images: list[np.ndarray]) -> np.ndarray:
    return np.stack(images) if images else np.empty((0, SIDE, SIDE), np.float32)


def _gray8(image: np.ndarray) -> np.ndarray:
    """Any image ``preprocess`` accepts (else its TypeError or InputError), as the region finder's gray uint8."""
    if image.dtype == np.uint8 and (image.ndim == 2 or image.ndim == 3 and image.shape[2] in (1, 3, 4)):
        return frame_gray(image)
    return frame_gray(np.rint(to_gray01(image) * 255).astype(np.uint8))


def _box_text(box: Box) -> str:
    x, y, w, h = box
    return f"x {x} y {y} w {w} h {h}"
