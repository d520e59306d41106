"""`edgeguard` through typer's CliRunner (and once as a real process)."""

from __future__ import annotations

import json
import os
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
    from edgeguard import cli_detect

    chosen = []

    def record_choice(guard, *args, numba, **kwargs):
        chosen.append("numba" if numba else guard.kernels)
        raise cli.typer.Exit(0)

    monkeypatch.setattr(cli_detect, "run_detect", record_choice)
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
    rows = json_lines(result.stdout)
    assert len([r for r in rows if "verdict" in r]) == 2  # the good files are still screened
    refused = {r["source"]: r["error"] for r in rows if "error" in r}  # and each refused one is a record
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors, summary = lines[:-1], lines[-1]
    for name in ("empty.png", "text.png", "cut.png", "blank.png", "nan.npy", "missing.png", "none*.png"):
        assert sum(name in line for line in errors) == 1, (name, errors)
        (source,) = [s for s in refused if s.endswith(name)]
        assert f"error: {refused[source]}" in errors  # the same one line as on stderr
    assert len(refused) == 7
    assert all(line.startswith("error: ") for line in errors)
    assert summary.startswith("screened 2 inputs") and summary.endswith("7 refused"), summary


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


# -- the results table: fits a terminal, --wide or a pipe shows everything --------------------------------------

def terminal(monkeypatch, width: int):
    """Make `detect` print as to a terminal of ``width`` columns (no colour codes, so cells can be counted)."""
    from edgeguard import cli

    console = cli.QuietConsole(width=width, force_terminal=True, color_system=None, highlight=False, soft_wrap=True)
    monkeypatch.setattr(cli, "out", console)


def sheet_of_examples(path: Path) -> Path:
    """Four example digits written dark on light, side by side: an image of several digits."""
    canvas = np.full((120, 400), 255, np.uint8)
    for i, name in enumerate(("digit_0", "digit_1", "digit_2", "digit_4")):
        digit = cv2.resize(255 - cv2.imread(str(EXAMPLES / f"{name}.png"), cv2.IMREAD_GRAYSCALE), (56, 56))
        canvas[30:86, 40 + 90 * i : 96 + 90 * i] = digit
    cv2.imwrite(str(path), canvas)
    return path


@pytest.fixture
def long_inputs(tmp_path):
    """The flagged examples and a sheet under a long folder path, and one clean example."""
    folder = tmp_path / "scans_received_from_the_regional_office_in_november" / "batch_0042_second_pass"
    folder.mkdir(parents=True)
    for name in ("adversarial_from_9.png", "not_a_digit_boot.png", "digit_7.png"):
        shutil.copy(EXAMPLES / name, folder / f"customer_form_field_{name}")
    sheet_of_examples(folder / "customer_form_zip_code_sheet.png")
    return sorted(folder.iterdir())


@pytest.mark.parametrize("columns, header", [
    (80, ["input", "label", "purified", "p-value", "verdict", "reasons"]),
    (60, ["input", "label", "verdict", "reasons"]),  # narrower still: the purified label and p-value go first
])
def test_table_fits_the_terminal(long_inputs, monkeypatch, columns, header):
    from rich.cells import cell_len

    verdicts = json_lines(run("detect", *long_inputs, "--json").stdout)
    reasons = {r for v in verdicts for r in v["reasons"]}
    assert {"adversarial", "out_of_distribution"} <= {v["verdict"] for v in verdicts} and reasons
    assert len({v["source"] for v in verdicts if v["status"] == "digits"}) == 1  # the sheet: several digits
    terminal(monkeypatch, columns)
    result = run("detect", *long_inputs)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert max(cell_len(line) for line in lines) <= columns, result.stdout
    assert str(long_inputs[0].parent) not in result.stdout  # the paths are shortened...
    starts = [line for line in lines if line.startswith(str(long_inputs[0])[:3])]
    assert len(starts) == len(long_inputs) and all("…" in line for line in starts)  # ...in the middle
    words = result.stdout.split()
    for reason in reasons:  # each reason whole, never cut across lines
        assert reason in words, (reason, result.stdout)
    for verdict in ("adversarial", "out_of_distribution", "clean"):
        assert verdict in words
    assert "reads" in words and "0124" in words  # the sheet's reading...
    assert [w for w in words if w.startswith("#")] == ["#0", "#1", "#2", "#3"]  # ...and its digits, in order
    assert lines[0].split() == header


def test_table_uses_a_wider_terminal_and_wide_shows_everything(long_inputs, monkeypatch):
    from rich.cells import cell_len

    terminal(monkeypatch, 120)
    result = run("detect", *long_inputs)
    assert max(cell_len(line) for line in result.stdout.splitlines()) <= 120
    assert {"conf", "distinct"} <= set(result.stdout.splitlines()[0].split())  # room for more columns
    wide = run("detect", *long_inputs, "--wide")
    assert wide.exit_code == 0
    header = wide.stdout.splitlines()[0].split()
    assert header == ["input", "#", "box", "label", "conf", "purified", "distinct", "p-value", "verdict", "reasons"]
    for path in long_inputs:
        assert str(path) in wide.stdout and "…" not in wide.stdout
    for v in json_lines(run("detect", *long_inputs, "--json").stdout):
        assert ", ".join(v["reasons"]) in wide.stdout  # on one line


def test_piped_table_is_printed_in_full(long_inputs):
    result = run("detect", *long_inputs)  # CliRunner: not a terminal
    assert result.exit_code == 0 and "…" not in result.stdout
    for path in long_inputs:
        assert str(path) in result.stdout


