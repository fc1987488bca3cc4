"""Rows of a batch that are all equal, held once: the views of one portrait share one text context."""

from __future__ import annotations

import torch

from ..model.reference_attention import all_rows_equal


def broadcast_equal_rows(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` [B, ...] as a read-only view of its first row expanded to B rows (stride 0 on dim 0) when all
    rows are equal, else ``tensor`` itself. Same values either way; a layer that honours such inputs
    (``cpu_matmul.linear``) then computes the row once instead of B times."""
    if tensor.dim() == 0 or tensor.shape[0] < 2 or tensor.stride(0) == 0 or not all_rows_equal(tensor):
        return tensor
    return tensor[:1].expand(tensor.shape)
