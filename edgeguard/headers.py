"""Image sizes and ``.npy`` headers read from a file's first bytes, without decoding it.

``edgeguard.decode`` asks these parsers how large an image is before any decoder sees it, so an image too
large to decode safely is refused first. They work on untrusted bytes: the size readers return None for
anything they cannot read, and ``npy_header`` raises :class:`~edgeguard.errors.InputError`.
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Callable

import numpy as np

from edgeguard.errors import InputError

__all__ = ["SIZE_READERS", "png_intact", "npy_header"]


# --------------------------------------------------------------------------- image sizes
# Each reader: (width, height) from the first bytes, without decoding; None when unreadable.


def _png_size(data: bytes) -> tuple[int, int] | None:
    if len(data) < 24 or data[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", data[16:24])


def png_intact(data: bytes) -> bool:
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
        found: dict[int, int] = {}
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
        numbers = [fields.get(b"WIDTH", b""), fields.get(b"HEIGHT", b"")]  # b"": missing, not a number
    else:
        numbers = re.sub(rb"#[^\r\n]*", b" ", head[2:]).split()[:2]
    if len(numbers) != 2 or not all(n.isdigit() for n in numbers):
        return None
    return int(numbers[0]), int(numbers[1])


#: Format (as ``edgeguard.decode`` sniffs it) -> its size reader.
SIZE_READERS: dict[str, Callable[[bytes], tuple[int, int] | None]] = {
    "png": _png_size,
    "jpeg": _jpeg_size,
    "bmp": _bmp_size,
    "tiff": _tiff_size,
    "pnm": _pnm_size,
}


# --------------------------------------------------------------------------- .npy

# The header numpy (and cnpy and others) write, matched exactly: it is never evaluated. numpy's own reader
# runs ast.literal_eval on it, which can raise tokenize errors and print SyntaxWarnings for crafted files.
_NPY_HEADER = re.compile(
    r"\{\s*'descr'\s*:\s*'([^'\\]{1,32})'\s*,\s*'fortran_order'\s*:\s*(True|False)\s*,"
    r"\s*'shape'\s*:\s*\(\s*((?:\d{1,12}\s*,\s*)*\d{0,12})\s*\)\s*,?\s*\}\s*",
    re.ASCII)  # ASCII digits and spaces only: int() refuses some of what Unicode calls a space (say "\x1d28")
_NPY_NUMERIC = re.compile(r"[<>|=]?(?:[ui][1248]|f[248])", re.ASCII)


def npy_header(data: bytes) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """(shape, fortran order, dtype, offset of the data) of a .npy file; only integer and float dtypes."""
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
