"""Template head renders: image contract, framing, yaw direction measured in pixels, mirror symmetry, looks."""

import math

import pytest
import torch

from diffportrait3d.kernels.poses.camera import CameraSet
from diffportrait3d.kernels.poses.head_template import (
    HeadLook,
    parse_hex_colour,
    render_template_head,
    template_head_mesh,
)
from diffportrait3d.kernels.poses.rasterizer import interpolate, project_points, rasterize

NOSE_TIP = torch.nn.functional.normalize(torch.tensor([0.0, math.sin(-0.36), math.cos(-0.36)]), dim=0)


def test_images_and_masks_follow_comfy_conventions():
    cameras = CameraSet.from_yaw_pitch(torch.tensor([0.0, 0.5]), torch.tensor([-0.05, 0.1]))
    images, masks = render_template_head(cameras, 64, 64, background=(0.2, 0.4, 0.6))
    assert images.shape == (2, 64, 64, 3) and images.dtype == torch.float32
    assert masks.shape == (2, 64, 64) and masks.dtype == torch.float32
    assert images.min() >= 0 and images.max() <= 1 and set(masks.unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(images[:, 0, 0], torch.tensor([[0.2, 0.4, 0.6]] * 2))
    assert 0.15 < masks.mean() < 0.7  # a head, not an empty or a full frame
    assert (images[masks == 0] == torch.tensor([0.2, 0.4, 0.6])).all()


def test_frontal_framing_matches_the_official_condition_layout():
    size = 128
    images, masks = render_template_head(CameraSet.from_yaw_pitch(0.0, 0.0), size, size)
    rows = masks[0].sum(1).nonzero().squeeze(1)
    crown = rows[0].item() / size
    head_rows = masks[0][: int(0.55 * size)]
    width = head_rows.sum(1).max().item() / size
    columns = masks[0].nonzero()[:, 1].float()
    assert 0.04 < crown < 0.16  # the crown is near the top of the frame
    assert 0.38 < width < 0.62  # about half the frame wide
    assert abs(columns.mean().item() / size - 0.5) < 0.02  # centred
    assert masks[0][-1].any()  # the neck reaches the bottom edge


def nose_tip_pixel(yaw: float, size: int = 96):
    """Pixel (column, row) where the rendered surface's canonical direction is closest to the nose tip."""
    mesh = template_head_mesh()
    cameras = CameraSet.from_yaw_pitch(yaw, 0.0)
    screen = project_points(mesh.vertices, cameras.cam2world[0], cameras.intrinsics[0], size, size)
    fragments = rasterize(screen, mesh.faces, size, size, cull="back")
    directions = torch.nn.functional.normalize(interpolate(fragments, mesh.attributes[:, :3]), dim=-1)
    closeness = (directions @ NOSE_TIP).masked_fill(~fragments.mask, -2)
    row, column = divmod(int(closeness.argmax()), size)
    return column, row


def test_the_rendered_nose_moves_to_image_left_for_positive_yaw():
    centre_column, centre_row = nose_tip_pixel(0.0)
    left_column, _ = nose_tip_pixel(0.4)
    right_column, _ = nose_tip_pixel(-0.4)
    assert abs(centre_column - 48) <= 1
    assert 48 < centre_row < 72  # nose tip below the image centre, eyes above
    assert left_column < centre_column - 8 and right_column > centre_column + 8


def test_views_at_plus_and_minus_yaw_are_mirror_images():
    cameras = CameraSet.from_yaw_pitch(torch.tensor([0.45, -0.45]), torch.tensor([-0.1, -0.1]))
    images, masks = render_template_head(cameras, 96, 96)
    mirrored_image, mirrored_mask = images[1].flip(1), masks[1].flip(1)
    intersection = (masks[0] * mirrored_mask).sum()
    union = ((masks[0] + mirrored_mask) > 0).float().sum()
    assert intersection / union > 0.985
    assert (images[0] - mirrored_image).abs().mean() < 0.01
    assert (images[0] - images[1]).abs().mean() > 0.05  # and they are not simply the same picture


def test_look_parameters_change_the_picture():
    camera = CameraSet.from_yaw_pitch(0.0, 0.0)
    plain, plain_mask = render_template_head(camera, 64, 64)
    red_hair, _ = render_template_head(camera, 64, 64, HeadLook(hair=(0.8, 0.1, 0.1)))
    top_of_head = plain_mask[0, :14].bool()
    assert red_hair[0, :14][top_of_head][:, 0].mean() > plain[0, :14][top_of_head][:, 0].mean() + 0.2
    _, big_hair_mask = render_template_head(camera, 64, 64, HeadLook(hair_volume_cm=4.0))
    assert big_hair_mask.sum() > plain_mask.sum() * 1.05
    _, small_mask = render_template_head(camera, 64, 64, HeadLook(head_scale=0.8))
    assert small_mask.sum() < plain_mask.sum() * 0.8


def test_supersampling_softens_edges_only():
    camera = CameraSet.from_yaw_pitch(0.2, 0.0)
    _, hard = render_template_head(camera, 48, 48)
    _, soft = render_template_head(camera, 48, 48, supersample=2)
    fractional = ((soft > 0) & (soft < 1)).float().sum()
    assert fractional > 20
    assert ((soft - hard).abs() > 0.5).float().mean() < 0.03


def test_hex_colours_are_parsed_and_a_bad_one_names_its_input():
    assert parse_hex_colour("#ff8000", "skin") == (1.0, 128 / 255, 0.0)
    assert parse_hex_colour(" 33241A ", "--hair") == (0x33 / 255, 0x24 / 255, 0x1A / 255)
    for bad in ("#fff", "#ff800", "#gg0000", "##ff8000", ""):
        with pytest.raises(ValueError, match=r"^--background: '.*' is not a colour; write it as #rrggbb"):
            parse_hex_colour(bad, "--background")
