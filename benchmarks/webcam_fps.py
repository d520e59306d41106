"""Frames per second of the webcam pipeline at 640x480 with 1 to 4 digits per frame, on one core.

Run: python -m benchmarks.webcam_fps [--quick] [--json] [--accuracy] [--screenshot docs/webcam.jpg]

One core: the process is pinned to one CPU, Guard(threads=1), cv2.setNumThreads(1) and
numba.set_num_threads(1). Frames come from export/filming.py (MNIST digits filmed on paper), held in
memory as a camera would deliver them. For each digit count it reports the median time per frame of

- ``pipeline``: ``process_frame`` (find regions, preprocess, one batched screen, track) + ``annotate``,
  the work ``edgeguard webcam`` does per frame; FPS = 1 / median;
- ``cpu_ms``: the process's CPU time for the same work (``time.process_time``): everything runs in one
  thread, so on an idle core it matches the wall clock, and on a busy machine it leaves out the time
  other processes held the core (it still pays for their effect on caches);
- its stages: ``regions`` (threshold, components, merging), ``preprocess`` (crops to MNIST format),
  ``screen`` (``guard.screen`` on the frame's batch: the reference, measured in the same run) and
  ``rest`` (pipeline minus the three);

and, once, ``run()`` end to end on an MJPG video file with 2 to 4 digits (decoding included, no window).
With ``--accuracy`` it also measures, on longer synthetic videos than the tests use, how often clean
digits are found and read correctly and how often superimposed pairs and non-digits are flagged, with the
camera calibration (what ``edgeguard webcam`` uses by default) and, for comparison, the digit calibration.
With ``--alphas 0.01,0.02,0.05`` it repeats the accuracy measurement at each alpha, with both calibrations
(the trade-off between filmed clean digits flagged and pairs / non-digits flagged: the stable verdict of a
tracked item is voted over 5 frames, so its rates differ from the per-image alpha).
With ``--screenshot PATH`` it also saves an annotated frame (two clean digits, a superimposed pair and a
non-digit) as the README's picture.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import cv2
import numba
import numpy as np

from benchmarks import videos
from edgeguard import webcam as cam
from edgeguard.guard import Guard
from edgeguard.normalize import preprocess
from edgeguard.webcam.regions import crop_region, digit_regions, frame_gray
from export import filming


def pin_one_core() -> int | None:
    if not hasattr(os, "sched_setaffinity"):
        return None
    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    return cpu


def scene_frames(count: int, frames: int, seed: int) -> list[np.ndarray]:
    """``frames`` frames of scenes holding exactly ``count`` clean MNIST digits (a new scene every 10 frames)."""
    rng = np.random.default_rng(seed)
    x, y = filming.mnist_test()
    out = []
    while len(out) < frames:
        glyphs = [("digit", int(y[n]), x[n], f"mnist#{n}") for n in rng.integers(len(x), size=count)]
        out += filming.render_scene(glyphs, rng, min(10, frames - len(out)))[0]
    return out


def ms(values: list[float]) -> float:
    return 1000 * statistics.median(values)


def measure(guard: Guard, frames: list[np.ndarray], repeats: int) -> dict:
    stages = {"pipeline": [], "regions": [], "preprocess": [], "screen": []}
    cpu, found = [], []
    for _ in range(repeats):
        tracker = cam.Tracker()
        for frame in frames:
            c0, t0 = time.process_time(), time.perf_counter()
            results = cam.process_frame(guard, frame, tracker=tracker)
            cam.annotate(frame, results, fps=60.0)
            t1, c1 = time.perf_counter(), time.process_time()
            stages["pipeline"].append(t1 - t0)
            cpu.append(c1 - c0)
            found.append(len(results))
            # The same work again, stage by stage (webcam's internals, timed separately).
            t0 = time.perf_counter()
            gray, labels, regions = digit_regions(frame_gray(frame), 8)
            t1 = time.perf_counter()
            images = [preprocess(crop_region(gray, labels, box, members)) for box, members in regions]
            t2 = time.perf_counter()
            if images:
                guard.screen(np.stack(images))
            t3 = time.perf_counter()
            stages["regions"].append(t1 - t0)
            stages["preprocess"].append(t2 - t1)
            stages["screen"].append(t3 - t2)
    row = {name: round(ms(values), 3) for name, values in stages.items()}
    row["rest"] = round(row["pipeline"] - row["regions"] - row["preprocess"] - row["screen"], 3)
    row["fps"] = round(1000 / row["pipeline"], 1)
    row["cpu_ms"] = round(ms(cpu), 3)
    row["fps_cpu"] = round(1000 / row["cpu_ms"], 1) if row["cpu_ms"] > 0 else None
    row["digits_found_mean"] = round(float(np.mean(found)), 2)
    row["frames"] = len(stages["pipeline"])
    return row


def end_to_end(guard: Guard, frames: int, seed: int) -> dict:
    video = filming.make_video(max(1, frames // 10), 10, seed=seed, adversarial_every=0, nondigit_every=0)
    with tempfile.TemporaryDirectory() as folder:
        path = filming.write_video(Path(folder) / "bench.avi", video.frames)
        cam.run(guard, path, display=False, max_frames=5)  # warm the decoder
        c0 = time.process_time()
        summary = cam.run(guard, path, display=False)
        cpu_s = time.process_time() - c0
    return {"frames": summary.frames, "fps": round(summary.fps or 0.0, 1),
            "fps_cpu": round(summary.frames / cpu_s, 1) if cpu_s > 0 else None, "codec": "MJPG .avi"}


ACCURACY_VIDEOS = ("clean_any_digit", "clean_trusted_digit", "pair_and_nondigit_every_scene")


@contextmanager
def accuracy_videos(scenes: int, seed: int) -> Iterator[tuple[dict, int]]:
    """Three synthetic videos of ``scenes`` scenes x 5 frames each, written as MJPG files in a temporary
    folder: clean digits drawn from all MNIST test digits, clean digits drawn from those the bundle reads
    right and calls clean as 28x28 images (with the digit calibration, as in the tests), and scenes that
    each hold a superimposed pair and a non-digit. Yields ({name: (video without its frames, file)}, how
    many of the first 1000 test digits were trusted); ``accuracy`` reads the files back."""
    pool = videos.trusted_digits(Guard.load(threads=1))
    specs = {
        "clean_any_digit": dict(adversarial_every=0, nondigit_every=0),
        "clean_trusted_digit": dict(digit_pool=pool, adversarial_every=0, nondigit_every=0),
        "pair_and_nondigit_every_scene": dict(digit_pool=pool, adversarial_every=1, nondigit_every=1),
    }
    films = {}
    with tempfile.TemporaryDirectory() as folder:
        for n, (name, spec) in enumerate(specs.items()):
            video = filming.make_video(scenes, 5, seed=seed + n, **spec)
            films[name] = (replace(video, frames=[]), filming.write_video(Path(folder) / f"{name}.avi", video.frames))
        yield films, len(pool)


def accuracy(guard: Guard, films: dict, names: tuple[str, ...] = ACCURACY_VIDEOS) -> dict:
    """Read and flag rates on the videos ``names`` of ``accuracy_videos``, each read back from its file
    (compression included) and screened with ``guard``."""
    out = {}
    for name in names:
        video, path = films[name]
        rows, spurious = videos.match(guard, video, list(cam.read_frames(cam.open_source(path))))
        out[name] = {**videos.rates(rows), "spurious_boxes": spurious}
    return out


def calibrations() -> tuple[str, ...]:
    """The calibrations to compare: the webcam's default first (camera, when the bundle has one), then digits."""
    return tuple(dict.fromkeys((cam.default_calibration(), "digits")))


