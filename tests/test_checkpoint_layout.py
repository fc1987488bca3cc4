"""The layout derived from the config alone must equal the official model's state dict.

References (external, in ``tests/fixtures``): the manifest of the official model's ``state_dict()``
and the tiny official-layout safetensors file, both produced by running the official code.
"""

from __future__ import annotations

import copy
import json
import re
from functools import cache
from pathlib import Path

import pytest
from safetensors import safe_open

from diffportrait3d.kernels.checkpoint.layout import (
    DIFFUSION_PREFIX,
    cross_view_placements,
    expected_checkpoint_shapes,
    is_buffer_key,
    motion_module_shapes,
)

FIXTURES = Path(__file__).resolve().parent / "fixtures"
MOTION_PREFIX = re.compile(r"^(.*_motion_module\.\d+(?:\.\d+)?)\.temporal_transformer\.")


@cache
def _json(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def official_config() -> dict:
    return copy.deepcopy(_json("official_config.json")["official_yaml_equivalent"])


def tiny_config() -> dict:
    return copy.deepcopy(_json("tiny_config.json")["official_yaml_equivalent"])


def manifest_entries() -> dict[str, dict]:
    return {
        key: entry
        for group in _json("official_checkpoint_manifest.json")["groups"].values()
        for key, entry in group["keys"].items()
    }


def tiny_file_shapes() -> dict[str, tuple[int, ...]]:
    with safe_open(FIXTURES / "tiny_official.safetensors", "pt") as f:
        return {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}


def assert_same_layout(got: dict, expected: dict) -> None:
    missing = sorted(expected.keys() - got.keys())
    extra = sorted(got.keys() - expected.keys())
    mismatched = sorted(key for key in got.keys() & expected.keys() if got[key] != expected[key])
    report = [f"{len(missing)} missing:"] + [f"  {key} {expected[key]}" for key in missing[:20]]
    report += [f"{len(extra)} extra:"] + [f"  {key} {got[key]}" for key in extra[:20]]
    report += [f"{len(mismatched)} shape mismatches:"]
    report += [f"  {key} got {got[key]} expected {expected[key]}" for key in mismatched[:20]]
    assert not (missing or extra or mismatched), "\n".join(report)


def upsampling_output_blocks(keys) -> set[int]:
    pattern = re.compile(rf"^{re.escape(DIFFUSION_PREFIX)}output_blocks\.(\d+)\.\d+\.conv\.weight$")
    return {int(m.group(1)) for key in keys if (m := pattern.match(key))}


def test_official_config_gives_exactly_the_manifest():
    expected = {key: tuple(entry["shape"]) for key, entry in manifest_entries().items()}
    got = expected_checkpoint_shapes(official_config())
    assert len(expected) == 2937
    assert_same_layout(got, expected)


def test_tiny_config_gives_exactly_the_tiny_official_file():
    expected = tiny_file_shapes()
    got = expected_checkpoint_shapes(tiny_config())
    assert len(expected) == 2663
    assert_same_layout(got, expected)


def test_buffer_keys_are_the_manifest_buffers():
    entries = manifest_entries()
    buffers = {key for key, entry in entries.items() if entry["kind"] == "buffer"}
    assert {key for key in entries if is_buffer_key(key)} == buffers
    assert len(buffers) == 13 + 54


def test_official_placements_match_the_manifest_instances():
    unet = official_config()["model"]["params"]["unet_config"]["params"]
    placements = cross_view_placements(unet)
    instances = _json("official_checkpoint_manifest.json")["motion_modules"]["instances"]
    assert len(placements) == 27
    assert [p.key_prefix for p in placements] == [
        i["prefix"].removeprefix(DIFFUSION_PREFIX) for i in instances
    ]
    for place, instance in zip(placements, instances, strict=True):
        assert (place.channels, place.downsample_factor) == (
            instance["channels"],
            instance["downsample_factor"],
        )
        # applied_after reads e.g. "input_blocks[3] (Downsample)" or "middle_block[1] (SpatialTransformer), ..."
        block_name, block_index = re.match(r"(\w+)\[(\d+)\]", instance["applied_after"]).groups()
        assert block_name == ("middle_block" if place.location == "middle" else f"{place.location}_blocks")
        if place.location != "middle":
            assert place.block_index == int(block_index), (place, instance["applied_after"])


@pytest.mark.parametrize("which", ["official", "tiny"])
def test_second_module_exactly_after_upsampling_output_blocks(which):
    if which == "official":
        config, keys = official_config(), manifest_entries().keys()
    else:
        config, keys = tiny_config(), tiny_file_shapes().keys()
    placements = cross_view_placements(config["model"]["params"]["unet_config"]["params"])
    seconds = {p.block_index for p in placements if p.order == 1}
    assert all(p.location == "output" for p in placements if p.order == 1)
    assert seconds == upsampling_output_blocks(keys) and seconds
    stored = {m.group(1) for key in keys if (m := MOTION_PREFIX.match(key.removeprefix(DIFFUSION_PREFIX)))}
    assert {p.key_prefix for p in placements} == stored


def test_tiny_placement_channels_match_the_pe_tables():
    unet = tiny_config()["model"]["params"]["unet_config"]["params"]
    shapes = tiny_file_shapes()
    for place in cross_view_placements(unet):
        pe = f"{DIFFUSION_PREFIX}{place.key_prefix}.temporal_transformer.transformer_blocks.0.attention_blocks.0.pos_encoder.pe"
        assert shapes[pe] == (1, 32, place.channels)


def test_without_motion_modules_there_are_none():
    config = official_config()
    unet = config["model"]["params"]["unet_config"]["params"]
    unet["unet_additional_kwargs"]["use_motion_module"] = False
    assert cross_view_placements(unet) == []
    assert motion_module_shapes(unet) == {}
    got = expected_checkpoint_shapes(config)
    assert not any("motion_module" in key for key in got)
    assert len(got) == 2937 - 756


def test_the_shipped_architectures_are_the_fixtures():
    """The package carries the official and the tiny architecture (the converter's default and the benchmark's
    quick model); they must stay the ones the fixtures' checkpoints were made with."""
    from diffportrait3d.kernels.checkpoint.convert import (
        OFFICIAL_CONFIG_PATH,
        TINY_CONFIG_PATH,
        load_architecture,
    )

    assert load_architecture(OFFICIAL_CONFIG_PATH) == official_config()
    assert load_architecture(TINY_CONFIG_PATH) == tiny_config()
    assert load_architecture(TINY_CONFIG_PATH) != load_architecture(OFFICIAL_CONFIG_PATH)
