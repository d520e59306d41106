"""Tests for edgeguard.decode (loading image files safely) and edgeguard.normalize (MNIST-style normalisation)."""

from __future__ import annotations

import pathlib
import struct
import subprocess
import sys
import textwrap

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from benchmarks.corpus import png_claiming
from edgeguard import decode
from edgeguard.decode import MAX_PIXELS, SUPPORTED_SUFFIXES, load_image
from edgeguard.errors import InputError
from edgeguard.normalize import load_and_preprocess, preprocess

# --------------------------------------------------------------------------- helpers


def encode(path: pathlib.Path, image: np.ndarray) -> pathlib.Path:
    ok, buffer = cv2.imencode(path.suffix, image)
    assert ok
    path.write_bytes(buffer.tobytes())
    return path


def seven_mask(height: int = 300, width: int = 200, thickness: int = 18) -> np.ndarray:
    """A thick "7" (255 on 0), drawn into the upper-middle of the canvas."""
    mask = np.zeros((height, width), np.uint8)
    top, bottom = int(height * 0.25), int(height * 0.8)
    left, right = int(width * 0.25), int(width * 0.75)
    cv2.line(mask, (left, top), (right, top), 255, thickness, cv2.LINE_AA)
    cv2.line(mask, (right, top), (left + (right - left) // 3, bottom), 255, thickness, cv2.LINE_AA)
    return mask


def photo_of(mask: np.ndarray, paper: float = 215, ink: float = 35, noise: float = 8, seed: int = 0) -> np.ndarray:
    """Dark ink on light, noisy, slightly uneven paper."""
    rng = np.random.default_rng(seed)
    height, width = mask.shape
    shade = np.linspace(-10, 10, width, dtype=np.float32)[None, :]
    image = paper + shade - (paper - ink) * mask.astype(np.float32) / 255
    image += rng.normal(0, noise, mask.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def mnist_like() -> np.ndarray:
    """A 28x28 uint8 image drawn the MNIST way: white strokes on black, inside the central box."""
    image = np.zeros((28, 28), np.uint8)
    cv2.circle(image, (14, 14), 7, 255, 3, cv2.LINE_AA)
    image[13, 14] = 100
    return image


def centre_of_mass(image: np.ndarray) -> tuple[float, float]:
    rows, cols = np.indices(image.shape)
    total = image.sum()
    return float((image * rows).sum() / total), float((image * cols).sum() / total)


def ink_box(image: np.ndarray, level: float = 0.05) -> tuple[int, int, int, int]:
    rows = np.flatnonzero((image > level).any(axis=1))
    cols = np.flatnonzero((image > level).any(axis=0))
    return rows[0], rows[-1] + 1, cols[0], cols[-1] + 1


def assert_mnist_shaped(out: np.ndarray) -> None:
    assert out.shape == (28, 28)
    assert out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 1
    assert out.max() == pytest.approx(1)


def assert_refused(path: pathlib.Path, fragment: str, loader=load_and_preprocess) -> InputError:
    with pytest.raises(InputError) as caught:
        loader(path)
    text = str(caught.value)
    assert "\n" not in text
    assert path.name in text
    assert fragment.lower() in text.lower(), text
    return caught.value


# --------------------------------------------------------------------------- errors


def test_input_error_format():
    err = InputError("bad\nthing", "dir/x.png")
    assert str(err) == "dir/x.png: bad thing"
    assert err.reason == "bad thing" and err.path == "dir/x.png"
    assert isinstance(err, ValueError)
    assert str(InputError("no path")) == "no path"
    assert "\n" not in str(InputError("oops", "odd\nname.png"))


# --------------------------------------------------------------------------- loading


@pytest.mark.parametrize("suffix", [".png", ".bmp", ".pgm", ".pnm", ".tif", ".tiff"])
def test_lossless_formats_round_trip(tmp_path, suffix):
    image = photo_of(seven_mask(60, 40, 5))
    path = encode(tmp_path / f"digit{suffix}", image)
    loaded = load_image(path)
    assert loaded.dtype == np.uint8 and loaded.ndim == 2
    np.testing.assert_array_equal(loaded, image)


@pytest.mark.parametrize("suffix", [".jpg", ".jpeg"])
def test_jpeg_round_trip(tmp_path, suffix):
    image = photo_of(seven_mask(60, 40, 5), noise=0)
    loaded = load_image(encode(tmp_path / f"digit{suffix}", image))
    assert loaded.shape == image.shape and loaded.dtype == np.uint8
    assert np.abs(loaded.astype(int) - image).mean() < 1  # measured when written: 0.69 (deterministic)


@pytest.mark.parametrize("suffix", [".png", ".ppm", ".jpg"])
def test_colour_files_become_gray(tmp_path, suffix):
    colour = np.zeros((30, 40, 3), np.uint8)
    colour[:] = (40, 200, 120)
    loaded = load_image(encode(tmp_path / f"colour{suffix}", colour))
    assert loaded.shape == (30, 40)
    expected = cv2.cvtColor(colour, cv2.COLOR_BGR2GRAY)
    # Measured when written: 0 for all three; 1 allows rounding (reading the channels as RGB would be 15 off).
    assert np.abs(loaded.astype(int) - expected).max() <= 1


def test_unicode_path(tmp_path):
    image = mnist_like()
    path = encode(tmp_path / "ziffer_ä_数字.png", image)
    np.testing.assert_array_equal(load_image(path), image)
    np.testing.assert_array_equal(load_and_preprocess(str(path)), image.astype(np.float32) / 255)


def test_sixteen_bit_png(tmp_path):
    image = (photo_of(seven_mask(60, 40, 5)).astype(np.uint16) * 257).astype(np.uint16)
    image[0, 0] = 65535
    loaded = load_image(encode(tmp_path / "deep.png", image))
    assert loaded.dtype == np.uint8
    np.testing.assert_array_equal(loaded, np.rint(image / 257).astype(np.uint8))
    assert_mnist_shaped(load_and_preprocess(tmp_path / "deep.png"))


@pytest.mark.parametrize("ink_value", [0, 255])
def test_rgba_png_digit_on_transparent_background(tmp_path, ink_value):
    mask = seven_mask(120, 80, 9)
    rgba = np.zeros((120, 80, 4), np.uint8)
    rgba[..., :3] = ink_value
    rgba[..., 3] = mask  # only the strokes are opaque
    out = load_and_preprocess(encode(tmp_path / "canvas.png", rgba))
    reference = preprocess(mask)
    assert_mnist_shaped(out)
    assert np.abs(out - reference).mean() < 1e-3  # measured when written: 0 and 9e-10


def test_npy_uint8_and_float(tmp_path):
    image = mnist_like()
    np.save(tmp_path / "u8.npy", image)
    loaded = load_image(tmp_path / "u8.npy")
    assert loaded.dtype == np.uint8
    np.testing.assert_array_equal(loaded, image)

    floats = image.astype(np.float64) / 255
    np.save(tmp_path / "f.npy", floats[None])  # (1, 28, 28)
    loaded = load_image(tmp_path / "f.npy")
    assert loaded.dtype == np.float32 and loaded.shape == (28, 28)
    np.testing.assert_allclose(loaded, floats, atol=1e-7)
    np.testing.assert_allclose(load_and_preprocess(tmp_path / "f.npy"), floats, atol=1e-7)

    np.save(tmp_path / "hw1.npy", image[:, :, None].astype(np.int64))
    np.testing.assert_array_equal(load_image(tmp_path / "hw1.npy"), image)


def crafted_npy(path: pathlib.Path, descr: str, shape: str) -> pathlib.Path:
    """A version 1.0 .npy file with the given header fields and 784 zero bytes of data."""
    header = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': ({shape}), }}".encode("latin1")
    header += b" " * (63 - len(header) % 64) + b"\n"
    path.write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + bytes(784))
    return path


@pytest.mark.parametrize("space", ["\x1d", "\x85"])
def test_npy_header_with_a_unicode_space_is_refused(tmp_path, space):
    """Found by the atheris fuzzer: Python's regex calls these spaces, int() does not."""
    with pytest.raises(InputError, match="npy"):
        load_image(crafted_npy(tmp_path / "odd.npy", "|u1", f"{space}28, 28"))


@pytest.mark.parametrize("descr", [" Q7,9", "a"])
def test_npy_header_with_an_odd_dtype_is_refused_quietly(tmp_path, recwarn, descr):
    """Found by the atheris fuzzer: np.dtype raises SyntaxError on some strings and warns on deprecated ones."""
    with pytest.raises(InputError, match="dtype"):
        load_image(crafted_npy(tmp_path / "odd.npy", descr, "28, 28"))
    assert not recwarn.list


def test_npy_large_gray_image(tmp_path):
    np.save(tmp_path / "photo.npy", photo_of(seven_mask()))
    assert_mnist_shaped(load_and_preprocess(tmp_path / "photo.npy"))


# --------------------------------------------------------------------------- normalising


def test_mnist_style_image_passes_through_unchanged(tmp_path):
    image = mnist_like()
    out = preprocess(image)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, image.astype(np.float32) / 255)
    assert out is not image
    np.testing.assert_array_equal(load_and_preprocess(encode(tmp_path / "m.png", image)), out)
    floats = image.astype(np.float32) / 255
    np.testing.assert_array_equal(preprocess(floats), floats)


def test_photo_of_a_seven():
    out = preprocess(photo_of(seven_mask()))
    assert_mnist_shaped(out)
    assert np.median(out) == 0
    top, bottom, left, right = ink_box(out)
    assert max(bottom - top, right - left) in (19, 20, 21)  # scaled into the 20x20 box
    # Centring the centre of mass moves a top-heavy 7 down, as in MNIST, but never cuts it off.
    assert top >= 1 and left >= 1 and bottom <= 27 and right <= 27
    frame = np.ones((28, 28), bool)
    frame[1:-1, 1:-1] = False
    assert out[frame].max() == 0
    cy, cx = centre_of_mass(out)
    assert abs(cy - 14) <= 1 and abs(cx - 14) <= 1
    # Like MNIST: the strokes are solid, the background clean (measured when written: 42 pixels above 0.9,
    # 86.7% exactly 0; deterministic).
    assert (out > 0.9).sum() >= 35
    assert (out == 0).mean() >= 0.8


def test_photo_in_colour_with_specks():
    photo = photo_of(seven_mask(), seed=3)
    photo[10:13, 180:183] = 0  # a speck of dirt near the corner
    photo[280:282, 5:7] = 0
    colour = cv2.cvtColor(photo, cv2.COLOR_GRAY2BGR)
    out = preprocess(colour)
    assert_mnist_shaped(out)
    clean = preprocess(photo_of(seven_mask(), seed=3))
    assert np.abs(out - clean).mean() < 1e-3  # measured when written: 4e-10 (the specks are dropped)


def test_inversion_gives_the_same_result():
    mask = seven_mask()
    light_on_dark = preprocess(mask)
    dark_on_light = preprocess(255 - mask)
    assert_mnist_shaped(light_on_dark)
    assert np.abs(light_on_dark - dark_on_light).max() < 1e-3  # measured when written: 1.5e-8
    photo = preprocess(photo_of(mask))
    assert np.abs(photo - light_on_dark).mean() < 0.005  # measured when written: 0.0013 (noise, shading)


def test_aspect_ratio_is_kept():
    tall = np.full((300, 200), 230, np.uint8)
    cv2.rectangle(tall, (90, 50), (109, 249), 20, -1)  # a "1": 20 wide, 200 tall
    out = preprocess(tall)
    top, bottom, left, right = ink_box(out)
    assert bottom - top == 20
    assert right - left <= 4

    ring = np.zeros((200, 300), np.uint8)
    cv2.ellipse(ring, (150, 100), (40, 80), 0, 0, 360, 255, 12)  # a "0", twice as tall as wide
    top, bottom, left, right = ink_box(preprocess(ring))
    assert bottom - top == 20
    assert abs((right - left) - 10) <= 2


def test_small_and_large_images():
    small = np.zeros((10, 8), np.uint8)
    small[2:8, 3:5] = 255
    assert_mnist_shaped(preprocess(small))

    large = cv2.resize(seven_mask(), (2000, 3000), interpolation=cv2.INTER_NEAREST)
    out = preprocess(large)
    assert_mnist_shaped(out)
    assert np.abs(out - preprocess(seven_mask())).mean() < 0.005  # measured when written: 0.0022


@pytest.mark.parametrize(
    "image",
    [
        np.full((50, 40), 255, np.uint8),
        np.zeros((50, 40), np.uint8),
        np.full((28, 28), 0.0, np.float32),
        np.full((1, 1), 128, np.uint8),
        np.random.default_rng(0).normal(200, 3, (60, 60)).clip(0, 255).astype(np.uint8),
        np.zeros((30, 30, 4), np.uint8),  # fully transparent
    ],
    ids=["white", "black", "black-28", "1x1", "flat-noise", "transparent"],
)
def test_blank_images_are_refused(image):
    with pytest.raises(InputError, match="no digit found"):
        preprocess(image)


def test_input_validation():
    with pytest.raises(TypeError):
        preprocess([[0, 1], [1, 0]])
    with pytest.raises(TypeError):
        preprocess(np.zeros((28, 28), bool))
    with pytest.raises(TypeError):
        preprocess(np.zeros((28, 28), np.complex64))
    with pytest.raises(TypeError):
        preprocess(np.zeros((28, 28), object))
    for shape in ((0, 28), (28,), (2, 28, 28), (28, 28, 2), (1, 28, 28, 1)):
        bad = np.zeros(shape)
        with pytest.raises(InputError):
            preprocess(bad)
    nan = np.zeros((28, 28), np.float32)
    nan[3, 3] = np.nan
    with pytest.raises(InputError, match="NaN"):
        preprocess(nan)
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        preprocess(np.full((28, 28), 3.0))
    with pytest.raises(InputError, match=r"\[0, 255\]"):
        preprocess(np.full((28, 28), -1, np.int16))


# --------------------------------------------------------------------------- refusals


@pytest.fixture
def decoding(monkeypatch):
    """Counts what ``edgeguard.decode`` does with a file's pixels: OpenCV decodes (``imdecode``), PNG
    integrity checks (``png_intact``, which inflates the data) and refusals by the header's size check."""
    calls = {"imdecode": 0, "png_intact": 0, "refused_by_size": 0}

    def counted(name, real):
        def spy(*args, **kwargs):
            calls[name] += 1
            return real(*args, **kwargs)
        return spy

    def check_size(width, height):
        try:
            real_check_size(width, height)
        except InputError:
            calls["refused_by_size"] += 1
            raise

    real_check_size = decode.check_size
    monkeypatch.setattr(decode.cv2, "imdecode", counted("imdecode", decode.cv2.imdecode))
    monkeypatch.setattr(decode, "png_intact", counted("png_intact", decode.png_intact))
    monkeypatch.setattr(decode, "check_size", check_size)
    return calls


def test_decompression_bomb_is_refused_before_decoding(tmp_path, decoding):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_claiming(100_000, 100_000))
    err = assert_refused(path, "too large")
    assert f"{MAX_PIXELS:,}" in err.reason
    assert decoding == {"imdecode": 0, "png_intact": 0, "refused_by_size": 1}  # refused from the header alone
    # The counts are not blind: an ordinary PNG is checked and decoded once.
    load_image(encode(tmp_path / "small.png", mnist_like()))
    assert decoding == {"imdecode": 1, "png_intact": 1, "refused_by_size": 1}


