"""Structural facts about a ComfyUI UNet, read from the live modules (never from index tables)."""

from __future__ import annotations

from comfy.ldm.modules.attention import BasicTransformerBlock, SpatialTransformer
from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel, Upsample

from ..kernels.model.reference_attention import BlockKey


def unet_blocks(unet: UNetModel):
    """(kind, id, block) for every input block, the middle block and every output block, in run order."""
    yield from (("input", i, block) for i, block in enumerate(unet.input_blocks))
    yield "middle", 0, unet.middle_block
    yield from (("output", i, block) for i, block in enumerate(unet.output_blocks))


def transformer_positions(unet: UNetModel) -> dict[BlockKey, int]:
    """Bank positions: (kind, block id, transformer index) -> self-attention width, for every
    transformer block, keyed the way ComfyUI reports them to attention patches."""
    positions = {}
    for kind, block_id, block in unet_blocks(unet):
        for layer in block:
            if isinstance(layer, SpatialTransformer):
                for index, transformer in enumerate(layer.transformer_blocks):
                    if isinstance(transformer, BasicTransformerBlock):
                        positions[(kind, block_id, index)] = transformer.attn1.to_q.in_features
    return positions


def block_channels(block) -> int:
    """Output channels of a UNet block (its last layer with a known width)."""
    for layer in reversed(list(block)):
        for name in ("out_channels", "channels", "in_channels"):
            if hasattr(layer, name):
                return getattr(layer, name)
    raise ValueError("cannot tell the channels of a UNet block")


def has_upsampler(block) -> bool:
    return any(isinstance(layer, Upsample) for layer in block)


def require_unet(model, input_name: str) -> UNetModel:
    """The MODEL's UNet, or a clear error for other model families (DiT, SDXL-refiner-like wrappers, …)."""
    unet = model.get_model_object("diffusion_model")
    if not isinstance(unet, UNetModel):
        raise ValueError(
            f"{input_name}: DiffPortrait3D needs an SD1.5-family UNet MODEL, this one is {type(unet).__name__}"
        )
    return unet


def require_same_transformers(model, other: UNetModel, input_name: str, other_name: str) -> None:
    """Both UNets must have transformer blocks at the same positions with the same widths."""
    mine, theirs = transformer_positions(require_unet(model, input_name)), transformer_positions(other)
    if mine != theirs:
        raise ValueError(
            f"{input_name}: the MODEL's UNet does not match the {other_name} ({len(mine)} transformer blocks, "
            f"widths {sorted(set(mine.values()))}, vs {len(theirs)}, widths {sorted(set(theirs.values()))}); "
            "DiffPortrait3D needs an SD1.5 model"
        )
