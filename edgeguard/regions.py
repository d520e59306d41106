"""Where the digits are in an image: ink regions found, filtered, merged, put in reading order and cut out.

One region finder serves the webcam's frames (``edgeguard.webcam``) and whole images such as a photo of a
sheet of digits (``edgeguard detect``, ``Guard.screen_regions``); a ``Finder`` holds what differs between
them (the digit sizes looked for, a working resolution for large photos):

    image (BGR or gray) -> gray -> shrunk to the finder's working side (pages) -> blur -> adaptive threshold
      -> morphological close (joins broken strokes)
      -> connected components (their statistics filtered as arrays, so a frame of noise with thousands of
         blobs costs no Python loop)
      -> filter by size, aspect, fill (and contrast); cap the candidates; merge nearby pieces of one digit
      -> (pages) a second, coarse look for digits bigger than the threshold's neighbourhood
      -> the ``max_digits`` largest regions, in reading order (``edgeguard.reading``)
      -> ``crop_region``: each cut out, other blobs painted out, padded with paper
      -> ``cut_digits``: each through ``preprocess`` to MNIST format

Ink of a digit's height that is far wider than any digit (digits written touching each other) is kept
apart as ``Regions.joined``: it cannot be cut into digits, and an image holding it cannot be read whole.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from edgeguard.clutter import Box, Region, frames, hollow_frames, long_stroke, on_paper
from edgeguard.errors import InputError
from edgeguard.ink import THRESHOLD_C, components, contrast, frame_gray, ink_of
from edgeguard.normalize import preprocess
from edgeguard.reading import reading_order

__all__ = ["Box", "Region", "Finder", "Regions", "FRAME", "PAGE", "MAX_DIGITS", "find_digit_regions", "find_regions",
           "frame_gray", "digit_regions", "crop_region", "cut_digits", "reading_order", "ink_of", "inside",
           "THRESHOLD_C"]


MAX_DIGITS = 16  # regions kept per image by default: a page of answers (the webcam's desk scenes hold 8 to 12)
MAX_CANDIDATES = 48  # pieces kept (largest first) before merging: bounds the work on a frame of noise
MIN_HEIGHT = 0.05  # smallest digit, as a share of the frame height (24 px at 480)
MAX_HEIGHT = 0.8  # largest digit, same
MIN_ASPECT, MAX_ASPECT = 0.08, 1.8  # width / height of a digit ("1" is thin; a flat, tilted "0" is wide)
MAX_FILL = 0.95  # a region whose box is this full of ink is a solid block, not a digit
CROP_SIDE = 56  # larger regions are shrunk to this (px, larger side) before preprocessing: 2.8 x MNIST's 20
PAD = 0.15  # paper added around a crop, as a share of its larger side, before preprocessing
JOINED_MAX_ASPECT = 12.0  # ink wider than a digit but at most this many heights wide: digits written touching
JOINED_FILL = (0.1, 0.55)  # ... and as full of ink as pen strokes are (a thin line is emptier, a band fuller)


@dataclass(frozen=True)
class Finder:
    """What the region finder looks for. ``FRAME`` (the webcam's) and ``PAGE`` (whole photos) are the two in use."""

    min_height: float = MIN_HEIGHT  # smallest digit, as a share of the image height
    max_height: float = MAX_HEIGHT  # largest digit, same
    max_candidates: int = MAX_CANDIDATES  # pieces kept (largest first) before merging
    work_side: int = 0  # 0: search the image as it is; else shrink it first so its larger side is at most this
    close: float = 1 / 96  # the morphological close's size, as a share of the (working) image height
    min_contrast: float = 0.0  # a piece's mean darkness under its neighbourhood's mean (0..255); 0: not checked
    max_aspect: float = MAX_ASPECT  # widest digit, width / height
    #: Two pieces each at least half as tall as the taller one (two digits, or two big halves of one) merge only
    #: when together they are at most this wide per height; 0: no such limit.
    pair_aspect: float = 0.0
    block: float = 1 / 16  # the adaptive threshold's neighbourhood, as a share of the (working) image height
    #: A second look for big digits (``BIG``): a digit much larger than the neighbourhood has strokes wider than
    #: it, which the fine look sees as outlines and slivers; a big region found there replaces what the fine
    #: look found inside it, unless that was one region of about its size. None: no second look.
    coarse: Finder | None = None
    # Clutter (the webcam's: a real camera sees page edges, boxes drawn around answers, ruled lines, windows):
    #: the largest region, as a share of the image's area (0: no limit). Held in front of a webcam, a digit
    #: covers a few percent of the frame; a region covering more is a page, a window or a hand.
    max_area: float = 0.10
    #: Ink that holds a straight line at least this share of the image's width long (a ruled line, a page's
    #: printed rule) has the line cut out, so that digits written across it are found (0: not cut).
    cut_lines: float = 0.25
    #: Ink whose box encloses a digit-sized piece of other ink (a box drawn around an answer, a window, a page
    #: edge) is a frame around digits, not a digit; ink shaped like an empty frame (ink along three or more
    #: sides of its box, little inside) neither.
    drop_frames: bool = True
    #: On a page, digits are written at about one size: a region more than this many times as tall (or long)
    #: as the median of the others (when there are 3 others or more) is a stroke or a drawing (0: not checked).
    max_relative: float = 2.2

    def __post_init__(self) -> None:
        if not 0.0 < self.min_height < self.max_height <= 1.0:
            raise ValueError("Finder needs 0 < min_height < max_height <= 1")
        if self.max_candidates < 1 or self.work_side < 0 or not 0.0 < self.close < 0.5:
            raise ValueError("Finder needs max_candidates >= 1, work_side >= 0 and 0 < close < 0.5")
        if self.max_aspect <= MIN_ASPECT or self.pair_aspect < 0 or not 0.0 < self.block <= 1.0:
            raise ValueError("Finder needs max_aspect > MIN_ASPECT, pair_aspect >= 0 and 0 < block <= 1")
        if not 0.0 <= self.max_area <= 1.0 or not 0.0 <= self.cut_lines <= 1.0 or self.max_relative < 0:
            raise ValueError("Finder needs 0 <= max_area <= 1, 0 <= cut_lines <= 1 and max_relative >= 0")


#: The webcam's: 640x480 frames, digits 5% to 80% of the frame height and at most 10% of its area, among clutter.
FRAME = Finder()
#: The clutter rules are the webcam's: ``BIG`` and ``PAGE`` (photos of a sheet, framed on its digits) do not use them.
#: The second look of ``PAGE``, for big digits: the image at 400 px, a neighbourhood of a quarter of its height,
#: digits from 12% of its height (a single digit filling half of a photo must stay one region).
BIG = Finder(min_height=0.12, max_height=0.95, max_candidates=64, work_side=400, close=1 / 96, min_contrast=20,
             max_aspect=2.4, pair_aspect=1.2, block=1 / 4, max_area=0.0, cut_lines=0.0,
             drop_frames=False, max_relative=0.0)
#: Photos and scans of a sheet, where digits are many and written close together: digits from 2% of the image
#: height (the generated test pages go down to 3%); large photos searched at 1600 px (a 12 MP photo's digits at
#: 3% are still 48 px tall there); a closing scaled to the smallest digits, so that neighbours stay apart;
#: pieces barely darker than the paper around them dropped (at this scale the paper's own blotches pass the
#: threshold: on the generated pages pen strokes average 28 or more levels under their neighbourhood, paper
#: blotches 13 or fewer); MNIST's flattest digits (up to 2.4 times as wide as tall) taken for digits; two
#: digit-sized pieces side by side kept apart unless together they are no wider than 1.2 times their height
#: (two digits written close are wider; the two strokes of an open 4 are not); and the second look, ``BIG``.
PAGE = Finder(min_height=0.02, max_height=0.8, max_candidates=512, work_side=1600, close=1 / 320, min_contrast=20,
              max_aspect=2.4, pair_aspect=1.2, coarse=BIG, max_area=0.0,
              cut_lines=0.0, drop_frames=False, max_relative=0.0)


@dataclass
class Regions:
    """What the finder found in one image (boxes in the working image; ``scale`` maps them back)."""

    gray: np.ndarray  # the working image, ink dark (uint8)
    labels: np.ndarray  # its connected components
    found: list[Region]  # digit regions, in reading order
    scale: float = 1.0  # original pixels per working pixel
    joined: list[Box] = field(default_factory=list)  # ink of digit height far wider than a digit (working pixels)

    def original(self, box: Box) -> Box:
        """A working-image box in the original image's pixels."""
        if self.scale == 1.0:
            return box
        x, y, w, h = box
        s = self.scale
        return round(x * s), round(y * s), max(1, round(w * s)), max(1, round(h * s))

    @property
    def boxes(self) -> list[Box]:
        """The digit regions' boxes in the original image's pixels, in reading order."""
        return [self.original(box) for box, _ in self.found]


def find_digit_regions(frame: np.ndarray, max_digits: int = MAX_DIGITS, *, ink: str = "dark",
                       finder: Finder = FRAME) -> list[Box]:
    """Boxes (x, y, w, h) of up to ``max_digits`` digit-like regions, largest kept, in reading order.

    ``frame`` is BGR, BGRA or gray uint8; ``ink`` is "dark" (pen on paper), "light" (chalk on a board) or
    "auto" (``ink_of``). ``finder``: ``FRAME`` (the webcam's, the default) or ``PAGE`` (a photo of a sheet).
    """
    return find_regions(frame_gray(frame), max_digits, ink, finder).boxes


def digit_regions(gray: np.ndarray, max_digits: int, ink: str = "dark",
                  finder: Finder = FRAME) -> tuple[np.ndarray, np.ndarray, list[Region]]:
    """-> (ink-dark gray, labels image, [(box, [component labels])]) for up to max_digits regions (boxes in
    the working image: the image itself for ``FRAME``)."""
    regions = find_regions(gray, max_digits, ink, finder)
    return regions.gray, regions.labels, regions.found


def find_regions(gray: np.ndarray, max_digits: int, ink: str = "dark", finder: Finder = FRAME) -> Regions:
    """The digit regions of a gray image (``frame_gray``), with the ink that could not be cut into digits.
    ``ink``: "dark", "light" or "auto" (``ink_of``, decided on the working image)."""
    if isinstance(max_digits, bool) or not isinstance(max_digits, (int, np.integer)) or max_digits < 1:
        raise ValueError(f"max_digits must be a positive integer, got {max_digits!r}")
    scale = 1.0
    if finder.work_side and max(gray.shape) > finder.work_side:
        scale = max(gray.shape) / finder.work_side
        size = (max(16, round(gray.shape[1] / scale)), max(16, round(gray.shape[0] / scale)))
        gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
    if ink == "auto":
        ink = ink_of(gray)
    gray, labels, stats = components(gray, ink, finder.close, finder.block, finder.cut_lines)
    if finder.drop_frames:
        labels, stats = hollow_frames(labels, stats, finder.min_height * gray.shape[0])
    found, joined = _regions(gray, labels, stats, finder)
    if finder.coarse is not None:
        found, joined = _big_digits(gray, stats, found, joined, finder.coarse)
    found.sort(key=lambda item: -item[0][2] * item[0][3])
    found = found[:max_digits]
    found = [found[i] for i in reading_order([box for box, _ in found])]
    return Regions(gray, labels, found, scale, joined)


def _regions(gray: np.ndarray, labels: np.ndarray, stats: np.ndarray,
             finder: Finder) -> tuple[list[Region], list[Box]]:
    """Filter the components, merge the pieces of one digit: (digit regions, ink too wide for one digit)."""
    height, width = gray.shape
    min_h, max_h, max_w = finder.min_height * height, finder.max_height * height, finder.max_height * width
    x, y, w, h, area = (stats[:, i].astype(np.int64) for i in range(5))
    keep = ((np.maximum(w, h) >= 0.5 * min_h) & (area >= 0.1 * min_h * min_h)
            & (h <= max_h) & (w <= max_w)
            & (x > 0) & (y > 0) & (x + w < width) & (y + h < height))  # cut by the frame edge: not whole
    if finder.min_contrast > 0:
        keep &= contrast(gray, labels, len(stats), finder.block) >= finder.min_contrast
    if finder.max_area:
        keep &= w * h <= finder.max_area * width * height
    if finder.drop_frames:
        keep &= ~frames(labels, stats, keep, min_h)
    index = np.flatnonzero(keep)
    largest = math.inf  # the largest side a digit may have here
    if finder.max_relative:  # a piece far larger than the digits around it would swallow them when merged
        tall = h[index][h[index] >= min_h]
        if len(tall) >= 4:
            typical = float(np.median(tall))
            largest = finder.max_relative * typical
            index = index[np.maximum(w, h)[index] <= largest]  # and a crossing-out beside a digit would merge with it
            index = np.array([i for i in index if not long_stroke(labels, ((x[i], y[i], w[i], h[i]), [int(i) + 1]),
                                                                  typical)], np.int64)
    cut = None
    if finder.drop_frames:  # the edge of a hand, a page or a window next to a digit would merge with it
        cut = np.concatenate([[False], area == 0])  # by label: lines and frames cut out of the ink
        index = np.array([i for i in index if on_paper(gray, (x[i], y[i], w[i], h[i]), labels, cut)], np.int64)
    if index.size > finder.max_candidates:
        index = index[np.argsort(-area[index], kind="stable")[: finder.max_candidates]]
    boxes = np.stack([x[index], y[index], x[index] + w[index], y[index] + h[index]], axis=1)
    boxes, members, ink_area = _merge(boxes, [[int(i) + 1] for i in index], [int(area[i]) for i in index], min_h,
                                      finder, largest)

    found: list[Region] = []
    joined: list[Box] = []
    for box, member, ink_px in zip(boxes, members, ink_area):
        bw, bh = int(box[2] - box[0]), int(box[3] - box[1])
        if ink_px > MAX_FILL * bw * bh or (finder.max_area and bw * bh > finder.max_area * width * height):
            continue
        if _digit_shaped(bw, bh, min_h, finder.max_aspect):
            found.append(((int(box[0]), int(box[1]), bw, bh), member))
        elif bh >= min_h and bw <= JOINED_MAX_ASPECT * bh and JOINED_FILL[0] <= ink_px / (bw * bh) <= JOINED_FILL[1]:
            joined.append((int(box[0]), int(box[1]), bw, bh))
    if finder.drop_frames:
        found = [region for region in found if on_paper(gray, region[0], labels, cut)]
    if finder.max_relative and len(found) >= 4:  # once more, among the digits found
        typical = float(np.median([box[3] for box, _ in found]))
        found = [region for region in found if max(region[0][2], region[0][3]) <= finder.max_relative * typical
                 and not long_stroke(labels, region, typical)]
    return found, joined


def _big_digits(gray: np.ndarray, stats: np.ndarray, found: list[Region], joined: list[Box],
                coarse: Finder) -> tuple[list[Region], list[Box]]:
    """The fine look's regions, with each big digit of the coarse look (``Finder.coarse``) put in place of the
    pieces, outlines and slivers found where it is, unless the fine look found that digit there (a region with
    an IoU of 0.5 or more), two digits or more (regions at least 0.6 times its height: the coarse look merged
    neighbours) or ink too wide for one digit, of about its height. Its members are the fine components lying
    inside it."""
    big = find_regions(gray, 64, "dark", coarse)  # ``gray`` is already ink-dark
    comps = [(int(x), int(y), int(w), int(h)) for x, y, w, h in stats[:, :4]]
    for region in big.boxes:
        held = [i for i, (box, _) in enumerate(found) if _shared(box, region) >= 0.5]
        if (any(_iou(found[i][0], region) >= 0.5 for i in held)
                or sum(found[i][0][3] >= 0.6 * region[3] for i in held) >= 2
                or any(_shared(box, region) >= 0.5 and box[3] >= 0.6 * region[3] for box in joined)):
            continue  # the fine look has what is there (digits touching, when it is ink too wide for one)
        members = [i + 1 for i, comp in enumerate(comps) if comp[3] > 1 and inside(comp, region) >= 0.7]
        if not members:
            continue
        x0 = min(comps[m - 1][0] for m in members)
        y0 = min(comps[m - 1][1] for m in members)
        x1 = max(comps[m - 1][0] + comps[m - 1][2] for m in members)
        y1 = max(comps[m - 1][1] + comps[m - 1][3] for m in members)
        found = [r for i, r in enumerate(found) if i not in held] + [((x0, y0, x1 - x0, y1 - y0), members)]
        joined = [box for box in joined if inside(box, region) < 0.7]
    return found, joined


def inside(box: Box, other: Box) -> float:
    """The share of ``box``'s area that lies inside ``other``."""
    w = min(box[0] + box[2], other[0] + other[2]) - max(box[0], other[0])
    h = min(box[1] + box[3], other[1] + other[3]) - max(box[1], other[1])
    return max(0, w) * max(0, h) / max(1, box[2] * box[3])


def _iou(a: Box, b: Box) -> float:
    inter = inside(a, b) * max(1, a[2] * a[3])
    return inter / max(1.0, a[2] * a[3] + b[2] * b[3] - inter)


def _shared(a: Box, b: Box) -> float:
    """Their intersection, as a share of the smaller one's area."""
    return inside(a, b) * max(1, a[2] * a[3]) / max(1, min(a[2] * a[3], b[2] * b[3]))


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
    # the paper: the crop's ink-free pixels (its edge may lie on a frame drawn around the digit)
    free = crop[own == 0]
    paper = int(np.median(free if free.size else np.concatenate([crop[0], crop[-1], crop[:, 0], crop[:, -1]])))
    crop[others] = paper
    scale = CROP_SIDE / max(w, h)
    if scale < 1:  # preprocess shrinks the digit to 20 px anyway; a smaller crop is faster to normalise
        size = (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale)))
        crop = cv2.resize(crop, size, interpolation=cv2.INTER_AREA)
    pad = round(PAD * max(crop.shape))
    return cv2.copyMakeBorder(crop, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=paper)


