"""Seeded, deterministic CPU training of the VAE and the classifier.

With ``--real-world`` (off by default; docs/design.md says why), every stage sees capture-augmented
digits (``train/capture.py``: stroke width, blur, slant, elastic wobble, size and position) beside MNIST's
own (``capture_share`` of each batch in the VAE stages, ``clf_capture_share`` in the classifier's), and the
VAE stages see a batch of generated non-digits (outlier exposure, ``outliers`` > 0: ``train/glyphs.py`` font
glyphs and ``train/outliers.py`` shapes): the encoder is asked to give them the prior as posterior (a wide
posterior whose samples decode to random digits; after Hendrycks et al., 2019). The classifier's own outlier
loss (cross-entropy to the uniform answer, ``oe_clf_weight``) is off: tried at 0.25 in every classifier
stage, it cost the distilled classifier held-out accuracy and flattened its confidence on clean digits.

Six stages: (1) the VAE alone; (2) the classifier on clean (lightly augmented) images and on VAE
reconstructions sampled from the posterior, so that it reads reconstructions as well as originals;
(3) the VAE again, now also asked that the frozen classifier reads its sampled reconstructions of
jittered digits as the input's label (cross-entropy weighted ``refine_weight``), so that sampling keeps
a digit's identity; (4) the classifier fine-tuned on the refined VAE's reconstructions; (5) a wider
teacher classifier (``teacher_width``; used in training only, never shipped) trained like stage 2 on the
refined VAE; (6) the classifier distilled from the mean logits of the teacher and a frozen copy of
itself, a stronger judge than either, on the same clean and reconstructed images: the shipped
classifier stays as small as the latency targets need and gains accuracy. The purified label (the
majority over K sampled reconstructions) depends on stages 2-6.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import platform
import random
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from train.capture import capture, mixed
from train.data import load_mnist
from train.glyphs import glyphs
from train.models import LATENT_DIM, VAE, Classifier, LogitMean, prior_kl, uniform_cross_entropy, vae_loss
from train.outliers import clutter_shapes, non_digits

log = logging.getLogger(__name__)

VAE_FILE = "vae.pt"
CLASSIFIER_FILE = "classifier.pt"
META_FILE = "train_meta.json"


@dataclass
class TrainConfig:
    out: Path
    data_dir: Path | None = None
    seed: int = 0
    vae_epochs: int = 10
    clf_epochs: int = 12
    batch_size: int = 128
    latent_dim: int = LATENT_DIM
    beta: float = 0.25
    vae_width: int = 512  # the decoder's hidden units
    encoder_width: int = 64
    refine_augment: bool = True  # stage 3 sees the same random jitter as the classifier
    refine_epochs: int = 16  # stage 3: VAE with the classifier's loss on its reconstructions
    refine_weight: float = 1000.0
    finetune_epochs: int = 4  # stage 4: the classifier on the refined VAE's reconstructions
    teacher_width: int = 32  # stage 5: the teacher (never exported)
    teacher_epochs: int = 12
    distill_epochs: int = 4  # stage 6 (0: no teacher, no distillation)
    distill_lr: float = 5e-4
    distill_temperature: float = 4.0
    distill_weight: float = 0.9  # of the distillation loss; the rest is cross-entropy with the labels
    # The real-world recipe (docs/design.md, "What the models are trained on"): off by default, so that
    # `make bundle` rebuilds the shipped models; `python -m train --real-world` turns it on.
    capture_share: float = 0.0  # of each digit batch drawn through train.capture in the VAE stages (0.4)
    clf_capture_share: float = 0.0  # the same in the classifier stages (0.2)
    outliers: int = 0  # generated non-digits for outlier exposure (0: none; 20,000)
    outlier_batch: int = 32  # of them per step
    oe_vae_weight: float = 1.0  # of the outliers' KL to the prior
    oe_clf_weight: float = 0.0  # of the classifier's cross-entropy to the uniform answer on them (0: off)
    outlier_seed: int = 7000  # the training outliers' own seeds (selection and the report use others)
    threads: int = 2
    quick: bool = False
    quick_size: int = 2000
    val_size: int | None = None  # None: the whole held-out split (1,000 with --quick)
    progress: bool = True
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        self.out = Path(self.out)
        if self.quick:
            self.vae_epochs, self.clf_epochs = min(self.vae_epochs, 1), min(self.clf_epochs, 1)
            self.refine_epochs, self.finetune_epochs = min(self.refine_epochs, 1), min(self.finetune_epochs, 1)
            self.teacher_epochs, self.distill_epochs = min(self.teacher_epochs, 1), min(self.distill_epochs, 1)
            self.outliers = min(self.outliers, 1000)


def seed_everything(seed: int, threads: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (N,28,28) -> float32 (N,1,28,28) in [0,1]."""
    return torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Small random affine jitter (rotation, scale, shift), as handwriting varies."""
    n = x.shape[0]
    angle = (torch.rand(n, generator=gen) - 0.5) * math.radians(20)
    scale = 1.0 + (torch.rand(n, generator=gen) - 0.5) * 0.2
    shift = (torch.rand(n, 2, generator=gen) - 0.5) * (4.0 / 14.0)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")


@dataclass
class Exposure:
    """Outlier exposure: a pool of generated non-digits (N, 1, 28, 28) and the weights of its two losses."""

    pool: torch.Tensor
    batch: int
    vae_weight: float
    clf_weight: float

    @classmethod
    def build(cls, cfg: TrainConfig) -> Exposure | None:
        if not cfg.outliers:
            return None
        shapes, _ = non_digits(cfg.outliers // 3, cfg.outlier_seed + cfg.seed)
        clutter, _ = clutter_shapes(cfg.outliers // 6, cfg.outlier_seed + cfg.seed + 2)
        letters, _ = glyphs(cfg.outliers - len(shapes) - len(clutter), cfg.outlier_seed + cfg.seed + 1)
        pool = torch.from_numpy(np.concatenate([shapes, clutter, letters])).unsqueeze(1)
        return cls(pool, cfg.outlier_batch, cfg.oe_vae_weight, cfg.oe_clf_weight)

    def sample(self, gen: torch.Generator) -> torch.Tensor:
        idx = torch.randint(len(self.pool), (self.batch,), generator=gen)
        return mixed(self.pool[idx], gen)

    def vae_loss(self, vae: VAE, gen: torch.Generator) -> torch.Tensor:
        return self.vae_weight * prior_kl(*vae.encoder(self.sample(gen)))

    def clf_loss(self, clf: torch.nn.Module, gen: torch.Generator) -> torch.Tensor:
        return self.clf_weight * uniform_cross_entropy(clf(self.sample(gen)))


def jitter(x: torch.Tensor, gen: torch.Generator, share: float) -> torch.Tensor:
    """A training batch of digits: ``share`` of them captured, the rest lightly jittered."""
    return mixed(x, gen, share, rest=augment(x, gen))


def batches(n: int, size: int, gen: torch.Generator):
    order = torch.randperm(n, generator=gen)
    for start in range(0, n, size):
        yield order[start : start + size]


def run_epochs(name: str, params, epochs: int, lr: float, n: int, cfg: TrainConfig, gen: torch.Generator,
               step) -> None:
    """Adam with a one-cycle schedule over ``epochs`` passes; ``step(idx)`` returns a batch's loss."""
    opt = torch.optim.Adam(params, lr=lr, weight_decay=1e-5)
    steps = max(epochs * math.ceil(n / cfg.batch_size), 1)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    for epoch in range(epochs):
        bar = tqdm(list(batches(n, cfg.batch_size, gen)), desc=f"{name} {epoch + 1}/{epochs}",
                   disable=not cfg.progress, leave=False)
        total = 0.0
        for idx in bar:
            loss = step(idx)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
            bar.set_postfix(loss=f"{loss.item():.3f}")
        log.info("%s epoch %d/%d: loss %.4f", name, epoch + 1, epochs, total / n)


