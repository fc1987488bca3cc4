"""CPU variants of the cross-view modules' parts, installed by class swap when a network is built for a CPU
(``nodes/cpu/swaps.py``): the same maths and state-dict keys, laid out for a CPU's memory and products."""

from __future__ import annotations

import torch

from ..model.cross_view_attention import Attention, GEGLUFeedForward, ViewTransformerBlock
from ..model.view_windows import ViewWindows
from .gated_gelu_halves import geglu_in_halves
from .token_slices import SLICE_TOKENS, apply_in_slices


class HalvesGEGLUFeedForward(GEGLUFeedForward):
    """The feed-forward with its GEGLU as two products (``geglu_in_halves``). x [..., C] -> [..., C]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net[2](geglu_in_halves(self.net[0].proj, x))


class SlicedViewTransformerBlock(ViewTransformerBlock):
    """The block run on a CPU over slices of spatial positions, ``SLICE_TOKENS`` tokens (views x positions) at a
    time: nothing in it mixes positions, so the numbers are the same, with every intermediate (queries, keys,
    values, the 8C-wide feed-forward state) kept small and out of the process's peak memory. h [V, D, C]."""

    slice_tokens: int = SLICE_TOKENS

    def forward(self, h: torch.Tensor, windows: ViewWindows, attention: Attention) -> torch.Tensor:
        views, positions = h.shape[:2]
        if h.device.type != "cpu" or views * positions <= self.slice_tokens:
            return super().forward(h, windows, attention)
        block = super().forward
        return apply_in_slices(lambda part: block(part, windows, attention), h, 1, max(1, self.slice_tokens // views))
