"""Camera checks where cameras enter the pack (kernels/poses/camera_validation.py), keyframe and OBJ parsing,
and file names confined to one folder (kernels/input_files.py)."""

import json
import math
import os

import pytest
import torch

from diffportrait3d.kernels.input_files import file_in_folder
from diffportrait3d.kernels.poses.camera import PIVOTS, CameraSet, estimate_pivot, frontal_camera_like
from diffportrait3d.kernels.poses.camera_paths import PRESETS, camera_path, official_orbit, parse_keyframes
from diffportrait3d.kernels.poses.camera_validation import (
    MAX_VIEWS,
    ROTATION_TOLERANCE,
    CameraError,
    check_camera_set,
    labels_from_document,
)
from diffportrait3d.kernels.poses.obj_mesh import parse_obj
from diffportrait3d.kernels.poses.rasterizer import project_points

FRONTAL = [1, 0, 0, 0, 0, -1, 0, 0, 0, 0, -1, 2.7, 0, 0, 0, 1, 4.2647, 0, 0.5, 0, 4.2647, 0.5, 0, 0, 1]


def with_entries(**changes) -> list[float]:
    """The frontal label with some of its 25 numbers replaced ({index: value})."""
    label = list(FRONTAL)
    for index, value in changes.items():
        label[int(index.strip("_"))] = value
    return label


# ----------------------------------------------------------------------------------------------- no false alarms


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("views", [1, 2, 7, 8, 16, 33, MAX_VIEWS])
@pytest.mark.parametrize("pivot", sorted(PIVOTS))
def test_every_preset_at_several_view_counts_passes(preset, views, pivot):
    keyframes = "-180, -90, -360\n0, 0\n180, 90, 360"  # the extremes keyframes allow
    for focal in (0.5, 4.2647, 20.0):  # the Camera Path node's focal range
        for radius in (0.5, 2.7, 20.0):
            cameras = camera_path(preset, views, 1.5, 1.5, -180, 180, -80, keyframes, "smooth", radius=radius, pivot=PIVOTS[pivot], focal=focal)
            check_camera_set(cameras)


def test_official_cameras_and_their_json_pass():
    cameras = official_orbit()
    assert check_camera_set(cameras) is cameras
    again = CameraSet.from_json(cameras.to_json())  # 7 decimals
    torch.testing.assert_close(again.labels(), cameras.labels())
    float32 = CameraSet.from_labels(cameras.labels())  # the labels as float32, as EG3D stores them
    check_camera_set(float32)


def test_labels_rounded_to_four_decimals_pass_within_the_derived_tolerance():
    # Rounding every entry by d = 5e-5 moves R^T R - I by at most ~6 d and det R by at most ~9 d (first order).
    cameras = camera_path("official16", 16)
    rounded = torch.round(cameras.labels().double() * 1e4) / 1e4
    rotation = rounded[:, :16].reshape(-1, 4, 4)[:, :3, :3]
    gram = (rotation.transpose(1, 2) @ rotation - torch.eye(3, dtype=torch.float64)).abs().amax()
    assert gram <= 6 * 5e-5 + 3 * 5e-5**2 < ROTATION_TOLERANCE
    check_camera_set(CameraSet.from_labels(rounded))


def test_eg3d_dataset_json_and_a_single_bare_label_are_read():
    document = {"labels": [["img00000.png", FRONTAL], ["img00001.png", FRONTAL]]}
    labels, names = labels_from_document(document)
    assert labels.shape == (2, 25) and names[1] == "labels[1] ('img00001.png')"
    assert len(CameraSet.from_json(json.dumps(FRONTAL))) == 1


