"""The torch networks inside a loaded DiffPortrait3D set, for host tests that inspect their layers."""

import torch


def loaded_networks(loaded: dict) -> dict[str, torch.nn.Module]:
    """{"unet", "appearance", "cross_view", "pose"} -> the network each ModelPatcher (or ComfyUI ControlNet) holds."""
    return {
        "unet": loaded["unet"].model.diffusion_model,
        "appearance": loaded["appearance"].model,
        "cross_view": loaded["cross_view"].model,
        "pose": loaded["pose"].control_model,
    }
