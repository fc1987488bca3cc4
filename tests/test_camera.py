"""Camera maths: EG3D labels, look-at, yaw/pitch/roll signs and round trips, paths, JSON."""

import math

import pytest
import torch

from diffportrait3d.kernels.poses.camera import (
    EG3D_FOCAL,
    PIVOT_EG3D_FFHQ,
    CameraSet,
    cam2world_from_yaw_pitch,
    estimate_pivot,
    yaw_pitch_roll_from_cam2world,
)
from diffportrait3d.kernels.poses.camera_paths import (
    camera_path,
    interpolate_keyframes,
    official_orbit,
    parse_keyframes,
)
from diffportrait3d.kernels.poses.rasterizer import project_points


def test_frontal_camera_sits_on_plus_z_with_opencv_axes():
    cam2world = cam2world_from_yaw_pitch(0.0, 0.0)[0]
    # Hand-derived: camera at (0, 0, 2.7); image right = world +x, image down = world -y, view = world -z.
    expected = torch.tensor(
        [[1.0, 0.0, 0.0, 0.0], [0.0, -1.0, 0.0, 0.0], [0.0, 0.0, -1.0, 2.7], [0.0, 0.0, 0.0, 1.0]], dtype=torch.float64
    )
    torch.testing.assert_close(cam2world, expected, atol=1e-9, rtol=0)


def test_label_is_flattened_cam2world_then_normalised_intrinsics():
    label = CameraSet.from_yaw_pitch(0.3, -0.1).labels()[0]
    assert label.shape == (25,) and label.dtype == torch.float32
    cam2world = cam2world_from_yaw_pitch(0.3, -0.1)[0]
    torch.testing.assert_close(label[:16].double(), cam2world.reshape(16), atol=1e-6, rtol=0)
    torch.testing.assert_close(label[16:], torch.tensor([EG3D_FOCAL, 0, 0.5, 0, EG3D_FOCAL, 0.5, 0, 0, 1.0]))


def test_yaw_90_puts_camera_on_plus_x_looking_at_pivot():
    cam2world = cam2world_from_yaw_pitch(math.pi / 2, 0.0)[0]
    torch.testing.assert_close(cam2world[:3, 3], torch.tensor([2.7, 0.0, 0.0], dtype=torch.float64), atol=1e-9, rtol=0)
    torch.testing.assert_close(cam2world[:3, 2], torch.tensor([-1.0, 0.0, 0.0], dtype=torch.float64), atol=1e-9, rtol=0)
    torch.testing.assert_close(cam2world[:3, 0], torch.tensor([0.0, 0.0, -1.0], dtype=torch.float64), atol=1e-9, rtol=0)


def test_eg3d_vertical_offset_lifts_camera_by_arccos_mapping():
    # v = pi/2 - 0.05 -> cos(phi) = 1 - 2v/pi = 0.1/pi: the camera is 2.7 * 0.1/pi above the equator.
    cam2world = cam2world_from_yaw_pitch(0.0, -0.05)[0]
    assert cam2world[1, 3].item() == pytest.approx(2.7 * 0.1 / math.pi, abs=1e-9)
    assert cam2world[1, 2].item() < 0  # looking down toward the pivot


def test_eg3d_ffhq_pivot_is_on_every_viewing_axis():
    cameras = CameraSet.from_yaw_pitch(torch.tensor([-0.4, 0.0, 0.3]), torch.tensor([0.1, -0.2, 0.05]), pivot=PIVOT_EG3D_FFHQ)
    for cam2world in cameras.cam2world:
        to_pivot = torch.tensor(PIVOT_EG3D_FFHQ, dtype=torch.float64) - cam2world[:3, 3]
        assert torch.linalg.cross(to_pivot, cam2world[:3, 2]).norm().item() < 1e-9
    torch.testing.assert_close(estimate_pivot(cameras), torch.tensor(PIVOT_EG3D_FFHQ, dtype=torch.float64), atol=1e-9, rtol=0)


def test_positive_yaw_moves_the_nose_to_image_left():
    nose = torch.tensor([[0.0, 0.0, 0.25]])
    for yaw, side in ((0.4, -1), (-0.4, 1)):
        cameras = CameraSet.from_yaw_pitch(yaw, 0.0)
        u = project_points(nose, cameras.cam2world[0], cameras.intrinsics[0], 64, 64)[0, 0]
        assert side * (u.item() - 32) > 3