def test_checked_cameras_are_safe_for_every_later_step():
    # Random proper rotations at random distances, looking roughly at the head: nothing later may raise.
    generator = torch.Generator().manual_seed(0)
    yaw = (torch.rand(64, generator=generator, dtype=torch.float64) - 0.5) * 2 * math.pi
    pitch = (torch.rand(64, generator=generator, dtype=torch.float64) - 0.5) * 2.8
    radius = 0.5 + 10 * torch.rand(1, generator=generator).item()
    cameras = check_camera_set(CameraSet.from_yaw_pitch(yaw, pitch, 0.3, radius=radius))
    cameras.yaw_pitch_roll()
    estimate_pivot(cameras)
    frontal_camera_like(cameras)
    for view in range(len(cameras)):
        assert torch.isfinite(project_points(torch.zeros(1, 3), cameras.cam2world[view], cameras.intrinsics[view], 64, 64)).all()


# ------------------------------------------------------------------------------------------ structure of the JSON


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"views":[{"nolabel":1}]}', ["views[0] has no 'label' (keys: nolabel)", "A valid label is 25 numbers"]),
        ("[1,2,3]", ["[0] must be a list of 25 numbers, got a number"]),
        ('{"labels":5}', ["'labels' must be a list of 25-number labels, got a number"]),
        ('{"views":5}', ["'views' must be a list of {\"label\": [25 numbers]} objects, got a number"]),
        ('{"views":[5]}', ["views[0] has no 'label' (a number)"]),
        ('{"views":[{"label":"abc"}]}', ["views[0].label must be a list of 25 numbers, got a string"]),
        ('{"views":[{"label":[1,2,3]}]}', ["views[0].label has 3 entries; a camera label has 25 numbers"]),
        (json.dumps([["a"] * 25]), ["[0][0] is a string ('a'), not a number"]),
        (json.dumps([[True] * 25]), ["[0][0] is true/false"]),
        (json.dumps([FRONTAL, FRONTAL[:24] + [None]]), ["[1][24] is null"]),
        ('{"cameras": []}', ["camera JSON must be", "EG3D's dataset.json"]),
        ('"text"', ["camera JSON must be", "got a string"]),
        ("[]", ["camera JSON has no views"]),
        ('{"views": []}', ["camera JSON has no views"]),
        (json.dumps([FRONTAL] * (MAX_VIEWS + 1)), [f"{MAX_VIEWS + 1} views; at most {MAX_VIEWS}"]),
        ("{not json", ["camera JSON does not parse"]),
        ("[" * 100000, ["camera JSON does not parse"]),
    ],
)
def test_json_structure_errors_say_where_and_what(text, expected):
    with pytest.raises(CameraError) as caught:
        CameraSet.from_json(text)
    for part in expected:
        assert part in str(caught.value)


# -------------------------------------------------------------------------------------------- numbers of a view


def mirror():
    return with_entries(_0=-1)  # det -1


BAD_LABELS = {
    "NaN": ([math.nan] * 25, "label numbers [0, 1,", "not finite"),
    "infinite": (with_entries(_11=math.inf), "label numbers [11] are not finite"),
    "all zero": ([0.0] * 25, "last row of cam2world", "must be 0 0 0 1"),
    "1e308": ([1e308] * 25, "last row of cam2world"),
    "1e308 rotation": (with_entries(_0=1e308), "is not a rotation"),
    "mirror": (mirror(), "is not a rotation", "det = -1"),
    "scaled": ([v * 1.01 if i in (0, 1, 2, 4, 5, 6, 8, 9, 10) else v for i, v in enumerate(FRONTAL)], "is not a rotation"),
    "sheared": (with_entries(_1=0.1), "is not a rotation"),
    "last row": (with_entries(_15=2), "last row of cam2world"),
    "at the head centre": (with_entries(_11=0.0), "0 world units from the head centre"),
    "far away": (with_entries(_11=1e4), "1e+04 world units from the head centre"),
    "looking away": (with_entries(_11=-2.7), "behind the camera"),
    "zero focal": (with_entries(_16=0.0), "focal lengths (0.0, 4.2647) must be positive"),
    "negative focal": (with_entries(_20=-4.2647), "must be positive"),
    "pixel intrinsics": (with_entries(_16=2183.5, _18=256.0, _20=2183.5, _21=256.0), "it looks like pixels"),
    "principal point": (with_entries(_18=3.0), "principal point (3.0, 0.5)"),
    "intrinsics rows": (with_entries(_24=0.0), "must be f s cx 0 f cy 0 0 1"),
}


