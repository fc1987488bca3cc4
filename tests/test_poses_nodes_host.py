"""The pose nodes inside a real ComfyUI: registration, a full prompt, JSON save/load, input errors."""

import json

import pytest
import torch

pytestmark = pytest.mark.host

NODE_IDS = {
    "DP3DCameraPath", "DP3DCamerasFromJSON", "DP3DSaveCameraJSON", "DP3DPoseTemplateHead",
    "DP3DPoseDrivingFrames", "DP3DPoseMesh", "DP3DPoseDepth", "DP3DPreviewGrid",
}


@pytest.fixture
def output_dir(comfy_host, tmp_path):
    import folder_paths

    previous = folder_paths.get_output_directory()
    folder_paths.set_output_directory(str(tmp_path))
    yield tmp_path
    folder_paths.set_output_directory(previous)


def camera_path_node(views=4, preset="official16"):
    return {
        "class_type": "DP3DCameraPath",
        "inputs": {
            "preset": preset, "views": views, "orbit_a": 0.35, "orbit_b": 0.25, "yaw_min": -45.0, "yaw_max": 45.0,
            "pitch": 0.0, "keyframes": "0, 0", "interpolation": "per_view", "pivot": "panohead",
            "pivot_x": 0.0, "pivot_y": 0.0, "pivot_z": 0.0, "radius": 2.7, "focal": 4.2647,
        },
    }


def template_node(skin="#dbad91", size=64):
    return {
        "class_type": "DP3DPoseTemplateHead",
        "inputs": {
            "cameras": ["1", 0], "size": size, "skin": skin, "hair": "#33241a", "background": "#ffffff",
            "hair_volume": 1.5, "head_scale": 1.0, "eye_height": 0.02, "antialias": 1,
        },
    }


def test_nodes_are_registered_with_comfyui(comfy_host):
    assert NODE_IDS <= set(comfy_host.nodes.NODE_CLASS_MAPPINGS)
    assert comfy_host.nodes.NODE_DISPLAY_NAME_MAPPINGS["DP3DCameraPath"] == "DiffPortrait3D Camera Path"


def test_prompt_renders_conditions_grid_and_saves_cameras(run_prompt, output_dir):
    prompt = {
        "1": camera_path_node(views=4),
        "2": template_node(),
        "3": {"class_type": "DP3DPreviewGrid", "inputs": {"images": ["2", 0], "columns": 2, "gap": 4}},
        "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}},
        "5": {"class_type": "DP3DSaveCameraJSON", "inputs": {"cameras": ["1", 0], "filename_prefix": "poses/cams"}},
    }
    executor, server = run_prompt(prompt)
    assert executor.success, [m for m in server.messages if m[0] == "execution_error"]
    outputs = executor.history_result["outputs"]
    assert len(outputs["4"]["images"]) == 1
    saved = list(output_dir.glob("poses/cams_*.json"))
    assert len(saved) == 1
    document = json.loads(saved[0].read_text())
    assert len(document["views"]) == 4 and all(len(view["label"]) == 25 for view in document["views"])
    assert document["views"][1]["yaw_deg"] > 15  # official orbit: view 1 turns toward +yaw


def test_camera_json_round_trips_through_the_load_node(run_prompt, output_dir):
    from diffportrait3d.kernels.poses.camera_paths import camera_path

    original = camera_path("yaw_sweep", views=3, yaw_min_deg=-30, yaw_max_deg=30)
    prompt = {
        "1": {"class_type": "DP3DCamerasFromJSON", "inputs": {"json_text": original.to_json()}},
        "2": {"class_type": "DP3DSaveCameraJSON", "inputs": {"cameras": ["1", 0], "filename_prefix": "again"}},
    }
    executor, _ = run_prompt(prompt)
    assert executor.success
    saved = json.loads(next(output_dir.glob("again_*.json")).read_text())
    labels = torch.tensor([view["label"] for view in saved["views"]])
    torch.testing.assert_close(labels, original.labels(), atol=1e-6, rtol=0)


