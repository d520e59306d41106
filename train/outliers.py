"""Synthetic non-digits, generated in the repository: scribbles and shapes, made MNIST-style.

They stand in for "things that are not digits" wherever a choice needs them (choosing the verdict's
signals on held-out data, and training). They are kept apart from the out-of-distribution sets that the
robustness report measures on: no font glyphs (the report renders letters and symbols with OpenCV's
Hershey fonts), no Fashion-MNIST test images, and seeds of their own.

``clutter_shapes`` draws what a camera's region finder may cut out of a page besides digits (rectangles and
frames, straight line segments, corners, pieces of shapes): the training recipe's outlier exposure
(``--real-world``) uses them with its seeds, the robustness report measures them as a test set with seeds of its
own (the report's ``frames & lines``).
"""

from __future__ import annotations

import cv2
import numpy as np

from edgeguard.normalize import preprocess

CANVAS = 96
KINDS = ("scribble", "ellipse", "polygon", "cross", "grid")


def _scribble(canvas: np.ndarray, rng: np.random.Generator, thick: int) -> None:
    points = rng.integers(12, CANVAS - 12, size=(int(rng.integers(4, 9)), 2)).astype(np.int32)
    cv2.polylines(canvas, [points], bool(rng.integers(2)), 255, thick, cv2.LINE_AA)


def _ellipse(canvas: np.ndarray, rng: np.random.Generator, thick: int) -> None:
    centre = (int(rng.integers(36, 60)), int(rng.integers(36, 60)))
    axes = (int(rng.integers(14, 38)), int(rng.integers(14, 38)))
    start = int(rng.integers(0, 360))
    cv2.ellipse(canvas, centre, axes, float(rng.uniform(0, 180)), start, start + int(rng.integers(200, 361)), 255,
                thick, cv2.LINE_AA)
    if rng.random() < 0.5:  # a second, inner one
        cv2.ellipse(canvas, centre, (axes[0] // 2, axes[1] // 2), 0.0, 0, 360, 255, thick, cv2.LINE_AA)


def _polygon(canvas: np.ndarray, rng: np.random.Generator, thick: int) -> None:
    n = int(rng.integers(3, 7))
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    radius = rng.uniform(18, 40, n)
    points = np.stack([48 + radius * np.cos(angles), 48 + radius * np.sin(angles)], axis=1).astype(np.int32)
    if rng.random() < 0.3:
        cv2.fillPoly(canvas, [points], 255, cv2.LINE_AA)
    else:
        cv2.polylines(canvas, [points], True, 255, thick, cv2.LINE_AA)


def _cross(canvas: np.ndarray, rng: np.random.Generator, thick: int) -> None:
    for _ in range(int(rng.integers(2, 5))):
        angle = rng.uniform(0, np.pi)
        length = rng.uniform(20, 40)
        dx, dy = length * np.cos(angle), length * np.sin(angle)
        cx, cy = rng.uniform(40, 56, 2)
        cv2.line(canvas, (int(cx - dx), int(cy - dy)), (int(cx + dx), int(cy + dy)), 255, thick, cv2.LINE_AA)


def _grid(canvas: np.ndarray, rng: np.random.Generator, thick: int) -> None:
    step = int(rng.integers(12, 24))
    for v in range(16, CANVAS - 16, step):
        cv2.line(canvas, (v, 16), (v, CANVAS - 16), 255, thick)
        if rng.random() < 0.7:
            cv2.line(canvas, (16, v), (CANVAS - 16, v), 255, thick)


def _rectangle(canvas: np.ndarray, rng: np.random.Generator, thick: int) -> None:
    w, h = int(rng.integers(24, 72)), int(rng.integers(24, 72))
    x, y = int(rng.integers(12, CANVAS - 12 - w)), int(rng.integers(12, CANVAS - 12 - h))
    corners = np.array([[x, y], [x + w, y], [x + w, y + h], [x, y + h]], np.float32)
    turn = cv2.getRotationMatrix2D((x + w / 2, y + h / 2), float(rng.uniform(-12, 12)), 1.0)
    points = (corners @ turn[:, :2].T + turn[:, 2]).astype(np.int32)
    cv2.polylines(canvas, [points], True, 255, thick, cv2.LINE_AA)


def _frame(canvas: np.ndarray, rng: np.random.Generator, thick: int) -> None:
    """Two or three sides of a box (a frame cut by the edge of the view, or a box drawn open)."""
    x0, y0 = int(rng.integers(12, 36)), int(rng.integers(12, 36))
    x1, y1 = int(rng.integers(60, CANVAS - 12)), int(rng.integers(60, CANVAS - 12))
    sides = [((x0, y0), (x1, y0)), ((x1, y0), (x1, y1)), ((x1, y1), (x0, y1)), ((x0, y1), (x0, y0))]
    for i in rng.choice(4, size=int(rng.integers(2, 4)), replace=False):
        cv2.line(canvas, sides[i][0], sides[i][1], 255, thick, cv2.LINE_AA)


def _segment(canvas: np.ndarray, rng: np.random.Generator, thick: int) -> None:
    """One straight line segment, at most 45 degrees off level (a 1 leans less than that)."""
    angle = rng.uniform(-np.pi / 4, np.pi / 4)
    length = rng.uniform(30, 44)
    dx, dy = length * np.cos(angle), length * np.sin(angle)
    cv2.line(canvas, (int(48 - dx), int(48 - dy)), (int(48 + dx), int(48 + dy)), 255, thick, cv2.LINE_AA)


def _corner(canvas: np.ndarray, rng: np.random.Generator, thick: int) -> None:
    """Two strokes meeting at about a right angle (an L), or an arc of a circle (a piece of a shape)."""
    if rng.random() < 0.5:
        x, y = (int(v) for v in rng.integers(16, 32, 2))
        a, b = (int(v) for v in rng.integers(40, 70, 2))
        cv2.polylines(canvas, [np.array([[x + a, y], [x, y], [x, y + b]], np.int32)], False, 255, thick, cv2.LINE_AA)
    else:
        start = int(rng.integers(0, 360))
        cv2.ellipse(canvas, (48, 48), (int(rng.integers(20, 40)),) * 2, 0.0, start, start + int(rng.integers(60, 150)),
                    255, thick, cv2.LINE_AA)


_DRAW = {"scribble": _scribble, "ellipse": _ellipse, "polygon": _polygon, "cross": _cross, "grid": _grid,
         "rectangle": _rectangle, "frame": _frame, "segment": _segment, "corner": _corner}
CLUTTER_KINDS = ("rectangle", "frame", "segment", "corner")


def non_digits(n: int, seed: int, kinds_drawn: tuple[str, ...] = KINDS) -> tuple[np.ndarray, list[str]]:
    """n MNIST-style float32 images (n, 28, 28) in [0, 1] of synthetic non-digits, and the kind of each."""
    rng = np.random.default_rng(seed)
    images: list[np.ndarray] = []
    kinds: list[str] = []
    while len(images) < n:
        kind = kinds_drawn[int(rng.integers(len(kinds_drawn)))]
        canvas = np.zeros((CANVAS, CANVAS), np.uint8)
        _DRAW[kind](canvas, rng, int(rng.integers(2, 8)))
        try:
            images.append(preprocess(canvas))
        except ValueError:  # nothing left after thresholding
            continue
        kinds.append(kind)
    return np.stack(images).astype(np.float32), kinds


def clutter_shapes(n: int, seed: int) -> tuple[np.ndarray, list[str]]:
    """``non_digits`` of the kinds a camera's page holds besides digits (``CLUTTER_KINDS``)."""
    return non_digits(n, seed, CLUTTER_KINDS)