@pytest.mark.parametrize("case", sorted(BAD_LABELS))
def test_bad_numbers_name_the_view_and_what_is_wrong(case):
    label, *expected = BAD_LABELS[case]
    text = json.dumps({"views": [{"label": FRONTAL}, {"label": label}, {"label": label}]})
    with pytest.raises(CameraError) as caught:
        CameraSet.from_json(text)  # json writes NaN and Infinity, and reads them back
    message = str(caught.value)
    assert message.startswith("views[1] (view 1 of 3, 1 later views also fail): ")
    for part in expected:
        assert part in message
    assert "A valid label is 25 numbers" in message and "0,0,-1,2.7" in message


def test_camera_sets_from_elsewhere_are_checked_too():
    cameras = CameraSet.from_labels(torch.tensor([FRONTAL, mirror()]))
    with pytest.raises(CameraError, match=r"^view 1 of 2: the 3x3 rotation part"):
        check_camera_set(cameras)
    with pytest.raises(CameraError, match="empty"):
        check_camera_set(CameraSet(torch.zeros(0, 4, 4), torch.zeros(0, 3, 3)))


# ------------------------------------------------------------------------------------------ keyframes and presets


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0, 0\nnan, 0", "keyframes: entry 2 'nan, 0': angles must be finite"),
        ("inf", "keyframes: entry 1 'inf': angles must be finite"),
        ("1e308, 0", "yaw and roll must be within -360..360"),
        ("0, 95", "pitch must be within -90..90"),
        ("0, 0, 0, 0", "has more than 3 numbers"),
        ("left, up", "is not numbers (degrees), e.g. '30, -5, 0'"),
        ("# only a comment", "no keyframe found"),
    ],
)
def test_keyframe_text_errors_name_the_entry(text, expected):
    with pytest.raises(ValueError) as caught:
        camera_path("keyframes", keyframes=text)
    assert expected in str(caught.value)
    with pytest.raises(ValueError, match="^per_frame_angles: "):
        parse_keyframes(text, name="per_frame_angles")


def test_preset_parameters_that_make_a_degenerate_camera_are_refused():
    # Radius 1 with the pivot at (0, 0, 1): the frontal camera sits on its own look-at point.
    with pytest.raises(CameraError) as caught:
        camera_path("yaw_sweep", 7, yaw_min_deg=-45, yaw_max_deg=45, radius=1.0, pivot=(0.0, 0.0, 1.0))
    message = str(caught.value)
    assert "preset 'yaw_sweep' with radius 1, pivot (0.0, 0.0, 1.0)" in message and "view 3 of 7" in message
    assert "is not a rotation" in message and "keep the pivot well inside" in message
    with pytest.raises(ValueError, match="radius: must be finite"):
        camera_path("official16", radius=math.nan)
    with pytest.raises(ValueError, match=f"views must be 1 to {MAX_VIEWS}"):
        camera_path("official16", views=0)


# ---------------------------------------------------------------------------------------------------------- OBJ

