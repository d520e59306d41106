"""Image files and bytes -> gray pixel arrays, refusing anything that cannot be read safely (OpenCV + numpy).

``load_image`` reads a file (a regular file of a supported suffix, at most 1 GiB), sniffs its format from
its content, reads the image size from the header and refuses an image over :data:`MAX_PIXELS` before
any decoder sees it, then decodes it with OpenCV (``.npy`` with its own strict parser: nothing is ever
unpickled). What the C decoders print to stderr about damaged data is captured and becomes the refusal.
Every problem is raised as :class:`~edgeguard.errors.InputError`; no ``cv2.error`` reaches the caller.
``to_gray01`` validates any pixel array and returns its brightness; ``edgeguard.normalize`` builds on it.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import cv2
import numpy as np

from edgeguard.decoder_output import BENIGN_DECODER_MESSAGE, decoder_messages, decoding_many, quiet_opencv
from edgeguard.errors import InputError
from edgeguard.headers import SIZE_READERS, npy_header, png_intact

__all__ = ["MAX_PIXELS", "SUPPORTED_SUFFIXES", "decode_image", "load_image", "load_images", "to_gray01", "check_size",
           "quiet_opencv", "decoding_many"]

MAX_PIXELS = 40_000_000
"""Largest image (width x height) accepted; larger ones are refused before decoding."""

SUPPORTED_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".pgm", ".pnm", ".ppm", ".tif", ".tiff", ".npy"}
)

_MAX_FILE_BYTES = 1 << 30  # no supported image within MAX_PIXELS needs more
_FORMAT_NAMES = {"png": "PNG", "jpeg": "JPEG", "bmp": "BMP", "pnm": "PNM", "tiff": "TIFF"}


# --------------------------------------------------------------------------- files


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


def load_images(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image file, or a ``.npy`` batch of gray images, into an (N, H, W) array.

    A ``.npy`` file may hold one image (as ``load_image`` reads it) or a batch shaped (N, H, W) or
    (N, 1, H, W), each image checked as ``load_image`` checks one; any other file gives N = 1. Same dtypes
    and :class:`InputError` refusals as ``load_image`` (an empty batch is refused too).
    """
    data = _read_file(path)
    try:
        return _load_npy(data, batch=True) if _sniff(data) == "npy" else _decode(data)[np.newaxis]
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


# --------------------------------------------------------------------------- bytes


