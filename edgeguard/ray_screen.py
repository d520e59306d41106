"""Screening on Ray Data, across the cores of one machine or the machines of a cluster (the optional extra
``edgeguard[ray]``).

:class:`ScreenBatch` is a callable class for ``Dataset.map_batches``: each actor builds its own ``Guard`` (one
onnxruntime thread, its sessions made inside the actor, never pickled) and turns a batch of inputs into the
verdict columns, one row per digit, the columns of ``edgeguard detect --out results.parquet``::

    import ray
    from edgeguard.ray_screen import ScreenBatch

    ds = ray.data.read_binary_files("s3://bucket/scans/", include_paths=True)   # columns: bytes, path
    verdicts = ds.map_batches(screen, fn_constructor_kwargs={"alpha": 0.01}, batch_size=256,
                              compute=ray.data.ActorPoolStrategy(size=8), batch_format="numpy")
    verdicts.write_parquet("s3://bucket/verdicts/")

A batch names each input by a ``source`` (or ``path``) column and gives it by one of: ``bytes`` (an image file's
bytes, through the hardened decoder: ``Guard.screen_bytes``'s rules), ``image`` (an array, as ``Guard.screen_image``
takes it) or ``path`` alone (a file every worker can read). Where a batch has both ``bytes`` and ``path``, an empty
``bytes`` means "read ``path``". A refused input is a row with ``source`` and ``error`` (the one-line message
``edgeguard detect`` prints) and nothing else; the verdicts are the single-process ones exactly (the latent
sampling is seeded by each image's pixels, not by its batch).

:func:`screen_on_ray` is ``edgeguard detect --ray``'s side: it builds the dataset from detect's inputs (image
files as paths, read by the workers; rows of ``.npy``/``.npz`` batches and stdin as bytes), runs it and yields
the records back in input order, a batch at a time. An input whose worker failed for good is not lost: it comes
back last, as an error record.
"""

from __future__ import annotations

import io
import logging
import os
import re
import warnings
from collections import Counter
from collections.abc import Iterator
from typing import Any

import numpy as np

from edgeguard.decode import decode_image, decoding_many, load_image
from edgeguard.detect_inputs import STDIN, is_batch, iter_items
from edgeguard.detect_output import arrow_schema, flatten
from edgeguard.errors import InputError
from edgeguard.sheet import first_record, screen_many

__all__ = ["LOCAL", "ScreenBatch", "connect", "screen_on_ray", "unflatten"]

LOCAL = "local"  # --ray with no address: a Ray instance started on this machine for the run
BATCH_SIZE = 256  # inputs per map_batches call
ADDRESS = re.compile(r"^(auto|local|(ray://)?[A-Za-z0-9_.\-\[\]:]+:\d+)$")
NEEDS_RAY = "--ray needs Ray Data: pip install 'edgeguard[ray]'"


class ScreenBatch:
    """A batch of inputs -> their verdict columns (see the module's docstring). The keyword arguments are
    ``Guard.load``'s, and ``digits`` is ``edgeguard detect --digits``."""

    def __init__(self, bundle: str | None = None, *, k: int | None = None, seed: int = 0, alpha: float = 0.01,
                 digits: str = "auto", providers: str = "auto", threads: int = 1, kernels: str = "numba") -> None:
        from edgeguard.guard import Guard

        self.guard = Guard.load(bundle, providers=providers, k=k, seed=seed, alpha=alpha, threads=threads,
                                kernels=kernels)
        self.digits, self.threads = digits, threads
        self.columns, first = verdict_columns(self.guard, digits)
        self.schema = arrow_schema(self.columns, first)

    def __call__(self, batch: dict[str, np.ndarray]) -> Any:
        import pyarrow as pa

        if self.guard.kernels == "numba" and self.threads >= 1:  # numba's threads as onnxruntime's, one per CPU
            import numba

            numba.set_num_threads(min(self.threads, int(getattr(numba.config, "NUMBA_NUM_THREADS", 1))))
        with decoding_many():
            sources, images = _inputs(batch)
        rows: list[dict[str, Any]] = []
        try:
            done = screen_many(self.guard, images, sources, self.digits)
        except Exception as e:  # nothing is lost: each input of the batch says why it has no verdict
            done = [InputError(f"screening failed ({type(e).__name__}: {e})", source) for source in sources]
        for source, result in zip(sources, done):
            if isinstance(result, InputError):
                rows.append({"source": source, "error": str(result)})
            else:
                rows += [flatten(r) for r in result.records()]
        return pa.Table.from_pylist(rows, schema=self.schema)


def verdict_columns(guard: Any, digits: str) -> tuple[list[str], dict[str, Any]]:
    """The flattened record's columns, ``source`` and ``error`` first, and the record they came from: one screened
    image's (a drawn 1)."""
    one = np.zeros((28, 28), np.uint8)
    one[4:24, 13:16] = 255
    (result,) = screen_many(guard, [one], ["columns"], digits)
    if isinstance(result, InputError):  # never: the drawn 1 is a digit
        raise result
    first = flatten(result.records()[0])
    return ["source", "error"] + [c for c in first if c not in ("source", "error")], first


