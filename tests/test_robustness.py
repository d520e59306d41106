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
from benchmarks.robustness import real_world
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
    f"## {real_world.TITLE}",
    "## Targets",
    "## Examples",
]
FIGURES = ["distinct_labels.png", "roc_attacks.png", "roc_signals_pgd.png", "roc_ood.png", "reliability.png",
           "risk_coverage.png", "confidence_vs_loss.png", "examples.png", "adaptive.png"]
ATTACKS = ["FGSM eps=0.05", "FGSM eps=0.1", "FGSM eps=0.2", "FGSM eps=0.3", "PGD-Linf eps=0.3", "C&W-L2",
           "L-BFGS (targeted)"]
OOD = ["Fashion-MNIST", "Gaussian noise", "uniform noise", "letters & symbols", "frames & lines"]


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
# the report modules' literal text would be a typed-in figure.
METHOD_TOKENS = ("float32", "8-bit", "[0,1]", "1 - p", "1 - alpha", "1 - max softmax", "1..", "x10", "/10", "^2",
                 "95% TPR", "(2017)", "L-BFGS-B", "C&W-L2", "L2", "undefended_cw_median_l2",
                 "28x28", "2-pixel")


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


@pytest.mark.parametrize("name", ["report", "real_world", "markdown"])
def test_report_prose_types_no_figures(name):
    path = ROOT / "benchmarks" / "robustness" / f"{name}.py"
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


# -- other writers and real inputs (USPS, letters and symbols, verdict kinds, edgeguard calibrate) -------------

def _section(text: str, title: str) -> str:
    return text.split(f"## {title}\n")[1].split("\n## ")[0]


def test_real_world_section_usps_against_mnist(report):
    _, text = report
    section = _section(text, real_world.TITLE)
    rows = {r["figure"]: r for r in find(tables(section), "figure | USPS test split | MNIST test (reference)")}
    assert number(rows["images"]["USPS test split"]) == 300 and number(rows["images"]["MNIST test (reference)"]) == 300
    for figure, r in rows.items():
        if figure != "images":
            assert 0.0 <= number(r["USPS test split"]) <= 1.0, figure
            assert 0.0 <= number(r["MNIST test (reference)"]) <= 1.0, figure
    targeted = {f: r for f, r in rows.items() if r["target (USPS)"]}
    assert set(targeted) == {"accuracy", "flagged at alpha=0.01",
                             "passed as clean with a wrong label (of those passed as clean)"}
    assert all(r["met?"] in ("met", "**missed**") for r in targeted.values())
    usps = {figure: number(r["USPS test split"]) for figure, r in rows.items()}
    assert usps["flagged at alpha=0.05"] >= usps["flagged at alpha=0.01"]
    kinds = [f"flagged called `{k}` (of the flagged)" for k in ("adversarial", "out_of_distribution", "uncertain")]
    if usps["flagged at alpha=0.01"]:
        assert sum(usps[k] for k in kinds) == pytest.approx(1.0, abs=1e-3)
    assert usps["passed as clean with a wrong label (of all images)"] <= \
        usps["passed as clean with a wrong label (of those passed as clean)"] + 1e-9
    assert "`edgeguard.preprocess`" in section and "`Guard.screen`" in section


def test_real_world_section_one_rule_for_28x28_inputs(report):
    """The same digits given faint, dark on light, or both read (almost) as they do given the MNIST way."""
    _, text = report
    rows = {r["the same digits given as"]: r
            for r in find(tables(_section(text, real_world.TITLE)), "the same digits given as | accuracy")}
    assert list(rows) == list(real_world.RENDERINGS)
    reference = number(rows["as MNIST gives them"]["accuracy"])
    for name, r in rows.items():
        assert 0.0 <= number(r[f"flagged at alpha={real_world.ALPHA}"]) <= 1.0
        assert number(r["accuracy"]) >= reference - 0.02, name  # the rule undoes the rendering


