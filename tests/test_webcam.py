"""Tests for edgeguard.webcam and `edgeguard webcam`, on synthetic videos (no camera needed).

The videos (export/filming.py) show MNIST digits dark on light paper under uneven light, filmed by a
shaky, blurry, noisy camera, with superimposed digit pairs standing in for adversarial digits and
stars, hash signs and Fashion-MNIST items as non-digits. Found boxes are matched to the known ones by IoU.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import replace

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from benchmarks import videos
from edgeguard import regions
from edgeguard import webcam as cam
from edgeguard.bundle import shipped_bundle_path
from edgeguard.calibration import VERDICTS
from edgeguard.cli import app
from edgeguard.guard import Guard, Verdict
from export import filming

MATCH_IOU = 0.5
SCENES, FRAMES_PER_SCENE = 48, 2  # the main video: 96 frames, 8 items in each
# The bounds below are 3 standard errors from the value measured when written (the shipped bundle, the main
# video), per kind of item. Rates are per appearance (an item in one frame), as `videos.rates` gives them; the
# standard errors count distinct items, as the two appearances of one item are far from independent:
# 144 clean digits, 96 pairs, 48 stars, 48 hash signs and 48 Fashion-MNIST items.
# Clean digits (drawn from all MNIST test digits, not only those the screen calls clean as 28x28 images),
# measured when written with either calibration: read 100% (99.5% over seeds 0 to 3 of this video; the SE at
# 99.5% and 144 digits is 0.6 points), flagged 0.7% (SE 0.7 points; 0% to 0.7% over seeds 1 to 3).
MIN_CLEAN_READ = 0.98
MAX_CLEAN_FLAGGED = 0.03
# Flagged, measured when written, digit calibration: pairs 44.3% (SE 5.1 points), stars 33.3% (SE 6.8),
# Fashion-MNIST items 31.3% (SE 6.7), hash signs 100% (no SE: a 10-point margin); camera calibration: pairs
# 48.4% (SE 5.1), stars 55.2% (SE 7.2), Fashion-MNIST items 33.3% (SE 6.8), hash signs 100%. Over seeds 1 to
# 3, digit calibration: pairs 44% to 52%, stars 33% to 38%, Fashion items 32% to 35%, hash signs 100%.
MIN_FLAGGED = {
    "digits": {"pair": 0.29, "star": 0.12, "fashion": 0.11, "hash": 0.9},
    "camera": {"pair": 0.33, "star": 0.33, "fashion": 0.12, "hash": 0.9},
}
# Found (matched to a box), measured when written: 100% of 144 digits, 100% of 96 pairs, 98.6% of 144
# non-digits (SE 1.0 point; Fashion items 95.8%, 93% to 96% over seeds 1 to 3).
MIN_FOUND = {"digit": 0.98, "adversarial": 0.98, "nondigit": 0.95}

runner = CliRunner()


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def guard():
    g = Guard.load(threads=1)
    g.warmup()
    return g


def full_sheets(scenes: int, frames_per_scene: int, seed: int) -> filming.Video:
    """Scenes that fill the renderer's 4 x 2 places, in a random order: 2 superimposed pairs, a star, a hash
    sign, a Fashion-MNIST item (a second star where Fashion-MNIST is not installed) and 3 clean digits drawn
    from all MNIST test digits. Many items per frame measure flag rates per kind of item for few frames."""
    rng = np.random.default_rng(seed)
    x, y = filming.mnist_test()
    video = filming.Video([], [])
    for _ in range(scenes):
        glyphs = [("adversarial", None, *filming.superimposed(rng)) for _ in range(2)]
        glyphs += [("nondigit", None, *filming.nondigit(rng, i)) for i in range(3)]
        glyphs += [("digit", int(y[n]), x[n], f"mnist#{n}") for n in rng.integers(len(x), size=3)]
        video.add_scene(*filming.render_scene([glyphs[i] for i in rng.permutation(len(glyphs))], rng,
                                              frames_per_scene))
    return video


@pytest.fixture(scope="module")
def main_video(tmp_path_factory):
    """SCENES scenes x FRAMES_PER_SCENE frames of full sheets, written as MJPG .avi and read back
    (compression included)."""
    video = full_sheets(SCENES, FRAMES_PER_SCENE, seed=0)
    path = filming.write_video(tmp_path_factory.mktemp("video") / "main.avi", video.frames)
    return video, path


@pytest.fixture(scope="module")
def small_video(tmp_path_factory):
    video = filming.make_video(2, 4, seed=1)
    path = filming.write_video(tmp_path_factory.mktemp("video") / "small.avi", video.frames)
    return video, path


@pytest.fixture(scope="module")
def main_frames(main_video):
    """The main video's frames as read back from its file."""
    video, path = main_video
    frames = list(cam.read_frames(cam.open_source(path)))
    assert len(frames) == len(video.frames)
    return frames


