"""The true labels of the user's images, for ``edgeguard calibrate``: from a labels file or from folder names.

Labels are optional: they add the classifier's accuracy and the clean-but-wrong rate to what the calibration
reports (``edgeguard.recalibrate``). An image is named as the command names it: its file, or ``file[i]`` for the
i-th image of a ``.npy`` batch. Every problem with a labels file is raised as :class:`InputError` naming the file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edgeguard.contract import N_CLASSES
from edgeguard.errors import InputError

__all__ = ["labels_from_file", "labels_from_folders"]

MAX_LABEL_FILE_BYTES = 64 * 1024 * 1024
_INDEXED = re.compile(r"(.*)\[(\d+)\]")


def labels_from_folders(sources: Sequence[str]) -> np.ndarray | None:
    """Each image's label from its file's parent folder when that is named 0 to 9, or None unless every image has
    one (``sources``: one file per image; the i-th image of a .npy batch as ``file[i]``)."""
    names = [Path(source).parent.name for source in sources]
    if not names or not all(len(name) == 1 and name in "0123456789" for name in names):
        return None
    return np.array([int(name) for name in names], np.int64)


def labels_from_file(path: str | os.PathLike[str], sources: Sequence[str]) -> np.ndarray:
    """The labels of the images ``sources`` (as for ``labels_from_folders``) from a text file, in their order.

    The file holds either one label per line, one line per image in the order the images are read (the files as
    the command lists them, a .npy batch row by row), or ``path,label`` lines (CSV; a ``path,label`` header is
    skipped; paths relative to the working folder or to the labels file's folder; ``file.npy[i]`` for the i-th
    image of a batch), where lines for other images are ignored. Blank lines and ``#`` comments are skipped.
    Raises InputError naming the file.
    """
    try:
        if os.path.getsize(path) > MAX_LABEL_FILE_BYTES:
            raise InputError(f"labels file is larger than {MAX_LABEL_FILE_BYTES} bytes", path)
        text = Path(path).read_text("utf-8")
    except FileNotFoundError:
        raise InputError("labels file not found", path) from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read the labels file ({getattr(e, 'strerror', None) or e})", path) from None
    lines = [(i, line.strip()) for i, line in enumerate(text.splitlines(), 1)
             if line.strip() and not line.lstrip().startswith("#")]
    pairs = [("," in line) for _, line in lines]
    if not lines:
        raise InputError("labels file holds no labels", path)
    if any(pairs) and not all(pairs):
        raise InputError("mixes 'path,label' lines with bare labels; use one kind", path)
    if not all(pairs):
        if len(lines) != len(sources):
            raise InputError(f"{len(lines)} labels for {len(sources)} images; give one label per image, in order", path)
        return np.array([_label(value, number, path) for number, value in lines], np.int64)
    if not _is_label(lines[0][1].rsplit(",", 1)[1]):
        lines = lines[1:]  # a header such as "path,label"
    given: dict[tuple[str, int | None], int] = {}
    folder = Path(path).parent
    for number, line in lines:
        name, value = (part.strip() for part in line.rsplit(",", 1))
        label = _label(value, number, path)
        for key in {_key(name, Path.cwd()), _key(name, folder)}:
            if given.setdefault(key, label) != label:
                raise InputError(f"line {number}: {name} is given two different labels", path)
    missing = [source for source in sources if _key(source, Path.cwd()) not in given]
    if missing:
        raise InputError(f"no label for {missing[0]}" + (f" and {len(missing) - 1} more" if len(missing) > 1 else ""),
                         path)
    return np.array([given[_key(source, Path.cwd())] for source in sources], np.int64)


def _key(name: str, folder: Path) -> tuple[str, int | None]:
    """An image named in a labels file or a source: (its file's real path, its index in a .npy batch or None)."""
    match = _INDEXED.fullmatch(name)
    file, index = (match[1], int(match[2])) if match else (name, None)
    return os.path.realpath(folder / file), index


def _is_label(value: str) -> bool:
    value = value.strip()
    return value.isascii() and value.isdecimal() and int(value) < N_CLASSES


def _label(value: str, number: int, path: str | os.PathLike[str]) -> int:
    if not _is_label(value):
        raise InputError(f"line {number}: {value.strip()!r} is not a digit label 0-{N_CLASSES - 1}", path)
    return int(value)