def train_vae(cfg: TrainConfig, x: torch.Tensor, gen: torch.Generator, oe: Exposure | None) -> VAE:
    """Stage 1: the VAE alone (negative ELBO, KL weighted by beta), on MNIST's digits and captured ones."""
    vae = VAE(cfg.latent_dim, cfg.vae_width, cfg.encoder_width).train()

    def step(idx):
        loss = vae_loss(*_vae_out(vae, mixed(x[idx], gen, cfg.capture_share)), cfg.beta)[0]
        return loss if oe is None else loss + oe.vae_loss(vae, gen)

    run_epochs("vae", vae.parameters(), cfg.vae_epochs, 2e-3, len(x), cfg, gen, step)
    return vae.eval()


def _vae_out(vae: VAE, xb: torch.Tensor):
    recon, mu, logvar = vae(xb)
    return recon, xb, mu, logvar


@torch.no_grad()
def sample_reconstructions(vae: VAE, x: torch.Tensor) -> torch.Tensor:
    mu, logvar = vae.encoder(x)
    return vae.decoder(mu + torch.exp(0.5 * logvar) * torch.randn_like(mu))


def train_classifier(cfg: TrainConfig, vae: VAE, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator,
                     oe: Exposure | None = None, clf: Classifier | None = None, epochs: int | None = None,
                     lr: float = 3e-3,
                     teacher: torch.nn.Module | None = None, name: str = "classifier") -> Classifier:
    """Stages 2, 4, 5 and 6: a classifier on augmented clean images and on sampled reconstructions of them.
    With a ``teacher`` (stage 6) the loss is mostly the distillation loss: the KL divergence between the
    teacher's and the classifier's outputs softened by ``distill_temperature``."""
    clf = (clf or Classifier()).train()
    vae.eval()
    t = cfg.distill_temperature

    def step(idx):
        xb, yb = jitter(x[idx], gen, cfg.clf_capture_share), y[idx]
        inputs = torch.cat([xb, sample_reconstructions(vae, xb)])
        logits = clf(inputs)
        loss = F.cross_entropy(logits, torch.cat([yb, yb]))
        if oe is not None and oe.clf_weight > 0:
            loss = loss + oe.clf_loss(clf, gen)
        if teacher is None:
            return loss
        with torch.no_grad():
            target = F.log_softmax(teacher(inputs) / t, dim=1)
        distill = F.kl_div(F.log_softmax(logits / t, dim=1), target, log_target=True, reduction="batchmean")
        return (1.0 - cfg.distill_weight) * loss + cfg.distill_weight * t * t * distill

    run_epochs(name, clf.parameters(), cfg.clf_epochs if epochs is None else epochs, lr, len(x), cfg, gen, step)
    return clf.eval()


