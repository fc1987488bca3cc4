"""The GEGLU gate of transformer feed-forwards: value * gelu(gate), both halves of one projection."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def geglu(projection: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """x [..., C] -> value * gelu(gate) [..., n] (exact erf GELU), where ``projection(x)`` [..., 2n] is
    [value, gate] along its last dim.

    A projection layer with a ``forward_halves(x)`` method (the pack's CPU layers) may return the two halves
    as separate fresh tensors — two products of n features instead of one of 2n, then the gate computed in
    place: no [..., 2n] intermediate, no strided element-wise passes, no new [..., n] buffers. It returns None
    when it cannot (then the plain chunked form runs, on any device: 3n values per token at its peak)."""
    halves = getattr(projection, "forward_halves", None)
    fresh = halves(x) if halves is not None else None
    if fresh is not None:
        value, gate = fresh
        return value.mul_(torch.ops.aten.gelu_(gate))
    value, gate = projection(x).chunk(2, dim=-1)
    # The product written into gelu's fresh output (x * y == y * x exactly): at the peak, the [..., 2n]
    # projection and one [..., n] buffer are live, not two.
    return F.gelu(gate).mul_(value)
