"""The house rules, read from the source: dependencies run one way, and modules stay small enough to read.

- ``edgeguard/`` imports none of ``train``, ``export``, ``benchmarks``, ``tests``, nor torch;
- ``train/``, ``export/`` and ``benchmarks/`` never import ``tests``;
- no module in ``edgeguard/`` is over 400 lines, none in ``benchmarks/`` over 600.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIMITS = {"edgeguard": 400, "benchmarks": 600}
FORBIDDEN = {
    "edgeguard": {"train", "export", "benchmarks", "tests", "torch"},
    "train": {"tests", "benchmarks"},
    "export": {"tests", "benchmarks"},
    "benchmarks": {"tests"},
}


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def imported_roots(path: Path) -> set[str]:
    """The top-level names of every module a file imports, wherever the import stands."""
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_dependencies_run_one_way(package):
    offenders = {str(p.relative_to(ROOT)): sorted(imported_roots(p) & FORBIDDEN[package])
                 for p in _modules(package)}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_import_scan_sees_imports_inside_functions(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from tests import naive\n    import torch.nn\n")
    assert imported_roots(probe) == {"tests", "torch"}


@pytest.mark.parametrize("package", sorted(LIMITS))
def test_modules_stay_small(package):
    long = {str(p.relative_to(ROOT)): n for p in _modules(package)
            if (n := len(p.read_text().splitlines())) > LIMITS[package]}
    assert long == {}, f"over {LIMITS[package]} lines"
