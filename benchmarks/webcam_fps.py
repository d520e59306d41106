"""Frames per second of the webcam pipeline at 640x480 with 1 to 4 digits per frame, on one core.

Run: python -m benchmarks.webcam_fps [--quick] [--accuracy] [--alphas 0.01,0.02,0.05] [--seeds 0,1]
     [--scenes N] [--out reports/webcam.md] [--json] [--screenshot docs/webcam.jpg]

It writes a Markdown report (``benchmarks/webcam_report.py`` renders it) to ``--out``: by default
``reports/webcam.md`` for a full run and no file for ``--quick``; it prints the same Markdown, or with
``--json`` the results as JSON. docs/webcam.md quotes no figure of its own: it links the report.

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
tracked item is voted over the tracker's window of frames, so its rates differ from the per-image alpha).
Each seed of ``--seeds`` repeats all of it on other frames and videos (a full run: seeds 0 and 1), so the
report shows the spread between runs. With ``--screenshot PATH`` it also saves an annotated frame (two
clean digits, a superimposed pair and a non-digit) as the README's picture.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import cv2
import numba
import numpy as np

from benchmarks import videos, webcam_report
from edgeguard import webcam as cam
from edgeguard.guard import Guard
from edgeguard.normalize import preprocess
from edgeguard.regions import crop_region, digit_regions, frame_gray
from export import filming

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "reports" / "webcam.md"
FULL_SEEDS = (0, 1)  # a full run films everything twice, so the report shows the spread between runs
FRAMES_PER_SCENE = 5  # of the accuracy videos
TRUSTED_OF = 1000  # the trusted digits are chosen among the first this many MNIST test digits
MATCH_IOU = 0.5  # a found box counts for a filmed item when they overlap this much (benchmarks.videos.match)


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
def accuracy_videos(scenes: int, seed: int, pool: list[int] | None = None) -> Iterator[tuple[dict, int]]:
    """Three synthetic videos of ``scenes`` scenes x 5 frames each, written as MJPG files in a temporary
    folder: clean digits drawn from all MNIST test digits, clean digits drawn from those the bundle reads
    right and calls clean as 28x28 images (with the digit calibration, as in the tests), and scenes that
    each hold a superimposed pair and a non-digit. Yields ({name: (video without its frames, file)}, how
    many of the first 1000 test digits were trusted); ``accuracy`` reads the files back. ``pool``: the
    trusted digits when already known (``videos.trusted_digits``; they do not depend on the seed)."""
    pool = videos.trusted_digits(Guard.load(threads=1)) if pool is None else pool
    specs = {
        "clean_any_digit": dict(adversarial_every=0, nondigit_every=0),
        "clean_trusted_digit": dict(digit_pool=pool, adversarial_every=0, nondigit_every=0),
        "pair_and_nondigit_every_scene": dict(digit_pool=pool, adversarial_every=1, nondigit_every=1),
    }
    films = {}
    with tempfile.TemporaryDirectory() as folder:
        for n, (name, spec) in enumerate(specs.items()):
            video = filming.make_video(scenes, FRAMES_PER_SCENE, seed=seed + n, **spec)
            films[name] = (replace(video, frames=[]), filming.write_video(Path(folder) / f"{name}.avi", video.frames))
        yield films, len(pool)


def accuracy(guard: Guard, films: dict, names: tuple[str, ...] = ACCURACY_VIDEOS) -> dict:
    """Read and flag rates on the videos ``names`` of ``accuracy_videos``, each read back from its file
    (compression included) and screened with ``guard``."""
    out = {}
    for name in names:
        video, path = films[name]
        rows, spurious = videos.match(guard, video, list(cam.read_frames(cam.open_source(path))), match_iou=MATCH_IOU)
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


def alpha_sweep(alphas, films: dict, compared: tuple[str, ...] = ("camera", "digits"),
                known: dict | None = None) -> list[dict]:
    """``accuracy`` at each alpha with each calibration, reduced to the rates that trade off against each other.
    ``known``: {(alpha, calibration): accuracy on these films} already measured (reused, not measured again)."""
    rows = []
    for alpha in alphas:
        for calibration in compared:
            acc = (known or {}).get((alpha, calibration)) or accuracy(
                Guard.load(threads=1, alpha=alpha, calibration=calibration), films,
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


def _seeds(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 0 or len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"expected distinct non-negative seeds, got {text!r}")
    return values


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def machine_info(cpu: int | None) -> dict:
    """The CPU, the core the run was pinned to, the OS and the versions that the timings depend on."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
                break
    except OSError:
        pass
    versions = {"python": platform.python_version(), "numpy": np.__version__, "opencv": cv2.__version__,
                "numba": numba.__version__, "onnxruntime": _version("onnxruntime"), "edgeguard": _version("edgeguard")}
    return {"cpu": model, "logical_cpus": os.cpu_count(), "pinned_cpu": cpu, "os": platform.platform(),
            "versions": versions, "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}


def bundle_info(guard: Guard) -> dict:
    """Which bundle was measured, and the camera calibration's own figures as its manifest states them."""
    manifest, path = guard.manifest, Path(guard.bundle.path).resolve()
    try:
        shown = str(path.relative_to(ROOT))
    except ValueError:
        shown = str(path)
    camera = guard.bundle.camera_calibration or {}
    return {"path": shown, "name": manifest.get("name"), "created": manifest.get("created"),
            "manifest_sha256": guard.bundle.manifest_sha256,
            "clean_accuracy": manifest.get("metrics", {}).get("clean_accuracy"),
            "camera_calibration": {key: camera[key] for key in ("n", "found", "test_images", "test_found",
                                                                 "test_false_alarm_rate") if key in camera}}


def measure_seed(guard: Guard, seed: int, *, frames: int, repeats: int, accuracy_scenes: int | None,
                 alphas: Sequence[float], compared: tuple[str, ...], pool: list[int] | None) -> dict:
    """Everything one seed measures: the speed per digit count, ``run()`` on a file, and (``accuracy_scenes``
    set) the read / flag rates per calibration at ``guard.alpha`` and the alpha sweep."""
    rows = {}
    for count in (1, 2, 3, 4):
        clip = scene_frames(count, frames, seed + count)
        measure(guard, clip[:3], 1)  # warm up
        rows[count] = measure(guard, clip, repeats)
    out = {"seed": seed, "by_digits": rows, "end_to_end_file": end_to_end(guard, frames, seed)}
    if accuracy_scenes:
        with accuracy_videos(accuracy_scenes, seed, pool) as (films, trusted):
            measured = {c: accuracy(Guard.load(threads=1, alpha=guard.alpha, calibration=c), films) for c in compared}
            out["accuracy"] = {"scenes": accuracy_scenes, "frames_per_scene": FRAMES_PER_SCENE,
                               "trusted_digits": trusted, "trusted_of": TRUSTED_OF, "alpha": guard.alpha, **measured}
            if alphas:
                out["alpha_sweep"] = alpha_sweep(alphas, films, compared,
                                                 known={(guard.alpha, c): a for c, a in measured.items()})
    return out


def command_line(argv: Sequence[str]) -> str:
    return shlex.join(["python", "-m", "benchmarks.webcam_fps", *argv])


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="fewer frames and scenes, one seed, no report file unless --out (a few seconds)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of the Markdown")
    parser.add_argument("--out", metavar="PATH",
                        help="write the Markdown report here (default: reports/webcam.md, or none with --quick)")
    parser.add_argument("--screenshot", metavar="PATH", help="also save an annotated frame (PNG) here")
    parser.add_argument("--accuracy", action="store_true",
                        help="also measure read and flag rates on synthetic videos (60 scenes; --quick: 15)")
    parser.add_argument("--alphas", type=_alphas, default=(),
                        help="comma-separated alphas: repeat the --accuracy measurement at each (a trade-off table)")
    seeds = parser.add_mutually_exclusive_group()
    seeds.add_argument("--seeds", type=_seeds, default=None,
                       help="comma-separated seeds, each a full repeat on other frames and videos "
                            f"(default: {','.join(map(str, FULL_SEEDS))}; --quick: 0)")
    seeds.add_argument("--seed", type=int, default=None, help="a single seed (same as --seeds N)")
    parser.add_argument("--scenes", type=int, default=None,
                        help="scenes per accuracy video (default 60; --quick: 15)")
    args = parser.parse_args(argv)
    if args.seed is not None:
        args.seeds = _seeds(str(args.seed))
    if args.seeds is None:
        args.seeds = (0,) if args.quick else FULL_SEEDS
    if args.scenes is None:
        args.scenes = 15 if args.quick else 60
    if args.scenes < 1:
        parser.error("--scenes must be at least 1")
    if args.out is None and not args.quick:
        args.out = str(DEFAULT_OUT)
    return args


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    started, t0 = datetime.now(UTC), time.perf_counter()

    cpu = pin_one_core()
    cv2.setNumThreads(1)
    numba.set_num_threads(1)
    machine = machine_info(cpu)
    compared = calibrations()
    guard = Guard.load(threads=1, calibration=compared[0])  # what `edgeguard webcam` uses
    guard.warmup()
    frames, repeats = (30, 1) if args.quick else (60, 3)
    measure_accuracy = args.accuracy or bool(args.alphas)
    pool = videos.trusted_digits(Guard.load(threads=1), TRUSTED_OF) if measure_accuracy else None
    runs = [measure_seed(guard, seed, frames=frames, repeats=repeats,
                         accuracy_scenes=args.scenes if measure_accuracy else None,
                         alphas=args.alphas, compared=compared, pool=pool) for seed in args.seeds]
    report = {
        "command": command_line(argv), "created": started.isoformat(timespec="seconds"),
        "machine": machine, "bundle": bundle_info(guard),
        "settings": {"size": "640x480", "threads": 1, "providers": guard.providers, "quick": args.quick,
                     "frames_per_count": frames, "repeats": repeats, "seeds": list(args.seeds),
                     "calibrations": list(compared), "alpha": guard.alpha, "alphas": list(args.alphas),
                     "accuracy": measure_accuracy, "scenes": args.scenes if measure_accuracy else None,
                     "default_scenes": 15 if args.quick else 60, "frames_per_scene": FRAMES_PER_SCENE,
                     "match_iou": MATCH_IOU, "vote_window": cam.Tracker().window},
        "runs": runs,
    }
    if args.screenshot:
        # Its FPS counter shows the first seed's 4-digit rate by CPU time: a busy machine's wall clock would
        # say more about the other processes than about EdgeGuard.
        fps = runs[0]["by_digits"][4]["fps_cpu"]
        report["screenshot"] = {"path": str(screenshot(guard, args.screenshot, fps=fps)), "fps_counter": fps}
    machine["loadavg_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    report["elapsed_s"] = round(time.perf_counter() - t0, 1)
    markdown = webcam_report.to_markdown(report)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(markdown)
        report["out"] = str(out)
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print(markdown)
        if args.out:
            print(f"(written to {args.out})")


if __name__ == "__main__":
    main()
