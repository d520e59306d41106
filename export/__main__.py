"""python -m export --run runs/bundle --out edgeguard/models: ONNX export, parity, metrics, manifest, calibrations."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from edgeguard.bundle import shipped_bundle_path


def build_bundle(run_dir: Path, out_dir: Path, data_dir: Path | None = None, *, quick: bool = False,
                 k: int = 10, n_measure: int | None = None) -> dict:
    """Exports a training run into a calibrated bundle (digit and camera calibrations) and returns its manifest."""
    from edgeguard.guard import Guard
    from export import manifest as manifest_io
    from export.calibrate import calibrate
    from export.camera import QUICK_DIGITS, calibrate_camera
    from export.measure import accuracy_metrics, analyze_all
    from export.onnx_export import export_models, parity
    from train.data import load_mnist
    from train.trainer import load_models

    vae, clf, meta = load_models(run_dir)
    data = load_mnist(data_dir)
    out_dir = Path(out_dir)
    export_models(vae, clf, out_dir)
    diffs = parity(vae, clf, out_dir, data.test_x[:256])
    manifest_io.write(out_dir, manifest_io.build_manifest(out_dir, meta, default_k=k))

    n = n_measure or (1000 if quick else len(data.test_x))
    guard = Guard.load(out_dir, providers="cpu", k=k)
    metrics = accuracy_metrics(analyze_all(guard, data.test_x[:n]), data.test_y[:n])
    metrics.update(test_images=n, k=k, seed=guard.seed, measured_with="edgeguard runtime (onnxruntime CPU)",
                   onnx_parity_max_abs=diffs, parity_images=256)
    manifest_io.update(out_dir, metrics=metrics)
    from export.select_signals import Sizes, select

    selection = select(out_dir, data.val_x, data.val_y, sizes=Sizes.quick() if quick else None)
    calibrate(out_dir, data.val_x[:n], data.test_x[:n], k=k, selection=selection)
    m = n_measure or (QUICK_DIGITS if quick else None)
    calibrate_camera(out_dir, (data.val_x[:m], data.val_y[:m]), (data.test_x[:m], data.test_y[:m]), k=k)
    return manifest_io.read(out_dir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export", description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("runs/bundle"), help="training run folder (checkpoints)")
    parser.add_argument("--out", type=Path, default=shipped_bundle_path(), help="bundle folder to write")
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--quick", action="store_true", help="measure on 1,000 images only")
    args = parser.parse_args(argv)
    manifest = build_bundle(args.run, args.out, args.data_dir, quick=args.quick)
    print(json.dumps({"bundle": str(args.out), "metrics": manifest["metrics"],
                      "false_alarm_rate": manifest["calibration"].get("test_false_alarm_rate"),
                      "camera_false_alarm_rate": manifest["camera_calibration"].get("test_false_alarm_rate")},
                     indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
