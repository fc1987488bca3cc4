"""Shaded renders of a triangle mesh from a :class:`CameraSet`: the condition images of mesh sources.

Shading is soft Lambert with a light fixed to the camera (from above, toward the subject) plus a
sky/ground ambient, symmetric left/right so a symmetric mesh gives mirror-image views at +/- yaw.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .camera import CameraSet
from .rasterizer import interpolate, project_points, rasterize, vertex_normals

_LIGHT_IN_CAMERA = torch.nn.functional.normalize(torch.tensor([0.0, -0.55, -1.0]), dim=0)


def shade(normals_camera: torch.Tensor) -> torch.Tensor:
    """Light factor [N] in about [0.3, 1.05] for unit normals in camera axes (OpenCV, facing the camera = -z)."""
    diffuse = (normals_camera @ _LIGHT_IN_CAMERA).clamp_min(0)
    sky = 0.5 - 0.5 * normals_camera[:, 1]  # 1 for normals pointing up (camera -y)
    return 0.28 + 0.12 * sky + 0.65 * diffuse


def render_mesh_views(
    vertices: torch.Tensor,
    faces: torch.Tensor,
    cameras: CameraSet,
    height: int,
    width: int,
    attributes: torch.Tensor,
    colour_of: Callable[[torch.Tensor], torch.Tensor] | None = None,
    background=(1.0, 1.0, 1.0),
    cull: str | None = "back",
    supersample: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Render every camera: ``(images [N, H, W, 3] float32 in [0, 1], masks [N, H, W] float32)``.

    ``attributes`` [V, C] are interpolated per pixel; ``colour_of`` maps them to albedo [P, 3]
    (default: the first three channels are the colour). ``supersample`` renders at that many times
    the size and averages down (anti-aliased edges).
    """
    if supersample < 1:
        raise ValueError(f"supersample must be >= 1, got {supersample}")
    colour_of = colour_of or (lambda values: values[:, :3].clamp(0, 1))
    big_h, big_w = height * supersample, width * supersample
    normals = vertex_normals(vertices.float(), faces)
    background = torch.as_tensor(background, dtype=torch.float32)
    images, masks = [], []
    for view in range(len(cameras)):
        cam2world = cameras.cam2world[view]
        screen = project_points(vertices, cam2world, cameras.intrinsics[view], big_h, big_w)
        fragments = rasterize(screen, faces, big_h, big_w, cull=cull)
        covered = fragments.mask.reshape(-1)
        image = background.expand(big_h * big_w, 3).clone()
        if covered.any():
            values = interpolate(fragments, torch.cat([attributes.float(), normals], -1)).reshape(big_h * big_w, -1)[covered]
            world_normals = torch.nn.functional.normalize(values[:, -3:], dim=-1)
            camera_normals = world_normals @ cam2world[:3, :3].float()
            lit = colour_of(values[:, :-3]) * shade(camera_normals).unsqueeze(-1)
            image[covered] = lit.clamp(0, 1)
        image = image.reshape(big_h, big_w, 3)
        mask = covered.float().reshape(big_h, big_w)
        if supersample > 1:
            image = torch.nn.functional.avg_pool2d(image.permute(2, 0, 1)[None], supersample)[0].permute(1, 2, 0)
            mask = torch.nn.functional.avg_pool2d(mask[None, None], supersample)[0, 0]
        images.append(image)
        masks.append(mask)
    return torch.stack(images), torch.stack(masks)
