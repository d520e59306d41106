"""Adversarial attacks on the shipped classifier (PyTorch, on the weights loaded by train.from_onnx).

- ``fgsm``: Goodfellow et al. 2015, one signed-gradient step of size eps (untargeted).
- ``lbfgs``: Szegedy et al. 2014, box-constrained L-BFGS-B (scipy) minimising
  c * ||x' - x||^2 + CE(f(x'), target) over x' in [0,1]^n, with a per-image search over c for the
  largest c (so the smallest perturbation) that still reaches the target. Images are optimised in
  batches as one separable problem (the objective is a sum of independent per-image terms, so its
  minimiser is the per-image minimisers), which keeps scipy's per-call overhead small.
- ``pgd_linf`` and ``cw_l2``: torchattacks' PGD (Madry et al. 2018) and CW (Carlini & Wagner 2017),
  not rewritten.
- ``adaptive``: an attack that knows the whole detector (Carlini et al. 2019 / Athalye et al. 2018):
  EOT over M fixed latent-noise draws through encoder -> sample -> decoder -> classifier, pushing the
  input and every reconstruction to one target label, with hinge penalties keeping a smooth surrogate
  of the deployed combined (Fisher) statistic under its threshold at alpha. PGD-Linf and C&W-L2 style.

All attacks take and return float32 tensors (B,1,28,28) in [0,1] and never modify their inputs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import minimize
from threadpoolctl import threadpool_limits
from torch import nn

from edgeguard.contrast import FRAME, MIN_CONTRAST

Progress = Callable[[int], None] | None


def _batches(n: int, size: int):
    for i in range(0, n, size):
        yield slice(i, min(n, i + size))


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch: int = 1000) -> torch.Tensor:
    return torch.cat([model(x[s]).argmax(1) for s in _batches(len(x), batch)])


def random_targets(y: torch.Tensor, seed: int = 0, n_classes: int = 10) -> torch.Tensor:
    """A uniformly random label other than y, per image (seeded)."""
    g = torch.Generator().manual_seed(seed)
    shift = torch.randint(1, n_classes, y.shape, generator=g)
    return (y + shift) % n_classes


# -- FGSM ------------------------------------------------------------------------------------------

def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, batch: int = 1000) -> torch.Tensor:
    """Untargeted FGSM: x + eps * sign(grad CE), clipped to [0,1]."""
    out = []
    for s in _batches(len(x), batch):
        xb = x[s].clone().requires_grad_(True)
        loss = F.cross_entropy(model(xb), y[s], reduction="sum")
        (grad,) = torch.autograd.grad(loss, xb)
        out.append((xb.detach() + eps * grad.sign()).clamp(0.0, 1.0))
    return torch.cat(out)


# -- torchattacks ----------------------------------------------------------------------------------

def _torchattacks():
    try:
        import torchattacks
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise RuntimeError("PGD and C&W need torchattacks: pip install --no-deps torchattacks") from e
    return torchattacks


def pgd_linf(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float = 0.3, steps: int = 40,
             step_size: float = 0.01, seed: int = 0, batch: int = 1000, progress: Progress = None) -> torch.Tensor:
    """Untargeted PGD-Linf (torchattacks.PGD, random start)."""
    attack = _torchattacks().PGD(model, eps=eps, alpha=step_size, steps=steps, random_start=True)
    torch.manual_seed(seed)
    return _run_batched(attack, x, y, batch, progress)


def cw_l2(model: nn.Module, x: torch.Tensor, y: torch.Tensor, c: float = 1.0, kappa: float = 0.0, steps: int = 100,
          lr: float = 0.01, batch: int = 1000, progress: Progress = None) -> torch.Tensor:
    """Untargeted Carlini-Wagner L2 (torchattacks.CW); failed images come back unchanged."""
    attack = _torchattacks().CW(model, c=c, kappa=kappa, steps=steps, lr=lr)
    return _run_batched(attack, x, y, batch, progress)


def _run_batched(attack, x: torch.Tensor, y: torch.Tensor, batch: int, progress: Progress) -> torch.Tensor:
    """A torchattacks attack over x in batches, reporting each batch's size to ``progress``."""
    out = []
    for s in _batches(len(x), batch):
        out.append(attack(x[s], y[s]).detach())
        if progress:
            progress(s.stop - s.start)
    return torch.cat(out)


