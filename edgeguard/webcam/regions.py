"""Where the digits are in a frame: ink regions found, filtered, merged and cut out for ``preprocess``.

    frame (BGR) -> gray -> blur -> adaptive threshold -> morphological close (joins broken strokes)
      -> connected components (the regions inside the external contours; their statistics are
         filtered as arrays, so a frame of noise with thousands of blobs costs no Python loop)
      -> filter by size, aspect and fill; cap the candidates; merge nearby pieces of one digit
      -> the ``max_digits`` largest regions, in reading order
      -> ``crop_region``: each cut out, other blobs painted out, padded with paper
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["Box", "Region", "find_digit_regions", "frame_gray", "digit_regions", "crop_region"]

Box = tuple[int, int, int, int]  # x, y, width, height in frame pixels
Region = tuple[Box, list[int]]  # a digit's box and the labels of the ink components it is made of

MAX_CANDIDATES = 48  # pieces kept (largest first) before merging: bounds the work on a frame of noise
MIN_HEIGHT = 0.05  # smallest digit, as a share of the frame height (24 px at 480)
MAX_HEIGHT = 0.8  # largest digit, same
MIN_ASPECT, MAX_ASPECT = 0.08, 1.8  # width / height of a digit ("1" is thin; a flat, tilted "0" is wide)
MAX_FILL = 0.95  # a region whose box is this full of ink is a solid block, not a digit
THRESHOLD_C = 10  # adaptive threshold: ink must be this much darker (0..255) than its neighbourhood
CROP_SIDE = 56  # larger regions are shrunk to this (px, larger side) before preprocessing: 2.8 x MNIST's 20
PAD = 0.15  # paper added around a crop, as a share of its larger side, before preprocessing


def find_digit_regions(frame: np.ndarray, max_digits: int = 8, *, ink: str = "dark") -> list[Box]:
    """Boxes (x, y, w, h) of up to ``max_digits`` digit-like regions, largest kept, in reading order.

    ``frame`` is BGR, BGRA or gray uint8; ``ink`` is "dark" (pen on paper) or "light" (chalk on a board).
    """
    _, _, found = digit_regions(frame_gray(frame), max_digits, ink)
    return [box for box, _ in found]


def frame_gray(frame: np.ndarray) -> np.ndarray:
    """A frame (BGR, BGRA or gray uint8, at least 16 x 16) as gray; TypeError or ValueError otherwise."""
    if not isinstance(frame, np.ndarray):
        raise TypeError(f"frame must be a numpy array, got {type(frame).__name__}")
    if frame.dtype != np.uint8:
        raise TypeError(f"frame must be uint8 (an OpenCV image), got dtype {frame.dtype}")
    if frame.ndim == 3 and frame.shape[2] == 1:
        frame = frame[:, :, 0]
    if frame.ndim == 2:
        gray = frame
    elif frame.ndim == 3 and frame.shape[2] == 3:
        gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    elif frame.ndim == 3 and frame.shape[2] == 4:
        gray = cv2.cvtColor(frame, cv2.COLOR_BGRA2GRAY)
    else:
        raise ValueError(f"frame must be H x W gray or H x W x 3 BGR, got shape {frame.shape}")
    if min(gray.shape) < 16:
        raise ValueError(f"frame is too small ({gray.shape[1]} x {gray.shape[0]}); expected at least 16 x 16")
    return gray


def digit_regions(gray: np.ndarray, max_digits: int,
                  ink: str = "dark") -> tuple[np.ndarray, np.ndarray, list[Region]]:
    """-> (ink-dark gray, labels image, [(box, [component labels])]) for up to max_digits regions."""
    if isinstance(max_digits, bool) or not isinstance(max_digits, (int, np.integer)) or max_digits < 1:
        raise ValueError(f"max_digits must be a positive integer, got {max_digits!r}")
    gray, labels, stats = _components(gray, ink)
    height, width = gray.shape
    min_h, max_h, max_w = MIN_HEIGHT * height, MAX_HEIGHT * height, MAX_HEIGHT * width
    x, y, w, h, area = (stats[:, i].astype(np.int64) for i in range(5))
    keep = ((np.maximum(w, h) >= 0.5 * min_h) & (area >= 0.1 * min_h * min_h)
            & (h <= max_h) & (w <= max_w)
            & (x > 0) & (y > 0) & (x + w < width) & (y + h < height))  # cut by the frame edge: not whole
    index = np.flatnonzero(keep)
    if index.size > MAX_CANDIDATES:
        index = index[np.argsort(-area[index], kind="stable")[:MAX_CANDIDATES]]
    boxes = np.stack([x[index], y[index], x[index] + w[index], y[index] + h[index]], axis=1)
    boxes, members, ink_area = _merge(boxes, [[int(i) + 1] for i in index], [int(area[i]) for i in index], min_h)

    found: list[Region] = []
    for box, member, ink_px in zip(boxes, members, ink_area):
        bw, bh = int(box[2] - box[0]), int(box[3] - box[1])
        if not _digit_shaped(bw, bh, min_h) or ink_px > MAX_FILL * bw * bh:
            continue
        found.append(((int(box[0]), int(box[1]), bw, bh), member))
    found.sort(key=lambda item: -item[0][2] * item[0][3])
    found = found[:max_digits]
    if found:  # reading order: rows (by the median height), then left to right
        row = max(1.0, float(np.median([b[3] for b, _ in found])))
        found.sort(key=lambda item: (int((item[0][1] + item[0][3] / 2) // row), item[0][0]))
    return gray, labels, found


def crop_region(gray: np.ndarray, labels: np.ndarray, box: Box, members: list[int]) -> np.ndarray:
    """The region with a small margin, other blobs painted over with paper, padded with paper."""
    x, y, w, h = box
    height, width = gray.shape
    margin = 2 + round(0.05 * max(w, h))
    x0, y0 = max(0, x - margin), max(0, y - margin)
    x1, y1 = min(width, x + w + margin), min(height, y + h + margin)
    crop = gray[y0:y1, x0:x1].copy()
    own = labels[y0:y1, x0:x1]
    others = own != 0
    for m in members:
        others &= own != m
    edge = np.concatenate([crop[0], crop[-1], crop[:, 0], crop[:, -1]])
    paper = int(np.median(edge))
    crop[others] = paper
    scale = CROP_SIDE / max(w, h)
    if scale < 1:  # preprocess shrinks the digit to 20 px anyway; a smaller crop is faster to normalise
        size = (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale)))
        crop = cv2.resize(crop, size, interpolation=cv2.INTER_AREA)
    pad = round(PAD * max(crop.shape))
    return cv2.copyMakeBorder(crop, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=paper)


# --------------------------------------------------------------------------- steps


def _odd(value: float, minimum: int) -> int:
    n = max(minimum, int(round(value)))
    return n if n % 2 else n + 1


def _components(gray: np.ndarray, ink: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """-> (ink-dark gray, labels, stats) of the ink mask's connected components (background excluded from stats)."""
    if ink == "light":
        gray = 255 - gray
    elif ink != "dark":
        raise ValueError(f"ink must be 'dark' or 'light', got {ink!r}")
    height = gray.shape[0]
    smooth = cv2.GaussianBlur(gray, (5, 5), 0)
    mask = cv2.adaptiveThreshold(smooth, 255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY_INV,
                                 _odd(height / 16, 15), THRESHOLD_C)
    size = _odd(height / 96, 3)
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size)))
    # BBDT (Grana) computes the statistics about 7x faster here than OpenCV's default (Spaghetti).
    _, labels, stats, _ = cv2.connectedComponentsWithStatsWithAlgorithm(mask, 8, cv2.CV_32S, cv2.CCL_BBDT)
    return gray, labels, stats[1:]


