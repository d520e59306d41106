"""The webcam among clutter: pages of 8 to 12 digits on a desk, with boxes drawn around answers, ruled lines,
printed text, pen strokes, a hand, shadows, shake and blur, and the page seen inside an application window
(``export/desk.py``), measured against the targets of the webcam's clutter rules (``edgeguard.regions.FRAME``).

Run: python -m benchmarks.webcam_clutter [--quick] [--scenes N] [--seeds 0,1] [--out reports/webcam_clutter.md]
     [--json]

For each case (``page``, ``hand``, ``screen``) and in all, with the camera calibration ``edgeguard webcam`` uses
and a Tracker, as a live run would (``benchmarks.videos.desk_rates``):

- visible digits (trusted MNIST test digits: read right and called clean as 28x28 images, so that what is
  measured is what filming, finding and clutter lose) read right by their stable label, found at all, and the
  share of frames where a visible digit was missed;
- every other box: a non-digit proposal, put down to the clutter it lies in; how many pass as clean, as a share
  of those proposals and per frame; boxes covering more than 10% of the frame that pass as clean (any box);
- the speed on one core (the process pinned to one CPU, one thread everywhere): ``process_frame`` + ``annotate``
  per frame, median over the desk frames with 8 digits or more, as FPS of wall clock and of CPU time.

It writes the Markdown report to ``--out`` (default ``reports/webcam_clutter.md`` for a full run, none for
``--quick``) and prints it, or the results as JSON with ``--json``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numba

from benchmarks import videos
from benchmarks.webcam_fps import bundle_info, machine_info, pin_one_core
from edgeguard import webcam as cam
from edgeguard.guard import Guard
from export import desk

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "reports" / "webcam_clutter.md"
FRAMES_PER_SCENE = 6
TRUSTED_OF = 2000  # trusted digits are chosen among the first this many MNIST test digits
# The targets (alpha 0.01, the camera calibration), as the webcam docs state them.
TARGETS = {"read": (">=", 0.95), "frames_missing_a_digit": ("<=", 0.05), "nondigit_clean": ("<=", 0.01),
           "big_boxes_clean": ("<=", 0), "fps_8_digits": (">=", 30.0)}


def speed(guard: Guard, video, repeats: int = 1, exactly: int | None = None) -> dict:
    """Median time of ``process_frame`` + ``annotate`` per frame over the frames with 8 visible digits or more
    (``exactly``: with that many)."""
    frames = [f for f, items in zip(video.frames, video.items)
              if (n := sum(i.kind == "digit" and desk.visible(i) for i in items)) >= 8 and exactly in (None, n)]
    wall, cpu = [], []
    tracker = cam.Tracker()
    for frame in frames[:3]:  # warm up
        cam.process_frame(guard, frame, tracker=tracker)
    for _ in range(repeats):
        tracker = cam.Tracker()
        for frame in frames:
            c0, t0 = time.process_time(), time.perf_counter()
            cam.annotate(frame, cam.process_frame(guard, frame, tracker=tracker), fps=30.0)
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    if not wall:
        return {"frames": 0, "ms": None, "fps": None, "cpu_ms": None, "fps_cpu": None}
    ms, cpu_ms = 1000 * statistics.median(wall), 1000 * statistics.median(cpu)
    return {"frames": len(wall), "ms": round(ms, 2), "fps": round(1000 / ms, 1), "cpu_ms": round(cpu_ms, 2),
            "fps_cpu": round(1000 / cpu_ms, 1) if cpu_ms > 0 else None}


def combine(parts: Sequence[dict]) -> dict:
    """desk_rates of several videos as one (counts added, shares weighted by what they are shares of)."""
    frames, digits = sum(p["frames"] for p in parts), sum(p["digits"] for p in parts)
    proposals = sum(p["nondigit_proposals"] for p in parts)
    clean = sum(p["nondigit_clean_count"] for p in parts)
    by: dict[str, dict[str, int]] = {}
    for p in parts:
        for kind, v in p["by_clutter"].items():
            entry = by.setdefault(kind, {"proposals": 0, "clean": 0})
            entry["proposals"] += v["proposals"]
            entry["clean"] += v["clean"]

    def weighted(key: str, weight: str) -> float:
        total = sum(p[weight] for p in parts)
        return round(sum(p[key] * p[weight] for p in parts) / total, 4) if total else 0.0

    return {"frames": frames, "digits": digits, "found": weighted("found", "digits"),
            "read": weighted("read", "digits"), "frames_missing_a_digit": weighted("frames_missing_a_digit", "frames"),
            "nondigit_proposals": proposals, "nondigit_clean": round(clean / proposals, 4) if proposals else 0.0,
            "nondigit_clean_count": clean, "nondigit_clean_per_frame": round(clean / frames, 4) if frames else 0.0,
            "by_clutter": dict(sorted(by.items())), "big_boxes_clean": sum(p["big_boxes_clean"] for p in parts),
            "digit_boxes_off": sum(p["digit_boxes_off"] for p in parts),
            "digit_boxes_off_clean_wrong": sum(p["digit_boxes_off_clean_wrong"] for p in parts)}


def measure_seed(guard: Guard, seed: int, scenes: int, pool: list[int]) -> dict:
    cases, films = {}, []
    for number, case in enumerate(desk.CASES):
        video = desk.desk_video(scenes, FRAMES_PER_SCENE, seed=seed * 10 + number, pool=pool, cases=(case,))
        cases[case] = videos.desk_rates(guard, video)
        films.append(video)
    everything = combine(list(cases.values()))
    return {"seed": seed, "cases": cases, "all": everything, "speed": speed(guard, films[0]),
            "speed_8": speed(guard, films[0], exactly=8)}


def verdicts(result: dict) -> dict[str, bool]:
    """Each target: met or not, on the seeds' results pooled."""
    got = {"read": result["all"]["read"], "frames_missing_a_digit": result["all"]["frames_missing_a_digit"],
           "nondigit_clean": result["all"]["nondigit_clean"], "big_boxes_clean": result["all"]["big_boxes_clean"],
           "fps_8_digits": result["speed_8"]["fps_cpu"] or 0.0}
    return {k: (got[k] >= v if op == ">=" else got[k] <= v) for k, (op, v) in TARGETS.items()}


