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

from dataclasses import dataclass, field

import cv2
import numpy as np

from edgeguard.errors import InputError
from edgeguard.normalize import preprocess
from edgeguard.reading import reading_order

__all__ = ["Box", "Region", "Finder", "Regions", "FRAME", "PAGE", "find_digit_regions", "find_regions",
           "frame_gray", "digit_regions", "crop_region", "cut_digits", "reading_order", "ink_of"]

Box = tuple[int, int, int, int]  # x, y, width, height in image pixels
Region = tuple[Box, list[int]]  # a digit's box and the labels of the ink components it is made of

MAX_CANDIDATES = 48  # pieces kept (largest first) before merging: bounds the work on a frame of noise
MIN_HEIGHT = 0.05  # smallest digit, as a share of the frame height (24 px at 480)
MAX_HEIGHT = 0.8  # largest digit, same
MIN_ASPECT, MAX_ASPECT = 0.08, 1.8  # width / height of a digit ("1" is thin; a flat, tilted "0" is wide)
MAX_FILL = 0.95  # a region whose box is this full of ink is a solid block, not a digit
THRESHOLD_C = 10  # adaptive threshold: ink must be this much darker (0..255) than its neighbourhood
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

    def __post_init__(self) -> None:
        if not 0.0 < self.min_height < self.max_height <= 1.0:
            raise ValueError("Finder needs 0 < min_height < max_height <= 1")
        if self.max_candidates < 1 or self.work_side < 0 or not 0.0 < self.close < 0.5:
            raise ValueError("Finder needs max_candidates >= 1, work_side >= 0 and 0 < close < 0.5")
        if self.max_aspect <= MIN_ASPECT or self.pair_aspect < 0 or not 0.0 < self.block <= 1.0:
            raise ValueError("Finder needs max_aspect > MIN_ASPECT, pair_aspect >= 0 and 0 < block <= 1")


#: The webcam's: 640x480 frames, digits 5% to 80% of the frame height.
FRAME = Finder()
#: The second look of ``PAGE``, for big digits: the image at 400 px, a neighbourhood of a quarter of its height,
#: digits from 12% of its height (a single digit filling half of a photo must stay one region).
BIG = Finder(min_height=0.12, max_height=0.95, max_candidates=64, work_side=400, close=1 / 96, min_contrast=20,
             max_aspect=2.4, pair_aspect=1.2, block=1 / 4)
#: Photos and scans of a sheet, where digits are many and written close together: digits from 2% of the image
#: height (the generated test pages go down to 3%); large photos searched at 1600 px (a 12 MP photo's digits at
#: 3% are still 48 px tall there); a closing scaled to the smallest digits, so that neighbours stay apart;
#: pieces barely darker than the paper around them dropped (at this scale the paper's own blotches pass the
#: threshold: on the generated pages pen strokes average 28 or more levels under their neighbourhood, paper
#: blotches 13 or fewer); MNIST's flattest digits (up to 2.4 times as wide as tall) taken for digits; two
#: digit-sized pieces side by side kept apart unless together they are no wider than 1.2 times their height
#: (two digits written close are wider; the two strokes of an open 4 are not); and the second look, ``BIG``.
PAGE = Finder(min_height=0.02, max_height=0.8, max_candidates=512, work_side=1600, close=1 / 320, min_contrast=20,
              max_aspect=2.4, pair_aspect=1.2, coarse=BIG)


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


def find_digit_regions(frame: np.ndarray, max_digits: int = 8, *, ink: str = "dark",
                       finder: Finder = FRAME) -> list[Box]:
    """Boxes (x, y, w, h) of up to ``max_digits`` digit-like regions, largest kept, in reading order.

    ``frame`` is BGR, BGRA or gray uint8; ``ink`` is "dark" (pen on paper), "light" (chalk on a board) or
    "auto" (``ink_of``). ``finder``: ``FRAME`` (the webcam's, the default) or ``PAGE`` (a photo of a sheet).
    """
    return find_regions(frame_gray(frame), max_digits, ink, finder).boxes


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