def test_bombs_in_other_formats(tmp_path, decoding):
    bmp = bytearray(cv2.imencode(".bmp", np.zeros((4, 4), np.uint8))[1].tobytes())
    bmp[18:26] = struct.pack("<ii", 50_000, 50_000)
    (tmp_path / "bomb.bmp").write_bytes(bytes(bmp))
    assert_refused(tmp_path / "bomb.bmp", "too large")

    (tmp_path / "bomb.pgm").write_bytes(b"P5\n# big\n60000 60000\n255\n" + b"\0" * 100)
    assert_refused(tmp_path / "bomb.pgm", "too large")

    jpeg = bytearray(cv2.imencode(".jpg", np.zeros((8, 8), np.uint8))[1].tobytes())
    sof = jpeg.index(b"\xff\xc0")
    jpeg[sof + 5 : sof + 9] = struct.pack(">HH", 65000, 65000)
    (tmp_path / "bomb.jpg").write_bytes(bytes(jpeg))
    assert_refused(tmp_path / "bomb.jpg", "too large")

    np.lib.format.open_memmap(tmp_path / "bomb.npy", mode="w+", dtype=np.uint8, shape=(7000, 7000)).flush()
    assert_refused(tmp_path / "bomb.npy", "too large")
    assert decoding == {"imdecode": 0, "png_intact": 0, "refused_by_size": 4}  # each refused from its header


