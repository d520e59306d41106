"""Markdown helpers shared by the robustness report's sections (``report`` and ``real_world``): numbers as text,
tables, met/missed, and a set's verdict-kind shares."""

from __future__ import annotations

import numpy as np

from edgeguard.calibration import VERDICTS

VERDICT_KINDS = tuple(v for v in VERDICTS if v != "clean")


def verdict_kind_row(name: str, kind: str, verdict: np.ndarray) -> list:
    """[name, kind, images, flagged, share of the flagged given each verdict kind] (n/a when none is flagged)."""
    flagged = verdict[verdict != "clean"]
    shares = [float(np.mean(flagged == v)) if len(flagged) else float("nan") for v in VERDICT_KINDS]
    return [name, kind, len(verdict), len(flagged), *shares]


def met(ok) -> str:
    return "met" if bool(ok) else "**missed**"


def fmt(v, digits: int = 4) -> str:
    if isinstance(v, str):
        return v
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "n/a"
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}"
    return f"{v:.{digits}f}"


def table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
