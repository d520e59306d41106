"""Film a page of handwritten digits among the clutter a real camera sees, with ground truth for every frame.

A *desk scene* is a sheet of paper holding 8 to 12 digits (by default MNIST test digits: many writers) lying on
a desk, filmed for a few frames by a hand-held camera. Around and on the page is what real footage holds:

- the desk and the page's edge (the sheet is a little rotated and does not fill the view);
- one or two lines of printed text at the top, ruled lines on half the pages, a box drawn around some of the
  answers, a straight pen stroke (a crossing-out or a margin line) where there is room;
- uneven light, a soft shadow across part of the page on half the scenes, camera shake, focus blur, now and
  then motion blur, sensor noise;
- case ``"hand"``: a hand-like blob (a palm and four fingers, skin-toned) moving in from one side;
- case ``"screen"``: the whole view shown inside an application window (a border and a title bar) on a dark
  desktop, beside a terminal full of text (the page seen through a screen share or a demo app).

Each frame comes with its items: ``Item("digit", label, box, name)`` for every digit,
``Item("covered", label, box, name)`` for a digit the hand lies over (neither a digit to find nor clutter) and
``Item("clutter", None, box, name)`` for every piece of clutter, ``name`` one of ``CLUTTER``; boxes are the
ink's bounding box in frame pixels (x, y, w, h), clipped to the frame. ``visible(item)`` says whether an item
lies wholly inside the frame. A seed gives the same frames every time.

The pieces come from ``export/filming.py`` (paper texture, lighting, glyph drawing), so a digit here is drawn
as the camera calibration and the other test videos draw it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import replace

import cv2
import numpy as np

from export.filming import (
    SIZE,
    Digits,
    Item,
    Video,
    _glyph_alpha,
    _lighting,
    _paper,
    _transform_box,
    mnist_test,
    render_scene,
)

__all__ = ["CASES", "CLUTTER", "desk_scene", "desk_video", "each_digit_once", "visible"]

CASES = ("page", "hand", "screen")
CLUTTER = ("text", "ruled", "box", "stroke", "hand", "window", "terminal")
WORDS = ("name", "date", "class", "exercise", "answers", "sheet", "total", "score", "page", "check", "write",
         "the", "digits", "below", "each", "box", "question", "marks", "form", "id")
SKIN_BGR = (120, 150, 195)


def visible(item: Item, size: tuple[int, int] = SIZE, margin: int = 2) -> bool:
    """Whether the item's box lies wholly inside the frame (not cut by its edge)."""
    x, y, w, h = item.box
    return w > 0 and h > 0 and x >= margin and y >= margin and x + w <= size[0] - margin and y + h <= size[1] - margin


# --------------------------------------------------------------------------- the sheet


def _draw(sheet: np.ndarray, alpha: np.ndarray, x: int, y: int, ink: float) -> None:
    """Ink ``alpha`` (values in [0, 1]) onto the sheet at (x, y), clipped to the sheet."""
    h, w = sheet.shape
    ah, aw = alpha.shape
    x0, y0, x1, y1 = max(0, x), max(0, y), min(w, x + aw), min(h, y + ah)
    if x1 <= x0 or y1 <= y0:
        return
    a = alpha[y0 - y : y1 - y, x0 - x : x1 - x]
    region = sheet[y0:y1, x0:x1]
    region[...] = region * (1 - a) + ink * a


def _stroke_mask(shape: tuple[int, int], draw) -> np.ndarray:
    """What ``draw`` paints (in 255) on a blank uint8 image, as alpha in [0, 1]."""
    mask = np.zeros(shape, np.uint8)
    draw(mask)
    return mask.astype(np.float32) / 255.0


def _text_lines(sheet: np.ndarray, rng: np.random.Generator, ink: float) -> tuple[list[tuple], int]:
    """One or two lines of printed words along the top; -> (placed items, the y below them)."""
    placed, top = [], 12
    for _ in range(int(rng.integers(1, 3))):
        text = " ".join(rng.choice(WORDS, size=int(rng.integers(3, 7))))
        scale = float(rng.uniform(0.4, 0.55))
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        x, y = int(rng.integers(16, 60)), top + th
        mask = _stroke_mask(sheet.shape, lambda m, t=text, p=(x, y), s=scale: cv2.putText(
            m, t, p, cv2.FONT_HERSHEY_SIMPLEX, s, 255, 1, cv2.LINE_AA))
        sheet[...] = sheet * (1 - mask) + ink * mask
        placed.append(("clutter", None, "text", (x, y - th, x + tw, y + base)))
        top = y + base + 6
    return placed, top


