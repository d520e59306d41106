"""The two networks EdgeGuard ships: a small VAE and a CNN digit classifier.

Both take images shaped (B, 1, 28, 28) with values in [0, 1] (MNIST scale, white ink on black).
They are sized for an edge runtime, where the decoder runs K times and the classifier K + 1 times
per screened image: multiply-adds per image are about 1.8 M for the encoder, 0.41 M for the
decoder and 0.78 M for the classifier. The layer types are the ones onnxruntime runs fastest at
small batch on one core (benchmarks/latency.py): strided convolutions instead of full-resolution
ones and pooling, and a decoder of two matrix products instead of transposed convolutions.
"""

from __future__ import annotations

import torch
from torch import nn

LATENT_DIM = 16
N_CLASSES = 10


class Encoder(nn.Module):
    """x (B,1,28,28) -> mu, logvar (B, latent_dim). It runs once per image, so it can afford width."""

    def __init__(self, latent_dim: int = LATENT_DIM, width: int = 64):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width // 2, 4, stride=2, padding=1),  # 14x14
            nn.ReLU(),
            nn.Conv2d(width // 2, width, 4, stride=2, padding=1),  # 7x7
            nn.ReLU(),
            nn.Flatten(),
        )
        self.head = nn.Linear(width * 7 * 7, 2 * latent_dim)
        self.latent_dim = latent_dim

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.head(self.features(x)).chunk(2, dim=1)
        return mu, logvar


class Decoder(nn.Module):
    """z (B, latent_dim) -> image (B,1,28,28) in [0, 1], through one hidden layer of ``width`` units."""

    def __init__(self, latent_dim: int = LATENT_DIM, width: int = 512):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(latent_dim, width), nn.ReLU(), nn.Linear(width, 28 * 28), nn.Sigmoid())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(-1, 1, 28, 28)


class VAE(nn.Module):
    def __init__(self, latent_dim: int = LATENT_DIM, width: int = 512, encoder_width: int = 64):
        super().__init__()
        self.encoder = Encoder(latent_dim, encoder_width)
        self.decoder = Decoder(latent_dim, width)
        self.latent_dim = latent_dim

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encoder(x)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        return self.decoder(z), mu, logvar


class Classifier(nn.Module):
    """x (B,1,28,28) -> logits (B, 10): three strided convolutions (BatchNorm, folded away on export)."""

    def __init__(self, width: int = 16):
        super().__init__()
        w = width
        self.net = nn.Sequential(
            nn.Conv2d(1, w, 5, stride=2, padding=2),  # 14x14
            nn.BatchNorm2d(w),
            nn.ReLU(),
            nn.Conv2d(w, 2 * w, 3, stride=2, padding=1),  # 7x7
            nn.BatchNorm2d(2 * w),
            nn.ReLU(),
            nn.Conv2d(2 * w, 4 * w, 3),  # 5x5
            nn.BatchNorm2d(4 * w),
            nn.ReLU(),
            nn.Flatten(),
            nn.Dropout(0.3),
            nn.Linear(4 * w * 5 * 5, N_CLASSES),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class LogitMean(nn.Module):
    """The mean logits of several classifiers: the distillation stage's judge (training only)."""

    def __init__(self, *models: nn.Module):
        super().__init__()
        self.models = nn.ModuleList(models)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x) for m in self.models]).mean(0)


def vae_loss(recon: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, beta: float = 1.0):
    """Negative ELBO per image (Bernoulli likelihood), with the KL term weighted by beta."""
    bce = nn.functional.binary_cross_entropy(recon, x, reduction="sum") / x.shape[0]
    kl = prior_kl(mu, logvar)
    return bce + beta * kl, bce, kl


def prior_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(q(z|x) || N(0, I)) per image, averaged over the batch."""
    return 0.5 * torch.sum(logvar.exp() + mu.pow(2) - 1.0 - logvar) / mu.shape[0]


def uniform_cross_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Cross-entropy to the uniform answer over the classes, averaged over the batch (outlier exposure)."""
    return -nn.functional.log_softmax(logits, dim=1).mean()