@pytest.mark.parametrize("text, width", [
    ("/data/scans/2026/november/batch_0042/customer_form_0042.png", 30),
    ("/data/scans/2026/november/batch_0042/customer_form_0042.png", 12),
    ("a_single_very_long_file_name_without_folders.png", 20),
    ("/data/数字/写真/とても長いフォルダ名/七.png", 15),
    ("short.png", 40), ("abc", 1), ("abcdef", 2),
])
def test_shorten_middle(text, width):
    from rich.cells import cell_len

    from edgeguard.cli_detect import shorten_middle

    short = shorten_middle(text, width)
    assert cell_len(short) <= width
    if cell_len(text) <= width:
        assert short == text
        return
    head, _, tail = short.partition("…")
    assert "…" in short and text.startswith(head) and text.endswith(tail)
    name = text[text.rfind("/"):]
    if cell_len(name) + 4 <= width:
        assert short.endswith(name) and head  # the whole file name, and where it is from


# -- a reader that goes away: quiet, exit 0 ------------------------------------------------------------------------

@pytest.mark.parametrize("args", [
    ["detect", str(EXAMPLES), "--json"],
    ["detect", str(EXAMPLES), "--json", "--fail-on", "flagged"],  # exit 0, not the 1 of a flagged digit
    ["detect", str(EXAMPLES)],
    ["info"],
    ["--version"],
])
def test_closed_stdout_ends_quietly_with_exit_0(args):
    """`edgeguard ... | head -1` where the reader is gone before anything is written."""
    read, write = os.pipe()
    os.close(read)
    try:
        proc = subprocess.run([sys.executable, "-m", "edgeguard", *args], stdout=write, stderr=subprocess.PIPE,
                              text=True, timeout=120)
    finally:
        os.close(write)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr


def test_reader_that_stops_after_one_line_ends_it_quietly():
    """`edgeguard detect ... --json | head -1`: more output than a pipe holds, the reader reads a line and goes."""
    files = [str(EXAMPLES / "digit_7.png")] * 300  # about 200 KB of JSON lines; a pipe holds 64 KB
    proc = subprocess.Popen([sys.executable, "-m", "edgeguard", "detect", *files, "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0 and err == "", err
    assert json.loads(first)["label"] == 7


# -- providers ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("choice", ["CPUExecutionProvider", "cpuexecutionprovider", "CPUExecutionProvider,", "cpu"])
def test_provider_names_are_accepted_as_given(choice):
    result = run("detect", EXAMPLES / "digit_7.png", "--json", "--providers", choice)
    assert result.exit_code == 0, result.output
    assert json_lines(result.stdout)[0]["label"] == 7


@pytest.mark.parametrize("command", ["detect", "info"])
@pytest.mark.parametrize("choice", ["tpu", "CPUExecutionProvidr", ",", "auto,cpu"])
def test_bad_provider_choice_is_a_bad_option(command, choice):
    args = [command, EXAMPLES / "digit_7.png"] if command == "detect" else [command]
    result = run(*args, "--providers", choice)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1 and result.stdout == ""


# -- info: the bundle's name, id and date, and its robustness figures ----------------------------------------------

def test_info_names_the_bundle_and_shows_its_robustness():
    import hashlib

    raw = (shipped_bundle_path() / "manifest.json").read_bytes()
    manifest = json.loads(raw)
    summary = json.loads(run("info", "--json").stdout)
    assert (summary["name"], summary["created"]) == (manifest["name"], manifest["created"])
    assert summary["bundle_id"] == hashlib.sha256(raw).hexdigest()[:12] == summary["manifest_sha256"][:12]
    robustness, measured = summary["robustness"], manifest["robustness"]
    assert robustness["created"] == measured["created"] and robustness["alpha"] == measured["alpha"]
    for key in ("detection_rate", "defended_accuracy", "ood_auroc", "adaptive_success_rate"):
        assert robustness[key] == measured[key]  # as measured, nothing typed in
    text = run("info").stdout
    for line in (f"name: {manifest['name']}", f"bundle_id: {summary['bundle_id']}", f"created: {manifest['created']}",
                 f"Fashion-MNIST {measured['ood_auroc']['Fashion-MNIST']:.4f}",
                 f"FGSM eps=0.1 {100 * measured['detection_rate']['FGSM eps=0.1']:.1f}%",
                 f"EOT-PGD eps=0.3 {100 * measured['adaptive_success_rate']['EOT-PGD eps=0.3']:.1f}%",
                 f"robustness (python -m benchmarks.robustness, {measured['created']}"):
        assert line in text, line
    # a verdict names the bundle that `info` describes
    verdict = json_lines(run("detect", EXAMPLES / "digit_7.png", "--json").stdout)[0]
    assert verdict["bundle_id"] == summary["bundle_id"]


def test_info_of_a_bundle_without_robustness_figures(tmp_path):
    root = tmp_path / "bundle"
    shutil.copytree(shipped_bundle_path(), root)
    manifest = json.loads((root / "manifest.json").read_text())
    del manifest["robustness"], manifest["name"]
    manifest["robustness_note"] = "unknown fields are allowed"
    (root / "manifest.json").write_text(json.dumps(manifest))
    summary = json.loads(run("info", "--json", "--bundle", root).stdout)
    assert summary["robustness"] is None and summary["name"] is None
    text = run("info", "--bundle", root).stdout
    assert "robustness: not measured" in text and "detected" not in text
