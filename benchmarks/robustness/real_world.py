"""Other writers and real inputs: the report section that holds the runtime to digits it was not trained on and to
inputs that are not digits.

- USPS (another set of writers and another scanner than MNIST's; ``train.data.load_usps``, evaluation only): its test
  split, each image made MNIST-style by ``edgeguard.preprocess`` and screened by ``Guard.screen``, as a user would;
  the run's MNIST test images for reference;
- the one rule for 28x28 inputs (``edgeguard.contrast``): MNIST test digits given with faint ink, as dark ink on
  light paper, and both, through ``Guard.screen``;
- the report's letters-and-symbols set: AUROC and the flagged share;
- the verdict kinds: the share of flagged attack images called ``adversarial`` and of flagged non-digit images
  called ``out_of_distribution``;
- ``edgeguard calibrate`` on USPS: ``edgeguard.recalibrate.calibrate_bundle`` fitted on one random half of USPS
  (train and test pooled) into a temporary folder, the other half screened with that bundle and with the run's.

USPS only measures here, except for the one fit it exists for: ``calibrate_bundle`` on one half, measured on the
other. ``measure`` runs it (in the lab's order); ``section``, ``target_rows`` and ``headline`` render what it
measured for the report, its Targets table and ``manifest["robustness"]``.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from benchmarks.robustness.markdown import VERDICT_KINDS, fmt, met, table
from benchmarks.robustness.measure import ALPHA, Lab, Screened, log
from benchmarks.robustness.metrics import auroc
from edgeguard.contract import SIDE
from edgeguard.errors import InputError
from edgeguard.guard import Guard
from edgeguard.normalize import preprocess
from edgeguard.recalibrate import calibrate_bundle, min_images
from train.data import load_usps

if TYPE_CHECKING:
    from benchmarks.robustness.report import Results

TITLE = "Other writers and real inputs"
ALPHA_WIDE = 0.05  # the second alpha the false alarms are shown at
ALPHAS = (ALPHA, ALPHA_WIDE)
SE_WIDTH = 3.0  # "within sampling error": alpha +- this many standard errors
SCREEN_BATCH = 500
LETTERS = "letters & symbols"

TARGET_USPS_ACCURACY = 0.985
TARGET_USPS_CLEAN_WRONG = 0.006  # of the images passed as clean, the share whose label is wrong
TARGET_USPS_FLAGGED = 0.02
TARGET_LETTERS_AUROC = 0.99
TARGET_LETTERS_FLAGGED = 0.80
TARGET_KIND_RIGHT = 0.90


def share(num, den) -> float:
    return float(num) / float(den) if den else float("nan")


@dataclass
class Digits:
    """Labelled digits as the runtime screened them: true and predicted labels, combined p-values, verdicts at
    ALPHA."""

    y: np.ndarray
    label: np.ndarray
    purified: np.ndarray
    p: np.ndarray
    verdict: np.ndarray

    @classmethod
    def of_screened(cls, sc: Screened, y: np.ndarray) -> Digits:
        return cls(y, sc.s.label, sc.s.purified_label, sc.p_combined, sc.verdict)

    def __len__(self) -> int:
        return len(self.y)

    def flagged(self, alpha: float = ALPHA) -> float:
        """Share flagged at alpha (``decide``: any verdict but clean exactly when the combined p-value < alpha)."""
        return share(np.sum(self.p < alpha), len(self))

    def clean_wrong(self, alpha: float = ALPHA, *, of_all: bool = False) -> float:
        """Passed as clean with a wrong label: share of those passed as clean (of_all: of all images)."""
        passed = self.p >= alpha
        return share(np.sum(passed & (self.label != self.y)), len(self) if of_all else np.sum(passed))

    def accuracy(self, purified: bool = False) -> float:
        return share(np.sum((self.purified if purified else self.label) == self.y), len(self))

    def kinds(self) -> dict[str, float]:
        """Share of the flagged images given each verdict kind."""
        flagged = self.verdict[self.verdict != "clean"]
        return {k: share(np.sum(flagged == k), len(flagged)) for k in VERDICT_KINDS}


# -- measuring -------------------------------------------------------------------------------------

def mnist_style(images: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Each image through ``edgeguard.preprocess`` -> (images, their labels, how many had no digit found)."""
    out, kept = [], []
    for i, image in enumerate(images):
        try:
            out.append(preprocess(image))
        except InputError:
            continue
        kept.append(i)
    x = np.stack(out).astype(np.float32) if out else np.zeros((0, SIDE, SIDE), np.float32)
    return x, labels[np.asarray(kept, dtype=np.int64)].astype(np.int64), len(images) - len(kept)