def _alphas(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values or not all(0.0 < v < 1.0 for v in values):
        raise argparse.ArgumentTypeError(f"each alpha must lie strictly between 0 and 1, got {text!r}")
    return values


def alpha_sweep(alphas, films: dict, compared: tuple[str, ...] = ("camera", "digits")) -> list[dict]:
    """``accuracy`` at each alpha with each calibration, reduced to the rates that trade off against each other."""
    rows = []
    for alpha in alphas:
        for calibration in compared:
            acc = accuracy(Guard.load(threads=1, alpha=alpha, calibration=calibration), films,
                           ("clean_any_digit", "pair_and_nondigit_every_scene"))
            clean, mixed = acc["clean_any_digit"]["digit"], acc["pair_and_nondigit_every_scene"]
            rows.append({"alpha": alpha, "calibration": calibration, "clean_flagged": clean["flagged"],
                         "clean_read": clean["read"], "pairs_flagged": mixed["adversarial"]["flagged"],
                         "nondigits_flagged": mixed["nondigit"]["flagged"],
                         "nondigits_by_type": mixed["nondigit"]["flagged_by_type"]})
    return rows


def screenshot(guard: Guard, path: str | os.PathLike, fps: float | None = None, seed: int = 2) -> Path:
    """Film a sheet with two clean digits, a superimposed pair and a non-digit; save the annotated last frame."""
    rng = np.random.default_rng(seed)
    x, y = filming.mnist_test()
    pair, pair_name = filming.superimposed(rng)
    glyphs = [("digit", int(y[3]), x[3], "mnist#3"), ("adversarial", None, pair, pair_name),
              ("digit", int(y[2]), x[2], "mnist#2"), ("nondigit", None, filming.star_glyph(), "star")]
    frames, _ = filming.render_scene(glyphs, rng, 6)
    tracker = cam.Tracker()
    for frame in frames:
        results = cam.process_frame(guard, frame, tracker=tracker)
    path = Path(path)
    if not cv2.imwrite(str(path), cam.annotate(frames[-1], results, fps)):
        raise OSError(f"cannot write {path}")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer frames (a few seconds)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--screenshot", metavar="PATH", help="also save an annotated frame (PNG) here")
    parser.add_argument("--accuracy", action="store_true",
                        help="also measure read and flag rates on synthetic videos (60 scenes; --quick: 15)")
    parser.add_argument("--alphas", type=_alphas, default=(),
                        help="comma-separated alphas: repeat the --accuracy measurement at each (a trade-off table)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    cpu = pin_one_core()
    cv2.setNumThreads(1)
    numba.set_num_threads(1)
    compared = calibrations()
    guard = Guard.load(threads=1, calibration=compared[0])  # what `edgeguard webcam` uses (for the screenshot)
    guard.warmup()
    frames, repeats = (30, 1) if args.quick else (60, 3)
    rows = {}
    for count in (1, 2, 3, 4):
        clip = scene_frames(count, frames, args.seed + count)
        measure(guard, clip[:3], 1)  # warm up
        rows[count] = measure(guard, clip, repeats)
    report = {
        "size": "640x480", "cpu": cpu, "threads": 1, "providers": guard.providers,
        "bundle_clean_accuracy": guard.manifest.get("metrics", {}).get("clean_accuracy"),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "by_digits": rows, "end_to_end_file": end_to_end(guard, frames, args.seed),
    }
    if args.screenshot:
        # Its FPS counter shows the 4-digit rate by CPU time: a busy machine's wall clock would say more
        # about the other processes than about EdgeGuard.
        report["screenshot"] = str(screenshot(guard, args.screenshot, fps=rows[4]["fps_cpu"]))
    if args.accuracy or args.alphas:
        scenes = 15 if args.quick else 60
        with accuracy_videos(scenes, args.seed) as (films, trusted):
            if args.accuracy:
                report["accuracy"] = {"scenes": scenes, "frames_per_scene": 5, "trusted_digits": f"{trusted} of 1000",
                                      **{c: accuracy(Guard.load(threads=1, calibration=c), films) for c in compared}}
            if args.alphas:
                report["alpha_sweep"] = alpha_sweep(args.alphas, films, compared)
    if args.json:
        print(json.dumps(report, indent=1))
        return
    load = ", ".join(f"{v:.2f}" for v in report["load_average"] or ())
    print(f"640x480, one core (cpu {cpu}), median ms per frame (wall clock); load average {load}")
    print(f"{'digits':>6} {'found':>6} {'regions':>8} {'preproc':>8} {'screen':>8} {'rest':>6} {'total':>7} {'FPS':>7}"
          f" {'total/screen':>12} {'CPU ms':>7} {'FPS(CPU)':>8}")
    for count, r in rows.items():
        print(f"{count:>6} {r['digits_found_mean']:>6} {r['regions']:>8.2f} {r['preprocess']:>8.2f} {r['screen']:>8.2f}"
              f" {r['rest']:>6.2f} {r['pipeline']:>7.2f} {r['fps']:>7.1f} {r['pipeline'] / r['screen']:>12.2f}"
              f" {r['cpu_ms']:>7.2f} {r['fps_cpu']:>8.1f}")
    print("(CPU ms: the process's CPU time per frame, which excludes the time other processes held the core; "
          "on an idle core it is close to the wall clock)")
    e2e = report["end_to_end_file"]
    print(f"run() on a {e2e['codec']} file, 2-4 digits, decoding included: {e2e['fps']} FPS "
          f"({e2e['fps_cpu']} by CPU time) over {e2e['frames']} frames")
    if args.screenshot:
        print(f"screenshot: {report['screenshot']}")
    if args.accuracy:
        acc = report["accuracy"]
        print(f"\nread and flag rates per appearance ({acc['scenes']} scenes x 5 frames per video, MJPG, read back; "
              f"seed {args.seed}):")
        for calibration in compared:
            print(f" {calibration} calibration:")
            for name in ACCURACY_VIDEOS:
                for kind, r in acc[calibration][name].items():
                    if kind == "spurious_boxes":
                        continue
                    extra = (f"read {r['read']:.3f} (this frame's label: {r['read_this_frame']:.3f})"
                             if kind == "digit" else f"by type {r['flagged_by_type']}")
                    print(f"  {name:30s} {kind:12s} n={r['appearances']:4d} found {r['found']:.3f} "
                          f"flagged {r['flagged']:.3f} {extra} verdicts {r['verdicts']}")
                print(f"  {name:30s} spurious boxes: {acc[calibration][name]['spurious_boxes']}")
    for row in report.get("alpha_sweep", ()):
        print(f"alpha {row['alpha']}, {row['calibration']} calibration: "
              f"clean digits flagged {row['clean_flagged']:.3f}, read {row['clean_read']:.3f}; "
              f"pairs flagged {row['pairs_flagged']:.3f}; "
              f"non-digits flagged {row['nondigits_flagged']:.3f} {row['nondigits_by_type']}")


if __name__ == "__main__":
    main()