@pytest.fixture(scope="module")
def measured(guard, main_video, main_frames):
    """Every appearance of every item of the main video (read back from the file), matched by IoU."""
    rows, spurious = videos.match(guard, main_video[0], main_frames, match_iou=MATCH_IOU)
    return rows, spurious, videos.rates(rows)


@pytest.fixture(scope="module")
def measured_camera(main_video, main_frames):
    """The same, screened with the camera calibration (what `edgeguard webcam` uses by default)."""
    camera = Guard.load(threads=1, calibration="camera")
    rows, spurious = videos.match(camera, main_video[0], main_frames, match_iou=MATCH_IOU)
    return rows, spurious, videos.rates(rows)


# --------------------------------------------------------------------------- reading and flagging


def _flagged_by_type(rates: dict) -> dict[str, float]:
    """Flagged per kind of item: pairs, and each type of non-digit (star, hash, fashion)."""
    return {**rates["adversarial"]["flagged_by_type"], **rates["nondigit"]["flagged_by_type"]}


def test_clean_digits_are_found_and_read(measured):
    rows, spurious, r = measured
    digits = r["digit"]
    print(f"clean digits: {digits}; spurious boxes: {spurious}")
    assert digits["appearances"] == 3 * SCENES * FRAMES_PER_SCENE
    assert digits["found"] >= MIN_FOUND["digit"]
    assert digits["read"] >= MIN_CLEAN_READ
    # Boxes matched to no item: measured when written, 0 in 96 frames (2, 2 and 5 over seeds 1 to 3: 8 is about
    # 3.5 SE above their mean, counted as Poisson).
    assert spurious <= 8


def test_clean_digits_are_rarely_flagged(measured):
    assert measured[2]["digit"]["flagged"] <= MAX_CLEAN_FLAGGED


@pytest.mark.parametrize("kind", ["adversarial", "nondigit"])
def test_adversarial_and_nondigit_items_are_flagged(measured, kind):
    rows, _, r = measured
    passed = sorted({a.item.name for a in rows if a.item.kind == kind
                     and (a.result is None or a.result.stable_verdict == "clean")})
    print(f"{kind}: {r[kind]}; missed or passed as clean: {passed}")
    assert r[kind]["appearances"] == (2 if kind == "adversarial" else 3) * SCENES * FRAMES_PER_SCENE
    assert r[kind]["found"] >= MIN_FOUND[kind]
    by_type = r[kind]["flagged_by_type"]
    nondigit_types = {"star", "hash", "fashion"} if filming.fashion_test() is not None else {"star", "hash"}
    assert set(by_type) == ({"pair"} if kind == "adversarial" else nondigit_types)
    for name, flagged in by_type.items():
        assert flagged >= MIN_FLAGGED["digits"][name], name