def refine_vae(cfg: TrainConfig, vae: VAE, clf: Classifier, x: torch.Tensor, y: torch.Tensor,
               gen: torch.Generator, oe: Exposure | None) -> VAE:
    """Stage 3: the VAE again, now also asked that the frozen classifier reads its sampled
    reconstructions as the input's label, so that sampling keeps a digit's identity."""
    vae.train()
    clf.eval().requires_grad_(False)

    def step(idx):
        xb = jitter(x[idx], gen, cfg.capture_share) if cfg.refine_augment else x[idx]
        recon, xb, mu, logvar = _vae_out(vae, xb)
        loss = vae_loss(recon, xb, mu, logvar, cfg.beta)[0] + cfg.refine_weight * F.cross_entropy(clf(recon), y[idx])
        return loss if oe is None else loss + oe.vae_loss(vae, gen)

    run_epochs("refine vae", vae.parameters(), cfg.refine_epochs, 5e-4, len(x), cfg, gen, step)
    clf.requires_grad_(True)
    return vae.eval()


@torch.no_grad()
def evaluate(vae: VAE, clf: Classifier, x: torch.Tensor, y: torch.Tensor, k: int = 10) -> dict:
    """Clean accuracy, purified accuracy and unanimity (PyTorch; the export step re-measures with ONNX)."""
    clean = purified = unanimous = 0
    for start in range(0, len(x), 500):
        xb, yb = x[start : start + 500], y[start : start + 500]
        clean += (clf(xb).argmax(1) == yb).sum().item()
        mu, logvar = vae.encoder(xb)
        z = mu.repeat_interleave(k, 0) + torch.exp(0.5 * logvar).repeat_interleave(k, 0) * torch.randn(
            len(xb) * k, mu.shape[1])
        labels = clf(vae.decoder(z)).argmax(1).view(len(xb), k)
        counts = F.one_hot(labels, 10).sum(1)
        purified += (counts.argmax(1) == yb).sum().item()
        unanimous += (counts.max(1).values == k).sum().item()
    n = len(x)
    return {"clean_accuracy": clean / n, "purified_accuracy": purified / n, "unanimous_share": unanimous / n}


