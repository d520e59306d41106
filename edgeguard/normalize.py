"""Loading digit images and normalising them the way MNIST was made (OpenCV + numpy).

``load_image`` reads a file into a 2-D gray array, refusing anything it cannot read safely;
``preprocess`` turns any gray or colour array into a 28x28 float32 image in [0, 1], white ink
on black, with the digit scaled into a 20x20 box and its centre of mass at (14, 14).
Every problem with an input is raised as :class:`~edgeguard.errors.InputError`; no
``cv2.error`` reaches the caller.
"""

from __future__ import annotations

import math
import os
import re
import stat
import struct
import sys
import tempfile
import threading
import zlib
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np

from edgeguard.errors import InputError

__all__ = ["MAX_PIXELS", "SUPPORTED_SUFFIXES", "load_image", "preprocess", "load_and_preprocess"]

MAX_PIXELS = 40_000_000
"""Largest image (width x height) accepted; larger ones are refused before decoding."""

SUPPORTED_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".pgm", ".pnm", ".ppm", ".tif", ".tiff", ".npy"}
)

_MAX_FILE_BYTES = 1 << 30  # no supported image within MAX_PIXELS needs more
_WORK_SIDE = 1024  # larger images are shrunk to this before the digit is looked for
_MIN_CONTRAST = 0.1  # ink must differ from the background by this much (of the full range)
_MIN_INK_AREA = 4  # pixels, at working resolution; less is not a digit
_SPECK_FRACTION = 0.03  # ink blobs smaller than this fraction of the largest are dropped
_BOX = 20  # MNIST: the digit fits a 20x20 box ...
_SIZE = 28  # ... in a 28x28 image, its centre of mass at (14, 14)
_BLANK = "no digit found (blank image)"

_FORMAT_NAMES = {"png": "PNG", "jpeg": "JPEG", "bmp": "BMP", "pnm": "PNM", "tiff": "TIFF"}


# --------------------------------------------------------------------------- loading