TRIANGLE = "v 0 0 0\nv 1 0 0\nv 0 1 0\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("v 0 0 0\n", "no vertices or no faces"),
        (TRIANGLE, "no vertices or no faces"),
        ("v 0 0 nan\nv 1 0 0\nv 0 1 0\nf 1 2 3\n", "OBJ line 1: 'v 0 0 nan' has a NaN, infinite or huge"),
        ("v 0 0 1e9\nv 1 0 0\nv 0 1 0\nf 1 2 3\n", "OBJ line 1: 'v 0 0 1e9' has a NaN, infinite or huge"),
        ("v 0 0 x\n", "OBJ line 1: 'v 0 0 x' has something that is not a number"),
        (TRIANGLE + "f 1 2 4\n", "OBJ line 4: 'f 1 2 4': vertex 4 does not exist (3 vertices so far"),
        (TRIANGLE + "f 0 1 2\n", "vertex 0 does not exist"),
        (TRIANGLE + "f -4 1 2\n", "vertex -4 does not exist"),
        (TRIANGLE + "f a b c\n", "face corner 'a' is not a vertex number"),
        (TRIANGLE + "f 1 2\n", "a face needs at least 3 vertices"),
        ("v 0 0 0\nv 1 1 1\nv 2 2 2\nf 1 2 3\nf 1 1 2\n", "all 2 triangles have zero area"),
    ],
)
def test_obj_errors_name_the_line(text, expected):
    with pytest.raises(ValueError) as caught:
        parse_obj(text)
    assert expected in str(caught.value)


def test_obj_negative_indices_and_colours_still_read():
    vertices, faces, colours = parse_obj("v 0 0 0 255 0 0\nv 1 0 0 0 255 0\nv 0 1 0 0 0 255\nf -3/1 -2//2 -1/3/3\n")
    assert faces.tolist() == [[0, 1, 2]] and vertices.shape == (3, 3)
    torch.testing.assert_close(colours, torch.eye(3))


# ------------------------------------------------------------------------------------------ files in one folder


@pytest.fixture
def folders(tmp_path):
    inside = tmp_path / "input"
    (inside / "sub").mkdir(parents=True)
    (inside / "cams.json").write_text("[]")
    (inside / "sub" / "head.obj").write_text("")
    (tmp_path / "secret.json").write_text("[]")
    (inside / "escape.json").symlink_to(tmp_path / "secret.json")
    (inside / "alias.json").symlink_to(inside / "cams.json")
    return inside, tmp_path


def test_names_resolve_inside_the_folder_only(folders):
    inside, outside = folders
    real = os.path.realpath
    assert file_in_folder("cams.json", inside) == type(inside)(real(inside / "cams.json"))
    assert file_in_folder(" sub/head.obj ", inside).name == "head.obj"
    assert file_in_folder("cams.json [input]", inside).name == "cams.json"
    assert file_in_folder(str(inside / "cams.json"), inside).name == "cams.json"  # absolute, but inside
    assert file_in_folder("alias.json", inside).name == "cams.json"  # a link that stays inside
    assert file_in_folder("sub/../cams.json", inside).name == "cams.json"


@pytest.mark.parametrize(
    "name",
    ["../secret.json", "{outside}/secret.json", "escape.json", "missing.json", "{outside}/missing.json", "", "sub", ".",
     "/etc/passwd", "cams.json\0"],
)
def test_names_outside_missing_or_not_files_give_none(folders, name):
    inside, outside = folders
    assert file_in_folder(name.format(outside=outside), inside) is None