def cut_digits(regions: Regions) -> tuple[list[np.ndarray], list[Box]]:
    """Each region cut out and made MNIST-style (``preprocess``): (28x28 images, their boxes in the original
    image's pixels), in reading order. Regions that preprocessing finds blank are dropped."""
    images, boxes = [], []
    for box, members in regions.found:
        try:
            images.append(preprocess(crop_region(regions.gray, regions.labels, box, members)))
        except InputError:
            continue
        boxes.append(regions.original(box))
    return images, boxes


def _digit_shaped(w: int | np.ndarray, h: int | np.ndarray, min_h: float,
                  max_aspect: float = MAX_ASPECT) -> bool | np.ndarray:
    """Tall enough and of a digit's width / height (works on numbers and on arrays)."""
    return (h >= min_h) & (MIN_ASPECT * h <= w) & (w <= max_aspect * h)


def _mergeable(box: np.ndarray, others: np.ndarray, min_h: float, finder: Finder = FRAME,
               largest: float = math.inf) -> np.ndarray:
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
    whole = ~touching & _digit_shaped(w, h, min_h, finder.max_aspect) & _digit_shaped(ow, oh, min_h, finder.max_aspect)
    shape_ok = ((union_h <= np.where(whole, 1.5, 2.2) * taller) & (union_w <= finder.max_aspect * union_h)
                & (np.maximum(union_w, union_h) <= largest))
    if finder.pair_aspect:  # two digit-sized pieces side by side: two digits unless together they are narrow
        big = (np.minimum(h, oh) >= np.maximum(min_h, 0.5 * taller)) & (overlap_y > 0)
        shape_ok &= ~big | (union_w <= finder.pair_aspect * union_h)
    stacked = (overlap_x >= 0.3 * np.minimum(w, ow)) & (-overlap_y <= gap)  # e.g. the detached bar of a 5
    beside = (overlap_y >= 0.3 * np.minimum(h, oh)) & (-overlap_x <= gap) & (np.minimum(h, oh) <= 0.7 * taller)
    return shape_ok & (touching | stacked | beside)


def _merge(boxes: np.ndarray, members: list[list[int]], ink: list[int], min_h: float,
           finder: Finder = FRAME, largest: float = math.inf) -> tuple[np.ndarray, list[list[int]], list[int]]:
    """Merge pieces of one digit until no pair is mergeable. Each box is checked against all the others
    after its last growth (the test is symmetric), so at most 2 x len(boxes) vectorised checks."""
    boxes = boxes.astype(np.float64)
    i = 0
    while i < len(boxes):
        hits = np.flatnonzero(_mergeable(boxes[i], boxes, min_h, finder, largest))
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
