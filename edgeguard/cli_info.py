"""``edgeguard info``'s body (cli.py holds its options): the bundle (its name, id and date), its measured metrics
and the robustness figures its manifest records, the execution providers and the versions, as text or JSON."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

import numba
import numpy
import onnxruntime
from rich.markup import escape

from edgeguard import __version__
from edgeguard.sessions import available_providers

if TYPE_CHECKING:
    from edgeguard.calibration import Calibration
    from edgeguard.guard import Guard


def run_info(guard: Guard, as_json: bool) -> None:
    """Print the summary of ``guard``'s bundle on stdout."""
    from edgeguard.cli import out

    m = guard.bundle.info
    robustness = robustness_summary(m.raw.get("robustness"))
    summary = {
        "edgeguard": __version__,
        "bundle": str(guard.bundle.path),
        "name": m.name,
        "bundle_id": m.bundle_id,
        "created": m.created,
        "manifest_sha256": m.sha256,
        "format_version": m.format_version,
        "latent_dim": m.latent_dim,
        "default_k": m.default_k,
        "metrics": m.metrics,
        "calibration": _calibration_summary(m.calibration) or dict.fromkeys(("signals", "n", "test_false_alarm_rate")),
        "camera_calibration": _calibration_summary(m.camera_calibration),
        "robustness": robustness,
        "providers_available": available_providers(),
        "providers_in_use": guard.providers,
        "versions": {"onnxruntime": onnxruntime.__version__, "numba": numba.__version__, "numpy": numpy.__version__,
                     "python": sys.version.split()[0]},
    }
    if as_json:
        out.print(json.dumps(summary, indent=1), markup=False)
        return
    for key, value in summary.items():
        if key == "robustness":
            for line in describe_robustness(robustness):
                out.print(escape(line) if line.startswith(" ") else f"[bold]{escape(line)}[/]")
            continue
        text = json.dumps(value) if isinstance(value, (dict, list)) else str(value)
        out.print(f"[bold]{key}[/]: {escape(text)}")


#: The robustness figures `edgeguard info` shows, as `python -m benchmarks.robustness` wrote them into the
#: manifest: key -> (what it is, how to print a value). Keys absent from a manifest are left out.
ROBUSTNESS_FIGURES: dict[str, tuple[str, str]] = {
    "clean_false_alarm_rate": ("clean MNIST test digits flagged", "pct"),
    "detection_rate": ("successful attacks detected", "pct"),
    "defended_accuracy": ("defended accuracy (flagged or purified label right)", "pct"),
    "ood_auroc": ("out-of-distribution AUROC", "auroc"),
    "adaptive_success_rate": ("adaptive attacker (knows the guard) passes as clean with a wrong label", "pct"),
    "usps_accuracy": ("USPS digits (other writers) read right", "pct"),
    "usps_flagged": ("USPS digits flagged", "pct"),
    "letters_flagged": ("letters and symbols flagged", "pct"),
    "kind_right_attacks": ("flagged attacks called adversarial", "pct"),
    "kind_right_ood": ("flagged non-digits called out_of_distribution", "pct"),
}


def robustness_summary(robustness: object) -> dict[str, Any] | None:
    """The manifest's ``robustness`` entry (written by ``python -m benchmarks.robustness``) cut to the figures
    the README's headline quotes, with when and how they were measured; None when the bundle has none."""
    if not isinstance(robustness, dict):
        return None
    summary: dict[str, Any] = {key: robustness.get(key) for key in ("generated_by", "created", "alpha")}
    for key in ROBUSTNESS_FIGURES:
        value = robustness.get(key)
        if isinstance(value, dict):
            value = {str(k): v for k, v in value.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        elif not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        summary[key] = value
    return summary


def describe_robustness(summary: dict[str, Any] | None) -> list[str]:
    """``robustness_summary`` as lines for `edgeguard info`: a heading, then one indented line per figure."""
    if summary is None:
        return ["robustness: not measured for this bundle (python -m benchmarks.robustness)"]
    how = ", ".join(str(summary[k]) if k != "alpha" else f"alpha {summary[k]}"
                    for k in ("generated_by", "created", "alpha") if summary.get(k) is not None)
    lines = [f"robustness ({how}):" if how else "robustness:"]
    for key, (what, form) in ROBUSTNESS_FIGURES.items():
        if key not in summary:
            continue
        value = summary[key]
        show = (lambda v: f"{100 * v:.1f}%") if form == "pct" else (lambda v: f"{v:.4f}")
        text = ", ".join(f"{k} {show(v)}" for k, v in value.items()) if isinstance(value, dict) else show(value)
        lines.append(f"  {what}: {text}")
    return lines


def _calibration_summary(calibration: Calibration | None) -> dict[str, Any] | None:
    if calibration is None:
        return None
    return {"signals": list(calibration.signals), "n": calibration.n,
            "test_false_alarm_rate": calibration.test_false_alarm_rate}