# -- L-BFGS (Szegedy et al. 2014) ------------------------------------------------------------------

def _lbfgs_solve(model, x0: torch.Tensor, target: torch.Tensor, c: torch.Tensor, start: torch.Tensor,
                 maxiter: int) -> torch.Tensor:
    """argmin over x' in [0,1]^n of sum_i c_i ||x'_i - x0_i||^2 + CE(f(x'_i), t_i), one L-BFGS-B run."""
    shape = x0.shape
    x0f = x0.reshape(len(x0), -1).double()
    cf = c.double()

    def fun(v: np.ndarray):
        xv = torch.from_numpy(v).reshape(shape).float().requires_grad_(True)
        ce = F.cross_entropy(model(xv), target, reduction="none")
        (g_ce,) = torch.autograd.grad(ce.sum(), xv)
        d = torch.from_numpy(v).reshape(len(x0), -1) - x0f
        value = float((cf * (d * d).sum(1)).sum() + ce.detach().double().sum())
        grad = (2.0 * cf[:, None] * d + g_ce.reshape(len(x0), -1).double()).reshape(-1)
        return value, grad.numpy()

    v0 = start.reshape(-1).double().numpy()
    with threadpool_limits(1):  # multi-threaded BLAS on 10^4-sized vectors only adds contention
        res = minimize(fun, v0, jac=True, method="L-BFGS-B", bounds=[(0.0, 1.0)] * v0.size,
                       options={"maxiter": maxiter, "maxcor": 10})
    return torch.from_numpy(res.x).float().reshape(shape).clamp(0.0, 1.0)


