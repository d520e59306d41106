"""Which part of a training recipe costs or buys which detection: short training runs of recipe variants, each
measured on held-out data only (the last 5,000 MNIST training images; never the test set, never USPS).

Run: python -m benchmarks.recipe_ablation [--variants A,B,C,D,E] [--out runs/ablation] [--threads 2] [--quick]

Each variant trains the VAE and the classifier for a few epochs (3 VAE, 3 classifier, 3 refinement, 1 fine-tune,
no distillation: about 3 to 8 minutes each on 2 cores) with ``train.trainer.TrainConfig`` overrides:

- A: the default recipe (no capture augmentation, no outlier exposure);
- B: outlier exposure in the VAE stages (20,000 generated non-digits);
- C: B + capture augmentation in the classifier stages (share 0.2);
- D: C + capture augmentation in the VAE stages (share 0.4): the ``--real-world`` recipe;
- E: capture augmentation in both (0.4 and 0.2), no outlier exposure.

Then, with the torch twins of the runtime's signals (``train.attacks.detector_signals``, K=10 fixed noise
draws): each signal's threshold at the 99th percentile of 2,000 held-out clean digits, and the share of each set
above it: 1,000 other held-out clean digits, the successful FGSM eps 0.1 and 0.3 attacks on them, generated
non-digits of seeds never trained on (shapes and font glyphs, ``train/outliers.py``, ``train/glyphs.py``) and
the held-out digits captured (``train/capture.py``, a seed of its own: digits as other pens and cameras make
them, which should not look out of distribution). Prints one JSON line per variant and writes them to
``--out``/results.jsonl. Short runs rank recipes; they do not measure a shipped bundle.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from train.attacks import detector_signals, fgsm
from train.capture import capture
from train.data import load_mnist
from train.glyphs import glyphs
from train.outliers import non_digits
from train.trainer import TrainConfig, load_models, to_tensor, train

SHORT = {"vae_epochs": 3, "clf_epochs": 3, "refine_epochs": 3, "finetune_epochs": 1, "distill_epochs": 0}
VARIANTS = {
    "A": {},
    "B": {"outliers": 20000},
    "C": {"outliers": 20000, "clf_capture_share": 0.2},
    "D": {"outliers": 20000, "clf_capture_share": 0.2, "capture_share": 0.4},
    "E": {"clf_capture_share": 0.2, "capture_share": 0.4},
}
SIGNALS = ("recon_mse", "posterior_spread", "low_confidence", "kl")


@torch.no_grad()
def signals(vae, clf, x: torch.Tensor, eps: torch.Tensor) -> dict[str, np.ndarray]:
    out: dict[str, list] = {}
    for i in range(0, len(x), 500):
        in_logits, rec_logits, s = detector_signals(vae.encoder, vae.decoder, clf, x[i : i + 500], eps)
        labels = rec_logits.argmax(2)
        s = dict(s, mismatch=(in_logits.argmax(1) != torch.mode(labels, 1).values).float())
        for k, v in s.items():
            out.setdefault(k, []).append(v)
    return {k: torch.cat(v).numpy() for k, v in out.items()}


def measure(run_dir: Path) -> dict:
    vae, clf, _ = load_models(run_dir)
    data = load_mnist(download=False)
    x, y = to_tensor(data.val_x), torch.from_numpy(data.val_y.astype(np.int64))
    cal, test_x, test_y = x[:2000], x[2000:3000], y[2000:3000]
    eps = torch.randn(10, vae.encoder(x[:1])[0].shape[1], generator=torch.Generator().manual_seed(1))
    sets = {"clean": test_x}
    for e in (0.1, 0.3):
        adv = fgsm(clf, test_x, test_y, e)
        with torch.no_grad():
            sets[f"fgsm{e}"] = adv[clf(adv).argmax(1) != test_y]
    shapes, _ = non_digits(500, 123456)
    letters, _ = glyphs(500, 123457)
    sets["non_digits"] = torch.from_numpy(np.concatenate([shapes, letters])).unsqueeze(1).float()
    sets["captured"] = capture(test_x, torch.Generator().manual_seed(99))
    reference = signals(vae, clf, cal, eps)
    measured = {name: signals(vae, clf, images, eps) for name, images in sets.items()}
    with torch.no_grad():
        result = {"clean_accuracy": round(float((clf(test_x).argmax(1) == test_y).float().mean()), 4),
                  "captured_accuracy": round(float((clf(sets["captured"]).argmax(1) == test_y).float().mean()), 4),
                  "attacked": {k: len(v) for k, v in sets.items() if k.startswith("fgsm")}}
    for name in SIGNALS:
        threshold = np.quantile(reference[name], 0.99)
        result[name] = {k: round(float((v[name] > threshold).mean()), 3) for k, v in measured.items()}
    result["mismatch"] = {k: round(float(v["mismatch"].mean()), 3) for k, v in measured.items()}
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.recipe_ablation", description=__doc__.split("\n")[0])
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated, of " + ",".join(VARIANTS))
    parser.add_argument("--out", type=Path, default=Path("runs/ablation"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="train on a small subset for one epoch (for tests)")
    args = parser.parse_args(argv)
    chosen = args.variants.split(",")
    if unknown := [v for v in chosen if v not in VARIANTS]:
        parser.error(f"unknown variants: {', '.join(unknown)}")
    args.out.mkdir(parents=True, exist_ok=True)
    for name in chosen:
        start = time.time()
        run_dir = args.out / name
        train(TrainConfig(out=run_dir, seed=0, threads=args.threads, progress=False, quick=args.quick, **SHORT,
                          **VARIANTS[name]))
        line = {"variant": name, "overrides": VARIANTS[name], **measure(run_dir),
                "seconds": round(time.time() - start)}
        print(json.dumps(line), flush=True)
        with (args.out / "results.jsonl").open("a") as f:
            f.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