def test_real_world_section_letters_kinds_and_calibrate(report):
    _, text = report
    tabs = tables(_section(text, real_world.TITLE))
    letters = {r["letters & symbols"]: r for r in find(tabs, "letters & symbols | value | target | met?")}
    assert 0.5 <= number(letters["AUROC"]["value"]) <= 1.0 and letters["AUROC"]["target"] == ">= 0.99"
    assert 0.0 <= number(letters["flagged at alpha=0.01"]["value"]) <= 1.0
    assert letters["flagged at alpha=0.01"]["target"] == ">= 80%"
    # the letters' AUROC is the one of "Out-of-distribution detection" (combined score)
    ood_auroc = {r["OOD set"]: r for r in find(tables(text), "OOD set | max softmax")}["letters & symbols"]
    assert number(letters["AUROC"]["value"]) == pytest.approx(number(ood_auroc["combined (1 - p)"]), abs=1e-4)
    kinds = find(tabs, "flagged images of | right kind")
    assert [r["right kind"] for r in kinds] == ["`adversarial`", "`out_of_distribution`"]
    verdict_rows = find(tables(text), "set | kind | images | flagged")
    for r, kind in zip(kinds, ("attack", "OOD")):
        assert number(r["flagged"]) == sum(number(v["flagged"]) for v in verdict_rows if v["kind"] == kind)
        assert 0 <= number(r["given the right kind"]) <= number(r["flagged"]) <= number(r["images"])
        assert number(r["share right"]) == pytest.approx(number(r["given the right kind"]) / number(r["flagged"]),
                                                        abs=1e-4)
        assert r["target"] == ">= 90%" and r["met?"] in ("met", "**missed**")
    halves = find(tabs, "bundle | alpha | images (other half) | false alarms")
    assert [(r["bundle"].split(" ")[0], r["alpha"]) for r in halves] == [
        ("calibrated", "0.01"), ("calibrated", "0.05"), ("the", "0.01"), ("the", "0.05")]
    for r in halves:
        assert number(r["images (other half)"]) == 400  # quick: recalibrate.min_images(0.01) per half
        assert 0.0 <= number(r["false alarms"]) <= 1.0 and 0.0 <= number(r["accuracy"]) <= 1.0
        lo, hi = (float(v) for v in r["alpha +- 3 SE"].split(" to "))
        assert 0.0 <= lo < float(r["alpha"]) < hi
        assert r["within?"] == ("yes" if lo <= number(r["false alarms"]) <= hi else "**no**")


def test_real_world_targets_rows(report):
    _, text = report
    rows = {r["target"]: r for r in find(tables(text), "target | value | met?")}
    wanted = ["USPS test split: accuracy >= 98.5%",
              "USPS test split: passed as clean with a wrong label <= 0.6% (of those passed as clean)",
              "USPS test split: flagged <= 2%", "letters & symbols AUROC >= 0.99", "letters & symbols flagged >= 80%",
              "flagged attack images called `adversarial` >= 90%",
              "flagged non-digit images called `out_of_distribution` >= 90%",
              "edgeguard calibrate on half of USPS: false alarms on the other half within alpha +- 3 SE, alpha=0.01",
              "edgeguard calibrate on half of USPS: false alarms on the other half within alpha +- 3 SE, alpha=0.05"]
    for target in wanted:
        assert target in rows, target
        assert 0.0 <= number(rows[target]["value"]) <= 1.0 and rows[target]["met?"] in ("met", "**missed**")
    usps = {r["figure"]: r for r in find(tables(text), "figure | USPS test split")}
    assert rows[wanted[0]]["value"] == usps["accuracy"]["USPS test split"]
    assert rows[wanted[2]]["value"] == usps["flagged at alpha=0.01"]["USPS test split"]


def test_digits_figures():
    import numpy as np

    y = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    label = np.array([0, 1, 2, 3, 4, 5, 6, 7, 0, 0])  # two wrong
    p = np.array([0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.03, 0.001, 0.5])  # one wrong one flagged at 0.01
    verdict = np.where(p < 0.01, "out_of_distribution", "clean")
    d = real_world.Digits(y, label, y.copy(), p, verdict)
    assert d.accuracy() == pytest.approx(0.8) and d.accuracy(purified=True) == 1.0
    assert d.flagged(0.01) == pytest.approx(0.1) and d.flagged(0.05) == pytest.approx(0.2)
    assert d.clean_wrong() == pytest.approx(1 / 9) and d.clean_wrong(of_all=True) == pytest.approx(0.1)
    assert d.clean_wrong(0.05) == pytest.approx(1 / 8)
    assert d.kinds() == {"adversarial": 0.0, "out_of_distribution": 1.0, "uncertain": 0.0}
    assert real_world.within(d, 0.01) and not real_world.within(real_world.Digits(y, y, y, p * 0, verdict), 0.01)


def test_real_world_headline_keys():
    """manifest["robustness"] gets the section's headline (after the other keys) from real_world.headline."""
    report_tree = ast.parse((ROOT / "benchmarks" / "robustness" / "report.py").read_text())
    fn = next(f for f in ast.walk(report_tree) if isinstance(f, ast.FunctionDef) and f.name == "headline")
    unpacked = [ast.unparse(v) for d in ast.walk(fn) if isinstance(d, ast.Dict)
                for k, v in zip(d.keys, d.values) if k is None]
    assert "real_world.headline(r)" in unpacked
    tree = ast.parse((ROOT / "benchmarks" / "robustness" / "real_world.py").read_text())
    fn = next(f for f in ast.walk(tree) if isinstance(f, ast.FunctionDef) and f.name == "headline")
    keys = {k.value for d in ast.walk(fn) if isinstance(d, ast.Dict) for k in d.keys if isinstance(k, ast.Constant)}
    assert keys >= {"usps_accuracy", "usps_flagged", "usps_clean_wrong", "letters_flagged", "kind_right_attacks",
                    "kind_right_ood", "usps_calibrate"}


# -- USPS: read only through the evaluation loader; the one fit it reaches is calibrate_bundle -----------------

USPS_FIT = "calibrate_bundle"  # edgeguard calibrate: fitted on one half of USPS, measured on the other
FITTING = re.compile(r"fit|calibrat|tune|train", re.IGNORECASE)


def _fits(callee: str) -> bool:
    return callee in CHOOSING or bool(FITTING.search(callee))


