"""Where ``edgeguard detect`` writes its records, a chunk at a time: JSON lines to stdout or to ``--out`` as
``.jsonl``, ``.csv`` or ``.parquet`` (through pyarrow, the optional extra ``edgeguard[parquet]``).

A record is a verdict (``ImageResult.records()``), a refused input (``{"source": ..., "error": ...}``) or, last, the
``--fdr`` selection. CSV and Parquet flatten a record's ``scores`` and ``p_values`` into ``scores.<signal>`` and
``p_values.<signal>`` columns; their columns are the first verdict's (the rows before it are held until then).
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable
from typing import IO, Any

from edgeguard.errors import InputError

__all__ = ["OUT_SUFFIXES", "JsonLines", "Sink", "arrow_schema", "flatten", "open_sink"]

OUT_SUFFIXES = (".jsonl", ".csv", ".parquet")
_FIRST = ("source", "error")  # columns every table has first (an error row fills only these)


class Sink:
    """Where records go: ``write`` a chunk of them, ``close`` at the end."""

    def write(self, records: list[dict[str, Any]]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class JsonLines(Sink):
    """JSON lines to a text stream (stdout, or a ``.jsonl`` file)."""

    def __init__(self, stream: IO[str], on_broken_pipe: Callable[[], None] | None = None,
                 close: bool = False) -> None:
        self._stream, self._on_broken_pipe, self._close = stream, on_broken_pipe, close

    def write(self, records: list[dict[str, Any]]) -> None:
        """Write ``records`` and flush, so that a reader sees each chunk as it finishes."""
        if not records:
            return
        try:
            self._stream.write("".join(json.dumps(r) + "\n" for r in records))
            self._stream.flush()
        except BrokenPipeError:
            if self._on_broken_pipe is None:
                raise
            self._on_broken_pipe()

    def close(self) -> None:
        if self._close:
            self._stream.close()


class _TableSink(Sink):
    """Flattened rows; the columns are fixed by the first verdict record."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.columns: list[str] | None = None
        self._held: list[dict[str, Any]] = []

    def write(self, records: list[dict[str, Any]]) -> None:
        rows = [flatten(r) for r in records if "fdr" not in r]
        if self.columns is None:
            self._held += rows
            first = next((r for r in self._held if "error" not in r), None)
            if first is None:
                return
            self.columns = list(_FIRST) + [c for c in first if c not in _FIRST]
            rows, self._held = self._held, []
        self._emit(rows)

    def close(self) -> None:
        if self.columns is None:  # no verdict at all: the errors alone
            self.columns = list(_FIRST)
            self._emit(self._held)
        self._finish()

    def _emit(self, rows: list[dict[str, Any]]) -> None:
        raise NotImplementedError

    def _finish(self) -> None:
        raise NotImplementedError


class _CsvSink(_TableSink):
    def __init__(self, path: str) -> None:
        super().__init__(path)
        self._file = open(path, "w", newline="", encoding="utf-8")
        self._writer: csv.DictWriter[str] | None = None

    def _emit(self, rows: list[dict[str, Any]]) -> None:
        if self._writer is None:
            self._writer = csv.DictWriter(self._file, self.columns or [], extrasaction="ignore")
            self._writer.writeheader()
        self._writer.writerows({k: _cell(v) for k, v in row.items()} for row in rows)
        self._file.flush()

    def _finish(self) -> None:
        if self._writer is None:
            self._emit([])
        self._file.close()


class _ParquetSink(_TableSink):
    def __init__(self, path: str) -> None:
        try:
            import pyarrow
            import pyarrow.parquet
        except ImportError:
            raise InputError("writing .parquet needs pyarrow: pip install 'edgeguard[parquet]'", path) from None
        super().__init__(path)
        self._pa, self._pq = pyarrow, pyarrow.parquet
        self._writer: Any = None
        self._schema: Any = None

    def _emit(self, rows: list[dict[str, Any]]) -> None:
        pa = self._pa
        if self._schema is None:
            first = next((r for r in rows if "error" not in r), {})
            self._schema = arrow_schema(self.columns or [], first)
            self._writer = self._pq.ParquetWriter(self.path, self._schema)
        if rows:
            columns = {c: [row.get(c) for row in rows] for c in self._schema.names}
            self._writer.write_table(pa.table(columns, schema=self._schema))

    def _finish(self) -> None:
        if self._writer is None:
            self._emit([])
        self._writer.close()


def open_sink(path: str | None, stdout: IO[str], on_broken_pipe: Callable[[], None]) -> Sink:
    """A sink for ``--out path`` (None: JSON lines on ``stdout``). Raises InputError (one line) for a suffix
    it does not know, a file it cannot create, or ``.parquet`` without pyarrow."""
    if path is None:
        return JsonLines(stdout, on_broken_pipe)
    suffix = os.path.splitext(path)[1].lower()
    try:
        if suffix == ".jsonl":
            return JsonLines(open(path, "w", encoding="utf-8"), close=True)
        if suffix == ".csv":
            return _CsvSink(path)
        if suffix == ".parquet":
            return _ParquetSink(path)
    except OSError as e:
        raise InputError(f"cannot write the file ({e.strerror or e})", path) from None
    raise InputError(f"unsupported output type {suffix or '(no suffix)'!r}; use {', '.join(OUT_SUFFIXES)}", path)


def flatten(record: dict[str, Any]) -> dict[str, Any]:
    """A record with its ``scores`` and ``p_values`` dicts as ``scores.<name>`` and ``p_values.<name>`` keys."""
    flat: dict[str, Any] = {}
    for key, value in record.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{name}": v for name, v in value.items()})
        else:
            flat[key] = value
    return flat


def _cell(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, list) else value


def arrow_schema(columns: list[str], first: dict[str, Any]) -> Any:
    """The pyarrow schema of these flattened columns, typed by the values of ``first`` (a verdict record)."""
    import pyarrow as pa

    return pa.schema([(c, _arrow_type(pa, c, first.get(c, ""))) for c in columns])


def _arrow_type(pa: Any, column: str, value: Any) -> Any:
    if column == "reasons":
        return pa.list_(pa.string())
    if isinstance(value, bool):
        return pa.bool_()
    if isinstance(value, int):
        return pa.int64()
    if isinstance(value, float):
        return pa.float64()
    if isinstance(value, list):
        return pa.list_(pa.string() if value and isinstance(value[0], str) else pa.int64())
    return pa.string()
