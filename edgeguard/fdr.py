"""False-discovery control over a run: Benjamini-Hochberg on the run's combined conformal p-values.

Conformal p-values computed against one calibration set are positively dependent (PRDS), so the BH step-up
procedure at level q keeps the expected share of clean images among those it selects at most q (Bates,
Candes, Lei, Romano and Sesia, 2023, "Testing for outliers with conformal p-values"). ``edgeguard detect --fdr q``
uses it; the selection needs every p-value of the run, so it is known only at the end.
"""

from __future__ import annotations

import numpy as np

__all__ = ["benjamini_hochberg"]


def benjamini_hochberg(p_values: object, q: float) -> np.ndarray:
    """The BH selection at level ``q``: a bool array, True for each p-value selected (flagged).

    With the p-values sorted, p_(1) <= ... <= p_(m), the largest rank k with p_(k) <= q * k / m is found and the
    k smallest p-values are selected (none when there is no such k; ties at p_(k) are all selected). Raises
    ValueError for a q outside (0, 1] or p-values outside [0, 1] (NaN included)."""
    if isinstance(q, bool) or not isinstance(q, (int, float, np.floating)) or not 0.0 < q <= 1.0:
        raise ValueError(f"q must be a number in (0, 1], got {q!r}")
    p = np.asarray(p_values, dtype=np.float64).ravel()
    if p.size and not (np.isfinite(p).all() and p.min() >= 0.0 and p.max() <= 1.0):
        raise ValueError("p-values must lie in [0, 1]")
    selected = np.zeros(p.size, bool)
    if not p.size:
        return selected
    order = np.argsort(p, kind="stable")
    passing = np.flatnonzero(p[order] <= q * np.arange(1, p.size + 1) / p.size)
    if passing.size:
        selected[p <= p[order[passing[-1]]]] = True
    return selected
