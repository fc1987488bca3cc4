"""GEGLU as two products: value and gate computed separately, the gate in place."""

from __future__ import annotations

import torch

from ..model.gated_gelu import geglu


def geglu_in_halves(projection: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``geglu(projection, x)`` [..., n] for a projection layer with ``forward_halves(x)`` (the pack's CPU layers,
    ``nodes/cpu/operations.py``), which returns the two halves of its output as separate fresh tensors: two
    products of n features instead of one of 2n, then the gate computed in place — no [..., 2n] intermediate,
    no strided element-wise passes, no new [..., n] buffers. Where the layer cannot (it returns None, or has no
    such method) the plain ``geglu`` runs. Same numbers up to float32 rounding."""
    halves = getattr(projection, "forward_halves", None)
    fresh = halves(x) if halves is not None else None
    if fresh is None:
        return geglu(projection, x)
    value, gate = fresh
    return value.mul_(torch.ops.aten.gelu_(gate))