def _digit_shaped(w: int | np.ndarray, h: int | np.ndarray, min_h: float) -> bool | np.ndarray:
    """Tall enough and of a digit's width / height (works on numbers and on arrays)."""
    return (h >= min_h) & (MIN_ASPECT * h <= w) & (w <= MAX_ASPECT * h)


def _mergeable(box: np.ndarray, others: np.ndarray, min_h: float) -> np.ndarray:
    """Which of ``others`` (m x 4: x0, y0, x1, y1) look like another piece of the same digit as ``box``."""
    x0, y0, x1, y1 = box
    ox0, oy0, ox1, oy1 = others.T
    h, oh = y1 - y0, oy1 - oy0
    w, ow = x1 - x0, ox1 - ox0
    taller = np.maximum(h, oh)
    gap = np.maximum(3.0, 0.35 * taller)
    overlap_x = np.minimum(x1, ox1) - np.maximum(x0, ox0)
    overlap_y = np.minimum(y1, oy1) - np.maximum(y0, oy0)
    union_w = np.maximum(x1, ox1) - np.minimum(x0, ox0)
    union_h = np.maximum(y1, oy1) - np.minimum(y0, oy0)
    touching = (overlap_x > 0) & (overlap_y > 0)
    # Two digits in a column would double the height. Two digit-shaped pieces may grow it by half;
    # a piece that is no digit on its own (a bar, a dash, a wide top half) may make up a whole digit.
    whole = ~touching & _digit_shaped(w, h, min_h) & _digit_shaped(ow, oh, min_h)
    shape_ok = (union_h <= np.where(whole, 1.5, 2.2) * taller) & (union_w <= MAX_ASPECT * union_h)
    stacked = (overlap_x >= 0.3 * np.minimum(w, ow)) & (-overlap_y <= gap)  # e.g. the detached bar of a 5
    beside = (overlap_y >= 0.3 * np.minimum(h, oh)) & (-overlap_x <= gap) & (np.minimum(h, oh) <= 0.7 * taller)
    return shape_ok & (touching | stacked | beside)


def _merge(boxes: np.ndarray, members: list[list[int]], ink: list[int],
           min_h: float) -> tuple[np.ndarray, list[list[int]], list[int]]:
    """Merge pieces of one digit until no pair is mergeable. Each box is checked against all the others
    after its last growth (the test is symmetric), so at most 2 x len(boxes) vectorised checks."""
    boxes = boxes.astype(np.float64)
    i = 0
    while i < len(boxes):
        hits = np.flatnonzero(_mergeable(boxes[i], boxes, min_h))
        hits = hits[hits != i]
        if hits.size == 0:
            i += 1
            continue
        j = int(hits[0])
        boxes[i, :2] = np.minimum(boxes[i, :2], boxes[j, :2])
        boxes[i, 2:] = np.maximum(boxes[i, 2:], boxes[j, 2:])
        members[i] += members[j]
        ink[i] += ink[j]
        boxes = np.delete(boxes, j, axis=0)
        del members[j], ink[j]
        if j < i:
            i -= 1  # box i moved down one place; check it again, grown
    return boxes.astype(np.int64), members, ink
