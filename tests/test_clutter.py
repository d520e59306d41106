"""The webcam among clutter: each of the region finder's clutter rules (``edgeguard.regions.FRAME``) on a frame
drawn to need it, beside the same frame without the rule (so each test can fail), the desk scenes of
``export/desk.py`` and their benchmark (``benchmarks.webcam_clutter``)."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from benchmarks import videos
from edgeguard import regions
from edgeguard import webcam as cam
from export import desk

ROOT = Path(__file__).resolve().parents[1]
W, H = 640, 480
NO_RULES = dataclasses.replace(regions.FRAME, max_area=0.0, cut_lines=0.0, drop_frames=False, max_relative=0.0)


def paper(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(205 + rng.normal(0, 3, (H, W)), 0, 255).astype(np.float32)


def put(frame: np.ndarray, glyph: np.ndarray, x: int, y: int, height: int, ink: float = 40.0) -> tuple:
    """Draw a 28x28 MNIST digit (white on black) dark on ``frame`` with its ink ``height`` px tall; its ink box."""
    rows, cols = np.nonzero(glyph > 25)
    crop = glyph[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1].astype(np.float32) / 255.0
    scale = height / crop.shape[0]
    alpha = cv2.resize(crop, (max(2, round(crop.shape[1] * scale)), height), interpolation=cv2.INTER_CUBIC)
    alpha = np.clip(alpha, 0, 1)
    h, w = alpha.shape
    frame[y : y + h, x : x + w] = frame[y : y + h, x : x + w] * (1 - alpha) + ink * alpha
    return x, y, w, h


def found(frame: np.ndarray, finder=regions.FRAME) -> list:
    return regions.find_regions(np.clip(frame, 0, 255).astype(np.uint8), 16, "dark", finder).boxes


def matched(boxes, digit_boxes, least: float = 0.5) -> int:
    return sum(max((cam.iou(d, b) for b in boxes), default=0.0) >= least for d in digit_boxes)


@pytest.fixture(scope="module")
def four(mnist):
    """Four MNIST test digits of different classes (not 1), and their labels."""
    picked, seen = [], set()
    for i, label in enumerate(mnist.test_y):
        if label not in seen and label != 1:
            picked.append(i)
            seen.add(int(label))
        if len(picked) == 4:
            break
    return mnist.test_x[picked], mnist.test_y[picked]


def test_digits_inside_a_window_are_found_and_the_window_is_not(four):
    frame = paper()
    cv2.rectangle(frame, (100, 120), (560, 380), 50, 3)  # a window, a page edge or a large drawn frame
    boxes = [put(frame, g, 120 + 110 * i, 200, 56) for i, g in enumerate(four[0])]
    got = found(frame)
    assert matched(got, boxes) == 4
    assert all(w * h <= 0.10 * W * H for _, _, w, h in got)
    assert matched(found(frame, NO_RULES), boxes) < 4  # without the rules the frame swallows the digits


def test_a_box_drawn_around_a_digit_and_touching_it_is_cut_away(four, guard):
    frame = paper()
    boxes = [put(frame, g, 90 + 130 * i, 200, 56) for i, g in enumerate(four[0])]
    for x, y, w, h in boxes:
        cv2.rectangle(frame, (x - 3, y - 3), (x + w + 2, y + h + 2), 45, 2)
    image = np.clip(frame, 0, 255).astype(np.uint8)
    gray = regions.frame_gray(image)
    images, got = regions.cut_digits(regions.find_regions(gray, 16))
    # each digit found inside its box, less the strokes that ran along the box, and read
    assert matched(got, boxes, 0.4) == 4
    assert all(any(d[0] <= b[0] and b[0] + b[2] <= d[0] + d[2] + 1 for b in got) for d in boxes)
    labels = [v.label for v in guard.screen(np.stack(images))]
    assert sum(a == b for a, b in zip(labels, four[1])) >= 3
    assert not any(all(d[0] <= b[0] and b[0] + b[2] <= d[0] + d[2] + 1 for b in found(frame, NO_RULES))
                   for d in boxes)  # without the rules each box is taken with its digit


def test_ruled_lines_across_digits_are_cut_out(four, guard):
    frame = paper()
    boxes = [put(frame, g, 90 + 130 * i, 180, 60) for i, g in enumerate(four[0])]
    tilt = math.tan(math.radians(3))
    for y0 in (200, 225):  # two ruled lines across every digit, 3 degrees off level
        cv2.line(frame, (10, y0), (630, round(y0 + 620 * tilt)), 150, 2)
    image = np.clip(frame, 0, 255).astype(np.uint8)
    images, got = regions.cut_digits(regions.find_regions(regions.frame_gray(image), 16))
    assert matched(got, boxes) == 4
    labels = [v.label for v in guard.screen(np.stack(images))]
    assert sum(a == b for a, b in zip(labels, four[1])) >= 3
    assert matched(found(frame, NO_RULES), boxes) < 4  # the lines join the digits into one wide piece


def test_a_long_straight_stroke_is_not_a_digit_but_a_one_of_their_size_is(four):
    frame = paper()
    boxes = [put(frame, g, 60 + 100 * i, 120, 56) for i, g in enumerate(four[0])]
    cv2.line(frame, (480, 150), (510, 300), 40, 4)  # a crossing-out, 150 px: far taller than the digits
    cv2.line(frame, (300, 300), (305, 356), 40, 4)  # a "1" as tall as the digits
    got = found(frame)
    assert matched(got, boxes) == 4
    assert not any(x >= 470 for x, _, _, _ in got)
    assert any(abs(x - 300) < 10 and abs(y - 300) < 10 for x, y, _, _ in got)
    assert any(x >= 470 for x, _, _, _ in found(frame, NO_RULES))


def test_a_stroke_beside_a_digit_does_not_merge_with_it(four):
    """A long straight stroke a few pixels from a digit (a margin line, a crossing-out) is dropped before the
    digit's pieces are merged: merged, their box is the stroke's, not the digit's, and the digit is missed."""
    frame = paper()
    boxes = [put(frame, g, 60 + 100 * i, 150, 56) for i, g in enumerate(four[0])]
    x, y, w, h = boxes[2]
    cv2.line(frame, (x + w + 6, y + 28), (x + w + 8, y + h + 60), 40, 3)  # 88 px from mid-height down: 1.6x theirs
    got = found(frame)
    assert matched(got, boxes) == 4
    assert not any(bh > 1.5 * h for _, _, _, bh in got)
    relative_off = dataclasses.replace(regions.FRAME, max_relative=0.0)  # no rule of size relative to the digits
    assert matched(found(frame, relative_off), [boxes[2]]) == 0


