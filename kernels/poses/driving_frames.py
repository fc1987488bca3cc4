"""Driving frames: pick, for every target camera, the video frame whose head pose is closest, and
re-frame it so the head sits where the official condition renders put it.

Head placement is measured on a foreground mask (given, or estimated as "differs from the border
colour"): the crown is the first row with foreground, the centre and width come from the rows just
below it. One scale is used for the whole batch (a person does not change size when turning).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class HeadBox:
    """Head placement in a mask, in pixels: crown row, horizontal centre and head width."""

    crown: float
    centre: float
    width: float


def linear_sweep_angles(frames: int, yaw_start_deg: float, yaw_end_deg: float, pitch_deg: float = 0.0) -> torch.Tensor:
    """[frames, 2] (yaw, pitch) degrees for a head turning at constant speed from start to end yaw."""
    yaw = torch.linspace(yaw_start_deg, yaw_end_deg, frames, dtype=torch.float64)
    return torch.stack([yaw, torch.full_like(yaw, pitch_deg)], -1)


MAX_POSE_GAP_DEG = 60.0  # a frame farther than this from a camera's pose shows another side of the head


def pose_distances(frame_angles: torch.Tensor, camera_angles: torch.Tensor) -> torch.Tensor:
    """[N, F] distance in degrees between camera and frame (yaw, pitch); yaw differences wrap around
    (yaw 179 and -179 are 2 degrees apart). Angles [F, 2] and [N, 2] in degrees."""
    difference = camera_angles.double()[:, None, :] - frame_angles.double()[None, :, :]
    yaw = torch.remainder(difference[..., 0] + 180.0, 360.0) - 180.0
    return torch.stack([yaw, difference[..., 1]], -1).norm(dim=-1)


def assign_frames(frame_angles: torch.Tensor, camera_angles: torch.Tensor) -> torch.Tensor:
    """[N] index of the frame nearest (:func:`pose_distances`) to each camera; angles [F, 2] and [N, 2], degrees."""
    return pose_distances(frame_angles, camera_angles).argmin(dim=1)


def estimate_foreground(frames: torch.Tensor, threshold: float = 0.12) -> torch.Tensor:
    """[B, H, W] float mask of pixels whose colour differs from the frame's median border colour by more than ``threshold``."""
    border = torch.cat([frames[:, 0], frames[:, -1], frames[:, :, 0], frames[:, :, -1]], dim=1)
    background = border.median(dim=1).values
    difference = (frames - background[:, None, None, :]).abs().amax(-1)
    return (difference > threshold).float()


def head_box(mask: torch.Tensor, min_row_fraction: float = 0.01) -> HeadBox | None:
    """Head placement in one [H, W] mask (None when the mask is empty).

    The head band starts at the first row covering more than ``min_row_fraction`` of the width and is
    ~0.8 head widths tall; the width is the 90th percentile of row widths in that band.
    """
    covered = mask > 0.5
    row_counts = covered.sum(1).float()
    rows = (row_counts > min_row_fraction * mask.shape[1]).nonzero().squeeze(1)
    if rows.numel() == 0:
        return None
    crown = int(rows[0])
    band = max(4, int(0.3 * mask.shape[0]))
    for _ in range(3):
        counts = row_counts[crown : crown + band]
        width = float(torch.quantile(counts, 0.9))
        band = max(4, int(0.8 * width))
    columns = torch.arange(mask.shape[1], dtype=torch.float32)
    band_mask = covered[crown : crown + band].float()
    centre = float((band_mask * columns).sum() / band_mask.sum().clamp_min(1))
    return HeadBox(float(crown), centre, width)


def reframe(
    frames: torch.Tensor,
    masks: torch.Tensor,
    size: int,
    target: HeadBox,
    background=(1.0, 1.0, 1.0),
) -> tuple[torch.Tensor, torch.Tensor]:
    """Resample frames [B, H, W, 3] and masks [B, H, W] to [B, size, size(, 3)] so each head lands on ``target``.

    ``target`` is in output pixels. Background pixels (mask 0) and pixels from outside the frame take
    ``background``.
    """
    boxes = [head_box(m) for m in masks]
    widths = [b.width for b in boxes if b is not None]
    if not widths:
        raise ValueError("driving frames: no head found in any frame; give a mask or use a plain background")
    scale = target.width / float(torch.tensor(widths).median())  # output pixels per input pixel
    batch, height, width = masks.shape
    fill = torch.as_tensor(background, dtype=frames.dtype)
    out_images, out_masks = [], []
    for index in range(batch):
        box = boxes[index] or HeadBox(target.crown / scale, width / 2, target.width / scale)
        # Output pixel (x, y) samples input pixel ((x - target.centre) / scale + box.centre, ...).
        ys, xs = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
        src_x = (xs - target.centre) / scale + box.centre
        src_y = (ys - target.crown) / scale + box.crown
        grid = torch.stack([src_x / width * 2 - 1, src_y / height * 2 - 1], -1)[None].to(frames.dtype)
        stacked = torch.cat([frames[index], masks[index][..., None]], -1).permute(2, 0, 1)[None]
        sampled = F.grid_sample(stacked, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0].permute(1, 2, 0)
        alpha = sampled[..., 3:].clamp(0, 1)
        out_images.append(sampled[..., :3] * alpha + fill * (1 - alpha))
        out_masks.append(alpha[..., 0])
    return torch.stack(out_images).clamp(0, 1), torch.stack(out_masks)


def official_head_box(size: int) -> HeadBox:
    """Where the template head sits in a frontal ``size`` x ``size`` condition image (the official framing)."""
    from .camera_paths import camera_path
    from .head_template import render_template_head

    measure = 256
    _, masks = render_template_head(camera_path("keyframes", keyframes="0, 0"), measure, measure)
    box = head_box(masks[0])
    factor = size / measure
    return HeadBox(box.crown * factor, box.centre * factor, box.width * factor)
