"""benchmarks.robustness --quick: the report's structure and sane numbers (not the targets); the report's prose
types no figures; and no selection code (the robustness package, export/, train/) reads the test data."""

import ast
import importlib
import inspect
import json
import re
from pathlib import Path

import pytest

from benchmarks import robustness
from benchmarks.robustness import report as rob_report
from edgeguard.bundle import shipped_bundle_path

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = [
    "## Threat model and limits",
    "## Attacks and sanity checks",
    "## Experiment A: consistency under sampling, and detection",
    "## Out-of-distribution detection",
    "## Verdict kinds of flagged images",
    "## Experiment B: reconstruction loss vs confidence",
    f"## {rob_report.SELECTION_TITLE}",
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
            assert sum(number(v) for k, v in r.items() if k.isdigit()) == pytest.approx(1.0, abs=1e-3)
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


def test_bad_bundle_is_a_clear_error(tmp_path):
    with pytest.raises(Exception, match="bundle|manifest"):
        robustness.main(["--quick", "--out", str(tmp_path), "--bundle", str(tmp_path / "nope")])
    assert not Path(tmp_path / "robustness.md").exists()


# -- the verdict kinds and the selection section -------------------------------------------------------------

def test_verdict_kinds_table_covers_every_attack_and_ood_set(report):
    _, text = report
    rows = find(tables(text), "set | kind | images | flagged")
    kinds = ("adversarial", "out_of_distribution", "uncertain")
    assert [r["set"] for r in rows if r["kind"] == "attack"] == ATTACKS
    assert [r["set"] for r in rows if r["kind"] == "OOD"] == OOD
    for r in rows:
        flagged, images = number(r["flagged"]), number(r["images"])
        assert 0 <= flagged <= images
        if flagged:
            assert all(0.0 <= number(r[k]) <= 1.0 for k in kinds)
            assert sum(number(r[k]) for k in kinds) == pytest.approx(1.0, abs=1e-3)
        else:
            assert all(r[k] == "n/a" for k in kinds)


def test_selection_section_renders_the_manifest_record(report):
    _, text = report
    section = text.split(f"## {rob_report.SELECTION_TITLE}")[1].split("\n## ")[0]
    manifest = json.loads((shipped_bundle_path() / "manifest.json").read_text())
    selection = manifest.get("calibration", {}).get("selection")
    if selection:
        rows = find(tables(section), "candidate | signals | combination | clean false alarms")
        assert [r["candidate"] for r in rows] == list(selection["candidates"])
        assert [r["candidate"] for r in rows if r["chosen"] == "chosen"] == [selection["chosen"]]
    else:
        assert "not chosen by a recorded selection" in section and "python -m export.calibrate --select" in section
    assert "det. " not in section or selection  # no candidate figures measured on this run's test data


SELECTION = {
    "rule": "false alarms within 2 SE of alpha; max of mean detection and mean AUROC, halved; ties to fewer signals",
    "alpha": 0.01,
    "split": "held-out MNIST training images 55000-59999: even-indexed half fits, odd-indexed half evaluates",
    "sizes": {"fit": 2500, "clean": 2500, "attacked": 500, "attack_successes": {"FGSM eps=0.1": 401, "C&W-L2": 377},
              "ood": {"Fashion-MNIST train": 1000, "scribbles and shapes": 1000}},
    "candidates": {
        "all 8, Fisher": {"signals": ["a"] * 8, "combination": "fisher", "false_alarm_rate": 0.0104,
                          "detection": {"FGSM eps=0.1": 0.91, "C&W-L2": None},
                          "auroc": {"Fashion-MNIST train": 0.991, "scribbles and shapes": 0.93}, "score": 0.9},
        "small, Fisher": {"signals": ["input_mismatch", "recon_mse"], "combination": "fisher",
                          "false_alarm_rate": 0.0096, "detection": {"FGSM eps=0.1": 0.97, "C&W-L2": 0.95},
                          "auroc": {"Fashion-MNIST train": 0.997, "scribbles and shapes": 0.95}, "score": 0.967},
    },
    "chosen": "small, Fisher", "signals": ["input_mismatch", "recon_mse"], "combination": "fisher",
}


def test_selection_lines_render_every_candidate_figure():
    text = "\n".join(rob_report.selection_lines(SELECTION, ("input_mismatch", "recon_mse"), "fisher"))
    rows = find(tables(text), "candidate | signals | combination | clean false alarms")
    assert [r["candidate"] for r in rows] == ["all 8, Fisher", "small, Fisher"]
    small = rows[1]
    assert small["chosen"] == "chosen" and rows[0]["chosen"] == ""
    assert number(small["signals"]) == 2 and small["combination"] == "fisher"
    assert number(small["clean false alarms"]) == pytest.approx(0.0096)
    assert number(small["det. C&W-L2"]) == pytest.approx(0.95) and rows[0]["det. C&W-L2"] == "n/a"
    assert number(small["AUROC scribbles and shapes"]) == pytest.approx(0.95)
    assert number(small["score"]) == pytest.approx(0.967)
    for needle in (SELECTION["rule"], SELECTION["split"], "(alpha=0.01)", "fit 2,500", "C&W-L2 377",
                   "Fashion-MNIST train 1,000", "Chosen: `small, Fisher`", "the deployed calibration uses it"):
        assert needle in text, needle
    other = "\n".join(rob_report.selection_lines(SELECTION, ("recon_mse",), "min_p"))
    assert "the deployed calibration uses other signals" in other


def test_selection_lines_without_a_record_is_one_sentence():
    for missing in (None, {}):
        lines = rob_report.selection_lines(missing, ("input_mismatch", "recon_mse"), "fisher")
        assert len(lines) == 1 and lines[0].count(". ") == 0
        assert "not chosen by a recorded selection" in lines[0]
        assert "`python -m export.calibrate --select`" in lines[0]
        assert "input_mismatch, recon_mse" in lines[0]


# -- no typed figures in the report's prose ------------------------------------------------------------------

# Method vocabulary that contains digits but states nothing about a run; anything else with a digit in
# report.py's literal text would be a typed-in figure.
METHOD_TOKENS = ("float32", "8-bit", "[0,1]", "1 - p", "1 - max softmax", "1..", "x10", "/10", "^2", "95% TPR",
                 "(2017)", "L-BFGS-B", "C&W-L2", "L2", "undefended_cw_median_l2")


def literal_text(path: Path) -> list[tuple[int, str]]:
    """(line, text) of every string literal outside docstrings and f-string format specs."""
    tree = ast.parse(path.read_text())
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef)) and node.body \
                and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant):
            skip.add(id(node.body[0].value))
        if isinstance(node, ast.FormattedValue) and node.format_spec is not None:
            skip.update(id(n) for n in ast.walk(node.format_spec))
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip]


