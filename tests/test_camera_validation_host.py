"""Bad cameras, pose inputs and file names through a real ComfyUI: the node where they enter fails with a
ValueError that names the input, the view and the fix; no later node ever raises (no LinAlgError, no
IndexError); file inputs stay inside ComfyUI's input folder and say so, the same way for missing and outside."""

import json
import math
import uuid

import pytest
import torch
from conftest import comfy_base_folder

pytestmark = pytest.mark.host

FRONTAL = [1, 0, 0, 0, 0, -1, 0, 0, 0, 0, -1, 2.7, 0, 0, 0, 1, 4.2647, 0, 0.5, 0, 4.2647, 0.5, 0, 0, 1]
TETRA = "v 0 0 1\nv 1 0 -1\nv -1 0 -1\nv 0 1.5 0\nf 1 2 4\nf 2 3 4\nf 3 1 4\nf 1 3 2\n"


def camera_path(**changes):
    inputs = {
        "preset": "official16", "views": 2, "orbit_a": 0.35, "orbit_b": 0.25, "yaw_min": -45.0, "yaw_max": 45.0,
        "pitch": 0.0, "keyframes": "0, 0", "interpolation": "per_view", "pivot": "panohead",
        "pivot_x": 0.0, "pivot_y": 0.0, "pivot_z": 0.0, "radius": 2.7, "focal": 4.2647,
    }
    return {"class_type": "DP3DCameraPath", "inputs": {**inputs, **changes}}


def from_json(text):
    return {"class_type": "DP3DCamerasFromJSON", "inputs": {"json_text": text}}


def template_head(cameras=("1", 0)):
    return {
        "class_type": "DP3DPoseTemplateHead",
        "inputs": {
            "cameras": list(cameras), "size": 64, "skin": "#dbad91", "hair": "#33241a", "background": "#ffffff",
            "hair_volume": 1.5, "head_scale": 1.0, "eye_height": 0.02, "antialias": 1,
        },
    }


def mesh(obj_path, placement="fit_to_template"):
    return {
        "class_type": "DP3DPoseMesh",
        "inputs": {
            "cameras": ["1", 0], "obj_path": obj_path, "placement": placement, "size": 64, "colour": "#dbad91",
            "background": "#ffffff", "two_sided": True,
        },
    }


def preview(node="2"):
    return {"class_type": "PreviewImage", "inputs": {"images": [node, 0]}}


def failure(run_prompt, prompt) -> dict:
    """The one execution error of a prompt that must fail."""
    executor, server = run_prompt(prompt)
    assert not executor.success
    errors = [data for event, data in server.messages if event == "execution_error"]
    assert len(errors) == 1, errors
    return errors[0]


def assert_fails_at(error: dict, node_id: str, *parts: str):
    message = error["exception_message"]
    assert error["node_id"] == node_id, message
    assert error["exception_type"] == "ValueError", (error["exception_type"], message)
    for part in parts:
        assert part in message, message


# ---------------------------------------------------------------------------------------------- camera JSON


def labels(*rows):
    return json.dumps({"views": [{"label": row} for row in rows]})


