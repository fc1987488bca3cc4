"""A relief mesh from a depth map: the depth image seen by the frontal camera, re-rendered at other views."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .camera import CameraSet


def depth_relief_mesh(
    depth: torch.Tensor,
    frontal: CameraSet,
    colour: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    relief: float = 0.35,
    background_below: float = 0.08,
    max_grid: int = 192,
    max_jump: float = 0.15,
):
    """``(vertices [V, 3], faces [F, 3], colours [V, 3])`` of a grid surface from a depth map.

    ``depth`` [H, W] in [0, 1], larger = nearer (MiDaS / Depth Anything style). Each grid point is
    pushed along the ray of the single camera ``frontal`` to distance ``radius - relief * (d - 0.5)``
    (``relief`` in world units, about the depth of a face). Points with depth below
    ``background_below`` (or outside ``mask`` [H, W]) are dropped, as are triangles across depth jumps
    larger than ``max_jump * relief``. ``colour`` [H, W, 3] paints the surface (grey when None).
    """
    if len(frontal) != 1:
        raise ValueError("depth_relief_mesh takes exactly one frontal camera")
    height, width = depth.shape
    scale = min(1.0, max_grid / max(height, width))
    rows, cols = max(2, round(height * scale)), max(2, round(width * scale))

    def resample(image):
        return F.interpolate(image.permute(2, 0, 1)[None].float(), size=(rows, cols), mode="area")[0].permute(1, 2, 0)

    d = resample(depth[..., None])[..., 0].clamp(0, 1)
    keep = d > background_below
    if mask is not None:
        keep &= resample(mask[..., None].float())[..., 0] > 0.5
    colours = resample(colour[..., :3]) if colour is not None else torch.full((rows, cols, 3), 0.75)

    cam2world = frontal.cam2world[0].float()
    k = frontal.intrinsics[0].float()
    v, u = torch.meshgrid((torch.arange(rows) + 0.5) / rows, (torch.arange(cols) + 0.5) / cols, indexing="ij")
    radius = float(cam2world[:3, 3].norm())
    distance = radius - relief * (d - 0.5)
    camera_points = torch.stack([(u - k[0, 2]) / k[0, 0] * distance, (v - k[1, 2]) / k[1, 1] * distance, distance], -1)
    vertices = camera_points.reshape(-1, 3) @ cam2world[:3, :3].T + cam2world[:3, 3]

    index = torch.arange(rows * cols).reshape(rows, cols)
    a, b, c, e = index[:-1, :-1], index[:-1, 1:], index[1:, :-1], index[1:, 1:]
    # Counter-clockwise as the frontal camera sees them (v grows down in the image).
    faces = torch.cat([torch.stack([a, c, b], -1).reshape(-1, 3), torch.stack([b, c, e], -1).reshape(-1, 3)])
    flat_keep, flat_d = keep.reshape(-1), d.reshape(-1)
    corner_d = flat_d[faces]
    valid = flat_keep[faces].all(1) & ((corner_d.amax(1) - corner_d.amin(1)) <= max_jump)
    return vertices, faces[valid], colours.reshape(-1, 3)