def test_negative_pitch_puts_the_camera_above_looking_down():
    above = CameraSet.from_yaw_pitch(0.0, -0.6)
    front = CameraSet.from_yaw_pitch(0.0, 0.0)
    assert above.cam2world[0, 1, 3] > 0 and above.cam2world[0, 1, 2] < 0
    nose = torch.tensor([[0.0, 0.0, 0.3]])
    v_front = project_points(nose, front.cam2world[0], front.intrinsics[0], 100, 100)[0, 1]
    v_above = project_points(nose, above.cam2world[0], above.intrinsics[0], 100, 100)[0, 1]
    assert abs(v_front.item() - 50) < 1e-3 and v_above > 55  # seen from above, the nose drops below the pivot


def test_positive_roll_turns_picture_content_counter_clockwise():
    right_point = torch.tensor([[0.1, 0.0, 0.0]])  # image right of centre in the frontal view
    plain = CameraSet.from_yaw_pitch(0.0, 0.0, 0.0)
    rolled = CameraSet.from_yaw_pitch(0.0, 0.0, 0.3)
    before = project_points(right_point, plain.cam2world[0], plain.intrinsics[0], 100, 100)[0]
    after = project_points(right_point, rolled.cam2world[0], rolled.intrinsics[0], 100, 100)[0]
    assert before[1].item() == pytest.approx(50.0, abs=1e-3)
    assert after[1].item() < 49  # a point on the right moves up: counter-clockwise on screen


def test_label_round_trip_recovers_yaw_pitch_roll():
    generator = torch.Generator().manual_seed(0)
    yaw = (torch.rand(64, generator=generator, dtype=torch.float64) * 2 - 1) * 3.1
    pitch = (torch.rand(64, generator=generator, dtype=torch.float64) * 2 - 1) * 1.4
    roll = (torch.rand(64, generator=generator, dtype=torch.float64) * 2 - 1) * 3.1
    cameras = CameraSet.from_yaw_pitch(yaw, pitch, roll, pivot=(0.0, 0.05, 0.2))
    recovered = CameraSet.from_labels(cameras.labels()).yaw_pitch_roll()
    torch.testing.assert_close(recovered, torch.stack([yaw, pitch, roll], -1), atol=2e-5, rtol=0)
    torch.testing.assert_close(yaw_pitch_roll_from_cam2world(cameras.cam2world), torch.stack([yaw, pitch, roll], -1), atol=1e-9, rtol=0)


def test_json_round_trip_and_bare_label_lists():
    cameras = camera_path("official16")
    again = CameraSet.from_json(cameras.to_json())
    torch.testing.assert_close(again.labels(), cameras.labels())
    bare = CameraSet.from_json(str(cameras.labels()[:2].tolist()))
    assert len(bare) == 2
    with pytest.raises(ValueError, match="25 numbers"):
        CameraSet.from_json("[[1, 2, 3]]")
    with pytest.raises(ValueError, match="does not parse"):
        CameraSet.from_json("{not json")


def test_official_orbit_is_a_closed_ellipse_of_16_evenly_spaced_views():
    a, b = 0.3, 0.2
    angles = official_orbit(a, b).yaw_pitch_roll()
    assert angles.shape == (16, 3)
    yaw, pitch = angles[:, 0], angles[:, 1] + 0.05
    torch.testing.assert_close((yaw / a) ** 2 + (pitch / b) ** 2, torch.ones(16, dtype=torch.float64), atol=1e-9, rtol=0)
    phase = torch.atan2(yaw / a, pitch / b)
    steps = torch.remainder(torch.diff(torch.cat([phase, phase[:1]])), 2 * math.pi)
    torch.testing.assert_close(steps, torch.full((16,), 2 * math.pi / 16, dtype=torch.float64), atol=1e-9, rtol=0)
    assert yaw[0].abs() < 1e-12 and pitch[0] == pytest.approx(b)  # view 0: h = pi/2, v = pi/2 - 0.05 + b


