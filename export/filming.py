"""Film digits on paper: synthetic camera frames with known item positions.

Used by the camera calibration (export/camera.py), the webcam tests and ``benchmarks/webcam_fps.py``.
A *scene* is a sheet of paper holding 2 to 4 items at known places, filmed for a few frames by a
slightly shaky camera. What the camera sees:

- paper: light grey with a fixed fibre texture, under uneven light (a gradient and a vignette),
  the whole sheet a little rotated, moved by a few pixels each frame, blurred, with sensor noise;
- items, dark on light, 60 to 90 px tall, each rotated by up to 8 degrees:
  - ``digit``: a 28x28 digit from the digit source (inverted and scaled up), whose true label is known;
    the source is a parameter (images and labels), by default the MNIST test set;
  - ``adversarial``: two digits of different classes superimposed, the second shifted
    sideways by 4 of 28 pixels (pixelwise maximum; e.g. a "7" over a "3"): the strokes of a digit with
    no single right answer. It stands in for an adversarial digit because a pixel-level attack does not
    survive filming: tried on the shipped bundle through ``train.attacks`` (FGSM, PGD), a perturbation
    large enough to matter (eps 0.3) is a grey haze that ``preprocess`` thresholds away, so the digit is
    read correctly again and passes as clean, and a smaller one would be a faint grey patch on paper.
    Without the shift a pair is often simply another digit (a 7 over an 8 is an 8). Even with it, many
    pairs look digit-like enough once re-normalised that the screen passes some of them (rates in
    docs/webcam.md);
  - ``nondigit``: a filled star, a hash sign or an upright Fashion-MNIST item (when that data set is
    installed): ink that is no digit at all.

``Item.box`` is the item's ink bounding box (x, y, w, h) in the frame, the ground truth that found
boxes are matched to by IoU (``match_boxes``). Frames are BGR uint8 (480 x 640 by default).
Each function draws from the ``np.random.Generator`` (or seed) it is given, so a seed gives the same
frames every time.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from edgeguard.webcam import iou

Digits = tuple[np.ndarray, np.ndarray]  # a digit source: (N, 28, 28) uint8 images, white on black, and N labels

SIZE = (640, 480)  # width, height
# Fashion-MNIST classes about as tall as wide or taller: tops, trousers, dresses, coats, shirts, bags.
# Sandals, sneakers and boots are far wider than any digit: the webcam's aspect filter drops them unseen.
UPRIGHT_FASHION = (0, 1, 2, 3, 4, 6, 8)
FOURCC = {".avi": "MJPG", ".mp4": "mp4v", ".mov": "mp4v", ".mkv": "mp4v"}


@dataclass(frozen=True)
class Item:
    kind: str  # "digit", "adversarial" or "nondigit"
    label: int | None  # the true label of a "digit", else None
    box: tuple[int, int, int, int]  # ink bounding box in the frame: x, y, w, h
    name: str  # where it came from, e.g. "mnist#12", "7 over 3 (mnist#0, #18)", "star"


@dataclass
class Video:
    frames: list[np.ndarray]
    items: list[list[Item]]  # per frame
    fps: float = 30.0
    scenes: list[list[Item]] = field(default_factory=list)  # the items of each scene (first frame)

    def add_scene(self, frames: list[np.ndarray], items: list[list[Item]]) -> None:
        """Append one scene's frames and their items (as ``render_scene`` returns them)."""
        self.frames += frames
        self.items += items
        self.scenes.append(items[0])


# --------------------------------------------------------------------------- sources


@functools.lru_cache(maxsize=1)
def mnist_test() -> Digits:
    """The MNIST test set: the default digit source."""
    from train.data import load_mnist

    data = load_mnist()
    return data.test_x, data.test_y


@functools.lru_cache(maxsize=1)
def fashion_test() -> tuple[np.ndarray, np.ndarray] | None:
    from train.data import load_fashion_mnist

    try:
        return load_fashion_mnist("test")
    except (FileNotFoundError, ValueError, OSError):
        return None