def screen_digits(guard: Guard, images: np.ndarray, labels: np.ndarray) -> Digits:
    """``Guard.screen`` in batches, as a user screens images; its verdicts are at the guard's alpha."""
    if guard.alpha != ALPHA:
        raise ValueError(f"the guard screens at alpha {guard.alpha}, the report at {ALPHA}")
    verdicts = [v for i in range(0, len(images), SCREEN_BATCH) for v in guard.screen(images[i:i + SCREEN_BATCH])]
    return Digits(labels, np.array([v.label for v in verdicts], np.int64),
                  np.array([v.purified_label for v in verdicts], np.int64),
                  np.array([v.p_value for v in verdicts], np.float64),
                  np.array([v.verdict for v in verdicts], dtype=str).reshape(-1))


#: How the same MNIST test digits are given (x in [0, 1], white ink on black) for the 28x28 rule's table.
FAINT, PAPER = 0.5, 0.8  # the faint ink's peak; the grey paper's level
RENDERINGS = {
    "as MNIST gives them": lambda x: x,
    f"faint ink (peak {FAINT:g})": lambda x: FAINT * x,
    "dark ink on light paper": lambda x: 1.0 - x,
    f"faint dark ink on grey paper ({PAPER:g})": lambda x: PAPER - (1.0 - FAINT) * PAPER * x,
}


def measure_renderings(guard: Guard, test: tuple[np.ndarray, np.ndarray], n: int) -> dict[str, Digits]:
    x = test[0][:n].astype(np.float32) / 255.0
    y = test[1][:n].astype(np.int64)
    return {name: screen_digits(guard, np.clip(render(x), 0, 1).astype(np.float32), y)
            for name, render in RENDERINGS.items()}


