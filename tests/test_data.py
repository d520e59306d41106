"""Tests for train/data.py: IDX parsing, data location, download, loading."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import logging
import struct
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from train import data
from train.data import DownloadError, IDXError, download_mnist, find_mnist, load_fashion_mnist, load_mnist, read_idx

SHARED = Path(data.__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"


def idx_bytes(array: np.ndarray) -> bytes:
    array = np.asarray(array, dtype=np.uint8)
    return struct.pack(f">HBB{array.ndim}I", 0, 0x08, array.ndim, *array.shape) + array.tobytes()


def write(path: Path, payload: bytes, gz: bool | None = None) -> Path:
    gz = path.name.endswith(".gz") if gz is None else gz
    path.write_bytes(gzip.compress(payload) if gz else payload)
    return path


# ------------------------------------------------------------------ read_idx

IMAGES = np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5)
LABELS = np.array([7, 0, 9, 3], dtype=np.uint8)


@pytest.mark.parametrize("name", ["x-idx3-ubyte", "x-idx3-ubyte.gz"])
@pytest.mark.parametrize("array", [IMAGES, LABELS], ids=["images", "labels"])
def test_read_idx_roundtrip(tmp_path, name, array):
    out = read_idx(write(tmp_path / name, idx_bytes(array)))
    assert out.dtype == np.uint8 and out.flags.writeable
    np.testing.assert_array_equal(out, array)


def test_read_idx_detects_gzip_by_magic_not_name(tmp_path):
    gz_without_suffix = write(tmp_path / "labels", idx_bytes(LABELS), gz=True)
    raw_with_suffix = write(tmp_path / "labels.gz", idx_bytes(LABELS), gz=False)
    np.testing.assert_array_equal(read_idx(gz_without_suffix), LABELS)
    np.testing.assert_array_equal(read_idx(str(raw_with_suffix)), LABELS)


@settings(max_examples=30, deadline=None)
@given(shape=st.one_of(st.tuples(st.integers(0, 50)), st.tuples(*[st.integers(0, 6)] * 3)), gz=st.booleans())
def test_read_idx_roundtrip_property(tmp_path_factory, shape, gz):
    array = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    path = write(tmp_path_factory.mktemp("idx") / "f.idx", idx_bytes(array), gz=gz)
    np.testing.assert_array_equal(read_idx(path), array)


GOOD = idx_bytes(LABELS)
MALFORMED = {
    "bad_magic": (b"\x00\x00\x00\x00" + GOOD[4:], "bad magic number 0x00000000"),
    "bad_magic_high_bytes": (b"\x12\x34" + GOOD[2:], "bad magic number 0x12340801"),
    "unsupported_type": (b"\x00\x00\x0d\x01" + GOOD[4:], "unsupported type code 0x0d"),
    "bad_ndim": (b"\x00\x00\x08\x02" + GOOD[4:], "bad number of dimensions 2"),
    "empty": (b"", "truncated header"),
    "short_magic": (b"\x00\x00", "truncated header"),
    "short_dims": (idx_bytes(IMAGES)[:10], "truncated header"),
    "truncated_data": (GOOD[:-1], "truncated data"),
    "trailing_bytes": (GOOD + b"\x00\x00", "2 trailing bytes"),
}


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_read_idx_malformed(tmp_path, case, gz):
    payload, expected = MALFORMED[case]
    path = write(tmp_path / f"{case}-idx1-ubyte{'.gz' if gz else ''}", payload)
    with pytest.raises(IDXError, match=expected) as err:
        read_idx(path)
    assert path.name in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    "mangle",
    [lambda b: b[: len(b) // 2], lambda b: b[:-4] + bytes(4), lambda b: b[:12] + bytes(len(b) - 12)],
    ids=["truncated", "bad_size_trailer", "garbage_body"],
)
def test_read_idx_corrupt_gzip(tmp_path, mangle):
    path = tmp_path / "broken-idx3-ubyte.gz"
    path.write_bytes(mangle(gzip.compress(idx_bytes(IMAGES))))
    with pytest.raises(IDXError, match="gzip") as err:
        read_idx(path)
    assert path.name in str(err.value)


def test_read_idx_missing_file(tmp_path):
    with pytest.raises(IDXError, match="nope-idx1-ubyte.gz: no such file"):
        read_idx(tmp_path / "nope-idx1-ubyte.gz")


# ---------------------------------------------------------------- find_mnist


def fill(directory: Path, *, gz: bool = True, skip: str | None = None) -> Path:
    """Put placeholder MNIST files into directory (find_mnist does not read them)."""
    directory.mkdir(parents=True, exist_ok=True)
    for stem in data.FILES:
        if stem != skip:
            (directory / (stem + ".gz" if gz else stem)).write_bytes(b"")
    return directory


@pytest.fixture
def places(tmp_path, monkeypatch):
    """Isolated shared/cache/home locations; nothing set or filled yet."""
    p = {k: tmp_path / k for k in ("arg", "env", "shared", "cache", "home")}
    monkeypatch.delenv("EDGEGUARD_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(p["cache"]))
    monkeypatch.setenv("HOME", str(p["home"]))
    monkeypatch.setattr(data, "_shared_dir", lambda: p["shared"])
    downloads = []
    monkeypatch.setattr(data, "download_mnist", lambda dest, **kw: downloads.append(Path(dest)) or fill(Path(dest)))
    p["downloads"] = downloads
    return p


def test_find_mnist_order(places, monkeypatch):
    cache = places["cache"] / "edgeguard" / "mnist"
    for key in ("arg", "env", "shared"):
        fill(places[key])
    fill(cache)
    monkeypatch.setenv("EDGEGUARD_DATA", str(places["env"]))
    assert find_mnist(places["arg"]) == places["arg"]
    assert find_mnist(str(places["arg"])) == places["arg"]
    assert find_mnist() == places["env"]
    monkeypatch.delenv("EDGEGUARD_DATA")
    assert find_mnist() == places["shared"]
    monkeypatch.setattr(data, "_shared_dir", lambda: places["home"] / "no-shared")
    assert find_mnist() == cache
    assert places["downloads"] == []


def test_find_mnist_accepts_raw_names(places):
    assert find_mnist(fill(places["arg"], gz=False)) == places["arg"]


def test_find_mnist_default_cache_dir(places, monkeypatch):
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert find_mnist() == places["home"] / ".cache" / "edgeguard" / "mnist"
    assert places["downloads"] == [places["home"] / ".cache" / "edgeguard" / "mnist"]


def test_find_mnist_incomplete_shared_falls_back_to_cache(places):
    fill(places["shared"], skip="t10k-labels-idx1-ubyte")
    assert find_mnist() == places["cache"] / "edgeguard" / "mnist"


def test_find_mnist_no_download(places):
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte.*EDGEGUARD_DATA"):
        find_mnist(download=False)
    assert places["downloads"] == [] and not (places["cache"] / "edgeguard").exists()


@pytest.mark.parametrize("via", ["arg", "env"])
def test_find_mnist_explicit_dir_missing_file(places, monkeypatch, via):
    fill(places[via], skip="t10k-images-idx3-ubyte")
    fill(places["shared"])
    if via == "env":
        monkeypatch.setenv("EDGEGUARD_DATA", str(places["env"]))
    with pytest.raises(FileNotFoundError) as err:
        find_mnist(places["arg"] if via == "arg" else None)
    msg = str(err.value)
    assert str(places[via]) in msg and "t10k-images-idx3-ubyte" in msg and "train-images" not in msg
    assert places["downloads"] == []


def test_find_mnist_explicit_dir_does_not_exist(places):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_mnist(places["arg"] / "missing")


# ------------------------------------------------------------------ download

SMALL = {
    "train-images-idx3-ubyte": idx_bytes(np.full((6, 28, 28), 1)),
    "train-labels-idx1-ubyte": idx_bytes(np.arange(6)),
    "t10k-images-idx3-ubyte": idx_bytes(np.full((2, 28, 28), 2)),
    "t10k-labels-idx1-ubyte": idx_bytes([4, 5]),
}
SMALL_HASHES = {k: hashlib.sha256(v).hexdigest() for k, v in SMALL.items()}
GZ_NAMES = [stem + ".gz" for stem in data.FILES]


class Handler(http.server.BaseHTTPRequestHandler):
    """/good/ serves the files, /missing/ 404s, /corrupt/ serves wrong content, /short/ closes mid-file."""

    requests: list[str]

    def do_GET(self):  # noqa: N802
        self.requests.append(self.path)
        mode, _, name = self.path.strip("/").partition("/")
        stem = name.removesuffix(".gz")
        if mode == "missing" or stem not in SMALL:
            self.send_error(404)
            return
        payload = SMALL[stem] if mode != "corrupt" else SMALL[stem][:-1] + b"\xff"
        body = gzip.compress(payload, compresslevel=1 if mode == "good" else 9)
        self.send_response(200)
        self.send_header("Content-Length", str(len(body) + (1000 if mode == "short" else 0)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2] if mode == "short" else body)
        self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    Handler.requests = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def mirror(server, monkeypatch):
    """Mirror URL for a mode; proxies disabled and the request log cleared."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    Handler.requests.clear()
    return lambda mode: f"{server}/{mode}/"


