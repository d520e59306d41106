"""``edgeguard detect``'s inputs, one at a time and in bounded memory: image files, ``-`` (one image's bytes on
stdin) and ``.npy``/``.npz`` batches of shape (N, 28, 28), read a chunk of rows at a time.

Every input becomes an :class:`Item`: its source (``batch.npy[17]`` for a row of a batch) and either its pixels or
the :class:`InputError` that refused it (one line). Image files and stdin go through the hardened decoder
(``edgeguard.decode``); a batch's header is read by the same strict ``.npy`` parser (nothing is ever unpickled:
object arrays are refused from the header alone), then its rows are read in chunks, so a batch of any length
takes the memory of one chunk.
"""

from __future__ import annotations

import glob
import os
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

from edgeguard.contract import SIDE
from edgeguard.decode import _MAX_FILE_BYTES, SUPPORTED_SUFFIXES, decode_image, load_image
from edgeguard.errors import InputError
from edgeguard.headers import npy_header

__all__ = ["STDIN", "STDIN_SOURCE", "Item", "count_inputs", "expand_inputs", "iter_items"]

STDIN = "-"
STDIN_SOURCE = "<stdin>"  # the source stdin's image is named by
ROWS = 256  # rows of a batch read at a time
_HEADER_MAX = 12 + 65536  # the largest .npy header npy_header accepts


@dataclass(frozen=True)
class Item:
    """One input: its pixels, or why it was refused."""

    source: str
    image: np.ndarray | None = None
    error: InputError | None = None


def is_batch(path: str) -> bool:
    """A ``.npz`` file, or a ``.npy`` file holding more than one image (N, 28, 28)."""
    if path[-4:].lower() not in (".npy", ".npz"):  # most inputs (100,000 PNGs), decided without splitext
        return False
    suffix = os.path.splitext(path)[1].lower()
    if suffix == ".npz":
        return True
    if suffix != ".npy":
        return False
    try:
        with open(path, "rb") as f:
            shape = npy_header(f.read(_HEADER_MAX))[0]
    except (OSError, InputError):
        return False  # load_image says what is wrong with it
    return len(shape) == 3 and shape[0] > 1


def count_inputs(files: list[str]) -> int:
    """How many inputs ``files`` hold (a batch's rows read from its header; an unreadable batch counts 1)."""
    total = 0
    for file in files:
        if file != STDIN and is_batch(file):
            try:
                total += sum(max(1, n) for _, n, _ in _members(file, headers_only=True))
            except (OSError, InputError, zipfile.BadZipFile):
                total += 1
        else:
            total += 1
    return total


def iter_items(files: list[str], stdin: IO[bytes] | None = None) -> Iterator[Item]:
    """Every input of ``files``, in order; a batch row by row. ``stdin``: where ``-`` reads from (default:
    ``sys.stdin.buffer``); it can be read once."""
    stdin_read = False
    for file in files:
        if file == STDIN:
            if stdin_read:
                yield Item(STDIN_SOURCE, error=InputError("stdin was already read (give - once)", STDIN_SOURCE))
                continue
            stdin_read = True
            yield _from_stdin(stdin if stdin is not None else sys.stdin.buffer)
        elif is_batch(file):
            yield from _batch_items(file)
        else:
            try:
                yield Item(file, load_image(file))
            except InputError as e:
                yield Item(file, error=e)


def _from_stdin(stream: IO[bytes]) -> Item:
    try:
        data = stream.read(_MAX_FILE_BYTES + 1)
        return Item(STDIN_SOURCE, decode_image(data, STDIN_SOURCE))
    except InputError as e:
        return Item(STDIN_SOURCE, error=e)
    except OSError as e:
        return Item(STDIN_SOURCE, error=InputError(f"cannot read stdin ({e.strerror or e})", STDIN_SOURCE))


def _batch_items(path: str) -> Iterator[Item]:
    """The rows of a ``.npy``/``.npz`` batch; a bad array or a damaged file is one error item (the rows read
    before the damage keep their place)."""
    try:
        members = list(_members(path, headers_only=True))
        several = len(members) > 1
        for name, _, rows in _members(path):
            prefix = f"{path}:{name}" if several else path
            yield from (Item(f"{prefix}[{i}]", image) if error is None else Item(f"{prefix}[{i}]", error=error)
                        for i, image, error in rows)
    except InputError as e:
        yield Item(path, error=e.with_path(path))
    except zipfile.BadZipFile:
        yield Item(path, error=InputError("truncated or corrupt .npz file (not a ZIP archive)", path))
    except OSError as e:
        yield Item(path, error=InputError(f"cannot read the file ({e.strerror or e})", path))


Rows = Iterator[tuple[int, np.ndarray | None, InputError | None]]


