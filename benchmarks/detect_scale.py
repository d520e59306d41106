"""``edgeguard detect --json`` at scale: peak memory, first line and throughput, for a ``.npy`` batch and for a folder
of PNG files, at N and N/10 images, against ``Guard.screen`` on the same arrays in one process.

    python -m benchmarks.detect_scale [--images 100000] [--kinds npy png] [--keep DIR]

prints JSON. Each run is ``python -m edgeguard detect PATH --json`` as a process, its stdout read line by line:
``first_line_s`` is the time from its start to the first JSON line, ``peak_rss_mb`` its peak resident memory
(VmHWM, read by the process as it exits), ``images_per_s`` the rate its summary line states (screening, without
the start and model load) and ``wall_images_per_s`` the images over its whole run. The reference screens the same
images with ``Guard.screen`` in chunks of ``edgeguard.cli.BATCH`` (numba kernels, as ``detect`` uses from 1,024
inputs on), just before and just after the runs of each kind (their mean). The images are MNIST training images,
repeated where more are asked for than there are.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from edgeguard import Guard
from edgeguard.cli import BATCH

TARGETS = {"rss_growth": 0.10, "first_line_s": 1.0, "throughput_ratio": 0.80}


def images(count: int) -> np.ndarray:
    from train.data import load_mnist

    train = load_mnist(download=False).train_x
    return np.resize(train, (count, 28, 28))  # repeats the training images where count is larger


def write_inputs(x: np.ndarray, folder: Path, kind: str) -> Path:
    if kind == "npy":
        path = folder / f"batch_{len(x)}.npy"
        np.save(path, x)
        return path
    path = folder / f"png_{len(x)}"
    path.mkdir()
    for i, image in enumerate(x):
        cv2.imwrite(str(path / f"{i:06d}.png"), image)
    return path


#: ``edgeguard`` with its own peak resident memory (VmHWM, of this process image alone) on stderr at exit. The
#: rusage of a child spawned from this process would count this process's memory too: Linux folds the memory
#: the child had before exec (this process's pages, shared after fork) into its ru_maxrss.
_PEAK_AT_EXIT = """\
import atexit, sys
atexit.register(lambda: sys.stderr.write([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0]))
sys.argv[0] = 'edgeguard'
from edgeguard.cli import main
main()
"""


def run_detect(path: Path) -> dict[str, float]:
    """One ``edgeguard detect PATH --json`` process: first line, lines, peak RSS, rates."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", _PEAK_AT_EXIT, "detect", str(path), "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stderr is not None
    first = None
    lines = 0
    for _ in proc.stdout:
        if first is None:
            first = time.perf_counter() - start
        lines += 1
    stderr = proc.stderr.read()
    status = proc.wait()
    wall = time.perf_counter() - start
    peak = re.search(r"^VmHWM:\s+(\d+) kB", stderr, re.MULTILINE)
    if status != 0 or peak is None:
        raise RuntimeError(f"edgeguard detect {path} failed: {stderr.strip()}")
    rate = re.search(r"\(([\d,]+) images/s\)", stderr)
    return {"lines": lines, "first_line_s": round(first or float("nan"), 3), "wall_s": round(wall, 2),
            "peak_rss_mb": round(int(peak.group(1)) / 1024, 1),
            "images_per_s": float(rate.group(1).replace(",", "")) if rate else float("nan"),
            "wall_images_per_s": round(lines / wall, 1)}


def reference_rate(x: np.ndarray) -> float:
    """Images/s of ``Guard.screen`` on ``x`` in chunks of BATCH, in this process (after a warm-up)."""
    guard = Guard.load(providers="cpu", kernels="numba")
    guard.screen(x[:BATCH])
    start = time.perf_counter()
    for i in range(0, len(x), BATCH):
        guard.screen(x[i : i + BATCH])
    return len(x) / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=100_000, help="the larger run (the smaller: a tenth)")
    parser.add_argument("--kinds", nargs="+", default=["npy", "png"], choices=["npy", "png"])
    parser.add_argument("--keep", type=Path, help="write the inputs here (default: a temporary folder)")
    parser.add_argument("--reference-images", type=int, default=20_000,
                        help="images the Guard.screen reference screens (its rate does not depend on the count)")
    args = parser.parse_args(argv)
    x = images(args.images)
    report: dict[str, object] = {"images": args.images, "targets": TARGETS}
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        for kind in args.kinds:
            small_path, large_path = (write_inputs(x[: args.images // 10], folder, kind),
                                      write_inputs(x, folder, kind))
            sample = x[: args.reference_images]
            before = reference_rate(sample)  # measured just before and after the runs, on a machine that may be busy
            small, large = run_detect(small_path), run_detect(large_path)
            reference = (before + reference_rate(sample)) / 2
            report[kind] = {
                "small": small, "large": large, "guard_screen_images_per_s": round(reference, 1),
                "rss_growth": round(large["peak_rss_mb"] / small["peak_rss_mb"] - 1, 3),
                "throughput_ratio": round(large["images_per_s"] / reference, 3),
            }
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
