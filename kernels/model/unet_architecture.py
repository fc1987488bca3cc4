"""Translate an ldm-yaml UNet ``params`` dict (as recorded in converted files) into the keyword
arguments of ComfyUI's ``UNetModel`` / ``cldm.ControlNet``. Plain dict maths: no ``comfy`` import."""

from __future__ import annotations


def attention_levels(params: dict) -> list[bool]:
    """Per resolution level: does it carry spatial transformers? (downsample factor in attention_resolutions)"""
    return [2**level in params["attention_resolutions"] for level in range(len(params["channel_mult"]))]


def comfy_unet_kwargs(params: dict) -> dict:
    """Keyword arguments for ComfyUI's UNetModel for the ldm ``params`` (``out_channels`` included;
    drop it for a ControlNet). Transformer depths are listed per input block (``num_res_blocks`` per level)
    and per output block (``num_res_blocks + 1`` per level), shallowest level first, as ComfyUI expects."""
    depth = params.get("transformer_depth", 1)
    res_blocks = params["num_res_blocks"]
    with_attention = attention_levels(params)
    return {
        "image_size": params.get("image_size", 32),
        "in_channels": params["in_channels"],
        "out_channels": params.get("out_channels", params["in_channels"]),
        "model_channels": params["model_channels"],
        "num_res_blocks": [res_blocks] * len(params["channel_mult"]),
        "channel_mult": list(params["channel_mult"]),
        "transformer_depth": [depth if attn else 0 for attn in with_attention for _ in range(res_blocks)],
        "transformer_depth_output": [depth if attn else 0 for attn in with_attention for _ in range(res_blocks + 1)],
        "transformer_depth_middle": depth,
        "context_dim": params["context_dim"],
        "num_heads": params.get("num_heads", -1),
        "num_head_channels": params.get("num_head_channels", -1),
        "use_linear_in_transformer": params.get("use_linear_in_transformer", False),
        "use_spatial_transformer": True,
        "legacy": params.get("legacy", False),
        "adm_in_channels": None,
        "use_temporal_attention": False,
        "use_temporal_resblock": False,
        "use_checkpoint": False,
    }