def decode_image(data: bytes | bytearray | memoryview, source: str | None = None) -> np.ndarray:
    """An image file's bytes (an upload, a message) -> a 2-D gray array, exactly as ``load_image`` reads a file.

    The format is sniffed from the content (PNG, JPEG, BMP, PNM, TIFF or ``.npy``; no suffix needed), the size
    is read from the header and checked before any decoder runs, and the same byte limit as for files applies.
    Raises :class:`InputError` (one line, naming ``source`` when given) for anything that cannot be read safely,
    and TypeError when ``data`` is not bytes."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be the bytes of an image file, got {type(data).__name__}")
    try:
        raw = bytes(data)
        if not raw:
            raise InputError("empty input (0 bytes)")
        if len(raw) > _MAX_FILE_BYTES:
            raise InputError(f"input is too large ({len(raw):,} bytes)")
        return _decode(raw)
    except InputError as err:
        raise (err.with_path(source) if source is not None else err) from None


def _decode(data: bytes) -> np.ndarray:
    kind = _sniff(data)
    if kind == "gif":
        raise InputError("GIF is not supported; convert to PNG")
    if kind is None:
        raise InputError("not a supported image file (the content is not PNG, JPEG, BMP, PNM, TIFF or .npy)")
    if kind == "npy":
        return _load_npy(data)
    name = _FORMAT_NAMES[kind]
    size = SIZE_READERS[kind](data)
    if size is None:
        raise InputError(f"truncated or corrupt {name} file (cannot read the image size)")
    check_size(*size)
    if kind == "png" and not png_intact(data):
        raise InputError("truncated or corrupt PNG file")
    # JPEG: keep colour and depth but apply the EXIF orientation (IMREAD_UNCHANGED ignores it).
    flags = cv2.IMREAD_ANYCOLOR | cv2.IMREAD_ANYDEPTH if kind == "jpeg" else cv2.IMREAD_UNCHANGED
    try:
        with quiet_opencv(), decoder_messages() as messages:
            image = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    except cv2.error:
        image = None
    if image is None or image.size == 0:
        said = f": {messages[0]}" if messages else ""
        raise InputError(f"truncated or corrupt {name} file (cannot decode it{said})")
    alarming = [m for m in messages if not BENIGN_DECODER_MESSAGE.match(m)]
    if alarming:  # decoded, but the decoder filled in or skipped damaged data
        raise InputError(f"truncated or corrupt {name} file ({alarming[0]})")
    check_size(image.shape[1], image.shape[0])
    if image.dtype == np.uint8 and image.ndim == 2:
        return image
    try:
        gray = to_gray01(image)
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


def check_size(width: int, height: int) -> None:
    """Refuse an image with no pixels or more than :data:`MAX_PIXELS`."""
    if width <= 0 or height <= 0:
        raise InputError(f"image has no pixels ({width}x{height})")
    if width * height > MAX_PIXELS:
        raise InputError(
            f"image is too large ({width}x{height} = {width * height:,} pixels; the limit is {MAX_PIXELS:,})"
        )


def _load_npy(data: bytes, *, batch: bool = False) -> np.ndarray:
    """One gray image (H, W); with ``batch``, (N, H, W): also accepts (N, H, W) and (N, 1, H, W) arrays."""
    shape, fortran, dtype, offset = npy_header(data)  # only integer and float dtypes get through
    if batch and len(shape) == 4 and shape[1] == 1:
        count, height, width = shape[0], shape[2], shape[3]
    elif batch and len(shape) == 3 and shape[2] != 1:  # (H, W, 1) stays one image
        count, height, width = shape
    elif len(shape) == 3 and shape[0] == 1:
        count, (height, width) = 1, shape[1:]
    elif len(shape) == 3 and shape[2] == 1:
        count, (height, width) = 1, shape[:2]
    elif len(shape) == 2:
        count, (height, width) = 1, shape
    else:
        raise InputError(f"array shape {shape} is not a gray image; expected (H, W), (1, H, W) or (H, W, 1)"
                         + (", or a batch (N, H, W)" if batch else ""))
    if count == 0:
        raise InputError(f"the .npy batch holds no images (shape {shape})")
    check_size(width, height)
    try:
        array = np.frombuffer(data, dtype=dtype, count=count * height * width, offset=offset)
    except ValueError:
        raise InputError("truncated or corrupt .npy file") from None
    array = array.reshape(shape, order="F" if fortran else "C").reshape(count, height, width)
    if dtype.kind == "f" and not np.isfinite(array).all():
        raise InputError("array contains NaN or infinite values")
    low, high = array.min().item(), array.max().item()
    if dtype.kind == "f":
        if low < 0 or high > 1:
            raise InputError(f"float arrays must hold values in [0, 1]; found values in [{low:g}, {high:g}]")
        result = array.astype(np.float32)
    elif low < 0 or high > 255:
        raise InputError(f"integer arrays must hold values in [0, 255]; found values in [{low}, {high}]")
    else:
        result = array.astype(np.uint8)
    return result if batch else result[0]


# --------------------------------------------------------------------------- pixel arrays


def to_gray01(image: np.ndarray) -> np.ndarray:
    """Validate ``image`` and return it as 2-D float32 brightness in [0, 1].

    ``image`` is 2-D gray, H x W x 1, H x W x 3 (BGR) or H x W x 4 (BGRA); uint8, uint16, other integers
    in [0, 255], or floats in [0, 1]. Raises TypeError for a non-array or non-numeric dtype and
    :class:`InputError` for a bad shape, bad values or more than :data:`MAX_PIXELS` pixels.
    """
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
    check_size(image.shape[1], image.shape[0])

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
