"""Seeded random weights for benchmarking: finite, O(1) activations, filled in place in the module's dtype.

ComfyUI's ``comfy.ops`` layers skip initialisation, so a freshly built network holds whatever memory it got
(NaNs, huge or denormal values that distort timings). Filling in place keeps memory at one copy of the
weights plus one float32 tensor at a time.
"""

from __future__ import annotations

import torch


def random_weight(name: str, shape, generator: torch.Generator) -> torch.Tensor:
    """One float32 tensor for the parameter ``name``: matrices/kernels ~ N(0, 1/fan_in), norm weights
    ~ 1 + N(0, 0.1^2), other vectors ~ N(0, 0.05^2)."""
    values = torch.randn(tuple(shape), generator=generator)
    if values.ndim >= 2:
        values.mul_(values[0].numel() ** -0.5)
    elif "norm" in name and name.endswith("weight"):
        values.mul_(0.1).add_(1.0)
    else:
        values.mul_(0.05)
    return values


@torch.no_grad()
def fill_random_weights_(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every parameter from :func:`random_weight`, in place, per tensor (generated in float32 on the CPU, then
    cast and copied)."""
    generator = torch.Generator().manual_seed(seed)
    for name, parameter in module.named_parameters():
        parameter.copy_(random_weight(name, parameter.shape, generator))
    return module