BAD_JSON = {
    "no label": ('{"views":[{"nolabel":1}]}', "json_text: views[0] has no 'label' (keys: nolabel)"),
    "bare numbers": ("[1,2,3]", "json_text: [0] must be a list of 25 numbers, got a number"),
    "labels not a list": ('{"labels":5}', "json_text: 'labels' must be a list of 25-number labels"),
    "views not a list": ('{"views":5}', "json_text: 'views' must be a list of"),
    "string labels": (json.dumps({"labels": [["x"] * 25]}), "json_text: labels[0][0] is a string ('x'), not a number"),
    "NaN labels": (labels(FRONTAL, [math.nan] * 25), "json_text: views[1] (view 1 of 2): label numbers", "not finite"),
    "all-zero labels": (labels([0] * 25), "json_text: views[0] (view 0 of 1): the last row of cam2world"),
    "1e308 labels": (labels([1e308] * 25), "json_text: views[0] (view 0 of 1): the last row of cam2world"),
    "huge rotation": (labels(FRONTAL[:5] + [1e308] + FRONTAL[6:]), "is not a rotation"),
    "mirrored": (labels([-1] + FRONTAL[1:]), "is not a rotation", "det = -1"),
    "camera at the head centre": (labels(FRONTAL[:11] + [0] + FRONTAL[12:]), "0 world units from the head centre"),
    "pixel intrinsics": (labels(FRONTAL[:16] + [2183.5, 0, 256, 0, 2183.5, 256, 0, 0, 1]), "it looks like pixels"),
    "empty views": ('{"views": []}', "json_text: camera JSON has no views"),
    "too many views": (json.dumps([FRONTAL] * 361), "json_text: camera JSON has 361 views; at most 360"),
    "not JSON": ("{views: 1}", "json_text: camera JSON does not parse"),
    "a 5000-digit number": ("[" + ",".join(["1" + "0" * 5000] * 25) + "]", "json_text: camera JSON does not parse"),
    "empty text": ("   ", "json_text: empty; paste camera JSON"),
}


@pytest.mark.parametrize("case", sorted(BAD_JSON))
def test_bad_camera_json_fails_at_the_json_node_with_the_view_and_the_fix(run_prompt, case):
    text, *parts = BAD_JSON[case]
    error = failure(run_prompt, {"1": from_json(text), "2": template_head(), "3": preview()})
    assert_fails_at(error, "1", *parts)
    if "(view " in parts[0]:
        assert "A valid label is 25 numbers" in error["exception_message"]


def test_every_later_node_checks_cameras_it_is_handed(comfy_host):
    poses = comfy_host.pack_module.nodes.poses
    from diffportrait3d.kernels.poses.camera import CameraSet

    # Cameras made by another node pack, not through this pack's checks: a NaN view.
    bad = CameraSet.from_labels(torch.tensor([FRONTAL, [math.nan] * 25], dtype=torch.float64))
    frames = torch.rand(2, 64, 64, 3)
    calls = {
        "template": lambda: poses.PoseTemplateHead.execute(bad, 64, "#dbad91", "#33241a", "#ffffff", 1.5, 1.0, 0.02, 1),
        "driving": lambda: poses.PoseDrivingFrames.execute(bad, frames, 64, "linear_sweep", -40.0, 40.0, "", "#ffffff"),
        "mesh": lambda: poses.PoseMesh.execute(bad, "x.obj", "as_is", 64, "#dbad91", "#ffffff", True),
        "depth": lambda: poses.PoseDepth.execute(bad, frames, 64, 0.35, 0.08, "#ffffff"),
        "save": lambda: poses.SaveCameraJSON.execute(bad, "never"),
    }
    for name, call in calls.items():
        with pytest.raises(ValueError, match=r"^cameras: view 1 of 2: label numbers .* not finite") as caught:
            call()
        assert "A valid label is 25 numbers" in str(caught.value), name


# ----------------------------------------------------------------------------------- presets and keyframes


@pytest.mark.parametrize(
    ("changes", "parts"),
    [
        ({"preset": "keyframes", "keyframes": "0, 0\nnan, 0"}, ["keyframes: entry 2 'nan, 0': angles must be finite"]),
        ({"preset": "keyframes", "keyframes": "0, 120"}, ["keyframes: entry 1 '0, 120': pitch must be within -90..90"]),
        ({"preset": "keyframes", "keyframes": "left"}, ["keyframes: entry 1 'left' is not numbers"]),
        ({"preset": "keyframes", "keyframes": ""}, ["keyframes: no keyframe found"]),
        (
            {"preset": "yaw_sweep", "views": 7, "pivot": "custom", "pivot_z": 1.0, "radius": 1.0},
            ["preset 'yaw_sweep' with radius 1, pivot (0.0, 0.0, 1.0)", "view 3 of 7", "keep the pivot well inside"],
        ),
        (
            {"pivot": "custom", "pivot_x": 1.0, "pivot_y": 1.0, "pivot_z": 1.0, "radius": 0.5},
            ["the head centre (0, 0, 0) is behind the camera"],
        ),
    ],
)
def test_camera_path_parameters_that_give_no_usable_camera_fail_there(run_prompt, changes, parts):
    error = failure(run_prompt, {"1": camera_path(**changes), "2": template_head(), "3": preview()})
    assert_fails_at(error, "1", "DiffPortrait3D Camera Path: ", *parts)


