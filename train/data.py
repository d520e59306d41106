"""MNIST / Fashion-MNIST loading: IDX parsing, data location, verified download; USPS for evaluation only."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.client
import logging
import math
import os
import struct
import sys
import tempfile
import urllib.request
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

MIRRORS = [
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
]
# sha256 of the *uncompressed* files (mirrors re-gzip, so .gz bytes differ).
SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
FILES = tuple(SHA256)
VAL_SIZE = 5000
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")

_GZIP_MAGIC = b"\x1f\x8b"
_IDX_TYPES = {0x08: "uint8", 0x09: "int8", 0x0B: "int16", 0x0C: "int32", 0x0D: "float32", 0x0E: "float64"}
_CHUNK = 1 << 16


class IDXError(ValueError):
    """A missing, unreadable or malformed IDX file; the message names the file."""


class DownloadError(RuntimeError):
    """Every mirror failed for a file; the message names the file and the reasons."""


# --------------------------------------------------------------------------- IDX


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped when they start with the gzip magic."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise IDXError(f"{path.name}: no such file ({path})") from None
    except OSError as e:
        raise IDXError(f"{path.name}: cannot read ({e.strerror or e})") from None
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise IDXError(f"{path.name}: corrupt or truncated gzip stream ({e})") from None


def _parse_idx(buf: bytes, name: str) -> np.ndarray:
    if len(buf) < 4:
        raise IDXError(f"{name}: truncated header ({len(buf)} bytes, need at least 4)")
    magic = int.from_bytes(buf[:4], "big")
    type_code, ndim = buf[2], buf[3]
    if magic >> 16 or type_code not in _IDX_TYPES:
        raise IDXError(
            f"{name}: bad magic number 0x{magic:08x} "
            "(expected 0x00000801 for labels or 0x00000803 for images)"
        )
    if type_code != 0x08:
        raise IDXError(
            f"{name}: unsupported type code 0x{type_code:02x} ({_IDX_TYPES[type_code]}); only 0x08 (uint8) is supported"
        )
    if ndim not in (1, 3):
        raise IDXError(f"{name}: bad number of dimensions {ndim} (expected 1 for labels or 3 for images)")
    start = 4 + 4 * ndim
    if len(buf) < start:
        raise IDXError(f"{name}: truncated header ({len(buf)} bytes, need {start} for {ndim} dimensions)")
    dims = struct.unpack(f">{ndim}I", buf[4:start])
    need, have = math.prod(dims), len(buf) - start
    shape = "x".join(map(str, dims))
    if have < need:
        raise IDXError(f"{name}: truncated data: header says {shape} = {need} bytes, file has {have}")
    if have > need:
        raise IDXError(f"{name}: {have - need} trailing bytes after {shape} = {need} data bytes")
    return np.frombuffer(buf, np.uint8, count=need, offset=start).reshape(dims).copy()


def _load_idx(path: Path) -> tuple[np.ndarray, str]:
    """The array and the sha256 of the file's uncompressed bytes."""
    buf = _read_bytes(path)
    return _parse_idx(buf, path.name), hashlib.sha256(buf).hexdigest()


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read a uint8 IDX file (1 dim: labels, 3 dims: images), gzipped or raw."""
    return _load_idx(Path(path))[0]


# --------------------------------------------------------------------- location


def _repo_root() -> Path:
    return Path(__file__).resolve().parents[1]


def _shared_dir() -> Path:
    return _repo_root().parent / "shared" / "data" / "mnist"


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "edgeguard" / "mnist"


def _locate(directory: Path, stem: str) -> Path | None:
    """`directory/stem` or `directory/stem.gz`, whichever exists first."""
    for name in (stem, stem + ".gz"):
        if (directory / name).is_file():
            return directory / name
    return None


def _missing(directory: Path, stems: Sequence[str] = FILES) -> list[str]:
    return [s for s in stems if _locate(directory, s) is None]


def _describe_missing(directory: Path, missing: list[str]) -> str:
    files = ", ".join(f"{s}[.gz]" for s in missing)
    return f"{directory} lacks {files}" + ("" if directory.is_dir() else " (directory does not exist)")


def find_mnist(data_dir: str | os.PathLike | None = None, *, download: bool = True) -> Path:
    """Directory holding the 4 MNIST files: data_dir, $EDGEGUARD_DATA, shared data, or the cache."""
    env = os.environ.get("EDGEGUARD_DATA")
    for source, value in (("data_dir", data_dir), ("EDGEGUARD_DATA", env or None)):
        if value is not None:
            directory = Path(value).expanduser()
            if missing := _missing(directory):
                raise FileNotFoundError(f"MNIST directory from {source}: {_describe_missing(directory, missing)}")
            return directory
    shared = _shared_dir()
    if shared.is_dir():
        if not (missing := _missing(shared)):
            return shared
        logger.warning("ignoring shared MNIST directory: %s", _describe_missing(shared, missing))
    cache = _cache_dir()
    if missing := _missing(cache):
        if not download:
            raise FileNotFoundError(
                f"MNIST not found: {_describe_missing(cache, missing)}; pass data_dir, set EDGEGUARD_DATA, "
                "or allow download=True"
            )
        download_mnist(cache)
    return cache


# --------------------------------------------------------------------- download


def _sha256_uncompressed(path: Path) -> str:
    """sha256 of the file's content, gunzipped when it starts with the gzip magic (streamed)."""
    h = hashlib.sha256()
    with open(path, "rb") as raw:
        is_gzip = raw.read(2) == _GZIP_MAGIC
        raw.seek(0)
        stream = gzip.GzipFile(fileobj=raw) if is_gzip else raw
        while chunk := stream.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _verified(path: Path, expected: str) -> bool:
    try:
        return _sha256_uncompressed(path) == expected
    except (OSError, EOFError, zlib.error):
        return False


