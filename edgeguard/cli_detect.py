"""``edgeguard detect``'s body (cli.py holds its options and loads the guard): read each input, decide whether it
holds one digit or several (``edgeguard.sheet``), screen them in chunks of ``BATCH``, write each chunk's records as it
finishes (JSON lines, ``--out``) or, for a terminal, the table at the end.

One digit per image (every 28x28 image, every image where the region finder finds at most one digit, and every
image with ``--digits one``) is screened exactly as before: ``preprocess``, the guard's own calibration, a batch
of up to ``BATCH`` images. An image holding several digits gets one result per digit, in reading order. Inputs are
read one chunk at a time, in a thread one chunk ahead of the screening (``edgeguard.detect_inputs``: files, stdin,
rows of ``.npy``/``.npz`` batches), so with ``--json`` or ``--out`` memory stays flat however many there are;
``--fdr`` keeps one p-value and one name per digit for the selection at the end.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

from rich.cells import cell_len

from edgeguard.decode import decoding_many
from edgeguard.detect_inputs import Item, count_inputs, iter_items
from edgeguard.detect_output import open_sink
from edgeguard.errors import InputError
from edgeguard.fdr import benjamini_hochberg
from edgeguard.guard import Guard, Verdict
from edgeguard.sheet import ImageResult, first_record, screen_many

if TYPE_CHECKING:
    from rich.table import Table

#: The first chunk is small, so that its records come soon after the start; the NumPy twins then take chunks
#: of NUMPY_CHUNK (per image they are fastest in batches of 64-128 and slower at 256: 0.52 against 0.86 ms per
#: image on 2 busy cores), numba's kernels chunks of cli.BATCH.
FIRST_CHUNK = 32
NUMPY_CHUNK = 64
STYLES = {"clean": "green", "adversarial": "red", "out_of_distribution": "magenta", "uncertain": "yellow"}


@dataclass
class DetectRun:
    """What a run of ``detect`` screened: counts for the summary, and the ``--fdr`` selection."""

    inputs: int = 0  # inputs screened (an image of several digits counts once)
    digits: int = 0  # verdicts given
    verdicts: Counter[str] = field(default_factory=Counter)  # by kind, and "unseparable" images
    refused: int = 0
    seconds: float = 0.0
    flagged: bool = False  # a digit flagged (at alpha) or an image unseparable
    fdr: float | None = None
    tested: list[str] = field(default_factory=list)  # with --fdr: each digit's name, and its p-value below
    p_values: list[float] = field(default_factory=list)
    selected: list[str] = field(default_factory=list)
    results: list[ImageResult] = field(default_factory=list)  # kept for the table only

    def summary(self) -> str:
        """One line: screened, flagged by kind, refused, images/s."""
        flagged = {k: n for k, n in self.verdicts.items() if k != "clean"}
        kinds = ", ".join(f"{n:,} {k}" for k, n in sorted(flagged.items(), key=lambda kn: -kn[1]))
        rate = self.inputs / self.seconds if self.seconds > 0 else 0.0
        digits = f" ({self.digits:,} digits)" if self.digits != self.inputs else ""
        return (f"screened {self.inputs:,} inputs{digits} in {self.seconds:.1f} s ({rate:,.0f} images/s): "
                f"{self.verdicts['clean']:,} clean, {sum(flagged.values()):,} flagged"
                + (f" ({kinds})" if kinds else "") + f", {self.refused:,} refused")

    def count(self, records: list[dict[str, Any]], problems: list[tuple[str, str]]) -> None:
        """Tally a chunk's records (screened here or on Ray's workers); an error record is printed on stderr."""
        from edgeguard.cli import err

        for r in records:
            if "error" in r:
                problems.append((r["source"], r["error"]))
                self.refused += 1
                err.print(f"error: {r['error']}", markup=False)
                continue
            if first_record(r):
                self.inputs += 1
                self.flagged |= not r["all_clean"]
                if r["status"] == "unseparable":
                    self.verdicts["unseparable"] += 1
            if r.get("verdict") is None:  # an unseparable image with no digit cut out
                continue
            self.digits += 1
            if r["status"] != "unseparable":
                self.verdicts[r["verdict"]] += 1
            if self.fdr is not None:
                self.tested.append(str(r["source"]) if r["status"] == "whole" else f"{r['source']}#{r['index']}")
                self.p_values.append(r["p_value"])

    def fdr_line(self) -> str:
        return (f"FDR {self.fdr:g}: Benjamini-Hochberg selects {len(self.selected):,} of {len(self.tested):,} "
                "digits over the run's combined p-values")


def run_detect(guard: Guard, files: list[str], problems: list[tuple[str, str]], *, digits: str,
               as_json: bool, wide: bool = False, out_path: str | None = None, fdr: float | None = None,
               stdin: IO[bytes] | None = None, total: int | None = None, numba: bool = False,
               ray: dict[str, Any] | None = None) -> DetectRun:
    """Screen ``files`` (``problems``: inputs already found bad, reported already on stderr; inputs that cannot be
    read are added to it, each reported on stderr in one line and, with ``--json``/``--out``, as an error record)
    a chunk at a time. With ``as_json`` or ``out_path`` each chunk's records are written as it finishes; else the
    table is printed at the end (it fits a terminal's width unless ``wide``). ``fdr``: the BH selection at this
    level over every digit's combined p-value, written last. ``numba``: load the numba kernels in the background
    and move the guard to them once loaded (the first chunks use the NumPy twins: the same results, and the first
    records come without waiting for numba). ``ray``: screen on Ray instead (``edgeguard.ray_screen.screen_on_ray``'s
    keyword arguments; connected already): records are written as they come back (JSON lines without ``--out``).
    Raises InputError for an ``--out`` it cannot write."""
    from edgeguard.cli import BATCH, _progress, err, out

    run = DetectRun(fdr=fdr)
    sink = open_sink(out_path, out.file, out.on_broken_pipe) if as_json or out_path or ray is not None else None
    if sink is not None:
        sink.write([{"source": raw, "error": str(InputError(problem, raw))} for raw, problem in problems])
    run.refused = len(problems)
    total = count_inputs(files) if total is None else total
    start = time.perf_counter()
    loading: threading.Event | None = None
    loader: threading.Thread | None = None
    with _progress(total) as progress:
        task = progress.add_task("screen", total=total)
        if ray is not None and sink is not None:
            from edgeguard.ray_screen import screen_on_ray

            for done, records in screen_on_ray(files, stdin=stdin, **ray):
                run.count(records, problems)
                sink.write(records)
                progress.advance(task, done)
        else:
            items = iter_items(files, stdin)
            with ThreadPoolExecutor(1, thread_name_prefix="edgeguard-read") as reader:
                # the next chunk is read and decoded while this one is screened (onnxruntime lets go of the GIL)
                ahead = reader.submit(_read, items, min(BATCH, FIRST_CHUNK))
                while chunk := ahead.result():
                    if loading is not None and loading.is_set():
                        guard.use_kernels("numba")
                        loading = None
                    ahead = reader.submit(_read, items, BATCH if guard.kernels == "numba" else min(BATCH, NUMPY_CHUNK))
                    records = _screen_chunk(guard, chunk, digits, run, problems, keep=sink is None)
                    if sink is not None:
                        sink.write(records)
                    progress.advance(task, len(chunk))
                    if numba and loader is None:  # once the first records are out: importing numba holds the GIL
                        loading, loader = _load_numba()
    run.seconds = time.perf_counter() - start
    if fdr is not None:
        chosen = benjamini_hochberg(run.p_values, fdr)
        run.selected = [name for name, hit in zip(run.tested, chosen) if hit]
        final = {"fdr": fdr, "tested": len(run.tested), "selected": run.selected}
        if sink is not None and (out_path is None or out_path.lower().endswith(".jsonl")):
            sink.write([final])
        elif sink is not None:  # a CSV or Parquet table has no place for it: stdout
            out.print(json.dumps(final), markup=False)
    if sink is not None:
        sink.close()
    elif run.results:
        _print_table(run.results, wide)
        if fdr is not None:
            out.print(f"FDR {fdr:g} selects {len(run.selected)} of {len(run.tested)}: "
                      + (", ".join(run.selected) or "none"), markup=False)
    err.print(run.summary(), markup=False)
    if fdr is not None:
        err.print(run.fdr_line(), markup=False)
    if loader is not None:
        loader.join()  # a first compile ends and is cached (the results are all out already)
    return run


def _read(items: Iterator[Item], size: int) -> list[Item]:
    """The next ``size`` items, read (decoded) in one block of ``decoding_many``."""
    with decoding_many():
        return list(itertools.islice(items, size))


def _load_numba() -> tuple[threading.Event, threading.Thread]:
    """Import the numba kernels (from numba's cache, or compiled) in a thread; the event is set once they are
    loaded (never where numba fails here: the NumPy twins give the same results). ``run_detect`` joins the thread
    before it returns, so a first compile finishes and fills numba's cache even when the run is shorter."""
    loaded = threading.Event()

    def load() -> None:
        try:
            import edgeguard.kernels  # noqa: F401
        except Exception as e:  # numba broken here: say why at DEBUG, stay on the NumPy twins
            logging.getLogger(__name__).debug("numba kernels not loaded: %s", e)
            return
        loaded.set()

    thread = threading.Thread(target=load, name="edgeguard-numba", daemon=True)
    thread.start()
    return loaded, thread


def _screen_chunk(guard: Guard, chunk: list[Any], digits: str, run: DetectRun, problems: list[tuple[str, str]],
                  keep: bool) -> list[dict[str, Any]]:
    """One chunk of items screened and tallied in ``run``; its records in input order (a refused input's in its
    place), or, with ``keep`` (the table), none: its results are kept in ``run.results`` instead."""
    done = screen_many(guard, [item.image if item.error is None else item.error for item in chunk],
                       [item.source for item in chunk], digits)
    records: list[dict[str, Any]] = []
    for item, result in zip(chunk, done):
        if isinstance(result, InputError):
            records.append({"source": item.source, "error": str(result)})
        else:
            records += result.records()
            if keep:
                run.results.append(result)
    run.count(records, problems)
    return [] if keep else records


def _print_table(results: list[ImageResult], wide: bool) -> None:
    from edgeguard.cli import out

    fit = out.is_terminal and not wide  # piped or captured: the whole table, for the reader to scroll or cut
    grid = table(results, out.width if fit else None)
    width = out.width
    try:
        if not fit:
            out.width = max(width, table_width(grid))  # print() alone cannot widen the console
        out.print(grid)
    finally:
        out.width = width


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