def load_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image file into a 2-D gray array.

    Returns uint8 for image files and integer ``.npy`` arrays, float32 in [0, 1] for float
    ``.npy`` arrays. Raises :class:`InputError` naming the file for anything unreadable.
    """
    data = _read_file(path)
    try:
        return _decode(data)
    except InputError as err:
        raise err.with_path(path) from None


def load_and_preprocess(path: str | os.PathLike[str]) -> np.ndarray:
    """``preprocess(load_image(path))``, with the file named in any :class:`InputError`."""
    image = load_image(path)
    try:
        return preprocess(image)
    except InputError as err:
        raise err.with_path(path) from None


def _read_file(path: str | os.PathLike[str]) -> bytes:
    file = Path(os.fsdecode(os.fspath(path)))
    try:
        info = file.stat()
    except FileNotFoundError:
        raise InputError("file not found", path) from None
    except PermissionError:
        raise InputError("permission denied", path) from None
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot access the file ({_os_reason(exc)})", path) from None
    if stat.S_ISDIR(info.st_mode):
        raise InputError("is a directory, not an image file", path)
    if not stat.S_ISREG(info.st_mode):
        raise InputError("not a regular file", path)
    suffix = file.suffix.lower()
    if suffix == ".gif":
        raise InputError("GIF is not supported; convert to PNG", path)
    if suffix not in SUPPORTED_SUFFIXES:
        supported = ", ".join(sorted(SUPPORTED_SUFFIXES))
        raise InputError(f"unsupported file type {suffix or '(no suffix)'!r}; supported: {supported}", path)
    if info.st_size == 0:
        raise InputError("empty file (0 bytes)", path)
    if info.st_size > _MAX_FILE_BYTES:
        raise InputError(f"file is too large ({info.st_size:,} bytes)", path)
    try:
        data = file.read_bytes()
    except PermissionError:
        raise InputError("permission denied (cannot read the file)", path) from None
    except OSError as exc:
        raise InputError(f"cannot read the file ({_os_reason(exc)})", path) from None
    if not data:
        raise InputError("empty file (0 bytes)", path)
    return data


def _os_reason(exc: Exception) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def _decode(data: bytes) -> np.ndarray:
    kind = _sniff(data)
    if kind == "gif":
        raise InputError("GIF is not supported; convert to PNG")
    if kind is None:
        raise InputError("not a supported image file (the content is not PNG, JPEG, BMP, PNM, TIFF or .npy)")
    if kind == "npy":
        return _load_npy(data)
    name = _FORMAT_NAMES[kind]
    size = _HEADER_READERS[kind](data)
    if size is None:
        raise InputError(f"truncated or corrupt {name} file (cannot read the image size)")
    _check_size(*size)
    if kind == "png" and not _png_intact(data):
        raise InputError("truncated or corrupt PNG file")
    # JPEG: keep colour and depth but apply the EXIF orientation (IMREAD_UNCHANGED ignores it).
    flags = cv2.IMREAD_ANYCOLOR | cv2.IMREAD_ANYDEPTH if kind == "jpeg" else cv2.IMREAD_UNCHANGED
    try:
        with _quiet_opencv(), _decoder_messages() as messages:
            image = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    except cv2.error:
        image = None
    if image is None or image.size == 0:
        said = f": {messages[0]}" if messages else ""
        raise InputError(f"truncated or corrupt {name} file (cannot decode it{said})")
    alarming = [m for m in messages if not _BENIGN_DECODER_MESSAGE.match(m)]
    if alarming:  # decoded, but the decoder filled in or skipped damaged data
        raise InputError(f"truncated or corrupt {name} file ({alarming[0]})")
    _check_size(image.shape[1], image.shape[0])
    if image.dtype == np.uint8 and image.ndim == 2:
        return image
    try:
        gray = _to_gray01(image)
    except (TypeError, ValueError) as exc:
        raise InputError(f"unsupported {name} pixel format ({exc})") from None
    return np.rint(gray * 255).astype(np.uint8)


def _sniff(data: bytes) -> str | None:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data.startswith(b"BM"):
        return "bmp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if data[:4] in (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+"):
        return "tiff"
    if re.match(rb"P[1-7]\s", data[:3]):
        return "pnm"
    if data.startswith(b"\x93NUMPY"):
        return "npy"
    return None


def _check_size(width: int, height: int) -> None:
    if width <= 0 or height <= 0:
        raise InputError(f"image has no pixels ({width}x{height})")
    if width * height > MAX_PIXELS:
        raise InputError(
            f"image is too large ({width}x{height} = {width * height:,} pixels; the limit is {MAX_PIXELS:,})"
        )


# Header readers: (width, height) from the first bytes, without decoding; None when unreadable.


def _png_size(data: bytes) -> tuple[int, int] | None:
    if len(data) < 24 or data[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", data[16:24])


def _png_intact(data: bytes) -> bool:
    """True when whole chunks with good checksums run up to an IEND.

    Checked before decoding because libpng reports broken files by printing to stderr.
    """
    view = memoryview(data)
    pos = 8
    while pos + 12 <= len(data):
        length, chunk = struct.unpack(">I4s", view[pos : pos + 8])
        end = pos + 12 + length
        if end > len(data) or zlib.crc32(view[pos + 4 : end - 4]) != int.from_bytes(view[end - 4 : end], "big"):
            return False
        if chunk == b"IEND":
            return True
        pos = end
    return False


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
        elif marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            pos += 2
        elif marker in (0xD9, 0xDA):  # end of image, or scan data before any frame header
            return None
        elif 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # start of frame
            if pos + 9 > len(data):
                return None
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return width, height
        else:
            length = int.from_bytes(data[pos + 2 : pos + 4], "big")
            if length < 2:
                return None
            pos += 2 + length
    return None


def _bmp_size(data: bytes) -> tuple[int, int] | None:
    if len(data) < 26:
        return None
    header = int.from_bytes(data[14:18], "little")
    if header == 12:  # OS/2 BITMAPCOREHEADER
        return struct.unpack("<HH", data[18:22])
    if header >= 16:
        width, height = struct.unpack("<ii", data[18:26])
        return abs(width), abs(height)
    return None


def _tiff_size(data: bytes) -> tuple[int, int] | None:
    order = "<" if data[:2] == b"II" else ">"
    try:
        (version,) = struct.unpack_from(order + "H", data, 2)
        if version == 42:
            (ifd,) = struct.unpack_from(order + "I", data, 4)
            (count,) = struct.unpack_from(order + "H", data, ifd)
            first, entry_size, value_at = ifd + 2, 12, 8
        else:  # BigTIFF
            (ifd,) = struct.unpack_from(order + "Q", data, 8)
            (count,) = struct.unpack_from(order + "Q", data, ifd)
            first, entry_size, value_at = ifd + 8, 20, 12
        found = {}
        for index in range(min(count, 4096)):
            entry = first + index * entry_size
            tag, kind = struct.unpack_from(order + "HH", data, entry)
            if tag in (256, 257):  # ImageWidth, ImageLength
                code = {3: "H", 4: "I", 16: "Q"}.get(kind)
                if code is None:
                    return None
                (found[tag],) = struct.unpack_from(order + code, data, entry + value_at)
                if len(found) == 2:
                    return found[256], found[257]
    except struct.error:
        return None
    return None


def _pnm_size(data: bytes) -> tuple[int, int] | None:
    head = data[:4096]
    if head[1:2] == b"7":  # PAM: "WIDTH n" / "HEIGHT n" lines up to ENDHDR
        fields = {}
        for line in head[3:].splitlines():
            words = line.split(b"#", 1)[0].split()
            if words[:1] == [b"ENDHDR"]:
                break
            if len(words) == 2:
                fields[words[0]] = words[1]
        numbers = [fields.get(b"WIDTH"), fields.get(b"HEIGHT")]
    else:
        numbers = re.sub(rb"#[^\r\n]*", b" ", head[2:]).split()[:2]
    if len(numbers) != 2 or not all(n is not None and n.isdigit() for n in numbers):
        return None
    return int(numbers[0]), int(numbers[1])


_HEADER_READERS = {
    "png": _png_size,
    "jpeg": _jpeg_size,
    "bmp": _bmp_size,
    "tiff": _tiff_size,
    "pnm": _pnm_size,
}


# The header numpy (and cnpy and others) write, matched exactly: it is never evaluated. numpy's own reader
# runs ast.literal_eval on it, which can raise tokenize errors and print SyntaxWarnings for crafted files.
_NPY_HEADER = re.compile(
    r"\{\s*'descr'\s*:\s*'([^'\\]{1,32})'\s*,\s*'fortran_order'\s*:\s*(True|False)\s*,"
    r"\s*'shape'\s*:\s*\(\s*((?:\d{1,12}\s*,\s*)*\d{0,12})\s*\)\s*,?\s*\}\s*",
    re.ASCII)  # ASCII digits and spaces only: int() refuses some of what Unicode calls a space (say "\x1d28")
_NPY_NUMERIC = re.compile(r"[<>|=]?(?:[ui][1248]|f[248])", re.ASCII)


def _npy_header(data: bytes) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """(shape, fortran order, dtype, offset of the data) of a .npy file."""
    bad = InputError("truncated or corrupt .npy file (bad header)")
    if len(data) < 10:
        raise bad
    version = (data[6], data[7])
    if version not in ((1, 0), (2, 0), (3, 0)):
        raise InputError(f"unsupported .npy format version {version[0]}.{version[1]}")
    start = 10 if version == (1, 0) else 12
    length = int.from_bytes(data[8:start], "little")
    if length > 65536 or start + length > len(data):
        raise bad
    try:
        text = data[start : start + length].decode("utf-8" if version == (3, 0) else "latin1")
    except UnicodeDecodeError:
        raise bad from None
    match = _NPY_HEADER.fullmatch(text)
    if match is None:
        raise bad
    # Only the plain integer and float codes numpy writes ('<f4', '|u1', ...) reach np.dtype, which would
    # parse anything else ("i4,f8"), raise SyntaxError on junk and warn about deprecated aliases.
    if match[1].lstrip("<>|=").startswith("O"):  # decided on the header alone: loading would unpickle
        raise InputError("object arrays are not accepted (they would need unpickling); save a numeric array")
    if not _NPY_NUMERIC.fullmatch(match[1]):
        raise InputError(f"unsupported array dtype {match[1]!r}; expected integers or floats")
    dtype = np.dtype(match[1])
    shape = tuple(int(v.strip()) for v in match[3].split(",") if v.strip())
    return shape, match[2] == "True", dtype, start + length


def _load_npy(data: bytes) -> np.ndarray:
    shape, fortran, dtype, offset = _npy_header(data)  # only integer and float dtypes get through
    if len(shape) == 3 and shape[0] == 1:
        height, width = shape[1:]
    elif len(shape) == 3 and shape[2] == 1:
        height, width = shape[:2]
    elif len(shape) == 2:
        height, width = shape
    else:
        raise InputError(f"array shape {shape} is not a gray image; expected (H, W), (1, H, W) or (H, W, 1)")
    _check_size(width, height)
    try:
        array = np.frombuffer(data, dtype=dtype, count=height * width, offset=offset)
    except ValueError:
        raise InputError("truncated or corrupt .npy file") from None
    array = array.reshape(shape, order="F" if fortran else "C").reshape(height, width)
    if dtype.kind == "f" and not np.isfinite(array).all():
        raise InputError("array contains NaN or infinite values")
    low, high = array.min().item(), array.max().item()
    if dtype.kind == "f":
        if low < 0 or high > 1:
            raise InputError(f"float arrays must hold values in [0, 1]; found values in [{low:g}, {high:g}]")
        return array.astype(np.float32)
    if low < 0 or high > 255:
        raise InputError(f"integer arrays must hold values in [0, 255]; found values in [{low}, {high}]")
    return array.astype(np.uint8)


_log_lock = threading.Lock()
_log_users = 0
_log_saved = 0

# libpng and libjpeg print their warnings and errors straight to the C stderr, which OpenCV's log level
# does not reach. These are their messages (libjpeg-turbo's JWRN_* texts); the benign ones do not
# mean the pixels are damaged (ancillary PNG chunks, stray bytes between JPEG segments).
_DECODER_LINE = re.compile(
    rb"(?:libpng (?:error|warning)|Corrupt JPEG data|Premature end of JPEG file|Invalid SOS parameters"
    rb"|Inconsistent progression|Unknown Adobe color transform|Warning: unknown JFIF|Application transferred)"
    rb"[^\n]*(?:\n|$)")
_BENIGN_DECODER_MESSAGE = re.compile(
    r"libpng warning: (?:iCCP|sRGB|cHRM|gAMA|sBIT|bKGD|pHYs|tIME|tEXt|zTXt|iTXt|Ignoring)"
    r"|Corrupt JPEG data: \d+ extraneous bytes before marker|Warning: unknown JFIF|Unknown Adobe color transform")
_fd_lock = threading.Lock()
_fd_users = 0
_fd_saved = -1
_fd_file = None


@contextmanager
def _decoder_messages():
    """Collect what the C decoders print to fd 2 during the block, instead of letting it reach the user.

    fd 2 is process-wide: while any thread decodes, it points at a temporary file. When the last
    decoding thread is done it is restored, and whatever was captured that is not a decoder message
    (another thread's output) is written back. Yields a list that then holds this block's decoder
    messages (with concurrent decodes, possibly also another thread's).
    """
    global _fd_users, _fd_saved, _fd_file
    messages: list[str] = []
    with _fd_lock:
        if _fd_users == 0:
            try:
                if not hasattr(os, "pread"):  # not POSIX: leave fd 2 alone
                    raise OSError("no os.pread")
                if sys.stderr is not None:
                    sys.stderr.flush()
                capture = tempfile.TemporaryFile()
                saved = os.dup(2)
                os.dup2(capture.fileno(), 2)
            except (OSError, ValueError, AttributeError):  # no usable fd 2: nothing to capture
                capture = None
            else:
                _fd_file, _fd_saved = capture, saved
        else:
            capture = _fd_file
        if capture is not None:
            _fd_users += 1
            start = os.fstat(capture.fileno()).st_size
    if capture is None:
        yield messages
        return
    try:
        yield messages
    finally:
        with _fd_lock:
            file = _fd_file
            end = os.fstat(file.fileno()).st_size
            text = os.pread(file.fileno(), end - start, start) if end > start else b""
            messages += [" ".join(m.decode("utf-8", "replace").split()) for m in _DECODER_LINE.findall(text)]
            _fd_users -= 1
            if _fd_users == 0:
                if sys.stderr is not None:
                    sys.stderr.flush()
                os.dup2(_fd_saved, 2)
                os.close(_fd_saved)
                rest = _DECODER_LINE.sub(b"", os.pread(file.fileno(), end, 0)) if end else b""
                while rest:
                    rest = rest[os.write(2, rest):]
                file.close()
                _fd_file, _fd_saved = None, -1


@contextmanager
def _quiet_opencv():
    """Silence OpenCV's own logging to stderr while a (possibly broken) file is decoded."""
    global _log_users, _log_saved
    logging = getattr(getattr(cv2, "utils", None), "logging", None)
    if logging is None:
        yield
        return
    with _log_lock:
        if _log_users == 0:
            _log_saved = logging.getLogLevel()
            logging.setLogLevel(logging.LOG_LEVEL_SILENT)
        _log_users += 1
    try:
        yield
    finally:
        with _log_lock:
            _log_users -= 1
            if _log_users == 0:
                logging.setLogLevel(_log_saved)


# --------------------------------------------------------------------------- normalising


def preprocess(image: np.ndarray) -> np.ndarray:
    """Turn a digit image into a 28x28 float32 array in [0, 1], white ink on black (MNIST style).

    ``image`` is 2-D gray, H x W x 1, H x W x 3 (BGR) or H x W x 4 (BGRA); uint8, uint16, other
    integers in [0, 255], or floats in [0, 1]. A 28x28 image that already looks like MNIST
    (dark border and background) is only converted to float; anything else is inverted if
    needed, thresholded, cropped to the digit, scaled into 20x20 and centred by its centre of
    mass. Raises TypeError for a non-array or non-numeric dtype and :class:`InputError` (a
    ValueError) for a bad shape, bad values or an image with no digit.
    """
    gray = _to_gray01(image)
    if gray.shape == (_SIZE, _SIZE) and _looks_like_mnist(gray):
        if gray.max() - gray.min() < _MIN_CONTRAST:
            raise InputError(_BLANK)
        return gray
    try:
        return _normalise(gray)
    except cv2.error as exc:
        reason = " ".join(str(getattr(exc, "err", "") or "error").split())
        raise InputError(f"image could not be processed (OpenCV: {reason})") from None


def _to_gray01(image: np.ndarray) -> np.ndarray:
    """Validate ``image`` and return it as 2-D float32 brightness in [0, 1]."""
    if not isinstance(image, np.ndarray):
        raise TypeError(f"expected a numpy array, got {type(image).__name__}")
    image = np.asarray(image)
    if image.dtype.kind not in "uif":
        raise TypeError(f"expected a numeric image array, got dtype {image.dtype}")
    if image.size == 0:
        raise InputError(f"empty image array (shape {image.shape})")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (3, 4))):
        raise InputError(f"expected a 2-D gray image or an H x W x 3/4 colour image, got shape {image.shape}")
    _check_size(image.shape[1], image.shape[0])

    if image.dtype == np.uint8:
        pixels = image.astype(np.float32) / np.float32(255)
    elif image.dtype == np.uint16:
        pixels = image.astype(np.float32) / np.float32(65535)
    elif image.dtype.kind in "iu":
        low, high = image.min().item(), image.max().item()
        if low < 0 or high > 255:
            raise InputError(f"integer pixel values must be in [0, 255] (or dtype uint16); found [{low}, {high}]")
        pixels = image.astype(np.float32) / np.float32(255)
    else:
        if not np.isfinite(image).all():
            raise InputError("image contains NaN or infinite values")
        low, high = float(image.min()), float(image.max())
        if low < 0 or high > 1:
            raise InputError(f"float pixel values must be in [0, 1]; found [{low:g}, {high:g}]")
        pixels = image.astype(np.float32)

    if pixels.ndim == 3:
        blue, green, red = pixels[..., 0], pixels[..., 1], pixels[..., 2]
        gray = np.float32(0.114) * blue + np.float32(0.587) * green + np.float32(0.299) * red
        if pixels.shape[2] == 4:
            gray = _flatten_alpha(gray, pixels[..., 3])
        pixels = np.clip(gray, 0, 1, out=gray)
    return pixels


