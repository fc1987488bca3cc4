"""Pure-torch triangle rasteriser with a z-buffer and perspective-correct barycentrics.

Pipeline: :func:`project_points` (world -> pixel coordinates + camera depth), :func:`rasterize`
(-> :class:`Fragments`: per-pixel triangle id, barycentrics, depth), :func:`interpolate` (any
per-vertex attribute -> per-pixel values). Pixel ``(row i, column j)`` has its centre at
``(u, v) = (j + 0.5, i + 0.5)``; ``u`` grows right, ``v`` grows down (OpenCV).

Method: every triangle enumerates the pixel centres of its bounding box, keeps those inside, and
the nearest candidate per pixel wins through ``scatter_reduce('amax')`` on inverse depth (which is
affine in screen space, so it is exact per pixel). Cost grows with the covered area, not with
pixels x triangles.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Fragments:
    """What covers each pixel of one view.

    ``triangle_id`` [H, W] int64 (-1 where empty), ``barycentric`` [H, W, 3] float32 perspective-correct
    weights of the triangle's three vertices (0 where empty), ``depth`` [H, W] float32 camera-space z
    (``inf`` where empty).
    """

    triangle_id: torch.Tensor
    barycentric: torch.Tensor
    depth: torch.Tensor
    faces: torch.Tensor

    @property
    def mask(self) -> torch.Tensor:
        """[H, W] bool: pixels covered by a triangle."""
        return self.triangle_id >= 0


def project_points(points: torch.Tensor, cam2world: torch.Tensor, intrinsics: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """World points [V, 3] -> [V, 3] float32 ``(u, v, z)``: pixel coordinates and camera-space depth.

    ``cam2world`` [4, 4] OpenCV axes, ``intrinsics`` [3, 3] normalised by the image size (EG3D style).
    """
    cam2world = cam2world.to(torch.float64)
    world2cam = torch.linalg.inv(cam2world)
    camera = points.to(torch.float64) @ world2cam[:3, :3].T + world2cam[:3, 3]
    z = camera[:, 2]
    safe_z = torch.where(z.abs() < 1e-9, torch.full_like(z, 1e-9), z)
    k = intrinsics.to(torch.float64)
    u = (k[0, 0] * camera[:, 0] / safe_z + k[0, 1] * camera[:, 1] / safe_z + k[0, 2]) * width
    v = (k[1, 1] * camera[:, 1] / safe_z + k[1, 2]) * height
    return torch.stack([u, v, z], dim=-1).float()


def _plane_coefficients(screen: torch.Tensor, faces: torch.Tensor):
    """Per triangle: barycentric planes [F, 3, 3] (w_k = a u + b v + c) and signed doubled area [F]."""
    a, b, c = screen[faces[:, 0], :2], screen[faces[:, 1], :2], screen[faces[:, 2], :2]
    area = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    planes = []
    for start, end in ((b, c), (c, a), (a, b)):
        # Edge function of the edge opposite each vertex, scaled so it is 1 at that vertex.
        coef_u = -(end[:, 1] - start[:, 1])
        coef_v = end[:, 0] - start[:, 0]
        const = -(coef_u * start[:, 0] + coef_v * start[:, 1])
        planes.append(torch.stack([coef_u, coef_v, const], dim=-1))
    safe_area = torch.where(area.abs() < 1e-12, torch.ones_like(area), area)
    return torch.stack(planes, dim=1) / safe_area[:, None, None], area


def rasterize(
    screen: torch.Tensor, faces: torch.Tensor, height: int, width: int, cull: str | None = None, near: float = 1e-3
) -> Fragments:
    """Rasterise triangles given in screen space.

    ``screen`` [V, 3] = ``(u, v, z)`` from :func:`project_points`; ``faces`` [F, 3] int64 vertex indices.
    ``cull``: None keeps both sides; ``"back"`` drops triangles whose vertices run clockwise as seen by
    the camera (counter-clockwise seen from outside = front, the OBJ convention); ``"front"`` the other
    way. Triangles with a vertex closer than ``near`` are dropped (no clipping).
    """
    screen = screen.float()
    faces = faces.long()
    planes, area = _plane_coefficients(screen, faces)
    face_z = screen[faces, 2]
    keep = (face_z > near).all(dim=1) & (area.abs() > 1e-12)
    # In (u right, v down) pixel space an outward counter-clockwise triangle has negative doubled area.
    if cull == "back":
        keep &= area < 0
    elif cull == "front":
        keep &= area > 0
    elif cull is not None:
        raise ValueError(f"cull must be None, 'back' or 'front', got {cull!r}")

    face_index = keep.nonzero().squeeze(1)
    corners = screen[faces[face_index], :2]
    u_first = torch.ceil(corners[..., 0].amin(1) - 0.5).clamp(0, width).long()
    u_last = torch.floor(corners[..., 0].amax(1) - 0.5).clamp(-1, width - 1).long()
    v_first = torch.ceil(corners[..., 1].amin(1) - 0.5).clamp(0, height).long()
    v_last = torch.floor(corners[..., 1].amax(1) - 0.5).clamp(-1, height - 1).long()
    box_width = (u_last - u_first + 1).clamp_min(0)
    box_count = box_width * (v_last - v_first + 1).clamp_min(0)
    nonempty = box_count > 0
    face_index, u_first, v_first = face_index[nonempty], u_first[nonempty], v_first[nonempty]
    box_width, box_count = box_width[nonempty], box_count[nonempty]

    # Inverse depth is affine in screen space: 1/z = sum_k w_k / z_k.
    face_planes = planes[face_index]
    inv_depth_plane = (face_planes * (1.0 / face_z[face_index]).unsqueeze(-1)).sum(1)
    coefficients = torch.cat([face_planes[:, :2].reshape(-1, 6), inv_depth_plane], dim=1)

    owner = torch.repeat_interleave(torch.arange(face_index.shape[0]), box_count)
    offset = (torch.arange(owner.shape[0]) - (torch.cumsum(box_count, 0) - box_count).index_select(0, owner)).float()
    width_of_owner = box_width.float().index_select(0, owner)
    row_in_box = torch.floor(offset / width_of_owner)  # exact: small integers in float32
    centre_u = u_first.float().index_select(0, owner) + (offset - row_in_box * width_of_owner) + 0.5
    centre_v = v_first.float().index_select(0, owner) + row_in_box + 0.5
    coef = coefficients.index_select(0, owner)
    w0 = coef[:, 0] * centre_u + coef[:, 1] * centre_v + coef[:, 2]
    w1 = coef[:, 3] * centre_u + coef[:, 4] * centre_v + coef[:, 5]
    inside = ((w0 >= -1e-6) & (w1 >= -1e-6) & (w0 + w1 <= 1 + 1e-6)).nonzero().squeeze(1)
    owner = owner.index_select(0, inside)
    centre_u, centre_v, coef = centre_u.index_select(0, inside), centre_v.index_select(0, inside), coef.index_select(0, inside)
    pixel = (centre_v - 0.5).long() * width + (centre_u - 0.5).long()
    inv_depth = coef[:, 6] * centre_u + coef[:, 7] * centre_v + coef[:, 8]

    nearest = torch.full((height * width,), float("-inf"))
    nearest.scatter_reduce_(0, pixel, inv_depth, reduce="amax")
    wins = (inv_depth >= nearest.index_select(0, pixel)).nonzero().squeeze(1)
    winner = torch.full((height * width,), -1, dtype=torch.long)
    winner.scatter_reduce_(0, pixel.index_select(0, wins), face_index.index_select(0, owner.index_select(0, wins)), reduce="amax")

    covered = winner >= 0
    triangle_id = winner.reshape(height, width)
    barycentric = torch.zeros(height * width, 3)
    depth = torch.full((height * width,), float("inf"))
    if covered.any():
        pixel_ids = covered.nonzero().squeeze(1)
        tri = winner[pixel_ids]
        uv = torch.stack([(pixel_ids % width).float() + 0.5, torch.div(pixel_ids, width, rounding_mode="floor").float() + 0.5, torch.ones(pixel_ids.shape[0])], -1)
        screen_weights = (planes[tri] * uv[:, None, :]).sum(-1).clamp_min(0)
        perspective = screen_weights / face_z[tri]
        inverse = perspective.sum(-1, keepdim=True)
        barycentric[pixel_ids] = perspective / inverse
        depth[pixel_ids] = 1.0 / inverse.squeeze(-1)
    return Fragments(triangle_id, barycentric.reshape(height, width, 3), depth.reshape(height, width), faces)


def interpolate(fragments: Fragments, attributes: torch.Tensor) -> torch.Tensor:
    """Per-vertex ``attributes`` [V, C] -> per-pixel [H, W, C] (perspective-correct; 0 where empty)."""
    height, width = fragments.triangle_id.shape
    out = torch.zeros(height * width, attributes.shape[-1], dtype=attributes.dtype)
    ids = fragments.triangle_id.reshape(-1)
    covered = (ids >= 0).nonzero().squeeze(1)
    if covered.numel():
        corner_values = attributes[fragments.faces[ids[covered]]]
        weights = fragments.barycentric.reshape(-1, 3)[covered].to(attributes.dtype)
        out[covered] = (corner_values * weights.unsqueeze(-1)).sum(1)
    return out.reshape(height, width, -1)


def vertex_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Area-weighted unit vertex normals [V, 3] (outward for counter-clockwise-from-outside faces)."""
    a, b, c = vertices[faces[:, 0]], vertices[faces[:, 1]], vertices[faces[:, 2]]
    face_normals = torch.cross(b - a, c - a, dim=-1)
    normals = torch.zeros_like(vertices)
    for corner in range(3):
        normals.index_add_(0, faces[:, corner], face_normals)
    return torch.nn.functional.normalize(normals, dim=-1, eps=1e-12)
