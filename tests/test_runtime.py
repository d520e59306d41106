"""The Guard API end to end on the shipped bundle."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from edgeguard import Guard, Verdict, sessions
from edgeguard.bundle import shipped_bundle_path
from edgeguard.calibration import VERDICTS
from edgeguard.errors import BundleError, InputError, ProviderChoiceError, ProviderError


def test_accuracy_through_the_runtime_meets_the_targets_and_the_manifest(guard, mnist, test_screening):
    """Re-measured on the 10,000 test images: the targets hold, and the manifest states what the runtime does."""
    accuracy = float(np.mean(test_screening.label == mnist.test_y))
    purified = float(np.mean(test_screening.purified_label == mnist.test_y))
    unanimous = float(np.mean(test_screening.n_distinct == 1))
    assert accuracy >= 0.993, f"clean accuracy {accuracy:.4f}"
    assert purified >= 0.990, f"purified accuracy {purified:.4f}"
    assert unanimous >= 0.98, f"one label among the K reconstructions {unanimous:.4f}"
    metrics = guard.manifest["metrics"]
    assert accuracy == pytest.approx(metrics["clean_accuracy"], abs=1e-6)  # deterministic: the same images
    assert purified == pytest.approx(metrics["purified_accuracy"], abs=1e-6)


# The MNIST test set is not exchangeable with the calibration split (other writers), so conformal calibration
# guarantees nothing here; the shipped bundle lands within +-0.5 pp all the same (1.00% and 5.22%). The next
# test checks the calibration itself on exchangeable data.
@pytest.mark.parametrize("alpha", [0.01, 0.05])
def test_clean_false_alarm_rate_on_the_test_set_is_close_to_alpha(guard, test_screening, alpha):
    _, p = guard.calibration.p_values(test_screening.signals)
    rate = float(np.mean(p < alpha))
    assert abs(rate - alpha) <= 0.005, f"false-alarm rate {rate:.4f} at alpha {alpha}"


@pytest.mark.parametrize("alpha", [0.01, 0.05])
def test_calibration_is_exact_on_exchangeable_data(guard, mnist, alpha):
    """Calibrated on a random half of the held-out split, the other half is flagged at about alpha."""
    from edgeguard.calibration import Calibration
    from export.measure import analyze_all

    signals = analyze_all(guard, mnist.val_x).signals
    order = np.random.default_rng(0).permutation(len(mnist.val_x))
    fit, held = order[: len(order) // 2], order[len(order) // 2 :]
    calibration = Calibration.fit({k: v[fit] for k, v in signals.items()}, guard.calibration.signals,
                                  guard.calibration.combination)
    _, p = calibration.p_values({k: v[held] for k, v in signals.items()})
    rate = float(np.mean(p < alpha))
    # 2,500 images: the binomial standard deviation is 0.2 pp at alpha=0.01 and 0.44 pp at 0.05.
    assert abs(rate - alpha) <= 3 * np.sqrt(alpha * (1 - alpha) / len(held)), rate


def test_screen_returns_verdicts(guard, digits, mnist):
    verdicts = guard.screen(digits)
    assert len(verdicts) == len(digits)
    for v in verdicts:
        assert isinstance(v, Verdict) and v.verdict in VERDICTS
        assert len(v.labels) == guard.k and 1 <= v.n_distinct <= guard.k
        assert 0.0 < v.p_value <= 1.0 and all(0.0 < p <= 1.0 for p in v.p_values.values())
        assert v.flagged == (v.verdict != "clean") and (not v.flagged) == (v.reasons == ())
        json.dumps(v.to_dict())
    # the first 64 test digits are all read right by the shipped classifier (measured when written: 64 of 64)
    assert np.mean([v.label == y for v, y in zip(verdicts, mnist.test_y)]) >= 63 / 64


@pytest.mark.parametrize("shape", [(28, 28), (1, 28, 28), (1, 1, 28, 28)])
def test_accepted_shapes_and_dtypes_agree(guard, digits, shape):
    image = digits[0]
    as_uint8 = guard.screen(image.reshape(shape))[0]
    as_float = guard.screen((image.astype(np.float32) / 255).reshape(shape))[0]
    as_float64 = guard.screen((image / 255.0).reshape(shape))[0]  # x / 255.0 is float64
    assert as_uint8 == as_float == as_float64


def test_float64_batches_get_the_uint8_verdicts(guard, mnist):
    x = mnist.test_x[:32]
    assert guard.screen(x / 255.0) == guard.screen(x)  # float64(k) / 255 rounds to float32(k) / 255 exactly
    with pytest.raises(ValueError, match=r"float images must lie in \[0, 1\].*255") as info:
        guard.screen(x.astype(np.float64))  # 0..255 floats: a clear error, not a silent screening
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("bad, error", [
    ([[0] * 28] * 28, TypeError),
    (np.zeros((28, 28), np.complex128), TypeError),
    (np.zeros((28, 28), np.bool_), TypeError),
    (np.zeros((28, 28), np.int32), TypeError),
    (np.zeros((27, 28), np.uint8), ValueError),
    (np.zeros((2, 3, 28, 28), np.float32), ValueError),
    (np.full((28, 28), np.nan, np.float32), ValueError),
    (np.full((28, 28), np.inf, np.float32), ValueError),
    (np.full((28, 28), 2.0, np.float32), ValueError),
    (np.full((28, 28), -0.1, np.float32), ValueError),
    (np.full((28, 28), 1.0 + 1e-9, np.float64), ValueError),  # checked before rounding to float32 (it would be 1.0)
    (np.full((28, 28), np.nan, np.float64), ValueError),
])
def test_bad_input_is_refused_clearly(guard, bad, error):
    with pytest.raises(error) as info:
        guard.screen(bad)
    assert "\n" not in str(info.value) and str(info.value)


def test_empty_batch(guard):
    assert guard.screen(np.zeros((0, 28, 28), np.uint8)) == []


def test_same_image_same_verdict_whatever_the_batch(guard, mnist):
    x = mnist.test_x[:40]
    alone = [guard.screen(x[i])[0] for i in (0, 17, 39)]
    together = guard.screen(x)
    shuffled = guard.screen(x[::-1])
    for i, v in zip((0, 17, 39), alone):
        assert together[i] == v == shuffled[len(x) - 1 - i]


def test_results_do_not_depend_on_thread_count(mnist):
    x = mnist.test_x[:100]
    one = Guard.load(providers="cpu", threads=1).screen(x)
    two = Guard.load(providers="cpu", threads=2).screen(x)
    assert one == two


def test_one_guard_shared_by_threads_matches_serial(guard, mnist):
    x = mnist.test_x[:160]
    serial = guard.screen(x)
    chunks = [x[i : i + 10] for i in range(0, len(x), 10)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        parallel = [v for part in pool.map(guard.screen, chunks) for v in part]
    assert parallel == serial


def test_seed_changes_the_samples_but_stays_repeatable(mnist):
    x = mnist.test_x[:20]
    a = Guard.load(providers="cpu", seed=1).analyze(x).signals["recon_mse"]
    b = Guard.load(providers="cpu", seed=1).analyze(x).signals["recon_mse"]
    c = Guard.load(providers="cpu", seed=2).analyze(x).signals["recon_mse"]
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_alpha_changes_what_is_flagged(guard, mnist):
    x = mnist.test_x[:300]
    strict = Guard.load(providers="cpu", alpha=0.001).screen(x)
    loose = Guard.load(providers="cpu", alpha=0.2).screen(x)
    assert sum(v.flagged for v in strict) <= sum(v.flagged for v in loose)
    assert sum(v.flagged for v in loose) > 0


@pytest.mark.parametrize("kwargs, error", [
    ({"k": 0}, ValueError), ({"k": 2.5}, TypeError), ({"seed": -1}, ValueError),
    ({"alpha": 0.0}, ValueError), ({"alpha": 1.5}, ValueError), ({"alpha": "x"}, ValueError),
    ({"providers": "tpu"}, ProviderError), ({"providers": ["NoSuchExecutionProvider"]}, ProviderError),
])
def test_bad_load_arguments(kwargs, error):
    with pytest.raises(error):
        Guard.load(**kwargs)


def test_k_and_warmup(mnist):
    g = Guard.load(providers="cpu", k=3)
    timings = g.warmup()
    assert set(timings) >= {"kernels_s", "first_screen_s", "total_s"} and timings["total_s"] >= 0
    assert len(g.screen(mnist.test_x[0])[0].labels) == 3


# -- providers ------------------------------------------------------------------------------------

def test_cuda_requested_but_missing_is_an_error(monkeypatch):
    monkeypatch.setattr(sessions.ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(ProviderError, match="CUDAExecutionProvider"):
        Guard.load(providers="cuda")


def test_auto_falls_back_to_cpu_quietly(monkeypatch, caplog):
    """providers="auto" asked for nothing: the CPU fallback is logged at DEBUG, never as a warning."""
    monkeypatch.setattr(sessions.ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with caplog.at_level(logging.DEBUG, logger="edgeguard.sessions"):
        g = Guard.load(providers="auto")
    assert g.providers == ["CPUExecutionProvider"]
    said = [r for r in caplog.records if "CUDAExecutionProvider" in r.message]
    assert said and all(r.levelno == logging.DEBUG for r in said)


def test_silent_fallback_is_detected(monkeypatch, caplog):
    """onnxruntime can drop CUDA without an error: the session's real providers are checked. Under "auto" the
    fallback is a DEBUG record; a warning when CUDA was named; an error with providers="cuda"."""
    monkeypatch.setattr(sessions.ort, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    real = sessions.ort.InferenceSession

    def cpu_only(model, sess_options=None, providers=None):
        return real(model, sess_options=sess_options, providers=["CPUExecutionProvider"])

    monkeypatch.setattr(sessions.ort, "InferenceSession", cpu_only)
    for choice, level in (("auto", logging.DEBUG), (["CUDAExecutionProvider", "CPUExecutionProvider"], logging.WARNING),
                          ("CUDAExecutionProvider,CPUExecutionProvider", logging.WARNING)):
        caplog.clear()
        with caplog.at_level(logging.DEBUG, logger="edgeguard.sessions"):
            g = Guard.load(providers=choice)
        assert g.providers == ["CPUExecutionProvider"]
        said = [r for r in caplog.records if "runs it on CPUExecutionProvider" in r.message]
        assert said and {r.levelno for r in said} == {level}, choice
    with pytest.raises(ProviderError, match="runs it on"):
        Guard.load(providers="cuda")


@pytest.mark.parametrize("choice", ["CPUExecutionProvider", "cpuexecutionprovider", " CPUExecutionProvider ",
                                    "CPUExecutionProvider,", ["CPUExecutionProvider"], ["cpu"]])
def test_provider_names_are_accepted_as_given(choice):
    assert sessions.providers_from_choice(choice) == ["CPUExecutionProvider"]


@pytest.mark.parametrize("choice", ["tpu", "", ",", "CPUExecutionProvidr", ["NoSuchExecutionProvider"], [],
                                    ["auto"], [3]])
def test_unknown_provider_names_are_bad_arguments(choice):
    """A name onnxruntime does not know is a bad argument (a ValueError, still a ProviderError), one line."""
    with pytest.raises(ValueError) as info:
        sessions.providers_from_choice(choice)
    assert isinstance(info.value, ProviderChoiceError) and "\n" not in str(info.value)


def test_known_but_unavailable_provider_is_not_a_bad_argument(monkeypatch):
    monkeypatch.setattr(sessions.ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(ProviderError) as info:
        sessions.providers_from_choice("TensorrtExecutionProvider,CPUExecutionProvider")
    assert not isinstance(info.value, ValueError) and "TensorrtExecutionProvider" in str(info.value)


# -- bundles ----------------------------------------------------------------------------------------

@pytest.fixture
def bundle_copy(tmp_path):
    target = tmp_path / "bundle"
    shutil.copytree(shipped_bundle_path(), target)
    return target


def test_tampered_model_is_refused(bundle_copy):
    path = bundle_copy / "decoder.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="sha256"):
        Guard.load(bundle_copy)


def test_missing_model_and_manifest_are_refused(bundle_copy):
    (bundle_copy / "encoder.onnx").unlink()
    with pytest.raises(BundleError, match="missing"):
        Guard.load(bundle_copy)
    (bundle_copy / "manifest.json").unlink()
    with pytest.raises(BundleError, match="manifest"):
        Guard.load(bundle_copy)


def test_manifest_path_outside_the_bundle_is_refused(bundle_copy):
    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    manifest["models"]["encoder"]["file"] = "../../etc/passwd"
    (bundle_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="not a file inside the bundle"):
        Guard.load(bundle_copy)


def test_uncalibrated_bundle_says_how_to_calibrate(bundle_copy, digits):
    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    manifest["calibration"] = None
    (bundle_copy / "manifest.json").write_text(json.dumps(manifest))
    g = Guard.load(bundle_copy, providers="cpu")
    assert len(g.analyze(digits[:2]).label) == 2
    with pytest.raises(BundleError, match="export.calibrate"):
        g.screen(digits[:2])


def test_manifest_is_read_into_a_typed_object(guard):
    from edgeguard.bundle import Manifest, load_bundle, load_manifest, read_manifest
    from edgeguard.contract import CALIBRATIONS, MODEL_NAMES, SIGNATURES

    raw = json.loads((shipped_bundle_path() / "manifest.json").read_text())
    info = load_manifest()
    assert isinstance(info, Manifest) and info.raw == raw == read_manifest(shipped_bundle_path()) == guard.manifest
    assert info.sha256 == load_bundle().manifest_sha256 == guard.bundle.manifest_sha256
    assert (info.format_version, info.latent_dim, info.n_classes, info.default_k) == \
           (raw["format_version"], raw["latent_dim"], raw["n_classes"], raw["default_k"])
    assert list(info.models) == list(MODEL_NAMES)
    for name, model in info.models.items():
        assert (model.file, model.sha256) == (raw["models"][name]["file"], raw["models"][name]["sha256"])
        assert (model.input, model.outputs) == SIGNATURES[name]
    assert (info.metrics, info.provenance, info.input) == (raw["metrics"], raw["provenance"], raw["input"])
    assert (info.name, info.created) == (raw["name"], raw["created"])
    assert set(info.calibrations) == set(CALIBRATIONS)
    for choice, key in CALIBRATIONS.items():
        calibration, entry = info.calibrations[choice], raw[key]
        assert list(calibration.signals) == entry["signals"] and calibration.combination == entry["combination"]
        assert (calibration.n, calibration.k, calibration.seed) == (entry["n"], entry["k"], entry["seed"])
        assert calibration.test_false_alarm_rate == entry["test_false_alarm_rate"]
    assert info.calibration is info.calibrations["digits"] and info.camera_calibration is info.calibrations["camera"]
    assert guard.bundle.info.calibration is guard.calibration  # decoded once, when the bundle was checked
    table = np.stack([info.calibration.scores[s] for s in info.calibration.signals])
    assert np.array_equal(guard.calibration.table, table)


def test_calibration_entries_are_checked_in_one_place(bundle_copy):
    """load_bundle's message is Calibration.from_manifest's, after the manifest's path."""
    from edgeguard.bundle import load_bundle
    from edgeguard.calibration import Calibration

    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    entry = {**manifest["camera_calibration"], "k": 3}
    with pytest.raises(BundleError) as direct:
        Calibration.from_manifest(entry, manifest["default_k"], "camera_calibration")
    manifest["camera_calibration"] = entry
    (bundle_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError) as loading:
        load_bundle(bundle_copy)
    assert str(loading.value) == f"{bundle_copy / 'manifest.json'}: {direct.value}"
    assert str(direct.value).startswith("camera_calibration: computed with k=3 but 'default_k' is 10")