def test_report_prose_types_no_figures():
    path = ROOT / "benchmarks" / "robustness" / "report.py"
    source = path.read_text()
    assert "CHOICE_TEXT" not in source and "recommendations" not in source
    typed = []
    for line, text in literal_text(path):
        for token in METHOD_TOKENS:
            text = text.replace(token, "")
        if re.search(r"\d", text):
            typed.append((line, text))
    assert not typed, f"figures typed into the report's prose (compute them from the run): {typed}"


# -- no selection code reads the test data -------------------------------------------------------------------

TEST_ARRAYS = {"test_x", "test_y"}
CHOOSING = {"fit", "select", "choose", "evaluate", "selection_data", "fit_temperature"}  # fit or choose on their input
MEASURING = {"analyze_all", "false_alarm_rates", "film_and_screen"}  # project functions that only measure


def _callee(call: ast.Call) -> str:
    f = call.func
    return f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""


def _reads_test_split(node: ast.AST) -> bool:
    """node reads MNIST's or Fashion-MNIST's test split itself: test_x/test_y, "t10k", load_fashion_mnist("test")."""
    if isinstance(node, ast.Name) and node.id in TEST_ARRAYS:
        return True
    if isinstance(node, ast.Attribute) and node.attr in TEST_ARRAYS:
        return True
    if isinstance(node, ast.Constant) and node.value == "t10k":
        return True
    if isinstance(node, ast.Call) and _callee(node) == "load_fashion_mnist":
        split = node.args[0] if node.args else next((k.value for k in node.keywords if k.arg == "split"), None)
        return not (isinstance(split, ast.Constant) and split.value == "train")  # the default split is "test"
    return False


def _bound_names(target: ast.AST) -> list[str]:
    """The variables an assignment target binds (a store into x[...] or x.attr binds none)."""
    if isinstance(target, ast.Name):
        return [target.id]
    if isinstance(target, (ast.Tuple, ast.List)):
        return [n for e in target.elts for n in _bound_names(e)]
    return _bound_names(target.value) if isinstance(target, ast.Starred) else []


def _stores_not_named_test(target: ast.AST) -> list[ast.AST]:
    """The parts of an assignment target that store somewhere other than a variable or a key naming test data."""
    if isinstance(target, ast.Name):
        return []
    if isinstance(target, (ast.Tuple, ast.List)):
        return [bad for e in target.elts for bad in _stores_not_named_test(e)]
    if isinstance(target, ast.Starred):
        return _stores_not_named_test(target.value)
    key = target.slice if isinstance(target, ast.Subscript) else None
    return [] if isinstance(key, ast.Constant) and "test" in str(key.value) else [target]


