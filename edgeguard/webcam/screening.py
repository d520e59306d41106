"""One frame screened: its digit regions (``edgeguard.regions``, the finder ``edgeguard detect`` uses too)
-> ``preprocess`` (MNIST format) -> ONE ``guard.screen`` call for the whole frame -> ``Tracker`` (IoU matching,
vote over the last few frames) -> a ``DigitResult`` per digit."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeguard.guard import Guard, Verdict
from edgeguard.regions import FRAME, MAX_DIGITS, Box, cut_digits, find_regions, frame_gray
from edgeguard.webcam.tracking import Tracker

__all__ = ["DigitResult", "process_frame"]


@dataclass(frozen=True)
class DigitResult:
    """One digit found in a frame: where, what the screen said, and the steadied answer."""

    box: Box
    screening: Verdict  # this frame's screening of the digit
    stable_label: int  # the classifier's label, voted over the track's last few frames
    stable_verdict: str  # the verdict, voted the same way (what the overlay shows)
    track_id: int | None = None  # the same digit keeps its id across frames (None without a tracker)

    @property
    def flagged(self) -> bool:
        return self.stable_verdict != "clean"

    @property
    def verdict(self) -> Verdict:
        """Deprecated: use ``screening`` (``verdict`` names the verdict string elsewhere, as in
        ``Verdict.verdict`` and ``stable_verdict``)."""
        warnings.warn("DigitResult.verdict is deprecated; use DigitResult.screening", DeprecationWarning,
                      stacklevel=2)
        return self.screening

    def to_dict(self) -> dict[str, Any]:
        d = self.screening.to_dict()
        d.pop("source", None)
        return {"track_id": self.track_id, "box": list(self.box), "stable_label": self.stable_label,
                "stable_verdict": self.stable_verdict, **d}


def process_frame(guard: Guard, frame: np.ndarray, *, max_digits: int = MAX_DIGITS, tracker: Tracker | None = None,
                  ink: str = "dark") -> list[DigitResult]:
    """Find the digits in ``frame`` (BGR or gray uint8), screen them in one batch, track them.

    Regions that preprocessing finds blank are dropped. Without a ``tracker`` the stable label and
    verdict are this frame's own and ``track_id`` is None.
    """
    images, boxes = cut_digits(find_regions(frame_gray(frame), max_digits, ink, FRAME))
    if not images:
        if tracker is not None:
            tracker.update([], [])
        return []
    verdicts = guard.screen(np.stack(images))
    if tracker is None:
        return [DigitResult(b, v, v.label, v.verdict) for b, v in zip(boxes, verdicts)]
    steady = tracker.update(boxes, verdicts, images)
    return [DigitResult(b, v, label, kind, tid) for b, v, (tid, label, kind) in zip(boxes, verdicts, steady)]
