"""Screening on Ray Data (``edgeguard.ray_screen``, ``edgeguard detect --ray``): the same verdicts as one process,
refused inputs as records, and the one-line errors of a missing Ray or a bad address."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from edgeguard.cli import app, bare_ray
from edgeguard.errors import InputError

runner = CliRunner()


def records(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, mnist):
    """2,000 inputs: a .npy batch of 1,900 MNIST test digits and 50 noise images, 48 PNG files (one of them two
    digits side by side, screened digit by digit), one file that is not an image and one empty file."""
    folder = tmp_path_factory.mktemp("ray")
    noise = np.random.default_rng(0).integers(0, 256, (50, 28, 28), dtype=np.uint8)
    np.save(folder / "batch.npy", np.concatenate([mnist.test_x[:1900], noise]))
    pngs = folder / "pngs"
    pngs.mkdir()
    for i, image in enumerate(mnist.test_x[1900:1947]):
        cv2.imwrite(str(pngs / f"d{i:02d}.png"), image)
    pair = np.zeros((60, 140), np.uint8)
    pair[16:44, 20:48], pair[16:44, 90:118] = mnist.test_x[3], mnist.test_x[5]
    cv2.imwrite(str(pngs / "pair.png"), 255 - pair)
    (pngs / "not_an_image.png").write_bytes(b"hello")
    (pngs / "empty.png").write_bytes(b"")
    return folder


def detect(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgeguard", "detect", *args], capture_output=True, text=True,
                          timeout=600)


def test_ray_gives_exactly_the_single_process_records(inputs):
    pa = pytest.importorskip("pyarrow.parquet")
    pytest.importorskip("ray.data")
    from edgeguard.ray_screen import unflatten

    paths = [str(inputs / "batch.npy"), str(inputs / "pngs")]
    local = detect(*paths, "--json")
    assert local.returncode == 2, local.stderr  # the two bad files
    expected = records(local.stdout)
    out = inputs / "verdicts.parquet"
    on_ray = detect(*paths, "--out", str(out), "--ray-actors", "2", "--ray")
    assert on_ray.returncode == 2, on_ray.stderr
    got = [unflatten(row) for row in pa.read_table(out).to_pylist()]
    assert len(expected) == len(got) > 2000  # the pair gives two records
    assert got == expected  # every verdict, score and p-value, in input order
    assert sum("error" in r for r in got) == 2
    assert sum(r.get("status") == "digits" for r in got) == 2
    assert {r["verdict"] for r in got if "verdict" in r} >= {"clean", "out_of_distribution"}
    summary = on_ray.stderr.strip().splitlines()[-1]
    assert summary.startswith("screened 1,998 inputs (1,999 digits)") and summary.endswith("2 refused")
    assert "Traceback" not in on_ray.stderr and "INFO" not in on_ray.stderr


def test_screen_batch_takes_bytes_arrays_and_paths(inputs, guard):
    pytest.importorskip("pyarrow")
    from edgeguard.ray_screen import ScreenBatch, unflatten

    screen = ScreenBatch(providers="cpu", kernels="numpy")
    png = inputs / "pngs" / "d00.png"
    image = cv2.imread(str(png), cv2.IMREAD_GRAYSCALE)
    batch = {"source": np.array(["as-bytes", "as-path", "junk"], dtype=object),
             "path": np.array(["", str(png), ""], dtype=object),
             "bytes": np.array([png.read_bytes(), b"", b"junk"], dtype=object)}
    rows = [unflatten(r) for r in screen(batch).to_pylist()]
    assert [r["source"] for r in rows] == ["as-bytes", "as-path", "junk"]
    assert rows[0]["label"] == rows[1]["label"] == guard.screen(image[None])[0].label
    assert rows[0]["p_value"] == rows[1]["p_value"]
    assert rows[2]["error"].startswith("junk: not a supported image file")
    arrays = screen({"source": np.array(["a"]), "image": image[None]}).to_pylist()
    assert unflatten(arrays[0])["p_value"] == rows[0]["p_value"]
    with pytest.raises(ValueError, match="'source' or 'path'"):
        screen({"image": image[None]})


def test_a_bare_ray_means_a_local_instance():
    assert bare_ray(["edgeguard", "detect", "a.png", "--ray"]) == ["edgeguard", "detect", "a.png", "--ray=local"]
    assert bare_ray(["detect", "--ray", "--json", "a.png"]) == ["detect", "--ray=local", "--json", "a.png"]
    assert bare_ray(["detect", "--ray", "auto", "a.png"]) == ["detect", "--ray", "auto", "a.png"]
    assert bare_ray(["detect", "--ray", "-"]) == ["detect", "--ray", "-"]  # stdin is a path, not an option


def test_a_path_given_as_the_address_is_one_line_and_exit_2(tmp_path):
    result = runner.invoke(app, ["detect", "--ray", str(tmp_path), "x.png"])
    assert result.exit_code == 2
    assert "is not a Ray address" in result.output and "Traceback" not in result.output


def test_without_ray_the_error_says_what_to_install(monkeypatch):
    from edgeguard import ray_screen

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    with pytest.raises(InputError, match=r"pip install 'edgeguard\[ray\]'"):
        ray_screen.connect("local")


CRASH = "batch.npy[700]"


def test_a_worker_that_dies_loses_nothing(inputs, tmp_path):
    """A worker process that dies (the first time it meets the input ending in ``CRASH``; a marker file makes it
    once) is started again by Ray and its batch retried: every input still gets its verdict, in order."""
    pytest.importorskip("pyarrow")
    ray = pytest.importorskip("ray")
    from edgeguard import ray_screen

    marker = tmp_path / "died"

    class Dying(ray_screen.ScreenBatch):
        def __call__(self, batch):
            if any(str(s).endswith(CRASH) for s in batch["source"]) and not marker.exists():
                marker.write_text("once")
                os._exit(1)
            return super().__call__(batch)

    ray_screen.connect(ray_screen.LOCAL, cpus=2)
    try:
        done = list(ray_screen.screen_on_ray([str(inputs / "batch.npy")], actors=2, screen=Dying,
                                             providers="cpu", kernels="numpy"))
    finally:
        ray.shutdown()
    got = [r for _, chunk in done for r in chunk]
    assert marker.exists()  # the worker did die
    assert [r["source"] for r in got] == [f"{inputs / 'batch.npy'}[{i}]" for i in range(1950)]
    assert not any("error" in r for r in got)
    assert sum(n for n, _ in done) == 1950
