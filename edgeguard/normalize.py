"""Digit images -> MNIST-style 28x28 arrays: the normalisation MNIST was made with (OpenCV + numpy).

``preprocess`` turns any gray or colour array into a 28x28 float32 image in [0, 1], white ink on black,
with the digit scaled into a 20x20 box and its centre of mass at the centre. ``load_and_preprocess``
reads and decodes a file first (``edgeguard.decode``); ``load_and_preprocess_batch`` also reads a ``.npy``
batch of images. Every problem with an input is raised as
:class:`~edgeguard.errors.InputError`; no ``cv2.error`` reaches the caller.

(The module is not called ``preprocess``: ``edgeguard.preprocess`` is the function, and a submodule of
that name would replace it as an attribute of the package once imported.)
"""

from __future__ import annotations

import math
import os

import cv2
import numpy as np

from edgeguard.contract import SIDE
from edgeguard.contrast import MIN_CONTRAST, standardize_image
from edgeguard.decode import load_image, load_images, to_gray01
from edgeguard.errors import InputError

__all__ = ["preprocess", "load_and_preprocess", "load_and_preprocess_batch"]

_WORK_SIDE = 1024  # larger images are shrunk to this before the digit is looked for
_MIN_INK_AREA = 4  # pixels, at working resolution; less is not a digit
_SPECK_FRACTION = 0.03  # ink blobs smaller than this fraction of the largest are dropped
_BOX = 20  # MNIST: the digit fits a 20x20 box in a SIDE x SIDE image, its centre of mass at the centre
_BLANK = "no digit found (blank image)"


def load_and_preprocess(path: str | os.PathLike[str]) -> np.ndarray:
    """``preprocess(load_image(path))``, with the file named in any :class:`InputError`."""
    image = load_image(path)
    try:
        return preprocess(image)
    except InputError as err:
        raise err.with_path(path) from None


def load_and_preprocess_batch(path: str | os.PathLike[str]) -> np.ndarray:
    """Every image of a file, preprocessed: (N, 28, 28) float32 (N = 1 unless the file is a ``.npy`` batch of
    shape (N, H, W); ``edgeguard.decode.load_images``). A problem with the i-th image of a batch of several is
    raised as :class:`InputError` naming ``path[i]``."""
    images = load_images(path)
    out = np.empty((len(images), SIDE, SIDE), np.float32)
    for i, image in enumerate(images):
        try:
            out[i] = preprocess(image)
        except InputError as err:
            raise err.with_path(path if len(images) == 1 else f"{os.fsdecode(path)}[{i}]") from None
    return out


def preprocess(image: np.ndarray) -> np.ndarray:
    """Turn a digit image into a 28x28 (SIDE x SIDE) float32 array in [0, 1], white ink on black (MNIST style).

    ``image`` is 2-D gray, H x W x 1, H x W x 3 (BGR) or H x W x 4 (BGRA); uint8, uint16, other
    integers in [0, 255], or floats in [0, 1]. A 28x28 image is taken as already framed and gets
    the one rule for 28x28 inputs (``edgeguard.contrast``: polarity from the frame, background to 0,
    ink peak to 1), exactly as ``Guard.screen`` gives an array; any other size is inverted if
    needed, thresholded, cropped to the digit, scaled into 20x20 and centred by its centre of
    mass. Raises TypeError for a non-array or non-numeric dtype and :class:`InputError` (a
    ValueError) for a bad shape, bad values or an image with no digit.
    """
    gray = to_gray01(image)
    if gray.shape == (SIDE, SIDE):
        framed, blank = standardize_image(gray)
        if blank:
            raise InputError(_BLANK)
        return framed
    try:
        return _normalise(gray)
    except cv2.error as exc:
        reason = " ".join(str(getattr(exc, "err", "") or "error").split())
        raise InputError(f"image could not be processed (OpenCV: {reason})") from None


def _normalise(gray: np.ndarray) -> np.ndarray:
    height, width = gray.shape
    if max(height, width) > _WORK_SIDE:
        scale = _WORK_SIDE / max(height, width)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
        height, width = gray.shape
    if gray.max() - gray.min() < MIN_CONTRAST:
        raise InputError(_BLANK)

    # Threshold (Otsu) a lightly smoothed copy; the side the frame falls on is the background.
    sigma = min(height, width) / 150
    smooth = cv2.GaussianBlur(gray, (0, 0), sigma) if sigma >= 0.5 else gray
    levels = np.rint(smooth * 255).astype(np.uint8)
    threshold, _ = cv2.threshold(levels, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
    bright = levels > threshold
    if bright.all() or not bright.any():
        raise InputError(_BLANK)
    border = max(1, min(height, width) // 20)
    frame = np.ones(gray.shape, bool)
    frame[border:-border, border:-border] = False
    inverted = np.median(levels[frame]) > threshold  # light background: dark ink
    ink = np.float32(1) - gray if inverted else gray
    mask = ~bright if inverted else bright

    # Keep the ink blobs, dropping specks.
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    areas = stats[1:, cv2.CC_STAT_AREA]
    if areas.size == 0 or areas.max() < _MIN_INK_AREA:
        raise InputError(_BLANK)
    kept = 1 + np.flatnonzero(areas >= max(2, _SPECK_FRACTION * areas.max()))
    mask = np.isin(labels, kept)

    # Grey levels rescaled so the background is 0 and the stroke 1, anti-aliased edges between.
    background = float(np.median(ink[~mask]))
    stroke = float(np.median(ink[mask]))
    if stroke - background < MIN_CONTRAST:
        raise InputError(_BLANK)
    support = cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    level = np.clip((ink - background) / (stroke - background), 0, 1) * support

    # Crop to the digit (1 pixel of edge around it) and scale into 20x20, keeping the aspect ratio.
    left = max(0, int(stats[kept, cv2.CC_STAT_LEFT].min()) - 1)
    top = max(0, int(stats[kept, cv2.CC_STAT_TOP].min()) - 1)
    right = min(width, int((stats[kept, cv2.CC_STAT_LEFT] + stats[kept, cv2.CC_STAT_WIDTH]).max()) + 1)
    bottom = min(height, int((stats[kept, cv2.CC_STAT_TOP] + stats[kept, cv2.CC_STAT_HEIGHT]).max()) + 1)
    crop = np.ascontiguousarray(level[top:bottom, left:right], dtype=np.float32)
    box_h, box_w = crop.shape
    scale = _BOX / max(box_h, box_w)
    size = (max(1, round(box_w * scale)), max(1, round(box_h * scale)))
    shrink = scale < 1
    resized = cv2.resize(crop, size, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    digit: np.ndarray = np.clip(resized, 0, 1)
    peak = float(digit.max())
    if peak <= 0:
        raise InputError(_BLANK)
    digit /= peak

    # Paste into SIDE x SIDE so the centre of mass lands on the centre, never cutting the digit off.
    total = float(digit.sum())
    rows, cols = digit.shape
    centre_y = float(digit.sum(axis=1) @ np.arange(rows)) / total
    centre_x = float(digit.sum(axis=0) @ np.arange(cols)) / total
    top = min(max(math.floor(SIDE / 2 - centre_y + 0.5), 0), SIDE - rows)
    left = min(max(math.floor(SIDE / 2 - centre_x + 0.5), 0), SIDE - cols)
    out = np.zeros((SIDE, SIDE), np.float32)
    out[top : top + rows, left : left + cols] = digit
    return out
