"""The one rule for 28x28 inputs: polarity from the frame, background to 0, ink peak to full scale.

Every 28x28 image is taken as already framed the MNIST way (the digit is not cropped or moved again), whichever
way it comes in: an array given to ``Guard.screen``/``Guard.analyze``, or a 28x28 file given to
``edgeguard detect`` (``edgeguard.normalize.preprocess`` applies the same rule). Per image:

1. **Polarity.** The 2-pixel frame is background. If its median is light (> 0.5), the image is dark ink on
   light paper and is inverted.
2. **Contrast.** The background level (the frame's 10th percentile: robust to a few inked frame pixels and to
   noise added on top of a dark background) goes to 0 and the brightest pixel to 1, clipped to [0, 1]. Faint
   ink (a pencil, a light scan) is stretched to full scale, as MNIST's own digits are.
3. **Blank.** An image whose ink rises less than ``MIN_CONTRAST`` above its background holds no digit: it is
   left as it is and reported blank (``Guard.screen`` calls it ``out_of_distribution`` with reason ``blank``;
   ``edgeguard detect`` refuses the file with "no digit found (blank image)").

MNIST's own images (black frame, ink peak 255) pass unchanged, so the shipped calibration holds for them. The
rule is idempotent: an image it has made passes through it unchanged.
"""

from __future__ import annotations

import numpy as np

from edgeguard.contract import N_PIXELS, SIDE

MIN_CONTRAST = 0.1  # ink must rise this far (of the full range) above the background
FRAME_WIDTH = 2
_frame = np.ones((SIDE, SIDE), bool)
_frame[FRAME_WIDTH:-FRAME_WIDTH, FRAME_WIDTH:-FRAME_WIDTH] = False
FRAME = np.flatnonzero(_frame)  # indices of the frame's pixels in a flattened image
_MEDIAN, _LOW = len(FRAME) // 2, len(FRAME) // 10


def standardize(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x: (B, 784) float32 in [0, 1] -> (the rule applied, float32 (B, 784); blank: bool (B,))."""
    if not x[:, FRAME].any():  # a black frame (MNIST-style, the common case): background 0, ink as it is
        peak = x.max(axis=1)
        if (peak == 1.0).all():
            return x, np.zeros(len(x), bool)
        blank = peak < MIN_CONTRAST  # the general rule's result for such images, without its partition
        out = x / np.where(blank, np.float32(1.0), peak).astype(np.float32)[:, None]
        return np.ascontiguousarray(out, dtype=np.float32), blank
    frame = np.partition(x[:, FRAME], (_LOW, _MEDIAN, len(FRAME) - 1 - _LOW), axis=1)
    inverted = frame[:, _MEDIAN] > 0.5
    if not inverted.any():
        background, ink = frame[:, _LOW], x
        peak = x.max(axis=1)
        if not background.any() and (peak == 1.0).all():  # the common case, MNIST-style: nothing to do
            return x, np.zeros(len(x), bool)
    else:
        background = np.where(inverted, 1.0 - frame[:, -1 - _LOW], frame[:, _LOW]).astype(np.float32)
        ink = np.where(inverted[:, None], np.float32(1.0) - x, x)
        peak = ink.max(axis=1)
    span = peak - background
    blank = span < MIN_CONTRAST
    scale = np.where(blank, np.float32(1.0), span).astype(np.float32)
    offset = np.where(blank, np.float32(0.0), background).astype(np.float32)
    out = np.clip((ink - offset[:, None]) / scale[:, None], 0.0, 1.0)
    out[blank] = x[blank]
    return np.ascontiguousarray(out, dtype=np.float32), blank


def standardize_image(gray: np.ndarray) -> tuple[np.ndarray, bool]:
    """One SIDE x SIDE float32 image -> (the rule applied, blank)."""
    out, blank = standardize(np.asarray(gray, np.float32).reshape(1, N_PIXELS))
    return out.reshape(SIDE, SIDE), bool(blank[0])