def reads_of_test_split(tree: ast.AST) -> list[str]:
    return [f"line {n.lineno}: {ast.unparse(n)}" for n in ast.walk(tree) if _reads_test_split(n)]


class DataFlow:
    """Where test data flows inside one module's functions: through assignments into calls, stores and returns.

    Allowed: a project function receives it through a parameter named test* (the callee measures on it; its
    result is clean) or is a measuring function (MEASURING; its result carries test data on); other calls
    (methods such as p_values, builtins) only carry it on; it is kept in variables or stored under keys naming
    test data. Never: a fitting or choosing call (CHOOSING), a `signals`/`combination` argument, a project
    function's other parameters, a return value.
    """

    def __init__(self, source: str, module: str = ""):
        self.tree = ast.parse(source)
        self.module = importlib.import_module(module) if module else None
        self.functions = [f for f in ast.walk(self.tree) if isinstance(f, ast.FunctionDef)]
        self.local = {f.name: [a.arg for a in f.args.posonlyargs + f.args.args + f.args.kwonlyargs]
                      for f in self.functions}
        self.problems: list[str] = []

    def params(self, call: ast.Call) -> list[str] | None:
        """A project function's parameter names; None for anything else."""
        name = call.func.id if isinstance(call.func, ast.Name) else None
        if name in self.local:
            return self.local[name]
        fn = getattr(self.module, name, None) if name else None
        if fn is not None and getattr(fn, "__module__", "").split(".")[0] in ("export", "train"):
            return list(inspect.signature(fn).parameters)
        return None

    def tainted(self, node: ast.AST, names: set[str]) -> bool:
        """Whether node's value carries test data (and notes each forbidden use on the way)."""
        if isinstance(node, ast.Call):
            params = self.params(node)
            positional = zip(params, node.args) if params is not None else ((None, a) for a in node.args)
            bound = list(positional) + [(k.arg, k.value) for k in node.keywords]
            carried = [p for p, v in bound if self.tainted(v, names)]
            code = f"line {node.lineno}: {ast.unparse(node)}"
            if carried and _callee(node) in CHOOSING or {"signals", "combination"} & set(carried):
                self.problems.append(f"{code}: fits or chooses on test data")
            if params is not None and _callee(node) not in MEASURING:
                if any(not (p or "").startswith("test") for p in carried):
                    self.problems.append(f"{code}: test data into a parameter not named test*")
                return False
        if _reads_test_split(node) or isinstance(node, ast.Name) and node.id in names:
            return True
        return any([self.tainted(child, names) for child in ast.iter_child_nodes(node)])

    def _spread(self, fn: ast.FunctionDef) -> set[str]:
        """The names in fn that hold test data (its test* parameters, then assignments, to a fixed point)."""
        names = {a for a in self.local[fn.name] if a.startswith("test")}
        while True:
            before = set(names)
            for node in ast.walk(fn):
                if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.For, ast.comprehension)):
                    value = node.iter if isinstance(node, (ast.For, ast.comprehension)) else node.value
                    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                    if value is not None and self.tainted(value, names):
                        names |= {n for t in targets for n in _bound_names(t)}
            if names == before:
                return names

    def check(self) -> list[str]:
        found = []
        for fn in self.functions:
            names = self._spread(fn)
            self.problems = []
            for stmt in [s for s in ast.walk(fn) if isinstance(s, ast.stmt) and s is not fn]:
                for child in ast.iter_child_nodes(stmt):
                    if isinstance(child, ast.expr) and self.tainted(child, names):
                        if isinstance(stmt, ast.Return):
                            self.problems.append(f"line {stmt.lineno}: {fn.name} returns test data")
                        elif isinstance(stmt, (ast.Assign, ast.AugAssign, ast.AnnAssign)) and child is stmt.value:
                            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
                            for bad in [b for t in targets for b in _stores_not_named_test(t)]:
                                self.problems.append(f"line {stmt.lineno}: test data stored as {ast.unparse(bad)}")
                for call in [c for c in ast.iter_child_nodes(stmt) if isinstance(c, ast.Call)] + \
                        [c.value for c in ast.iter_child_nodes(stmt) if isinstance(c, ast.Expr)]:
                    if isinstance(call, ast.Call) and _callee(call) == "update":
                        for k in call.keywords:
                            if self.tainted(k.value, names) and "test" not in (k.arg or ""):
                                self.problems.append(f"line {call.lineno}: test data stored as {k.arg}")
            found += self.problems
        return list(dict.fromkeys(found))


def data_flow_problems(source: str, module: str = "") -> list[str]:
    return DataFlow(source, module).check()


