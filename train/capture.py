"""Capture augmentation: MNIST digits made to look as other pens, scanners and cameras make them.

Real inputs differ from MNIST in ways the preprocessing cannot undo: stroke width (a fine pen to a marker),
how soft the stroke's edge is (scanner blur, camera focus, anti-aliasing of a thin stylus), slant, size and
position after cropping, and the small wobbles of another hand. ``capture`` draws each of these at random,
per image, on a batch of MNIST-style tensors (B, 1, 28, 28) in [0, 1], and ends as the runtime's
normalisation does (``edgeguard.normalize``): ink peak at full scale. Every operation is a batched torch op
(one ``grid_sample`` and a separable blur), so it adds little to a training step.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _uniform(n: int, lo: float, hi: float, gen: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=gen)


def _geometry(x: torch.Tensor, gen: torch.Generator, elastic: float) -> torch.Tensor:
    """Rotation, anisotropic scale, shear (slant) and shift, plus a smooth random displacement field."""
    n = x.shape[0]
    angle = _uniform(n, -math.radians(15), math.radians(15), gen)
    scale_x = _uniform(n, 0.85, 1.18, gen)
    scale_y = scale_x * _uniform(n, 0.9, 1.1, gen)
    shear = _uniform(n, -0.3, 0.3, gen)
    shift = _uniform(2 * n, -2.5 / 14, 2.5 / 14, gen).view(n, 2)
    cos, sin = torch.cos(angle), torch.sin(angle)
    # output -> input map: inverse scale, then shear, then rotation.
    a = torch.stack([torch.stack([cos / scale_x, (-sin + shear * cos) / scale_x], 1),
                     torch.stack([sin / scale_y, (cos + shear * sin) / scale_y], 1)], 1)
    theta = torch.cat([a, shift.unsqueeze(2)], 2)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    if elastic > 0:
        coarse = torch.randn(n, 2, 4, 4, generator=gen) * (elastic / 14.0)
        field = F.interpolate(coarse, size=x.shape[-2:], mode="bilinear", align_corners=False)
        grid = grid + field.permute(0, 2, 3, 1)
    return F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")


def _blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Gaussian blur with a per-image sigma (in pixels; 0 leaves the image as it is)."""
    offsets = torch.arange(-2, 3, dtype=x.dtype)
    s = sigma.clamp_min(1e-3).view(-1, 1)
    kernel = torch.exp(-0.5 * (offsets / s) ** 2)
    kernel = kernel / kernel.sum(1, keepdim=True)  # (B, 5)
    n = x.shape[0]
    rows = F.conv2d(F.pad(x, (2, 2, 0, 0)).view(1, n, 28, 32), kernel.view(n, 1, 1, 5), groups=n)
    cols = F.conv2d(F.pad(rows, (0, 0, 2, 2)), kernel.view(n, 1, 5, 1), groups=n)
    return cols.view_as(x)


def peak_normalise(x: torch.Tensor) -> torch.Tensor:
    """Ink peak to full scale, as edgeguard.normalize does for every input."""
    peak = x.amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-3)
    return (x / peak).clamp(0.0, 1.0)


def capture(x: torch.Tensor, gen: torch.Generator, strength: float = 1.0) -> torch.Tensor:
    """A random capture of each image of x (B, 1, 28, 28): geometry and elastic wobble, then the stroke's
    width and edge (a blur followed by an ink transfer curve: gain above 1 thickens, gamma above 1 thins
    and sharpens), then the ink peak back at full scale. ``strength`` scales the elastic field."""
    n = x.shape[0]
    out = _geometry(x, gen, elastic=1.0 * strength)
    out = _blur(out, _uniform(n, 0.3, 1.0, gen))
    gain = torch.exp(_uniform(n, 0.0, math.log(2.2), gen)).view(n, 1, 1, 1)
    gamma = torch.exp(_uniform(n, 0.0, math.log(2.0), gen)).view(n, 1, 1, 1)
    out = (gain * out).clamp(0.0, 1.0) ** gamma
    return peak_normalise(out)


def mixed(x: torch.Tensor, gen: torch.Generator, share: float = 0.5, rest: torch.Tensor | None = None) -> torch.Tensor:
    """``capture`` of a random ``share`` of the batch x; the others are ``rest`` (x itself when None)."""
    if share <= 0:  # no random draw at all: the generator's stream stays as without capture
        return x if rest is None else rest
    chosen = torch.rand(x.shape[0], generator=gen) < share
    out = (x if rest is None else rest).clone()
    if chosen.any():
        out[chosen] = capture(x[chosen], gen)
    return out
