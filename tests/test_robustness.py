"""benchmarks.robustness --quick: the report's structure and sane numbers (not the targets)."""

import re
from pathlib import Path

import pytest

from benchmarks import robustness
from edgeguard.bundle import shipped_bundle_path

SECTIONS = [
    "## Threat model and limits",
    "## Attacks and sanity checks",
    "## Experiment A: consistency under sampling, and detection",
    "## Out-of-distribution detection",
    "## Experiment B: reconstruction loss vs confidence",
    "## Choosing the verdict's signals",
    "## Adaptive attack (knows the detector)",
    "## Targets",
    "## Examples",
]
FIGURES = ["distinct_labels.png", "roc_attacks.png", "roc_signals_pgd.png", "roc_ood.png", "reliability.png",
           "risk_coverage.png", "confidence_vs_loss.png", "examples.png", "adaptive.png"]
ATTACKS = ["FGSM eps=0.05", "FGSM eps=0.1", "FGSM eps=0.2", "FGSM eps=0.3", "PGD-Linf eps=0.3", "C&W-L2",
           "L-BFGS (targeted)"]
OOD = ["Fashion-MNIST", "Gaussian noise", "uniform noise", "inverted MNIST", "letters & symbols"]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    manifest = (shipped_bundle_path() / "manifest.json").read_bytes()
    assert robustness.main(["--quick", "--out", str(out)]) == 0
    assert (shipped_bundle_path() / "manifest.json").read_bytes() == manifest  # --quick never writes it
    return out, (out / "robustness.md").read_text()


def tables(text: str) -> dict[str, list[dict[str, str]]]:
    """Markdown tables keyed by their first header cell's line, rows as dicts."""
    found, lines = {}, text.splitlines()
    i = 0
    while i < len(lines) - 1:
        if lines[i].startswith("| ") and re.match(r"^\|(---\|)+$", lines[i + 1]):
            headers = [c.strip() for c in lines[i].strip("|").split("|")]
            rows, j = [], i + 2
            while j < len(lines) and lines[j].startswith("| "):
                rows.append(dict(zip(headers, [c.strip() for c in lines[j].strip("|").split("|")])))
                j += 1
            found.setdefault(" | ".join(headers), rows)
            i = j
        else:
            i += 1
    return found


def number(cell: str) -> float | None:
    cell = cell.replace(",", "").replace("*", "")
    try:
        return float(cell)
    except ValueError:
        return None


def find(tabs, first_header: str, *more: str):
    for key, rows in tabs.items():
        if key.startswith(first_header) and all(m in key for m in more):
            return rows
    raise AssertionError(f"no table starting with {first_header!r} {more}")


def test_sections_and_figures(report):
    out, text = report
    for section in SECTIONS:
        assert section in text, section
    for fig in FIGURES:
        path = out / "figures" / fig
        assert path.is_file() and path.stat().st_size > 2000, fig
        assert f"figures/{fig}" in text, fig
    assert "--quick" in text


def test_attack_rows_and_rates_in_unit_interval(report):
    _, text = report
    tabs = tables(text)
    rows = find(tabs, "attack | attacked")
    assert [r["attack"] for r in rows] == ATTACKS
    for r in rows:
        assert 0.0 <= number(r["success rate"]) <= 1.0
        assert 0.0 <= number(r["torch/ORT label agreement"]) <= 1.0
        assert number(r["successful"]) <= number(r["correct before"]) <= number(r["attacked"])
    for r in rows:
        if r["attack"].startswith("FGSM"):
            linf = number(r["median Linf"])
            assert linf is None or linf <= float(r["attack"].split("=")[1]) + 1e-4


def test_histogram_rows_sum_to_one(report):
    _, text = report
    rows = find(tabs := tables(text), "set | n | 1 | 2")
    assert rows[0]["set"] == "clean"
    for r in rows:
        if number(r["n"]):
            assert sum(number(r[str(i)]) for i in range(1, 11)) == pytest.approx(1.0, abs=1e-3)
    assert tabs


def test_aurocs_and_ood_metrics_in_unit_interval(report):
    _, text = report
    tabs = tables(text)
    values = []
    for key, rows in tabs.items():
        if key.startswith("attack | disagreement") or key.startswith("OOD set | max softmax"):
            for r in rows:
                values += [number(v) for k, v in r.items() if k not in ("attack", "OOD set") and v != "n/a"]
    assert len(values) > 50
    assert all(v is not None and 0.0 <= v <= 1.0 for v in values)
    ood_rows = find(tabs, "OOD set | max softmax")
    assert [r["OOD set"] for r in ood_rows] == OOD


def test_experiment_b_numbers(report):
    _, text = report
    rho = float(re.search(r"rho = (-?[0-9.]+)", text).group(1))
    assert -1.0 <= rho <= 1.0
    ece = re.search(r"ECE \(15 bins\) ([0-9.]+) before, ([0-9.]+) after", text)
    assert ece and all(0.0 <= float(v) <= 1.0 for v in ece.groups())
    aurc = find(tables(text), "reject by")
    assert {r["reject by"] for r in aurc} >= {"max softmax", "recon loss", "combined p-value"}
    assert all(0.0 <= number(r["AURC (lower is better)"]) <= 1.0 for r in aurc)


def test_targets_and_adaptive_tables(report):
    _, text = report
    targets = find(tables(text), "target | value | met?")
    assert len(targets) >= 10
    # --quick's few hundred images can miss a target by chance (one C&W image of 31 is 3 points), so only
    # the form is checked: "met", or "missed" (bold where the value itself falls short).
    assert all(r["met?"] in ("met", "missed", "**missed**") for r in targets)
    adaptive = find(tables(text), "attack | images | success (clean verdict")
    assert len(adaptive) == 4
    for r in adaptive:
        assert 0.0 <= number(r["success (clean verdict, wrong label)"]) <= 1.0
        assert 0.0 <= number(r["flagged"]) <= 1.0


def test_signal_choice_lists_the_deployed_signals(report):
    _, text = report
    rows = find(tables(text), "candidate (conformal, calibrated combination)")
    assert any(r["candidate (conformal, calibrated combination)"].startswith("deployed") for r in rows)
    for r in rows:
        assert 0.0 <= number(r["clean false alarms"]) <= 1.0


def test_bad_bundle_is_a_clear_error(tmp_path):
    with pytest.raises(Exception, match="bundle|manifest"):
        robustness.main(["--quick", "--out", str(tmp_path), "--bundle", str(tmp_path / "nope")])
    assert not Path(tmp_path / "robustness.md").exists()