def render(report: dict) -> str:
    lines = ["# The webcam among clutter", "",
             f"Written by `{report['command']}` on {report['date']}. Synthetic desk scenes (`export/desk.py`), not a "
             "real camera; the camera calibration at alpha 0.01, a Tracker as in a live run, up to 16 digits per "
             "frame.", "",
             f"Machine: {report['machine']['cpu']}, pinned to CPU {report['machine']['pinned_cpu']} "
             f"(load average {report['machine']['loadavg']}); bundle `{report['bundle']['path']}` "
             f"(manifest {str(report['bundle']['manifest_sha256'])[:12]}).", "",
             "| seed | case | frames | digits | read right | found | frames missing a digit | digit boxes off "
             "(clean, wrong label) | non-digit boxes | passed as clean | big boxes clean |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for run in report["seeds"]:
        for case, r in [*run["cases"].items(), ("all", run["all"])]:
            lines.append(f"| {run['seed']} | {case} | {r['frames']} | {r['digits']} | {r['read']:.2%} | "
                         f"{r['found']:.2%} | {r['frames_missing_a_digit']:.2%} | {r['digit_boxes_off']} "
                         f"({r['digit_boxes_off_clean_wrong']}) | {r['nondigit_proposals']} | "
                         f"{r['nondigit_clean_count']} ({r['nondigit_clean']:.1%}) | {r['big_boxes_clean']} |")
    lines += ["", "A digit box off: a box holding half of a digit, or half inside one, that does not match it "
              "(IoU under 0.5): a piece of the digit, or the digit with other ink; in brackets those passed as "
              "clean with a wrong label (misreads, not non-digits). Non-digit boxes are all other boxes, by the "
              "smallest clutter item holding half of them (all seeds; `other`: none):",
              "", "| clutter | boxes | passed as clean |", "| --- | --- | --- |"]
    for kind, v in report["pooled"]["all"]["by_clutter"].items():
        lines.append(f"| {kind} | {v['proposals']} | {v['clean']} |")
    lines += ["", "Speed on one core (`process_frame` + `annotate`, median per frame of the page case):", "",
              "| seed | digits in view | frames | ms (wall) | FPS (wall) | ms (CPU) | FPS (CPU) |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for run in report["seeds"]:
        for key, what in (("speed_8", "8"), ("speed", "8 to 12")):
            s = run[key]
            lines.append(f"| {run['seed']} | {what} | {s['frames']} | {s['ms']} | {s['fps']} | {s['cpu_ms']} | "
                         f"{s['fps_cpu']} |")
    pooled = report["pooled"]
    lines += ["", "## Targets (all seeds pooled)", "", "| target | measured | met |", "| --- | --- | --- |"]
    shown = {"read": f"{pooled['all']['read']:.2%}", "frames_missing_a_digit":
             f"{pooled['all']['frames_missing_a_digit']:.2%}",
             "nondigit_clean": f"{pooled['all']['nondigit_clean']:.2%} ({pooled['all']['nondigit_clean_count']} of "
                               f"{pooled['all']['nondigit_proposals']}; "
                               f"{pooled['all']['nondigit_clean_per_frame']:.3f} per frame)",
             "big_boxes_clean": str(pooled["all"]["big_boxes_clean"]),
             "fps_8_digits": f"{pooled['speed_8']['fps_cpu']} (CPU time; {pooled['speed_8']['fps']} wall; "
                             f"{pooled['speed']['fps_cpu']} with 8 to 12)"}
    names = {"read": "digits read right >= 95%", "frames_missing_a_digit": "frames missing a visible digit <= 5%",
             "nondigit_clean": "non-digit boxes passed as clean <= 1%",
             "big_boxes_clean": "boxes over 10% of the frame passed as clean: none",
             "fps_8_digits": ">= 30 FPS with 8 digits in view, one core"}
    for key, met in report["met"].items():
        lines.append(f"| {names[key]} | {shown[key]} | {'yes' if met else 'no'} |")
    return "\n".join(lines) + "\n"


def _median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return round(statistics.median(known), 1) if known else None


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.webcam_clutter", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 scenes per case, one seed, no report file")
    parser.add_argument("--scenes", type=int, default=None, help="scenes per case and seed (default 10; quick 2)")
    parser.add_argument("--seeds", default=None, help="comma-separated seeds (default 0,1; quick 0)")
    parser.add_argument("--out", metavar="PATH", default=None, help="the Markdown report (default for a full run: "
                                                                    "reports/webcam_clutter.md)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of the Markdown")
    args = parser.parse_args(argv)
    try:
        args.seeds = tuple(int(s) for s in (args.seeds or ("0" if args.quick else "0,1")).split(","))
    except ValueError:
        parser.error(f"--seeds must be comma-separated integers, got {args.seeds!r}")
    args.scenes = args.scenes or (2 if args.quick else 10)
    if args.scenes < 1:
        parser.error("--scenes must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    cpu = pin_one_core()
    cv2.setNumThreads(1)
    numba.set_num_threads(1)
    guard = Guard.load(threads=1, calibration=cam.default_calibration())
    pool = videos.trusted_digits(guard, TRUSTED_OF)
    runs = [measure_seed(guard, seed, args.scenes, pool) for seed in args.seeds]
    pooled = {"all": combine([r["all"] for r in runs]),
              **{key: {name: _median([r[key][name] for r in runs]) for name in ("fps", "fps_cpu")}
                 for key in ("speed", "speed_8")}}
    report = {"command": shlex.join(["python", "-m", "benchmarks.webcam_clutter", *(argv or sys.argv[1:])]),
              "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "machine": machine_info(cpu),
              "bundle": bundle_info(guard), "scenes_per_case": args.scenes, "frames_per_scene": FRAMES_PER_SCENE,
              "trusted_digits": len(pool), "seeds": runs, "pooled": pooled}
    report["met"] = verdicts(pooled)
    text = render(report)
    out = Path(args.out) if args.out else (None if args.quick else DEFAULT_OUT)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
    print(json.dumps(report, indent=1, default=str) if args.json else text)


if __name__ == "__main__":
    main()
