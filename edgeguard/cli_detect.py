"""``edgeguard detect``'s body (cli.py holds its options and loads the guard): read each image, decide whether it
holds one digit or several (``edgeguard.sheet``), screen them in batches, print a table or JSON records.

One digit per image (every 28x28 image, every image where the region finder finds at most one digit, and every
image with ``--digits one``) is screened exactly as before: ``preprocess``, the guard's own calibration, a batch
of up to ``BATCH`` images. An image holding several digits gets one result per digit, in reading order.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

from edgeguard.decode import load_image
from edgeguard.errors import InputError
from edgeguard.guard import Guard, Verdict
from edgeguard.sheet import ImageResult, Prepared, prepare, screen_prepared

if TYPE_CHECKING:
    from rich.table import Table

STYLES = {"clean": "green", "adversarial": "red", "out_of_distribution": "magenta", "uncertain": "yellow"}


def run_detect(guard: Guard, files: list[str], problems: list[tuple[str, str]], *, digits: str,
               as_json: bool) -> list[ImageResult]:
    """Screen ``files`` (``problems``: inputs already found bad; files that cannot be read are added to it, each
    reported on stderr in one line) and print the results; returns them."""
    from edgeguard.cli import BATCH, _progress, err, out

    results: list[ImageResult] = []
    with _progress(len(files)) as progress:
        task = progress.add_task("screen", total=len(files))
        for start in range(0, len(files), BATCH):
            prepared: list[Prepared] = []
            sources: list[str | None] = []
            for file in files[start : start + BATCH]:
                try:
                    prepared.append(_prepare(file, digits))
                    sources.append(file)
                except InputError as e:
                    problems.append((file, e.reason))
                    err.print(f"error: {e}", markup=False)
            if prepared:
                results += screen_prepared(guard, prepared, sources)
            progress.advance(task, len(files[start : start + BATCH]))
    if as_json:
        for result in results:
            for record in result.records():
                out.print(json.dumps(record), markup=False)
    elif results:
        if not out.is_terminal:
            out.width = 160  # piped or captured: do not fold the table into 80 columns
        out.print(table(results))
    return results


def _prepare(file: str, digits: str) -> Prepared:
    image = load_image(file)
    try:
        return prepare(image, digits)
    except InputError as e:
        raise e.with_path(file) from None


def table(results: Sequence[ImageResult]) -> Table:
    """One row per image screened whole; for an image of several digits, a row with its reading, then one row per
    digit (its place in reading order and its box: x, y, width, height in the image's pixels)."""
    from rich.markup import escape
    from rich.table import Table

    grid = Table(show_edge=False)
    grid.add_column("input", overflow="fold")
    for column in ("#", "box", "label", "conf", "purified", "distinct", "p-value", "verdict"):
        grid.add_column(column, no_wrap=True)
    grid.add_column("reasons", overflow="fold")
    for result in results:
        name = escape(result.source or "-")
        if result.status == "whole":
            grid.add_row(name, "-", "-", *_verdict_cells(result.digits[0].screening))
            continue
        if result.status == "unseparable":
            grid.add_row(name, "-", "-", "", "", "", "", "", "[bold yellow]unseparable[/]", escape(result.note or ""))
        else:
            flagged = sum(d.flagged for d in result.digits)
            state = "all clean" if not flagged else f"{flagged} flagged"
            grid.add_row(name, "", f"{len(result.digits)} digits", "", "", "", "", "", "",
                         f"reads {result.reading}, {state}")
        for d in result.digits:
            grid.add_row("", str(d.index), ",".join(map(str, d.box)), *_verdict_cells(d.screening))
    return grid


def _verdict_cells(v: Verdict) -> list[str]:
    return [str(v.label), f"{v.confidence:.3f}", str(v.purified_label), str(v.n_distinct), f"{v.p_value:.4f}",
            f"[{STYLES[v.verdict]}]{v.verdict}[/]", ", ".join(v.reasons) or "-"]
