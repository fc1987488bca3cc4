"""Conversion of the official key layout into per-component safetensors files."""

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

import diffportrait3d
from diffportrait3d.cli.main import main as cli_main
from diffportrait3d.kernels.checkpoint.components import COMPONENT_FILES
from diffportrait3d.kernels.checkpoint.convert import (
    component_architectures,
    convert_checkpoint,
    convert_source,
    load_architecture,
)
from diffportrait3d.kernels.checkpoint.errors import ConversionError
from diffportrait3d.kernels.checkpoint.source import CheckpointSource, file_sha256
from diffportrait3d.kernels.checkpoint.validation import raise_if_invalid, validate_checkpoint_keys

FIXTURES = Path(__file__).parent / "fixtures"
TINY = FIXTURES / "tiny_official.safetensors"
TINY_CONFIG = FIXTURES / "tiny_config.json"


def manifest_shapes() -> dict[str, tuple[int, ...]]:
    manifest = json.loads((FIXTURES / "official_checkpoint_manifest.json").read_text())
    return {key: tuple(entry["shape"]) for group in manifest["groups"].values() for key, entry in group["keys"].items()}


@pytest.fixture(scope="module")
def tiny_converted(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny_converted")
    report = convert_checkpoint(TINY, out, dtype="fp32", config_path=TINY_CONFIG)
    return report, out


def test_every_source_key_lands_in_exactly_one_component_or_is_dropped_on_purpose(tiny_converted):
    report, out = tiny_converted
    source = load_file(TINY)
    assert set(report.assignments).isdisjoint(report.dropped)
    assert set(report.assignments) | set(report.dropped) == set(source)
    assert all(not reason.startswith("unknown") for reason in report.dropped.values())
    assert sorted(set(report.dropped.values())) == [
        "DDPM schedule buffer: the SD1.5 linear schedule, recomputed by ComfyUI",
        "appearance net hint block: present in the checkpoint, never executed",
    ]
    written_keys = 0
    for component, (path, n_keys, _) in report.written.items():
        assert path == out / COMPONENT_FILES[component]
        converted = load_file(path)
        assert len(converted) == n_keys
        written_keys += n_keys
    assert written_keys == len(report.assignments)
    assert set(report.written) == {"unet", "appearance", "pose_controlnet", "cross_view", "vae"}  # tiny has no CLIP


def test_converted_values_and_names_follow_the_documented_layout(tiny_converted):
    _, out = tiny_converted
    source = load_file(TINY)
    unet = load_file(out / COMPONENT_FILES["unet"])
    cross_view = load_file(out / COMPONENT_FILES["cross_view"])
    appearance = load_file(out / COMPONENT_FILES["appearance"])
    pose = load_file(out / COMPONENT_FILES["pose_controlnet"])
    vae = load_file(out / COMPONENT_FILES["vae"])
    for key, value in source.items():
        if key.startswith("model.diffusion_model."):
            rest = key.removeprefix("model.diffusion_model.")
            target = cross_view if "_motion_module" in rest else unet
            assert torch.equal(target[rest], value.float())
        elif key.startswith("control_model.") and ".input_hint_block." not in "." + key:
            assert torch.equal(appearance[key.removeprefix("control_model.")], value.float())
        elif key.startswith("pose_control_model."):
            assert torch.equal(pose["control_model." + key.removeprefix("pose_control_model.")], value.float())
        elif key.startswith("first_stage_model."):
            assert torch.equal(vae[key.removeprefix("first_stage_model.")], value.float())
    assert not any(k.startswith("input_hint_block") for k in appearance)
    assert "out.2.weight" in unet and not any("motion_module" in k for k in unet)


def test_metadata_records_component_architecture_and_source_hash(tiny_converted):
    report, out = tiny_converted
    architecture = load_architecture(TINY_CONFIG)
    records = component_architectures(architecture)
    for component, (path, _, _) in report.written.items():
        with safe_open(str(path), "pt") as handle:
            metadata = handle.metadata()
        assert metadata["dp3d.component"] == component
        assert metadata["dp3d.format_version"] == "1"
        assert metadata["dp3d.pack_version"] == diffportrait3d.__version__
        assert metadata["dp3d.source_sha256"] == file_sha256(TINY) == report.source_sha256
        assert json.loads(metadata["dp3d.architecture"]) == records[component]
    with safe_open(str(out / COMPONENT_FILES["cross_view"]), "pt") as handle:
        metadata = handle.metadata()
        keys = list(handle.keys())
    placement = json.loads(metadata["dp3d.placement"])
    assert len(placement) == 27
    assert {p["key_prefix"] for p in placement} == {k.split(".temporal_transformer.")[0] for k in keys}
    assert json.loads(metadata["dp3d.architecture"])["num_heads"] == 2  # tiny heads, not SD1.5's 8


def test_fp16_storage_keeps_buffers_float32_and_pickle_input_matches(tmp_path, tiny_converted):
    _, fp32_out = tiny_converted
    state = load_file(TINY)
    pickled = tmp_path / "model_state-tiny.th"
    torch.save({"state_dict": {k: v.float() for k, v in state.items()}}, pickled)
    report = convert_checkpoint(pickled, tmp_path / "fp16", dtype="fp16", config_path=TINY_CONFIG)
    cross_view = load_file(report.written["cross_view"][0])
    pe = [k for k in cross_view if k.endswith("pos_encoder.pe")]
    assert pe and all(cross_view[k].dtype == torch.float32 for k in pe)
    assert all(v.dtype == torch.float16 for k, v in cross_view.items() if k not in pe)
    reference = load_file(fp32_out / COMPONENT_FILES["unet"])
    for key, value in load_file(report.written["unet"][0]).items():
        assert torch.equal(value.float(), reference[key])  # tiny weights are fp16-representable


def test_full_size_manifest_key_set_is_accepted_and_optional_parts_are_reported():
    shapes = manifest_shapes()
    official = load_architecture()
    report = validate_checkpoint_keys(shapes, official)
    assert report.ok and report.n_expected == 2937 and not report.unexpected and not report.missing_optional
    without_optional = {k: s for k, s in shapes.items() if not k.startswith(("first_stage_model.", "cond_stage_model."))}
    without_optional = {k: s for k, s in without_optional.items() if not k.endswith("pos_encoder.pe")}
    report = validate_checkpoint_keys(without_optional, official)
    assert report.ok
    assert report.missing_optional == {
        "VAE (first_stage_model.*)": 248,
        "text encoder (cond_stage_model.*)": 196,
        "cross-view positional tables (pos_encoder.pe)": 54,
    }


def _rejection(found: dict) -> str:
    official = load_architecture()
    with pytest.raises(ConversionError) as caught:
        raise_if_invalid(validate_checkpoint_keys(found, official), found, "model.ckpt", "the official config")
    return str(caught.value)


def test_wrong_files_are_rejected_with_readable_messages():
    shapes = manifest_shapes()
    sd15 = {k: s for k, s in shapes.items() if k.startswith(("first_stage_model.", "cond_stage_model."))}
    sd15 |= {k: s for k, s in shapes.items() if k.startswith("model.diffusion_model.") and "motion" not in k}
    message = _rejection(sd15)
    assert "model.ckpt is not a DiffPortrait3D checkpoint; it looks like a plain Stable Diffusion checkpoint" in message
    assert "expected: 2937 keys" in message and "found:    1130 keys" in message

    lora = {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": (4, 320)}
    assert "it looks like a LoRA" in _rejection(lora)

    truncated = dict(list(shapes.items())[:1500])
    message = _rejection(truncated)
    assert "does not match the DiffPortrait3D architecture" in message
    assert "required keys missing (truncated or partial file?)" in message
    assert "absent parts: pose ControlNet (pose_control_model.*)" in message

    tiny_shaped = dict(shapes)
    tiny_shaped["control_model.time_embed.0.weight"] = (128, 32)
    message = _rejection(tiny_shaped)
    assert "1 shapes differ (another architecture? pass --config)" in message
    assert "control_model.time_embed.0.weight: expected [1280, 320], found [128, 32]" in message


def test_unknown_extra_keys_are_listed_and_not_converted(tmp_path):
    state = load_file(TINY)
    state["control_model.extra_adapter.weight"] = torch.ones(3)
    state["ema_decay"] = torch.ones(())
    source = CheckpointSource.from_tensors(state, "with_extras.safetensors")
    report = convert_source(source, tmp_path, load_architecture(TINY_CONFIG), "fp32", components=("appearance",))
    assert report.unexpected == ["control_model.extra_adapter.weight", "ema_decay"]
    assert report.dropped["ema_decay"].startswith("unknown extra key")
    assert "extra_adapter.weight" not in load_file(report.written["appearance"][0])
    assert list(report.written) == ["appearance"]
    assert "unknown extra keys, not converted (2)" in report.summary()


def test_cli_converts_and_a_rejected_file_writes_nothing(tmp_path, capsys):
    out = tmp_path / "models"
    assert cli_main(["convert", str(TINY), "--out", str(out), "--config", str(TINY_CONFIG), "--only", "unet"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["diffportrait3d_unet.safetensors"]
    assert "diffportrait3d_unet.safetensors" in capsys.readouterr().out
    not_ours = tmp_path / "sd15.safetensors"
    from safetensors.torch import save_file

    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(320, 4, 3, 3)}, str(not_ours))
    rejected_out = tmp_path / "rejected"
    assert cli_main(["convert", str(not_ours), "--out", str(rejected_out)]) == 2
    assert "not a DiffPortrait3D checkpoint" in capsys.readouterr().err
    assert not rejected_out.exists()
