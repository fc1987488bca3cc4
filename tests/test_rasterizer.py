"""Rasteriser: coverage against a brute-force reference, z-buffer occlusion, perspective-correct interpolation, culling."""

import torch

from diffportrait3d.kernels.poses.camera import CameraSet
from diffportrait3d.kernels.poses.rasterizer import interpolate, project_points, rasterize, vertex_normals


def brute_force_nearest(screen, faces, height, width):
    """Reference: for every pixel centre and every triangle, inside test and exact perspective depth."""
    v, u = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
    best_depth = torch.full((height, width), float("inf"), dtype=torch.float64)
    best = torch.full((height, width), -1, dtype=torch.long)
    s = screen.double()
    for index, (i, j, k) in enumerate(faces.tolist()):
        (ax, ay, az), (bx, by, bz), (cx, cy, cz) = s[i].tolist(), s[j].tolist(), s[k].tolist()
        area = (bx - ax) * (cy - ay) - (by - ay) * (cx - ax)
        if abs(area) < 1e-12:
            continue
        w0 = ((cx - bx) * (v - by) - (cy - by) * (u - bx)) / area
        w1 = ((ax - cx) * (v - cy) - (ay - cy) * (u - cx)) / area
        w2 = 1 - w0 - w1
        inside = (w0 >= 0) & (w1 >= 0) & (w2 >= 0)
        depth = 1.0 / (w0 / az + w1 / bz + w2 / cz)
        closer = inside & (depth < best_depth)
        best_depth = torch.where(closer, depth, best_depth)
        best = torch.where(closer, torch.full_like(best, index), best)
    return best, best_depth


def test_random_triangles_match_brute_force_reference():
    generator = torch.Generator().manual_seed(3)
    count, size = 40, 48
    screen = torch.cat([torch.rand(count * 3, 2, generator=generator) * 60 - 6, 1 + 4 * torch.rand(count * 3, 1, generator=generator)], 1)
    faces = torch.arange(count * 3).reshape(count, 3)
    fragments = rasterize(screen, faces, size, size)
    reference, reference_depth = brute_force_nearest(screen, faces, size, size)
    agree = (fragments.triangle_id == reference).float().mean().item()
    assert agree > 0.995  # only exact edge ties may differ
    both = (reference >= 0) & (fragments.triangle_id >= 0)
    torch.testing.assert_close(fragments.depth[both].double(), reference_depth[both], atol=1e-4, rtol=1e-4)
    assert torch.isinf(fragments.depth[~fragments.mask]).all()


def quad(x0, x1, y0, y1, z):
    vertices = torch.tensor([[x0, y0, z], [x1, y0, z], [x1, y1, z], [x0, y1, z]])
    return vertices, torch.tensor([[0, 1, 2], [0, 2, 3]])


def test_zbuffer_keeps_the_nearer_surface_whatever_the_drawing_order():
    far_v, far_f = quad(4, 28, 4, 28, 5.0)  # big square, far
    near_v, near_f = quad(10, 20, 10, 20, 2.0)  # small square in front
    for order in ("far_first", "near_first"):
        if order == "far_first":
            vertices, faces = torch.cat([far_v, near_v]), torch.cat([far_f, near_f + 4])
            near_ids = {2, 3}
        else:
            vertices, faces = torch.cat([near_v, far_v]), torch.cat([near_f, far_f + 4])
            near_ids = {0, 1}
        fragments = rasterize(vertices, faces, 32, 32)
        centre = fragments.triangle_id[10:20, 10:20]
        assert all(int(t) in near_ids for t in centre.flatten())
        torch.testing.assert_close(fragments.depth[10:20, 10:20], torch.full((10, 10), 2.0))
        ring = fragments.triangle_id[5:9, 5:27]
        assert all(int(t) not in near_ids for t in ring.flatten()) and (ring >= 0).all()
        assert not fragments.mask[:4].any() and not fragments.mask[:, 28:].any()


def test_interpolation_is_perspective_correct():
    # A slanted square in world space seen by the frontal EG3D camera: interpolating the world
    # position must give points that project back to each pixel centre and lie on the plane.
    cameras = CameraSet.from_yaw_pitch(0.0, 0.0)
    world = torch.tensor([[-0.2, -0.2, 0.3], [0.2, -0.2, -0.3], [0.2, 0.2, -0.3], [-0.2, 0.2, 0.3]])
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    screen = project_points(world, cameras.cam2world[0], cameras.intrinsics[0], 64, 64)
    fragments = rasterize(screen, faces, 64, 64)
    points = interpolate(fragments, world)[fragments.mask]
    reprojected = project_points(points, cameras.cam2world[0], cameras.intrinsics[0], 64, 64)
    rows, cols = fragments.mask.nonzero().unbind(1)
    torch.testing.assert_close(reprojected[:, 0], cols.float() + 0.5, atol=2e-3, rtol=0)
    torch.testing.assert_close(reprojected[:, 1], rows.float() + 0.5, atol=2e-3, rtol=0)
    torch.testing.assert_close(points[:, 2], -1.5 * points[:, 0], atol=1e-4, rtol=0)  # on the plane z = -1.5 x
    torch.testing.assert_close(reprojected[:, 2], fragments.depth[fragments.mask], atol=1e-4, rtol=1e-5)
    sums = fragments.barycentric[fragments.mask].sum(-1)
    torch.testing.assert_close(sums, torch.ones_like(sums))


def test_back_faces_are_culled_on_request():
    # Counter-clockwise seen from the camera in a y-up view is clockwise in (u right, v down) pixels.
    towards = torch.tensor([[4.0, 28.0, 2.0], [28.0, 28.0, 2.0], [16.0, 4.0, 2.0]])  # front face (outward CCW)
    faces = torch.tensor([[0, 1, 2]])
    assert rasterize(towards, faces, 32, 32, cull="back").mask.any()
    assert not rasterize(towards, faces, 32, 32, cull="front").mask.any()
    assert not rasterize(towards, faces.flip(1), 32, 32, cull="back").mask.any()
    assert rasterize(towards, faces.flip(1), 32, 32).mask.sum() == rasterize(towards, faces, 32, 32).mask.sum()


def test_triangles_behind_the_camera_are_dropped_and_normals_point_out():
    behind = torch.tensor([[4.0, 28.0, -1.0], [28.0, 28.0, -1.0], [16.0, 4.0, -1.0]])
    assert not rasterize(behind, torch.tensor([[0, 1, 2]]), 32, 32).mask.any()
    tetra = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]])
    faces = torch.tensor([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])  # counter-clockwise from outside
    normals = vertex_normals(tetra, faces)
    centre = tetra.mean(0)
    assert ((normals * (tetra - centre)).sum(-1) > 0).all()