def _members(path: str, *, headers_only: bool = False) -> Iterator[tuple[str, int, Rows]]:
    """(name, rows, the rows' iterator) for each array of a batch (a ``.npy`` file: one, named by the file).
    With ``headers_only`` the iterators are empty and the files are closed as soon as the headers are read."""
    if path.lower().endswith(".npy"):
        with open(path, "rb") as f:
            count, rows = _array_rows(f, os.path.basename(path), headers_only)
            yield os.path.basename(path), count, rows
        return
    with zipfile.ZipFile(path) as archive:
        names = [n for n in archive.namelist() if not n.endswith("/")]
        if not names:
            raise InputError("the .npz file holds no arrays")
        for name in names:
            with archive.open(name) as f:
                count, rows = _array_rows(f, name, headers_only)
                yield name.removesuffix(".npy"), count, rows


def _array_rows(f: IO[bytes], name: str, headers_only: bool) -> tuple[int, Rows]:
    head = f.read(12)
    if len(head) < 10 or not head.startswith(b"\x93NUMPY"):
        raise InputError(f"{name} is not a .npy array")
    length = int.from_bytes(head[8:10] if head[6] == 1 else head[8:12], "little")
    header = head + f.read(max(0, (10 if head[6] == 1 else 12) + length - len(head)))
    shape, fortran, dtype, offset = npy_header(header)
    if shape == (SIDE, SIDE) or len(shape) == 3 and shape[1:] == (SIDE, SIDE) and shape[0] > 0:
        count = shape[0] if len(shape) == 3 else 1
    else:
        raise InputError(f"array {name} has shape {shape}; a batch must be shaped (N, 28, 28)")
    if fortran and count > 1:
        raise InputError(f"array {name} is stored in Fortran order; save np.ascontiguousarray(x) instead")
    if headers_only:
        return count, iter(())
    extra = header[offset:]  # read past the header (none: offset == len(header))
    return count, _rows(f, extra, dtype, count)


def _rows(f: IO[bytes], extra: bytes, dtype: np.dtype, count: int) -> Rows:
    size = SIDE * SIDE * dtype.itemsize
    pending = extra
    for start in range(0, count, ROWS):
        n = min(ROWS, count - start)
        data = pending + f.read(n * size - len(pending))
        pending = b""
        whole = len(data) // size
        block = np.frombuffer(data[: whole * size], dtype).reshape(whole, SIDE, SIDE)
        for i, image in enumerate(block):
            yield (start + i, *_checked(image))
        if whole < n:
            raise InputError(f"truncated or corrupt array: it ends after {start + whole} of {count} images")


def _checked(image: np.ndarray) -> tuple[np.ndarray | None, InputError | None]:
    if image.dtype.kind == "f":
        if not np.isfinite(image).all():
            return None, InputError("array contains NaN or infinite values")
        low, high = float(image.min()), float(image.max())
        if low < 0 or high > 1:
            return None, InputError(f"float arrays must hold values in [0, 1]; found values in [{low:g}, {high:g}]")
        return image.astype(np.float32), None
    low_i, high_i = int(image.min()), int(image.max())
    if low_i < 0 or high_i > 255:
        return None, InputError(f"integer arrays must hold values in [0, 255]; found values in [{low_i}, {high_i}]")
    return image.astype(np.uint8), None


GLOB_CHARS = set("*?[")


def expand_inputs(paths: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """Files, folders (recursive, supported suffixes only) and globs -> (files, [(input, problem)])."""
    files: list[str] = []
    problems: list[tuple[str, str]] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = []
            for root, dirs, names in os.walk(path, followlinks=False):
                dirs.sort()
                prefix = os.path.join(root, "")
                found += [prefix + n for n in sorted(names) if _suffix(n) in SUPPORTED_SUFFIXES]
            if not found:
                problems.append((raw, "folder holds no supported image files"))
            files += found
        elif not os.path.lexists(path) and GLOB_CHARS & set(raw):
            matches = sorted(m for m in _glob(raw) if os.path.isfile(m))
            if not matches:
                problems.append((raw, "no files match this pattern"))
            files += matches
        else:
            files.append(raw)  # missing or unreadable files are reported when they are loaded
    return files, problems


def _suffix(name: str) -> str:
    """``Path(name).suffix.lower()`` of a file name, at a seventh of its cost (a folder of 100,000 files is walked
    before the first record): its part from the last dot, none for a name that only starts with one (``.png``)."""
    dot = name.rfind(".")
    return name[dot:].lower() if 0 < dot < len(name) - 1 else ""


def _glob(pattern: str) -> list[str]:
    """glob.glob, except that `**` does not descend into symlinked folders: glob.glob follows them, so a
    symlink loop (a folder linking to itself or a parent) made it enumerate paths without end."""
    parts = Path(pattern).parts
    if "**" not in parts:
        return glob.glob(pattern)  # without `**`, every component is matched once: no loop
    fixed = next(i for i, part in enumerate(parts) if GLOB_CHARS & set(part))
    base = Path(*parts[:fixed]) if fixed else Path(".")
    rest = "/".join(parts[fixed:])
    hidden_ok = any(part.startswith(".") for part in parts[fixed:])
    found = []
    for match in base.glob(rest):  # pathlib's `**` skips symlinked folders
        if hidden_ok or not any(part.startswith(".") for part in match.relative_to(base).parts):
            found.append(os.fspath(match))
    return found
