"""The order digits are read in: rows top to bottom, left to right within a row, robust to a sheet photographed a
little rotated. Used by the region finder (``edgeguard.regions``) for the webcam's frames and for images of several
digits."""

from __future__ import annotations

import numpy as np

__all__ = ["reading_order"]

Box = tuple[int, int, int, int]  # x, y, width, height


def reading_order(boxes: list[Box]) -> list[int]:
    """Indices of ``boxes`` in reading order: rows top to bottom, left to right within a row.

    A row is grown from left to right: a box joins the row whose line (fitted through its boxes' centres, so
    a sheet photographed a little rotated keeps its rows) passes within half a digit height of its centre,
    the nearest such row; otherwise it starts a row. Rows are then ordered by where their lines cross the
    middle of the boxes."""
    if len(boxes) <= 1:
        return list(range(len(boxes)))
    centres = np.array([(x + w / 2, y + h / 2) for x, y, w, h in boxes], np.float64)
    heights = np.array([max(1, h) for _, _, _, h in boxes], np.float64)
    rows: list[list[int]] = []
    for i in sorted(range(len(boxes)), key=lambda j: (centres[j, 0], centres[j, 1])):
        best, best_dy = -1, 0.0
        for r, row in enumerate(rows):
            last = row[-1]
            slope = _slope(centres[row])
            predicted = centres[last, 1] + slope * (centres[i, 0] - centres[last, 0])
            dy = abs(centres[i, 1] - predicted)
            if dy <= 0.5 * max(heights[i], heights[last]) and (best < 0 or dy < best_dy):
                best, best_dy = r, dy
        if best < 0:
            rows.append([i])
        else:
            rows[best].append(i)
    slopes = [_slope(centres[row]) for row in rows if len(row) >= 2]
    common = float(np.median(slopes)) if slopes else 0.0
    middle = float(centres[:, 0].mean())

    def level(row: list[int]) -> float:
        points = centres[row]
        slope = _slope(points) if len(row) >= 2 else common
        return float(np.mean(points[:, 1] + slope * (middle - points[:, 0])))

    rows.sort(key=level)
    return [i for row in rows for i in row]


def _slope(points: np.ndarray) -> float:
    """dy/dx of the least-squares line through (x, y) points (0 for one point or one column)."""
    if len(points) < 2:
        return 0.0
    dx = points[:, 0] - points[:, 0].mean()
    denominator = float(dx @ dx)
    if denominator <= 0:
        return 0.0
    return float(np.clip(dx @ (points[:, 1] - points[:, 1].mean()) / denominator, -0.5, 0.5))
