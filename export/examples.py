"""python -m export.examples: regenerate the example images in examples/ (used by `make demo` and the README).

- clean digits from the MNIST test set (PNG, 28x28);
- a photo-like digit: dark ink on uneven, noisy light paper, larger than 28x28 (JPEG);
- a non-digit: a Fashion-MNIST test item (an ankle boot);
- an adversarial digit: FGSM (eps 0.2) against the shipped classifier, saved as 8-bit PNG.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

from train.data import load_fashion_mnist, load_mnist

OUT = Path(__file__).resolve().parents[1] / "examples"
CLEAN_INDICES = (0, 1, 2, 3, 4)  # MNIST test images 0-4: a 7, 2, 1, 0 and 4


def photo_like(digit: np.ndarray, seed: int = 0) -> np.ndarray:
    """An MNIST digit as if photographed: enlarged, dark on light, uneven light, noise and blur."""
    rng = np.random.default_rng(seed)
    big = cv2.resize(digit, (168, 168), interpolation=cv2.INTER_CUBIC).astype(np.float32) / 255
    page = np.full((240, 320), 0.92, np.float32)
    page[36:204, 76:244] -= 0.8 * big
    ys, xs = np.mgrid[0:240, 0:320]
    page *= 0.85 + 0.15 * (xs / 320.0)  # light falls off to one side
    page += rng.normal(0, 0.03, page.shape).astype(np.float32)
    page = cv2.GaussianBlur(page, (3, 3), 0)
    return np.clip(page * 255, 0, 255).astype(np.uint8)


def adversarial(digit: np.ndarray, label: int, eps: float = 0.2) -> np.ndarray:
    """FGSM on the shipped classifier (its ONNX weights in PyTorch), rounded to 8 bits."""
    import torch

    from train.attacks import fgsm
    from train.from_onnx import load_shipped

    x = torch.from_numpy(digit.astype(np.float32) / 255).view(1, 1, 28, 28)
    adv = fgsm(load_shipped().classifier, x, torch.tensor([label]), eps)
    return np.round(adv.view(28, 28).numpy() * 255).astype(np.uint8)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.examples", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    data = load_mnist()
    for index in CLEAN_INDICES:
        cv2.imwrite(str(args.out / f"digit_{data.test_y[index]}.png"), data.test_x[index])
    cv2.imwrite(str(args.out / "photo_digit_3.jpg"), photo_like(data.test_x[18]), [cv2.IMWRITE_JPEG_QUALITY, 90])
    cv2.imwrite(str(args.out / "adversarial_from_9.png"), adversarial(data.test_x[7], int(data.test_y[7])))
    fashion_x, fashion_y = load_fashion_mnist("test")
    cv2.imwrite(str(args.out / "not_a_digit_boot.png"), fashion_x[0])
    print(f"wrote examples to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
