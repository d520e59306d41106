"""Hardening (issue 7): malformed inputs, bundle integrity, concurrency, memory, determinism, webcam.

The corpus comes from benchmarks/corpus.py; the heavier versions of these checks are in
`python -m benchmarks.reliability`, which shares the helpers used here.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from typer.testing import CliRunner

from benchmarks import reliability as rel
from benchmarks.corpus import CASES, MARKER, SKIPPED, make_corpus
from edgeguard import Guard, Verdict
from edgeguard.bundle import load_bundle, onnx_signature, shipped_bundle_path
from edgeguard.cli import app
from edgeguard.errors import BundleError, InputError
from edgeguard.normalize import load_and_preprocess

ROOT = pathlib.Path(__file__).resolve().parents[1]
runner = CliRunner()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    return folder, make_corpus(folder)


# --------------------------------------------------------------------------- the corpus, through the CLI


def test_corpus_has_every_case(corpus):
    _, paths = corpus
    assert set(paths) | set(SKIPPED) == set(CASES)
    assert not set(SKIPPED) - {"palette_png", "cmyk_jpeg"}  # only Pillow-built cases may be missing


def test_detect_reports_each_bad_file_once_and_screens_the_rest(corpus):
    folder, paths = corpus
    args = [os.fspath(p) for p in paths.values()]
    with rel.unreadable(paths["unreadable"]):
        result = runner.invoke(app, ["detect", "--json", *args])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(lines) == len(errors) + 1 and lines[-1].startswith("screened "), lines  # one summary at the end
    records = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    verdicts = [r for r in records if "error" not in r]
    # each refusal is a JSON record too, with stderr's message
    assert sorted(f"error: {r['error']}" for r in records if "error" in r) == sorted(errors)
    for name, path in paths.items():
        case = CASES[name]
        expect = case.cli_expect or case.expect
        mine = [line for line in errors if line.startswith(f"error: {path}: ")]
        if expect == "refused":
            assert len(mine) == 1, (name, errors)
            assert case.fragment.lower() in mine[0].lower(), (name, mine[0])
        else:
            seen = [v for v in verdicts if v["source"] == os.fspath(path)
                    or v["source"].startswith(os.fspath(path) + os.sep)]
            assert len(seen) == 1 and not mine, (name, seen, mine)  # the loop folder's digit: once
    assert len(errors) == sum((CASES[n].cli_expect or CASES[n].expect) == "refused" for n in paths)
    assert not (folder / MARKER).exists()  # object.npy was never unpickled


@pytest.mark.parametrize("name", [n for n in CASES if (CASES[n].cli_expect or CASES[n].expect) == "refused"])
def test_detect_each_bad_file_next_to_a_good_one(corpus, name):
    _, paths = corpus
    if name not in paths:
        pytest.skip(SKIPPED.get(name, "not built"))
    with rel.unreadable(paths["unreadable"]):
        result = runner.invoke(app, ["detect", "--json", os.fspath(paths[name]), os.fspath(paths["good_png"])])
    assert result.exit_code == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith(f"error: {paths[name]}: ")
    assert CASES[name].fragment.lower() in errors[0].lower()
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["source"] for r in records if "error" not in r] == [os.fspath(paths["good_png"])]
    assert [f"error: {r['error']}" for r in records if "error" in r] == errors


def test_really_unreadable_file_in_a_real_process(tmp_path):
    """Not simulated: a chmod-000 file, read by a process that lacks CAP_DAC_OVERRIDE (setpriv) when root."""
    prefix = rel.drop_dac_prefix()
    if prefix is None:
        pytest.skip("running as root without a usable setpriv: cannot make a file unreadable")
    paths = make_corpus(tmp_path)
    run = subprocess.run(prefix + [sys.executable, "-m", "edgeguard", "detect", "--json",
                                   os.fspath(paths["unreadable"]), os.fspath(paths["good_npy"])],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert run.returncode == 2, run.stderr
    lines = run.stderr.splitlines()
    assert lines[0] == f"error: {paths['unreadable']}: permission denied (cannot read the file)"
    assert len(lines) == 2 and lines[1].startswith("screened ") and "1 refused" in lines[1]
    records = [json.loads(line) for line in run.stdout.splitlines()]
    assert [r["source"] for r in records if "error" not in r] == [os.fspath(paths["good_npy"])]


# --------------------------------------------------------------------------- the corpus, through the API


@pytest.mark.parametrize("name", list(CASES))
def test_screen_file_gives_a_verdict_or_an_input_error(guard, corpus, name):
    folder, paths = corpus
    if name not in paths:
        pytest.skip(SKIPPED.get(name, "not built"))
    path, case = paths[name], CASES[name]
    with rel.unreadable(paths["unreadable"]):
        if case.expect == "screened":
            verdict = guard.screen_file(path)
            assert isinstance(verdict, Verdict) and verdict.source == os.fspath(path)
            return
        with pytest.raises(InputError) as caught:
            guard.screen_file(path)
    text = str(caught.value)
    assert "\n" not in text and path.name in text and case.fragment.lower() in text.lower(), text
    assert caught.value.path is not None
    assert not (folder / MARKER).exists()


def test_pickled_npy_marker_is_real(tmp_path):
    """The object.npy booby trap works: loading it with pickle creates the marker (so its absence means something)."""
    paths = make_corpus(tmp_path)
    np.load(paths["npy_object"], allow_pickle=True)
    assert (tmp_path / MARKER).exists()


# Mean absolute difference from the plain digit, per variant; measured when written (deterministic): 0, 0,
# 0.0041 (the adaptive palette quantises the grey levels) and 0.0002.
VARIANT_TOLERANCE = {"deep16_png": 1e-3, "rgba_png": 1e-3, "palette_png": 0.01, "cmyk_jpeg": 2e-3}


@pytest.mark.parametrize("name", list(VARIANT_TOLERANCE))
def test_decodable_variants_look_like_the_plain_digit(corpus, name):
    """16-bit, RGBA, palette and CMYK versions of the same digit preprocess to (almost) the same image."""
    _, paths = corpus
    if name not in paths:
        pytest.skip(SKIPPED.get(name, "not built"))
    plain = load_and_preprocess(paths["good_png"])
    assert np.abs(load_and_preprocess(paths[name]) - plain).mean() < VARIANT_TOLERANCE[name]


def test_decoder_warnings_never_reach_stderr(tmp_path, capfd):
    """libpng and libjpeg print to the C stderr; the refusal carries their words instead."""
    import cv2

    png = bytearray(cv2.imencode(".png", rel.image_pool(1)[0])[1].tobytes())
    start = png.index(b"IDAT") + 4
    png[start + 2 : start + 12] = b"\xff" * 10  # garble the deflate stream, then fix the CRC
    from benchmarks.fuzz_decode import _fix_png_crcs

    (tmp_path / "garbled.png").write_bytes(bytes(_fix_png_crcs(png)))
    jpeg = cv2.imencode(".jpg", np.tile(np.arange(64, dtype=np.uint8), (64, 1)))[1].tobytes()
    sos = jpeg.index(b"\xff\xda")
    (tmp_path / "cut.jpg").write_bytes(jpeg[: sos + 40] + jpeg[-2:])  # scan data cut short, EOI kept
    for name in ("garbled.png", "cut.jpg"):
        with pytest.raises(InputError, match="corrupt"):
            load_and_preprocess(tmp_path / name)
    captured = capfd.readouterr()
    assert captured.err == "" and captured.out == ""


def test_decoding_many_keeps_each_files_own_decoder_messages(tmp_path, capfd):
    """``decoding_many`` holds fd 2's capture open across a chunk of files (``detect``): a garbled file among good
    ones still gets its decoder's words, the good ones none, and nothing reaches stderr but other output."""
    import cv2

    from edgeguard import decode as pp

    good = cv2.imencode(".png", rel.image_pool(1)[0])[1].tobytes()
    jpeg = cv2.imencode(".jpg", np.tile(np.arange(64, dtype=np.uint8), (64, 1)))[1].tobytes()
    sos = jpeg.index(b"\xff\xda")
    cut = jpeg[: sos + 40] + jpeg[-2:]
    outcomes = []
    with pp.decoding_many():
        for data in (good, cut, good, cut):
            try:
                outcomes.append(pp.decode_image(data).shape)
            except InputError as e:
                outcomes.append(str(e))
        os.write(2, b"a log line from another thread\n")
    assert outcomes[0] == outcomes[2] == (28, 28)
    assert outcomes[1] == outcomes[3] and "corrupt JPEG file (Corrupt JPEG data" in outcomes[1]
    assert capfd.readouterr().err == "a log line from another thread\n"


