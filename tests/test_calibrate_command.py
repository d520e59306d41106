"""`edgeguard calibrate` and edgeguard.recalibrate: calibrate on your own clean digits, write a new bundle.

USPS (another set of writers and another scanner) is used only as the command is meant to be used: fitted on one
random half, measured on the other half; nothing is trained or tuned on it.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from edgeguard import Guard, preprocess
from edgeguard.bundle import load_bundle, sha256_bytes, shipped_bundle_path
from edgeguard.cli import app
from edgeguard.errors import CalibrationError, InputError
from edgeguard.labels import labels_from_file
from edgeguard.normalize import load_and_preprocess_batch
from edgeguard.recalibrate import calibrate_bundle, check_out_dir, min_images

runner = CliRunner()


def run(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output
    return result


def errors(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


@pytest.fixture
def batch(tmp_path, mnist) -> Path:
    """100 held-out MNIST digits as one .npy batch (N, 28, 28): enough for alpha 0.05 (80), not for 0.01 (400)."""
    path = tmp_path / "clean.npy"
    np.save(path, mnist.val_x[:100])
    return path


@pytest.fixture
def labelled_folders(tmp_path, mnist) -> Path:
    """80 held-out MNIST digits as PNG files, 8 per digit, in folders named 0 to 9."""
    root = tmp_path / "digits"
    for digit in range(10):
        (root / str(digit)).mkdir(parents=True)
        for i in np.flatnonzero(mnist.val_y == digit)[:8]:
            cv2.imwrite(str(root / str(digit) / f"{i}.png"), mnist.val_x[i])
    return root


def leftovers(parent: Path) -> list[str]:
    """Temporary folders a failed calibration might have left beside --out."""
    return [p.name for p in parent.iterdir() if p.name.startswith(".") and ("partial" in p.name or "old" in p.name)]


def test_min_images_rule():
    assert (min_images(0.01), min_images(0.05), min_images(0.001), min_images(0.1)) == (400, 80, 4000, 40)
    with pytest.raises(ValueError):
        min_images(0)


def test_npy_batch_happy_path(batch, tmp_path, mnist):
    out = tmp_path / "mine"
    result = run("calibrate", batch, "--out", out, "--alpha", "0.05", "--providers", "cpu", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    shipped = load_bundle()
    assert summary["n"] == 100 and summary["min_images"] == 80 and summary["labelled"] is None
    assert summary["signals"] == list(shipped.info.calibration.signals)
    assert summary["combination"] == shipped.info.calibration.combination
    assert summary["base_manifest_sha256"] == shipped.manifest_sha256

    # The new bundle verifies, holds the same model bytes, and its manifest is pinned by the printed digest.
    bundle = load_bundle(out, manifest_sha256=summary["manifest_sha256"])
    assert bundle.models == shipped.models
    entry = bundle.manifest["calibration"]
    assert entry["n"] == 100 and entry["k"] == shipped.default_k and entry["seed"] == 0
    provenance = entry["provenance"]
    assert provenance["fitted_on"] == "user images" and provenance["inputs"] == [str(batch)]
    assert provenance["base_manifest_sha256"] == shipped.manifest_sha256 and provenance["created"].endswith("+00:00")
    assert "base bundle" in bundle.manifest["metrics"]["note"]
    assert "filmed" in bundle.manifest["camera_calibration"]["note"]  # kept, and said to be the base's

    # Guard.load(DIR) and `detect --bundle DIR` use it.
    guard = Guard.load(out, providers="cpu", kernels="numpy")
    assert guard.calibration.n == 100
    verdicts = guard.screen(mnist.test_x[:16])
    assert sum(v.verdict == "clean" for v in verdicts) >= 12
    png = tmp_path / "one.png"
    cv2.imwrite(str(png), mnist.test_x[0])
    detected = run("detect", png, "--bundle", out, "--json", "--providers", "cpu")
    assert detected.exit_code == 0 and json.loads(detected.stdout)["label"] == mnist.test_y[0]


def test_files_with_folder_labels_and_table(labelled_folders, tmp_path):
    out = tmp_path / "mine"
    result = run("calibrate", labelled_folders, "--out", out, "--alpha", "0.05", "--providers", "cpu")
    assert result.exit_code == 0, result.output
    assert "calibrated on 80 clean images" in result.stdout and "clean but wrong" in result.stdout
    assert "on the calibration images themselves" in result.stdout
    labelled = load_bundle(out).manifest["calibration"]["in_sample"]["labels"]
    assert labelled["accuracy"] >= 0.95 and 0 <= labelled["clean_but_wrong_rate"] <= 0.05
    assert labelled["measured_on"].startswith("the calibration images themselves")


def test_labels_file_as_csv_and_in_order(labelled_folders, batch, tmp_path, mnist):
    files = sorted(labelled_folders.rglob("*.png"))
    csv = tmp_path / "labels.csv"
    csv.write_text("path,label\n" + "".join(f"{f},{f.parent.name}\n" for f in files))
    assert labels_from_file(csv, [str(f) for f in files]).tolist() == [int(f.parent.name) for f in files]
    bare = tmp_path / "labels.txt"
    bare.write_text("\n".join(map(str, mnist.val_y[:100])) + "\n")
    result = run("calibrate", batch, "--out", tmp_path / "mine", "--alpha", "0.05", "--labels", bare,
                 "--providers", "cpu", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["labelled"]["accuracy"] >= 0.95

    bare.write_text("1\n2\n")
    result = run("calibrate", batch, "--out", tmp_path / "other", "--alpha", "0.05", "--labels", bare)
    assert result.exit_code == 2 and errors(result) == [f"error: {bare}: 2 labels for 100 images; give one label "
                                                       "per image, in order"]
    assert not (tmp_path / "other").exists()


def test_too_few_images_are_refused_with_the_number_needed(batch, tmp_path):
    out = tmp_path / "mine"
    result = run("calibrate", batch, "--out", out)  # alpha 0.01 by default
    assert result.exit_code == 2
    (line,) = errors(result)
    assert line.startswith("error: need at least 400 clean images to calibrate for alpha 0.01 (got 100)")
    assert not out.exists() and not leftovers(tmp_path)


def test_unreadable_input_refuses_and_writes_nothing(labelled_folders, tmp_path):
    (labelled_folders / "3" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    out = tmp_path / "mine"
    result = run("calibrate", labelled_folders, tmp_path / "missing.png", "--out", out, "--alpha", "0.05")
    assert result.exit_code == 2
    lines = errors(result)
    assert len(lines) == 3 and all(line.startswith("error: ") for line in lines)
    assert "broken.png" in lines[0] and "missing.png: file not found" in lines[1]
    assert lines[2] == "error: calibration refused: 2 input(s) could not be read; nothing written"
    assert not out.exists() and not leftovers(tmp_path)


def test_out_is_refused_when_it_would_overwrite(batch, tmp_path):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    for extra in ([], ["--force"]):  # a non-empty folder that holds no bundle is never replaced
        result = run("calibrate", batch, "--out", taken, "--alpha", "0.05", *extra)
        assert result.exit_code == 2 and "not empty" in errors(result)[0]
    assert [p.name for p in taken.iterdir()] == ["notes.txt"]
    result = run("calibrate", batch, "--out", shipped_bundle_path(), "--alpha", "0.05", "--force")
    assert result.exit_code == 2 and "the base bundle" in errors(result)[0]
    with pytest.raises(CalibrationError, match="base bundle"):
        check_out_dir(tmp_path / "b", tmp_path / "b" / "inner")

    out = tmp_path / "mine"
    assert run("calibrate", batch, "--out", out, "--alpha", "0.05", "--providers", "cpu").exit_code == 0
    first = (out / "manifest.json").read_bytes()
    result = run("calibrate", batch, "--out", out, "--alpha", "0.05")
    assert result.exit_code == 2 and "--force" in errors(result)[0]
    result = run("calibrate", batch, "--out", out, "--alpha", "0.05", "--seed", "1", "--force", "--providers", "cpu")
    assert result.exit_code == 0, result.output
    assert (out / "manifest.json").read_bytes() != first and not leftovers(tmp_path)
    assert load_bundle(out).manifest["calibration"]["seed"] == 1


def test_python_api(tmp_path, mnist):
    images, labels = mnist.val_x[:120], mnist.val_y[:120]
    summary = calibrate_bundle(images, tmp_path / "api", alpha=0.05, labels=labels, providers="cpu")
    assert summary.n == 120 and summary.labelled is not None and summary.labelled["accuracy"] >= 0.95
    raw = (tmp_path / "api" / "manifest.json").read_bytes()
    assert sha256_bytes(raw) == summary.manifest_sha256
    assert json.loads(raw)["calibration"]["provenance"]["inputs"] == ["an array of 120 images"]
    assert Guard.load(tmp_path / "api", kernels="numpy").calibration.n == 120
    with pytest.raises(CalibrationError, match="need at least 400 clean images .* \\(got 120\\)"):
        calibrate_bundle(images, tmp_path / "api2", alpha=0.01)
    with pytest.raises(CalibrationError, match="labels"):
        calibrate_bundle(images, tmp_path / "api2", alpha=0.05, labels=labels[:5])
    assert not (tmp_path / "api2").exists()


def test_npy_batches_load_through_the_shared_path(tmp_path, mnist):
    path = tmp_path / "small.npy"
    np.save(path, np.zeros((3, 16, 16), np.uint8) + np.eye(16, dtype=np.uint8)[None] * 255)
    assert load_and_preprocess_batch(path).shape == (3, 28, 28)
    single = tmp_path / "one.npy"
    np.save(single, mnist.test_x[0])
    np.testing.assert_array_equal(load_and_preprocess_batch(single)[0], mnist.test_x[0] / np.float32(255))
    blank = np.stack([mnist.test_x[0], np.zeros((28, 28), np.uint8)])
    np.save(path, blank)
    with pytest.raises(InputError, match=r"small\.npy\[1\]: no digit found"):
        load_and_preprocess_batch(path)


# --------------------------------------------------------------------------- USPS: the target


@pytest.fixture(scope="module")
def usps_halves():
    """USPS train + test pooled (9,298 digits) and split at random into two halves: fit on one, measure the other.
    Pooled because USPS's own test split is harder than its train split, so the two splits are not exchangeable."""
    from train.data import load_usps

    try:
        x, y = (np.concatenate(parts) for parts in zip(*(load_usps(split) for split in ("train", "test"))))
    except FileNotFoundError as e:
        pytest.skip(str(e))
    order = np.random.default_rng(0).permutation(len(x))
    return (x[order[: len(x) // 2]], y[order[: len(x) // 2]]), (x[order[len(x) // 2 :]], y[order[len(x) // 2 :]])


@pytest.fixture(scope="module")
def usps_calibrated(usps_halves, tmp_path_factory):
    """`edgeguard calibrate` on one half, given as a (N, 16, 16) .npy batch the command makes MNIST-style."""
    (fit_x, fit_y), _ = usps_halves
    folder = tmp_path_factory.mktemp("usps")
    np.save(folder / "fit.npy", fit_x)
    (folder / "labels.txt").write_text("\n".join(map(str, fit_y.tolist())) + "\n")
    result = run("calibrate", folder / "fit.npy", "--out", folder / "bundle", "--labels", folder / "labels.txt",
                 "--providers", "cpu", "--kernels", "numpy", "--json")
    assert result.exit_code == 0, result.output
    return folder / "bundle", json.loads(result.stdout)


@pytest.fixture(scope="module")
def usps_held_out_p(usps_halves, usps_calibrated):
    """Combined p-values and labels of the other half under the new bundle."""
    _, (held_x, held_y) = usps_halves
    guard = Guard.load(usps_calibrated[0], providers="cpu", kernels="numpy")
    images = np.stack([preprocess(image) for image in held_x])
    verdicts = [v for start in range(0, len(images), 500) for v in guard.screen(images[start : start + 500])]
    return np.array([v.p_value for v in verdicts]), np.array([v.label for v in verdicts]), held_y


@pytest.mark.parametrize("alpha", [0.01, 0.05])
def test_usps_calibration_holds_on_the_other_half(usps_held_out_p, alpha):
    """Measured when written (seed 0, 4,649 images per half): 1.03% at alpha 0.01 and 5.10% at 0.05 (the shipped,
    MNIST-calibrated bundle: 1.63% and 7.81% on the same half)."""
    p, _, _ = usps_held_out_p
    rate = float(np.mean(p < alpha))
    assert abs(rate - alpha) <= 3 * np.sqrt(alpha * (1 - alpha) / len(p)), f"false-alarm rate {rate:.4f}"


def test_usps_labels_give_accuracy_and_clean_but_wrong(usps_calibrated, usps_held_out_p):
    _, summary = usps_calibrated
    assert summary["n"] == 4649 and summary["labelled"]["measured_on"].startswith("the calibration images")
    # Measured when written: 98.8% accuracy, 0.98% of the images judged clean wrongly labelled (in-sample).
    assert summary["labelled"]["accuracy"] >= 0.97 and summary["labelled"]["clean_but_wrong_rate"] <= 0.02
    p, predicted, truth = usps_held_out_p
    clean = p >= 0.01
    assert np.mean(predicted[clean] != truth[clean]) <= 0.02  # on the other half: 0.70% when written