def test_camera_calibration_reads_as_well_and_flags_at_least_as_much(measured, measured_camera):
    """Calibrated on filmed held-out digits, the screen keeps reading and passing clean digits and flags about
    as many pairs and non-digits as the digit calibration, or more. Since the camera calibration is filmed among
    clutter too (export/camera.py), its thresholds are a little looser on these plain scenes: here 54.2%
    against 55.2% of the non-digit appearances (one appearance), so 5 points are allowed
    (`python -m benchmarks.webcam_fps --accuracy` measures both on longer videos; see reports/webcam.md)."""
    digits, camera = measured[2], measured_camera[2]
    print(f"camera calibration: {camera}")
    assert camera["digit"]["read"] >= MIN_CLEAN_READ
    assert camera["digit"]["flagged"] <= MAX_CLEAN_FLAGGED
    for kind in ("adversarial", "nondigit"):
        assert camera[kind]["flagged"] >= digits[kind]["flagged"] - 0.05, kind
    for name, flagged in _flagged_by_type(camera).items():
        assert flagged >= MIN_FLAGGED["camera"][name], name


# --------------------------------------------------------------------------- the command


def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_json_output_is_one_object_per_frame(small_video):
    video, path = small_video
    result = runner.invoke(app, ["webcam", "--source", str(path), "--no-display", "--json"])
    assert result.exit_code == 0, result.stderr
    frames = _json_lines(result.stdout)
    assert [f["frame"] for f in frames] == list(range(len(video.frames)))
    assert all(f["screened"] for f in frames)
    times = [f["time_s"] for f in frames]
    assert times == sorted(times) and times[0] == 0.0
    digits = [d for f in frames for d in f["digits"]]
    assert len(digits) >= 2 * len(frames)
    for d in digits:
        assert len(d["box"]) == 4 and all(isinstance(v, int) and v >= 0 for v in d["box"])
        assert d["verdict"] in VERDICTS and d["stable_verdict"] in VERDICTS
        assert 0 <= d["label"] <= 9 and 0 <= d["purified_label"] <= 9 and 0 <= d["stable_label"] <= 9
        assert isinstance(d["reasons"], list) and isinstance(d["track_id"], int)
        assert 0.0 < d["p_value"] <= 1.0 and set(d["scores"]) >= {"disagreement", "recon_mse"}
    assert "ended after" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def _without_camera_calibration(tmp_path):
    """A copy of the shipped bundle whose manifest has no camera calibration."""
    root = tmp_path / "bundle"
    shutil.copytree(shipped_bundle_path(), root)
    manifest = json.loads((root / "manifest.json").read_text())
    del manifest["camera_calibration"]
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def test_calibration_option(tmp_path, small_video):
    """Default: the camera calibration when the bundle has one, else the digit calibration (no error);
    asking for the camera calibration of a bundle without one is one line and exit code 3."""
    _, path = small_video
    source = ["webcam", "--source", str(path), "--no-display", "--json"]
    p_values = {}
    for option in ([], ["--calibration", "camera"], ["--calibration", "digits"]):
        result = runner.invoke(app, source + option)
        assert result.exit_code == 0, result.stderr
        p_values[tuple(option)] = [d["p_value"] for f in _json_lines(result.stdout) for d in f["digits"]]
    assert p_values[()] == p_values[("--calibration", "camera")] != p_values[("--calibration", "digits")]
    assert cam.default_calibration() == "camera"

    bundle = _without_camera_calibration(tmp_path)
    assert cam.default_calibration(bundle) == "digits"
    result = runner.invoke(app, source + ["--bundle", str(bundle)])
    assert result.exit_code == 0, result.stderr
    digit_p = [d["p_value"] for f in _json_lines(result.stdout) for d in f["digits"]]
    assert digit_p == p_values[("--calibration", "digits")]
    result = runner.invoke(app, source + ["--bundle", str(bundle), "--calibration", "camera"])
    assert result.exit_code == 3 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "no camera calibration" in result.stderr
    assert runner.invoke(app, source + ["--calibration", "images"]).exit_code == 2


def test_every_reuses_results_between_screened_frames(guard, small_video):
    _, path = small_video
    seen = []
    summary = cam.run(guard, path, display=False, every=3, on_frame=seen.append)
    assert summary.stopped == "end" and summary.frames == len(seen) == 8
    assert [f.screened for f in seen] == [i % 3 == 0 for i in range(8)]
    assert summary.screened == 3
    for f in seen:
        if not f.screened:
            assert f.digits is seen[f.index - f.index % 3].digits