def measure(lab: Lab, bundle: Path, threads: int, test: tuple[np.ndarray, np.ndarray]) -> dict:
    """Screens USPS's test split, then fits ``edgeguard calibrate`` on one half of USPS and screens the other; and
    MNIST test digits given other ways (``RENDERINGS``)."""
    t0 = time.perf_counter()
    guard, sizes = lab.guard, lab.sizes
    renderings = measure_renderings(guard, test, sizes["usps"])
    log("28x28 rule: " + ", ".join(f"{k}: accuracy {d.accuracy():.4f}, flagged {d.flagged():.4f}"
                                   for k, d in renderings.items()))
    raw_x, raw_y = load_usps("test")
    n = min(sizes["usps"], len(raw_x))
    x, y, dropped = mnist_style(raw_x[:n], raw_y[:n])
    log(f"screening {len(x)} USPS test images ...")
    usps = screen_digits(guard, x, y)
    log(f"USPS: accuracy {usps.accuracy():.4f}, flagged {usps.flagged():.4f}, "
        f"passed clean with a wrong label {usps.clean_wrong():.4f}")

    parts = [load_usps(split) for split in ("train", "test")]
    pool_x = np.concatenate([p[0] for p in parts])
    pool_y = np.concatenate([p[1] for p in parts])
    order = np.random.default_rng(lab.seed).permutation(len(pool_x))
    half = min(len(pool_x) // 2, max(min_images(ALPHA), sizes["usps_half"]))
    fit_x, fit_y, fit_dropped = mnist_style(pool_x[order[:half]], pool_y[order[:half]])
    held_x, held_y, held_dropped = mnist_style(pool_x[order[half:2 * half]], pool_y[order[half:2 * half]])
    log(f"edgeguard calibrate on {len(fit_x)} USPS images, screening {len(held_x)} others ...")
    with tempfile.TemporaryDirectory(prefix="edgeguard-usps-") as tmp:
        summary = calibrate_bundle(
            fit_x, Path(tmp) / "bundle", base=bundle, labels=fit_y, alpha=ALPHA, k=guard.k, seed=guard.seed,
            providers="cpu", kernels=guard.kernels,
            inputs=[f"USPS train and test pooled, one random half (seed {lab.seed}): {len(fit_x)} images"])
        fitted = Guard.load(summary.path, providers="cpu", threads=threads, seed=guard.seed, alpha=ALPHA,
                            kernels=guard.kernels)
        held_fitted = screen_digits(fitted, held_x, held_y)
    held_base = screen_digits(guard, held_x, held_y)
    log("USPS other half, false alarms at " + ", ".join(
        f"{a}: {held_fitted.flagged(a):.4f} (run's bundle {held_base.flagged(a):.4f})" for a in ALPHAS))
    lab.timings["other writers (USPS, edgeguard calibrate)"] = time.perf_counter() - t0
    return dict(renderings=renderings, usps=usps, usps_requested=n, usps_total=len(raw_x), usps_dropped=dropped,
                side=int(raw_x.shape[-1]),
                pooled=len(pool_x), half=half, fit_n=len(fit_x), fit_dropped=fit_dropped, held_dropped=held_dropped,
                summary=summary.to_dict(), held={"calibrated": held_fitted, "base": held_base}, seed=lab.seed)


# -- figures from the run --------------------------------------------------------------------------

def letters(r: Results) -> dict:
    sc = r.ood[LETTERS]
    return dict(n=len(sc.flagged), auroc=auroc(1 - r.clean.p_combined, 1 - sc.p_combined),
                flagged={a: float(np.mean(sc.p_combined < a)) for a in ALPHAS})


def kind_right(r: Results) -> dict[str, dict]:
    """Of the flagged attack images (successful ones, all attacks) the share called adversarial; of the flagged
    non-digit images (all OOD sets) the share called out_of_distribution."""
    groups = {"attacks": ("adversarial", [a.sc.verdict[a.success] for a in r.attacks.values()]),
              "ood": ("out_of_distribution", [sc.verdict for sc in r.ood.values()])}
    out = {}
    for key, (want, parts) in groups.items():
        v = np.concatenate(parts) if parts else np.zeros(0, str)
        flagged = v[v != "clean"]
        right = int(np.sum(flagged == want))
        out[key] = dict(kind=want, sets=len(parts), images=len(v), flagged=len(flagged), right=right,
                        share=share(right, len(flagged)))
    return out


def interval(alpha: float, n: int) -> tuple[float, float]:
    half_width = SE_WIDTH * np.sqrt(alpha * (1 - alpha) / n) if n else float("nan")
    return alpha - half_width, alpha + half_width


def within(d: Digits, alpha: float) -> bool:
    lo, hi = interval(alpha, len(d))
    return bool(lo <= d.flagged(alpha) <= hi)


# -- the report ------------------------------------------------------------------------------------

def section(r: Results, add) -> None:
    """The section: USPS vs MNIST, letters and symbols, verdict kinds, edgeguard calibrate on USPS."""
    RW = r.RW
    usps, mnist = RW["usps"], Digits.of_screened(r.clean, r.test_y)
    side = RW["side"]
    add(f"## {TITLE}\n")
    add(f"Digits from other writers and another scanner than MNIST's, and inputs that are not digits, screened as a "
        f"user screens them; verdicts at alpha={ALPHA} unless a column says otherwise. The targets are set for the "
        "shipped bundle; this run only measures (no model is retrained).\n")
    which = ("the whole split" if RW["usps_requested"] == RW["usps_total"] else
             f"its first {RW['usps_requested']:,} of {RW['usps_total']:,}")
    add(f"**USPS test split** ({which}; `train.data.load_usps`, {side}x{side} images, evaluation only). Each image is "
        "made MNIST-style by `edgeguard.preprocess` and screened by `Guard.screen`; `preprocess` found no digit in "
        f"{RW['usps_dropped']:,} (left out). MNIST: this run's clean test images, for reference.\n")
    rows = [["images", len(usps), len(mnist), "", ""],
            ["accuracy", usps.accuracy(), mnist.accuracy(), f">= {TARGET_USPS_ACCURACY:.1%}",
             met(usps.accuracy() >= TARGET_USPS_ACCURACY)],
            ["purified accuracy (majority label of the K reconstructions)", usps.accuracy(True), mnist.accuracy(True),
             "", ""]]
    for a in ALPHAS:
        t = a == ALPHA
        rows.append([f"flagged at alpha={a}", usps.flagged(a), mnist.flagged(a),
                     f"<= {TARGET_USPS_FLAGGED:.0%}" if t else "", met(usps.flagged(a) <= TARGET_USPS_FLAGGED) if t
                     else ""])
    rows += [["passed as clean with a wrong label (of those passed as clean)", usps.clean_wrong(),
              mnist.clean_wrong(), f"<= {TARGET_USPS_CLEAN_WRONG:.1%}",
              met(usps.clean_wrong() <= TARGET_USPS_CLEAN_WRONG)],
             ["passed as clean with a wrong label (of all images)", usps.clean_wrong(of_all=True),
              mnist.clean_wrong(of_all=True), "", ""]]
    uk, mk = usps.kinds(), mnist.kinds()
    rows += [[f"flagged called `{k}` (of the flagged)", uk[k], mk[k], "", ""] for k in VERDICT_KINDS]
    add(table(["figure", "USPS test split", "MNIST test (reference)", "target (USPS)", "met?"], rows))
    add("")
    _renderings(r, add)
    lt = letters(r)
    add(f"**Letters and symbols** (the set of \"Out-of-distribution detection\", {lt['n']:,} images; AUROC of the "
        "combined score against the clean MNIST test images). " + _models_note(r) + "\n")
    rows = [["AUROC", lt["auroc"], f">= {TARGET_LETTERS_AUROC:g}", met(lt["auroc"] >= TARGET_LETTERS_AUROC)]]
    rows += [[f"flagged at alpha={a}", lt["flagged"][a], f">= {TARGET_LETTERS_FLAGGED:.0%}" if a == ALPHA else "",
              met(lt["flagged"][a] >= TARGET_LETTERS_FLAGGED) if a == ALPHA else ""] for a in ALPHAS]
    add(table(["letters & symbols", "value", "target", "met?"], rows))
    add("")
    kr = kind_right(r)
    add("**Verdict kinds.** From \"Verdict kinds of flagged images\", pooled: the flagged images of every attack "
        "(successful images only) should be called `adversarial`, those of every out-of-distribution set "
        "`out_of_distribution`. " + _kind_rule_note(r) + "\n")
    rows = [[f"{label} ({g['sets']} sets)", f"`{g['kind']}`", g["images"], g["flagged"], g["right"], g["share"],
             f">= {TARGET_KIND_RIGHT:.0%}", met(g["share"] >= TARGET_KIND_RIGHT)]
            for label, g in (("attacks", kr["attacks"]), ("non-digits", kr["ood"]))]
    add(table(["flagged images of", "right kind", "images", "flagged", "given the right kind", "share right",
               "target", "met?"], rows))
    add("")
    _usps_halves(r, add)


def _models_note(r: Results) -> str:
    config = (r.lab.guard.manifest.get("provenance") or {}).get("training_config") or {}
    if config.get("outliers"):
        return ("The bundle's models were trained with outlier exposure on other non-digits: glyphs from matplotlib's "
                "DejaVu and STIX TrueType fonts (`train/glyphs.py`) and generated shapes and scribbles "
                "(`train/outliers.py`), with seeds of their own; these OpenCV Hershey glyphs were never trained on.")
    return ("The bundle's models were trained on MNIST digits alone (no outlier exposure: `python -m train "
            "--real-world` adds it); no model saw these glyphs.")


def _kind_rule_note(r: Results) -> str:
    kinds = ((r.lab.guard.manifest.get("calibration") or {}).get("selection") or {}).get("kinds")
    if not kinds or r.lab.guard.bundle.info.kind_rule is None:
        return "The bundle has no kind rule: the group rule of `edgeguard.calibration.decide` names the kind."
    cv = ", ".join(f"{name} {fmt(v)}" for name, v in kinds["cross_validated_right"].items())
    return ("The kind is named by the bundle's kind rule (`edgeguard.kinds`), a logistic regression on the log "
            "signals fitted by `export/kinds.py` on held-out selection data only (attacks on held-out digits; "
            "Fashion-MNIST training images, noise, shapes, training-font letters). Its five-fold cross-validated share "
            f"right there, per set: {cv}. The attacks and sets here were never fitted on.")


def _renderings(r: Results, add) -> None:
    rend = r.RW["renderings"]
    first = next(iter(rend.values()))
    add(f"**One rule for 28x28 inputs** (`edgeguard.contrast`). The first {len(first):,} MNIST test digits given as "
        "28x28 arrays four ways and screened by `Guard.screen`; a 28x28 file given to `edgeguard detect` gets the "
        "same pixels. The rule reads the polarity from the 2-pixel frame, takes the background to black and the "
        "ink peak to full white, and moves nothing.\n")
    rows = [[name, d.accuracy(), d.flagged(), d.clean_wrong(), d.kinds()["adversarial"]] for name, d in rend.items()]
    add(table(["the same digits given as", "accuracy", f"flagged at alpha={ALPHA}",
               "passed as clean with a wrong label", "flagged called `adversarial`"], rows))
    add("")


def _usps_halves(r: Results, add) -> None:
    """edgeguard calibrate fitted on one half of USPS, measured on the other (and the run's bundle on it)."""
    RW = r.RW
    s = RW["summary"]
    labelled = s.get("labelled") or {}
    add(f"**`edgeguard calibrate` on USPS.** USPS's train and test splits pooled ({RW['pooled']:,} digits; pooled "
        "because its test split is harder than its train split, so the two are not exchangeable) and split at random "
        f"(seed {RW['seed']}) into halves of {RW['half']:,}. `edgeguard.recalibrate.calibrate_bundle` (what "
        f"`edgeguard calibrate` runs) fitted a calibration on one half ({RW['fit_n']:,} images made MNIST-style by "
        f"`edgeguard.preprocess`, {RW['fit_dropped']:,} without a digit left out; the run's bundle's models, signals "
        f"({', '.join(s['signals'])}) and `{s['combination']}` combination, K={s['k']}) into a temporary folder; "
        "`Guard.load` of that bundle then screened the other half (its preprocessing left out "
        f"{RW['held_dropped']:,}), and so did the run's bundle, calibrated on MNIST. In-sample, on the fitted half: "
        f"flagged {fmt(s['flagged_share'])}, accuracy {fmt(labelled.get('accuracy'))}. Sampling error: alpha +- "
        f"{SE_WIDTH:g} standard errors, sqrt(alpha (1 - alpha) / n).\n")
    rows = []
    for name, d in (("calibrated on the first half", RW["held"]["calibrated"]),
                    ("the run's bundle (calibrated on MNIST)", RW["held"]["base"])):
        for a in ALPHAS:
            lo, hi = interval(a, len(d))
            rows.append([name, f"{a:g}", len(d), d.flagged(a), f"{max(lo, 0.0):.4f} to {hi:.4f}",
                         "yes" if within(d, a) else "**no**",
                         d.accuracy(), d.clean_wrong(a)])
    add(table(["bundle", "alpha", "images (other half)", "false alarms", f"alpha +- {SE_WIDTH:g} SE", "within?",
               "accuracy", "passed as clean with a wrong label (of those passed as clean)"], rows))
    add("")


def target_rows(r: Results) -> list[list]:
    """This section's rows of the Targets table: [target, value, met?, images]."""
    RW = r.RW
    usps, lt, kr = RW["usps"], letters(r), kind_right(r)
    rows = [[f"USPS test split: accuracy >= {TARGET_USPS_ACCURACY:.1%}", usps.accuracy(),
             met(usps.accuracy() >= TARGET_USPS_ACCURACY), len(usps)],
            [f"USPS test split: passed as clean with a wrong label <= {TARGET_USPS_CLEAN_WRONG:.1%} (of those passed "
             "as clean)", usps.clean_wrong(), met(usps.clean_wrong() <= TARGET_USPS_CLEAN_WRONG), len(usps)],
            [f"USPS test split: flagged <= {TARGET_USPS_FLAGGED:.0%}", usps.flagged(),
             met(usps.flagged() <= TARGET_USPS_FLAGGED), len(usps)],
            [f"{LETTERS} AUROC >= {TARGET_LETTERS_AUROC:g}", lt["auroc"], met(lt["auroc"] >= TARGET_LETTERS_AUROC),
             lt["n"]],
            [f"{LETTERS} flagged >= {TARGET_LETTERS_FLAGGED:.0%}", lt["flagged"][ALPHA],
             met(lt["flagged"][ALPHA] >= TARGET_LETTERS_FLAGGED), lt["n"]],
            [f"flagged attack images called `adversarial` >= {TARGET_KIND_RIGHT:.0%}", kr["attacks"]["share"],
             met(kr["attacks"]["share"] >= TARGET_KIND_RIGHT), kr["attacks"]["flagged"]],
            [f"flagged non-digit images called `out_of_distribution` >= {TARGET_KIND_RIGHT:.0%}", kr["ood"]["share"],
             met(kr["ood"]["share"] >= TARGET_KIND_RIGHT), kr["ood"]["flagged"]]]
    held = RW["held"]["calibrated"]
    rows += [[f"edgeguard calibrate on half of USPS: false alarms on the other half within alpha +- {SE_WIDTH:g} SE, "
              f"alpha={a}", held.flagged(a), met(within(held, a)), len(held)] for a in ALPHAS]
    return rows


def r6(v) -> float | None:
    return None if v is None or np.isnan(v) else round(float(v), 6)


def headline(r: Results) -> dict:
    """This section's numbers for ``manifest["robustness"]``."""
    RW = r.RW
    usps, lt, kr = RW["usps"], letters(r), kind_right(r)
    held = RW["held"]
    return {
        "usps_images": len(usps),
        "usps_accuracy": r6(usps.accuracy()),
        "usps_purified_accuracy": r6(usps.accuracy(True)),
        "usps_flagged": r6(usps.flagged()),
        "usps_clean_wrong": r6(usps.clean_wrong()),
        "usps_verdict_kinds": {k: r6(v) for k, v in usps.kinds().items()},
        "letters_auroc": r6(lt["auroc"]),
        "letters_flagged": r6(lt["flagged"][ALPHA]),
        "kind_right_attacks": r6(kr["attacks"]["share"]),
        "kind_right_ood": r6(kr["ood"]["share"]),
        "usps_calibrate": {"seed": RW["seed"], "fit_images": RW["fit_n"], "held_out_images": len(held["calibrated"]),
                           "false_alarms": {str(a): r6(held["calibrated"].flagged(a)) for a in ALPHAS},
                           "base_false_alarms": {str(a): r6(held["base"].flagged(a)) for a in ALPHAS}},
    }
