"""Bring a user's reference portrait to the size of the views before it is VAE-encoded.

Policy (documented in the README): greyscale is repeated to RGB, an alpha channel is composited onto
white, then the image is centre-cropped to the views' aspect ratio and resized (area-averaged when
shrinking, bilinear when enlarging) to exactly the views' pixel size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def to_rgb(image: torch.Tensor, input_name: str = "reference_image") -> torch.Tensor:
    """IMAGE [B, H, W, C] in [0, 1] with C in {1, 3, 4} -> [B, H, W, 3]."""
    if image.ndim != 4:
        raise ValueError(f"{input_name}: expected an IMAGE batch [B, H, W, C], got shape {tuple(image.shape)}")
    channels = image.shape[-1]
    if channels == 3:
        return image
    if channels == 1:
        return image.expand(-1, -1, -1, 3)
    if channels == 4:
        rgb, alpha = image[..., :3], image[..., 3:]
        return rgb * alpha + (1.0 - alpha)
    raise ValueError(f"{input_name}: images with {channels} channels are not supported (use RGB, RGBA or greyscale)")


def fit_to_size(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Centre-crop [B, H, W, C] to the aspect ratio height:width, then resize to exactly (height, width)."""
    _, h, w, _ = image.shape
    if h * width > w * height:  # too tall
        crop_h, crop_w = max(1, round(w * height / width)), w
    else:
        crop_h, crop_w = h, max(1, round(h * width / height))
    top, left = (h - crop_h) // 2, (w - crop_w) // 2
    cropped = image[:, top : top + crop_h, left : left + crop_w].movedim(-1, 1)
    if (crop_h, crop_w) == (height, width):
        return cropped.movedim(1, -1)
    mode = "area" if crop_h >= height and crop_w >= width else "bilinear"
    resized = F.interpolate(cropped, size=(height, width), mode=mode, **({} if mode == "area" else {"align_corners": False}))
    return resized.clamp(0, 1).movedim(1, -1)