def test_other_presets():
    sweep = camera_path("yaw_sweep", views=5, yaw_min_deg=-40, yaw_max_deg=40, pitch_deg=-10).yaw_pitch_roll()
    torch.testing.assert_close(torch.rad2deg(sweep[:, 0]), torch.tensor([-40.0, -20, 0, 20, 40], dtype=torch.float64), atol=1e-9, rtol=0)
    torch.testing.assert_close(torch.rad2deg(sweep[:, 1]), torch.full((5,), -10.0, dtype=torch.float64), atol=1e-9, rtol=0)
    turn = camera_path("turntable360", views=8).yaw_pitch_roll()
    yaw_deg = torch.remainder(torch.rad2deg(turn[:, 0]), 360)
    torch.testing.assert_close(yaw_deg, torch.arange(8, dtype=torch.float64) * 45, atol=1e-7, rtol=0)
    keys = camera_path("keyframes", keyframes="10, 5, 2\n-10", interpolation="per_view").yaw_pitch_roll()
    torch.testing.assert_close(torch.rad2deg(keys), torch.tensor([[10.0, 5, 2], [-10, 0, 0]], dtype=torch.float64), atol=1e-7, rtol=0)
    with pytest.raises(ValueError, match="preset"):
        camera_path("spiral")


def test_sphere32_is_diffportrait360s_inference_cameras():
    """Hand-derived from the release's renderer call (see ``camera_paths.sphere32``): frame k looks at the origin
    from EG3D angles h = 3.14/2 + 2*3.14*k/32, v = 3.14/2 at radius 2.7, focal 4.2647."""
    cameras = camera_path("sphere32", views=5)  # the view count is fixed: 32
    assert len(cameras) == 32
    h = 3.14 / 2 + 2 * 3.14 * torch.arange(32, dtype=torch.float64) / 32
    phi = math.acos(1 - 2 * (3.14 / 2) / math.pi)
    origins = 2.7 * torch.stack([math.sin(phi) * torch.cos(math.pi - h), torch.full_like(h, math.cos(phi)), math.sin(phi) * torch.sin(math.pi - h)], -1)
    torch.testing.assert_close(cameras.cam2world[:, :3, 3], origins, atol=1e-12, rtol=0)
    torch.testing.assert_close(cameras.cam2world[:, :3, 2], -origins / 2.7, atol=1e-12, rtol=0)  # looking at (0, 0, 0)
    assert (cameras.cam2world[:, 1, 1] < -0.999).all()  # no roll: image down is world down
    torch.testing.assert_close(cameras.intrinsics, torch.tensor([[EG3D_FOCAL, 0, 0.5], [0, EG3D_FOCAL, 0.5], [0, 0, 1.0]], dtype=torch.float64).expand(32, 3, 3))
    yaw = torch.rad2deg(cameras.yaw_pitch_roll()[:, 0])
    assert abs(yaw[0]) < 0.05 and abs(yaw[16]) > 179.8  # frontal first, the back half-way
    assert yaw[18].item() == pytest.approx(2 * 3.14 * 18 / 32 * 180 / math.pi - 0.0456 - 360, abs=1e-3)  # -157.65: behind, to the right

    back = camera_path("sphere32_back", views=7)
    assert len(back) == 1 and torch.equal(back.labels(), cameras.labels()[18:19])
    assert back.cam2world[0, 2, 3] < -2.4  # behind the head (the face looks toward +z)
    moved = camera_path("sphere32", radius=4.0, focal=6.0, pivot=(0.0, 0.05, 0.0))
    assert moved.cam2world[:, :3, 3].norm(dim=-1).sub(4.0).abs().max() < 1e-12 and (moved.intrinsics[:, 0, 0] == 6.0).all()


def test_keyframe_parsing_and_interpolation():
    keys = parse_keyframes("0, 0  # front\n30 -5; 60,-10,4\n")
    assert keys.tolist() == [[0, 0, 0], [30, -5, 0], [60, -10, 4]]
    linear = interpolate_keyframes(keys, 5, "linear")
    torch.testing.assert_close(linear[:, 0], torch.tensor([0.0, 15, 30, 45, 60], dtype=torch.float64))
    smooth = interpolate_keyframes(keys, 9, "smooth")
    assert smooth[0, 0] == 0 and smooth[4, 0] == 30 and smooth[-1, 0] == 60
    assert 0 < smooth[1, 0] < 7.5  # a quarter of the way to key 1: linear would be at 7.5, smooth eases out slower
    with pytest.raises(ValueError, match="not numbers"):
        parse_keyframes("left, up")
    with pytest.raises(ValueError, match="no keyframe"):
        parse_keyframes("  # nothing\n")
