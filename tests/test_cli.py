"""`edgeguard` through typer's CliRunner (and once as a real process)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from edgeguard import __version__
from edgeguard.bundle import shipped_bundle_path
from edgeguard.cli import app

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
runner = CliRunner()


def run(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output
    return result


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture
def images(tmp_path, mnist):
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    for i in range(3):
        cv2.imwrite(str(folder / f"d{i}.png"), mnist.test_x[i])
    cv2.imwrite(str(folder / "sub" / "d3.png"), mnist.test_x[3])
    return folder


def test_version_is_answered_without_models():
    result = run("--version")
    assert result.exit_code == 0 and result.stdout.strip() == f"edgeguard {__version__}"


def test_detect_examples_as_json():
    result = run("detect", EXAMPLES, "--json")
    assert result.exit_code == 0, result.output
    rows = json_lines(result.stdout)
    assert len(rows) == len([p for p in EXAMPLES.iterdir() if p.suffix in (".png", ".jpg")])
    by_name = {Path(r["source"]).name: r for r in rows}
    assert by_name["digit_7.png"]["label"] == 7
    for r in rows:
        assert r["verdict"] in ("clean", "adversarial", "out_of_distribution", "uncertain")
        assert set(r) >= {"label", "confidence", "purified_label", "n_distinct", "p_value", "p_values", "reasons"}


def test_detect_table_folder_and_glob(images):
    result = run("detect", images)
    assert result.exit_code == 0
    assert "d3.png" in result.stdout  # folders are searched recursively
    result = run("detect", str(images / "d*.png"), "--json")
    assert result.exit_code == 0 and len(json_lines(result.stdout)) == 3


def test_options_reach_the_guard(images):
    result = run("detect", images / "d0.png", "--json", "--k", "3", "--seed", "5", "--alpha", "0.2",
                 "--providers", "cpu")
    assert result.exit_code == 0
    assert len(json_lines(result.stdout)[0]["labels"]) == 3


def test_kernel_backends_give_the_same_answers(images, monkeypatch):
    from edgeguard import cli

    answers = {}
    for choice in ("numba", "numpy", "auto"):
        result = run("detect", images, "--json", "--kernels", choice)
        assert result.exit_code == 0, result.output
        answers[choice] = [(r["source"], r["verdict"], r["labels"]) for r in json_lines(result.stdout)]
    assert answers["numba"] == answers["numpy"] == answers["auto"]
    chosen = []

    def record_choice(*args, kernels, **kwargs):
        chosen.append(kernels)
        raise cli.typer.Exit(0)

    monkeypatch.setattr(cli, "load_guard", record_choice)
    run("detect", images)
    monkeypatch.setattr(cli, "NUMBA_MIN_IMAGES", 2)
    run("detect", images)
    assert chosen == ["numpy", "numba"]  # auto: numba only from NUMBA_MIN_IMAGES inputs on
    assert run("detect", images, "--kernels", "cuda").exit_code == 2


def test_one_shot_detect_does_not_import_numba(images):
    code = ("import sys\nfrom edgeguard.cli import main\nsys.argv = ['edgeguard', 'detect', sys.argv[1]]\n"
            "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "assert 'numba' not in sys.modules, 'numba was imported'")
    out = subprocess.run([sys.executable, "-c", code, str(images / "d0.png")], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "d0.png" in out.stdout


def test_bad_inputs_are_reported_and_the_rest_still_screened(images, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "empty.png").write_bytes(b"")
    (bad / "text.png").write_text("not an image")
    (bad / "cut.png").write_bytes((images / "d0.png").read_bytes()[:40])
    cv2.imwrite(str(bad / "blank.png"), np.full((50, 50), 255, np.uint8))
    np.save(bad / "nan.npy", np.full((28, 28), np.nan, np.float32))
    missing = tmp_path / "missing.png"
    result = run("detect", images / "d0.png", bad, missing, str(tmp_path / "none*.png"), images / "d1.png", "--json")
    assert result.exit_code == 2
    assert len(json_lines(result.stdout)) == 2  # the good files are still screened
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    for name in ("empty.png", "text.png", "cut.png", "blank.png", "nan.npy", "missing.png", "none*.png"):
        assert sum(name in line for line in errors) == 1, (name, errors)
    assert all(line.startswith("error: ") for line in errors)


def test_fail_on_flagged(images):
    noise = np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)
    cv2.imwrite(str(images / "noise.png"), noise)
    assert run("detect", images / "noise.png").exit_code == 0
    result = run("detect", images / "noise.png", "--fail-on", "flagged", "--json")
    assert json_lines(result.stdout)[0]["flagged"] is True
    assert result.exit_code == 1


def test_bad_bundle_and_provider_exit_3(tmp_path, images, monkeypatch):
    result = run("detect", images / "d0.png", "--bundle", tmp_path / "nowhere")
    assert result.exit_code == 3 and result.stderr.count("\n") == 1
    from edgeguard import sessions

    monkeypatch.setattr(sessions.ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    result = run("detect", images / "d0.png", "--providers", "cuda")
    assert result.exit_code == 3 and "CUDAExecutionProvider" in result.stderr


def test_bad_option_values(images):
    assert run("detect", images / "d0.png", "--k", "0").exit_code == 2
    assert run("detect", images / "d0.png", "--alpha", "2").exit_code == 2
    assert run("detect", images / "d0.png", "--fail-on", "sometimes").exit_code == 2


def test_info(tmp_path):
    result = run("info", "--json")
    assert result.exit_code == 0
    summary = json.loads(result.stdout)
    assert summary["providers_in_use"] and "CPUExecutionProvider" in summary["providers_available"]
    assert summary["metrics"]["clean_accuracy"] == json.loads((shipped_bundle_path() / "manifest.json").read_text())[
        "metrics"]["clean_accuracy"]
    camera = summary["camera_calibration"]  # what `edgeguard webcam` screens with
    assert camera["n"] > 4900 and camera["signals"] == summary["calibration"]["signals"]
    assert set(camera["test_false_alarm_rate"]) == {"0.001", "0.01", "0.05", "0.1"}
    assert "bundle" in run("info").stdout


def test_info_of_an_uncalibrated_bundle(tmp_path):
    from edgeguard.bundle import shipped_bundle_path

    root = tmp_path / "bundle"
    shutil.copytree(shipped_bundle_path(), root)
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["calibration"] = manifest["camera_calibration"] = None
    (root / "manifest.json").write_text(json.dumps(manifest))
    result = run("info", "--json", "--bundle", root, "--providers", "cpu")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["calibration"] == {"signals": None, "n": None, "test_false_alarm_rate": None}
    assert summary["camera_calibration"] is None
    assert (summary["latent_dim"], summary["default_k"], summary["format_version"]) == \
           (manifest["latent_dim"], manifest["default_k"], manifest["format_version"])


def test_console_script_and_module_entry_points():
    exe = shutil.which("edgeguard", path=str(Path(sys.executable).parent))
    for cmd in ([exe, "--version"] if exe else None, [sys.executable, "-m", "edgeguard", "--version"]):
        if cmd:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
            assert out.returncode == 0 and out.stdout.strip() == f"edgeguard {__version__}"
