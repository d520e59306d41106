"""python -m benchmarks.robustness: the lab's stages in order, then the report, the figures and (full runs
on the shipped bundle) the manifest's headline numbers. No stage chooses anything: the test images and the
OOD sets only measure (the signal selection is export/select_signals.py's, read from the manifest)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from tqdm import tqdm

from benchmarks.robustness import __doc__ as DOC
from benchmarks.robustness import real_world
from benchmarks.robustness.measure import (
    CW,
    FGSM_EPS,
    PGD,
    PGD_NAME,
    SIZES,
    UNBOUNDED,
    AttackResult,
    Lab,
    adaptive,
    experiment_b,
    log,
    ood_sets,
    run_attack,
    screen,
)
from benchmarks.robustness.report import make_figures, write_report
from edgeguard.bundle import shipped_bundle_path
from edgeguard.contract import SIDE
from edgeguard.guard import Guard
from train import attacks as A
from train.data import load_mnist
from train.from_onnx import check_parity, load_shipped

ROOT = Path(__file__).resolve().parents[2]
PARITY_IMAGES = 256


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.robustness", description=DOC.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=None, help="model bundle (default: the shipped one)")
    parser.add_argument("--out", type=Path, default=ROOT / "reports", help="folder for robustness.md and figures/")
    parser.add_argument("--quick", action="store_true", help="a few hundred images (for tests)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime and torch threads")
    parser.add_argument("--no-manifest", action="store_true", help="never write manifest['robustness']")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiply the full run's image counts (e.g. 0.25 on a busy machine); the manifest is "
                             "only written at scale 1")
    args = parser.parse_args(argv)
    t_start = time.perf_counter()
    torch.set_num_threads(max(1, args.threads))
    bundle = (args.bundle or shipped_bundle_path()).resolve()
    sizes = dict(SIZES["quick" if args.quick else "full"])
    if not 0.0 < args.scale <= 1.0:
        parser.error(f"--scale must be in (0, 1], got {args.scale}")
    if args.scale != 1.0:
        for key in ("clean", "attack", "cw", "lbfgs", "ood", "adaptive", "calib", "unbounded", "usps", "usps_half"):
            sizes[key] = max(10, int(round(sizes[key] * args.scale)))
    guard = Guard.load(bundle, providers="cpu", threads=args.threads)
    if guard.calibration is None:
        raise SystemExit(f"{bundle}: the bundle is not calibrated; run `python -m export.calibrate` first")
    guard.warmup()
    models = load_shipped(bundle)
    data = load_mnist()
    out = args.out
    fig_dir = out / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    lab = Lab(guard, models, sizes, args.seed, fig_dir)
    R: dict = {"sizes": sizes, "bundle": str(bundle), "quick": args.quick, "scale": args.scale,
                "threads": args.threads}

    # -- parity ---------------------------------------------------------------------------------
    R["parity_images"] = min(PARITY_IMAGES, len(data.test_x))
    R["parity"] = check_parity(models, data.test_x[: R["parity_images"]])

    # -- clean screening ---------------------------------------------------------------------------
    t0 = time.perf_counter()
    n_clean = min(sizes["clean"], len(data.test_x))
    test_x = data.test_x[:n_clean].astype(np.float32) / 255.0
    test_y = data.test_y[:n_clean].astype(np.int64)
    log(f"screening {n_clean} clean test images ...")
    clean = screen(guard, test_x)
    lab.timings["clean screening"] = time.perf_counter() - t0

    # -- attacks ------------------------------------------------------------------------------------
    clf = models.classifier
    n_att = min(sizes["attack"], n_clean)
    x_t = torch.from_numpy(test_x[:n_att]).unsqueeze(1)
    y_t = torch.from_numpy(test_y[:n_att])
    correct = clean.s.label[:n_att] == test_y[:n_att]
    attacks: dict[str, AttackResult] = {}
    t0 = time.perf_counter()
    for eps in FGSM_EPS:
        attacks[f"FGSM eps={eps}"] = run_attack(
            f"FGSM eps={eps}", lambda p, e=eps: A.fgsm(clf, x_t, y_t, e), lab, x_t, y_t, correct)
    attacks[PGD_NAME] = run_attack(
        PGD_NAME, lambda p: A.pgd_linf(clf, x_t, y_t, **PGD, seed=args.seed, batch=500, progress=p), lab, x_t, y_t,
        correct)
    n_cw = min(sizes["cw"], n_att)
    attacks["C&W-L2"] = run_attack(
        "C&W-L2", lambda p: A.cw_l2(clf, x_t[:n_cw], y_t[:n_cw], **CW, steps=sizes["cw_steps"], batch=500,
                                    progress=p), lab, x_t[:n_cw], y_t[:n_cw], correct[:n_cw])
    n_lb = min(sizes["lbfgs"], n_att)
    targets = A.random_targets(y_t[:n_lb], seed=args.seed)
    attacks["L-BFGS (targeted)"] = run_attack(
        "L-BFGS (targeted)", lambda p: A.lbfgs(clf, x_t[:n_lb], targets, search_steps=sizes["lbfgs_search"],
                                               maxiter=sizes["lbfgs_iter"], progress=p), lab, x_t[:n_lb],
        y_t[:n_lb], correct[:n_lb], targets=targets)
    lab.timings["attacks + screening"] = time.perf_counter() - t0

    # sanity: unbounded eps, iterative vs single step
    n_ub = min(sizes["unbounded"], n_att)
    adv_ub = A.pgd_linf(clf, x_t[:n_ub], y_t[:n_ub], **UNBOUNDED, seed=args.seed)
    ub_ok = correct[:n_ub]
    R["unbounded_attacked"], R["unbounded_correct"] = n_ub, int(ub_ok.sum())
    R["unbounded_success"] = float(np.mean(A.predict(clf, adv_ub).numpy()[ub_ok] != test_y[:n_ub][ub_ok]))

    # -- OOD ----------------------------------------------------------------------------------------
    t0 = time.perf_counter()
    ood_x = ood_sets(sizes["ood"], data.test_x, args.seed)
    ood = {name: screen(guard, xs) for name, xs in tqdm(ood_x.items(), desc="OOD", file=sys.stderr, leave=False)}
    lab.timings["OOD"] = time.perf_counter() - t0

    # -- Experiment B (the temperature is fitted on held-out images, not on test ones) --------------
    t0 = time.perf_counter()
    calib_x = data.val_x[: sizes["calib"]].astype(np.float32) / 255.0
    session = ort.InferenceSession(str(models.paths["classifier"]), providers=["CPUExecutionProvider"])
    logits_test = np.concatenate([session.run(None, {"image": test_x[i:i + 1000].reshape(-1, 1, SIDE, SIDE)})[0]
                                  for i in range(0, n_clean, 1000)])
    logits_cal = np.concatenate([session.run(None, {"image": calib_x[i:i + 1000].reshape(-1, 1, SIDE, SIDE)})[0]
                                 for i in range(0, len(calib_x), 1000)])
    B = experiment_b(clean, test_y, logits_test, logits_cal, data.val_y[: len(calib_x)].astype(np.int64), fig_dir)
    lab.timings["Experiment B"] = time.perf_counter() - t0

    # -- adaptive -------------------------------------------------------------------------------------
    t0 = time.perf_counter()
    AD = adaptive(lab, x_t, y_t, correct, attacks)
    lab.timings["adaptive attack"] = time.perf_counter() - t0

    # -- other writers and real inputs (USPS; edgeguard calibrate on one half of it) ------------------
    RW = real_world.measure(lab, bundle, args.threads, (data.test_x, data.test_y))

    # -- figures and report -------------------------------------------------------------------------
    figures = make_figures(lab, clean, test_x, test_y, attacks, ood, ood_x, fig_dir)
    R["seconds"] = time.perf_counter() - t_start
    text, headline = write_report(lab, R, clean, test_y, attacks, ood, B, AD, RW, figures, out)
    (out / "robustness.md").write_text(text)
    log(f"wrote {out / 'robustness.md'} in {R['seconds']:.0f}s")
    if not args.quick and args.scale == 1.0 and not args.no_manifest and bundle == shipped_bundle_path().resolve():
        from export import manifest as manifest_io

        manifest_io.update(bundle, robustness=headline)
        log(f"wrote manifest['robustness'] in {bundle}")
    return 0