def test_a_template_head_outside_every_picture_is_an_error_not_a_blank_image(run_prompt):
    # Legal cameras aimed at a point 1.4 units beside the head with a narrow lens: the head is in no picture.
    cameras = camera_path(pivot="custom", pivot_x=1.0, pivot_y=1.0, radius=20.0, focal=20.0)
    error = failure(run_prompt, {"1": cameras, "2": template_head(), "3": preview()})
    assert_fails_at(error, "2", "cameras: the template head is in the picture of no camera for views [0, 1]", "aim those cameras")


# ------------------------------------------------------------------------------------------------ file names


def test_camera_json_file_is_read_from_the_input_folder(run_prompt, input_dir, tmp_path):
    (input_dir / "sub").mkdir()
    (input_dir / "sub" / "cams.json").write_text(labels(FRONTAL, FRONTAL))
    executor, server = run_prompt({"1": from_json("sub/cams.json"), "2": template_head(), "3": preview()})
    assert executor.success, [m for m in server.messages if m[0] == "execution_error"]

    (input_dir / "bad.json").write_text(labels([0] * 25))
    error = failure(run_prompt, {"1": from_json("bad.json"), "2": template_head(), "3": preview()})
    assert_fails_at(error, "1", "json_text (file 'bad.json'): views[0] (view 0 of 1): the last row of cam2world")


def outside_files(input_dir, tmp_path, suffix: str) -> dict[str, str]:
    """Names that lead outside the input folder (to a file that exists there) and names of missing files."""
    secret = tmp_path / f"secret{suffix}"
    secret.write_text("{}" if suffix == ".json" else TETRA)
    (input_dir / f"link{suffix}").symlink_to(secret)
    return {
        "absolute, exists": str(secret),
        "dot-dot, exists": f"../secret{suffix}",
        "link out, exists": f"link{suffix}",
        "absolute, missing": str(tmp_path / f"missing{suffix}"),
        "relative, missing": f"missing{suffix}",
        "a folder": ".",
    }


def test_json_files_outside_the_input_folder_are_refused_like_missing_ones(run_prompt, input_dir, tmp_path):
    messages = {}
    for case, name in outside_files(input_dir, tmp_path, ".json").items():
        error = failure(run_prompt, {"1": from_json(name), "2": template_head(), "3": preview()})
        assert_fails_at(error, "1", f"json_text: '{name}' must be a file in ComfyUI's input folder: {input_dir}")
        messages[case] = error["exception_message"].replace(f"'{name}'", "'NAME'")
    assert len(set(messages.values())) == 1, messages  # nothing tells an outside file from a missing one


def test_obj_files_outside_the_input_folder_are_refused_like_missing_ones(run_prompt, input_dir, tmp_path):
    messages = {}
    for case, name in outside_files(input_dir, tmp_path, ".obj").items():
        error = failure(run_prompt, {"1": camera_path(), "2": mesh(name), "3": preview()})
        assert_fails_at(error, "2", f"obj_path: '{name}' must be a file in ComfyUI's input folder: {input_dir}", "e.g. 'head.obj'")
        messages[case] = error["exception_message"].replace(f"'{name}'", "'NAME'")
    assert len(set(messages.values())) == 1, messages


