"""`edgeguard detect` at scale: chunked streaming, refused inputs as records, stdin, .npy/.npz batches, --out,
the summary, the numba notice and --fdr."""

from __future__ import annotations

import csv
import json
import os
import sys

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from edgeguard.cli import app
from edgeguard.fdr import benjamini_hochberg

runner = CliRunner()


def run(*args, input=None):
    result = runner.invoke(app, [str(a) for a in args], input=input)
    assert "Traceback" not in result.output
    return result


def records(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def verdicts(rows: list[dict]) -> dict[str, tuple]:
    return {r["source"]: (r["label"], r["verdict"], r["p_value"], r["labels"]) for r in rows if "verdict" in r}


@pytest.fixture
def batch(tmp_path, mnist):
    """Ten MNIST test digits as a .npy batch and as PNG files."""
    x = mnist.test_x[:10]
    np.save(tmp_path / "b.npy", x)
    for i, image in enumerate(x):
        cv2.imwrite(str(tmp_path / f"d{i}.png"), image)
    return tmp_path


def test_npy_batch_rows_get_the_verdicts_of_the_same_images_as_files(batch):
    rows = records(run("detect", batch / "b.npy", "--json").stdout)
    assert [r["source"] for r in rows] == [f"{batch / 'b.npy'}[{i}]" for i in range(10)]
    files = verdicts(records(run("detect", *[batch / f"d{i}.png" for i in range(10)], "--json").stdout))
    assert list(verdicts(rows).values()) == list(files.values())


def test_float_batches_and_npz(batch, mnist):
    x = mnist.test_x[:10]
    np.save(batch / "f.npy", x / 255.0)  # float64 in [0, 1]
    np.savez_compressed(batch / "z.npz", first=x[:4], second=x[4:])
    as_uint8 = list(verdicts(records(run("detect", batch / "b.npy", "--json").stdout)).values())
    as_float = list(verdicts(records(run("detect", batch / "f.npy", "--json").stdout)).values())
    assert [v[:2] for v in as_float] == [v[:2] for v in as_uint8]
    rows = records(run("detect", batch / "z.npz", "--json").stdout)
    assert [r["source"] for r in rows] == ([f"{batch / 'z.npz'}:first[{i}]" for i in range(4)]
                                           + [f"{batch / 'z.npz'}:second[{i}]" for i in range(6)])
    assert list(verdicts(rows).values()) == as_uint8


def test_bad_arrays_are_refused_in_one_line(tmp_path, mnist):
    np.save(tmp_path / "objects.npy", np.array([[1, "a"]] * 3, dtype=object), allow_pickle=True)
    np.save(tmp_path / "shape.npy", np.zeros((3, 20, 20), np.uint8))
    np.save(tmp_path / "dtype.npy", np.zeros((3, 28, 28), np.complex64))
    np.savez(tmp_path / "shape.npz", np.zeros((3, 20, 20), np.uint8))
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    result = run("detect", *(tmp_path / n for n in ("objects.npy", "shape.npy", "dtype.npy", "shape.npz",
                                                    "junk.npz")), "--json")
    assert result.exit_code == 2
    rows = records(result.stdout)
    assert len(rows) == 5 and all(set(r) == {"source", "error"} for r in rows)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert [f"error: {r['error']}" for r in rows] == errors
    assert "object arrays are not accepted" in rows[0]["error"]
    assert "(N, 28, 28)" in rows[1]["error"] and "(N, 28, 28)" in rows[3]["error"]


def test_a_bad_row_or_a_truncated_batch_loses_only_what_is_bad(tmp_path, mnist):
    x = mnist.test_x[:5].astype(np.int16)
    x[2, 0, 0] = 300
    np.save(tmp_path / "row.npy", x)
    np.save(tmp_path / "cut.npy", mnist.test_x[:5])
    data = (tmp_path / "cut.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(data[: len(data) - 784 * 2 - 100])  # the last 2 images and a bit lost
    rows = records(run("detect", tmp_path / "row.npy", tmp_path / "cut.npy", "--json").stdout)
    bad = [r for r in rows if "error" in r]
    assert bad[0]["source"].endswith("row.npy[2]") and "[0, 300]" in bad[0]["error"]
    assert bad[1]["source"].endswith("cut.npy") and "after 2 of 5 images" in bad[1]["error"]
    assert [r["source"].rsplit("/", 1)[1] for r in rows if "verdict" in r] == [
        "row.npy[0]", "row.npy[1]", "row.npy[3]", "row.npy[4]", "cut.npy[0]", "cut.npy[1]"]


def test_stdin_reads_one_image_through_the_decoder(batch):
    data = (batch / "d0.png").read_bytes()
    rows = records(run("detect", "-", "--json", input=data).stdout)
    assert rows[0]["source"] == "<stdin>"
    from_file = records(run("detect", batch / "d0.png", "--json").stdout)[0]
    assert rows[0]["verdict"] == from_file["verdict"] and rows[0]["p_value"] == from_file["p_value"]
    result = run("detect", "-", "--json", input=data[:40])
    assert result.exit_code == 2
    assert records(result.stdout) == [{"source": "<stdin>", "error": "<stdin>: truncated or corrupt PNG file"}]
    assert result.stderr.startswith("error: <stdin>: truncated or corrupt PNG file\n")


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_out_files_hold_the_records(batch, tmp_path, suffix):
    (batch / "bad.png").write_text("no")
    out = tmp_path / f"results{suffix}"
    result = run("detect", batch / "bad.png", batch / "b.npy", "--out", out)
    assert result.exit_code == 2 and result.stdout == ""
    expected = records(run("detect", batch / "bad.png", batch / "b.npy", "--json").stdout)
    if suffix == ".jsonl":
        rows = records(out.read_text())
    elif suffix == ".csv":
        with open(out, newline="") as f:
            rows = list(csv.DictReader(f))
    else:
        import pyarrow.parquet as pq

        rows = pq.read_table(out).to_pylist()
    assert [r["source"] for r in rows] == [r["source"] for r in expected]
    assert rows[0]["error"] == expected[0]["error"]
    for got, want in zip(rows[1:], expected[1:]):
        assert float(got["p_value"]) == pytest.approx(want["p_value"])
        assert got["verdict"] == want["verdict"]
        if suffix != ".jsonl":
            signal = next(iter(want["p_values"]))
            assert float(got[f"p_values.{signal}"]) == pytest.approx(want["p_values"][signal])


def test_bad_out_is_a_one_line_error(batch, tmp_path, monkeypatch):
    result = run("detect", batch / "d0.png", "--out", tmp_path / "r.txt")
    assert result.exit_code == 2 and "unsupported output type '.txt'" in result.stderr
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as if pyarrow were not installed
    result = run("detect", batch / "d0.png", "--out", tmp_path / "r.parquet")
    assert result.exit_code == 2
    assert result.stderr.strip().endswith("writing .parquet needs pyarrow: pip install 'edgeguard[parquet]'")
    assert not (tmp_path / "r.parquet").exists()


def test_records_are_written_chunk_by_chunk(batch, monkeypatch):
    """Each chunk's records are written before the chunk after the next is read: reading (decoding) runs at most
    one chunk ahead of screening, so memory holds two chunks whatever the number of inputs."""
    from edgeguard import cli, cli_detect, detect_output

    events = []
    real_items, real_write = cli_detect.iter_items, detect_output.JsonLines.write

    def items(files, stdin=None):
        for i, item in enumerate(real_items(files, stdin)):
            events.append(("read", i))
            yield item

    def write(self, rows):
        if rows:
            events.append(("write", len(rows)))
        real_write(self, rows)

    monkeypatch.setattr(cli, "BATCH", 4)
    monkeypatch.setattr(cli_detect, "iter_items", items)
    monkeypatch.setattr(detect_output.JsonLines, "write", write)
    result = run("detect", batch / "b.npy", "--json")
    assert result.exit_code == 0 and len(records(result.stdout)) == 10
    writes = [(n, sum(kind == "read" for kind, _ in events[:at])) for at, (kind, n) in enumerate(events)
              if kind == "write"]
    assert [n for n, _ in writes] == [4, 4, 2]
    for chunk, (_, read_before) in enumerate(writes):
        assert min(10, 4 * (chunk + 1)) <= read_before <= min(10, 4 * (chunk + 2))


def test_summary_line(batch):
    noise = np.random.default_rng(0).integers(0, 256, (2, 28, 28), dtype=np.uint8)
    np.save(batch / "noise.npy", noise)
    result = run("detect", batch / "b.npy", batch / "noise.npy", batch / "missing.png", "--json")
    rows = records(result.stdout)
    kinds = {}
    for r in rows:
        if "verdict" in r and r["verdict"] != "clean":
            kinds[r["verdict"]] = kinds.get(r["verdict"], 0) + 1
    summary = result.stderr.strip().splitlines()[-1]
    clean = sum(r.get("verdict") == "clean" for r in rows)
    assert summary.startswith("screened 12 inputs in ") and "images/s): " in summary, summary
    assert f"{clean} clean, {sum(kinds.values())} flagged" in summary and summary.endswith(", 1 refused")
    for kind, n in kinds.items():
        assert f"{n} {kind}" in summary


@pytest.mark.parametrize("cached", [True, False])
def test_notice_before_a_first_numba_compile(batch, monkeypatch, cached):
    from edgeguard import kernel_cache

    monkeypatch.setattr(kernel_cache, "kernels_cached", lambda: cached)
    notice = "note: compiling the numba kernels"
    result = run("detect", batch / "d0.png", "--kernels", "numba")
    assert (result.stderr.startswith(notice)) is not cached
    assert notice not in run("detect", batch / "d0.png", "--kernels", "numpy").stderr  # numba not used


def test_kernel_cache_is_found_and_a_newer_source_is_not_cached(tmp_path, monkeypatch):
    import edgeguard.kernels  # noqa: F401  compiled or loaded: the in-tree (or configured) cache is filled
    from edgeguard import kernel_cache

    assert kernel_cache.kernels_cached()
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "empty"))
    assert not kernel_cache.kernels_cached()
    source = tmp_path / "pkg" / "kernels_numba.py"
    source.parent.mkdir()
    source.write_bytes(kernel_cache.SOURCE.read_bytes())
    folder = kernel_cache.cache_dir(source)
    folder.mkdir(parents=True)
    version = f"py{sys.version_info[0]}{sys.version_info[1]}"
    names = kernel_cache.compiled_at_import(source)
    assert len(names) == 7  # the seeds, sampling and scoring loops (serial and parallel) and the p-values
    for name, line in names:
        (folder / f"kernels_numba.{name}-{line}.{version}.nbi").write_bytes(b"")
    assert kernel_cache.kernels_cached(source)
    later = source.stat().st_mtime + 10
    os.utime(source, (later, later))  # edited after the cache was written
    assert not kernel_cache.kernels_cached(source)


