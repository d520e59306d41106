"""The renderer (export/filming.py) and the camera calibration it films for (export/camera.py)."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest

from edgeguard.bundle import load_bundle, shipped_bundle_path
from edgeguard.guard import Guard
from export import camera, filming


def drawn_digits(n: int = 11) -> filming.Digits:
    """``n`` digits drawn with OpenCV's font, white on black 28x28: a digit source that needs no MNIST."""
    images = np.zeros((n, 28, 28), np.uint8)
    labels = np.arange(n) % 10
    for image, label in zip(images, labels):
        cv2.putText(image, str(label), (5, 23), cv2.FONT_HERSHEY_SIMPLEX, 0.9, 255, 3, cv2.LINE_AA)
    return images, labels


def test_digit_scenes_film_every_digit_once():
    source = drawn_digits(11)
    scenes = list(filming.digit_scenes(source, seed=3, frames_per_scene=2, name="drawn"))
    items = [scene_items[0] for _, scene_items in scenes]
    assert all(len(frames) == 2 and frames[0].shape == (480, 640, 3) for frames, _ in scenes)
    assert all(2 <= len(scene) <= 4 for scene in items[:-1]) and 1 <= len(items[-1]) <= 4
    filmed = [item for scene in items for item in scene]
    assert sorted(int(item.name.split("#")[1]) for item in filmed) == list(range(11))
    assert all(item.kind == "digit" and item.label == source[1][int(item.name.split("#")[1])] for item in filmed)
    again = next(filming.digit_scenes(source, seed=3, frames_per_scene=2, name="drawn"))
    assert np.array_equal(again[0][1], scenes[0][0][1])  # seeded: the same frames every time


def test_make_video_films_the_given_digit_source():
    images, labels = drawn_digits(10)
    video = filming.make_video(3, 1, seed=0, digits=(images, labels), adversarial_every=1, nondigit_every=0)
    kinds = [item.kind for scene in video.scenes for item in scene]
    assert kinds.count("adversarial") == 3 and len(video.frames) == 3 == len(video.items)
    for item in (i for scene in video.scenes for i in scene if i.kind == "digit"):
        assert item.label == labels[int(item.name.split("#")[1])]


def test_match_boxes():
    items = [filming.Item("digit", 1, (10, 10, 20, 40), "a"), filming.Item("digit", 2, (100, 10, 20, 40), "b")]
    assert filming.match_boxes(items, [(101, 12, 20, 40), (11, 10, 20, 40)]) == [1, 0]
    assert filming.match_boxes(items, [(20, 10, 20, 40)]) == [None, None]  # IoU 1/3 < 0.5
    assert filming.match_boxes(items, []) == [None, None]


def test_camera_calibration_export_quick(tmp_path, mnist, capsys):
    """`python -m export.calibrate --only camera --quick` on a copy of the shipped bundle: a valid
    camera_calibration entry, and nothing else in the manifest changes."""
    from export.calibrate import main

    root = tmp_path / "bundle"
    shutil.copytree(shipped_bundle_path(), root)
    before = json.loads((root / "manifest.json").read_text())
    del before["camera_calibration"]
    (root / "manifest.json").write_text(json.dumps(before))

    assert main(["--bundle", str(root), "--only", "camera", "--quick"]) == 0
    summary = json.loads(capsys.readouterr().out)["camera_calibration"]
    after = load_bundle(root).manifest  # validated
    entry = after.pop("camera_calibration")
    assert after == before
    assert entry["signals"] == before["calibration"]["signals"]
    assert entry["combination"] == before["calibration"]["combination"]
    assert entry["k"] == before["default_k"] and entry["found"]["digits"] == 300
    # Filmed digits found and matched, of 300 (deterministic); measured when written: 299 calibration and 300
    # test digits. 295 is 3.5 SE (0.3 points at 99.7%) below.
    assert 295 <= entry["n"] == entry["found"]["matched"] <= 300 and 295 <= entry["test_images"] <= 300
    assert entry["renderer"]["seed"] not in range(11) and entry["renderer"]["seed"] != entry["renderer"]["test_seed"]
    assert set(entry["test_false_alarm_rate"]) == {"0.001", "0.01", "0.05", "0.1"}
    # Conformal: held-out filmed digits are flagged at about alpha (measured when written: 0, 0.3%, 2% and 8.7%
    # of 300); at most 3 SE above alpha.
    for alpha, rate in entry["test_false_alarm_rate"].items():
        a = float(alpha)
        assert rate <= a + 3 * (a * (1 - a) / entry["test_images"]) ** 0.5, (alpha, rate)
    assert summary["test_false_alarm_rate"] == entry["test_false_alarm_rate"]
    assert "digit_calibration_false_alarm_rate_on_filmed_test_digits" in summary
    guard = Guard.load(root, providers="cpu", calibration="camera")
    assert guard.calibration.combined.size == entry["n"]


def test_camera_calibration_needs_the_digit_calibration(tmp_path):
    from edgeguard.errors import BundleError

    root = tmp_path / "bundle"
    shutil.copytree(shipped_bundle_path(), root)
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["calibration"] = None
    (root / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="calibrate the digits first"):
        camera.calibrate_camera(root, drawn_digits())
