"""DiffPortrait360's two checkpoints: recognised by their keys, laid out from a config, converted into their own files.

References (external, in ``tests/fixtures``): the key manifests of the full-size 360 and back-head models and
the tiny official-layout files, all produced by running the official DiffPortrait360 code
(``tiny360/``), and DiffPortrait3D's manifest.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import pytest
from safetensors import safe_open
from safetensors.torch import load_file

from diffportrait3d.kernels.checkpoint.convert import convert_checkpoint, convert_source, load_architecture
from diffportrait3d.kernels.checkpoint.errors import ConversionError
from diffportrait3d.kernels.checkpoint.families import DP3D, DP360, DP360_BACKHEAD, detect_family
from diffportrait3d.kernels.checkpoint.layout import RESBLOCK_INPUTS_AND_OUTPUTS
from diffportrait3d.kernels.checkpoint.source import CheckpointSource

FIXTURES = Path(__file__).resolve().parent / "fixtures"
TINY360 = FIXTURES / "tiny360"
CASES = {  # family -> (full-size manifest, tiny file, tiny config)
    "dp360": (TINY360 / "manifest_360.json", TINY360 / "tiny_360.safetensors", TINY360 / "tiny_360_config.json"),
    "dp360_backhead": (
        TINY360 / "manifest_backhead.json",
        TINY360 / "tiny_backhead.safetensors",
        TINY360 / "tiny_backhead_config.json",
    ),
}
FAMILIES = {"dp360": DP360, "dp360_backhead": DP360_BACKHEAD}


@cache
def manifest_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    groups = json.loads(path.read_text())["groups"]
    return {key: tuple(entry["shape"]) for group in groups.values() for key, entry in group["keys"].items()}


def file_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    with safe_open(path, "pt") as handle:
        return {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}


def assert_same(got: dict, expected: dict) -> None:
    assert sorted(expected.keys() - got.keys()) == [], "missing"
    assert sorted(got.keys() - expected.keys()) == [], "extra"
    assert {k: got[k] for k in expected if got[k] != expected[k]} == {}, "shapes"


@pytest.mark.parametrize("name", CASES)
def test_full_size_config_gives_exactly_the_manifest(name):
    family = FAMILIES[name]
    expected = manifest_shapes(CASES[name][0])
    assert len(expected) == {"dp360": 2726, "dp360_backhead": 2166}[name]
    assert_same(family.expected_shapes(load_architecture(family.config_path)), expected)


@pytest.mark.parametrize("name", CASES)
def test_tiny_config_gives_exactly_the_tiny_official_file(name):
    _, tiny, config = CASES[name]
    assert_same(FAMILIES[name].expected_shapes(load_architecture(config)), file_shapes(tiny))


def test_families_are_recognised_by_keys_alone():
    assert detect_family(manifest_shapes(CASES["dp360"][0])) is DP360
    assert detect_family(manifest_shapes(CASES["dp360_backhead"][0])) is DP360_BACKHEAD
    assert detect_family(manifest_shapes(FIXTURES / "official_checkpoint_manifest.json")) is DP3D
    assert detect_family(file_shapes(FIXTURES / "tiny_official.safetensors")) is DP3D
    sd15 = {k for k in manifest_shapes(CASES["dp360_backhead"][0]) if k.startswith("model.diffusion_model.")}
    assert detect_family(sd15) is None


def test_the_360_placement_follows_the_manifest():
    """Input modules after the blocks holding a ResBlock, none in the middle, one after every output block."""
    manifest = json.loads(CASES["dp360"][0].read_text())["motion_modules"]
    from diffportrait3d.kernels.checkpoint.layout import cross_view_placements

    unet = load_architecture(DP360.config_path)["model"]["params"]["unet_config"]["params"]
    placements = cross_view_placements(unet, RESBLOCK_INPUTS_AND_OUTPUTS)
    inputs = [p.block_index for p in placements if p.location == "input"]
    assert inputs == [1, 2, 4, 5, 7, 8, 10, 11]
    assert [p.block_index for p in placements if p.location == "output"] == list(range(12))
    assert all(p.order == 0 for p in placements) and not [p for p in placements if p.location == "middle"]
    assert manifest["count_instances"] == len(placements) == 20


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    out = tmp_path_factory.mktemp("dp360")
    reports = {
        name: convert_checkpoint(tiny, out, dtype="fp32", config_path=config) for name, (_, tiny, config) in CASES.items()
    }
    return out, reports


def metadata_of(path: Path) -> dict:
    with safe_open(path, "pt") as handle:
        return handle.metadata()


def test_the_360_conversion_records_family_and_placement(converted):
    out, reports = converted
    report = reports["dp360"]
    assert report.family == "dp360"
    assert {c: p.name for c, (p, _, _) in report.written.items()} == {
        "unet": "diffportrait360_unet.safetensors",
        "appearance": "diffportrait360_appearance.safetensors",
        "pose_controlnet": "diffportrait360_pose_controlnet.safetensors",
        "cross_view": "diffportrait360_cross_view.safetensors",
        "vae": "diffportrait360_vae.safetensors",
    }  # the tiny model has no text encoder, so no empty prompt either
    metadata = metadata_of(out / "diffportrait360_cross_view.safetensors")
    assert metadata["dp3d.family"] == "dp360"
    placements = json.loads(metadata["dp3d.placement"])
    assert [(p["location"], p["block_index"], p["order"]) for p in placements] == [
        ("input", i, 0) for i in (1, 2, 4, 5, 7, 8, 10, 11)
    ] + [("output", j, 0) for j in range(12)]
    assert [p["key_prefix"] for p in placements[:3]] == [f"input_blocks_motion_module.{k}.0" for k in range(3)]
    assert json.loads(metadata["dp3d.cross_view"]) == {
        "rule": RESBLOCK_INPUTS_AND_OUTPUTS,
        "middle_module": False,
        "positional_length": 24,
        "branches": ["cond", "uncond"],
    }
    keys = set(file_shapes(out / "diffportrait360_cross_view.safetensors"))
    assert {k.split(".temporal_transformer.")[0] for k in keys} == {p["key_prefix"] for p in placements}


def test_the_back_head_conversion_writes_its_own_three_files(converted):
    out, reports = converted
    report = reports["dp360_backhead"]
    assert sorted(p.name for p, _, _ in report.written.values()) == [
        "diffportrait360_backhead_appearance.safetensors",
        "diffportrait360_backhead_pose_controlnet.safetensors",
        "diffportrait360_backhead_unet.safetensors",
    ]
    assert all(metadata_of(p)["dp3d.family"] == "dp360_backhead" for p, _, _ in report.written.values())
    vae_keys = [k for k in report.dropped if k.startswith("first_stage_model.")]
    assert vae_keys and "convert model_state-340000.th" in report.dropped[vae_keys[0]]


def test_a_360_checkpoint_with_the_wrong_config_is_refused_by_its_family():
    """DiffPortrait3D's tiny config on the tiny 360 file: the 360 layout of it (positional tables of 32, not 24)."""
    source = CheckpointSource.from_tensors(load_file(CASES["dp360"][1]), "model_state-340000.th")
    with pytest.raises(ConversionError) as caught:
        convert_source(source, "/nonexistent", load_architecture(FIXTURES / "tiny_config.json"), "fp32", "tiny_config.json")
    message = str(caught.value)
    assert "does not match the DiffPortrait360 architecture in tiny_config.json" in message
    assert "SD1.5 UNet with 20 cross-view modules" in message
    assert "pos_encoder.pe: expected [1, 32, 32], found [1, 24, 32]" in message


