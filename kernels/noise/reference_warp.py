"""A frontal reference portrait re-rendered at other cameras through a proxy geometry (template head or depth relief).

Method (image space, per target view):

1. The proxy mesh is rasterised at the frontal camera (the camera the reference is assumed to be taken
   from); its depth map says which surface points the reference shows.
2. At the target camera the mesh is rasterised again; each covered pixel's surface point (perspective-
   correct interpolation of the vertex positions, exact on the triangle) is projected into the frontal
   camera. Where that point is the one the frontal depth map sees, the pixel takes the reference colour
   there (bilinear); otherwise it is unseen.
3. Unseen head pixels are filled smoothly from the seen head pixels of the same view (push-pull); pixels
   the head does not cover show a backdrop: the reference with the frontal head region filled smoothly
   from its surroundings.

At the frontal camera every covered pixel maps onto its own centre, so the reference comes back
unchanged (up to float rounding) inside and outside the head.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..poses.camera import CameraSet
from ..poses.rasterizer import interpolate, project_points, rasterize
from .hole_fill import fill_holes

# Depth slack (world units; the template head is about 0.4 tall) under which a surface point counts as
# the one the frontal view sees: absorbs the z-buffer's per-pixel quantisation on slanted surfaces.
DEPTH_SLACK = 0.015


@dataclass
class WarpedViews:
    """``images`` [V, H, W, 3] in [0, 1]; ``head`` [V, H, W] bool (the proxy covers the pixel);
    ``seen`` [V, H, W] bool (head pixels whose colour comes from the reference, the rest is filled)."""

    images: torch.Tensor
    head: torch.Tensor
    seen: torch.Tensor


def _sample(image_chw: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Bilinear samples [P, C] of ``image_chw`` [C, H, W] at pixel coordinates (centres at +0.5)."""
    height, width = image_chw.shape[-2:]
    grid = torch.stack([u / width * 2 - 1, v / height * 2 - 1], -1).view(1, 1, -1, 2)
    return F.grid_sample(image_chw[None], grid, mode="bilinear", padding_mode="border", align_corners=False)[0, :, 0].T


def warp_reference(
    reference: torch.Tensor,
    vertices: torch.Tensor,
    faces: torch.Tensor,
    cameras: CameraSet,
    frontal: CameraSet,
    depth_slack: float = DEPTH_SLACK,
) -> WarpedViews:
    """Re-render ``reference`` [R, H, W, 3] (R = 1 or one per camera, in [0, 1], seen by ``frontal``) at
    every camera of ``cameras`` through the mesh ``vertices`` [N, 3] / ``faces`` [F, 3] (world units)."""
    if reference.ndim != 4 or reference.shape[-1] != 3:
        raise ValueError(f"reference must be [R, H, W, 3], got {tuple(reference.shape)}")
    views = len(cameras)
    if reference.shape[0] not in (1, views):
        raise ValueError(f"reference has {reference.shape[0]} images for {views} views; give 1 or one per view")
    if len(frontal) != 1:
        raise ValueError("frontal must hold exactly one camera")
    _, height, width, _ = reference.shape
    vertices = vertices.float()
    frontal_screen = project_points(vertices, frontal.cam2world[0], frontal.intrinsics[0], height, width)
    frontal_fragments = rasterize(frontal_screen, faces, height, width, cull="back")
    frontal_depth = frontal_fragments.depth.reshape(-1)
    frontal_head = frontal_fragments.mask

    references = reference.permute(0, 3, 1, 2).float()  # [R, 3, H, W]
    # Head colours are sampled premultiplied by the frontal head mask, so no background bleeds in at the silhouette.
    head_weight = frontal_head.float()[None]
    backdrops, head_means = [], []
    for image in references:
        backdrops.append(fill_holes(image, ~frontal_head))
        head_means.append(image[:, frontal_head].mean(1) if frontal_head.any() else image.mean((1, 2)))

    images, heads, seens = [], [], []
    for view in range(views):
        which = view if references.shape[0] > 1 else 0
        fragments = rasterize(
            project_points(vertices, cameras.cam2world[view], cameras.intrinsics[view], height, width), faces, height, width, cull="back"
        )
        head = fragments.mask
        points = interpolate(fragments, vertices)[head]  # [P, 3] surface points of the covered pixels
        in_frontal = project_points(points, frontal.cam2world[0], frontal.intrinsics[0], height, width)
        column = torch.floor(in_frontal[:, 0]).long()
        row = torch.floor(in_frontal[:, 1]).long()
        inside = (column >= 0) & (column < width) & (row >= 0) & (row < height)
        visible_depth = torch.full_like(in_frontal[:, 2], float("inf"))
        visible_depth[inside] = frontal_depth[row[inside] * width + column[inside]]
        seen_points = inside & torch.isfinite(visible_depth) & (in_frontal[:, 2] <= visible_depth + depth_slack)

        premultiplied = _sample(torch.cat([references[which] * head_weight, head_weight]), in_frontal[:, 0], in_frontal[:, 1])
        coverage = premultiplied[:, 3:]
        seen_points &= coverage[:, 0] > 1e-3
        colours = premultiplied[:, :3] / coverage.clamp_min(1e-3)  # [P, 3]
        seen = torch.zeros(height, width, dtype=torch.bool)
        seen[head] = seen_points
        head_colour = torch.zeros(3, height, width)
        head_colour[:, head] = colours.T
        if seen.any():
            head_colour = fill_holes(head_colour, seen)
        else:
            head_colour[:] = head_means[which].view(3, 1, 1)
        image = torch.where(head, head_colour, backdrops[which])
        images.append(image.permute(1, 2, 0).clamp(0, 1))
        heads.append(head)
        seens.append(seen)
    return WarpedViews(torch.stack(images), torch.stack(heads), torch.stack(seens))
