"""The core claim, asserted on the shipped bundle: attacks and non-digits are flagged.

Held-out digits only (the last 5,000 MNIST training images, never trained on): the test set is for the
reports. Each threshold sits a few standard errors under the rate measured on the same images when this test
was written (the comment on each says which), so a regression fails while sampling noise does not.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgeguard.guard import Guard
from train import attacks as A
from train.from_onnx import load_shipped

N_DIGITS = 120  # held-out digits attacked (those the runtime misreads are dropped; none were when written)
ALPHA = 0.01
THRESHOLD_FASHION = 0.935


@pytest.fixture(scope="module")
def guard():
    return Guard.load(providers="cpu", alpha=ALPHA)


@pytest.fixture(scope="module")
def models():
    torch.set_num_threads(2)
    return load_shipped()


@pytest.fixture(scope="module")
def held_out(mnist, guard):
    """Held-out digits that the runtime reads right (an attack needs a right reading to overturn)."""
    x = mnist.val_x[:N_DIGITS].astype(np.float32) / 255.0
    y = mnist.val_y[:N_DIGITS].astype(np.int64)
    right = guard.analyze(x).label == y
    return torch.from_numpy(x[right]).unsqueeze(1), torch.from_numpy(y[right])


def _screen(guard: Guard, adv: torch.Tensor):
    return guard.screen(adv.detach().numpy().reshape(-1, 28, 28).astype(np.float32))


def _successes(guard: Guard, adv: torch.Tensor, y: torch.Tensor):
    verdicts = _screen(guard, adv)
    return [v for v, label in zip(verdicts, y.tolist()) if v.label != label], len(verdicts)


@pytest.mark.slow
@pytest.mark.parametrize("attack", ["FGSM", "PGD"])
def test_linf_attacks_at_eps_03_are_flagged(attack, guard, models, held_out):
    # measured when written: 100% of successful FGSM and PGD attacks flagged (112 and 120 successes of 120)
    x, y = held_out
    if attack == "FGSM":
        adv = A.fgsm(models.classifier, x, y, eps=0.3)
    else:
        adv = A.pgd_linf(models.classifier, x, y, eps=0.3, steps=20, step_size=0.03)
    successes, n = _successes(guard, adv, y)
    assert len(successes) >= n // 2, f"{attack} succeeded on only {len(successes)} of {n}: the attack is broken"
    flagged = np.mean([v.flagged for v in successes])
    assert flagged >= 0.95, f"{attack} eps 0.3: {flagged:.1%} of {len(successes)} successful attacks flagged"


@pytest.mark.slow
def test_carlini_wagner_successes_are_flagged_or_purified(guard, models, held_out):
    # measured when written: 97.3% of 73 successes (of 120) flagged or purified; the attack is deterministic
    x, y = held_out
    adv = A.cw_l2(models.classifier, x, y, c=1.0, steps=60, lr=0.05)
    verdicts = _screen(guard, adv)
    success = [(v, label) for v, label in zip(verdicts, y.tolist()) if v.label != label]
    assert len(success) >= len(verdicts) // 2, f"C&W succeeded on only {len(success)} of {len(verdicts)}"
    defended = np.mean([v.flagged or v.purified_label == label for v, label in success])
    assert defended >= 0.95, f"C&W: {defended:.1%} of {len(success)} successes flagged or purified"


def test_clean_held_out_digits_mostly_pass(guard, held_out):
    # The other side of the claim: the same clean digits are rarely flagged (measured: 0 of 120 at alpha 0.01).
    x, _ = held_out
    flagged = np.mean([v.flagged for v in _screen(guard, x)])
    assert flagged <= 0.05


@pytest.fixture(scope="module")
def fashion():
    from train.data import load_fashion_mnist

    try:
        x, _ = load_fashion_mnist("train")
    except FileNotFoundError as e:
        pytest.skip(f"Fashion-MNIST not installed: {e}")
    return x[:1000]


def test_fashion_mnist_items_are_flagged(guard, fashion):
    # measured when written on these 1,000 Fashion-MNIST training items: 96.2% flagged; the threshold is
    # about four standard errors (0.6 points each) under it.
    flagged = np.mean([v.flagged for v in guard.screen(fashion)])
    assert flagged >= THRESHOLD_FASHION, f"{flagged:.1%} of 1,000 Fashion-MNIST items flagged at alpha 0.01"

