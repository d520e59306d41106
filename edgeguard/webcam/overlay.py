"""What is drawn over a frame: a box per digit coloured by its stable verdict, its label (or, for what is not a
digit, that it is not one) and the verdict's main reason in plain words, and the frame rate; text sized to the
frame."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from edgeguard.webcam.screening import DigitResult

__all__ = ["COLOURS", "SHORT", "PLAIN", "annotate", "describe"]

COLOURS = {  # BGR
    "clean": (60, 180, 60),
    "adversarial": (40, 40, 230),
    "out_of_distribution": (200, 60, 200),
    "uncertain": (0, 190, 240),
}
SHORT = {"clean": "clean", "adversarial": "ADV", "out_of_distribution": "OOD", "uncertain": "unsure"}
#: A verdict's reasons (the signals that fired, as JSON names them) in the words the overlay shows.
PLAIN = {
    "disagreement": "samples disagree",
    "input_mismatch": "samples read otherwise",
    "vote_entropy": "samples disagree",
    "recon_mse": "unlike any digit",
    "recon_mse_min": "unlike any digit",
    "kl": "unusual",
    "posterior_spread": "unusual",
    "low_confidence": "unsure reading",
    "blank": "blank",
}
HEIGHT = 480  # the frame height the overlay's text sizes are set for; other frames scale them


def describe(result: DigitResult) -> tuple[str, str]:
    """The overlay's two lines for a box: the label (and the purified label when it differs), or "not a digit"
    when the stable verdict is out_of_distribution (no digit is shown as if it were the answer); and the
    verdict with its strongest reason (smallest p-value) in plain words (``PLAIN``)."""
    v = result.screening
    if result.stable_verdict == "out_of_distribution":
        top = "not a digit"
    else:
        top = str(result.stable_label)
        if v.purified_label != result.stable_label:
            top += f" (purified {v.purified_label})"
    bottom = SHORT[result.stable_verdict]
    if result.stable_verdict != "clean" and v.verdict == result.stable_verdict and v.reasons:
        reason = v.reasons[0]
        bottom += f": {PLAIN.get(reason, reason.replace('_', ' '))}"
    return top, bottom


def annotate(frame: np.ndarray, results: Sequence[DigitResult], fps: float | None = None) -> np.ndarray:
    """A copy of ``frame`` (BGR) with a box per digit coloured by its stable verdict, its label (and the
    purified label when it differs), the verdict with its main reason, and an FPS counter."""
    image = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR) if frame.ndim == 2 else frame[:, :, :3].copy()
    size = max(0.5, image.shape[0] / HEIGHT)  # text and lines grow with the frame (2 at 960 rows)
    thick = max(1, round(size))
    for r in results:
        x, y, w, h = r.box
        colour = COLOURS[r.stable_verdict]
        cv2.rectangle(image, (x, y), (x + w, y + h), colour, 2 * thick)
        top, bottom = describe(r)
        _text(image, top, (x, y - 2), colour, scale=0.6 * size, thickness=thick)
        _text(image, bottom, (x, y + h + round(16 * size)), colour, scale=0.45 * size, thickness=thick)
    if fps is not None:
        _text(image, f"{fps:5.1f} FPS", (round(8 * size), round(22 * size)), (40, 40, 40), scale=0.6 * size,
              thickness=thick)
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