@pytest.mark.parametrize("prefix", ["../../escape", "/tmp/escape", "cams/../../escape"])
def test_save_camera_json_stays_inside_the_output_folder(run_prompt, prefix):
    save = {"class_type": "DP3DSaveCameraJSON", "inputs": {"cameras": ["1", 0], "filename_prefix": prefix}}
    error = failure(run_prompt, {"1": camera_path(), "2": save})
    assert_fails_at(error, "2", f"filename_prefix: '{prefix}' would write outside ComfyUI's output folder")


# ---------------------------------------------------------------------------------------------------- meshes


@pytest.mark.parametrize(
    ("text", "placement", "parts"),
    [
        ("v 0 0 1\nv 1 0 -1\nv -1 0 -1\n", "fit_to_template", ["OBJ has no vertices or no faces"]),
        ("v 0 0 nan\nv 1 0 -1\nv -1 0 -1\nf 1 2 3\n", "fit_to_template", ["OBJ line 1: 'v 0 0 nan' has a NaN"]),
        ("v 0 0 1\nv 1 0 -1\nv -1 0 -1\nf 1 2 7\n", "fit_to_template", ["OBJ line 4: 'f 1 2 7': vertex 7 does not exist"]),
        ("v 0 0 1\nv 0 1 -1\nv 0 -1 -1\nf 1 2 3\n", "fit_to_template", ["OBJ mesh has zero width"]),
        ("v 0 0 0\nv 1 1 1\nv 2 2 2\nf 1 2 3\n", "as_is", ["all 1 triangles have zero area"]),
        (TETRA.replace("v ", "v 50 "), "as_is", ["the mesh is in the picture of no camera for views [0, 1]", "try fit_to_template"]),
    ],
)
def test_bad_meshes_fail_at_the_mesh_node_naming_the_file_and_line(run_prompt, input_dir, text, placement, parts):
    (input_dir / "head.obj").write_text(text)
    error = failure(run_prompt, {"1": camera_path(), "2": mesh("head.obj", placement), "3": preview()})
    assert_fails_at(error, "2", "obj_path (file 'head.obj'): ", *parts)


# ---------------------------------------------------------------------------------------- frames and depth


def driving(frames=("4", 0), masks=None, frame_poses="linear_sweep", angles=""):
    inputs = {
        "cameras": ["1", 0], "frames": list(frames), "size": 64, "frame_poses": frame_poses, "yaw_start": -45.0,
        "yaw_end": 45.0, "per_frame_angles": angles, "background": "#ffffff",
    }
    if masks:
        inputs["frame_masks"] = list(masks)
    return {"class_type": "DP3DPoseDrivingFrames", "inputs": inputs}


def blank_frames(batch=2):
    return {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": batch, "color": 0x336699}}


def test_blank_driving_frames_are_an_error_naming_the_frames_and_views(run_prompt):
    error = failure(run_prompt, {"1": camera_path(), "4": blank_frames(), "2": driving(), "3": preview()})
    assert_fails_at(error, "2", "frames: no head found in frames [", "chosen for views [", "give frame_masks")

    empty_masks = {"class_type": "SolidMask", "inputs": {"value": 0.0, "width": 64, "height": 64}}
    error = failure(run_prompt, {"1": camera_path(), "4": blank_frames(), "5": empty_masks, "2": driving(masks=("5", 0)), "3": preview()})
    assert_fails_at(error, "2", "frame_masks: the masks of frames [")

    error = failure(run_prompt, {"1": camera_path(), "4": blank_frames(), "2": driving(frame_poses="per_frame", angles="0, 0\nnan"), "3": preview()})
    assert_fails_at(error, "2", "per_frame_angles: entry 2 'nan': angles must be finite")


def test_cameras_far_from_every_driving_frame_pose_are_an_error(run_prompt):
    # A full turntable driven by frames that turn only from -45 to 45 degrees: the back views have no frame.
    frames = {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 4, "color": 0xFFFFFF}}
    error = failure(run_prompt, {"1": camera_path(preset="turntable360", views=8), "4": frames, "2": driving(), "3": preview()})
    assert_fails_at(
        error, "2", "cameras: views [3, 4, 5] (0-based) are up to 135 degrees from the pose of the nearest frame",
        "the frames cover yaw -45 to 45", "use the template head for those views",
    )


