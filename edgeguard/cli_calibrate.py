"""``edgeguard calibrate``'s body (cli.py holds its options): read the clean images and their labels the way
``detect`` reads its inputs, call ``edgeguard.recalibrate.calibrate_bundle``, print what it did.

Kept apart from cli.py so that each module stays one screen of options or one job; it reuses cli.py's input
expansion, progress bar and one-line errors, so ``calibrate`` reports a bad input exactly as ``detect`` does.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edgeguard import labels as label_files
from edgeguard.contract import SIDE
from edgeguard.errors import EdgeGuardError, InputError
from edgeguard.normalize import load_and_preprocess_batch
from edgeguard.recalibrate import calibrate_bundle, check_out_dir


def run_calibrate(paths: list[str], out_dir: Path, *, bundle: Path | None, alpha: float, labels: Path | None,
                  k: int | None, seed: int, providers: str, kernels: str, force: bool, as_json: bool) -> None:
    """Exit 0 when the bundle was written; 2 (nothing written) when an input or the labels cannot be read, there
    are too few images for ``alpha`` or ``out_dir`` is refused; 3 when the base bundle cannot be loaded."""
    from edgeguard.cli import EXIT_BUNDLE, EXIT_INPUT, NUMBA_MIN_IMAGES, _progress, err, fail, out
    from edgeguard.detect_inputs import expand_inputs

    try:
        check_out_dir(out_dir, bundle, force=force)  # before reading thousands of images
    except ValueError as e:
        raise fail(str(e), EXIT_INPUT) from None
    files, problems = expand_inputs(paths)
    for raw, problem in problems:
        err.print(f"error: {InputError(problem, raw)}", markup=False)
    images, sources = [np.empty((0, SIDE, SIDE), np.float32)], []
    for file in files:
        try:
            batch = load_and_preprocess_batch(file)
        except InputError as e:
            problems.append((file, e.reason))
            err.print(f"error: {e}", markup=False)
            continue
        images.append(batch)
        sources += [file] if len(batch) == 1 else [f"{file}[{i}]" for i in range(len(batch))]
    if problems:
        raise fail(f"calibration refused: {len(problems)} input(s) could not be read; nothing written", EXIT_INPUT)
    try:
        truth = (label_files.labels_from_file(labels, sources) if labels is not None
                 else label_files.labels_from_folders(sources))
    except InputError as e:
        raise fail(str(e), EXIT_INPUT) from None
    if kernels == "auto":
        kernels = "numba" if len(sources) >= NUMBA_MIN_IMAGES else "numpy"
    with _progress(len(sources)) as progress:
        task = progress.add_task("screen", total=len(sources))
        try:
            summary = calibrate_bundle(
                np.concatenate(images), out_dir, base=bundle, labels=truth, alpha=alpha, inputs=paths, k=k, seed=seed,
                providers=providers, kernels=kernels, force=force, on_progress=lambda m: progress.advance(task, m))
        except (TypeError, ValueError) as e:  # CalibrationError and InputError too: exit 2
            raise fail(str(e), EXIT_INPUT) from None
        except EdgeGuardError as e:  # BundleError, ProviderError
            raise fail(str(e), EXIT_BUNDLE) from None
    if as_json:
        out.print(json.dumps(summary.to_dict(), indent=1), markup=False)
        return
    for line in summary.describe():
        out.print(line, markup=False)
