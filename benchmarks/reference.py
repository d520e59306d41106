"""The PyTorch eager reference that the runtime is measured against.

This is the obvious batched ``torch.no_grad`` implementation a researcher would write with the training
checkpoints: encoder, K latent samples with ``torch.randn``, decoder, the classifier on inputs and
reconstructions in one call, the vote with torch ops, MSE/KL scores and, when a calibration is given, the
conformal p-values with ``torch.searchsorted``. It produces the same numbers as ``Guard.screen`` (up to the
random draws) but no ``Verdict`` objects, so comparing it with ``Guard.screen`` is, if anything, unfair to
the runtime.

Only ``benchmarks.latency`` imports this module, and only after checking that torch and the checkpoints are
there: the runtime itself never needs torch.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from edgeguard.contract import SIDE

CHECKPOINT_FILES = ("vae.pt", "classifier.pt", "train_meta.json")


def missing_checkpoints(run_dir: str | os.PathLike[str]) -> list[str]:
    """The checkpoint files absent from ``run_dir`` (empty when the reference can be loaded)."""
    run = Path(run_dir)
    return [name for name in CHECKPOINT_FILES if not (run / name).is_file()]


def vote(p: torch.Tensor):
    """Majority vote over (B, K, C) probabilities, as kernels.vote defines it, with torch ops:
    (labels (B,K), majority, n_distinct, agreement, entropy)."""
    k = p.shape[1]
    labels = p.argmax(dim=2)
    counts = torch.nn.functional.one_hot(labels, p.shape[2]).sum(dim=1)  # (B, C)
    # most votes, then the larger summed probability (< k + 1), then the smaller label (argmax takes the first)
    majority = (counts * (k + 1) + p.sum(dim=1, dtype=torch.float64)).argmax(dim=1)
    share = counts / k
    agreement = share.gather(1, majority[:, None]).squeeze(1)
    entropy = -torch.special.xlogy(share, share).sum(dim=1)
    return labels, majority, (counts > 0).sum(dim=1), agreement, entropy


class TorchReference:
    """Screens a batch with the training-time PyTorch modules, eagerly."""

    def __init__(self, vae: torch.nn.Module, clf: torch.nn.Module, *, k: int, seed: int = 0,
                 calibration=None):
        self.encoder, self.decoder, self.clf = vae.encoder.eval(), vae.decoder.eval(), clf.eval()
        self.k = k
        self.generator = torch.Generator().manual_seed(seed)
        self.calibration = None
        if calibration is not None:  # edgeguard.calibration.Calibration -> tensors
            self.calibration = (
                tuple(calibration.signals),
                {name: torch.from_numpy(np.asarray(s, np.float32)) for name, s in calibration.scores.items()},
                torch.from_numpy(np.asarray(calibration.combined, np.float32)),
            )

    @classmethod
    def load(cls, run_dir: str | os.PathLike[str], *, k: int, seed: int = 0, calibration=None) -> TorchReference:
        from train.trainer import load_models

        vae, clf, _ = load_models(Path(run_dir))
        return cls(vae, clf, k=k, seed=seed, calibration=calibration)

    @staticmethod
    def to_tensor(images: np.ndarray) -> torch.Tensor:
        """uint8 (B,28,28) or float32 [0,1] -> float32 (B,1,28,28), as a researcher's data loader would."""
        x = torch.from_numpy(np.asarray(images))
        if x.dtype == torch.uint8:
            x = x.float() / 255.0
        return x.reshape(-1, 1, SIDE, SIDE)

    @torch.no_grad()
    def screen(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        b, k = x.shape[0], self.k
        mu, logvar = self.encoder(x)
        std = torch.exp(0.5 * logvar)
        eps = torch.randn(b, k, mu.shape[1], generator=self.generator)
        z = (mu.unsqueeze(1) + std.unsqueeze(1) * eps).reshape(b * k, -1)
        recon = self.decoder(z)
        probs = torch.softmax(self.clf(torch.cat([x, recon])), dim=1)
        confidence, label = probs[:b].max(dim=1)
        labels, majority, n_distinct, agreement, entropy = vote(probs[b:].reshape(b, k, -1))
        mse = ((recon.reshape(b, k, -1) - x.reshape(b, 1, -1)) ** 2).mean(dim=2)
        signals = {
            "disagreement": 1.0 - agreement,
            "input_mismatch": 1.0 - (labels == label[:, None]).float().mean(dim=1),
            "vote_entropy": entropy,
            "recon_mse": mse.mean(dim=1),
            "recon_mse_min": mse.min(dim=1).values,
            "kl": 0.5 * (logvar.exp() + mu**2 - 1.0 - logvar).sum(dim=1),
            "posterior_spread": std.mean(dim=1),
            "low_confidence": 1.0 - confidence,
        }
        out = {"label": label, "confidence": confidence, "labels": labels, "purified_label": majority,
               "n_distinct": n_distinct, "agreement": agreement, "mu": mu, **signals}
        if self.calibration is not None:
            names, scores, combined = self.calibration
            p_values = torch.stack([self._conformal_p(scores[n], signals[n].float()) for n in names], dim=1)
            out["p_value"] = self._conformal_p(combined, (-2.0 * torch.log(p_values).sum(dim=1)).float())
        return out

    @staticmethod
    def _conformal_p(sorted_scores: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        n = sorted_scores.numel()
        at_least = n - torch.searchsorted(sorted_scores, s.contiguous(), side="left")
        return (1.0 + at_least.double()) / (n + 1.0)