def test_broken_files_are_refused(tmp_path, capfd):
    (tmp_path / "empty.png").write_bytes(b"")
    assert_refused(tmp_path / "empty.png", "empty file")

    good = cv2.imencode(".png", photo_of(seven_mask(60, 40, 5)))[1].tobytes()
    (tmp_path / "truncated.png").write_bytes(good[:50])
    assert_refused(tmp_path / "truncated.png", "truncated")
    (tmp_path / "cut.png").write_bytes(good[:-20])
    assert_refused(tmp_path / "cut.png", "truncated")
    flipped = bytearray(good)
    flipped[good.index(b"IDAT") + 20] ^= 0xFF
    (tmp_path / "flipped.png").write_bytes(bytes(flipped))
    assert_refused(tmp_path / "flipped.png", "corrupt")

    jpeg = cv2.imencode(".jpg", photo_of(seven_mask(60, 40, 5)))[1].tobytes()
    (tmp_path / "cut.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    assert_refused(tmp_path / "cut.jpg", "corrupt")

    (tmp_path / "notes.png").write_text("this is not an image\n")
    assert_refused(tmp_path / "notes.png", "not a supported image")

    (tmp_path / "anim.gif").write_bytes(b"GIF89a" + b"\0" * 20)
    assert_refused(tmp_path / "anim.gif", "GIF is not supported")

    (tmp_path / "digit.webp").write_bytes(b"RIFF0000WEBP")
    err = assert_refused(tmp_path / "digit.webp", "unsupported file type")
    assert all(suffix in err.reason for suffix in SUPPORTED_SUFFIXES)
    assert capfd.readouterr() == ("", "")  # OpenCV and libpng kept quiet


def test_missing_path_and_directory(tmp_path):
    assert_refused(tmp_path / "nowhere.png", "not found")
    (tmp_path / "folder.png").mkdir()
    assert_refused(tmp_path / "folder.png", "directory")


def test_unreadable_file(tmp_path, monkeypatch):
    path = encode(tmp_path / "secret.png", mnist_like())

    def refuse(self):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(pathlib.Path, "read_bytes", refuse)  # chmod does not stop root
    assert_refused(path, "permission denied")


@pytest.mark.parametrize("loader", [load_image, load_and_preprocess])
def test_blank_files_are_refused(tmp_path, loader):
    encode(tmp_path / "white.png", np.full((40, 30), 255, np.uint8))
    encode(tmp_path / "black.png", np.zeros((40, 30), np.uint8))
    encode(tmp_path / "dot.png", np.full((1, 1), 255, np.uint8))
    if loader is load_image:  # blank is only known after normalising
        assert load_image(tmp_path / "white.png").shape == (40, 30)
        return
    for name in ("white.png", "black.png", "dot.png"):
        assert_refused(tmp_path / name, "no digit found")


class _Booby:
    """Unpickling this creates a marker file."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def test_object_npy_is_refused_without_unpickling(tmp_path):
    marker = tmp_path / "unpickled"
    path = tmp_path / "evil.npy"
    np.save(path, np.array([_Booby(marker)], dtype=object), allow_pickle=True)
    err = assert_refused(path, "object arrays", loader=load_image)
    assert "unpickl" in err.reason
    assert not marker.exists()
    # The booby trap is real: unpickling would have created the marker.
    np.load(path, allow_pickle=True)
    assert marker.exists()


def test_bad_npy_files_are_refused(tmp_path):
    np.save(tmp_path / "shape.npy", np.zeros((3, 28, 28), np.uint8))
    assert_refused(tmp_path / "shape.npy", "shape")
    np.save(tmp_path / "vector.npy", np.zeros(784, np.uint8))
    assert_refused(tmp_path / "vector.npy", "shape")

    nan = np.zeros((28, 28), np.float32)
    nan[5, 5] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    assert_refused(tmp_path / "nan.npy", "NaN")

    np.save(tmp_path / "range.npy", np.linspace(-0.5, 2, 784).reshape(28, 28))
    err = assert_refused(tmp_path / "range.npy", "[0, 1]")
    assert "-0.5" in err.reason and "2" in err.reason

    np.save(tmp_path / "ints.npy", np.full((28, 28), 300, np.int32))
    assert_refused(tmp_path / "ints.npy", "[0, 255]")

    np.save(tmp_path / "text.npy", np.array([["a"]]))
    assert_refused(tmp_path / "text.npy", "dtype")

    good = (tmp_path / "ints.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(good[:200])
    assert_refused(tmp_path / "cut.npy", "corrupt")


# --------------------------------------------------------------------------- property


_DTYPES = [np.uint8, np.uint16, np.int8, np.int16, np.int32, np.int64, np.uint32,
           np.float16, np.float32, np.float64, np.bool_, np.complex64]


@st.composite
def any_array(draw):
    dtype = np.dtype(draw(st.sampled_from(_DTYPES)))
    shape = draw(
        st.one_of(
            hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=6),
            st.tuples(st.integers(1, 40), st.integers(1, 40)),
            st.tuples(st.integers(1, 30), st.integers(1, 30), st.sampled_from([1, 3, 4])),
        )
    )
    if dtype.kind == "f" and draw(st.booleans()):
        elements = st.floats(0, 1, width=dtype.itemsize * 8)
    elif dtype.kind in "iu" and draw(st.booleans()):
        elements = st.integers(0, min(255, int(np.iinfo(dtype).max)))
    else:
        elements = None
    return draw(hnp.arrays(dtype, shape, elements=elements))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(any_array())
def test_preprocess_never_fails_unexpectedly(image):
    try:
        out = preprocess(image)
    except (TypeError, ValueError):
        return
    assert out.shape == (28, 28)
    assert out.dtype == np.float32
    assert np.isfinite(out).all()
    assert out.min() >= 0 and out.max() <= 1


# --------------------------------------------------------------------------- the package attribute


def test_edgeguard_preprocess_stays_the_function():
    """``edgeguard.preprocess`` is the function, before and after loading a Guard and importing the webcam
    package: no module named ``preprocess`` exists under edgeguard/ to replace it (fresh interpreter)."""
    code = textwrap.dedent("""
        import pkgutil
        import edgeguard
        first = edgeguard.preprocess
        assert callable(first) and first.__module__ == "edgeguard.normalize", first
        from edgeguard import Guard
        Guard.load(providers="cpu")
        assert edgeguard.preprocess is first, "replaced after Guard.load"
        import edgeguard.webcam
        assert edgeguard.preprocess is first, "replaced after importing edgeguard.webcam"
        from edgeguard import preprocess
        from edgeguard.normalize import preprocess as original
        assert preprocess is first is original
        names = [m.name for m in pkgutil.walk_packages(edgeguard.__path__, "edgeguard.")]
        assert not [n for n in names if n.rsplit(".", 1)[-1] == "preprocess"], names
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=pathlib.Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
