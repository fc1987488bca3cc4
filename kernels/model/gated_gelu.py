"""The GEGLU gate of transformer feed-forwards: value * gelu(gate), both halves of one projection."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def geglu(projection: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """x [..., C] -> value * gelu(gate) [..., n] (exact erf GELU), where ``projection(x)`` [..., 2n] is
    [value, gate] along its last dim."""
    value, gate = projection(x).chunk(2, dim=-1)
    # The product written into gelu's fresh output (x * y == y * x exactly): at the peak, the [..., 2n]
    # projection and one [..., n] buffer are live, not two.
    return F.gelu(gate).mul_(value)