def _ruled(sheet: np.ndarray, rng: np.random.Generator, top: int) -> list[tuple]:
    """Thin ruled lines across the sheet from ``top`` down, 34 to 46 px apart."""
    h, w = sheet.shape
    spacing, depth = rng.uniform(34, 46), rng.uniform(35, 60)
    placed, y = [], top + rng.uniform(8, spacing)
    while y < h - 8:
        row = int(round(y))
        sheet[row, 8 : w - 8] -= depth
        placed.append(("clutter", None, "ruled", (8, row, w - 8, row + 1)))
        y += spacing
    return placed


def _digits(sheet: np.ndarray, rng: np.random.Generator, digits: Digits, pool: np.ndarray, top: int,
            heights: tuple[int, int], ink: float, chosen: Sequence[int] | None, name: str) -> list[tuple]:
    """8 to 12 digits (drawn from ``pool``, or the ``chosen`` ones) in the cells of a 4 x 3 grid below ``top``,
    each at a random height and slant."""
    h, w = sheet.shape
    x, y = digits
    count = int(rng.integers(8, 13)) if chosen is None else len(chosen)
    cells = sorted(rng.choice(12, size=count, replace=False))
    cell_w, cell_h = (w - 40) / 4, (h - top - 16) / 3
    placed = []
    for i, cell in enumerate(cells):
        n = int(pool[rng.integers(len(pool))]) if chosen is None else int(chosen[i])
        alpha = _glyph_alpha(x[n], int(rng.integers(*heights)), rng.uniform(-8, 8))
        gh, gw = alpha.shape
        cx = 20 + (cell % 4 + 0.5) * cell_w + rng.uniform(-0.12, 0.12) * cell_w
        cy = top + (cell // 4 + 0.5) * cell_h + rng.uniform(-0.08, 0.08) * cell_h
        px, py = int(round(cx - gw / 2)), int(round(cy - gh / 2))
        _draw(sheet, alpha * rng.uniform(0.85, 1.0), px, py, ink)
        rows, cols = np.nonzero(alpha > 0.3)
        placed.append(("digit", int(y[n]), f"{name}#{n}",
                       (px + cols.min(), py + rows.min(), px + cols.max() + 1, py + rows.max() + 1)))
    return placed


def _boxes_around(sheet: np.ndarray, rng: np.random.Generator, digits: list[tuple], ink: float) -> list[tuple]:
    """A pen box drawn around 0 to 3 of the digits (an answer boxed in)."""
    placed = []
    for i in rng.choice(len(digits), size=min(len(digits), int(rng.integers(0, 4))), replace=False):
        x0, y0, x1, y1 = digits[i][3]
        m = int(rng.integers(6, 15))
        corners = (int(x0 - m), int(y0 - m)), (int(x1 + m), int(y1 + m))
        mask = _stroke_mask(sheet.shape, lambda a, c=corners: cv2.rectangle(a, c[0], c[1], 255, 2, cv2.LINE_AA))
        sheet[...] = sheet * (1 - mask) + ink * mask
        placed.append(("clutter", None, "box", (x0 - m - 1, y0 - m - 1, x1 + m + 2, y1 + m + 2)))
    return placed


def _stroke(sheet: np.ndarray, rng: np.random.Generator, taken: list[tuple], ink: float) -> list[tuple]:
    """A straight pen stroke, 100 to 220 px long, where it crosses nothing else (up to 30 tries)."""
    h, w = sheet.shape
    for _ in range(30):
        length, angle = rng.uniform(100, 220), rng.uniform(0, math.pi)
        x0, y0 = rng.uniform(20, w - 20), rng.uniform(20, h - 20)
        x1, y1 = x0 + length * math.cos(angle), y0 + length * math.sin(angle)
        box = (min(x0, x1) - 2, min(y0, y1) - 2, max(x0, x1) + 2, max(y0, y1) + 2)
        if box[2] > w - 10 or box[3] > h - 10 or any(
                box[0] < b[2] + 10 and b[0] - 10 < box[2] and box[1] < b[3] + 10 and b[1] - 10 < box[3]
                for *_, b in taken):
            continue
        ends = (int(x0), int(y0)), (int(x1), int(y1))
        thick = int(rng.integers(2, 4))
        mask = _stroke_mask(sheet.shape, lambda a, e=ends, t=thick: cv2.line(a, e[0], e[1], 255, t, cv2.LINE_AA))
        sheet[...] = sheet * (1 - mask) + ink * mask
        return [("clutter", None, "stroke", tuple(int(round(v)) for v in box))]
    return []


def _sheet(rng: np.random.Generator, digits: Digits, pool: np.ndarray, size: tuple[int, int],
           heights: tuple[int, int], chosen: Sequence[int] | None, name: str) -> tuple[np.ndarray, list[tuple]]:
    w, h = size
    sheet = _paper(rng, (h, w))
    ink = rng.uniform(25, 60)
    placed, top = _text_lines(sheet, rng, ink)
    if rng.random() < 0.5:
        placed += _ruled(sheet, rng, top)
    written = _digits(sheet, rng, digits, pool, top, heights, ink, chosen, name)
    placed += written + _boxes_around(sheet, rng, written, ink)
    if rng.random() < 0.7:
        placed += _stroke(sheet, rng, placed, ink)
    return sheet, placed


# --------------------------------------------------------------------------- the view


def _desk(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """A darker, grainy desk top (gray)."""
    h, w = shape
    grain = cv2.resize(rng.normal(0, 1, (h // 4, 3)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    return rng.uniform(80, 140) + 12 * grain + 3 * rng.normal(0, 1, shape).astype(np.float32)


def _shadow(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """A soft-edged shadow over one side of a random line (a multiplicative light map)."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = rng.uniform(0, 2 * math.pi)
    offset = rng.uniform(0.2, 0.45) * math.hypot(w, h)
    side = (xx - w / 2) * math.cos(angle) + (yy - h / 2) * math.sin(angle) - offset + 0.5 * math.hypot(w, h) * 0.5
    soft = 1.0 / (1.0 + np.exp(-side / rng.uniform(10, 30)))
    return (1.0 - rng.uniform(0.2, 0.35) * soft).astype(np.float32)


def _hand(rng: np.random.Generator, shape: tuple[int, int], frames: int) -> list[tuple[np.ndarray, tuple]]:
    """A palm with four fingers moving in from one side: per frame (mask in [0, 1], box x0, y0, x1, y1)."""
    h, w = shape
    side = int(rng.integers(3))  # 0: from the left, 1: from the right, 2: from the bottom
    palm = (rng.uniform(55, 75), rng.uniform(75, 95))
    finger_len, finger_w = rng.uniform(55, 80), int(rng.integers(16, 22))
    start, step = rng.uniform(-40, 10), rng.uniform(8, 18)
    along = rng.uniform(0.3, 0.7)
    out = []
    for f in range(frames):
        depth = start + f * step  # how far the palm's centre is inside the frame
        if side == 0:
            centre, inward = (depth, along * h), (1.0, 0.0)
        elif side == 1:
            centre, inward = (w - depth, along * h), (-1.0, 0.0)
        else:
            centre, inward = (along * w, h - depth), (0.0, -1.0)
        mask = np.zeros(shape, np.float32)
        axes = (palm[0], palm[1]) if side < 2 else (palm[1], palm[0])
        cv2.ellipse(mask, (int(centre[0]), int(centre[1])), (int(axes[0]), int(axes[1])), 0, 0, 360, 1.0, -1)
        normal = (-inward[1], inward[0])
        for k in range(4):
            off = (k - 1.5) * (finger_w + 4)
            base = (centre[0] + inward[0] * axes[0] * 0.8 + normal[0] * off,
                    centre[1] + inward[1] * axes[1] * 0.8 + normal[1] * off)
            length = finger_len * (0.8 if k in (0, 3) else 1.0)
            tip = (base[0] + inward[0] * length, base[1] + inward[1] * length)
            cv2.line(mask, (int(base[0]), int(base[1])), (int(tip[0]), int(tip[1])), 1.0, finger_w, cv2.LINE_AA)
        mask = cv2.GaussianBlur(mask, (0, 0), 1.0)
        ys, xs = np.nonzero(mask > 0.3)
        box = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) if xs.size else None
        out.append((mask, box))
    return out


def _window(rng: np.random.Generator, frame: np.ndarray, scale: float, origin: tuple[int, int]) -> np.ndarray:
    """``frame`` shrunk by ``scale`` inside a window (border and title bar) at ``origin``, on a dark desktop with
    a terminal of light text beside it."""
    h, w = frame.shape[:2]
    desktop = np.full_like(frame, int(rng.integers(30, 55)))
    inner = cv2.resize(frame, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    ih, iw = inner.shape[:2]
    x, y = origin
    title = 18
    cv2.rectangle(desktop, (x - 3, y - title - 3), (x + iw + 2, y + ih + 2), (175, 175, 175), -1)
    cv2.rectangle(desktop, (x - 3, y - title - 3), (x + iw + 2, y), (215, 215, 215), -1)
    cv2.putText(desktop, "digit demo", (x + 6, y - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (40, 40, 40), 1, cv2.LINE_AA)
    desktop[y : y + ih, x : x + iw] = inner
    term_x = x + iw + 12 if x < w - (x + iw) else 6
    term_w = (x - 18) if term_x == 6 else w - term_x - 6
    if term_w > 40:
        terminal = np.full((h - 12, term_w, 3), 20, np.uint8)
        for row in range(14, h - 16, 14):
            text = "".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz0123456789 ./:=-_[]"), size=60))
            cv2.putText(terminal, text, (4, row), cv2.FONT_HERSHEY_PLAIN, 0.8, (200, 200, 200), 1, cv2.LINE_AA)
        desktop[6 : h - 6, term_x : term_x + term_w] = terminal
    return desktop


def desk_scene(rng: np.random.Generator, frames: int, *, case: str = "page", digits: Digits | None = None,
               pool: Sequence[int] | None = None, chosen: Sequence[int] | None = None, name: str = "mnist",
               size: tuple[int, int] = SIZE) -> tuple[list[np.ndarray], list[list[Item]]]:
    """Film one desk scene (see the module's docstring) for ``frames`` frames: (BGR frames, items per frame).
    ``digits``: the digit source (default MNIST test); ``pool``: the indices to draw from (default all), or
    ``chosen``: the 1 to 12 digits to write; digit items are named ``f"{name}#{index}"``."""
    if case not in CASES:
        raise ValueError(f"case must be one of {', '.join(CASES)}, got {case!r}")
    if chosen is not None and not 1 <= len(chosen) <= 12:
        raise ValueError(f"a page holds 1 to 12 chosen digits, got {len(chosen)}")
    digits = mnist_test() if digits is None else digits
    pool_ = np.arange(len(digits[0])) if pool is None else np.asarray(pool)
    w, h = size
    heights = (52, 73) if case == "screen" else (44, 69)
    sheet, placed = _sheet(rng, digits, pool_, size, heights, chosen, name)
    scale = rng.uniform(0.8, 0.9) if case == "screen" else rng.uniform(0.74, 0.9)
    slack_x, slack_y = (1 - scale) / 2 * w, (1 - scale) / 2 * h
    page = cv2.getRotationMatrix2D((w / 2, h / 2), rng.uniform(-4, 4), scale)
    page[:, 2] += (rng.uniform(-1.1, 1.1) * slack_x, rng.uniform(-1.1, 1.1) * slack_y)
    on_page = cv2.warpAffine(np.ones((h, w), np.float32), page, (w, h), flags=cv2.INTER_LINEAR)
    world = _desk(rng, (h, w)) * (1 - on_page) + cv2.warpAffine(sheet, page, (w, h), flags=cv2.INTER_LINEAR)
    light = _lighting(rng, (h, w)) * (_shadow(rng, (h, w)) if rng.random() < 0.5 else 1.0)
    hands = _hand(rng, (h, w), frames) if case == "hand" else None
    tint = np.array([rng.uniform(0.85, 1.0), rng.uniform(0.92, 1.0), 1.0], np.float32)
    window = None
    if case == "screen":
        shrink = rng.uniform(0.75, 0.85)
        iw, ih = round(w * shrink), round(h * shrink)
        window = (shrink, (int(rng.integers(6, w - iw - 6)), int(rng.integers(24, h - ih - 6))))
    base_angle = rng.uniform(-1.5, 1.5)
    out_frames, out_items = [], []
    for f in range(frames):
        shake = cv2.getRotationMatrix2D((w / 2, h / 2), base_angle + rng.uniform(-0.6, 0.6), 1.0)
        shake[:, 2] += rng.uniform(-4, 4, 2)
        view = cv2.warpAffine(world, shake, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        colour = np.repeat((view * light)[:, :, None], 3, axis=2) * tint
        items = [(kind, label, name, box, shake @ np.vstack([page, [0, 0, 1]]))
                 for kind, label, name, box in placed]
        if hands is not None:
            mask, box = hands[f]
            colour = colour * (1 - mask[:, :, None]) + np.float32(SKIN_BGR) * light[:, :, None] * mask[:, :, None]
            if box is not None:
                items.append(("clutter", None, "hand", box, np.float64([[1, 0, 0], [0, 1, 0]])))
        colour = cv2.GaussianBlur(colour, (0, 0), rng.uniform(0.8, 1.5))
        if rng.random() < 0.2:
            colour = _motion_blur(colour, rng)
        colour += rng.normal(0, 4, colour.shape).astype(np.float32)
        frame = np.clip(colour, 0, 255).astype(np.uint8)
        if window is not None:
            shrink, (ox, oy) = window
            frame = _window(rng, frame, shrink, (ox, oy))
            to_window = np.float64([[shrink, 0, ox], [0, shrink, oy]])
            items = [(k, lab, n, b, to_window @ np.vstack([m, [0, 0, 1]])) for k, lab, n, b, m in items]
            iw, ih = round(w * shrink), round(h * shrink)
            items.append(("clutter", None, "window", (ox - 3, oy - 21, ox + iw + 3, oy + ih + 3),
                          np.float64([[1, 0, 0], [0, 1, 0]])))
            terminal = (ox + iw + 12, 6, w - 6, h - 6) if ox < w - (ox + iw) else (6, 6, ox - 12, h - 6)
            if terminal[2] - terminal[0] > 40:
                items.append(("clutter", None, "terminal", terminal, np.float64([[1, 0, 0], [0, 1, 0]])))
        found = [Item(kind, label, _transform_box(box, matrix, size), name) for kind, label, name, box, matrix in items]
        if hands is not None:  # a digit the hand lies over is neither a visible digit nor clutter
            found = [replace(item, kind="covered") if item.kind == "digit" and _covered(hands[f][0], item.box)
                     else item for item in found]
        out_frames.append(frame)
        out_items.append(found)
    return out_frames, out_items


def _covered(mask: np.ndarray, box: tuple[int, int, int, int]) -> bool:
    x, y, w, h = box
    part = mask[max(0, y) : max(0, y + h), max(0, x) : max(0, x + w)]
    return bool(part.size) and float(part.max()) > 0.3


def _motion_blur(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    length = int(rng.integers(5, 10))
    kernel = np.zeros((length, length), np.float32)
    kernel[length // 2, :] = 1.0 / length
    rotation = cv2.getRotationMatrix2D(((length - 1) / 2, (length - 1) / 2), rng.uniform(0, 180), 1.0)
    kernel = cv2.warpAffine(kernel, rotation, (length, length))
    return cv2.filter2D(image, -1, kernel / max(kernel.sum(), 1e-6))


def desk_video(n_scenes: int = 12, frames_per_scene: int = 6, *, seed: int = 0, digits: Digits | None = None,
               pool: Sequence[int] | None = None, cases: Sequence[str] = CASES, size: tuple[int, int] = SIZE) -> Video:
    """``n_scenes`` desk scenes, their cases taken in turn from ``cases``."""
    rng = np.random.default_rng(seed)
    video = Video([], [])
    for scene in range(n_scenes):
        video.add_scene(*desk_scene(rng, frames_per_scene, case=cases[scene % len(cases)], digits=digits,
                                    pool=pool, size=size))
    return video


def each_digit_once(digits: Digits, *, seed: int, name: str = "mnist",
                    size: tuple[int, int] = SIZE) -> Iterator[tuple[list[np.ndarray], list[list[Item]]]]:
    """Every digit of ``digits`` filmed exactly once, in a shuffled order, one frame per scene: scenes take turns
    between a clean sheet of 2 to 4 digits (``filming.render_scene``, as the other test videos film them) and a
    desk scene of 8 to 12 among clutter (its cases in turn); yields each scene's (frames, items) one at a time.
    A digit the hand lies over is an item of kind "covered"."""
    images, labels = digits
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(images))
    start = scene = 0
    while start < len(order):
        if scene % 2 == 0:
            chosen = order[start : start + int(rng.integers(2, 5))]
            glyphs = [("digit", int(labels[n]), images[n], f"{name}#{n}") for n in chosen]
            yield render_scene(glyphs, rng, 1, size)
        else:
            chosen = order[start : start + int(rng.integers(8, 13))]
            yield desk_scene(rng, 1, case=CASES[(scene // 2) % len(CASES)], digits=digits, chosen=chosen, name=name,
                             size=size)
        start += len(chosen)
        scene += 1