def test_cli_converts_a_back_head_pickle_recognised_by_its_keys(tmp_path, capsys):
    """A .th file (torch.save of {'state_dict': ...}, read with weights_only) under a name that says nothing."""
    import torch

    from diffportrait3d.cli.main import main as cli_main

    checkpoint = tmp_path / "model_state-540000-001.th"  # DiffPortrait3D's name: the keys decide
    torch.save({"state_dict": load_file(CASES["dp360_backhead"][1])}, checkpoint)
    out = tmp_path / "models"
    config = str(CASES["dp360_backhead"][2])
    assert cli_main(["convert", str(checkpoint), "--out", str(out), "--config", config, "--dtype", "fp32"]) == 0
    assert "DiffPortrait360 back-of-head generator checkpoint" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == [
        "diffportrait360_backhead_appearance.safetensors",
        "diffportrait360_backhead_pose_controlnet.safetensors",
        "diffportrait360_backhead_unet.safetensors",
    ]


@pytest.mark.parametrize("name", CASES)
def test_the_full_size_checkpoints_validate_with_nothing_missing_or_extra(name):
    from diffportrait3d.kernels.checkpoint.validation import validate_checkpoint_keys

    family = FAMILIES[name]
    shapes = manifest_shapes(CASES[name][0])
    assert detect_family(shapes) is family
    report = validate_checkpoint_keys(shapes, load_architecture(family.config_path), family)
    assert report.ok and report.missing_optional == {} and report.unexpected == []
    assert "cond_stage_model.transformer.text_model.embeddings.position_ids" in shapes


def test_every_key_of_the_full_size_360_checkpoint_has_a_place():
    """Routing of the real 360 checkpoint's keys (from its manifest): the component sizes of the issue's table."""
    from collections import Counter

    from diffportrait3d.kernels.checkpoint.components import route_key

    routes = [route_key(key) for key in manifest_shapes(CASES["dp360"][0])]
    assert Counter(r.component for r in routes if r.component) == {
        "unet": 686, "cross_view": 560, "appearance": 682, "pose_controlnet": 340, "vae": 248, "text_encoder": 196,
    }
    dropped = Counter(r.dropped_reason.split(":")[0] for r in routes if r.component is None)
    assert dropped == {"DDPM schedule buffer": 13, "CLIP position ids": 1}