def _flatten_alpha(gray: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Composite onto the background that contrasts with the visible (opaque) content."""
    weight = float(alpha.sum())
    light_content = weight > 0 and float((gray * alpha).sum()) / weight > 0.5
    background = np.float32(0.0 if light_content else 1.0)
    return gray * alpha + background * (np.float32(1) - alpha)


def _looks_like_mnist(gray: np.ndarray) -> bool:
    """A dark image whose 2-pixel frame is (almost) all dark, as every MNIST digit is."""
    frame = np.ones(gray.shape, bool)
    frame[2:-2, 2:-2] = False
    return float(np.mean(gray[frame] < 0.25)) >= 0.9 and float(np.median(gray)) < 0.25


def _normalise(gray: np.ndarray) -> np.ndarray:
    height, width = gray.shape
    if max(height, width) > _WORK_SIDE:
        scale = _WORK_SIDE / max(height, width)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
        height, width = gray.shape
    if gray.max() - gray.min() < _MIN_CONTRAST:
        raise InputError(_BLANK)

    # Threshold (Otsu) a lightly smoothed copy; the side the frame falls on is the background.
    sigma = min(height, width) / 150
    smooth = cv2.GaussianBlur(gray, (0, 0), sigma) if sigma >= 0.5 else gray
    levels = np.rint(smooth * 255).astype(np.uint8)
    threshold, _ = cv2.threshold(levels, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
    bright = levels > threshold
    if bright.all() or not bright.any():
        raise InputError(_BLANK)
    border = max(1, min(height, width) // 20)
    frame = np.ones(gray.shape, bool)
    frame[border:-border, border:-border] = False
    inverted = np.median(levels[frame]) > threshold  # light background: dark ink
    ink = np.float32(1) - gray if inverted else gray
    mask = ~bright if inverted else bright

    # Keep the ink blobs, dropping specks.
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    areas = stats[1:, cv2.CC_STAT_AREA]
    if areas.size == 0 or areas.max() < _MIN_INK_AREA:
        raise InputError(_BLANK)
    kept = 1 + np.flatnonzero(areas >= max(2, _SPECK_FRACTION * areas.max()))
    mask = np.isin(labels, kept)

    # Grey levels rescaled so the background is 0 and the stroke 1, anti-aliased edges between.
    background = float(np.median(ink[~mask]))
    stroke = float(np.median(ink[mask]))
    if stroke - background < _MIN_CONTRAST:
        raise InputError(_BLANK)
    support = cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    level = np.clip((ink - background) / (stroke - background), 0, 1) * support

    # Crop to the digit (1 pixel of edge around it) and scale into 20x20, keeping the aspect ratio.
    left = max(0, int(stats[kept, cv2.CC_STAT_LEFT].min()) - 1)
    top = max(0, int(stats[kept, cv2.CC_STAT_TOP].min()) - 1)
    right = min(width, int((stats[kept, cv2.CC_STAT_LEFT] + stats[kept, cv2.CC_STAT_WIDTH]).max()) + 1)
    bottom = min(height, int((stats[kept, cv2.CC_STAT_TOP] + stats[kept, cv2.CC_STAT_HEIGHT]).max()) + 1)
    crop = np.ascontiguousarray(level[top:bottom, left:right], dtype=np.float32)
    box_h, box_w = crop.shape
    scale = _BOX / max(box_h, box_w)
    size = (max(1, round(box_w * scale)), max(1, round(box_h * scale)))
    shrink = scale < 1
    digit = cv2.resize(crop, size, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    digit = np.clip(digit, 0, 1)
    peak = float(digit.max())
    if peak <= 0:
        raise InputError(_BLANK)
    digit /= peak

    # Paste into 28x28 so the centre of mass lands on (14, 14), never cutting the digit off.
    total = float(digit.sum())
    rows, cols = digit.shape
    centre_y = float(digit.sum(axis=1) @ np.arange(rows)) / total
    centre_x = float(digit.sum(axis=0) @ np.arange(cols)) / total
    top = min(max(math.floor(_SIZE / 2 - centre_y + 0.5), 0), _SIZE - rows)
    left = min(max(math.floor(_SIZE / 2 - centre_x + 0.5), 0), _SIZE - cols)
    out = np.zeros((_SIZE, _SIZE), np.float32)
    out[top : top + rows, left : left + cols] = digit
    return out