def ink_of(gray: np.ndarray) -> str:
    """"dark" (pen on paper) or "light" (chalk on a board): whichever side the strong local departures from
    the background (a heavily blurred copy, so uneven light does not count) mostly fall on. Ink is thin and
    contrasted; the paper's light and shadows are neither."""
    side = max(gray.shape)
    small = gray if side <= 512 else cv2.resize(
        gray, (max(1, gray.shape[1] * 512 // side), max(1, gray.shape[0] * 512 // side)), interpolation=cv2.INTER_AREA)
    background = cv2.GaussianBlur(small, (0, 0), max(small.shape) / 32)
    diff = small.astype(np.int16) - background.astype(np.int16)
    return "light" if int(np.count_nonzero(diff > 25)) > int(np.count_nonzero(diff < -25)) else "dark"


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
    gray, labels, stats = _components(gray, ink, finder.close, finder.block)
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
        keep &= _contrast(gray, labels, len(stats), finder.block) >= finder.min_contrast
    index = np.flatnonzero(keep)
    if index.size > finder.max_candidates:
        index = index[np.argsort(-area[index], kind="stable")[: finder.max_candidates]]
    boxes = np.stack([x[index], y[index], x[index] + w[index], y[index] + h[index]], axis=1)
    boxes, members, ink_area = _merge(boxes, [[int(i) + 1] for i in index], [int(area[i]) for i in index], min_h,
                                      finder)

    found: list[Region] = []
    joined: list[Box] = []
    for box, member, ink_px in zip(boxes, members, ink_area):
        bw, bh = int(box[2] - box[0]), int(box[3] - box[1])
        if ink_px > MAX_FILL * bw * bh:
            continue
        if _digit_shaped(bw, bh, min_h, finder.max_aspect):
            found.append(((int(box[0]), int(box[1]), bw, bh), member))
        elif bh >= min_h and bw <= JOINED_MAX_ASPECT * bh and JOINED_FILL[0] <= ink_px / (bw * bh) <= JOINED_FILL[1]:
            joined.append((int(box[0]), int(box[1]), bw, bh))
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
        inside = [i for i, (box, _) in enumerate(found) if _shared(box, region) >= 0.5]
        if (any(_iou(found[i][0], region) >= 0.5 for i in inside)
                or sum(found[i][0][3] >= 0.6 * region[3] for i in inside) >= 2
                or any(_shared(box, region) >= 0.5 and box[3] >= 0.6 * region[3] for box in joined)):
            continue  # the fine look has what is there (digits touching, when it is ink too wide for one)
        members = [i + 1 for i, comp in enumerate(comps) if comp[3] > 1 and _inside(comp, region) >= 0.7]
        if not members:
            continue
        x0 = min(comps[m - 1][0] for m in members)
        y0 = min(comps[m - 1][1] for m in members)
        x1 = max(comps[m - 1][0] + comps[m - 1][2] for m in members)
        y1 = max(comps[m - 1][1] + comps[m - 1][3] for m in members)
        found = [r for i, r in enumerate(found) if i not in inside] + [((x0, y0, x1 - x0, y1 - y0), members)]
        joined = [box for box in joined if _inside(box, region) < 0.7]
    return found, joined


def _inside(box: Box, other: Box) -> float:
    """The share of ``box``'s area that lies inside ``other``."""
    w = min(box[0] + box[2], other[0] + other[2]) - max(box[0], other[0])
    h = min(box[1] + box[3], other[1] + other[3]) - max(box[1], other[1])
    return max(0, w) * max(0, h) / max(1, box[2] * box[3])


def _iou(a: Box, b: Box) -> float:
    inter = _inside(a, b) * max(1, a[2] * a[3])
    return inter / max(1.0, a[2] * a[3] + b[2] * b[3] - inter)


def _shared(a: Box, b: Box) -> float:
    """Their intersection, as a share of the smaller one's area."""
    return _inside(a, b) * max(1, a[2] * a[3]) / max(1, min(a[2] * a[3], b[2] * b[3]))


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


# --------------------------------------------------------------------------- steps


def _odd(value: float, minimum: int) -> int:
    n = max(minimum, int(round(value)))
    return n if n % 2 else n + 1


def _components(gray: np.ndarray, ink: str, close: float = 1 / 96,
                block: float = 1 / 16) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """-> (ink-dark gray, labels, stats) of the ink mask's connected components (background excluded from stats)."""
    if ink == "light":
        gray = 255 - gray
    elif ink != "dark":
        raise ValueError(f"ink must be 'dark', 'light' or 'auto', got {ink!r}")
    height = gray.shape[0]
    smooth = cv2.GaussianBlur(gray, (5, 5), 0)
    mask = cv2.adaptiveThreshold(smooth, 255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY_INV,
                                 _odd(height * block, 15), THRESHOLD_C)
    size = _odd(height * close, 3)
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size)))
    # BBDT (Grana) computes the statistics about 7x faster here than OpenCV's default (Spaghetti).
    _, labels, stats, _ = cv2.connectedComponentsWithStatsWithAlgorithm(mask, 8, cv2.CV_32S, cv2.CCL_BBDT)
    return gray, labels, stats[1:]