def test_pieces_of_a_page_edge_and_a_hand_are_not_ink_on_paper(four):
    frame = np.full((H, W), 110.0, np.float32)  # the desk
    frame[60:420, 80:560] = paper()[60:420, 80:560]  # the page, its edge in view on every side
    boxes = [put(frame, g, 130 + 100 * i, 200, 56) for i, g in enumerate(four[0])]
    cv2.ellipse(frame, (80, 300), (40, 70), 0, 0, 360, 150, -1)  # a hand over the page's edge
    got = found(frame)
    assert matched(got, boxes) == 4
    assert len(got) == 4  # nothing else: no piece of the page's edge or of the hand


def test_a_region_larger_than_a_tenth_of_the_frame_is_never_a_digit(four):
    frame = paper()
    box = put(frame, four[0][0], 200, 40, 380)  # a digit held close: 380 px tall
    assert not found(frame)
    assert matched(regions.find_regions(np.clip(frame, 0, 255).astype(np.uint8), 16, "dark",
                                        dataclasses.replace(regions.FRAME, max_area=0.0)).boxes, [box]) == 1


def test_the_page_finder_keeps_its_own_rules():
    assert regions.PAGE.max_area == regions.PAGE.cut_lines == regions.PAGE.max_relative == 0
    assert not regions.PAGE.drop_frames
    with pytest.raises(ValueError):
        regions.Finder(max_area=1.5)


# --------------------------------------------------------------------------- desk scenes


@pytest.mark.parametrize("case", desk.CASES)
def test_desk_scenes_hold_what_they_say(mnist, case):
    rng = np.random.default_rng(3)
    frames, items = desk.desk_scene(rng, 2, case=case)
    again = desk.desk_scene(np.random.default_rng(3), 2, case=case)[0]
    assert all(np.array_equal(a, b) for a, b in zip(frames, again))
    for frame, its in zip(frames, items):
        gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        digits = [i for i in its if i.kind == "digit"]
        assert 8 <= len(digits) + sum(i.kind == "covered" for i in its) <= 12
        for item in digits:
            x, y, w, h = item.box
            assert gray[y : y + h, x : x + w].min() < 120  # ink where the box says
        names = {i.name for i in its if i.kind == "clutter"}
        assert names <= set(desk.CLUTTER) and "text" in names
        assert ("window" in names) == (case == "screen")
    with pytest.raises(ValueError):
        desk.desk_scene(rng, 1, case="beach")


def test_desk_rates_on_a_short_video(mnist, guard):
    pool = videos.trusted_digits(guard, 400)
    video = desk.desk_video(3, 3, seed=5, pool=pool)
    rates = videos.desk_rates(guard, video)
    assert rates["digits"] > 60 and rates["frames"] == 9
    assert rates["read"] >= 0.9
    assert rates["big_boxes_clean"] == 0
    assert rates["nondigit_clean_count"] <= 3


def test_clutter_benchmark_quick_run(mnist_files):
    out = subprocess.run([sys.executable, "-m", "benchmarks.webcam_clutter", "--quick", "--scenes", "1", "--json"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout)
    assert set(report["met"]) == {"read", "frames_missing_a_digit", "nondigit_clean", "big_boxes_clean",
                                  "fps_8_digits"}
    assert report["pooled"]["all"]["digits"] > 0 and report["seeds"][0]["speed"]["frames"] > 0
