"""Pixel-range conversions between ComfyUI images and what DiffPortrait3D's networks were trained on."""

import torch


def to_signed_unit_range(image: torch.Tensor) -> torch.Tensor:
    """[0, 1] -> [-1, 1]. The official pose ControlNet reads its condition photo scaled to [-1, 1]
    (lllyasviel's ControlNets read [0, 1], which is what ComfyUI hands every ControlNet)."""
    return image * 2.0 - 1.0