def test_record_writes_a_readable_video(tmp_path, small_video):
    video, path = small_video
    out = tmp_path / "annotated.mp4"
    result = runner.invoke(app, ["webcam", "--source", str(path), "--no-display", "--record", str(out)])
    assert result.exit_code == 0, result.stderr
    frames = list(cam.read_frames(cam.open_source(out)))
    assert len(frames) == len(video.frames)
    assert frames[0].shape == video.frames[0].shape
    # The overlay is there: verdict colours that the paper never has.
    assert np.abs(frames[0].astype(int) - video.frames[0].astype(int)).max() > 100


def test_record_to_a_missing_folder_fails_cleanly(tmp_path, small_video):
    _, path = small_video
    result = runner.invoke(app, ["webcam", "--source", str(path), "--no-display", "--record",
                                 str(tmp_path / "nowhere" / "out.mp4")])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and "does not exist" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("case", ["missing", "text", "directory", "device", "url"])
def test_bad_sources_fail_with_one_line(tmp_path, case):
    source = {
        "missing": str(tmp_path / "nope.mp4"),
        "text": str(tmp_path / "notes.txt"),  # FFmpeg would render it as ANSI art: refused
        "directory": str(tmp_path),
        "device": "99",
        "url": "rtsp://127.0.0.1:9/none",
    }[case]
    (tmp_path / "notes.txt").write_text("not a video\n" * 50)
    result = runner.invoke(app, ["webcam", "--source", source, "--no-display"])
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "Traceback" not in result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_truncated_video_ends_cleanly(tmp_path, small_video):
    video, path = small_video
    data = path.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: len(data) * 6 // 10])
    result = runner.invoke(app, ["webcam", "--source", str(cut), "--no-display", "--json"])
    assert result.exit_code == 0, result.stderr
    frames = _json_lines(result.stdout)
    assert 0 < len(frames) < len(video.frames)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "ended early" in lines[0] and "Traceback" not in result.stderr


def test_truncated_mp4_without_index_cannot_be_opened(tmp_path, small_video):
    video, _ = small_video
    whole = filming.write_video(tmp_path / "whole.mp4", video.frames)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[:-2000])  # mp4v puts its index (moov) at the end
    result = runner.invoke(app, ["webcam", "--source", str(cut), "--no-display"])
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_corrupt_video_ends_cleanly(tmp_path, small_video):
    _, path = small_video
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(0)
    start = len(data) // 3
    data[start : start + 20000] = rng.integers(0, 256, 20000, dtype=np.uint8).tobytes()
    bad = tmp_path / "corrupt.avi"
    bad.write_bytes(bytes(data))
    result = runner.invoke(app, ["webcam", "--source", str(bad), "--no-display", "--json"])
    assert result.exit_code in (0, 2)
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    _json_lines(result.stdout)  # whatever was screened is well formed


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="display detection by environment is Linux-only")
def test_no_display_means_no_window(monkeypatch, guard, small_video):
    _, path = small_video
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)

    def no_window(*args):
        raise AssertionError("a window was opened")

    monkeypatch.setattr(cv2, "imshow", no_window)
    summary = cam.run(guard, path, max_frames=2)
    assert summary.stopped == "max_frames" and summary.frames == 2
    assert any("no display" in note for note in summary.notes)
    result = runner.invoke(app, ["webcam", "--source", str(path)])
    assert result.exit_code == 0 and "no display" in result.stderr


def test_interrupt_still_releases_the_writer(tmp_path, guard, small_video):
    _, path = small_video
    out = tmp_path / "partial.mp4"

    def stop_at_three(frame):
        if frame.index == 2:
            raise KeyboardInterrupt

    summary = cam.run(guard, path, display=False, record=out, on_frame=stop_at_three)
    assert summary.stopped == "interrupted" and summary.frames == 3
    assert "interrupted" in summary.message
    assert len(list(cam.read_frames(cam.open_source(out)))) == 3  # the file was finalised


# --------------------------------------------------------------------------- hostile frames