def test_output_of_other_threads_is_not_swallowed_by_decoding(tmp_path, capfd):
    """fd 2 is redirected while a decoder runs; what is not a decoder message is written back."""
    from edgeguard import decoder_output

    with decoder_output.decoder_messages() as messages:
        os.write(2, b"libpng warning: iCCP: known incorrect sRGB profile\n")
        os.write(2, b"a log line from another thread\n")
    assert messages == ["libpng warning: iCCP: known incorrect sRGB profile"]
    assert capfd.readouterr().err == "a log line from another thread\n"


def test_recursive_glob_does_not_follow_symlink_loops(corpus, tmp_path):
    """glob.glob('**') follows symlinked folders: a loop made `detect 'dir/**/*.png'` run without end."""
    folder, paths = corpus
    result = runner.invoke(app, ["detect", "--json", os.fspath(paths["dir_symlink_loop"] / "**" / "*.png")])
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["source"] for line in result.stdout.splitlines()] == [
        os.fspath(paths["dir_symlink_loop"] / "inside.png")]


def test_file_names_are_not_rich_markup(tmp_path, corpus):
    _, paths = corpus
    odd = tmp_path / "d["
    odd.mkdir()
    target = odd / "x].png"  # the path holds "[/x]", a closing tag rich would choke on
    target.write_bytes(paths["good_png"].read_bytes())
    styled = tmp_path / "[red]seven.png"
    styled.write_bytes(paths["good_png"].read_bytes())
    result = runner.invoke(app, ["detect", os.fspath(target), os.fspath(styled)])
    assert result.exit_code == 0 and result.exception is None, result.output
    assert "[red]seven.png" in result.stdout and "x].png" in result.stdout