def _contrast(gray: np.ndarray, labels: np.ndarray, count: int, share: float = 1 / 16) -> np.ndarray:
    """Each component's mean darkness under the mean of its neighbourhood (the adaptive threshold's block)."""
    block = _odd(gray.shape[0] * share, 15)
    smooth = cv2.GaussianBlur(gray, (5, 5), 0).astype(np.float32)
    depth = cv2.boxFilter(smooth, -1, (block, block)) - smooth
    sums = np.bincount(labels.ravel(), weights=depth.ravel(), minlength=count + 1)[1:]
    areas = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    return sums / np.maximum(areas, 1)


def _digit_shaped(w: int | np.ndarray, h: int | np.ndarray, min_h: float,
                  max_aspect: float = MAX_ASPECT) -> bool | np.ndarray:
    """Tall enough and of a digit's width / height (works on numbers and on arrays)."""
    return (h >= min_h) & (MIN_ASPECT * h <= w) & (w <= max_aspect * h)


def _mergeable(box: np.ndarray, others: np.ndarray, min_h: float, finder: Finder = FRAME) -> np.ndarray:
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
    shape_ok = (union_h <= np.where(whole, 1.5, 2.2) * taller) & (union_w <= finder.max_aspect * union_h)
    if finder.pair_aspect:  # two digit-sized pieces side by side: two digits unless together they are narrow
        big = (np.minimum(h, oh) >= np.maximum(min_h, 0.5 * taller)) & (overlap_y > 0)
        shape_ok &= ~big | (union_w <= finder.pair_aspect * union_h)
    stacked = (overlap_x >= 0.3 * np.minimum(w, ow)) & (-overlap_y <= gap)  # e.g. the detached bar of a 5
    beside = (overlap_y >= 0.3 * np.minimum(h, oh)) & (-overlap_x <= gap) & (np.minimum(h, oh) <= 0.7 * taller)
    return shape_ok & (touching | stacked | beside)


def _merge(boxes: np.ndarray, members: list[list[int]], ink: list[int], min_h: float,
           finder: Finder = FRAME) -> tuple[np.ndarray, list[list[int]], list[int]]:
    """Merge pieces of one digit until no pair is mergeable. Each box is checked against all the others
    after its last growth (the test is symmetric), so at most 2 x len(boxes) vectorised checks."""
    boxes = boxes.astype(np.float64)
    i = 0
    while i < len(boxes):
        hits = np.flatnonzero(_mergeable(boxes[i], boxes, min_h, finder))
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
