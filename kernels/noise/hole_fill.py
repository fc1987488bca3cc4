"""Smooth hole filling by push-pull: known pixels averaged down a pyramid, then pulled back up into the holes."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def fill_holes(image: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """Fill the pixels of ``image`` [C, H, W] where ``known`` [H, W] (bool or weight in [0, 1]) is 0.

    Known pixels are returned unchanged; each hole takes a smooth blend of the known pixels around it
    (coarser pyramid levels for bigger holes). With no known pixel at all the image is returned as is.
    """
    weight = known.to(image.dtype).clamp(0, 1)
    if not bool(weight.any()):
        return image
    levels = [(image * weight, weight)]
    while max(levels[-1][1].shape) > 1:
        premultiplied, level_weight = levels[-1]
        levels.append(
            (
                F.avg_pool2d(premultiplied[None], 2, ceil_mode=True)[0],
                F.avg_pool2d(level_weight[None, None], 2, ceil_mode=True)[0, 0],
            )
        )
    premultiplied, level_weight = levels[-1]
    filled = premultiplied / level_weight.clamp_min(1e-12)
    for premultiplied, level_weight in reversed(levels[:-1]):
        coarse = F.interpolate(filled[None], size=level_weight.shape, mode="bilinear", align_corners=False)[0]
        own = premultiplied / level_weight.clamp_min(1e-12)
        confidence = level_weight.clamp(0, 1)
        filled = confidence * own + (1 - confidence) * coarse
    return torch.where(weight >= 1, image, filled)