def test_uncalibrated_bundle_is_exit_3_for_detect(tmp_path, corpus):
    _, paths = corpus
    root = tmp_path / "bundle"
    import shutil

    shutil.copytree(shipped_bundle_path(), root)
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["calibration"] = None
    (root / "manifest.json").write_text(json.dumps(manifest))
    result = runner.invoke(app, ["detect", "--bundle", os.fspath(root), os.fspath(paths["good_png"])])
    assert result.exit_code == 3 and "export.calibrate" in result.stderr
    assert result.stderr.count("\n") == 1


# --------------------------------------------------------------------------- bundle integrity


@pytest.mark.parametrize("name", list(rel.TAMPERS))
def test_tampered_bundle_is_refused_before_onnxruntime(tmp_path, name):
    root, kwargs = rel.tampered_copy(name, tmp_path)
    with rel.forbid_onnxruntime() as calls:
        with pytest.raises(BundleError) as caught:
            if kwargs:
                load_bundle(root, **kwargs)
            else:
                Guard.load(root, providers="cpu")
    assert not calls, "onnxruntime saw the bundle before it was refused"
    text = str(caught.value)
    assert rel.TAMPERS[name].fragment.lower() in text.lower(), text
    assert "\n" not in text
    assert not (tmp_path / MARKER).exists()


def test_consistent_metrics_edit_is_only_caught_by_a_pin(tmp_path):
    """The documented limit: an edit that keeps the manifest consistent loads, unless the digest is pinned."""
    root, kwargs = rel.tampered_copy("metrics_pinned", tmp_path)
    assert load_bundle(root).manifest["metrics"]["clean_accuracy"] == 0.999
    with pytest.raises(BundleError, match="not the pinned"):
        load_bundle(root, **kwargs)
    shipped = load_bundle()
    assert load_bundle(manifest_sha256=shipped.manifest_sha256).manifest == shipped.manifest


def test_tampered_bundle_is_exit_3_in_the_cli(tmp_path, corpus):
    _, paths = corpus
    root, _ = rel.tampered_copy("latent_dim", tmp_path)
    result = runner.invoke(app, ["detect", "--bundle", os.fspath(root), os.fspath(paths["good_png"])])
    assert result.exit_code == 3 and result.stderr.count("\n") == 1 and "latent_dim" in result.stderr


def test_info_shows_the_digest_to_pin():
    result = runner.invoke(app, ["info", "--json"])
    assert result.exit_code == 0
    assert json.loads(result.stdout)["manifest_sha256"] == load_bundle().manifest_sha256


def test_onnx_signature_of_the_shipped_models():
    bundle = load_bundle()
    inputs, outputs, external = onnx_signature(bundle.models["decoder"])
    assert [i[0] for i in inputs] == ["z"] and inputs[0][2] == [inputs[0][2][0], bundle.latent_dim]
    assert [o[0] for o in outputs] == ["recon"] and not external
    with pytest.raises(ValueError, match="well-formed"):
        onnx_signature(b"\x80\x04not onnx")