def test_an_empty_depth_map_is_an_error(run_prompt):
    black = {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}}
    depth = {
        "class_type": "DP3DPoseDepth",
        "inputs": {"cameras": ["1", 0], "depth": ["4", 0], "size": 64, "relief": 0.35, "background_below": 0.08, "background": "#000000"},
    }
    error = failure(run_prompt, {"1": camera_path(), "4": black, "2": depth, "3": preview()})
    assert_fails_at(error, "2", "depth: nothing above background_below")


# --------------------------------------------------------------------------------------------- a real server


def test_a_real_server_reports_bad_cameras_and_paths_and_keeps_serving(comfy_server_factory, tmp_path):
    from diffportrait3d.cli.server_client import ComfyServer, ServerError

    base = comfy_base_folder(tmp_path / "base", {})
    (tmp_path / "outside.obj").write_text(TETRA)
    server = ComfyServer(comfy_server_factory(base).url)
    # A remote client puts its mesh into the input folder through ComfyUI's upload endpoint.
    assert server.upload_image(tmp_path / "outside.obj", "head.obj") == "head.obj"

    def outcome(prompt) -> str:
        prompt_id = server.queue_prompt(prompt, client_id=str(uuid.uuid4()))
        try:
            server.wait_for(prompt_id, timeout=120)
        except ServerError as error:
            return str(error)
        return "success"

    nan_json = outcome({"1": from_json(labels([math.nan] * 25)), "2": template_head(), "3": preview()})
    assert "node 1 DP3DCamerasFromJSON: json_text: views[0] (view 0 of 1): label numbers" in nan_json
    outside = outcome({"1": camera_path(), "2": mesh(str(tmp_path / "outside.obj")), "3": preview()})
    missing = outcome({"1": camera_path(), "2": mesh(str(tmp_path / "missing.obj")), "3": preview()})
    assert "node 2 DP3DPoseMesh: obj_path: " in outside and "must be a file in ComfyUI's input folder: " in outside
    unnamed = [text.split("failed: ")[1].replace(str(tmp_path / name), "NAME") for text, name in ((outside, "outside.obj"), (missing, "missing.obj"))]
    assert unnamed[0] == unnamed[1]  # nothing tells an existing outside file from a missing one
    assert outcome({"1": camera_path(), "2": mesh("head.obj"), "3": preview()}) == "success"


def test_a_render_larger_than_free_memory_is_refused_before_it_starts(run_prompt, comfy_host):
    import psutil

    poses = comfy_host.pack_module.nodes.poses
    need = poses.RENDER_BYTES_PER_PIXEL * (4096 * 4) ** 2
    if psutil.virtual_memory().available > need:
        pytest.skip(f"this machine has {need / 2**30:.0f} GiB free: the oversized render would run")
    prompt = {"1": camera_path(views=16), "2": template_head(), "3": preview()}
    prompt["2"]["inputs"].update(size=4096, antialias=4)
    error = failure(run_prompt, prompt)
    assert_fails_at(error, "2", "size, antialias: 16 views of 4096x4096 pixels with antialias 4 need about ", "GiB is free; lower size, antialias")


def test_preview_grid_takes_rgba_and_refuses_an_empty_batch(comfy_host):
    poses = comfy_host.pack_module.nodes.poses
    rgba = torch.rand(3, 8, 8, 4)
    (grid,) = poses.PreviewGrid.execute(rgba, 2, 1).args
    assert grid.shape == (1, 17, 17, 4)
    assert bool((grid[0, 8, :, 3] == 1).all())  # the gap row is opaque
    torch.testing.assert_close(grid[0, :8, :8], rgba[0])
    with pytest.raises(ValueError, match="^images: the batch is empty"):
        poses.PreviewGrid.execute(torch.zeros(0, 8, 8, 3), 0, 4)