@contextlib.contextmanager
def _progress_bar(total: int | None, desc: str, enabled: bool):
    if not enabled:
        yield lambda n: None
        return
    from tqdm import tqdm

    with tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr) as bar:
        yield bar.update


class _BadDownload(Exception):
    pass


def _fetch(url: str, out, timeout: float, progress: bool, desc: str) -> None:
    """Stream `url` into the open binary file `out`; raise _BadDownload if it ends short."""
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        length = resp.headers.get("Content-Length", "")
        total = int(length) if length.isdigit() else None
        got = 0
        with _progress_bar(total, desc, progress) as update:
            while chunk := resp.read(_CHUNK):
                out.write(chunk)
                got += len(chunk)
                update(len(chunk))
    if total is not None and got != total:
        raise _BadDownload(f"got {got} of {total} bytes (connection closed mid-file)")


def _download_one(name: str, dest: Path, mirrors: Sequence[str], expected: str, timeout: float, progress: bool) -> None:
    reasons = []
    for mirror in mirrors:
        url = mirror.rstrip("/") + "/" + name
        fd, tmp_name = tempfile.mkstemp(dir=dest, prefix=f".{name}.", suffix=".part")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                _fetch(url, out, timeout, progress, name)
            digest = _sha256_uncompressed(tmp)
            if digest != expected:
                raise _BadDownload(f"sha256 mismatch (got {digest[:12]}..., expected {expected[:12]}...)")
            os.replace(tmp, dest / name)
            return
        except (_BadDownload, OSError, EOFError, zlib.error, http.client.HTTPException, ValueError) as e:
            reason = " ".join(str(e).split()) or type(e).__name__
            logger.warning("download of %s from %s failed: %s", name, mirror, reason)
            reasons.append(f"{mirror}: {reason}")
        finally:
            tmp.unlink(missing_ok=True)
    raise DownloadError(f"{name}: all {len(mirrors)} mirror(s) failed: " + "; ".join(reasons))


