"""Separable Gaussian blur of image-like tensors (the optional low-pass of noise priors)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def gaussian_kernel(sigma: float) -> torch.Tensor:
    """Normalised 1-D kernel [2r + 1] float32, radius ``r = ceil(3 sigma)``."""
    radius = max(1, math.ceil(3.0 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return kernel / kernel.sum()


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Blur [B, C, H, W] with a Gaussian of standard deviation ``sigma`` pixels (edges replicated).

    ``sigma <= 0`` returns the input unchanged. The mean of a constant image is preserved exactly.
    """
    if sigma <= 0:
        return images
    kernel = gaussian_kernel(sigma).to(images)
    radius = kernel.numel() // 2
    channels = images.shape[1]
    out = F.pad(images, (radius, radius, 0, 0), mode="replicate")
    out = F.conv2d(out, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    out = F.pad(out, (0, 0, radius, radius), mode="replicate")
    return F.conv2d(out, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)