@torch.no_grad()
def heldout_checks(vae: VAE, clf: Classifier, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig) -> dict:
    """What the augmentation and outlier exposure are for, on held-out data: the held-out digits captured
    (a fixed seed of their own), and generated non-digits of seeds never trained on."""
    gen = torch.Generator().manual_seed(cfg.outlier_seed + 999)
    captured = torch.cat([capture(x[i : i + 500], gen) for i in range(0, len(x), 500)])
    n = min(len(x), 2000)
    shapes, _ = non_digits(n // 2, cfg.outlier_seed + 998)
    letters, _ = glyphs(n - len(shapes), cfg.outlier_seed + 997)
    outliers = torch.from_numpy(np.concatenate([shapes, letters])).unsqueeze(1)

    def spread_and_confidence(images):
        std = torch.exp(0.5 * vae.encoder(images)[1]).mean(1)
        confidence = F.softmax(clf(images), 1).max(1).values
        return {"median_posterior_std": round(float(std.median()), 4),
                "median_confidence": round(float(confidence.median()), 4)}

    return {"captured_digits": evaluate(vae, clf, captured, y),
            "digits": spread_and_confidence(x[:n]), "captured": spread_and_confidence(captured[:n]),
            "non_digits": spread_and_confidence(outliers)}


def train(cfg: TrainConfig) -> dict:
    """Trains both models, saves state_dict checkpoints and a metadata file into cfg.out."""
    start = time.time()
    seed_everything(cfg.seed, cfg.threads)
    gen = torch.Generator().manual_seed(cfg.seed)
    data = load_mnist(cfg.data_dir)
    x, y = to_tensor(data.train_x), torch.from_numpy(data.train_y.astype(np.int64))
    if cfg.quick:
        x, y = x[: cfg.quick_size], y[: cfg.quick_size]
    oe = Exposure.build(cfg)
    vae = train_vae(cfg, x, gen, oe)
    clf = train_classifier(cfg, vae, x, y, gen, oe)
    if cfg.refine_epochs:
        vae = refine_vae(cfg, vae, clf, x, y, gen, oe)
        clf = train_classifier(cfg, vae, x, y, gen, oe, clf=clf, epochs=cfg.finetune_epochs, lr=5e-4)
    val_n = cfg.val_size or (1000 if cfg.quick else len(data.val_x))
    val_x, val_y = to_tensor(data.val_x[:val_n]), torch.from_numpy(data.val_y[:val_n].astype(np.int64))
    teacher_val = None
    if cfg.distill_epochs:
        teacher = train_classifier(cfg, vae, x, y, gen, oe, clf=Classifier(cfg.teacher_width),
                                   epochs=cfg.teacher_epochs, name="teacher")
        judge = LogitMean(teacher, copy.deepcopy(clf)).eval().requires_grad_(False)
        teacher_val = {"before_distillation": evaluate(vae, clf, val_x, val_y),
                       "teacher": evaluate(vae, teacher, val_x, val_y), "judge": evaluate(vae, judge, val_x, val_y)}
        clf = train_classifier(cfg, vae, x, y, gen, oe, clf=clf, epochs=cfg.distill_epochs, lr=cfg.distill_lr,
                               teacher=judge, name="distill")
    val = evaluate(vae, clf, val_x, val_y)
    heldout = heldout_checks(vae, clf, val_x, val_y, cfg)
    log.info("held-out checks: %s", json.dumps(heldout))
    cfg.out.mkdir(parents=True, exist_ok=True)
    torch.save(vae.state_dict(), cfg.out / VAE_FILE)
    torch.save(clf.state_dict(), cfg.out / CLASSIFIER_FILE)
    meta = {
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items() if k != "progress"},
        "train_images": len(x),
        "data_files": data.files,
        "validation_metrics": val,
        "distillation_validation_metrics": teacher_val,
        "heldout_checks": heldout,
        "git_commit": git_commit(),
        "torch_version": torch.__version__,
        "python": platform.python_version(),
        "seconds": round(time.time() - start, 1),
    }
    (cfg.out / META_FILE).write_text(json.dumps(meta, indent=2))
    return meta


def load_models(run_dir: Path) -> tuple[VAE, Classifier, dict]:
    """Loads the checkpoints of a training run (weights only: no code is unpickled)."""
    run_dir = Path(run_dir)
    meta = json.loads((run_dir / META_FILE).read_text())
    cfg = meta["config"]
    vae = VAE(cfg["latent_dim"], cfg["vae_width"], cfg["encoder_width"])
    vae.load_state_dict(torch.load(run_dir / VAE_FILE, weights_only=True))
    clf = Classifier()
    clf.load_state_dict(torch.load(run_dir / CLASSIFIER_FILE, weights_only=True))
    return vae.eval(), clf.eval(), meta