def test_fdr_selection_is_written_last_and_used_by_fail_on(batch, mnist):
    noise = np.random.default_rng(1).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    np.save(batch / "mix.npy", np.concatenate([mnist.test_x[20:60], noise]))
    result = run("detect", batch / "mix.npy", "--json", "--fdr", "0.1")
    rows = records(result.stdout)
    final, screened = rows[-1], rows[:-1]
    assert set(final) == {"fdr", "tested", "selected"} and final["fdr"] == 0.1 and final["tested"] == 45
    chosen = benjamini_hochberg([r["p_value"] for r in screened], 0.1)
    assert final["selected"] == [r["source"] for r, hit in zip(screened, chosen) if hit]
    assert {f"{batch / 'mix.npy'}[{i}]" for i in range(40, 45)} <= set(final["selected"])
    assert "FDR 0.1: Benjamini-Hochberg selects" in result.stderr
    # Clean digits at a loose alpha: some flagged one by one, none selected by BH at a strict q.
    clean = ("detect", batch / "b.npy", "--json", "--alpha", "0.5", "--fail-on", "flagged")
    without = run(*clean)
    assert without.exit_code == 1 and any(r["flagged"] for r in records(without.stdout))
    with_fdr = run(*clean, "--fdr", "0.001")
    assert records(with_fdr.stdout)[-1]["selected"] == [] and with_fdr.exit_code == 0