def usps_flow(sources: dict[str, str]) -> tuple[list[str], int]:
    """Follows USPS data (what load_usps returns) through the given modules' functions: assignments, arguments into
    the modules' own functions (by parameter), and their return values. -> (every call that fits on it other than
    calibrate_bundle, how many calibrate_bundle calls get it)."""
    functions: dict[str, list[ast.FunctionDef]] = {}
    for source in sources.values():
        for f in ast.walk(ast.parse(source)):
            if isinstance(f, ast.FunctionDef):
                functions.setdefault(f.name, []).append(f)
    every = [f for fs in functions.values() for f in fs]
    tainted_params: dict[int, set[str]] = {id(f): set() for f in every}
    returns_usps: set[str] = set()
    problems: set[str] = set()
    allowed: set[int] = set()

    def tainted(node: ast.AST, names: set[str]) -> bool:
        for n in ast.walk(node):
            if isinstance(n, ast.Name) and n.id in names:
                return True
            if isinstance(n, ast.Call) and _callee(n) in ({"load_usps"} | returns_usps):
                return True
        return False

    changed = True
    while changed:
        changed = False
        for f in every:
            names = set(tainted_params[id(f)])
            while True:  # assignments, to a fixed point
                before = set(names)
                for node in ast.walk(f):
                    if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.For, ast.comprehension,
                                         ast.withitem)):
                        value = (node.iter if isinstance(node, (ast.For, ast.comprehension)) else
                                 node.context_expr if isinstance(node, ast.withitem) else node.value)
                        targets = (node.targets if isinstance(node, ast.Assign) else
                                   [node.optional_vars] if isinstance(node, ast.withitem) else [node.target])
                        if value is not None and tainted(value, names):
                            names |= {n for t in targets if t is not None for n in _bound_names(t)}
                if names == before:
                    break
            if f.name not in returns_usps and any(isinstance(n, ast.Return) and n.value is not None
                                                  and tainted(n.value, names) for n in ast.walk(f)):
                returns_usps.add(f.name)
                changed = True
            for call in [n for n in ast.walk(f) if isinstance(n, ast.Call)]:
                callee = _callee(call)
                bound = [(i, None, a) for i, a in enumerate(call.args)] + [(None, k.arg, k.value)
                                                                           for k in call.keywords]
                carried = [(i, k) for i, k, a in bound if tainted(a, names)]
                if not carried:
                    continue
                if callee == USPS_FIT:
                    allowed.add(id(call))
                elif _fits(callee):
                    problems.add(f"line {call.lineno}: {ast.unparse(call)} fits on USPS data")
                for g in functions.get(callee, []):
                    params = [a.arg for a in g.args.posonlyargs + g.args.args + g.args.kwonlyargs]
                    new = {params[i] for i, _ in carried if i is not None and i < len(params)} | \
                          {k for _, k in carried if k is not None}
                    if not new <= tainted_params[id(g)]:
                        tainted_params[id(g)] |= new
                        changed = True
    return sorted(problems), len(allowed)


def test_usps_is_read_only_by_the_evaluation_loader_and_fitted_only_by_calibrate_bundle():
    package = ROOT / "benchmarks" / "robustness"
    sources = {p.name: p.read_text() for p in sorted(package.glob("*.py"))}
    for name, source in sources.items():
        tree = ast.parse(source)
        calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and _callee(n) == "load_usps"]
        imports = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and "load_usps" in
                   [a.name for a in n.names]]
        if name != "real_world.py":
            assert not calls and not imports, name
            continue
        assert [n.module for n in imports] == ["train.data"]  # the evaluation loader, checksums and all
        assert calls and all(len(c.args) == 1 and not c.keywords for c in calls)  # a split; never another folder
        assert not re.search(r"np\.load|open\(|fromfile|read_bytes", source)
    problems, calibrated = usps_flow(sources)
    assert problems == [], problems
    assert calibrated == 1  # the check sees the one fit USPS may reach (edgeguard calibrate on one half)
    for path in [*(ROOT / "train").glob("*.py"), *(ROOT / "export").glob("*.py")]:
        if path.name != "data.py":  # the loader itself; nothing else in train/ or export/ reads USPS
            assert "load_usps" not in path.read_text(), path.name


@pytest.mark.parametrize("bad", [
    "def f(guard):\n    x, y = load_usps('train')\n    return Calibration.fit(analyze_all(guard, x).signals, S, 'f')\n",
    "def f(lab):\n    d = usps_images(lab)\n    fit_temperature(d, None)\n\n"
    "def usps_images(lab):\n    x, _ = load_usps('test')\n    return x\n",
    "def f(g):\n    x, y = load_usps('test')\n    helper(g, images=x)\n\n"
    "def helper(g, images):\n    c = Calibration.fit(g.analyze(images).signals)\n",
    "def f(g):\n    parts = [load_usps(s) for s in ('train', 'test')]\n"
    "    for x, y in parts:\n        train(g, x, y)\n",
])
def test_the_usps_flow_check_catches_a_fit(bad):
    problems, _ = usps_flow({"bad.py": bad})
    assert problems
