"""Running a per-token computation over slices of its input, so its intermediates stay small."""

from __future__ import annotations

from collections.abc import Callable

import torch

# Tokens per slice of a transformer block or feed-forward on a CPU: 512 rows still keep the matrix kernels busy
# on 2 Zen 4 cores.
SLICE_TOKENS = 512


def apply_in_slices(function: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, dim: int,
                    size: int) -> torch.Tensor:
    """``function`` on consecutive slices of ``size`` along ``dim`` of ``x`` (at least one index), results
    written into one output along ``dim``. Equals ``function(x)`` when the function treats every index of
    ``dim`` on its own and keeps its length there; the other dims may change (e.g. a layer's width)."""
    length = x.shape[dim]
    out = None
    for start in range(0, length, size):
        part = function(x.narrow(dim, start, min(size, length - start)))
        if out is None:
            shape = list(part.shape)
            shape[dim] = length
            out = part.new_empty(shape)
        out.narrow(dim, start, part.shape[dim]).copy_(part)
    return out