def test_numba_is_taken_up_between_chunks_with_the_same_results(batch, monkeypatch):
    """`--kernels numba` starts on the NumPy twins and moves the guard to numba once it has loaded."""
    import threading

    from edgeguard import cli, cli_detect
    from edgeguard.guard import Guard

    loaded, loader = cli_detect._load_numba()  # the real loader: numba's kernels, in a thread
    loader.join(timeout=120)
    assert loaded.is_set()
    ready, idle = threading.Event(), threading.Thread(target=lambda: None)
    idle.start()
    moves = []
    real_use = Guard.use_kernels

    def use_kernels(self, name):
        moves.append(name)
        real_use(self, name)

    monkeypatch.setattr(cli, "BATCH", 4)
    monkeypatch.setattr(cli_detect, "_load_numba", lambda: (ready, idle))
    monkeypatch.setattr(Guard, "use_kernels", use_kernels)
    real_chunk = cli_detect._screen_chunk

    def chunk(guard, *args, **kwargs):
        moves.append(guard.kernels)
        ready.set()  # loaded while the first chunk is screened
        return real_chunk(guard, *args, **kwargs)

    monkeypatch.setattr(cli_detect, "_screen_chunk", chunk)
    with_numba = records(run("detect", batch / "b.npy", "--json", "--kernels", "numba").stdout)
    assert moves == ["numpy", "numba", "numba", "numba"]  # chunk 1 on NumPy, then the move, chunks 2 and 3
    monkeypatch.undo()
    with_numpy = records(run("detect", batch / "b.npy", "--json", "--kernels", "numpy").stdout)
    assert with_numba == with_numpy


