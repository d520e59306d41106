"""The one rule for 28x28 inputs (edgeguard.contrast): the API and the CLI see the same pixels."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from edgeguard.cli import app
from edgeguard.contrast import standardize
from edgeguard.errors import InputError
from edgeguard.normalize import load_and_preprocess, preprocess

runner = CliRunner()


def flat(images: np.ndarray) -> np.ndarray:
    return images.reshape(len(images), -1).astype(np.float32) / 255


def test_mnist_digits_are_left_as_they_are(mnist):
    x = flat(mnist.val_x)
    out, blank = standardize(x)
    assert not blank.any()
    # Only the images whose brightest pixel is 254 rather than 255 move, by at most that last level.
    assert np.abs(out - x).max() <= 1 / 255 + 1e-6
    assert out.max(axis=1).min() == 1.0


def test_faint_ink_is_stretched_to_full_scale(mnist):
    x = flat(mnist.test_x[:50])
    faint = (x * np.float32(0.5)).astype(np.float32)  # peak 0.5: a light pencil
    out, blank = standardize(faint)
    assert not blank.any()
    np.testing.assert_allclose(out, x / x.max(axis=1, keepdims=True), atol=1e-6)


def test_dark_ink_on_light_paper_is_inverted(mnist):
    x = flat(mnist.test_x[:50])
    paper = np.float32(0.85) - np.float32(0.6) * x  # grey paper, dark ink
    out, _ = standardize(paper)
    np.testing.assert_allclose(out, x / x.max(axis=1, keepdims=True), atol=1e-5)


def test_the_rule_is_idempotent(mnist):
    rng = np.random.default_rng(0)
    x = np.concatenate([flat(mnist.test_x[:40]) * rng.uniform(0.2, 1, (40, 1)).astype(np.float32),
                        rng.random((10, 784), dtype=np.float32)])
    once, _ = standardize(x)
    twice, _ = standardize(once)
    np.testing.assert_array_equal(once, twice)


def test_noise_on_a_dark_background_keeps_its_background():
    """Noise added on top of a black frame (as an L-inf attack adds it) is not taken for the background."""
    rng = np.random.default_rng(1)
    x = np.zeros((4, 784), np.float32)
    x[:, 300:320] = 1.0
    x += np.where(rng.random(x.shape) < 0.5, np.float32(0.3), np.float32(0.0))
    x = np.clip(x, 0, 1)
    out, _ = standardize(x)
    np.testing.assert_array_equal(out, x)


def test_blank_images_are_reported_not_stretched():
    x = np.stack([np.zeros(784, np.float32), np.full(784, 0.6, np.float32), np.full(784, 0.05, np.float32)])
    x[2, 400] = 0.1  # 0.05 above the background: no digit
    out, blank = standardize(x)
    assert blank.tolist() == [True, True, True]
    np.testing.assert_array_equal(out, x)


def test_api_and_cli_see_the_same_pixels(guard, mnist, tmp_path):
    """A faint 28x28 digit and a dark-on-light one, as an array and as a PNG file: one set of pixels, one verdict."""
    digit = mnist.test_x[0].astype(np.float32)
    faint = np.rint(digit * 0.55).astype(np.uint8)
    dark_on_light = np.rint(230 - digit * 0.8).astype(np.uint8)
    for name, image in (("faint", faint), ("dark_on_light", dark_on_light)):
        path = tmp_path / f"{name}.png"
        cv2.imwrite(str(path), image)
        from_file = load_and_preprocess(path)
        np.testing.assert_array_equal(from_file, preprocess(image))
        np.testing.assert_allclose(from_file, standardize(flat(image[None]))[0].reshape(28, 28), atol=1e-6)
        api = guard.screen(image)[0]
        cli = json.loads(runner.invoke(app, ["detect", str(path), "--json"]).stdout)
        cli = cli[0] if isinstance(cli, list) else cli
        assert (cli["verdict"], cli["label"]) == (api.verdict, api.label) == (guard.screen(mnist.test_x[0])[0].verdict,
                                                                               int(mnist.test_y[0]))


def test_blank_28x28_input(guard, tmp_path):
    verdicts = guard.screen(np.stack([np.zeros((28, 28), np.uint8), np.full((28, 28), 255, np.uint8)]))
    assert [(v.verdict, v.reasons) for v in verdicts] == [("out_of_distribution", ("blank",))] * 2
    with pytest.raises(InputError, match="blank"):
        preprocess(np.zeros((28, 28), np.uint8))
    cv2.imwrite(str(tmp_path / "black.png"), np.zeros((28, 28), np.uint8))
    result = runner.invoke(app, ["detect", str(tmp_path / "black.png")])
    assert result.exit_code != 0 and "blank" in result.output