def dl(dest, mirrors):
    return download_mnist(dest, mirrors=mirrors, timeout=5, progress=False, file_hashes=SMALL_HASHES)


def listing(dest: Path) -> list[str]:
    return sorted(p.name for p in dest.iterdir())


def test_download_first_mirror_404(tmp_path, mirror, caplog):
    dest = tmp_path / "d" / "mnist"
    with caplog.at_level(logging.WARNING, logger="train.data"):
        assert dl(dest, [mirror("missing"), mirror("good")]) == dest
    assert listing(dest) == sorted(GZ_NAMES)
    np.testing.assert_array_equal(read_idx(dest / "train-labels-idx1-ubyte.gz"), np.arange(6))
    assert all(data._sha256_uncompressed(dest / n) == SMALL_HASHES[n[:-3]] for n in GZ_NAMES)
    assert len(Handler.requests) == 8
    assert "404" in caplog.text and mirror("missing") in caplog.text


def test_download_corrupt_then_good(tmp_path, mirror, caplog):
    with caplog.at_level(logging.WARNING, logger="train.data"):
        dl(tmp_path, [mirror("corrupt"), mirror("good")])
    assert listing(tmp_path) == sorted(GZ_NAMES)
    assert all(data._sha256_uncompressed(tmp_path / n) == SMALL_HASHES[n[:-3]] for n in GZ_NAMES)
    assert "sha256 mismatch" in caplog.text and "train-labels-idx1-ubyte.gz" in caplog.text
    assert mirror("corrupt") in caplog.text