def download_mnist(
    dest: str | os.PathLike,
    mirrors: Sequence[str] = MIRRORS,
    timeout: float = 30,
    progress: bool = True,
    file_hashes: Mapping[str, str] | None = None,
) -> Path:
    """Download the 4 MNIST .gz files into dest, verifying the uncompressed sha256.

    `file_hashes` maps uncompressed names (e.g. "train-images-idx3-ubyte") to sha256,
    overriding SHA256. Files already in dest that verify are kept.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    hashes = {**SHA256, **(file_hashes or {})}
    for stem in FILES:
        name = stem + ".gz"
        present = [p for p in (dest / stem, dest / name) if p.is_file()]
        if any(_verified(p, hashes[stem]) for p in present):
            continue
        for p in present:
            logger.warning("%s fails sha256 verification; downloading again", p)
            p.unlink()
        _download_one(name, dest, mirrors, hashes[stem], timeout, progress)
    return dest


# ------------------------------------------------------------------------ load


@dataclass
class MNIST:
    """MNIST as uint8 arrays; val is the last 5,000 training images."""

    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    files: dict[str, str]  # uncompressed file name -> sha256 of its bytes


def _load_pair(directory: Path, prefix: str, hashes: dict[str, str], side: int = 28) -> tuple[np.ndarray, np.ndarray]:
    """Images (N x side x side) and labels `<prefix>-images-idx3-ubyte` / `<prefix>-labels-idx1-ubyte`, checked."""
    arrays = []
    for stem in (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"):
        path = _locate(directory, stem)
        if path is None:
            raise IDXError(f"{stem}: no such file in {directory}")
        array, hashes[stem] = _load_idx(path)
        arrays.append((path.name, array))
    (x_name, x), (y_name, y) = arrays
    if x.ndim != 3 or x.shape[1:] != (side, side):
        raise IDXError(f"{x_name}: expected N x {side} x {side} images, got shape {x.shape}")
    if y.ndim != 1:
        raise IDXError(f"{y_name}: expected 1-d labels, got shape {y.shape}")
    if len(x) != len(y):
        raise IDXError(f"{x_name}: {len(x)} images but {y_name} has {len(y)} labels")
    if y.size and y.max() > 9:
        raise IDXError(f"{y_name}: label {int(y.max())} out of range 0..9")
    return x, y


def load_mnist(data_dir: str | os.PathLike | None = None, *, download: bool = True) -> MNIST:
    """Load MNIST (see find_mnist); train = first N-5000 training images, val = last 5000."""
    directory = find_mnist(data_dir, download=download)
    files: dict[str, str] = {}
    x, y = _load_pair(directory, "train", files)
    test_x, test_y = _load_pair(directory, "t10k", files)
    if len(x) <= VAL_SIZE:
        raise IDXError(f"train-images-idx3-ubyte: {len(x)} images, need more than {VAL_SIZE} for the val split")
    cut = len(x) - VAL_SIZE
    return MNIST(x[:cut], y[:cut], x[cut:], y[cut:], test_x, test_y, files)


def load_fashion_mnist(split: str = "test", data_dir: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST (images, labels) for split "train" or "test" as uint8 arrays."""
    prefix = {"train": "train", "test": "t10k"}.get(split)
    if prefix is None:
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    directory = Path(data_dir or os.environ.get("EDGEGUARD_FASHION_DATA") or FASHION_DIR).expanduser()
    stems = (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")
    if missing := _missing(directory, stems):
        raise FileNotFoundError(
            f"Fashion-MNIST not found: {_describe_missing(directory, missing)}; "
            "run `apt-get install -y dataset-fashion-mnist` or set EDGEGUARD_FASHION_DATA"
        )
    return _load_pair(directory, prefix, {})


# ------------------------------------------------------------------------ USPS (evaluation only)

USPS_SIDE = 16
# sha256 of the uncompressed files (their README.md): the copy converted from the common usps.h5.
USPS_SHA256 = {
    "train-images-idx3-ubyte": "4cd4bc62e6551318fe9ea956ca4b009b0d0393b480c2694b0042358c8349d345",
    "train-labels-idx1-ubyte": "ca21dd4e5a91233d38069e4f468988d3b56f6ce37e1a579a5ad1bd02395488c6",
    "t10k-images-idx3-ubyte": "c457a5ed04299c6a38754b797879bb527abb519e4ec8afccc932d6018f35192a",
    "t10k-labels-idx1-ubyte": "9d60836db74a1ffe67829f9a2546bd594d5d321f778dbca1578c041da94483a2",
}


def find_usps(data_dir: str | os.PathLike | None = None) -> Path:
    """Directory holding the 4 USPS IDX files: data_dir, $EDGEGUARD_USPS_DATA or ../shared/data/usps (no download)."""
    env = os.environ.get("EDGEGUARD_USPS_DATA")
    directory = Path(data_dir or env or _repo_root().parent / "shared" / "data" / "usps").expanduser()
    if missing := _missing(directory, tuple(USPS_SHA256)):
        raise FileNotFoundError(f"USPS not found: {_describe_missing(directory, missing)}; "
                                "pass data_dir or set EDGEGUARD_USPS_DATA")
    return directory


def load_usps(split: str = "test", data_dir: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """USPS digits (images, labels) for split "train" (7,291) or "test" (2,007): uint8 16x16, white ink on black.

    **Evaluation only.** USPS is another set of writers and another scanner than MNIST's, kept to measure how
    EdgeGuard generalises: never train or tune thresholds on it. The one use that fits on it is ``edgeguard
    calibrate`` on one part, measured on another (that is what the command is for). The images are 16x16 and
    tightly cropped: make them MNIST-style with ``edgeguard.preprocess`` before a model sees them. Each file's
    uncompressed sha256 is checked against ``USPS_SHA256`` (IDXError on a mismatch).
    """
    prefix = {"train": "train", "test": "t10k"}.get(split)
    if prefix is None:
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    directory = find_usps(data_dir)
    hashes: dict[str, str] = {}
    x, y = _load_pair(directory, prefix, hashes, side=USPS_SIDE)
    for stem, digest in hashes.items():
        if digest != USPS_SHA256[stem]:
            raise IDXError(f"{stem}: sha256 {digest[:12]}... is not the USPS file's ({USPS_SHA256[stem][:12]}...)")
    return x, y
