"""The README matches what the code generates: the headline table and the layout table."""

from __future__ import annotations

import re
from pathlib import Path

from benchmarks import headline

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
PACKAGES = ("edgeguard", "train", "export", "benchmarks")


def test_headline_table_is_the_one_the_manifest_gives():
    expected = headline.render_block(headline.load_manifest())
    assert expected in README, "README's headline table is stale: run python -m benchmarks.headline"


def test_headline_table_flags_a_missed_target():
    manifest = headline.load_manifest()
    manifest["metrics"] = dict(manifest["metrics"], clean_accuracy=0.98)
    row = next(r for r in headline.rows(manifest) if r[0] == "classifier clean accuracy")
    assert row[2:4] == ["98.00%", "**missed**"]


def _layout_rows() -> dict[str, str]:
    """path -> its description, from the README's layout table."""
    section = README.split("## Layout", 1)[1]
    return dict(re.findall(r"^\| `([^`]+)` \|(.*)\|$", section, flags=re.MULTILINE))


def _listed(module: str, rows: dict[str, str]) -> bool:
    """A module has its own row, or its subpackage's row names it (``measure.py``)."""
    folder, _, name = module.rpartition("/")
    return module in rows or f"`{name}`" in rows.get(folder + "/", "")


def _modules() -> set[str]:
    found = set()
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if path.name in ("__init__.py", "__main__.py") and path.parent.name in PACKAGES:
                continue
            relative = path.relative_to(ROOT)
            if path.name == "__init__.py":  # a subpackage is listed as its folder
                found.add(f"{relative.parent}/")
            elif path.name != "__main__.py":
                found.add(str(relative))
    return found


def test_layout_table_lists_every_module_and_nothing_else():
    rows = _layout_rows()
    unlisted = {m for m in _modules() if not _listed(m, rows)}
    assert unlisted == set(), "modules missing from the README's layout table"
    missing_on_disk = {p for p in rows if not (ROOT / p).exists()}
    assert missing_on_disk == set(), "paths in the README's layout table that do not exist"
    for folder, text in rows.items():
        if folder.endswith("/"):
            for name in re.findall(r"`([\w]+\.py)`", text):
                assert (ROOT / folder / name).exists(), f"{folder}{name} named in the layout table does not exist"


def test_the_stated_bundle_size_is_the_real_one():
    stated = float(re.search(r"three ONNX models of ([\d.]+) MB together", README).group(1))
    real = sum(p.stat().st_size for p in (ROOT / "edgeguard" / "models").glob("*.onnx")) / 1e6
    assert abs(stated - real) < 0.05, f"README says {stated} MB, the models are {real:.2f} MB"
