"""The malformed-input corpus: files a user (or an attacker) may hand to ``edgeguard detect``.

``make_corpus(dest)`` writes every case into ``dest`` and returns ``{case name: path}``; ``CASES``
says what each case is and what EdgeGuard must do with it. Runnable as a script:

    python -m benchmarks.corpus DEST      # writes the corpus, prints one line per case

Nothing here is kept in git: the tests, ``benchmarks.reliability`` and ``benchmarks.fuzz_decode`` generate
the files into a temporary folder. Pillow (a dependency of matplotlib, in the ``train`` extra) builds the palette PNG,
the CMYK JPEG and the animated GIF; without it the CMYK case is left out (``make_corpus`` says so in
``SKIPPED``) and the GIF is written from a handcrafted byte string.

Policy for files that decode (documented in reports/reliability.md):

- an image that can carry a digit is **screened**, converted to gray the way a person sees it:
  16-bit scaled to 8 bits, alpha composited onto the contrasting background, a palette expanded,
  CMYK converted to RGB by the decoder;
- an image with no digit in it (1x1, all black, all white) is **refused**: "no digit found";
- a container EdgeGuard does not read (GIF, animated or not) is **refused** with a hint to convert.

Every refusal is an ``InputError`` naming the file; ``edgeguard detect`` prints it as one
``error: <file>: <problem>`` line, screens the other files and exits 2.
"""

from __future__ import annotations

import os
import pathlib
import struct
import sys
import zlib
from dataclasses import dataclass

import cv2
import numpy as np

from edgeguard.contract import SIDE

MARKER = "UNPICKLED"
"""File that loading ``object.npy`` with pickle would create (in the corpus folder)."""

SKIPPED: dict[str, str] = {}
"""Cases the last ``make_corpus`` call could not build, with why."""


@dataclass(frozen=True)
class Case:
    file: str  # path relative to the corpus folder
    what: str  # what the case is, for the report
    expect: str  # "refused" or "screened"
    fragment: str = ""  # refused: words the one-line message must hold (case-insensitive)
    cli_expect: str | None = None  # where `edgeguard detect` differs from Guard.screen_file
    cli_fragment: str = ""
    simulated: str = ""  # how a condition root cannot create for real is produced


CASES: dict[str, Case] = {
    "empty_png": Case("empty.png", "zero-byte .png", "refused", "empty file"),
    "empty_npy": Case("empty.npy", "zero-byte .npy", "refused", "empty file"),
    "truncated_png": Case("truncated.png", "PNG cut in half", "refused", "truncated or corrupt PNG"),
    "truncated_jpeg": Case("truncated.jpg", "JPEG cut in half", "refused", "truncated or corrupt JPEG"),
    "text_as_png": Case("notes.png", "a text file named .png", "refused", "not a supported image"),
    "bomb_png": Case("bomb.png", "PNG whose header claims 100000x100000", "refused", "too large"),
    "gif_animated": Case("animated.gif", "animated GIF (2 frames)", "refused", "GIF is not supported"),
    "tiny_1x1": Case("tiny_1x1.png", "1x1 PNG", "refused", "no digit found"),
    "all_black": Case("all_black.png", "all-black 64x64 PNG", "refused", "no digit found"),
    "all_white": Case("all_white.png", "all-white 64x64 PNG", "refused", "no digit found"),
    "npy_wrong_shape": Case("wrong_shape.npy", ".npy shaped (2, 3, 28, 28)", "refused", "shape"),
    "npy_wrong_dtype": Case("wrong_dtype.npy", ".npy of complex64", "refused", "dtype"),
    "npy_nan": Case("nan.npy", ".npy holding a NaN", "refused", "NaN"),
    "npy_inf": Case("inf.npy", ".npy holding +inf", "refused", "infinite"),
    "npy_object": Case("object.npy", ".npy of pickled objects whose __reduce__ creates a marker file",
                       "refused", "object arrays"),
    "symlink_loop": Case("loop_a.png", "symlinks pointing at each other (loop_a.png <-> loop_b.png)",
                         "refused", "too many levels of symbolic links"),
    "dir_symlink_loop": Case("loopdir", "folder holding a digit and symlinks to itself and its parent",
                             "refused", "is a directory",
                             cli_expect="screened", cli_fragment="the digit inside, exactly once"),
    "missing": Case("missing.png", "a path that does not exist", "refused", "file not found"),
    "unreadable": Case("secret.png", "a file without read permission", "refused", "permission denied",
                       simulated="root reads chmod 000 files: denied by dropping CAP_DAC_OVERRIDE "
                                 "(setpriv) for a subprocess, or by patching Path.read_bytes in-process"),
    "deep16_png": Case("deep16.png", "16-bit gray PNG of a digit", "screened"),
    "rgba_png": Case("rgba.png", "RGBA PNG: dark digit on a transparent background", "screened"),
    "palette_png": Case("palette.png", "palette (P mode) PNG of a digit", "screened"),
    "cmyk_jpeg": Case("cmyk.jpg", "CMYK JPEG (Adobe) of a digit", "screened"),
    "good_png": Case("good.png", "control: a photo-like PNG of a 7", "screened"),
    "good_npy": Case("good.npy", "control: an MNIST-style uint8 .npy", "screened"),
}

