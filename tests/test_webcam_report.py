"""benchmarks/webcam_fps.py writes reports/webcam.md: a quick run's report has every section and its numbers
parse and agree with the run's JSON; docs/webcam.md quotes no measured figure of its own and links the report.

No timing or accuracy assertions: those are read in the report, not judged by tests.
"""

import json
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[1]
REPORT = ROOT / "reports" / "webcam.md"
DOCS = ROOT / "docs" / "webcam.md"
SEEDS = (0, 1)
ALPHAS = ("0.01", "0.3")
NUMBER = re.compile(r"-?\d+(\.\d+)?")
PERCENT = re.compile(r"^-?\d+(\.\d+)?%$")


@pytest.fixture(scope="module")
def quick(tmp_path_factory, mnist_files):
    """One real quick run (two seeds, one scene per accuracy video; well under a minute), shared by the tests.
    ``mnist_files``: skip where MNIST is not on disk (the benchmark process would download it)."""
    out = tmp_path_factory.mktemp("webcam") / "webcam.md"
    args = ["--quick", "--json", "--accuracy", "--alphas", ",".join(ALPHAS), "--scenes", "1",
            "--seeds", ",".join(map(str, SEEDS)), "--out", str(out)]
    proc = subprocess.run([sys.executable, "-m", "benchmarks.webcam_fps", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return SimpleNamespace(args=args, result=json.loads(proc.stdout), md=out.read_text())


def sections(md: str) -> dict[str, str]:
    """'## title' -> the text up to the next '## '."""
    parts = re.split(r"^## (.+)$", md, flags=re.M)
    return {title.strip(): body for title, body in zip(parts[1::2], parts[2::2])}


def tables(text: str) -> list[list[dict[str, str]]]:
    """Every Markdown table in ``text``, as rows of {column: cell}."""
    found, lines = [], text.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].startswith("|") and i + 1 < len(lines) and lines[i + 1].startswith("|---"):
            columns = [c.strip() for c in lines[i].strip("|").split("|")]
            rows, i = [], i + 2
            while i < len(lines) and lines[i].startswith("|"):
                rows.append(dict(zip(columns, (c.strip() for c in lines[i].strip("|").split("|")))))
                i += 1
            found.append(rows)
        else:
            i += 1
    return found


def percent(cell: str) -> float:
    assert PERCENT.match(cell), cell
    value = float(cell[:-1])
    assert 0.0 <= value <= 100.0, cell
    return value


@pytest.mark.slow
def test_quick_report_has_every_section(quick):
    md = quick.md
    assert md.startswith("# EdgeGuard webcam report\n")
    got = sections(md)
    for title in ("Speed", "Spread between seeds", "How well it reads (alpha 0.01)", "Choosing alpha",
                  "The bundle's camera calibration (from its manifest)", "Command"):
        assert title in got, f"missing section {title!r}: {list(got)}"
    command = "python -m benchmarks.webcam_fps " + " ".join(quick.args)
    assert f"```sh\n{command}\n```" in got["Command"]
    assert quick.result["command"] == command
    header = md.split("\n## ")[0]
    for words in ("Machine:", "Python", "numpy", "OpenCV", "onnxruntime", "numba", "Bundle:", "manifest sha256",
                  "Seeds: 0, 1", "`--quick` run", "1 scene each, not the default 15"):
        assert words in header, words


@pytest.mark.slow
def test_quick_report_speed_numbers_parse_and_match_the_run(quick):
    speed = sections(quick.md)["Speed"]
    by_digits, end_to_end = tables(speed)
    assert [(int(r["seed"]), int(r["digits per frame"])) for r in by_digits] == [
        (s, n) for s in SEEDS for n in (1, 2, 3, 4)]
    runs = {run["seed"]: run for run in quick.result["runs"]}
    for row in by_digits:
        for column in ("found per frame", "find regions ms", "preprocess ms", "screen ms", "rest ms", "total ms",
                       "FPS", "CPU ms", "FPS by CPU time"):
            assert NUMBER.fullmatch(row[column]), (column, row[column])
        measured = runs[int(row["seed"])]["by_digits"][row["digits per frame"]]  # JSON keys are strings
        assert float(row["FPS"]) == pytest.approx(measured["fps"], abs=0.05)
        assert float(row["total ms"]) == pytest.approx(measured["pipeline"], abs=0.005)
        assert float(row["FPS"]) == pytest.approx(1000 / float(row["total ms"]), rel=0.01)
        assert float(row["found per frame"]) > 0
    assert [int(r["seed"]) for r in end_to_end] == list(SEEDS)
    assert all(float(r["FPS"]) > 0 and int(r["frames"]) > 0 for r in end_to_end)

    spread = tables(sections(quick.md)["Spread between seeds"])[0]
    figures = {r["figure"]: r for r in spread}
    assert {"FPS, 1 digit", "FPS, 4 digits", "`run()` FPS on a file"} <= set(figures)
    row = figures["FPS, 4 digits"]
    values = [float(row[f"seed {s}"]) for s in SEEDS]
    assert (float(row["min"]), float(row["max"])) == (min(values), max(values))
    assert re.fullmatch(r"\+-\d+% of the mean", row["spread"])


@pytest.mark.slow
def test_quick_report_accuracy_and_alpha_tables(quick):
    got = sections(quick.md)
    rates, spurious, mix = tables(got["How well it reads (alpha 0.01)"])
    assert {int(r["seed"]) for r in rates} == set(SEEDS)
    assert {r["items"] for r in rates} == {"clean digits", "superimposed pairs", "non-digits"}
    for row in rates:
        assert int(row["appearances"]) > 0
        percent(row["found"])
        for calibration in ("camera", "digits"):
            percent(row[f"flagged, {calibration} calibration"])
        if row["items"] == "clean digits":
            percent(row["read correctly"])
    first = quick.result["runs"][0]["accuracy"]["camera"]["pair_and_nondigit_every_scene"]["adversarial"]
    (pairs,) = [r for r in rates if r["seed"] == "0" and r["items"] == "superimposed pairs"]
    assert percent(pairs["flagged, camera calibration"]) == pytest.approx(100 * first["flagged"], abs=0.05)
    assert len(spurious) == 3 * len(SEEDS) and all(int(r["camera calibration"]) >= 0 for r in spurious)
    for row in mix:
        shares = [percent(row[v]) for v in ("clean", "adversarial", "out_of_distribution", "uncertain")]
        assert sum(shares) <= 100.0 + 0.3  # the rest were not found

    sweep = tables(got["Choosing alpha"])[0]
    assert sorted((int(r["seed"]), r["alpha"], r["calibration"]) for r in sweep) == sorted(
        (s, a, c) for s in SEEDS for a in ALPHAS for c in ("camera", "digits"))
    for row in sweep:
        for column in ("filmed clean digits flagged", "clean digits read correctly", "pairs flagged",
                       "non-digits flagged"):
            percent(row[column])

    far = tables(got["The bundle's camera calibration (from its manifest)"])
    if far:  # the shipped bundle has a camera calibration
        assert all(0.0 < float(r["alpha"]) < 1.0 and percent(r["clean filmed digits flagged"]) >= 0 for r in far[0])


@pytest.mark.slow
def test_report_renders_from_json_round_trip(quick):
    """The renderer takes the results as JSON gives them back (string keys), so a saved run re-renders."""
    from benchmarks.webcam_report import to_markdown

    result = dict(quick.result)
    result.pop("out", None)
    assert to_markdown(result) == quick.md


def test_arguments():
    from benchmarks import webcam_fps as W

    full = W.parse_args([])
    assert (full.seeds, full.scenes, Path(full.out)) == (W.FULL_SEEDS, 60, REPORT)
    quick = W.parse_args(["--quick"])
    assert (quick.seeds, quick.scenes, quick.out) == ((0,), 15, None)
    assert W.parse_args(["--seed", "3"]).seeds == (3,)
    assert W.parse_args(["--seeds", "2, 5", "--out", "x.md"]).seeds == (2, 5)
    for bad in (["--seeds", "1,1"], ["--seeds", "-1"], ["--seeds", "a"], ["--seeds", "0", "--seed", "1"],
                ["--scenes", "0"]):
        with pytest.raises(SystemExit):
            W.parse_args(bad)


def test_committed_report_is_a_full_run():
    assert REPORT.exists(), "python -m benchmarks.webcam_fps --accuracy --alphas 0.01,0.02,0.05 --out reports/webcam.md"
    md = REPORT.read_text()
    got = sections(md)
    for title in ("Speed", "How well it reads (alpha 0.01)", "Choosing alpha", "Command"):
        assert title in got, title
    command = re.search(r"```sh\n(.+)\n```", got["Command"]).group(1)
    assert command.startswith("python -m benchmarks.webcam_fps ")
    assert "--accuracy" in command and "--alphas" in command and "--quick" not in command
    assert "`--quick` run" not in md


def test_docs_quote_no_measured_figures():
    text = DOCS.read_text()
    assert "](../reports/webcam.md)" in text
    assert "](webcam.jpg)" in text
    prose = re.sub(r"```json\n.*?```", "", text, flags=re.S)  # the JSON example shows the CLI's output format
    figures = {
        "percentage": r"\d+(\.\d+)?\s*%",
        "FPS figure": r"\d+(\.\d+)?\s*FPS|FPS\W{0,3}\d",
        "milliseconds": r"\d+(\.\d+)?\s*ms\b",
        "spread": r"\+-\s*\d",
    }
    for name, pattern in figures.items():
        hits = [m.group(0) for m in re.finditer(pattern, prose)]
        assert not hits, f"docs/webcam.md quotes a {name} ({hits}); link reports/webcam.md instead"