def test_verdict_to_dict_is_asdict_with_lists(guard, mnist):
    from dataclasses import asdict

    for v in guard.screen(mnist.test_x[:20]):
        expected = asdict(v)
        expected["labels"], expected["reasons"], expected["flagged"] = list(v.labels), list(v.reasons), v.flagged
        got = v.to_dict()
        assert got == expected and list(got) == list(expected)
        got["scores"]["x"] = 1.0
        assert "x" not in v.scores  # a copy, not the verdict's own dict


def test_chunks_start_small_and_grow(batch, mnist, monkeypatch):
    from edgeguard import cli_detect

    np.save(batch / "big.npy", np.resize(mnist.test_x, (300, 28, 28)))
    sizes = []
    real_chunk = cli_detect._screen_chunk
    monkeypatch.setattr(cli_detect, "_screen_chunk", lambda g, chunk, *a, **k: (sizes.append((len(chunk), g.kernels)),
                                                                               real_chunk(g, chunk, *a, **k))[1])
    assert run("detect", batch / "big.npy", "--json", "--kernels", "numpy").exit_code == 0
    assert sizes == [(32, "numpy"), *[(64, "numpy")] * 4, (12, "numpy")]


def test_prepare_many_is_prepare_of_each(mnist):
    from edgeguard.errors import InputError
    from edgeguard.sheet import prepare, prepare_many

    faint = (mnist.test_x[1] // 4).astype(np.uint8)
    photo = cv2.resize(255 - mnist.test_x[2], (90, 90))
    images = [mnist.test_x[0], 255 - mnist.test_x[3], faint, np.zeros((28, 28), np.uint8),
              mnist.test_x[4] / np.float32(255), photo, np.full((28, 28), 200, np.uint8), mnist.test_x[5]]
    got = prepare_many(images)
    assert len(got) == len(images)
    for image, one in zip(images, got):
        try:
            expected = prepare(image)
        except InputError as e:
            assert isinstance(one, InputError) and str(one) == str(e)
            continue
        assert one.status == expected.status and one.boxes == expected.boxes and one.size == expected.size
        assert np.array_equal(one.images, expected.images) and one.images.dtype == expected.images.dtype


def test_a_run_shorter_than_the_numba_load_waits_for_it(batch, monkeypatch):
    """A first compile that outlasts the run still ends (and fills numba's cache) before detect returns."""
    import threading
    import time

    from edgeguard import cli_detect

    release, finished = threading.Event(), []

    def slow_load():
        release.wait(timeout=60)
        time.sleep(0.5)  # still loading when the run is over
        finished.append(True)

    loader = threading.Thread(target=slow_load, daemon=True)
    loader.start()
    monkeypatch.setattr(cli_detect, "_load_numba", lambda: (threading.Event(), loader))
    real_print = cli_detect.DetectRun.summary

    def summary(self):
        release.set()  # the run is over: the load may end now, and detect must wait for it
        return real_print(self)

    monkeypatch.setattr(cli_detect.DetectRun, "summary", summary)
    assert run("detect", batch / "b.npy", "--json", "--kernels", "numba").exit_code == 0
    assert finished == [True]


@pytest.mark.parametrize("name", ["b.npy", "x.NPZ", "e.png", "b.", ".npz", "..png", "a..png", ".a.b", "a.tar.gz",
                                  "z.Jpeg", "noext", "a . b", "."])
def test_the_fast_suffix_is_paths_suffix(name):
    from pathlib import Path

    from edgeguard.detect_inputs import _suffix

    assert _suffix(name) == Path(name).suffix.lower()
