"""python -m export.calibrate [--bundle edgeguard/models] [--only digits|camera]: calibrate on the held-out split.

Digits (``calibration`` in the manifest): screens the 5,000 held-out calibration images (the last 5,000
MNIST training images, never trained on) through the runtime and stores each signal's sorted clean
scores in the manifest. Then measures, on the MNIST test set, the clean false-alarm rate at a few alphas
(measured only, never tuned on).

Camera (``camera_calibration``, for ``edgeguard webcam``; export/camera.py): the same held-out digits
filmed on paper and found in the frames, with the digit calibration's signals and combination; measured
on the filmed MNIST test digits. It needs the digit calibration, so it comes second.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from edgeguard.bundle import shipped_bundle_path
from edgeguard.calibration import COMBINATIONS, Calibration
from edgeguard.guard import Guard
from export import manifest as manifest_io
from export.camera import QUICK_DIGITS, calibrate_camera
from export.measure import analyze_all, false_alarm_rates
from train.data import load_mnist

# What export/select_signals.py chooses on held-out data (python -m export.calibrate --select records the
# choice and every candidate's figures in the manifest's calibration.selection); used without --select.
DEFAULT_SIGNALS = ("input_mismatch", "recon_mse", "posterior_spread", "low_confidence")
DEFAULT_COMBINATION = "fisher"


def calibrate(bundle_dir: Path, val_x: np.ndarray, test_x: np.ndarray | None = None,
              signals: tuple[str, ...] = DEFAULT_SIGNALS, k: int | None = None,
              combination: str = DEFAULT_COMBINATION, selection: dict | None = None) -> dict:
    """Fits the calibration on val_x, writes it into the manifest and returns the manifest's calibration summary.

    ``selection``: the result of ``export.select_signals.select`` on held-out data; its chosen signals and
    combination replace ``signals`` and ``combination``, and it is recorded in the manifest entry."""
    if selection is not None:
        signals, combination = tuple(selection["signals"]), selection["combination"]
    guard = Guard.load(bundle_dir, providers="cpu", k=k)
    calibration = Calibration.fit(analyze_all(guard, val_x).signals, signals, combination)
    entry = calibration.to_manifest()
    entry.update(k=guard.k, seed=guard.seed, n=int(len(val_x)), split="MNIST training images 55000-59999")
    if selection is not None:
        entry["selection"] = selection
    if test_x is not None:
        test_signals = analyze_all(guard, test_x).signals
        _, p = calibration.p_values(test_signals)
        entry["test_false_alarm_rate"] = false_alarm_rates(p)
        entry["test_images"] = int(len(test_x))
    kinds = {"kind_rule": selection["kinds"]["rule"]} if selection is not None and "kinds" in selection else {}
    manifest_io.update(bundle_dir, calibration=entry, **kinds)
    return {k: v for k, v in entry.items() if k not in ("scores", "combined")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.calibrate", description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=shipped_bundle_path())
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--signals", default=",".join(DEFAULT_SIGNALS), help="comma-separated signal names")
    parser.add_argument("--combination", default=DEFAULT_COMBINATION, choices=sorted(COMBINATIONS),
                        help="how the per-signal p-values are combined")
    parser.add_argument("--only", choices=("digits", "camera"), default=None,
                        help="recompute only this calibration (default: both, digits first)")
    parser.add_argument("--select", action="store_true",
                        help="choose the signals and combination on held-out data first (export/select_signals.py) "
                             "and record the choice in the manifest")
    parser.add_argument("--quick", action="store_true",
                        help=f"1,000 images of each split (camera: {QUICK_DIGITS} filmed digits of each)")
    args = parser.parse_args(argv)
    data = load_mnist(args.data_dir)
    summary = {}
    if args.only != "camera":
        n = 1000 if args.quick else None
        selection = None
        if args.select:
            from export.select_signals import Sizes, select

            selection = select(args.bundle, data.val_x, data.val_y, sizes=Sizes.quick() if args.quick else None)
        summary["calibration"] = calibrate(args.bundle, data.val_x[:n], data.test_x[:n],
                                           tuple(args.signals.split(",")), combination=args.combination,
                                           selection=selection)
    if args.only != "digits":
        n = QUICK_DIGITS if args.quick else None
        summary["camera_calibration"] = calibrate_camera(args.bundle, (data.val_x[:n], data.val_y[:n]),
                                                         (data.test_x[:n], data.test_y[:n]))
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