def test_download_truncated_is_reported_and_deleted(tmp_path, mirror, caplog):
    with caplog.at_level(logging.WARNING, logger="train.data"), pytest.raises(DownloadError) as err:
        dl(tmp_path, [mirror("short")])
    assert listing(tmp_path) == []
    assert "train-images-idx3-ubyte.gz" in caplog.text and "connection closed mid-file" in caplog.text
    assert "train-images-idx3-ubyte.gz" in str(err.value) and mirror("short") in str(err.value)


def test_download_all_mirrors_bad(tmp_path, mirror):
    with pytest.raises(DownloadError) as err:
        dl(tmp_path, [mirror("missing"), mirror("corrupt"), mirror("short")])
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("train-images-idx3-ubyte.gz: all 3 mirror(s) failed")
    assert "404" in msg and "sha256 mismatch" in msg and "closed mid-file" in msg
    assert listing(tmp_path) == []


def test_download_skips_verified_files(tmp_path, mirror, caplog):
    dl(tmp_path, [mirror("good")])
    assert len(Handler.requests) == 4
    Handler.requests.clear()
    dl(tmp_path, [mirror("good")])
    assert Handler.requests == []
    # A raw file that verifies also counts; a corrupt one is replaced.
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(SMALL["t10k-labels-idx1-ubyte"])
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(b"garbage")
    with caplog.at_level(logging.WARNING, logger="train.data"):
        dl(tmp_path, [mirror("good")])
    assert Handler.requests == ["/good/train-labels-idx1-ubyte.gz"]
    assert "fails sha256 verification" in caplog.text
    assert data._sha256_uncompressed(tmp_path / "train-labels-idx1-ubyte.gz") == SMALL_HASHES["train-labels-idx1-ubyte"]


