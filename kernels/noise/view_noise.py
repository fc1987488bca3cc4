"""Seeded Gaussian noise for a batch of views, independent (official) or partly shared across views.

Shared mode: ``eps_v = (n_v + alpha s) / sqrt(1 + alpha^2)`` with ``n_v`` drawn per view and ``s``
drawn once: every element keeps unit variance, and two views correlate by ``alpha^2 / (1 + alpha^2)``.
"""

from __future__ import annotations

import math

import torch


def shared_noise_correlation(shared_weight: float) -> float:
    """Cross-view correlation ``alpha^2 / (1 + alpha^2)`` of :func:`view_noise` with weight ``alpha``."""
    return shared_weight**2 / (1.0 + shared_weight**2)


def view_noise(shape: tuple[int, ...], seed: int, shared_weight: float = 0.0) -> torch.Tensor:
    """Float32 noise of ``shape`` = [V, C, H, W] from ``seed`` (CPU generator), unit variance per element.

    ``shared_weight`` (alpha >= 0) mixes in one draw shared by all views; 0 is the official independent
    noise and then equals ``torch.randn(shape)`` after ``torch.manual_seed(seed)`` (ComfyUI's own noise).
    """
    if shared_weight < 0:
        raise ValueError(f"shared_weight must be >= 0, got {shared_weight}")
    generator = torch.Generator().manual_seed(int(seed))
    independent = torch.randn(shape, generator=generator, dtype=torch.float32)
    if shared_weight == 0:
        return independent
    shared = torch.randn((1, *shape[1:]), generator=generator, dtype=torch.float32)
    return (independent + shared_weight * shared) / math.sqrt(1.0 + shared_weight**2)
