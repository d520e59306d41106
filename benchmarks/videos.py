"""Evaluation helpers for the synthetic webcam videos: which digits to film, matching found boxes to the
filmed items, and read / flag rates. Used by ``benchmarks/webcam_fps.py`` and the webcam tests.

The videos themselves (scenes of digits, superimposed pairs and non-digits on paper, filmed by a shaky,
blurry, noisy camera) come from ``export/filming.py``, which the camera calibration uses too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgeguard import webcam
from export.filming import Item, Video, match_boxes, mnist_test


def trusted_digits(guard, n: int = 1000) -> list[int]:
    """Indices of the first ``n`` MNIST test digits that ``guard`` reads correctly and calls clean as
    28x28 images: videos of these measure what filming, finding and re-normalising lose, not the
    classifier's own errors."""
    x, y = mnist_test()
    verdicts = guard.screen(x[:n])
    return [i for i, v in enumerate(verdicts) if v.label == y[i] and v.verdict == "clean"]


# --------------------------------------------------------------------------- measuring


@dataclass
class Appearance:
    item: Item
    result: object | None  # the DigitResult matched to it (IoU >= match_iou), or None when not found


def match(guard, video: Video, frames: list[np.ndarray] | None = None, *, match_iou: float = 0.5,
          max_digits: int = 8) -> tuple[list[Appearance], int]:
    """Run process_frame (with a Tracker) over ``frames`` (default: the video's own, else e.g. the frames
    read back from the written file) and match each known item to the found box that overlaps it most.
    Returns (appearances, spurious boxes matched to no item)."""
    frames = video.frames if frames is None else frames
    tracker = webcam.Tracker()
    rows, spurious = [], 0
    for frame, items in zip(frames, video.items):
        results = webcam.process_frame(guard, frame, max_digits=max_digits, tracker=tracker)
        matched = match_boxes(items, [r.box for r in results], match_iou)
        rows += [Appearance(item, None if i is None else results[i]) for item, i in zip(items, matched)]
        spurious += len(results) - len({i for i in matched if i is not None})
    return rows, spurious


def rates(rows: list[Appearance]) -> dict:
    """Per kind of item: appearances, found, read correctly (stable label; digits only), flagged
    (stable verdict not clean) and the verdicts, as shares of the appearances."""
    out = {}
    for kind in ("digit", "adversarial", "nondigit"):
        chosen = [a for a in rows if a.item.kind == kind]
        if not chosen:
            continue
        found = [a for a in chosen if a.result is not None]
        n = len(chosen)
        entry = {"appearances": n, "found": round(len(found) / n, 4),
                 "flagged": round(sum(a.result.stable_verdict != "clean" for a in found) / n, 4),
                 "verdicts": {v: round(sum(a.result.stable_verdict == v for a in found) / n, 4)
                              for v in ("clean", "adversarial", "out_of_distribution", "uncertain")}}
        if kind == "digit":
            entry["read"] = round(sum(a.result.stable_label == a.item.label for a in found) / n, 4)
            entry["read_this_frame"] = round(sum(a.result.screening.label == a.item.label for a in found) / n, 4)
        else:
            groups: dict[str, list[Appearance]] = {}
            for a in chosen:
                group = "pair" if kind == "adversarial" else a.item.name.split("#")[0]
                groups.setdefault(group, []).append(a)
            entry["flagged_by_type"] = {g: round(sum(a.result is not None and a.result.stable_verdict != "clean"
                                                     for a in rows_) / len(rows_), 4)
                                        for g, rows_ in sorted(groups.items())}
        out[kind] = entry
    return out