def project_imports(path: Path) -> set[Path]:
    """The export/ and train/ modules path imports, followed transitively (train/data.py, the loader, excluded)."""
    seen, todo = set(), [path]
    while todo:
        for node in ast.walk(ast.parse(todo.pop().read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in ("export", "train"):
                base = ROOT / node.module.replace(".", "/")
                for target in [base.with_suffix(".py")] + [base / f"{a.name}.py" for a in node.names]:
                    if target.is_file() and target not in seen and target.name != "data.py":
                        seen.add(target)
                        todo.append(target)
    return seen


def test_signal_selection_never_touches_test_data():
    """export/select_signals.py, and every export/ or train/ module it uses, never reads a test split."""
    selection = ROOT / "export" / "select_signals.py"
    for path in [selection, *sorted(project_imports(selection))]:
        assert reads_of_test_split(ast.parse(path.read_text())) == [], path.name


def test_training_never_touches_test_data():
    for path in sorted((ROOT / "train").glob("*.py")):
        if path.name != "data.py":  # the loader defines the test split; nothing else in train/ may read it
            assert reads_of_test_split(ast.parse(path.read_text())) == [], path.name


@pytest.mark.parametrize("name", ["calibrate", "camera"])
def test_calibration_only_measures_on_test_data(name):
    """export/calibrate.py (and export/camera.py, which it hands the filmed test digits) read test data only to
    measure false alarms, stored under keys naming test data; the fit and the signals never see it."""
    path = ROOT / "export" / f"{name}.py"
    source = path.read_text()
    assert reads_of_test_split(ast.parse(source)) or "test" in source, "the check must see the measurement"
    assert data_flow_problems(source, f"export.{name}") == []


@pytest.mark.parametrize("bad", [
    "def f(guard, val_x, test_x):\n    return Calibration.fit(analyze_all(guard, test_x).signals, S, 'fisher')\n",
    "def f(bundle, data):\n    s = select(bundle, data.test_x, data.test_y)\n    entry['selection'] = s\n",
    "def f(bundle, data):\n    calibrate(bundle, data.test_x, None)\n\n"
    "def calibrate(bundle, val_x, test_x):\n    pass\n",
    "def f(bundle, test_x):\n    sig = analyze_all(g, test_x).signals\n    calibrate(bundle, V, signals=pick(sig))\n",
    "def f(g, test_x):\n    entry['combined'] = g.p_values(test_x)\n",
    "def f(g, test_x):\n    p = g.p_values(test_x)\n    return p\n",
    "def f():\n    x, _ = load_fashion_mnist()\n    choose(x)\n",
])
def test_the_data_flow_check_catches_test_data_used_to_choose(bad):
    assert data_flow_problems(bad)


def test_robustness_package_ranks_no_candidates():
    from benchmarks.robustness import measure, run

    package = ROOT / "benchmarks" / "robustness"
    for module in (measure, run, rob_report):
        assert not hasattr(module, "CANDIDATES") and not hasattr(module, "signal_choice")
    for path in sorted(package.glob("*.py")):
        tree = ast.parse(path.read_text())
        names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} | \
                {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
        assert not names & {"CANDIDATES", "signal_choice", "choose", "evaluate", "select", "selection_data"}, path
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                assert node.module != "export.select_signals", (path.name, "imports the selection")
            if isinstance(node, ast.Call) and _callee(node) in CHOOSING:
                # the one fit left is Experiment B's temperature, on the held-out split
                assert _callee(node) == "fit_temperature" and not any(
                    "test" in ast.unparse(a) for a in node.args), (path.name, ast.unparse(node))


def test_manifest_gets_the_headline_only():
    """run.py writes manifest["robustness"] (the measured headline) and nothing else; the headline holds no
    selection."""
    run_tree = ast.parse((ROOT / "benchmarks" / "robustness" / "run.py").read_text())
    updates = [c for c in ast.walk(run_tree) if isinstance(c, ast.Call) and _callee(c) in ("update", "write")
               and isinstance(c.func, ast.Attribute) and ast.unparse(c.func.value) == "manifest_io"]
    assert len(updates) == 1 and [k.arg for k in updates[0].keywords] == ["robustness"]
    report_tree = ast.parse((ROOT / "benchmarks" / "robustness" / "report.py").read_text())
    headline = next(f for f in ast.walk(report_tree) if isinstance(f, ast.FunctionDef) and f.name == "headline")
    keys = [k.value for d in ast.walk(headline) if isinstance(d, ast.Dict) for k in d.keys
            if isinstance(k, ast.Constant) and isinstance(k.value, str)]
    assert keys[:13] == ["generated_by", "created", "alpha", "signals", "combination", "sizes",
                         "clean_false_alarm_rate", "clean_unanimous_share", "attack_success_rate", "detection_rate",
                         "defended_accuracy", "ood_auroc", "adaptive_success_rate"]
    assert not {"selection", "candidates", "chosen"} & set(keys)