def test_sphere32_presets_give_the_32_official_cameras_and_the_back_one(run_prompt, output_dir):
    """The presets appended to the node's menu run in a real prompt; 'views' does not change them."""
    from diffportrait3d.kernels.poses.camera_paths import sphere32

    prompt = {
        "1": camera_path_node(views=4, preset="sphere32"),
        "2": {"class_type": "DP3DSaveCameraJSON", "inputs": {"cameras": ["1", 0], "filename_prefix": "all"}},
        "3": camera_path_node(views=4, preset="sphere32_back"),
        "4": {"class_type": "DP3DSaveCameraJSON", "inputs": {"cameras": ["3", 0], "filename_prefix": "back"}},
        "5": {**template_node(), "inputs": {**template_node()["inputs"], "cameras": ["3", 0]}},
        "6": {"class_type": "PreviewImage", "inputs": {"images": ["5", 0]}},
    }
    executor, server = run_prompt(prompt)
    assert executor.success, [m for m in server.messages if m[0] == "execution_error"]
    labels = {name: torch.tensor([view["label"] for view in json.loads(next(output_dir.glob(f"{name}_*.json")).read_text())["views"]])
              for name in ("all", "back")}
    torch.testing.assert_close(labels["all"], sphere32().labels(), atol=1e-6, rtol=0)
    torch.testing.assert_close(labels["back"], labels["all"][18:19], atol=0, rtol=0)
    assert len(executor.history_result["outputs"]["6"]["images"]) == 1


def test_bad_colour_is_reported_with_the_input_name(run_prompt):
    prompt = {
        "1": camera_path_node(views=1),
        "2": template_node(skin="pink"),
        "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}},
    }
    executor, server = run_prompt(prompt)
    assert not executor.success
    errors = [data for event, data in server.messages if event == "execution_error"]
    assert errors and "skin" in errors[0]["exception_message"] and "#rrggbb" in errors[0]["exception_message"]


def test_depth_node_renders_a_relief_from_another_nodes_image(run_prompt):
    prompt = {
        "1": camera_path_node(views=2, preset="yaw_sweep"),
        "2": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0x808080}},
        "3": {
            "class_type": "DP3DPoseDepth",
            "inputs": {"cameras": ["1", 0], "depth": ["2", 0], "size": 64, "relief": 0.35, "background_below": 0.08, "background": "#000000"},
        },
        "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}},
    }
    executor, server = run_prompt(prompt)
    assert executor.success, [m for m in server.messages if m[0] == "execution_error"]


def test_driving_and_mesh_nodes_produce_one_condition_per_camera(comfy_host, input_dir):
    poses = comfy_host.pack_module.nodes.poses
    from diffportrait3d.kernels.poses.camera_paths import camera_path

    cameras = camera_path("yaw_sweep", views=3, yaw_min_deg=-30, yaw_max_deg=30)
    frames = torch.zeros(5, 80, 64, 3)
    frames[..., 2] = 0.9
    frames[:, 20:60, 18:46] = torch.tensor([0.7, 0.5, 0.4])  # a block "head" on a blue background
    images, masks = poses.PoseDrivingFrames.execute(cameras, frames, 64, "linear_sweep", -40.0, 40.0, "", "#ffffff").args
    assert images.shape == (3, 64, 64, 3) and masks.shape == (3, 64, 64) and masks.sum() > 0
    with pytest.raises(ValueError, match="per_frame_angles"):
        poses.PoseDrivingFrames.execute(cameras, frames, 64, "per_frame", 0.0, 0.0, "0, 0\n10, 0", "#ffffff")

    obj = input_dir / "tetra.obj"  # file inputs are names in ComfyUI's input folder
    obj.write_text("v 0 0 1\nv 1 0 -1\nv -1 0 -1\nv 0 1.5 0\nf 1 2 4\nf 2 3 4\nf 3 1 4\nf 1 3 2\n")
    images, masks = poses.PoseMesh.execute(cameras, obj.name, "fit_to_template", 64, "#dbad91", "#000000", True).args
    assert images.shape == (3, 64, 64, 3) and (masks.sum(dim=(1, 2)) > 50).all()
    with pytest.raises(ValueError, match="obj_path"):
        poses.PoseMesh.execute(cameras, "missing.obj", "as_is", 64, "#dbad91", "#000000", True)