def test_uncalibrated_manifest_has_no_calibrations(bundle_copy):
    from edgeguard.bundle import load_manifest

    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    manifest["calibration"] = None
    del manifest["camera_calibration"]
    (bundle_copy / "manifest.json").write_text(json.dumps(manifest))
    info = load_manifest(bundle_copy)
    assert info.calibrations == {} and info.calibration is None and info.camera_calibration is None


def test_runtime_never_imports_torch(tmp_path):
    code = (
        "import sys, numpy as np\n"
        "import edgeguard\n"
        "from edgeguard import Guard, preprocess\n"
        "from edgeguard import cli, webcam\n"
        "g = Guard.load(providers='cpu')\n"
        "g.screen(np.zeros((2, 28, 28), np.uint8))\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


# -- the camera calibration -------------------------------------------------------------------------

def test_camera_calibration_is_chosen_at_load(guard, digits):
    camera = Guard.load(providers="cpu", calibration="camera")
    assert (guard.calibration_name, camera.calibration_name) == ("digits", "camera")
    assert camera.calibration.signals == guard.calibration.signals  # same signals, other clean scores
    assert camera.calibration.combination == guard.calibration.combination
    assert camera.bundle.camera_calibration["n"] == camera.calibration.combined.size
    ours, theirs = camera.screen(digits), guard.screen(digits)
    assert [(v.label, v.scores) for v in ours] == [(v.label, v.scores) for v in theirs]
    assert [v.p_value for v in ours] != [v.p_value for v in theirs]


def test_camera_calibration_missing_is_a_clear_error(bundle_copy):
    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    del manifest["camera_calibration"]
    (bundle_copy / "manifest.json").write_text(json.dumps(manifest))
    assert Guard.load(bundle_copy, providers="cpu").calibration is not None  # digits: unaffected
    with pytest.raises(BundleError, match="no camera calibration.*export.calibrate --only camera"):
        Guard.load(bundle_copy, providers="cpu", calibration="camera")
    with pytest.raises(ValueError, match="calibration must be one of digits, camera"):
        Guard.load(bundle_copy, providers="cpu", calibration="webcam")


def _first_scores(entry: dict) -> dict:
    return entry["scores"][entry["signals"][0]]


@pytest.mark.parametrize("edit, fragment", [
    (lambda c: "yes", "'camera_calibration' must be a JSON object"),
    (lambda c: {**c, "n": 5}, "but 'n' is 5"),
    (lambda c: {**c, "k": 3}, "computed with k=3"),
    (lambda c: {**c, "signals": c["signals"] + ["magic"]}, "known signals"),
    (lambda c: {**c, "combination": "magic"}, "unknown combination"),
    (lambda c: {k: v for k, v in c.items() if k != "combined"}, "'combined'"),
    (lambda c: _first_scores(c).update(base64="@@@") or c, "malformed"),
    (lambda c: {**c, "test_false_alarm_rate": {"0.01": "low"}}, "test_false_alarm_rate"),
], ids=["type", "n", "k", "signal", "combination", "combined", "base64", "rates"])
def test_malformed_camera_calibration_is_refused(bundle_copy, edit, fragment):
    """Checked like the digit calibration, whichever calibration is asked for, before onnxruntime runs."""
    from edgeguard.bundle import load_bundle

    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    manifest["camera_calibration"] = edit(manifest["camera_calibration"])
    (bundle_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError) as caught:
        load_bundle(bundle_copy)
    message = str(caught.value)
    assert "camera_calibration" in message and fragment in message and "\n" not in message
    with pytest.raises(BundleError):
        Guard.load(bundle_copy, providers="cpu")  # the digit calibration does not make it loadable


# -- the service API: bytes in, the bundle named in every verdict ----------------------------------------------

def test_every_verdict_names_its_bundle(guard, digits, bundle_copy):
    import hashlib

    digest = hashlib.sha256((shipped_bundle_path() / "manifest.json").read_bytes()).hexdigest()
    assert guard.bundle_id == digest[:12] == guard.bundle.info.bundle_id
    for v in guard.screen(digits[:3]) + [guard.screen_file(shipped_bundle_path().parents[1] / "examples" /
                                                           "digit_7.png")]:
        assert v.bundle_id == digest[:12] and v.to_dict()["bundle_id"] == digest[:12]
        assert json.loads(json.dumps(v.to_dict()))["bundle_id"] == digest[:12]
    # another bundle (here: the same models, another manifest) has another id
    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    manifest["name"] = "a copy"
    (bundle_copy / "manifest.json").write_text(json.dumps(manifest))
    other = Guard.load(bundle_copy, providers="cpu", kernels="numpy")
    assert other.bundle_id != guard.bundle_id and other.screen(digits[0])[0].bundle_id == other.bundle_id


EXAMPLES = shipped_bundle_path().parents[1] / "examples"


def test_screen_bytes_matches_screen_file(guard, tmp_path):
    import cv2

    for name in ("digit_7.png", "photo_digit_3.jpg", "not_a_digit_boot.png", "adversarial_from_9.png"):
        path = EXAMPLES / name
        from_bytes = guard.screen_bytes(path.read_bytes(), source=name)
        assert from_bytes == dataclasses.replace(guard.screen_file(path), source=name)
    image = cv2.imread(str(EXAMPLES / "digit_7.png"), cv2.IMREAD_GRAYSCALE)
    for suffix in (".bmp", ".tif", ".pgm"):  # sniffed from the content: no suffix needed
        ok, encoded = cv2.imencode(suffix, image)
        assert ok
        assert guard.screen_bytes(encoded.tobytes()).to_dict() == {
            **guard.screen(image)[0].to_dict(), "source": None}
    assert guard.screen_bytes(bytearray((EXAMPLES / "digit_7.png").read_bytes())).label == 7
    assert guard.screen_bytes(memoryview((EXAMPLES / "digit_7.png").read_bytes())).label == 7


@pytest.mark.parametrize("data, fragment", [
    (b"", "empty input"),
    (b"hello, world", "not a supported image file"),
    (b"GIF89a" + bytes(20), "GIF is not supported"),
    ((EXAMPLES / "digit_7.png").read_bytes()[:60], "truncated or corrupt PNG"),
    ((EXAMPLES / "photo_digit_3.jpg").read_bytes()[:300], "JPEG"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x01\x00\x00\x00\x01\x00\x00\x08\x00\x00\x00\x00" + bytes(40),
     "too large"),  # a header claiming 65536 x 65536: refused before any decoder runs
])
def test_screen_bytes_refuses_what_detect_refuses(guard, data, fragment):
    with pytest.raises(InputError) as info:
        guard.screen_bytes(data, source="upload-1")
    text = str(info.value)
    assert fragment in text and text.startswith("upload-1: ") and "\n" not in text
    with pytest.raises(InputError) as info:
        guard.screen_bytes(data)  # no source: the reason alone
    assert fragment in str(info.value) and not str(info.value).startswith("upload-1")


def test_screen_bytes_refuses_a_blank_image_and_non_bytes(guard):
    import cv2

    ok, blank = cv2.imencode(".png", np.full((40, 60), 255, np.uint8))
    with pytest.raises(InputError, match="upload: .*blank"):
        guard.screen_bytes(blank.tobytes(), source="upload")
    for bad in ("digit.png", EXAMPLES / "digit_7.png", np.zeros((28, 28), np.uint8)):
        with pytest.raises(TypeError, match="bytes"):
            guard.screen_bytes(bad)  # type: ignore[arg-type]
