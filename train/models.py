"""The two networks EdgeGuard ships: a small convolutional VAE and a CNN digit classifier.

Both take images shaped (B, 1, 28, 28) with values in [0, 1] (MNIST scale, white ink on black).
They are sized for an edge runtime: each forward pass costs well under 2 M multiply-adds per image.
"""

from __future__ import annotations

import torch
from torch import nn

LATENT_DIM = 16
N_CLASSES = 10


class Encoder(nn.Module):
    """x (B,1,28,28) -> mu, logvar (B, latent_dim)."""

    def __init__(self, latent_dim: int = LATENT_DIM, width: int = 32):
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
    """z (B, latent_dim) -> image (B,1,28,28) in [0, 1]."""

    def __init__(self, latent_dim: int = LATENT_DIM, width: int = 32):
        super().__init__()
        self.width = width
        self.fc = nn.Sequential(nn.Linear(latent_dim, width * 7 * 7), nn.ReLU())
        self.deconv = nn.Sequential(
            nn.ConvTranspose2d(width, width // 2, 4, stride=2, padding=1),  # 14x14
            nn.ReLU(),
            nn.ConvTranspose2d(width // 2, 1, 4, stride=2, padding=1),  # 28x28
            nn.Sigmoid(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.deconv(self.fc(z).view(-1, self.width, 7, 7))


class MLPDecoder(nn.Module):
    """z (B, latent_dim) -> image (B,1,28,28) in [0, 1], with one hidden layer: two GEMMs, which
    onnxruntime runs far closer to the machine's peak than transposed convolutions at small batch."""

    def __init__(self, latent_dim: int = LATENT_DIM, width: int = 512):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(latent_dim, width), nn.ReLU(), nn.Linear(width, 28 * 28), nn.Sigmoid())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(-1, 1, 28, 28)


DECODERS = {"conv": Decoder, "mlp": MLPDecoder}


class VAE(nn.Module):
    """The encoder runs once per image and the decoder K times, so the encoder can afford more width."""

    def __init__(self, latent_dim: int = LATENT_DIM, width: int = 32, encoder_width: int = 64,
                 decoder: str = "conv"):
        super().__init__()
        self.encoder = Encoder(latent_dim, encoder_width)
        self.decoder = DECODERS[decoder](latent_dim, width)
        self.latent_dim = latent_dim

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encoder(x)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        return self.decoder(z), mu, logvar


class Classifier(nn.Module):
    """x (B,1,28,28) -> logits (B, 10)."""

    def __init__(self, width: int = 16, kind: str = "pool"):
        super().__init__()
        w = width
        if kind == "strided":  # strided convolutions instead of full-resolution ones and pooling
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
            return
        self.net = nn.Sequential(
            nn.Conv2d(1, w, 3, padding=1),  # 28x28
            nn.BatchNorm2d(w),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 14x14
            nn.Conv2d(w, 2 * w, 3, padding=1),
            nn.BatchNorm2d(2 * w),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 7x7
            nn.Conv2d(2 * w, 4 * w, 3),  # 5x5
            nn.BatchNorm2d(4 * w),
            nn.ReLU(),
            nn.Flatten(),
            nn.Dropout(0.3),
            nn.Linear(4 * w * 5 * 5, N_CLASSES),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def vae_loss(recon: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, beta: float = 1.0):
    """Negative ELBO per image (Bernoulli likelihood), with the KL term weighted by beta."""
    bce = nn.functional.binary_cross_entropy(recon, x, reduction="sum") / x.shape[0]
    kl = 0.5 * torch.sum(logvar.exp() + mu.pow(2) - 1.0 - logvar) / x.shape[0]
    return bce + beta * kl, bce, kl
