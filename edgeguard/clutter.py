"""What in a camera frame is not a digit, for the webcam's region finder (``edgeguard.regions.FRAME``).

A real camera sees more than digits on paper: ruled lines written across, boxes drawn around answers, the edge
of the page and the desk, a hand, a window around the whole view, a crossing-out. Each rule here is measured on
generated desk scenes (``export/desk.py``, ``python -m benchmarks.webcam_clutter``) and tested on a frame drawn
to need it (``tests/test_clutter.py``):

- ``line_pixels``: straight, nearly level lines (ruled lines), found among the ink as in a Hough transform and
  cut out, so that the digits written across them are found;
- ``hollow_frames``: ink shaped like a frame (``frame_shaped``) has its sides cut away (``outline``), so that
  a digit touching a box drawn around it is found alone;
- ``frames``: ink whose box holds a digit-sized piece of other ink (a window, a page edge, a box not touching
  its digit) or shaped like an empty frame is not a digit;
- ``on_paper``: pen on paper has paper on all four sides; a piece of a page's edge, a hand or a window does not;
- ``long_stroke``: a straight stroke far longer than the digits around it are tall is a crossing-out.

Pieces cut out of the ink (``split``) become components of area 0, which the region finder never keeps and
``crop_region`` paints over with paper.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["Box", "Region", "MIN_DEPTH", "Line", "frames", "frame_shaped", "hollow_frames", "line_pixels",
           "lines", "long_stroke", "on_paper", "outline", "split"]

Box = tuple[int, int, int, int]  # x, y, width, height in image pixels
Region = tuple[Box, list[int]]  # a digit's box and the labels of the ink components it is made of

MIN_DEPTH = 30  # pen on paper: the ink at least this much darker (0..255) than the paper on every side of it


def long_stroke(labels: np.ndarray, region: Region, typical: float, thin: float = 0.15,
                 longest: float = 1.3) -> bool:
    """A straight, thin stroke (its ink's spread across its axis under ``thin`` times the spread along it)
    longer than ``longest`` times the ``typical`` digit height: a crossing-out or a margin line. A "1" is as
    straight, but about as long as the other digits are tall."""
    (x, y, w, h), members = region
    if math.hypot(w, h) <= longest * typical:  # no straight stroke in the box is that long
        return False
    ys, xs = np.nonzero(np.isin(labels[y : y + h, x : x + w], members))
    if xs.size < 3:
        return False
    minor, major = np.sqrt(np.maximum(np.linalg.eigvalsh(np.cov(np.stack([xs, ys]).astype(np.float64))), 0.0))
    return bool(minor < thin * major and math.sqrt(12.0) * major > longest * typical)


def frames(labels: np.ndarray, stats: np.ndarray, keep: np.ndarray, min_h: float) -> np.ndarray:
    """Which components are frames, not digits: those whose box holds the whole box of another kept component
    at least ``min_h`` tall (a box drawn around an answer, a window around a page), and those shaped like an
    empty frame (``frame_shaped``)."""
    x, y, w, h, area = (stats[:, i].astype(np.int64) for i in range(5))
    out = np.zeros(len(stats), bool)
    index = np.flatnonzero(keep)
    if index.size == 0:
        return out
    inner = index[h[index] >= min_h]
    if inner.size:
        xi, yi, wi, hi = x[inner], y[inner], w[inner], h[inner]
        for i in index:
            holds = (x[i] < xi) & (y[i] < yi) & (xi + wi < x[i] + w[i]) & (yi + hi < y[i] + h[i])
            out[i] = bool(holds.any())
    hollow = index[~out[index] & (area[index] < 0.6 * w[index] * h[index]) & (w[index] >= 0.5 * h[index])
                   & (h[index] >= 0.5 * w[index]) & (h[index] >= min_h)]
    for i in hollow:
        out[i] = frame_shaped(labels[y[i] : y[i] + h[i], x[i] : x[i] + w[i]] == i + 1)
    return out


def on_paper(gray: np.ndarray, box: Box, labels: np.ndarray | None = None, cut: np.ndarray | None = None,
             least: float = 0.35) -> bool:
    """Whether the ink in ``box`` has paper on all four sides: pen on paper is far darker than the strips just
    outside its box on every side (a neighbour's stroke or a shadow changes a strip's median little), while a
    piece of a page's edge, a hand or a window has the desk, skin or screen on at least one side, about as dark
    as itself (or a dark grain of a desk, a few levels under its neighbours). The darkness under the four strips'
    medians must be at least ``least`` times the largest of them, and ``MIN_DEPTH``. ``labels`` and ``cut`` (by
    label, True for the pieces cut out as lines or frames drawn on the paper): those pieces are left out of the
    strips."""
    x, y, w, h = (int(v) for v in box)
    m = max(3, round(0.2 * min(w, h)))
    height, width = gray.shape
    inside = gray[y : y + h, x : x + w].ravel()
    ink = float(np.partition(inside, inside.size // 10)[inside.size // 10])
    above, below = slice(max(0, y - m), y), slice(y + h, min(height, y + h + m))
    left, right = slice(max(0, x - m), x), slice(x + w, min(width, x + w + m))
    depth = []
    for rows, cols in ((above, slice(x, x + w)), (below, slice(x, x + w)), (slice(y, y + h), left),
                       (slice(y, y + h), right)):
        strip = gray[rows, cols] if cut is None or labels is None else gray[rows, cols][~cut[labels[rows, cols]]]
        if strip.size:
            depth.append(float(np.partition(strip.ravel(), strip.size // 2)[strip.size // 2]) - ink)
    return len(depth) == 4 and min(depth) >= max(least * max(depth), MIN_DEPTH)


def side_width(shape: tuple[int, ...]) -> int:
    """The width of a frame's side: 10% of the box's smaller side (a drawn side a few degrees off level stays
    in it), 2 px at least."""
    return max(2, round(0.1 * min(shape)))


def frame_shaped(ink: np.ndarray, cover: float = 0.85) -> bool:
    """Ink lying along three or more sides of its box: in a band (``band``) along a side, ink at ``cover``
    of the positions or more. A digit is round at its box's sides (a "0" touches each side over about half its
    length); a drawn rectangle runs along all four."""
    band = side_width(ink.shape)
    level = [float(ink[:band].any(0).mean()) >= cover, float(ink[-band:].any(0).mean()) >= cover]
    if not any(level):  # three sides of four hold a level one: the upright ones need not be looked at
        return False
    upright = [float(ink[:, :band].any(1).mean()) >= cover, float(ink[:, -band:].any(1).mean()) >= cover]
    return sum(level) + sum(upright) >= 3


def hollow_frames(labels: np.ndarray, stats: np.ndarray, min_h: float) -> tuple[np.ndarray, np.ndarray]:
    """Cut the outline out of ink shaped like a frame (``frame_shaped``: a box drawn around an answer, touching
    it), so that what it holds is found on its own."""
    x, y, w, h, area = (stats[:, i].astype(np.int64) for i in range(5))
    hollow = np.flatnonzero((area < 0.75 * w * h) & (w >= 0.3 * h) & (h >= 0.3 * w) & (h >= min_h))
    for i in hollow:
        own = labels[y[i] : y[i] + h[i], x[i] : x[i] + w[i]] == i + 1
        if frame_shaped(own):
            labels, stats = split(labels, stats, int(i), outline(own))
    return labels, stats


def outline(own: np.ndarray) -> np.ndarray:
    """The sides of a frame-shaped piece of ink (a box drawn around a digit, maybe touching it). A side is the
    ink's outer edge: in each column, the first ink from that side of the box; a line fitted through the first
    ink of the columns where it lies near the box's edge (``band``; 60% of them at least, else there is no
    such side) is the side's outer edge, and the side is cut from it inward by the pen's width (the thinnest
    side's typical first run of ink), so that a digit touching or running along a side keeps its strokes."""
    band = side_width(own.shape)
    views = (own, own[::-1], own.T, own.T[::-1])  # top, bottom, left, right: each side as a top
    sides: list[tuple[float, float, float] | None] = []
    for view in views:
        h, w = view.shape
        rows = np.arange(h)[:, None]
        first = view.argmax(0)
        near = view.any(0) & (first <= 1.5 * band)
        if near.sum() < 0.6 * w:
            sides.append(None)
            continue
        gap = ~view & (rows > first)
        run = np.where(gap.any(0), gap.argmax(0), h) - first
        columns = np.flatnonzero(near)
        rows_at = first[columns].astype(np.float64)
        spread = columns - columns.mean()
        slope = float((spread * (rows_at - rows_at.mean())).sum() / max(float((spread * spread).sum()), 1e-9))
        runs = run[columns]
        sides.append((slope, float(rows_at.mean() - slope * columns.mean()),
                      float(np.partition(runs, runs.size // 4)[runs.size // 4])))
    widths = [side[2] for side in sides if side is not None]
    out = np.zeros(own.shape, bool)
    if not widths:
        return out
    pen = min(widths) + 1
    for view_index, side in enumerate(sides):
        if side is None:
            continue
        slope, start, _ = side
        view = views[view_index]
        h, w = view.shape
        edge = start + slope * np.arange(w)
        cut = (np.arange(h)[:, None] >= edge - 1) & (np.arange(h)[:, None] < edge + pen)
        out |= (cut, cut[::-1], cut.T, cut[::-1].T)[view_index]  # back from the side's view
    return out & own
def split(labels: np.ndarray, stats: np.ndarray, i: int, cut: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Component ``i`` (0-based row of ``stats``) without the pixels ``cut`` (a mask over its box): what is left
    becomes new components (appended to ``stats``), the cut pixels one more of area 0, which is never kept (so
    ``crop_region`` paints it over as other ink). ``labels`` is changed in place (a copy is made first)."""
    x, y, w, h = (int(v) for v in stats[i, :4])
    labels = labels if labels.flags.writeable and labels.base is None else labels.copy()
    crop = labels[y : y + h, x : x + w]
    own = crop == i + 1
    count, parts, part_stats, _ = cv2.connectedComponentsWithStats((own & ~cut).astype(np.uint8), connectivity=8)
    label = len(stats) + 1
    extra = []
    for k in range(1, count):
        crop[parts == k] = label
        px, py, pw, ph, pa = part_stats[k]
        extra.append((x + px, y + py, pw, ph, pa))
        label += 1
    crop[own & cut] = label
    extra.append((x, y, w, h, 0))
    stats = np.vstack([stats, np.asarray(extra, dtype=stats.dtype)])
    stats[i, 4] = 0  # the component itself is gone
    return labels, stats


@dataclass(frozen=True)
class Line:
    """A straight, nearly level line found in a mask: row = start + slope * column, for columns x0..x1."""

    x0: int
    x1: int
    start: float
    slope: float
    thickness: float

    def row(self, column: np.ndarray | float) -> np.ndarray | float:
        return self.start + self.slope * column


def lines(mask: np.ndarray, length: float, tilt: float = 10.0, most: int = 16, bar: int = 15) -> list[Line]:
    """Straight lines at least ``length`` px long and tilted at most ``tilt`` degrees in a uint8 mask.

    The mask opened with a level bar (``bar`` px) keeps the ink that runs level for 15 px (a line tilted up to about
    10 degrees, the bars of a 7 or a 5). A line may be broken where digits cross it (their ink darkens the
    threshold's neighbourhood), so its pieces are pooled: in every opened piece at least half of ``length``
    wide (wider than the side of a box drawn around a digit, which must not vote: boxes in a row line up), each
    run of ink down a column is a point, and lines are found among all the points as in a Hough transform (for
    each whole-degree tilt, the points counted by where they cut the left edge, in 2-px bins). A line is a bin
    holding points in ``length`` / 2 columns or more, spanning ``length`` or more and present in 40% of the
    columns it spans; up to ``most`` of them, strongest first. It is cut over its whole span, across the digits
    that broke it."""
    opened = cv2.morphologyEx(mask, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, (bar, 1)))
    count, labels, stats, _ = cv2.connectedComponentsWithStatsWithAlgorithm(opened, 8, cv2.CV_32S, cv2.CCL_BBDT)
    widths, heights = stats[1:, 2], stats[1:, 3]  # long pieces, and thin as a line is
    pieces = np.flatnonzero((widths >= max(15, length / 2)) & (heights <= 0.2 * widths + 6)) + 1
    if pieces.size == 0 or stats[pieces, 2].sum() < length / 2:
        return []
    point_x, point_y, point_run = [], [], []
    for k in pieces:  # each run of ink down a column of a piece: its column, middle row and length
        x, y, w, h = (int(v) for v in stats[k, :4])
        xs, ys = np.nonzero(np.ascontiguousarray((labels[y : y + h, x : x + w] == k).T))  # column by column
        starts = np.flatnonzero((np.diff(xs, prepend=-1) != 0) | (np.diff(ys, prepend=-2) != 1))
        ends = np.append(starts[1:], len(ys))
        point_x.append(xs[starts] + x)
        point_y.append((ys[starts] + ys[ends - 1]) / 2.0 + y)
        point_run.append(ends - starts)
    px, py = np.concatenate(point_x).astype(np.float64), np.concatenate(point_y)
    run = np.concatenate(point_run).astype(np.float64)
    slopes = np.tan(np.radians(np.arange(-tilt, tilt + 1)))
    pad = int(np.ceil(abs(slopes[0]) * mask.shape[1])) + 2
    # the Hough accumulator: votes[i, p] is the 2-px bin where point p cuts the left edge at slope i
    votes = np.rint((py[None, :] - slopes[:, None] * px[None, :] + pad) / 2).astype(np.int64)
    bins = int(votes.max()) + 1
    offsets = (np.arange(len(slopes)) * bins)[:, None]
    accumulator = np.bincount((votes + offsets).ravel(), minlength=len(slopes) * bins).reshape(len(slopes), bins)
    alive = np.ones(px.size, bool)
    found: list[Line] = []
    while len(found) < most:
        i, j = np.unravel_index(int(np.argmax(accumulator)), accumulator.shape)
        if accumulator[i, j] < length / 2:
            break
        near = alive & (np.abs(py - slopes[i] * px - (2.0 * j - pad)) <= 2.5)
        accumulator -= np.bincount((votes[:, near] + offsets).ravel(),
                                   minlength=accumulator.size).reshape(accumulator.shape)
        alive &= ~near
        if not near.any():
            accumulator[i, j] = 0
            continue
        span = np.ptp(px[near])
        if span >= length and np.unique(px[near]).size >= 0.4 * span:
            fit_slope, fit_start = np.polyfit(px[near], py[near], 1)
            # its thickness where nothing crosses it: the runs of ink down a column are longer where a stroke
            # crosses or runs along the line
            found.append(Line(int(px[near].min()), int(px[near].max()) + 1, float(fit_start), float(fit_slope),
                              float(np.percentile(run[near], 25))))
    return found


def line_mask(shape: tuple[int, ...], found: list[Line]) -> np.ndarray:
    """The pixels within half a line's thickness (plus 1 px) of each of ``lines``, over its columns."""
    out = np.zeros(shape[:2], bool)
    for line in found:
        reach = math.ceil(line.thickness / 2 + 1)
        cols = np.arange(line.x0, line.x1)
        for d in range(-reach, reach + 1):
            rows = np.rint(line.row(cols)).astype(np.int64) + d
            inside = (rows >= 0) & (rows < shape[0])
            out[rows[inside], cols[inside]] = True
    return out


def line_pixels(mask: np.ndarray, length: float) -> np.ndarray:
    """The ink of the straight, nearly level lines at least ``length`` px long in a uint8 mask (``lines``),
    looked for at half the resolution (every other row and column: a ruled line 3 px thick or more keeps a pixel
    in each column there; a quarter of the work) and cut at full resolution."""
    half = [Line(2 * line.x0, 2 * line.x1, 2 * line.start, line.slope, 2 * line.thickness)
            for line in lines(np.ascontiguousarray(mask[::2, ::2]), length / 2, bar=8)]
    return line_mask(mask.shape, half) & (mask > 0)