def nasty_labels(generator: torch.Generator, count: int) -> torch.Tensor:
    """[count, 25] labels near and far from valid: random rotations perturbed, scaled or mirrored, odd
    positions, focal lengths and principal points, zeros, huge numbers and NaN, mixed at random."""
    from diffportrait3d.kernels.poses.camera import look_at

    def uniform(*shape, low=-1.0, high=1.0):
        return low + (high - low) * torch.rand(*shape, generator=generator, dtype=torch.float64)

    direction = torch.nn.functional.normalize(uniform(count, 3), dim=-1)
    origins = direction * torch.exp(uniform(count, 1, low=math.log(0.05), high=math.log(200.0)))
    targets = uniform(count, 3) * torch.exp(uniform(count, 1, low=math.log(0.01), high=math.log(3.0)))
    labels = torch.cat([look_at(origins, targets).reshape(count, 16), torch.tensor([4.2647, 0, 0.5, 0, 4.2647, 0.5, 0, 0, 1.0]).expand(count, 9)], -1)
    kinds = torch.randint(0, 16, (count,), generator=generator)  # 7 and above: left as made
    noise = uniform(count, 25) * torch.exp(uniform(count, 1, low=math.log(1e-7), high=math.log(1.0)))
    labels = torch.where((kinds == 1)[:, None], labels + noise, labels)
    labels[kinds == 2, :3] *= -1  # a mirror
    labels[kinds == 3, 16] = uniform(int((kinds == 3).sum()), low=-10, high=2000)  # focal
    labels[kinds == 4, 18] = uniform(int((kinds == 4).sum()), low=-1, high=3)  # principal point
    labels[kinds == 5] = torch.tensor([0.0, 1e308, math.nan, math.inf], dtype=torch.float64)[torch.randint(0, 4, (int((kinds == 5).sum()), 1), generator=generator)]
    labels[kinds == 6, :12] *= uniform(int((kinds == 6).sum()), 1, low=0.9, high=1.1)  # scaled
    return labels


def test_whatever_passes_the_checks_runs_every_later_step_without_error():
    """Seeded fuzz: every label set either fails the checks with a CameraError or goes through every later
    step (yaw/pitch/roll, pivot fit, frontal camera, template and depth renders) without any exception."""
    from diffportrait3d.kernels.poses.depth_mesh import depth_relief_mesh
    from diffportrait3d.kernels.poses.head_template import render_template_head
    from diffportrait3d.kernels.poses.mesh_render import render_mesh_views

    generator = torch.Generator().manual_seed(18)
    depth = torch.rand(16, 16, generator=generator, dtype=torch.float64).float()
    passed = failed = 0
    for _ in range(200):
        labels = nasty_labels(generator, 2)
        try:
            cameras = check_camera_set(CameraSet.from_labels(labels))
        except CameraError:
            failed += 1
            continue
        passed += 1
        assert torch.isfinite(cameras.yaw_pitch_roll()[:, :2]).all()
        assert torch.isfinite(estimate_pivot(cameras)).all()
        frontal = frontal_camera_like(cameras)
        render_template_head(cameras, 16, 16)
        vertices, faces, colours = depth_relief_mesh(depth, frontal)
        render_mesh_views(vertices, faces, cameras, 16, 16, colours, cull=None)
    assert passed >= 20 and failed >= 20, (passed, failed)  # both sides exercised


def test_an_opengl_camera_matrix_is_caught_with_the_conversion_hint():
    # Blender/NeRF cam2world: camera looks along its -z, y up. The same frontal camera in OpenGL axes.
    opencv = torch.tensor(FRONTAL[:16], dtype=torch.float64).reshape(4, 4)
    opengl = opencv.clone()
    opengl[:3, 1:3] *= -1
    label = opengl.reshape(16).tolist() + FRONTAL[16:]
    with pytest.raises(CameraError, match="behind the camera.*OpenGL/Blender/NeRF.*negate its columns 1 and 2"):
        CameraSet.from_json(json.dumps([label]))
    opengl[:3, 1:3] *= -1  # converted as the message says
    check_camera_set(CameraSet.from_labels(opengl.reshape(16).tolist() + FRONTAL[16:]))


def test_frame_assignment_wraps_yaw_around():
    from diffportrait3d.kernels.poses.driving_frames import assign_frames, linear_sweep_angles, pose_distances

    frames = linear_sweep_angles(4, -180, 90)  # yaw -180, -90, 0, 90
    cameras = torch.tensor([[179.0, 0.0], [-95.0, 5.0], [120.0, 0.0]])
    assert assign_frames(frames, cameras).tolist() == [0, 1, 3]  # 179 is 1 degree from -180, not 359
    torch.testing.assert_close(pose_distances(frames, cameras).amin(1), torch.tensor([1.0, 50**0.5, 30.0], dtype=torch.float64))
