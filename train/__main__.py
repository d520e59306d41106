"""python -m train --out runs/bundle [--quick] [--real-world | --capture] [--seed 0] [--data-dir DIR] [--vae-width N]
[--encoder-width N]"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train", description="Train the EdgeGuard VAE and classifier.")
    parser.add_argument("--out", type=Path, default=Path("runs/bundle"), help="folder for the checkpoints")
    parser.add_argument("--data-dir", type=Path, default=None, help="folder with the MNIST IDX files")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vae-epochs", type=int, default=None)
    parser.add_argument("--clf-epochs", type=int, default=None)
    parser.add_argument("--beta", type=float, default=None, help="weight of the VAE's KL term")
    parser.add_argument("--vae-width", type=int, default=None, help="the decoder's hidden units (512)")
    parser.add_argument("--encoder-width", type=int, default=None, help="the encoder's second-layer channels (64)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--real-world", action="store_true",
                        help="capture augmentation (VAE stages 0.4, classifier stages 0.2) and outlier exposure "
                             "(20,000 generated non-digits) in the VAE stages; see docs/design.md")
    parser.add_argument("--capture", action="store_true",
                        help="the capture augmentation of --real-world alone, without outlier exposure "
                             "(recipe E of benchmarks/recipe_ablation.py)")
    parser.add_argument("--quick", action="store_true", help="a small subset and one epoch each, for tests")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)

    from train.trainer import TrainConfig, train

    overrides = {k: v for k, v in {"vae_epochs": args.vae_epochs, "clf_epochs": args.clf_epochs, "beta": args.beta,
                                   "vae_width": args.vae_width, "encoder_width": args.encoder_width}.items()
                 if v is not None}
    if args.real_world and args.capture:
        parser.error("--capture is --real-world without its outliers: give one of them")
    if args.real_world or args.capture:
        overrides.update(capture_share=0.4, clf_capture_share=0.2, teacher_epochs=10)
    if args.real_world:
        overrides.update(outliers=20000)
    cfg = TrainConfig(out=args.out, data_dir=args.data_dir, seed=args.seed, threads=args.threads,
                      quick=args.quick, progress=not args.no_progress, **overrides)
    meta = train(cfg)
    print(json.dumps({"out": str(cfg.out), "validation_metrics": meta["validation_metrics"],
                      "seconds": meta["seconds"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
