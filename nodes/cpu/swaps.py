"""CPU variants of a network's modules, installed by class swap when the network is built with the pack's CPU
layers (``operations.py``): same weights, same state-dict keys, same numbers up to float32 rounding."""

from __future__ import annotations

import torch
from comfy.ldm.modules.attention import GEGLU, FeedForward

from ...kernels.cpu.gated_gelu_halves import geglu_in_halves
from ...kernels.cpu.token_slices import SLICE_TOKENS, apply_in_slices
from ...kernels.cpu.view_blocks import HalvesGEGLUFeedForward, SlicedViewTransformerBlock
from ...kernels.model.cross_view_attention import GEGLUFeedForward, ViewTransformerBlock


def has_cpu_layers(operations) -> bool:
    """Whether ``operations`` are the pack's CPU layer classes (``operations.with_cpu_matmul``)."""
    return bool(getattr(operations, "cpu_layers", False))


def slices_on_cpu(operations) -> bool:
    """Whether networks built with ``operations`` run their feed-forwards and cross-view blocks in slices of
    ``SLICE_TOKENS`` tokens on a CPU: with the pack's CPU layers and weights stored below the compute dtype
    (bf16/fp16 storage, the memory-saving choice). The slices keep about 0.1 GiB of intermediates out of a
    full-size step's peak; with float32 weights one pass measured 2-3 % faster."""
    return has_cpu_layers(operations) and bool(getattr(operations.Linear, "comfy_cast_weights", False))


class RowSlicedFeedForward(FeedForward):
    """ComfyUI's transformer feed-forward, run over slices of ``SLICE_TOKENS`` tokens on a CPU: the same
    numbers (every token is computed on its own), with the GEGLU's [tokens, 8C] state kept small and out of
    the process's peak memory. x [..., C] -> [..., C_out]."""

    def forward(self, x):
        rows = x.reshape(-1, x.shape[-1])
        if x.device.type != "cpu" or rows.shape[0] <= SLICE_TOKENS:
            return super().forward(x)
        return apply_in_slices(super().forward, rows, 0, SLICE_TOKENS).view(*x.shape[:-1], -1)


class HalvesGEGLU(GEGLU):
    """ComfyUI's GEGLU as two products, the gate in place (``geglu_in_halves``). x [..., C] -> [..., n]."""

    def forward(self, x):
        return geglu_in_halves(self.proj, x)


def use_cpu_modules_(network: torch.nn.Module, operations) -> torch.nn.Module:
    """With the pack's CPU layers, swaps the classes of ``network``'s modules for their CPU variants: every
    GEGLU (ComfyUI's and the cross-view modules') computes as two products; with ``slices_on_cpu`` every
    ComfyUI feed-forward and cross-view transformer block also runs in token slices. Returns ``network``;
    with other operations it is left as it is."""
    if not has_cpu_layers(operations):
        return network
    swaps = {GEGLU: HalvesGEGLU, GEGLUFeedForward: HalvesGEGLUFeedForward}
    if slices_on_cpu(operations):
        swaps |= {FeedForward: RowSlicedFeedForward, ViewTransformerBlock: SlicedViewTransformerBlock}
    for module in network.modules():
        swap = swaps.get(type(module))
        if swap is not None:
            module.__class__ = swap
    return network