def _inputs(batch: dict[str, np.ndarray]) -> tuple[list[str], list[np.ndarray | InputError]]:
    """Each row's source and its pixels, or the InputError that refused it."""
    names = batch.get("source", batch.get("path"))
    if names is None:
        raise ValueError("a batch needs a 'source' or 'path' column to name its inputs")
    sources = [str(s) for s in names]
    images: list[np.ndarray | InputError] = []
    for i, source in enumerate(sources):
        try:
            data = batch["bytes"][i] if "bytes" in batch else None
            if data is not None and len(data):
                images.append(decode_image(bytes(data), source))
            elif "image" in batch:
                images.append(np.asarray(batch["image"][i]))
            elif "path" in batch:
                images.append(load_image(str(batch["path"][i])))
            else:
                raise InputError("the row holds no image (no bytes, image or path)", source)
        except InputError as e:
            images.append(e.with_path(source))
    return sources, images


def unflatten(row: dict[str, Any]) -> dict[str, Any]:
    """A row of the verdict columns back as the record ``edgeguard detect --json`` writes (``scores.x`` ->
    ``scores: {x: ...}``); an error row as ``{source, error}``."""
    if row.get("error") is not None:
        return {"source": row["source"], "error": row["error"]}
    record: dict[str, Any] = {}
    for key, value in row.items():
        if key == "error":
            continue
        group, dot, name = key.partition(".")
        if dot:
            record.setdefault(group, {})[name] = value
        else:
            record[key] = value
    return record


def connect(address: str, cpus: int | None = None) -> None:
    """Join the Ray cluster at ``address`` (``auto``: the one ``ray start --head`` started here; ``ray://HOST:PORT``
    or ``HOST:PORT``), or start a local instance (``LOCAL``, with ``cpus`` CPUs; None: all). Raises InputError
    (one line) for an address that is none of these, when Ray is missing or the cluster cannot be reached."""
    if not ADDRESS.match(address):
        raise InputError(f"--ray: {address!r} is not a Ray address (auto, HOST:PORT or ray://HOST:PORT); write "
                         "--ray=ADDRESS, or put a bare --ray after the paths")
    try:
        import ray
    except ImportError:
        raise InputError(NEEDS_RAY) from None
    # Ray's own messages go to its session's log files (/tmp/ray/session_latest/logs), not to detect's stderr.
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    if ray.is_initialized():
        return
    try:
        if address == LOCAL:
            ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
        else:
            ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
    except (ConnectionError, RuntimeError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(f"cannot reach the Ray cluster at {address!r} ({first})") from None


def screen_on_ray(files: list[str], *, actors: int | None = None, batch_size: int = BATCH_SIZE,
                  stdin: Any = None, screen: type[ScreenBatch] = ScreenBatch,
                  **options: Any) -> Iterator[tuple[int, list[dict[str, Any]]]]:
    """Screen ``files`` (``edgeguard detect``'s expanded inputs) with ``screen(**options)`` on ``actors`` actors
    (None: one per CPU of the cluster) of the connected Ray instance; yields (inputs done, their records) in input
    order, then the inputs whose worker failed for good, as error records."""
    import ray
    import ray.data

    warnings.filterwarnings("ignore", module=r"ray\.")  # advice for tuning Ray (in its log file too)
    for handler in logging.getLogger("ray.data").handlers:  # its INFO lines on stderr; its log file keeps them
        if type(handler).__name__ == "PlainRayHandler":
            handler.setLevel(logging.ERROR)
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # records in input order
    # A worker that dies is restarted and its batch retried (Ray's defaults for an actor pool); a block that fails
    # for good is skipped and its inputs are reported below.
    context.max_errored_blocks = -1
    context.enable_progress_bars = False
    rows, refused = _rows(files, stdin)
    if refused:
        yield len(refused), refused
    if not rows:
        return
    sent = Counter(row["source"] for row in rows)
    size = actors or max(1, int(ray.cluster_resources().get("CPU", 1)))
    blocks = -(-len(rows) // batch_size)  # a block per batch: records come back a batch at a time
    ds = ray.data.from_items(rows, override_num_blocks=blocks)
    verdicts = ds.map_batches(screen, fn_constructor_kwargs=options, batch_size=batch_size,
                              batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=size), num_cpus=1)
    seen: Counter[str] = Counter()
    for table in verdicts.iter_batches(batch_format="pyarrow", batch_size=None):
        records = [unflatten(row) for row in table.to_pylist()]  # type: ignore[union-attr]
        firsts = [r["source"] for r in records if "error" in r or first_record(r)]
        seen.update(firsts)
        yield len(firsts), records
    lost = [{"source": s, "error": str(InputError("lost: its Ray worker failed", s))}
            for s, n in (sent - seen).items() for _ in range(n)]
    if lost:
        yield len(lost), lost


def _rows(files: list[str], stdin: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Dataset rows (an image file by its path, read by the worker; stdin's bytes and a batch's rows as bytes),
    and the error records of what could not be read here (stdin, a damaged batch)."""
    rows: list[dict[str, Any]] = []
    refused: list[dict[str, Any]] = []
    for file in files:
        if file != STDIN and not is_batch(file):
            rows.append({"source": file, "path": file, "bytes": b""})
            continue
        for item in iter_items([file], stdin):
            if item.image is None:
                refused.append({"source": item.source, "error": str(item.error)})
            else:
                rows.append({"source": item.source, "path": "", "bytes": _npy_bytes(item.image)})
    return rows, refused


def _npy_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, image, allow_pickle=False)
    return buffer.getvalue()