def test_runtime_has_no_code_execution_paths(tmp_path):
    assert rel.code_execution_scan()["hits"] == []
    # The scan is not blind: it finds each of these.
    (tmp_path / "bad.py").write_text(textwrap.dedent("""
        import pickle
        from importlib import import_module
        import numpy as np
        eval("1")
        np.load("x.npy", allow_pickle=True)
        import_module("os")
    """))
    hits = rel.code_execution_scan(tmp_path)["hits"]
    assert len(hits) == 5, hits


# --------------------------------------------------------------------------- concurrency, load, determinism


def test_threads_sharing_one_guard_match_serial(guard):
    result = rel.concurrent_vs_serial(guard, threads=8, screens=25)
    assert result["calls"] == 200 and result["mismatches"] == 0


def test_threads_under_numba_workqueue_layer_do_not_abort():
    assert rel.workqueue_threads()["ok"]


def test_sustained_screening_keeps_memory_bounded(guard):
    if rel.rss_bytes() is None:
        pytest.skip("no /proc/self/status and no psutil: RSS unknown")
    result = rel.sustained_memory(guard, images=1500, sizes=(1, 2, 3, 5, 8))
    assert result["images"] == 1500 and result["calls"] >= 360, result  # measured when written: 403 calls
    # Growth of the resident set after the warm-up (the first 150 images), in MB rather than as a share of a
    # baseline that depends on what else the session loaded. Measured when written: 0.0 to 0.3 MB (of 227 to
    # 280 MB) in 7 runs: in a script, alone and after the rest of this file. 2 MB is a leak of 1.5 KB per image
    # screened after the warm-up, or 5.5 KB per call.
    assert result["rss_max_mb"] - result["rss_after_warmup_mb"] <= 2.0, result


def test_same_verdicts_in_a_fresh_process():
    result = rel.across_processes(n=24)
    assert result["equal"], result


def test_same_verdicts_whatever_the_batch(guard):
    result = rel.batch_composition(guard, n=130)
    assert result["mismatches"] == 0


def test_same_verdicts_with_one_or_two_threads():
    result = rel.thread_counts(n=70)
    assert result["distinct_results"] == 1, result


# --------------------------------------------------------------------------- webcam


def test_truncated_video_ends_cleanly_with_a_message(guard, tmp_path):
    webcam = pytest.importorskip("edgeguard.webcam")
    video = rel.write_video(tmp_path / "video.avi", frames=20)
    data = video.read_bytes()
    (tmp_path / "half.avi").write_bytes(data[: len(data) // 2])
    summary = webcam.run(guard, tmp_path / "half.avi", display=False)
    assert 0 < summary.frames < 20
    assert summary.stopped == "truncated" and "ended early" in summary.message and "\n" not in summary.message
    (tmp_path / "head.avi").write_bytes(data[:300])
    with pytest.raises(InputError) as caught:
        webcam.run(guard, tmp_path / "head.avi", display=False)
    assert "head.avi" in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.xfail(strict=True, reason="webcam.py: FFmpeg ('[mjpeg @ 0x...] overread') and OpenCV's AVI parser "
                                        "('Unexpected element...') print to the C stderr on truncated videos "
                                        "(see the hardening report)")
def test_truncated_video_prints_nothing_stray(guard, tmp_path, capfd):
    webcam = pytest.importorskip("edgeguard.webcam")
    data = rel.write_video(tmp_path / "video.avi", frames=20).read_bytes()
    (tmp_path / "half.avi").write_bytes(data[: len(data) // 2])
    (tmp_path / "head.avi").write_bytes(data[:300])
    capfd.readouterr()
    webcam.run(guard, tmp_path / "half.avi", display=False)
    with pytest.raises(InputError):
        webcam.run(guard, tmp_path / "head.avi", display=False)
    assert capfd.readouterr().err == ""


@pytest.mark.parametrize("frame", ["noise", "tiny_contours", "many_digits"])
def test_hostile_frames_neither_crash_nor_stall(guard, frame, monkeypatch):
    webcam = pytest.importorskip("edgeguard.webcam")
    image = {"noise": rel.noise_frame, "tiny_contours": rel.tiny_contours_frame,
             "many_digits": rel.many_digits_frame}[frame]()
    batches = []
    real = guard.screen
    monkeypatch.setattr(guard, "screen", lambda images, **kw: batches.append(len(images)) or real(images, **kw))
    results = webcam.process_frame(guard, image, max_digits=8)
    assert len(results) <= 8
    assert len(batches) <= 1 and sum(batches) <= 8  # the work per frame is bounded, whatever the frame holds
