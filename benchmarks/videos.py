"""Evaluation helpers for the synthetic webcam videos: which digits to film, matching found boxes to the
filmed items, and read / flag rates. Used by ``benchmarks/webcam_fps.py`` and the webcam tests.

The videos themselves (scenes of digits, superimposed pairs and non-digits on paper, filmed by a shaky,
blurry, noisy camera) come from ``export/filming.py``, which the camera calibration uses too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgeguard import webcam
from edgeguard.regions import inside
from export import desk
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


# --------------------------------------------------------------------------- desk scenes (export/desk.py)


def desk_rates(guard, video: Video, *, max_digits: int = 16, match_iou: float = 0.5, big: float = 0.10) -> dict:
    """Run process_frame (with a Tracker) over a desk video and measure what the clutter costs:

    - digits (visible ones: wholly inside the frame, no hand over them): found (a box with IoU >= ``match_iou``),
      read (found with the right stable label), and the share of frames where a visible digit was missed;
    - every other box that holds half of a digit or lies half inside one is a digit found with the wrong box
      (a piece of it, or it with a neighbour's ink): counted, and how many pass as clean with a wrong label;
    - every other box is a non-digit proposal, put down to the smallest clutter item holding half of it
      ("other" when none); how many pass as clean (stable verdict), in all and per clutter kind; and how many
      boxes covering more than ``big`` of the frame pass as clean (of all boxes, digits included)."""
    h, w = video.frames[0].shape[:2]
    tracker = webcam.Tracker()
    digits = found = read = missed_frames = big_clean = off = off_wrong_clean = 0
    proposals: dict[str, list[int]] = {}  # clutter kind -> [proposals, passed as clean]
    for frame, items in zip(video.frames, video.items):
        results = webcam.process_frame(guard, frame, max_digits=max_digits, tracker=tracker)
        boxes = [r.box for r in results]
        shown = [i for i in items if i.kind == "digit" and desk.visible(i, (w, h))]
        matched = match_boxes(shown, boxes, match_iou)
        digits += len(shown)
        found += sum(m is not None for m in matched)
        read += sum(m is not None and results[m].stable_label == item.label for item, m in zip(shown, matched))
        missed_frames += any(m is None for m in matched)
        taken = {m for m in matched if m is not None}
        taken |= {m for m in match_boxes([i for i in items if i.kind != "clutter"], boxes, match_iou) if m is not None}
        clutter = [i for i in items if i.kind == "clutter"]
        for index, result in enumerate(results):
            x, y, bw, bh = result.box
            clean = result.stable_verdict == "clean"
            big_clean += clean and bw * bh > big * w * h
            if index in taken:
                continue
            near = [i for i in items if i.kind != "clutter"
                    and (inside(result.box, i.box) >= 0.5 or inside(i.box, result.box) >= 0.5)]
            if near:
                off += 1
                off_wrong_clean += clean and all(result.stable_label != i.label for i in near)
                continue
            # the smallest clutter item holding at least half of the box ("other": none does)
            holders = [i for i in clutter if inside(result.box, i.box) >= 0.5]
            kind = min(holders, key=lambda i: i.box[2] * i.box[3]).name if holders else "other"
            entry = proposals.setdefault(kind, [0, 0])
            entry[0] += 1
            entry[1] += clean
    total = [sum(v[0] for v in proposals.values()), sum(v[1] for v in proposals.values())]
    return {"frames": len(video.frames), "digits": digits,
            "found": round(found / max(digits, 1), 4), "read": round(read / max(digits, 1), 4),
            "frames_missing_a_digit": round(missed_frames / max(len(video.frames), 1), 4),
            "nondigit_proposals": total[0],
            "nondigit_clean": round(total[1] / total[0], 4) if total[0] else 0.0,
            "nondigit_clean_count": total[1],
            "by_clutter": {k: {"proposals": v[0], "clean": v[1]} for k, v in sorted(proposals.items())},
            "big_boxes_clean": big_clean, "digit_boxes_off": off, "digit_boxes_off_clean_wrong": off_wrong_clean}