def star_glyph(size: int = 64, points: int = 5) -> np.ndarray:
    """A filled star, white on black, size x size uint8."""
    image = np.zeros((size, size), np.uint8)
    centre, outer, inner = size / 2, size * 0.48, size * 0.2
    angles = np.arange(2 * points) * math.pi / points - math.pi / 2
    radii = np.where(np.arange(2 * points) % 2 == 0, outer, inner)
    polygon = np.stack([centre + radii * np.cos(angles), centre + radii * np.sin(angles)], axis=1)
    cv2.fillPoly(image, [np.round(polygon * 16).astype(np.int32)], 255, cv2.LINE_AA, shift=4)
    return image


def hash_glyph(size: int = 64) -> np.ndarray:
    """A hash sign "#" with thick strokes, white on black."""
    image = np.zeros((size, size), np.uint8)
    t = max(2, size // 9)
    for a in (0.3, 0.7):
        p = round(a * size)
        cv2.line(image, (p + size // 12, 2), (p - size // 12, size - 3), 255, t, cv2.LINE_AA)
        cv2.line(image, (2, p), (size - 3, p), 255, t, cv2.LINE_AA)
    return image


def superimposed(rng: np.random.Generator, offset: int = 4, digits: Digits | None = None) -> tuple[np.ndarray, str]:
    """Two digits of different classes from ``digits`` (default: the MNIST test set), the second shifted
    sideways by ``offset`` of the 28 pixels (left or right at random), pixelwise maximum."""
    x, y = mnist_test() if digits is None else digits
    first = int(rng.integers(len(x)))
    second = int(rng.integers(len(x)))
    while y[second] == y[first]:
        second = int(rng.integers(len(x)))
    shift = np.float32([[1, 0, offset * rng.choice((-1, 1))], [0, 1, 0]])
    moved = cv2.warpAffine(x[second], shift, (28, 28))
    return np.maximum(x[first], moved), f"{y[second]} over {y[first]} (mnist#{first}, #{second})"


def nondigit(rng: np.random.Generator, index: int) -> tuple[np.ndarray, str]:
    fashion = fashion_test()
    choice = index % (3 if fashion is not None else 2)
    if choice == 0:
        return star_glyph(points=int(rng.integers(5, 8))), "star"
    if choice == 1:
        return hash_glyph(), "hash"
    images, labels = fashion
    n = int(rng.choice(np.flatnonzero(np.isin(labels, UPRIGHT_FASHION))))
    return images[n], f"fashion#{n}"


# --------------------------------------------------------------------------- drawing


def _ink_crop(glyph: np.ndarray) -> np.ndarray:
    """The glyph (white on black) cropped to its ink, as float alpha in [0, 1]."""
    alpha = glyph.astype(np.float32) / 255.0
    rows, cols = np.nonzero(alpha > 0.1)
    return alpha[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]


def _glyph_alpha(glyph: np.ndarray, height: int, angle: float) -> np.ndarray:
    """Scaled to ``height`` px of ink (width at most 1.1 x height), rotated by ``angle`` degrees."""
    return scale_and_rotate(_ink_crop(glyph), height, angle)


def scale_and_rotate(alpha: np.ndarray, height: int, angle: float, border: int = 0) -> np.ndarray:
    """Ink alpha cropped to its ink (plus ``border`` px each side, not counted as ink) scaled to ``height`` px of
    ink (width at most 1.1 x height), given room around it and rotated by ``angle`` degrees; values in [0, 1]."""
    scale = min(height / (alpha.shape[0] - 2 * border), 1.1 * height / (alpha.shape[1] - 2 * border))
    size = (max(2, round(alpha.shape[1] * scale)), max(2, round(alpha.shape[0] * scale)))
    alpha = cv2.resize(alpha, size, interpolation=cv2.INTER_CUBIC)
    pad = round(0.25 * max(size))
    alpha = cv2.copyMakeBorder(alpha, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
    h, w = alpha.shape
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    alpha = cv2.warpAffine(alpha, matrix, (w, h), flags=cv2.INTER_LINEAR, borderValue=0)
    return np.clip(alpha, 0, 1)


def _paper(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    h, w = shape
    low = cv2.resize(rng.normal(0, 1, (h // 32 + 2, w // 32 + 2)).astype(np.float32), (w, h),
                     interpolation=cv2.INTER_CUBIC)
    fibre = cv2.GaussianBlur(rng.normal(0, 1, shape).astype(np.float32), (0, 0), 0.8)
    return 212 + 6 * low + 5 * fibre


def _lighting(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = rng.uniform(0, 2 * math.pi)
    ramp = ((xx - w / 2) * math.cos(angle) + (yy - h / 2) * math.sin(angle)) / (0.5 * math.hypot(w, h))
    r2 = ((xx - w / 2) / (w / 2)) ** 2 + ((yy - h / 2) / (h / 2)) ** 2
    return (0.86 + 0.14 * ramp - 0.12 * r2).astype(np.float32)


def _slots(rng: np.random.Generator, count: int, size: tuple[int, int]) -> list[tuple[float, float]]:
    """Centres of ``count`` cells of a 4 x 2 grid, jittered."""
    w, h = size
    cells = rng.choice(8, size=count, replace=False)
    return [((c % 4 + 0.5) * w / 4 + rng.uniform(-15, 15), (c // 4 + 0.5) * h / 2 + rng.uniform(-20, 20))
            for c in sorted(cells)]


def _transform_box(box: tuple[float, float, float, float], matrix: np.ndarray,
                   size: tuple[int, int]) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = box
    corners = np.array([[x0, y0, 1], [x1, y0, 1], [x0, y1, 1], [x1, y1, 1]], np.float64) @ matrix.T
    left, top = np.floor(corners.min(axis=0)).astype(int)
    right, bottom = np.ceil(corners.max(axis=0)).astype(int)
    left, top = max(0, left), max(0, top)
    right, bottom = min(size[0], right), min(size[1], bottom)
    return int(left), int(top), int(right - left), int(bottom - top)


def render_scene(glyphs: list[tuple[str, int | None, np.ndarray, str]], rng: np.random.Generator,
                 frames: int, size: tuple[int, int] = SIZE) -> tuple[list[np.ndarray], list[list[Item]]]:
    """Film a sheet holding ``glyphs`` (kind, label, white-on-black uint8 glyph, name) for ``frames`` frames."""
    w, h = size
    sheet = _paper(rng, (h, w))
    placed = []  # (kind, label, name, ink box in sheet coordinates x0, y0, x1, y1)
    for (kind, label, glyph, name), (cx, cy) in zip(glyphs, _slots(rng, len(glyphs), size)):
        alpha = _glyph_alpha(glyph, int(rng.integers(60, 91)), rng.uniform(-8, 8))
        gh, gw = alpha.shape
        x = min(max(0, int(round(cx - gw / 2))), w - gw)
        y = min(max(0, int(round(cy - gh / 2))), h - gh)
        ink = rng.uniform(25, 60)
        opacity = rng.uniform(0.85, 1.0)
        region = sheet[y : y + gh, x : x + gw]
        a = alpha * opacity
        region[...] = region * (1 - a) + ink * a
        rows, cols = np.nonzero(alpha > 0.3)
        placed.append((kind, label, name, (x + cols.min(), y + rows.min(), x + cols.max() + 1, y + rows.max() + 1)))
    light = _lighting(rng, (h, w))
    tint = np.array([rng.uniform(0.9, 1.0), rng.uniform(0.95, 1.0), 1.0], np.float32)
    base_angle = rng.uniform(-3, 3)
    out_frames, out_items = [], []
    for _ in range(frames):
        angle = base_angle + rng.uniform(-0.5, 0.5)
        matrix = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
        matrix[:, 2] += rng.uniform(-4, 4, 2)
        view = cv2.warpAffine(sheet, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        view = cv2.GaussianBlur(view * light, (0, 0), rng.uniform(0.8, 1.4))
        colour = view[:, :, None] * tint + rng.normal(0, 4, (h, w, 3)).astype(np.float32)
        out_frames.append(np.clip(colour, 0, 255).astype(np.uint8))
        out_items.append([Item(kind, label, _transform_box(box, matrix, size), name)
                          for kind, label, name, box in placed])
    return out_frames, out_items


def make_video(n_scenes: int = 12, frames_per_scene: int = 5, *, seed: int = 0, digit_pool=None,
               adversarial_every: int = 3, nondigit_every: int = 3, size: tuple[int, int] = SIZE,
               digits: Digits | None = None) -> Video:
    """Scenes of 2 to 4 items; scene i holds an adversarial item when i % adversarial_every == 1 and a
    non-digit when i % nondigit_every == 2 (both modulo the period: with 1, every scene; with 0, none),
    clean digits (drawn with replacement from ``digit_pool``, indices into ``digits``; default all of
    them) otherwise. ``digits``: the digit source of clean digits and pairs (default: the MNIST test set)."""
    rng = np.random.default_rng(seed)
    digits = mnist_test() if digits is None else digits
    x, y = digits
    pool = np.arange(len(x)) if digit_pool is None else np.asarray(digit_pool)
    video = Video([], [])
    for scene in range(n_scenes):
        count = int(rng.integers(2, 5))
        glyphs = []
        if adversarial_every and scene % adversarial_every == 1 % adversarial_every:
            image, name = superimposed(rng, digits=digits)
            glyphs.append(("adversarial", None, image, name))
        if nondigit_every and scene % nondigit_every == 2 % nondigit_every:
            image, name = nondigit(rng, scene // nondigit_every)
            glyphs.append(("nondigit", None, image, name))
        while len(glyphs) < count:
            n = int(pool[rng.integers(len(pool))])
            glyphs.append(("digit", int(y[n]), x[n], f"mnist#{n}"))
        order = rng.permutation(len(glyphs))
        video.add_scene(*render_scene([glyphs[i] for i in order], rng, frames_per_scene, size))
    return video


def digit_scenes(digits: Digits, *, seed: int, frames_per_scene: int = 1, name: str = "mnist",
                 size: tuple[int, int] = SIZE) -> Iterator[tuple[list[np.ndarray], list[list[Item]]]]:
    """Every digit of ``digits`` filmed exactly once, in a shuffled order, 2 to 4 to a clean digit-only
    scene (the last may hold one): yields each scene's (frames, items) as ``render_scene`` returns them,
    one scene at a time (thousands of 640x480 frames would not fit in memory at once). Items are named
    ``f"{name}#{index}"``."""
    images, labels = digits
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(images))
    start = 0
    while start < len(order):
        count = int(rng.integers(2, 5))
        glyphs = [("digit", int(labels[n]), images[n], f"{name}#{n}") for n in order[start : start + count]]
        start += count
        yield render_scene(glyphs, rng, frames_per_scene, size)


def match_boxes(items: Sequence[Item], boxes: Sequence[tuple[int, int, int, int]],
                min_iou: float = 0.5) -> list[int | None]:
    """For each item, the index of the found box that overlaps it most when their IoU is at least
    ``min_iou``, else None."""
    matched = []
    for item in items:
        overlap, best = max(((iou(item.box, box), i) for i, box in enumerate(boxes)), default=(0.0, None))
        matched.append(best if overlap >= min_iou else None)
    return matched


def write_video(path: str | Path, frames: list[np.ndarray], fps: float = 30.0) -> Path:
    """Write BGR frames; the codec follows the suffix (.avi: MJPG, .mp4/.mov/.mkv: mp4v)."""
    path = Path(path)
    fourcc = FOURCC.get(path.suffix.lower())
    if fourcc is None:
        raise ValueError(f"unsupported video suffix {path.suffix!r}; use one of {', '.join(FOURCC)}")
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
    if not writer.isOpened():
        raise OSError(f"cannot write {path} with fourcc {fourcc}")
    try:
        for frame in frames:
            writer.write(frame)
    finally:
        writer.release()
    return path


# --------------------------------------------------------------------------- hostile frames


def noise_frame(seed: int = 0, size: tuple[int, int] = SIZE) -> np.ndarray:
    """Uniform random colour noise."""
    return np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)


def speckled_frame(n: int = 500, seed: int = 0, size: tuple[int, int] = SIZE) -> np.ndarray:
    """Light paper with ``n`` tiny dark marks (dots, rings and dashes): hundreds of contours."""
    rng = np.random.default_rng(seed)
    frame = np.full((size[1], size[0], 3), 210, np.uint8)
    for i in range(n):
        x, y = int(rng.integers(5, size[0] - 5)), int(rng.integers(5, size[1] - 5))
        r = int(rng.integers(1, 5))
        if i % 3 == 0:
            cv2.circle(frame, (x, y), r, (40, 40, 40), -1)
        elif i % 3 == 1:
            cv2.circle(frame, (x, y), r + 2, (40, 40, 40), 1)
        else:
            cv2.line(frame, (x, y), (x + int(rng.integers(-8, 9)), y + int(rng.integers(-8, 9))), (40, 40, 40), 1)
    return frame


