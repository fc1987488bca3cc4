"""Other condition sources (OBJ, depth relief, driving frames) and output helpers (PNG, grid)."""

import struct
import zlib

import pytest
import torch

from diffportrait3d.cli.png_writer import encode_png
from diffportrait3d.kernels.image_grid import image_grid
from diffportrait3d.kernels.poses.camera import CameraSet, frontal_camera_like
from diffportrait3d.kernels.poses.depth_mesh import depth_relief_mesh
from diffportrait3d.kernels.poses.driving_frames import (
    HeadBox,
    assign_frames,
    estimate_foreground,
    head_box,
    linear_sweep_angles,
    reframe,
)
from diffportrait3d.kernels.poses.mesh_render import render_mesh_views
from diffportrait3d.kernels.poses.obj_mesh import fit_to_head_frame, parse_obj

CUBE_OBJ = """# unit cube, quads, counter-clockwise from outside
v -1 -1 -1 1 0 0
v 1 -1 -1 1 0 0
v 1 1 -1 1 0 0
v -1 1 -1 1 0 0
v -1 -1 1 0 0 1
v 1 -1 1 0 0 1
v 1 1 1 0 0 1
v -1 1 1 0 0 1
f 5/1/1 6/2/1 7/3/1 8/4/1
f 1 4 3 2
f 1 5 8 4
f 2 3 7 6
f 4 8 7 3
f -8 -7 -3 -4
"""


def test_obj_parsing_triangulates_polygons_and_reads_colours():
    vertices, faces, colours = parse_obj(CUBE_OBJ)
    assert vertices.shape == (8, 3) and faces.shape == (12, 3) and colours.shape == (8, 3)
    assert faces[0].tolist() == [4, 5, 6] and faces[1].tolist() == [4, 6, 7]
    assert faces[-2].tolist() == [0, 1, 5]  # negative indices count back from the last vertex
    with pytest.raises(ValueError, match="does not exist"):
        parse_obj("v 0 0 0\nf 1 2 3\n")
    with pytest.raises(ValueError, match="no vertices"):
        parse_obj("# empty\n")


def test_rendered_obj_cube_shows_its_front_colour_and_fits_the_frame():
    vertices, faces, colours = parse_obj(CUBE_OBJ)
    fitted = fit_to_head_frame(vertices, top_y=0.2, width=0.3)
    assert fitted[:, 1].max().item() == pytest.approx(0.2) and (fitted[:, 0].amax() - fitted[:, 0].amin()).item() == pytest.approx(0.3)
    images, masks = render_mesh_views(fitted, faces, CameraSet.from_yaw_pitch(0.0, 0.0), 64, 64, colours, cull="back")
    covered = images[0][masks[0] > 0]
    assert covered.shape[0] > 300
    assert (covered[:, 2] > covered[:, 0]).all()  # the +z face (blue vertices) faces the frontal camera


def test_depth_relief_rerenders_its_own_silhouette_from_the_front():
    size = 64
    v, u = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    disc = (u**2 + (v / 1.3) ** 2) < 0.4
    depth = torch.where(disc, torch.sqrt((1 - u**2 - v**2).clamp_min(0)) * 0.6 + 0.4, torch.zeros(()))
    cameras = CameraSet.from_yaw_pitch(torch.tensor([0.0, 0.5]), torch.tensor([0.0, 0.0]))
    vertices, faces, colours = depth_relief_mesh(depth, frontal_camera_like(cameras), max_grid=64)
    images, masks = render_mesh_views(vertices, faces, cameras, size, size, colours, cull=None)
    overlap = (masks[0].bool() & disc).sum() / (masks[0].bool() | disc).sum()
    assert overlap > 0.85
    assert not torch.equal(masks[0], masks[1])  # the turned view shows a different outline


def synthetic_frames(count=5, height=96, width=80):
    """A grey 'head' disc on a green background, drifting right and growing slightly."""
    frames = torch.zeros(count, height, width, 3)
    frames[..., 1] = 0.8
    v, u = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
    for index in range(count):
        centre_x = 30 + 4 * index
        inside = ((u - centre_x) / 14) ** 2 + ((v - 45) / 18) ** 2 < 1
        frames[index][inside] = torch.tensor([0.6, 0.5, 0.45])
    return frames


def test_driving_frames_are_found_assigned_and_reframed():
    frames = synthetic_frames()
    masks = estimate_foreground(frames)
    box = head_box(masks[0])
    assert box.crown == pytest.approx(27, abs=1) and box.centre == pytest.approx(30, abs=1) and box.width == pytest.approx(28, abs=2)
    angles = linear_sweep_angles(5, -40, 40)
    chosen = assign_frames(angles, torch.tensor([[38.0, 0.0], [-41.0, 3.0], [1.0, 0.0]]))
    assert chosen.tolist() == [4, 0, 2]
    target = HeadBox(crown=10.0, centre=32.0, width=30.0)
    images, out_masks = reframe(frames, masks, 64, target, background=(1.0, 1.0, 1.0))
    assert images.shape == (5, 64, 64, 3) and out_masks.shape == (5, 64, 64)
    for mask in out_masks:
        placed = head_box(mask)
        assert placed.crown == pytest.approx(10, abs=1.5) and placed.centre == pytest.approx(32, abs=1.5)
        assert placed.width == pytest.approx(30, abs=3)
    torch.testing.assert_close(images[0, 0, 0], torch.ones(3))  # background replaced


def decode_png(data: bytes):
    """Independent reader for the filter-0, 8-bit PNGs the writer makes."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    position, chunks = 8, {}
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind = data[position + 4 : position + 8]
        payload = data[position + 8 : position + 8 + length]
        (crc,) = struct.unpack(">I", data[position + 8 + length : position + 12 + length])
        assert crc == zlib.crc32(kind + payload) & 0xFFFFFFFF
        chunks[kind] = chunks.get(kind, b"") + payload
        position += 12 + length
    width, height, depth, colour_type = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    channels = 3 if colour_type == 2 else 1
    raw = zlib.decompress(chunks[b"IDAT"])
    stride = width * channels + 1
    assert all(raw[row * stride] == 0 for row in range(height))
    pixels = [raw[row * stride + 1 : (row + 1) * stride] for row in range(height)]
    return width, height, channels, torch.tensor([list(p) for p in pixels], dtype=torch.uint8)


def test_png_writer_round_trips_pixels():
    image = torch.rand(5, 7, 3, generator=torch.Generator().manual_seed(1))
    width, height, channels, pixels = decode_png(encode_png(image))
    assert (width, height, channels) == (7, 5, 3)
    assert torch.equal(pixels.reshape(5, 7, 3), (image * 255).round().to(torch.uint8))
    _, _, grey_channels, grey = decode_png(encode_png(torch.full((2, 3), 0.5)))
    assert grey_channels == 1 and (grey == 128).all()


def test_image_grid_places_tiles_row_by_row():
    tiles = torch.stack([torch.full((4, 6, 3), value) for value in (0.1, 0.2, 0.3)])
    grid = image_grid(tiles, columns=2, gap=1, gap_colour=(1.0, 1.0, 1.0))
    assert grid.shape == (1, 9, 13, 3)
    assert grid[0, 0, 0, 0] == pytest.approx(0.1) and grid[0, 0, 7, 0] == pytest.approx(0.2)
    assert grid[0, 5, 0, 0] == pytest.approx(0.3) and grid[0, 5, 7, 0] == 1.0 and grid[0, 4, 0, 0] == 1.0
