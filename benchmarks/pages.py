"""Generated test pages: photos of sheets holding several MNIST digits, with their true boxes and labels; and
``python -m benchmarks.pages``, which screens them as ``edgeguard detect`` does and writes ``reports/pages.md``.

A page is a sheet of paper photographed by a phone, as ``export/filming.py`` films digits for the webcam
(its paper texture and uneven light are reused): digits dark on paper with fibre texture, each a 28x28 MNIST
digit scaled up and slightly rotated, the whole sheet rotated by up to 10 degrees, lit unevenly (a gradient, a
vignette and a soft shadow), blurred, noisy, and JPEG-compressed. Layouts:

- ``rows``: 2 to 12 digits in 1 to 4 rows, as on a form or a sheet of exercises;
- ``zip``: one line of 5 digits, or 9 as ZIP+4 (5 + a wider gap + 4), written closer together;
- ``free``: 2 to 12 digits scattered over the page, each its own size, apart by half the taller one's height;
- ``single``: one digit, 20% to 70% of the image tall, on a smaller photo.

Digits are 3% to 30% of the image height (log-uniform; a page of many digits in rows is capped by what fits).
``Page.digits`` holds each digit's label and its ink box in the image (x, y, w, h; the ink under the page's
rotation, so a rotated digit's box is its own, not its unrotated box's corners): for ``rows``, ``zip`` and
``single`` in reading order as written (rows top to bottom, left to right), for ``free`` in the order drawn.
A generator draws everything from the seed it is given, and its digits from a digit source: MNIST *test*
digits for the reported figures, or the *held-out* digits (the last 5,000 training images) for choosing, with
(``odd=True``) a superimposed pair and a non-digit on each page.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np

from benchmarks import pages_report
from benchmarks.webcam_fps import bundle_info, machine_info, pin_one_core
from edgeguard.errors import InputError
from edgeguard.guard import Guard
from edgeguard.sheet import REGIONS_CALIBRATION, STATUSES
from export.filming import Digits, _lighting, _paper, nondigit, scale_and_rotate, superimposed

Box = tuple[int, int, int, int]
LAYOUTS = ("rows", "zip", "free", "single")
MIN_HEIGHT, MAX_HEIGHT = 0.03, 0.30  # digit height, as a share of the image height
MAX_ROTATION = 10.0  # degrees, the whole sheet
MARGIN = 0.1  # no digit closer than this share of the side to the edge (a rotated sheet stays paper there)
PAGE_SIDES = ((1600, 1200), (1200, 1600), (2000, 1500), (1500, 2000), (1800, 1350))  # width, height
SINGLE_SIDES = ((640, 480), (480, 640), (1024, 768), (800, 800), (1200, 900))
PAIR, NONDIGIT = -1, -2  # the labels of the items that are no digit (held-out pages only: ``pages(odd=True)``)


@dataclass(frozen=True)
class Truth:
    label: int  # the digit's; PAIR for two superimposed digits, NONDIGIT for a star, a hash sign or a garment
    box: Box  # the item's ink box in the image: x, y, w, h
    name: str  # where it came from, e.g. "test#12"

    @property
    def kind(self) -> str:
        return "digit" if self.label >= 0 else "pair" if self.label == PAIR else "nondigit"


@dataclass
class Page:
    image: np.ndarray  # BGR uint8, the JPEG decoded (what a phone hands over)
    jpeg: bytes  # the photo as a file
    layout: str
    digits: list[Truth]  # rows, zip, single: in reading order (as written); free: in the order drawn
    rotation: float  # degrees
    quality: int  # JPEG quality
    digit_height: float  # the median digit height, as a share of the image height

    @property
    def ordered(self) -> bool:
        """Whether ``digits`` are in a reading order that a reader must reproduce (not for ``free``)."""
        return self.layout != "free"

    @property
    def reading(self) -> str:
        return "".join(str(t.label) for t in self.digits)


# --------------------------------------------------------------------------- placing digits


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(math.exp(rng.uniform(math.log(low), math.log(max(low, high)))))


def _rows_plan(rng: np.random.Generator, n: int, size: tuple[int, int], tight: bool) -> list[list[float]]:
    """Digit heights (px) in rows; each row a list of heights, written left to right."""
    w, h = size
    rows = 1 if tight else int(rng.integers(1, min(4, n) + 1))
    per_row = [n // rows + (1 if i < n % rows else 0) for i in range(rows)]
    gap = (0.15, 0.4) if tight else (0.3, 0.7)
    usable_w, usable_h = (1 - 2 * MARGIN) * w, (1 - 2 * MARGIN) * h
    fit_w = usable_w / (max(per_row) * (1.1 + gap[1]) + (0.8 if n == 9 and tight else 0))
    fit_h = usable_h / (rows * 2.1)
    height = _log_uniform(rng, MIN_HEIGHT * h, min(MAX_HEIGHT * h, fit_w, fit_h))
    return [[height * rng.uniform(0.92, 1.08) for _ in range(k)] for k in per_row]


def _place_rows(rng: np.random.Generator, alphas: list[np.ndarray], plan: list[list[float]],
                size: tuple[int, int], tight: bool) -> list[tuple[int, int]]:
    """Top-left corners of each glyph (in plan order): rows of ink boxes with gaps between them, the block
    centred on the page with some wander."""
    w, h = size
    gap = (0.15, 0.4) if tight else (0.3, 0.7)
    corners: list[tuple[int, int]] = []
    height = float(np.median([x for row in plan for x in row]))
    pitch = height * rng.uniform(1.7, 2.1)
    top = h / 2 - pitch * (len(plan) - 1) / 2 + rng.uniform(-0.05, 0.05) * h
    k = 0
    for r, row in enumerate(plan):
        inks = [_ink_box(a) for a in alphas[k : k + len(row)]]
        gaps = [height * rng.uniform(*gap) for _ in row[1:]]
        if tight and len(row) == 9:
            gaps[4] += 0.8 * height  # ZIP+4: a wider gap after the fifth digit
        span = sum(x1 - x0 for x0, _, x1, _ in inks) + sum(gaps)
        x = w / 2 - span / 2 + rng.uniform(-0.05, 0.05) * w
        x = min(max(x, MARGIN * w), max(MARGIN * w, (1 - MARGIN) * w - span))
        cy = min(max(top + r * pitch, MARGIN * h + height / 2), (1 - MARGIN) * h - height / 2)
        for i, (x0, y0, x1, y1) in enumerate(inks):
            wander = rng.uniform(-0.06, 0.06) * height
            corners.append((round(x - x0), round(cy + wander - (y0 + y1) / 2)))
            x += x1 - x0 + (gaps[i] if i < len(gaps) else 0)
        k += len(row)
    return corners


def _ink_box(alpha: np.ndarray) -> tuple[int, int, int, int]:
    rows, cols = np.nonzero(alpha > 0.3)
    return int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1


def _apart(a: tuple[float, ...], b: tuple[float, ...], space: float) -> bool:
    """Whether two (x0, y0, x1, y1) boxes are at least ``space`` apart, sideways or up and down."""
    return a[2] + space < b[0] or b[2] + space < a[0] or a[3] + space < b[1] or b[3] + space < a[1]


def _place_free(rng: np.random.Generator, alphas: list[np.ndarray],
                size: tuple[int, int]) -> list[tuple[int, int]] | None:
    """Random corners such that no two digits' ink boxes come closer than half the taller one's height."""
    w, h = size
    boxes: list[tuple[float, float, float, float]] = []
    corners = []
    for a in alphas:
        x0, y0, x1, y1 = _ink_box(a)
        for _ in range(200):
            cx = rng.uniform(MARGIN * w - x0, (1 - MARGIN) * w - x1)
            cy = rng.uniform(MARGIN * h - y0, (1 - MARGIN) * h - y1)
            box = (cx + x0, cy + y0, cx + x1, cy + y1)
            if all(_apart(box, b, 0.5 * max(box[3] - box[1], b[3] - b[1])) for b in boxes):
                boxes.append(box)
                corners.append((round(cx), round(cy)))
                break
        else:
            return None
    return corners


# --------------------------------------------------------------------------- rendering


def _glyph_alpha(glyph: np.ndarray, height: int, angle: float) -> np.ndarray:
    """The digit (white on black) as ink alpha in [0, 1], scaled to ``height`` px (width at most 1.1 x height),
    rotated by ``angle`` degrees, with room around it. (``export.filming`` crops its glyphs at alpha 0.1, a step
    that shows once a digit is drawn 20 times larger than its 28 pixels; this crop keeps the faint edge.)"""
    alpha = glyph.astype(np.float32) / 255.0
    rows, cols = np.nonzero(alpha > 0.01)
    alpha = np.pad(alpha[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1], 2)  # fades out when scaled
    return scale_and_rotate(alpha, height, angle, border=2)


def _shadow(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """A soft shadow across part of the page (a hand or a phone between the lamp and the sheet)."""
    h, w = shape
    small = (max(2, w // 16), max(2, h // 16))
    yy, xx = np.mgrid[0 : small[1], 0 : small[0]].astype(np.float32)
    angle = rng.uniform(0, 2 * math.pi)
    cx, cy = small[0] * rng.uniform(0.2, 0.8), small[1] * rng.uniform(0.2, 0.8)
    along = (xx - cx) * math.cos(angle) + (yy - cy) * math.sin(angle)
    soft = max(small) * rng.uniform(0.05, 0.25)
    mask = 1 / (1 + np.exp(-along / soft))
    low = 1 - rng.uniform(0.15, 0.35) * mask
    return cv2.resize(low.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)


def render(glyphs: list[tuple[int, np.ndarray, str]], layout: str, rng: np.random.Generator,
           size: tuple[int, int] | None = None) -> Page:
    """A photo of a sheet holding ``glyphs`` (label, 28x28 white-on-black uint8 digit, name) laid out as ``layout``."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    n = len(glyphs)
    sides = SINGLE_SIDES if layout == "single" else PAGE_SIDES
    w, h = size or sides[int(rng.integers(len(sides)))]
    angles = [rng.uniform(-6, 6) for _ in glyphs]
    corners: list[tuple[int, int]] | None = None
    while corners is None:
        if layout == "single":
            heights = [_log_uniform(rng, 0.2 * h, 0.7 * h)]
        elif layout == "free":
            heights = [_log_uniform(rng, MIN_HEIGHT * h, MAX_HEIGHT * h * (0.6 if n > 6 else 1.0)) for _ in glyphs]
        else:
            plan = _rows_plan(rng, n, (w, h), tight=layout == "zip")
            heights = [x for row in plan for x in row]
        alphas = [_glyph_alpha(g, max(8, round(hh)), a) for (_, g, _), hh, a in zip(glyphs, heights, angles)]
        if layout == "single":  # near the middle, its ink at least MARGIN / 2 from every edge
            x0, y0, x1, y1 = _ink_box(alphas[0])
            cx = rng.uniform(min(0.5, MARGIN / 2 + (x1 - x0) / w / 2), max(0.5, 1 - MARGIN / 2 - (x1 - x0) / w / 2))
            cy = rng.uniform(min(0.5, MARGIN / 2 + (y1 - y0) / h / 2), max(0.5, 1 - MARGIN / 2 - (y1 - y0) / h / 2))
            corners = [(round(cx * w - (x0 + x1) / 2), round(cy * h - (y0 + y1) / 2))]
        elif layout == "free":
            corners = _place_free(rng, alphas, (w, h))
        else:
            corners = _place_rows(rng, alphas, plan, (w, h), tight=layout == "zip")
    sheet = _paper(rng, (h, w))
    ink_points = []
    for (x, y), alpha in zip(corners, alphas):
        gh, gw = alpha.shape
        x0, y0 = max(0, x), max(0, y)
        x1, y1 = min(w, x + gw), min(h, y + gh)
        a = alpha[y0 - y : y1 - y, x0 - x : x1 - x] * rng.uniform(0.8, 1.0)
        region = sheet[y0:y1, x0:x1]
        region[...] = region * (1 - a) + rng.uniform(25, 70) * a
        rows, cols = np.nonzero(alpha[y0 - y : y1 - y, x0 - x : x1 - x] > 0.3)
        ink_points.append(np.stack([cols + x0 + 0.5, rows + y0 + 0.5], axis=1))
    rotation = rng.uniform(-MAX_ROTATION, MAX_ROTATION)
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), rotation, 1.0)
    view = cv2.warpAffine(sheet, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    view *= _lighting(rng, (h, w)) * _shadow(rng, (h, w))
    view = cv2.GaussianBlur(view, (0, 0), rng.uniform(0.6, 1.2) * max(1.0, h / 1200))
    tint = np.array([rng.uniform(0.88, 1.0), rng.uniform(0.94, 1.0), 1.0], np.float32)
    colour = view[:, :, None] * tint
    colour += rng.standard_normal(colour.shape, dtype=np.float32) * np.float32(rng.uniform(2, 5))
    quality = int(rng.integers(55, 93))
    ok, encoded = cv2.imencode(".jpg", np.clip(colour, 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    image = cv2.imdecode(encoded, cv2.IMREAD_COLOR)
    truths = []
    for (label, _, name), points in zip(glyphs, ink_points):
        moved = points @ matrix[:, :2].T + matrix[:, 2]
        x0, y0 = np.floor(moved.min(axis=0)).astype(int)
        x1, y1 = np.ceil(moved.max(axis=0)).astype(int)
        truths.append(Truth(label, (int(x0), int(y0), int(x1 - x0), int(y1 - y0)), name))
    return Page(image, encoded.tobytes(), layout, truths, rotation, quality,
                float(np.median([t.box[3] for t in truths])) / h)


# --------------------------------------------------------------------------- pages


def pages(digits: Digits, count: int, *, seed: int, layouts: tuple[str, ...] = ("rows", "zip", "free"),
          name: str = "test", odd: bool = False) -> Iterator[Page]:
    """``count`` pages, the layouts taking turns, their digits drawn without replacement from ``digits``
    (``name`` names them, e.g. "test#12"), all drawn from ``seed``. ``odd``: each page also holds, at a random
    place among its digits, two digits of ``digits`` superimposed (``export.filming.superimposed``, standing in for
    an adversarial digit) and a non-digit (``export.filming.nondigit``: a star, a hash sign or a Fashion-MNIST
    item), as the webcam's test videos do."""
    images, labels = digits
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(images))
    used = 0
    for i in range(count):
        layout = layouts[i % len(layouts)]
        if layout == "single":
            n = 1
        elif layout == "zip":
            n = 5 if rng.random() < 0.6 else 9
        else:
            n = int(rng.integers(2, 13))
        chosen = [order[(used + j) % len(order)] for j in range(n)]
        used += n
        glyphs = [(int(labels[c]), images[c], f"{name}#{c}") for c in chosen]
        if odd:
            pair, pair_name = superimposed(rng, digits=digits)
            other, other_name = nondigit(rng, i)
            glyphs += [(PAIR, pair, pair_name), (NONDIGIT, other, other_name)]
            glyphs = [glyphs[k] for k in rng.permutation(len(glyphs))]
        yield render(glyphs, layout, rng)


# --------------------------------------------------------------------------- matching


def _overlap(a: Box, b: Box) -> int:
    w = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    h = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    return max(0, w) * max(0, h)


def match(truths: list[Truth], boxes: list[Box], min_iou: float = 0.5) -> tuple[list[tuple[str, int | None]], int]:
    """Each true digit's outcome against the found boxes, and how many found boxes lie on no digit.

    A found box covering half or more of two or more digits merged them ("merged"); two or more found boxes
    each lying mostly (half or more of their area) inside one digit split it ("split"); otherwise the found box
    with the best IoU, when it is ``min_iou`` or more, found it ("found", with that box's index); else "missed".
    A found box that lies mostly (half or more of its area) on no digit counts as spurious.
    """
    area = [max(1, t.box[2] * t.box[3]) for t in truths]
    covers = [[_overlap(t.box, b) / area[i] for i, t in enumerate(truths)] for b in boxes]
    inside = [[_overlap(t.box, b) / max(1, b[2] * b[3]) for t in truths] for b in boxes]
    merged = {i for row in covers if sum(c >= 0.5 for c in row) >= 2 for i, c in enumerate(row) if c >= 0.5}
    out: list[tuple[str, int | None]] = []
    for i, t in enumerate(truths):
        if i in merged:
            out.append(("merged", None))
        elif sum(row[i] >= 0.5 for row in inside) >= 2:
            out.append(("split", None))
        else:
            ious = [_overlap(t.box, b) / (area[i] + b[2] * b[3] - _overlap(t.box, b)) for b in boxes]
            best = int(np.argmax(ious)) if ious else -1
            out.append(("found", best) if best >= 0 and ious[best] >= min_iou else ("missed", None))
    spurious = sum(1 for row in inside if sum(row) < 0.5)  # boxes lying mostly on no digit
    return out, spurious


# --------------------------------------------------------------------------- measuring

HEIGHT_BANDS = ((0.0, 0.06, "3-6%"), (0.06, 0.12, "6-12%"), (0.12, 1.0, "12-30%"))
COMPARED = ("camera", "digits")  # the calibrations measured on page digits


def _band(height: float) -> str:
    return next(name for low, high, name in HEIGHT_BANDS if low <= height < high)


def _tally() -> dict:
    return {"pages": 0, "digits": 0, "found": 0, "read": 0, "merged": 0, "split": 0, "missed": 0, "spurious": 0,
            "status": {s: 0 for s in STATUSES}, "ordered": 0, "ordered_found": 0, "order_right": 0,
            "reading_right": 0, "all_read": 0}


def measure_pages(guard: Guard, source: Iterator[Page], alpha: float) -> dict:
    """Screen each page as ``edgeguard detect`` does (``Guard.screen_image``, digits="auto") and tally, per
    layout and per digit height: digits found (matched one to one), read right, merged, split, missed, boxes on
    no digit, each page's status, reading order and reading; and the share of found clean digits that each
    calibration in ``COMPARED`` flags at ``alpha`` (the found digits' scores p-valued with each). Pages holding
    pairs and non-digits (``pages(odd=True)``) add, per kind, how many were found and the share flagged."""
    layouts: dict[str, dict] = {}
    bands: dict[str, dict] = {}
    scores: list[dict[str, float]] = []
    odd: dict[str, dict] = {}
    for page in source:
        result = guard.screen_image(page.image)
        outcomes, spurious = match(page.digits, [d.box for d in result.digits])
        entry = layouts.setdefault(page.layout, _tally())
        entry["pages"] += 1
        entry["status"][result.status] += 1
        entry["spurious"] += spurious
        band = bands.setdefault(_band(page.digit_height), _tally())
        for truth, (outcome, j) in zip(page.digits, outcomes):
            if truth.kind != "digit":
                item = odd.setdefault(truth.kind, {"items": 0, "found": 0, "scores": []})
                item["items"] += 1
                if outcome == "found":
                    item["found"] += 1
                    item["scores"].append(result.digits[j].screening.scores)
                continue
            for tally in (entry, band):
                tally["digits"] += 1
                tally[outcome] += 1
            if outcome == "found":
                screening = result.digits[j].screening
                scores.append(screening.scores)
                entry["read"] += screening.label == truth.label
                band["read"] += screening.label == truth.label
        if any(t.kind != "digit" for t in page.digits):
            continue  # a page with pairs and non-digits: no reading to check
        entry["all_read"] += all(o == "found" and result.digits[j].label == t.label
                                 for t, (o, j) in zip(page.digits, outcomes))
        if page.ordered and all(o == "found" for o, _ in outcomes):
            entry["ordered_found"] += 1
            entry["order_right"] += [j for _, j in outcomes] == list(range(len(result.digits)))
        if page.ordered:
            entry["ordered"] += 1
            entry["reading_right"] += result.reading == page.reading
    total = _tally()
    for entry in layouts.values():
        for key, value in entry.items():
            if key == "status":
                for s, n in value.items():
                    total["status"][s] += n
            else:
                total[key] += value
    flagged, odd_flagged = {}, {}
    for name in COMPARED:
        calibration = guard.bundle.info.calibrations.get(name)
        if calibration is not None:
            flagged[name] = _flagged(calibration, scores, alpha)
            odd_flagged[name] = {kind: _flagged(calibration, item["scores"], alpha) for kind, item in odd.items()}
    return {"layouts": layouts, "bands": bands, "total": total, "flagged": flagged, "alpha": alpha,
            "odd": {kind: {"items": item["items"], "found": item["found"]} for kind, item in odd.items()},
            "odd_flagged": odd_flagged}


def _flagged(calibration, scores: list[dict[str, float]], alpha: float) -> dict:
    """How many of these screenings (their scores) ``calibration`` flags at ``alpha``."""
    if not scores:
        return {"flagged": 0, "of": 0}
    signals = {s: np.array([row[s] for row in scores], np.float32) for s in calibration.signals}
    _, combined = calibration.p_values(signals)
    return {"flagged": int(np.count_nonzero(combined < alpha)), "of": len(scores)}


def same_as_today(guard: Guard, images: Iterator[tuple[str, bytes, int]], folder: Path) -> dict:
    """Single-digit image files (name, content, true label) through ``screen_image`` (auto) against today's
    ``screen_file``: how many today screens, how many of those get an identical verdict now (screened whole, every
    field equal) and the names of any that do not; how many today finds no digit in, and how many of those are
    read now (the region finder's one digit), and read right."""
    out: dict = {"images": 0, "screened_today": 0, "identical": 0, "differ": [], "unreadable_today": 0,
                 "read_now": 0, "read_right_now": 0}
    for name, content, label in images:
        path = folder / name
        path.write_bytes(content)
        out["images"] += 1
        try:
            today = guard.screen_file(path)
        except InputError:
            today = None
        try:
            now = guard.screen_image(path)
        except InputError:
            now = None
        path.unlink()
        if today is None:
            out["unreadable_today"] += 1
            if now is not None and len(now.digits) == 1:
                out["read_now"] += 1
                out["read_right_now"] += now.digits[0].label == label
            continue
        out["screened_today"] += 1
        if now is not None and now.status == "whole" and len(now.digits) == 1 and now.digits[0].screening == today:
            out["identical"] += 1
        else:
            out["differ"].append(f"{name}: {'error' if now is None else now.status}")
    return out


def timing(guard: Guard, digits: Digits, folder: Path, *, repeats: int, seed: int = 7) -> dict:
    """A 12-digit page photographed at 12 MP (4000 x 3000), screened from its JPEG file as ``edgeguard detect``
    does (decoding included), ``repeats`` times: the median and every run, in seconds; and the same from the
    decoded pixels (``Guard.screen_regions``)."""
    images, labels = digits
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(images), 12, replace=False)
    page = render([(int(labels[c]), images[c], f"#{c}") for c in chosen], "rows", rng, size=(4000, 3000))
    path = folder / "page-12mp.jpg"
    path.write_bytes(page.jpeg)
    guard.screen_image(path)  # warm up
    from_file, from_pixels = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = guard.screen_image(path)
        from_file.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        guard.screen_regions(page.image)
        from_pixels.append(time.perf_counter() - t0)
    return {"size": [4000, 3000], "digits": len(page.digits), "found": len(result.digits), "status": result.status,
            "reading_right": result.reading == page.reading, "jpeg_bytes": len(page.jpeg), "repeats": repeats,
            "file_s": statistics.median(from_file), "file_runs_s": from_file,
            "pixels_s": statistics.median(from_pixels), "pixels_runs_s": from_pixels}


# --------------------------------------------------------------------------- the benchmark

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "reports" / "pages.md"
HELD_OUT_SEED, TEST_SEED, SINGLE_SEED = 100, 0, 200
FULL = {"held_out_pages": 120, "test_pages": 270, "single_photos": 150, "mnist_files": 200, "repeats": 5}
QUICK = {"held_out_pages": 3, "test_pages": 6, "single_photos": 6, "mnist_files": 4, "repeats": 1}


EXAMPLE_LABELS = {"digit_0.png": 0, "digit_1.png": 1, "digit_2.png": 2, "digit_4.png": 4, "digit_7.png": 7,
                  "photo_digit_3.jpg": 3, "adversarial_from_9.png": 9, "not_a_digit_boot.png": -1}


def single_images(digits: Digits, photos: int, mnist_files: int, seed: int) -> Iterator[tuple[str, bytes, int]]:
    """Single-digit files (name, content, true label; -1 for none): ``photos`` generated photos (``single``
    layout, JPEG), ``mnist_files`` MNIST digits as 28x28 PNGs, and the files in examples/."""
    for i, page in enumerate(pages(digits, photos, seed=seed, layouts=("single",))):
        yield f"single-{i}.jpg", page.jpeg, page.digits[0].label
    images, labels = digits
    for i in range(mnist_files):
        yield f"mnist-{i}.png", cv2.imencode(".png", images[i])[1].tobytes(), int(labels[i])
    for path in sorted((ROOT / "examples").glob("*")):
        if path.suffix.lower() in (".png", ".jpg", ".jpeg"):
            yield f"example-{path.name}", path.read_bytes(), EXAMPLE_LABELS.get(path.name, -1)


MAX_CLEAN_FLAGGED = 0.02  # the target: at most this share of clean page digits flagged at alpha 0.01


def choose(held_out: dict) -> dict:
    """The calibration for cut-out digits, chosen on held-out pages: of those that flag at most
    ``MAX_CLEAN_FLAGGED`` of the clean digits, the one that flags the most pairs and non-digits; on a tie, the one
    whose share of clean digits flagged is closest to alpha; then the camera's."""
    alpha = held_out["alpha"]
    rates = {name: f["flagged"] / f["of"] for name, f in held_out["flagged"].items() if f["of"]}
    power = {name: sum(f["flagged"] for f in kinds.values()) / max(1, sum(f["of"] for f in kinds.values()))
             for name, kinds in held_out["odd_flagged"].items()}
    eligible = [name for name in rates if rates[name] <= MAX_CLEAN_FLAGGED]
    chosen = min(eligible or list(rates),
                 key=lambda name: (-power.get(name, 0.0), abs(rates[name] - alpha), name != "camera"), default=None)
    return {"rates": rates, "power": power, "chosen": chosen, "in_use": REGIONS_CALIBRATION,
            "max_clean_flagged": MAX_CLEAN_FLAGGED, "eligible": eligible}


def run(quick: bool, seed_offset: int = 0) -> dict:
    from train.data import load_mnist

    sizes = QUICK if quick else FULL
    data = load_mnist()
    test, held = (data.test_x, data.test_y), (data.val_x, data.val_y)
    guard = Guard.load(threads=1, kernels="numpy")  # what `edgeguard detect` runs for a few files
    guard.warmup()
    layouts = ("rows", "zip", "free")
    held_out = measure_pages(guard, pages(held, sizes["held_out_pages"], seed=HELD_OUT_SEED + seed_offset,
                                          layouts=layouts, name="held-out", odd=True), guard.alpha)
    measured = measure_pages(guard, pages(test, sizes["test_pages"], seed=TEST_SEED + seed_offset, layouts=layouts),
                             guard.alpha)
    with tempfile.TemporaryDirectory() as folder:
        single = same_as_today(guard, single_images(test, sizes["single_photos"], sizes["mnist_files"],
                                                    SINGLE_SEED + seed_offset), Path(folder))
        speed = timing(guard, test, Path(folder), repeats=sizes["repeats"])
    return {"sizes": sizes, "held_out": held_out, "choice": choose(held_out), "test": measured, "single": single,
            "timing": speed, "bundle": bundle_info(guard), "providers": guard.providers}


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description="Generated test pages: several digits in one image.")
    parser.add_argument("--quick", action="store_true", help="a few pages of each kind (a smoke test, seconds)")
    parser.add_argument("--out", metavar="PATH", help="write the Markdown report here (default: reports/pages.md, "
                                                      "or none with --quick)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of the Markdown")
    args = parser.parse_args(argv)
    out = args.out if args.out is not None else (None if args.quick else str(DEFAULT_OUT))
    started, t0 = datetime.now(UTC), time.perf_counter()
    cpu = pin_one_core()
    cv2.setNumThreads(1)
    machine = machine_info(cpu)
    report = run(args.quick)
    machine["loadavg_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    report.update(command=shlex.join(["python", "-m", "benchmarks.pages", *argv]), quick=args.quick,
                  created=started.isoformat(timespec="seconds"), machine=machine,
                  elapsed_s=round(time.perf_counter() - t0, 1))
    markdown = pages_report.to_markdown(report)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(markdown)
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print(markdown)
        if out:
            print(f"(written to {out})")


if __name__ == "__main__":
    main()
