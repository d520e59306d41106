"""The README's headline table, generated from the shipped bundle's manifest.

The manifest holds what ``python -m export`` measured on the MNIST test set (accuracy, parity, false
alarms) and what ``python -m benchmarks.robustness`` measured on attacks and out-of-distribution sets;
this module renders those numbers as one Markdown table and writes it between two markers in the
README, so no headline figure is typed by hand. ``tests/test_readme.py`` checks the README against it.

    python -m benchmarks.headline            # rewrite the table in README.md
    python -m benchmarks.headline --check    # exit 1 when README.md differs from the manifest
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edgeguard.bundle import shipped_bundle_path
from edgeguard.contract import MANIFEST

START = "<!-- headline:start (python -m benchmarks.headline writes this table) -->"
END = "<!-- headline:end -->"
README = Path(__file__).resolve().parents[1] / "README.md"


def _pct(value: float) -> str:
    return f"{100 * value:.2f}%"


def _meets(value: float, target: float, higher: bool = True) -> str:
    return "met" if (value >= target if higher else value <= target) else "**missed**"


def rows(manifest: Mapping[str, Any]) -> list[list[str]]:
    """[figure, target, measured, status, source] rows from a manifest."""
    m, cal, rob = manifest["metrics"], manifest["calibration"], manifest.get("robustness") or {}
    export, robust = "`python -m export`", "`python -m benchmarks.robustness`"
    parity = max(m["onnx_parity_max_abs"].values())
    out = [
        ["classifier clean accuracy", ">= 99.3%", _pct(m["clean_accuracy"]), _meets(m["clean_accuracy"], 0.993),
         export],
        ["purified accuracy (majority label over K=10 reconstructions)", ">= 99.0%", _pct(m["purified_accuracy"]),
         _meets(m["purified_accuracy"], 0.99), export],
        ["test images whose 10 reconstructions all get one label", ">= 98%", _pct(m["unanimous_share"]),
         _meets(m["unanimous_share"], 0.98), export],
        ["ONNX vs PyTorch, max abs difference", "<= 1e-4", f"{parity:.1e}", _meets(parity, 1e-4, higher=False),
         export],
    ]
    rates = cal.get("test_false_alarm_rate", {})
    for alpha in ("0.01", "0.05"):
        if alpha in rates:
            a, r = float(alpha), rates[alpha]
            out.append([f"clean false alarms at alpha {alpha}", f"{a:.0%} +- 0.5 points", _pct(r),
                        _meets(0.005 - abs(r - a), 0.0), "`python -m export.calibrate`"])
    if not rob:
        return out
    detection, defended, auroc = rob["detection_rate"], rob["defended_accuracy"], rob["ood_auroc"]
    for name in ("FGSM eps=0.1", "FGSM eps=0.2", "FGSM eps=0.3", "PGD-Linf eps=0.3"):
        if name in detection:
            out.append([f"{name} detected (successful attacks)", ">= 99%", _pct(detection[name]),
                        _meets(detection[name], 0.99), robust])
    for name in ("L-BFGS (targeted)", "C&W-L2"):
        if name in defended:
            out.append([f"{name} defended accuracy (flagged or purified label right)", ">= 99%",
                        _pct(defended[name]), _meets(defended[name], 0.99), robust])
    targets = {"Fashion-MNIST": 0.995, "letters & symbols": 0.99}
    for name, value in auroc.items():
        target = targets.get(name)
        out.append([f"{name} AUROC", f">= {target:g}" if target else "-", f"{value:.4f}",
                    _meets(value, target) if target else "-", robust])
    real = "`python -m benchmarks.robustness` (other writers and real inputs)"
    for key, label, target, higher in (
            ("usps_accuracy", "USPS test split (other writers) accuracy", 0.985, True),
            ("usps_flagged", "USPS test split flagged", 0.02, False),
            ("usps_clean_wrong", "USPS passed as clean with a wrong label (of those passed)", 0.006, False),
            ("letters_flagged", "letters & symbols flagged", 0.80, True),
            ("kind_right_attacks", "flagged attacks called `adversarial`", 0.90, True),
            ("kind_right_ood", "flagged non-digits called `out_of_distribution`", 0.90, True)):
        if key in rob:
            out.append([label, f"{'>=' if higher else '<='} {100 * target:g}%", _pct(rob[key]),
                        _meets(rob[key], target, higher), real])
    adaptive = rob.get("adaptive_success_rate", {})
    if adaptive:
        text = ", ".join(f"{name} {100 * v:.0f}%" for name, v in adaptive.items())
        out.append(["adaptive attacker (knows the guard): passes as clean with a wrong label", "-", text, "-", robust])
    return out


def table(manifest: Mapping[str, Any]) -> str:
    header = ["figure", "target", "measured", "status", "command"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows(manifest)]
    when = manifest.get("robustness", {}).get("created") or manifest.get("created")
    lines.append("")
    lines.append(f"From `edgeguard/models/{MANIFEST}` (bundle created {manifest.get('created')}; robustness "
                 f"measured {when}), on the 10,000 MNIST test images and attacks built from them, alpha = "
                 f"{manifest.get('robustness', {}).get('alpha', 0.01)}.")
    return "\n".join(lines)


def render_block(manifest: Mapping[str, Any]) -> str:
    return f"{START}\n{table(manifest)}\n{END}"


def replace_block(text: str, block: str) -> str:
    start, end = text.find(START), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"README has no headline markers ({START!r} ... {END!r})")
    return text[:start] + block + text[end + len(END):]


def load_manifest(bundle: Path | None = None) -> dict[str, Any]:
    path = (bundle or shipped_bundle_path()) / MANIFEST
    manifest: dict[str, Any] = json.loads(path.read_text())
    return manifest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--readme", type=Path, default=README)
    ap.add_argument("--bundle", type=Path, default=None)
    ap.add_argument("--check", action="store_true", help="exit 1 when the README's table differs")
    args = ap.parse_args(argv)
    text = args.readme.read_text()
    updated = replace_block(text, render_block(load_manifest(args.bundle)))
    if args.check:
        if updated != text:
            print(f"{args.readme}: the headline table differs from the manifest; run python -m benchmarks.headline",
                  file=sys.stderr)
            return 1
        return 0
    args.readme.write_text(updated)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