def lbfgs(model: nn.Module, x: torch.Tensor, target: torch.Tensor, *, c_init: float = 1.0, search_steps: int = 6,
          maxiter: int = 30, batch: int = 10, progress: Progress = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Targeted box-constrained L-BFGS attack with a per-image search over c.

    For each image: start at c = c_init; while the target is reached, multiply c by 10 (less
    perturbation allowed), while it is not, divide by 10; once bracketed, bisect (geometrically).
    Keeps the successful image with the smallest L2 perturbation. Each solve starts from the previous
    solve's result (a warm start; the minimiser is the same). Batches of ~10 images: scipy's L-BFGS-B
    costs grow faster than linearly in the number of variables. Returns (x_adv, success); failed
    images come back unchanged.
    """
    out, ok = [], []
    for s in _batches(len(x), batch):
        x0, t = x[s], target[s]
        n = len(x0)
        c = torch.full((n,), float(c_init), dtype=torch.float64)
        lo = torch.zeros(n, dtype=torch.float64)  # the largest c known to succeed (0: none yet)
        hi = torch.full((n,), np.inf, dtype=torch.float64)  # the smallest c known to fail (inf: none yet)
        best = x0.clone()
        best_l2 = torch.full((n,), np.inf)
        start = x0
        for _ in range(search_steps):
            adv = _lbfgs_solve(model, x0, t, c, start, maxiter)
            start = adv
            with torch.no_grad():
                hit = model(adv).argmax(1) == t
            l2 = (adv - x0).reshape(n, -1).norm(dim=1)
            better = hit & (l2 < best_l2)
            best[better], best_l2[better] = adv[better], l2[better]
            # success at c -> try a larger c (smaller perturbation); failure -> a smaller c.
            lo = torch.where(hit, torch.maximum(lo, c), lo)
            hi = torch.where(hit, hi, torch.minimum(hi, c))
            bracket = torch.isfinite(hi) & (lo > 0)
            c = torch.where(bracket, torch.sqrt(lo * hi.clamp(max=1e30)),
                            torch.where(hit, c * 10.0, c / 10.0))
        out.append(best)
        ok.append(torch.isfinite(best_l2))
        if progress:
            progress(n)
    return torch.cat(out), torch.cat(ok)


# -- adaptive attack (knows the detector) ----------------------------------------------------------

@dataclass
class DetectorSurrogate:
    """A differentiable stand-in for the deployed verdict: smooth conformal p-values of the continuous
    signals, Fisher-combined, with the threshold the runtime uses at alpha.

    cal: signal -> sorted clean calibration scores (from the manifest); threshold: the Fisher
    statistic above which the runtime's combined p-value falls below alpha.
    """

    cal: dict[str, torch.Tensor]
    threshold: float
    temperature: dict[str, float]

    @classmethod
    def from_calibration(cls, calibration, alpha: float) -> DetectorSurrogate:
        cal = {name: torch.from_numpy(np.asarray(calibration.scores[name], np.float32))
               for name in calibration.signals if name in CONTINUOUS}
        threshold = flag_threshold(np.asarray(calibration.combined, np.float32), alpha)
        temperature = {name: float(max(np.std(v.numpy()) * 0.05, 1e-6)) for name, v in cal.items()}
        return cls(cal, threshold, temperature)

    def statistic(self, signals: dict[str, torch.Tensor]) -> torch.Tensor:
        """Smooth Fisher statistic -2 sum log p over the continuous signals (consistency ones taken as p = 1)."""
        total = 0.0
        for name, cal in self.cal.items():
            s = signals[name]
            n = cal.numel()
            surv = torch.sigmoid((cal[None, :] - s[:, None]) / self.temperature[name]).sum(1)
            p = (1.0 + surv) / (n + 1.0)
            total = total - 2.0 * torch.log(p)
        return total


def flag_threshold(sorted_cal: np.ndarray, alpha: float) -> float:
    """The smallest score the runtime flags at alpha: min{t : conformal_p(sorted_cal, t) < alpha}."""
    from edgeguard.kernels_numpy import conformal_p

    p = conformal_p(sorted_cal, sorted_cal)
    flagged = sorted_cal[p < alpha]
    if flagged.size:
        return float(flagged.min())
    return float(np.nextafter(sorted_cal[-1], np.float32(np.inf)))  # above every calibration score


CONTINUOUS = ("recon_mse", "recon_mse_min", "kl", "posterior_spread", "low_confidence")


def standardize(x: torch.Tensor) -> torch.Tensor:
    """edgeguard.contrast.standardize in torch, differentiable almost everywhere: x (B,1,28,28) -> the same."""
    flat = x.reshape(len(x), -1)
    frame = torch.sort(flat[:, torch.from_numpy(FRAME)], dim=1).values
    n = frame.shape[1]
    inverted = frame[:, n // 2] > 0.5
    background = torch.where(inverted, 1.0 - frame[:, n - 1 - n // 10], frame[:, n // 10])
    ink = torch.where(inverted[:, None], 1.0 - flat, flat)
    span = ink.max(1).values - background
    blank = span < MIN_CONTRAST
    out = ((ink - background[:, None]) / torch.where(blank, torch.ones_like(span), span)[:, None]).clamp(0.0, 1.0)
    return torch.where(blank[:, None], flat, out).reshape(x.shape)


def detector_signals(encoder, decoder, classifier, x: torch.Tensor, eps: torch.Tensor):
    """Torch versions of the runtime's signals for x (B,1,28,28) under the M noise draws eps (M, D), after the
    runtime's 28x28 rule (``standardize``).

    Returns (input logits (B,C), recon logits (B,M,C), continuous signals dict).
    """
    x = standardize(x)
    b, m = len(x), len(eps)
    mu, logvar = encoder(x)
    z = mu[:, None, :] + torch.exp(0.5 * logvar)[:, None, :] * eps[None]
    recon = decoder(z.reshape(b * m, -1)).reshape(b, m, -1)
    logits = classifier(torch.cat([x, recon.reshape(b * m, 1, 28, 28)]))
    in_logits, rec_logits = logits[:b], logits[b:].reshape(b, m, -1)
    mse = ((recon - x.reshape(b, 1, -1)) ** 2).mean(2)
    signals = {
        "recon_mse": mse.mean(1),
        "recon_mse_min": mse.min(1).values,
        "kl": 0.5 * (logvar.exp() + mu * mu - 1.0 - logvar).sum(1),
        "posterior_spread": torch.exp(0.5 * logvar).mean(1),
        "low_confidence": 1.0 - F.softmax(in_logits, 1).max(1).values,
    }
    return in_logits, rec_logits, signals


def _margin(logits: torch.Tensor, target: torch.Tensor, kappa: float) -> torch.Tensor:
    """C&W margin: max(max_{j != t} z_j - z_t, -kappa), over the last axis."""
    t = target.reshape(*target.shape, *([1] * (logits.dim() - target.dim())))
    t = t.expand(*logits.shape[:-1], 1)
    zt = logits.gather(-1, t).squeeze(-1)
    other = logits.scatter(-1, t, -1e9).max(-1).values
    return (other - zt).clamp(min=-kappa)


def adaptive_loss(models, surrogate: DetectorSurrogate, x_adv, target, eps, kappa: float = 2.0,
                  margin_stat: float = 0.8, weight: float = 1.0):
    """Per-image loss: C&W margins pushing the input and every reconstruction to target, plus a hinge
    keeping the smooth Fisher statistic below margin_stat * threshold. Returns (loss, in_logits, rec_logits)."""
    in_logits, rec_logits, sig = detector_signals(models.encoder, models.decoder, models.classifier, x_adv, eps)
    cls_loss = _margin(in_logits, target, kappa) + _margin(rec_logits, target, kappa).mean(1)
    stat = surrogate.statistic(sig)
    hinge = F.relu(stat - margin_stat * surrogate.threshold)
    return cls_loss + weight * hinge, in_logits, rec_logits


def adaptive_pgd(models, surrogate: DetectorSurrogate, x: torch.Tensor, target: torch.Tensor, eps: float,
                 eot_noise: torch.Tensor, steps: int = 100, step_size: float | None = None, batch: int = 200,
                 seed: int = 0, progress: Progress = None) -> torch.Tensor:
    """PGD-Linf on the adaptive loss (EOT over eot_noise (M, D)); keeps the last iterate that looked clean."""
    step_size = step_size or max(eps / 20, 2.5 * eps / steps)
    g = torch.Generator().manual_seed(seed)
    out = []
    for s in _batches(len(x), batch):
        x0, t = x[s], target[s]
        adv = (x0 + (torch.rand(x0.shape, generator=g) * 2 - 1) * eps * 0.5).clamp(0, 1)
        best, best_loss = x0.clone(), torch.full((len(x0),), np.inf)
        for _ in range(steps):
            adv.requires_grad_(True)
            loss, _, _ = adaptive_loss(models, surrogate, adv, t, eot_noise)
            (grad,) = torch.autograd.grad(loss.sum(), adv)
            with torch.no_grad():
                improved = loss < best_loss
                best[improved], best_loss[improved] = adv[improved].detach(), loss[improved].detach()
                adv = adv.detach() - step_size * grad.sign()
                adv = torch.min(torch.max(adv, x0 - eps), x0 + eps).clamp(0, 1)
        with torch.no_grad():
            loss, _, _ = adaptive_loss(models, surrogate, adv, t, eot_noise)
            improved = loss < best_loss
            best[improved] = adv[improved]
        out.append(best)
        if progress:
            progress(len(x0))
    return torch.cat(out)


def adaptive_cw(models, surrogate: DetectorSurrogate, x: torch.Tensor, target: torch.Tensor,
                eot_noise: torch.Tensor, c: float = 5.0, steps: int = 200, lr: float = 0.05, batch: int = 200,
                progress: Progress = None) -> torch.Tensor:
    """C&W-L2 style (tanh box, Adam) on ||delta||^2 + c * adaptive loss; keeps the smallest perturbation
    whose adaptive loss reached its floor (all margins met and the hinge at zero), else the lowest loss."""
    out = []
    for s in _batches(len(x), batch):
        x0, t = x[s], target[s]
        w = torch.atanh((x0 * 2 - 1).clamp(-1 + 1e-6, 1 - 1e-6)).detach().requires_grad_(True)
        opt = torch.optim.Adam([w], lr=lr)
        n = len(x0)
        best = x0.clone()
        best_l2 = torch.full((n,), np.inf)
        best_loss = torch.full((n,), np.inf)
        for _ in range(steps):
            adv = (torch.tanh(w) + 1) / 2
            loss, _, _ = adaptive_loss(models, surrogate, adv, t, eot_noise)
            l2 = ((adv - x0) ** 2).reshape(n, -1).sum(1)
            with torch.no_grad():
                floor = loss <= -2.0 * 2.0 + 1e-6  # both margins at -kappa, hinge zero
                better = floor & (l2 < best_l2)
                best[better], best_l2[better] = adv[better].detach(), l2[better].detach()
                fallback = ~torch.isfinite(best_l2) & (loss < best_loss)
                best[fallback], best_loss[fallback] = adv[fallback].detach(), loss[fallback].detach()
            opt.zero_grad()
            (l2 + c * loss).sum().backward()
            opt.step()
        out.append(best)
        if progress:
            progress(n)
    return torch.cat(out)
