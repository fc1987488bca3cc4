"""Broken model files give one clear ConversionError naming the input, the file and the fix
(never a raw SafetensorError, KeyError, JSONDecodeError or torch RuntimeError, never half-loaded weights)."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

pytestmark = pytest.mark.host

LOADERS = {
    "unet": ("load_dp3d_unet", "unet"),
    "appearance": ("load_appearance_net", "appearance_net"),
    "pose_controlnet": ("load_pose_controlnet", "pose_controlnet"),
    "cross_view": ("load_cross_view_modules", "cross_view"),
    "vae": ("load_dp3d_vae", "vae"),
}


def metadata_of(path: Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as handle:
        return dict(handle.metadata())


def load_expecting_error(component: str, path: Path) -> str:
    from diffportrait3d.kernels.checkpoint.errors import ConversionError
    from diffportrait3d.nodes import model_loading

    function_name, input_name = LOADERS[component]
    with pytest.raises(ConversionError) as caught:
        getattr(model_loading, function_name)(str(path), input_name)
    message = str(caught.value)
    assert message.startswith(f"{input_name}: {path.name}"), message
    assert "python -m diffportrait3d convert" in message or "Select" in message, message
    return message


def source_file(tiny_model_files: Path, component: str) -> Path:
    from diffportrait3d.kernels.checkpoint.components import COMPONENT_FILES

    return tiny_model_files / COMPONENT_FILES[component]


@pytest.mark.parametrize("component", sorted(LOADERS))
@pytest.mark.parametrize("damage", ["empty", "100_bytes", "truncated", "pickle"])
def test_unreadable_files_name_the_input_and_the_fix(comfy_host, tiny_model_files, tmp_path, component, damage):
    good = source_file(tiny_model_files, component)
    bad = tmp_path / good.name
    data = good.read_bytes()
    if damage == "empty":
        bad.write_bytes(b"")
    elif damage == "100_bytes":
        bad.write_bytes(data[:100])
    elif damage == "truncated":
        bad.write_bytes(data[: len(data) // 2])
    else:
        torch.save({"weight": torch.zeros(2)}, bad)
    message = load_expecting_error(component, bad)
    assert "not a readable safetensors file" in message


@pytest.mark.parametrize("component", sorted(LOADERS))
@pytest.mark.parametrize("fault", ["half_the_tensors", "extra_tensor", "wrong_shape"])
def test_files_that_do_not_fit_their_architecture_are_errors(comfy_host, tiny_model_files, tmp_path, component, fault):
    good = source_file(tiny_model_files, component)
    tensors, metadata = load_file(str(good)), metadata_of(good)
    keys = sorted(tensors)
    if fault == "half_the_tensors":
        tensors = {key: tensors[key] for key in keys[: len(keys) // 2]}
    elif fault == "extra_tensor":
        tensors["not.a.layer.weight"] = torch.zeros(3)
    else:
        name = next(key for key in keys if tensors[key].ndim >= 1 and tensors[key].shape[0] > 1)
        tensors[name] = torch.zeros(tensors[name].shape[0] + 1, *tensors[name].shape[1:])
    bad = tmp_path / good.name
    save_file(tensors, str(bad), metadata=metadata)
    message = load_expecting_error(component, bad)
    expected = "wrong shape" if fault == "wrong_shape" else "does not fit"
    assert expected in message


@pytest.mark.parametrize("component", sorted(LOADERS))
@pytest.mark.parametrize("fault", ["no_architecture", "architecture_not_json", "no_metadata"])
def test_missing_or_broken_metadata_is_an_error(comfy_host, tiny_model_files, tmp_path, component, fault):
    good = source_file(tiny_model_files, component)
    tensors, metadata = load_file(str(good)), metadata_of(good)
    if fault == "no_architecture":
        del metadata["dp3d.architecture"]
    elif fault == "architecture_not_json":
        metadata["dp3d.architecture"] = "{not json"
    else:
        metadata = {}
    bad = tmp_path / good.name
    save_file(tensors, str(bad), metadata=metadata)
    message = load_expecting_error(component, bad)
    if fault == "no_metadata":
        assert "has no DiffPortrait3D metadata" in message
    else:
        assert "dp3d.architecture" in message


def test_a_missing_file_names_the_input_the_folder_the_source_and_the_convert_command(comfy_host, tmp_path):
    import folder_paths

    from diffportrait3d.nodes.model_loading import MODEL_FOLDER, model_file_path

    folders = folder_paths.get_folder_paths(MODEL_FOLDER)
    with pytest.raises(FileNotFoundError) as caught:
        model_file_path("not_there.safetensors", "vae", "vae")
    message = str(caught.value)
    assert message.startswith("vae: 'not_there.safetensors' is not in the diffportrait3d model folder")
    assert all(folder in message for folder in folders)
    assert "diffportrait3d_vae.safetensors" in message
    assert "model_state-540000-001.th" in message and "drive.google.com" in message
    assert f"python -m diffportrait3d convert model_state-540000-001.th --out {folders[0]}" in message


def test_good_files_still_load(comfy_host, tiny_model_files, tmp_path):
    from diffportrait3d.nodes import model_loading

    for component, (function_name, input_name) in LOADERS.items():
        copy = tmp_path / source_file(tiny_model_files, component).name
        shutil.copy(source_file(tiny_model_files, component), copy)
        assert getattr(model_loading, function_name)(str(copy), input_name) is not None
    assert json.loads(metadata_of(copy)["dp3d.architecture"])


def test_converter_reports_a_truncated_zip_checkpoint_without_the_legacy_format_warning(tmp_path, caplog):
    from diffportrait3d.kernels.checkpoint.errors import ConversionError
    from diffportrait3d.kernels.checkpoint.source import _load_pickle_weights_only

    whole = tmp_path / "whole.pt"
    torch.save({"weight": torch.zeros(64, 64)}, whole)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(ConversionError, match="truncated"):
        _load_pickle_weights_only(truncated)
    assert "legacy torch format" not in caplog.text


def test_unknown_files_are_not_described_as_looking_like_not_a_checkpoint():
    from diffportrait3d.kernels.checkpoint.validation import guess_file_kind

    assert "not a" not in guess_file_kind(["something.else"])