def test_download_progress_bar_on_stderr(tmp_path, mirror, capsys):
    download_mnist(tmp_path, mirrors=[mirror("good")], timeout=5, progress=True, file_hashes=SMALL_HASHES)
    out, err = capsys.readouterr()
    assert out == "" and "train-images-idx3-ubyte.gz" in err


# ---------------------------------------------------------------- load_mnist


def test_load_mnist_synthetic_count_mismatch(tmp_path):
    write(tmp_path / "train-images-idx3-ubyte.gz", idx_bytes(np.zeros((3, 28, 28))))
    write(tmp_path / "train-labels-idx1-ubyte.gz", idx_bytes([1, 2]))
    write(tmp_path / "t10k-images-idx3-ubyte", idx_bytes(np.zeros((1, 28, 28))))
    write(tmp_path / "t10k-labels-idx1-ubyte", idx_bytes([1]))
    with pytest.raises(IDXError, match="3 images but train-labels-idx1-ubyte.gz has 2 labels"):
        load_mnist(tmp_path)


@pytest.fixture(scope="module")
def mnist():
    if not SHARED.is_dir():
        pytest.skip(f"real MNIST not available at {SHARED}")
    return load_mnist(SHARED, download=False)


def test_load_mnist_real(mnist):
    for split, n in (("train", 55000), ("val", 5000), ("test", 10000)):
        x, y = getattr(mnist, f"{split}_x"), getattr(mnist, f"{split}_y")
        assert x.shape == (n, 28, 28) and y.shape == (n,)
        assert x.dtype == y.dtype == np.uint8
        assert y.max() <= 9 and set(np.unique(y)) == set(range(10))
    assert mnist.files == data.SHA256


def test_load_mnist_val_is_last_5000(mnist):
    all_x = read_idx(SHARED / "train-images-idx3-ubyte.gz")
    all_y = read_idx(SHARED / "train-labels-idx1-ubyte.gz")
    np.testing.assert_array_equal(mnist.val_x, all_x[-5000:])
    np.testing.assert_array_equal(mnist.val_y, all_y[-5000:])
    np.testing.assert_array_equal(mnist.train_x, all_x[:55000])


# -------------------------------------------------------- load_fashion_mnist


@pytest.mark.skipif(not data.FASHION_DIR.is_dir(), reason="dataset-fashion-mnist not installed")
def test_load_fashion_mnist_installed(monkeypatch):
    monkeypatch.delenv("EDGEGUARD_FASHION_DATA", raising=False)
    x, y = load_fashion_mnist()
    assert x.shape == (10000, 28, 28) and y.shape == (10000,)
    assert x.dtype == y.dtype == np.uint8 and y.max() == 9


def test_load_fashion_mnist_missing(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="apt-get install -y dataset-fashion-mnist"):
        load_fashion_mnist(data_dir=tmp_path / "nowhere")
    monkeypatch.setenv("EDGEGUARD_FASHION_DATA", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="t10k-images-idx3-ubyte"):
        load_fashion_mnist("test")
    with pytest.raises(ValueError, match="split"):
        load_fashion_mnist("val")


def test_load_fashion_mnist_synthetic(tmp_path):
    write(tmp_path / "train-images-idx3-ubyte.gz", idx_bytes(np.ones((2, 28, 28))))
    write(tmp_path / "train-labels-idx1-ubyte.gz", idx_bytes([3, 8]))
    x, y = load_fashion_mnist("train", data_dir=tmp_path)
    assert x.shape == (2, 28, 28) and list(y) == [3, 8]
