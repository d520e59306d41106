"""``edgeguard detect``'s body (cli.py holds its options and loads the guard): read each image, decide whether it
holds one digit or several (``edgeguard.sheet``), screen them in batches, print a table or JSON records.

One digit per image (every 28x28 image, every image where the region finder finds at most one digit, and every
image with ``--digits one``) is screened exactly as before: ``preprocess``, the guard's own calibration, a batch
of up to ``BATCH`` images. An image holding several digits gets one result per digit, in reading order.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.cells import cell_len

from edgeguard.decode import load_image
from edgeguard.errors import InputError
from edgeguard.guard import Guard, Verdict
from edgeguard.sheet import ImageResult, Prepared, prepare, screen_prepared

if TYPE_CHECKING:
    from rich.table import Table

STYLES = {"clean": "green", "adversarial": "red", "out_of_distribution": "magenta", "uncertain": "yellow"}


def run_detect(guard: Guard, files: list[str], problems: list[tuple[str, str]], *, digits: str,
               as_json: bool, wide: bool = False) -> list[ImageResult]:
    """Screen ``files`` (``problems``: inputs already found bad; files that cannot be read are added to it, each
    reported on stderr in one line) and print the results; returns them. The table fits a terminal's width
    unless ``wide``; to a pipe or a file it is printed in full."""
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
        fit = out.is_terminal and not wide  # piped or captured: the whole table, for the reader to scroll or cut
        grid = table(results, out.width if fit else None)
        width = out.width
        try:
            if not fit:
                out.width = max(width, table_width(grid))  # print() alone cannot widen the console
            out.print(grid)
        finally:
            out.width = width
    return results


def _prepare(file: str, digits: str) -> Prepared:
    image = load_image(file)
    try:
        return prepare(image, digits)
    except InputError as e:
        raise e.with_path(file) from None


#: Columns of the results table, in order. Fitted to a terminal's width, ``input``, ``label``, ``purified``,
#: ``p-value``, ``verdict`` and ``reasons`` are always shown, and the others in this order while they fit:
#: ``OPTIONAL`` (``box`` only when an image holds several digits); a digit's place in reading order, ``#``, is then
#: written in the input column, under its image's row (``  #0``).
COLUMNS = ("input", "#", "box", "label", "conf", "purified", "distinct", "p-value", "verdict", "reasons")
OPTIONAL = ("conf", "distinct", "box")
NARROW_DROPS = ("purified", "p-value")  # left out, in this order, on a terminal too narrow even without OPTIONAL
GAP = 2  # cells between two columns
MIN_INPUT = 12  # an input column narrower than this is not worth its paths


def table(results: Sequence[ImageResult], width: int | None = None) -> Table:
    """One row per image screened whole; for an image of several digits, a row with its reading, then one row per
    digit (its place in reading order and its box: x, y, width, height in the image's pixels).

    ``width``: the table fits in this many columns: long inputs are shortened in the middle (``scans/…/d7.png``),
    the reasons go one a line, never cut, and the columns that do not fit are left out (``OPTIONAL``).
    None: every column and everything in full (``--wide``, or output to a pipe or file)."""
    from rich import box as boxes
    from rich.markup import escape
    from rich.table import Table

    rows = [row for result in results for row in _rows(result)]
    several = any(r.status != "whole" for r in results)
    widths = {c: max([cell_len(c)] + [cell_len(row.get(c, "")) for row in rows]) for c in COLUMNS}
    widths["input"] = max([widths["input"]] + [cell_len(f"  #{row['#']}") for row in rows if "input" not in row])
    if width is None:
        shown, fitted = list(COLUMNS), dict(widths)
    else:
        shown, fitted = _fit(widths, width, several, rows)
    grid = Table(box=boxes.SIMPLE_HEAD, show_edge=False, padding=(0, GAP - 1, 0, 0), pad_edge=False)
    for c in shown:
        if c == "reasons":
            grid.add_column(c, width=fitted[c], overflow="fold")
        else:
            grid.add_column(c, width=fitted[c], no_wrap=True, overflow="ellipsis")
    for row in rows:
        cells = []
        for c in shown:
            text = row.get(c, "")
            if c == "input" and "#" not in shown and "input" not in row:  # a digit of an image: its place
                text = f"  #{row.get('#', '')}"
            if c == "input":
                text = shorten_middle(text, fitted[c])
            elif c == "reasons" and cell_len(text) > fitted[c]:
                text = text.replace(", ", "\n")  # one reason (or part of a reading) a line
            text = escape(text)
            if c == "verdict" and text in STYLES:
                text = f"[{STYLES[text]}]{text}[/]"
            elif c == "verdict" and text == "unseparable":
                text = "[bold yellow]unseparable[/]"
            cells.append(text)
        grid.add_row(*cells)
    return grid


def table_width(grid: Table) -> int:
    """The cells ``grid`` takes in full (its columns' widths and the gaps between them)."""
    return sum(c.width or 0 for c in grid.columns) + GAP * (len(grid.columns) - 1)


def _fit(widths: dict[str, int], width: int, several: bool, rows: list[dict[str, str]]) -> tuple[
        list[str], dict[str, int]]:
    """The columns shown and their widths, so that the table fits in ``width`` cells."""
    words = [w for row in rows for w in row.get("reasons", "").replace(",", " ").split()]
    min_reasons = max([cell_len("reasons")] + [cell_len(w) for w in words])  # a reason is never cut
    min_input = min(widths["input"], MIN_INPUT)
    shown = [c for c in COLUMNS if c not in OPTIONAL and c != "#"]

    def used(columns: list[str]) -> int:
        fixed = sum(widths[c] for c in columns if c not in ("input", "reasons"))
        return fixed + GAP * (len(columns) - 1)

    for drop in NARROW_DROPS:
        if used(shown) + min_input + min_reasons > width:
            shown.remove(drop)

    for extra in OPTIONAL:
        if extra == "box" and not several:
            continue
        trial = [c for c in COLUMNS if c in shown or c == extra]
        if used(trial) + min_input + min_reasons <= width:
            shown = trial
    room = max(2, width - used(shown))
    fitted = dict(widths)
    inputs = min(widths["input"], room - min(widths["reasons"], min_reasons))  # the longest reason on one line,
    if inputs < min_input:  # then the inputs as far as they go; a very narrow terminal squeezes both
        inputs = min(min_input, room // 2)
    fitted["input"], fitted["reasons"] = max(1, inputs), max(1, min(widths["reasons"], room - inputs))
    return shown, fitted


def _rows(result: ImageResult) -> list[dict[str, str]]:
    """The table's rows for one image, as plain text by column (escaped and styled by ``table``)."""
    name = result.source or "-"
    if result.status == "whole":
        return [{"input": name, "#": "-", "box": "-", **_verdict_cells(result.digits[0].screening)}]
    if result.status == "unseparable":
        rows = [{"input": name, "#": "-", "box": "-", "verdict": "unseparable", "reasons": result.note or ""}]
    else:
        flagged = sum(d.flagged for d in result.digits)
        state = "all clean" if not flagged else f"{flagged} flagged"
        rows = [{"input": name, "box": f"{len(result.digits)} digits", "reasons": f"reads {result.reading}, {state}"}]
    for d in result.digits:
        rows.append({"#": str(d.index), "box": ",".join(map(str, d.box)), **_verdict_cells(d.screening)})
    return rows


def _verdict_cells(v: Verdict) -> dict[str, str]:
    return {"label": str(v.label), "conf": f"{v.confidence:.3f}", "purified": str(v.purified_label),
            "distinct": str(v.n_distinct), "p-value": f"{v.p_value:.4f}", "verdict": v.verdict,
            "reasons": ", ".join(v.reasons) or "-"}


def shorten_middle(text: str, width: int) -> str:
    """``text`` in at most ``width`` cells: an ellipsis in the middle keeps its start and, where it fits, the
    whole file name (``/data/scans/…/form_0042.png``)."""
    if cell_len(text) <= width:
        return text
    if width <= 1:
        return "…"[:width]
    keep = width - 1
    name = text[max(text.rfind("/"), text.rfind(os.sep)):]  # the last part with its separator (all: none)
    if 0 < cell_len(name) <= keep - 3:
        tail = cell_len(name)
    else:
        tail = keep - max(1, keep // 3)
    return _head(text, keep - tail) + "…" + _tail(text, tail)


def _head(text: str, cells: int) -> str:
    out, used = [], 0
    for ch in text:
        used += cell_len(ch)
        if used > cells:
            break
        out.append(ch)
    return "".join(out)


def _tail(text: str, cells: int) -> str:
    return _head(text[::-1], cells)[::-1]