@pytest.mark.parametrize("make", [filming.noise_frame, lambda: filming.speckled_frame(500), "rings"],
                         ids=["noise", "speckled", "rings"])
def test_noise_and_hundreds_of_contours_do_not_stall(guard, make, monkeypatch):
    """The work per frame is bounded by counts whatever the frame holds: of hundreds of ink pieces, at most
    MAX_CANDIDATES reach the merging (quadratic in its input), and at most max_digits crops are normalised and
    screened, in one batch. (Counts, not seconds: the speed is benchmarks/webcam_fps.py's.)"""
    if make == "rings":  # 300 digit-sized rings, apart: every one a candidate
        frame = np.full((480, 640, 3), 215, np.uint8)
        for i in range(300):
            cv2.ellipse(frame, (18 + 28 * (i % 22), 20 + 32 * (i // 22)), (6, 12), 0, 0, 360, (30, 30, 30), 2)
    else:
        frame = make()
    work = {"pieces": [], "merged": [], "normalised": [], "screened": []}

    def spy(name, real, count):
        def wrapper(*args, **kwargs):
            out = real(*args, **kwargs)
            work[name].append(count(args, out))
            return out
        return wrapper

    monkeypatch.setattr(regions, "components", spy("pieces", regions.components, lambda a, out: len(out[2])))
    monkeypatch.setattr(regions, "_merge", spy("merged", regions._merge, lambda a, out: len(a[0])))
    monkeypatch.setattr(regions, "preprocess", spy("normalised", regions.preprocess, lambda a, out: 1))
    monkeypatch.setattr(guard, "screen", spy("screened", guard.screen, lambda a, out: len(a[0])))
    for max_digits in (1, 8):
        for counts in work.values():
            counts.clear()
        boxes = cam.find_digit_regions(frame, max_digits)
        results = cam.process_frame(guard, frame, max_digits=max_digits, tracker=cam.Tracker())
        assert len(boxes) <= max_digits and len(results) <= max_digits
        # Measured when written: 865, 336 and 300 pieces; 48 merged; 1, max_digits and max_digits normalised.
        assert len(work["pieces"]) == 2 and min(work["pieces"]) >= 300
        assert work["merged"] == [cam.MAX_CANDIDATES] * 2
        assert len(work["normalised"]) <= max_digits
        assert len(work["screened"]) <= 1 and sum(work["screened"]) <= max_digits
        if make != filming.noise_frame:  # the cap is what stops these frames
            assert sum(work["screened"]) == len(results) == max_digits


# --------------------------------------------------------------------------- regions


def _paper(width=640, height=480) -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.clip(rng.normal(210, 4, (height, width)), 0, 255).astype(np.uint8)


def test_broken_strokes_are_merged_and_neighbours_kept_apart():
    frame = _paper()
    # A "5" whose top bar floats 12 px above its body (more than the closing joins).
    cv2.line(frame, (100, 100), (150, 100), 30, 7)
    cv2.line(frame, (102, 112), (100, 140), 30, 7)
    cv2.ellipse(frame, (120, 160), (24, 22), 0, -100, 160, 30, 7)
    # Two whole digits 40 px apart: a "1" and a "7".
    cv2.line(frame, (300, 100), (300, 180), 30, 7)
    cv2.line(frame, (340, 100), (390, 100), 30, 7)
    cv2.line(frame, (390, 100), (355, 180), 30, 7)
    boxes = cam.find_digit_regions(frame)
    assert len(boxes) == 3
    five, one, seven = boxes
    assert five[1] <= 97 and five[1] + five[3] >= 180  # bar and body in one box
    assert one[0] + one[2] < seven[0]


def test_light_ink_on_a_dark_board(main_video):
    video, _ = main_video
    frame = video.frames[0]
    dark = cam.find_digit_regions(frame)
    light = cam.find_digit_regions(255 - frame, ink="light")
    assert dark and light == dark
    assert cam.find_digit_regions(255 - frame) != dark  # dark-ink search on a board finds other things
    with pytest.raises(ValueError):
        cam.find_digit_regions(frame, ink="blue")


def test_regions_cap_and_validation():
    frame = _paper()
    for i in range(6):
        cv2.circle(frame, (60 + 100 * i, 240), 20 + 3 * i, 30, 6)
    assert len(cam.find_digit_regions(frame, 3)) == 3
    sizes = [w * h for _, _, w, h in cam.find_digit_regions(frame, 3)]
    assert min(sizes) >= (2 * 29) ** 2  # the three largest rings (radius 29, 32, 35) were kept
    with pytest.raises(ValueError):
        cam.find_digit_regions(frame, 0)
    with pytest.raises(TypeError):
        cam.find_digit_regions(frame.astype(np.float32))
    assert cam.find_digit_regions(np.full((480, 640), 200, np.uint8)) == []


# --------------------------------------------------------------------------- tracking and API


def _verdict(label: int, verdict: str = "clean") -> Verdict:
    return Verdict(label=label, confidence=0.9, purified_label=label, n_distinct=1, agreement=1.0,
                   labels=(label,) * 10, scores={}, p_values={}, p_value=0.5, verdict=verdict,
                   reasons=() if verdict == "clean" else ("disagreement",))


def test_tracker_keeps_ids_and_votes_away_flicker():
    tracker = cam.Tracker(window=5)
    sequence = [(3, "clean"), (3, "clean"), (8, "adversarial"), (3, "clean"), (3, "uncertain"), (3, "clean")]
    ids, shown = set(), []
    for step, (label, verdict) in enumerate(sequence):
        box = (100 + 2 * step, 100 - step, 60, 80)  # a digit moving a little
        far = (400, 300, 50, 70)
        out = tracker.update([box, far], [_verdict(label, verdict), _verdict(1)])
        ids.add(out[0][0])
        shown.append(out[0][1:])
        assert out[1][1:] == (1, "clean") and out[1][0] != out[0][0]
    assert len(ids) == 1
    assert shown == [(3, "clean")] * len(sequence)  # the one-frame 8/adversarial never shows
    # A digit that stays flagged takes over once it holds the majority of the window.
    for _ in range(3):
        out = tracker.update([(110, 94, 60, 80)], [_verdict(8, "adversarial")])
    assert out[0][1:] == (8, "adversarial")


def test_tracker_starts_a_new_track_for_a_different_digit_in_the_same_place():
    x, _ = filming.mnist_test()
    one, other = x[0].astype(np.float32) / 255, x[1].astype(np.float32) / 255  # a 7 and a 2
    tracker = cam.Tracker(window=5)
    box = (100, 100, 60, 80)
    first = [tracker.update([box], [_verdict(7)], [one])[0] for _ in range(4)]
    assert {f[0] for f in first} == {first[0][0]}
    moved = tracker.update([(103, 101, 60, 80)], [_verdict(7)], [np.roll(one, 1, axis=1)])[0]
    assert moved[0] == first[0][0]  # the same digit, shifted by a pixel: the same track
    swapped = tracker.update([box], [_verdict(2)], [other])[0]
    assert swapped[0] != first[0][0] and swapped[1] == 2  # not outvoted by the 7's history
    with pytest.raises(ValueError):
        tracker.update([box], [_verdict(2)], [])


def test_tracker_forgets_after_missed_frames():
    tracker = cam.Tracker(max_missed=1)
    first = tracker.update([(10, 10, 50, 50)], [_verdict(2)])[0][0]
    tracker.update([], [])
    tracker.update([], [])
    again = tracker.update([(10, 10, 50, 50)], [_verdict(2)])[0][0]
    assert again != first


def test_process_frame_api(guard, main_video):
    video, _ = main_video
    frame = video.frames[0]
    before = frame.copy()
    results = cam.process_frame(guard, frame)
    assert results and all(r.track_id is None for r in results)
    assert all(r.stable_label == r.screening.label and r.stable_verdict == r.screening.verdict for r in results)
    json.dumps([r.to_dict() for r in results])
    drawn = cam.annotate(frame, results, fps=61.5)
    assert drawn.shape == frame.shape and np.array_equal(frame, before) and not np.array_equal(drawn, frame)
    gray = cam.process_frame(guard, cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY))
    assert [r.box for r in gray] == [r.box for r in results]
    flagged = replace(results[0], stable_verdict="adversarial",
                      screening=replace(results[0].screening, purified_label=(results[0].stable_label + 1) % 10,
                                        verdict="adversarial", reasons=("disagreement",)))
    top, bottom = cam.describe(flagged)
    assert "purified" in top and bottom == "ADV: samples disagree"
    odd = replace(flagged, stable_verdict="out_of_distribution",
                  screening=replace(flagged.screening, verdict="out_of_distribution", reasons=("recon_mse",)))
    assert cam.describe(odd) == ("not a digit", "OOD: unlike any digit")  # no digit shown as the answer
    assert odd.to_dict()["reasons"] == ["recon_mse"]  # JSON keeps the signal names
    big = cv2.resize(frame, (1920, 1440))
    scaled = [replace(r, box=tuple(3 * v for v in r.box)) for r in results]
    for small_frame, res, rows in ((frame, results, 480), (big, scaled, 1440)):
        ink = np.any(cam.annotate(small_frame, res) != small_frame, axis=2)
        label_rows = np.flatnonzero(ink[: max(1, res[0].box[1]), res[0].box[0] : res[0].box[0] + 20].any(1))
        if rows == 480:
            small = label_rows.size
        else:  # the label's text is about three times as tall on a frame three times as tall
            assert label_rows.size >= 2 * small
    with pytest.deprecated_call():  # the old name of `screening`, kept for existing callers
        assert flagged.verdict is flagged.screening


def test_public_names():
    """The names that edgeguard.webcam had as one module, now re-exported by the package."""
    names = {"Box", "DigitResult", "FrameResult", "RunSummary", "SourceError", "RecordError", "Tracker",
             "find_digit_regions", "process_frame", "annotate", "describe", "iou", "open_source", "read_frames",
             "display_available", "run", "default_calibration", "MAX_CANDIDATES", "MIN_HEIGHT", "MAX_HEIGHT",
             "MIN_ASPECT", "MAX_ASPECT", "MAX_FILL", "THRESHOLD_C", "CROP_SIDE", "PAD", "COLOURS", "SHORT"}
    assert names <= set(cam.__all__) and all(hasattr(cam, name) for name in cam.__all__)
    assert issubclass(cam.SourceError, ValueError) and issubclass(cam.RecordError, ValueError)


def test_run_rejects_bad_arguments(guard, small_video):
    _, path = small_video
    with pytest.raises(ValueError):
        cam.run(guard, path, display=False, every=0)
    with pytest.raises(cam.SourceError):
        cam.run(guard, os.fspath(path) + ".missing", display=False)


def test_alpha_sweep_trades_clean_flags_for_detection():
    from argparse import ArgumentTypeError

    from benchmarks.webcam_fps import _alphas, accuracy_videos, alpha_sweep, calibrations

    assert _alphas("0.01, 0.05") == (0.01, 0.05)
    for bad in ("", "0", "1.5", "a,b"):
        with pytest.raises(ArgumentTypeError):
            _alphas(bad)
    assert calibrations() == ("camera", "digits")  # the webcam's default first
    # The sweep reads no trusted-digit video, and in the pair-and-non-digit one the pool only picks the clean
    # digits beside them, which it does not count: any pool will do (finding the trusted one screens 1000 digits).
    with accuracy_videos(scenes=3, seed=0, pool=list(range(1000))) as (films, _):
        rows = alpha_sweep((0.01, 0.3), films, calibrations())
    for calibration in ("camera", "digits"):
        low, high = [row for row in rows if row["calibration"] == calibration]
        assert (low["alpha"], high["alpha"]) == (0.01, 0.3)
        for key in ("clean_flagged", "pairs_flagged", "nondigits_flagged"):  # flagging is monotone in alpha
            assert 0.0 <= low[key] <= high[key] <= 1.0, key
        assert high["nondigits_flagged"] > low["nondigits_flagged"] or low["nondigits_flagged"] == 1.0
