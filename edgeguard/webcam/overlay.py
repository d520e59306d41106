"""What is drawn over a frame: a box per digit coloured by its stable verdict, its label and the verdict's
main reason, and the frame rate."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from edgeguard.webcam.screening import DigitResult

__all__ = ["COLOURS", "SHORT", "annotate", "describe"]

COLOURS = {  # BGR
    "clean": (60, 180, 60),
    "adversarial": (40, 40, 230),
    "out_of_distribution": (200, 60, 200),
    "uncertain": (0, 190, 240),
}
SHORT = {"clean": "clean", "adversarial": "ADV", "out_of_distribution": "OOD", "uncertain": "unsure"}


def describe(result: DigitResult) -> tuple[str, str]:
    """The overlay's two lines for a digit: label (and purified label) and verdict with a short reason."""
    v = result.screening
    top = str(result.stable_label)
    if v.purified_label != result.stable_label:
        top += f" (purified {v.purified_label})"
    bottom = SHORT[result.stable_verdict]
    if result.stable_verdict != "clean" and v.verdict == result.stable_verdict and v.reasons:
        bottom += f": {v.reasons[0].replace('_', ' ')}"  # the strongest signal (smallest p-value)
    return top, bottom


def annotate(frame: np.ndarray, results: Sequence[DigitResult], fps: float | None = None) -> np.ndarray:
    """A copy of ``frame`` (BGR) with a box per digit coloured by its stable verdict, its label (and the
    purified label when it differs), the verdict with its main reason, and an FPS counter."""
    image = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR) if frame.ndim == 2 else frame[:, :, :3].copy()
    for r in results:
        x, y, w, h = r.box
        colour = COLOURS[r.stable_verdict]
        cv2.rectangle(image, (x, y), (x + w, y + h), colour, 2)
        top, bottom = describe(r)
        _text(image, top, (x, y - 2), colour, scale=0.6)
        _text(image, bottom, (x, y + h + 16), colour, scale=0.45)
    if fps is not None:
        _text(image, f"{fps:5.1f} FPS", (8, 22), (40, 40, 40), scale=0.6)
    return image


def _text(image: np.ndarray, text: str, org: tuple[int, int], colour: tuple[int, int, int], scale: float = 0.5,
          thickness: int = 1, background: bool = True) -> None:
    font = cv2.FONT_HERSHEY_SIMPLEX
    (tw, th), base = cv2.getTextSize(text, font, scale, thickness)
    x, y = org
    y = max(th + base, y)
    if background:
        cv2.rectangle(image, (x, y - th - base), (x + tw + 2, y + 1), colour, -1)
        cv2.putText(image, text, (x + 1, y - base + 1), font, scale, (255, 255, 255), thickness, cv2.LINE_AA)
    else:
        cv2.putText(image, text, (x, y), font, scale, colour, thickness, cv2.LINE_AA)