# A 1x1 GIF frame (image descriptor + LZW data), used twice when Pillow is missing.
_GIF_FRAME = b"!\xf9\x04\x00\x0a\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00"
_GIF_HAND = (b"GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\xff\xff\x00\x00\x00"
             b"!\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00" + _GIF_FRAME + _GIF_FRAME + b";")


class Booby:
    """Unpickling this creates ``marker``: proof that a loader unpickled it."""

    def __init__(self, marker: pathlib.Path):
        self.marker = pathlib.Path(marker)

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def seven(height: int = 80, width: int = 60, paper: int = 225, ink: int = 25) -> np.ndarray:
    """A dark "7" on light paper (uint8), with a little deterministic noise."""
    image = np.full((height, width), paper, np.uint8)
    top, bottom = height // 4, height * 4 // 5
    left, right = width // 4, width * 3 // 4
    thickness = max(2, height // 14)
    cv2.line(image, (left, top), (right, top), ink, thickness, cv2.LINE_AA)
    cv2.line(image, (right, top), (left + (right - left) // 3, bottom), ink, thickness, cv2.LINE_AA)
    noise = np.random.default_rng(7).integers(-6, 7, image.shape)
    return np.clip(image.astype(int) + noise, 0, 255).astype(np.uint8)


def mnist_style() -> np.ndarray:
    """A SIDE x SIDE (28x28) uint8 "0": white ink on black, inside the 20x20 box."""
    image = np.zeros((SIDE, SIDE), np.uint8)
    cv2.ellipse(image, (SIDE // 2, SIDE // 2), (5, 8), 0, 0, 360, 255, 2, cv2.LINE_AA)
    return image


def png_claiming(width: int, height: int) -> bytes:
    """A well-formed PNG (good CRCs, IEND) whose IHDR claims width x height, with almost no data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


def _encode(suffix: str, image: np.ndarray) -> bytes:
    ok, buffer = cv2.imencode(suffix, image)
    if not ok:
        raise RuntimeError(f"OpenCV could not encode {suffix}")
    return buffer.tobytes()


def _pil():
    try:
        from PIL import Image
    except ImportError:
        return None
    return Image


def _build(name: str, path: pathlib.Path, dest: pathlib.Path) -> bool:
    """Writes case ``name`` at ``path``; False when it cannot be built here."""
    digit = seven()
    Image = _pil()
    if name in ("empty_png", "empty_npy"):
        path.write_bytes(b"")
    elif name == "truncated_png":
        data = _encode(".png", digit)
        path.write_bytes(data[: len(data) // 2])
    elif name == "truncated_jpeg":
        data = _encode(".jpg", digit)
        path.write_bytes(data[: len(data) // 2])
    elif name == "text_as_png":
        path.write_text("This is a shopping list, not a picture of a digit.\n", encoding="utf-8")
    elif name == "bomb_png":
        path.write_bytes(png_claiming(100_000, 100_000))
    elif name == "gif_animated":
        if Image is None:
            path.write_bytes(_GIF_HAND)
        else:
            frames = [Image.fromarray(digit), Image.fromarray(255 - digit)]
            frames[0].save(path, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    elif name == "tiny_1x1":
        path.write_bytes(_encode(".png", np.full((1, 1), 128, np.uint8)))
    elif name == "all_black":
        path.write_bytes(_encode(".png", np.zeros((64, 64), np.uint8)))
    elif name == "all_white":
        path.write_bytes(_encode(".png", np.full((64, 64), 255, np.uint8)))
    elif name == "npy_wrong_shape":
        np.save(path, np.zeros((2, 3, SIDE, SIDE), np.uint8))  # (N, 28, 28) is a batch `detect` screens
    elif name == "npy_wrong_dtype":
        np.save(path, np.zeros((SIDE, SIDE), np.complex64))
    elif name == "npy_nan":
        array = mnist_style().astype(np.float32) / 255
        array[3, 3] = np.nan
        np.save(path, array)
    elif name == "npy_inf":
        array = mnist_style().astype(np.float32) / 255
        array[3, 3] = np.inf
        np.save(path, array)
    elif name == "npy_object":
        np.save(path, np.array([Booby(dest / MARKER)], dtype=object), allow_pickle=True)
    elif name == "symlink_loop":
        os.symlink("loop_b.png", dest / "loop_a.png")
        os.symlink("loop_a.png", dest / "loop_b.png")
    elif name == "dir_symlink_loop":
        path.mkdir()
        (path / "inside.png").write_bytes(_encode(".png", digit))
        os.symlink(".", path / "self")
        os.symlink("..", path / "up")
    elif name == "missing":
        pass  # never created
    elif name == "unreadable":
        path.write_bytes(_encode(".png", digit))
        path.chmod(0)  # stops any reader without CAP_DAC_OVERRIDE
    elif name == "deep16_png":
        path.write_bytes(_encode(".png", digit.astype(np.uint16) * 257))
    elif name == "rgba_png":
        rgba = np.zeros(digit.shape + (4,), np.uint8)
        rgba[..., 3] = 255 - digit  # the ink is opaque, the paper transparent
        path.write_bytes(_encode(".png", rgba))
    elif name == "palette_png":
        if Image is None:
            return False
        Image.fromarray(cv2.cvtColor(digit, cv2.COLOR_GRAY2RGB)).convert("P", palette=Image.ADAPTIVE,
                                                                          colors=16).save(path, format="PNG")
    elif name == "cmyk_jpeg":
        if Image is None:
            return False
        Image.fromarray(digit).convert("CMYK").save(path, format="JPEG", quality=95)
    elif name == "good_png":
        path.write_bytes(_encode(".png", digit))
    elif name == "good_npy":
        np.save(path, mnist_style())
    else:
        raise KeyError(name)
    return True


def make_corpus(dest: str | os.PathLike[str]) -> dict[str, pathlib.Path]:
    """Writes the corpus into ``dest`` (created; must not hold an earlier corpus) -> {case: path}."""
    dest = pathlib.Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    SKIPPED.clear()
    paths = {}
    for name, case in CASES.items():
        path = dest / case.file
        if _build(name, path, dest):
            paths[name] = path
        else:
            SKIPPED[name] = "Pillow is not installed"
    return paths


def _main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m benchmarks.corpus DEST", file=sys.stderr)
        return 2
    for name, path in make_corpus(argv[0]).items():
        case = CASES[name]
        print(f"{name:18} {case.expect:9} {path}")
    for name, why in SKIPPED.items():
        print(f"{name:18} skipped   ({why})")
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
