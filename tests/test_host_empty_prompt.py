"""The empty prompt as a constant: what convert stores equals core CLIPTextEncode('') with the converted text encoder."""

import json
from pathlib import Path

import pytest
import torch

from diffportrait3d.kernels.checkpoint.convert import convert_source, load_architecture
from diffportrait3d.kernels.checkpoint.layout import TEXT_TRANSFORMER_PREFIX
from diffportrait3d.kernels.checkpoint.source import CheckpointSource

pytestmark = pytest.mark.host
FIXTURES = Path(__file__).parent / "fixtures"
FLOAT32_EPS = torch.finfo(torch.float32).eps


def official_checkpoint_with_random_text_encoder(seed: int = 0) -> dict[str, torch.Tensor]:
    """Every key of the official checkpoint: zero-stride views (no memory), except the CLIP ViT-L/14 text
    encoder, which gets seeded random weights (matrices ~ N(0, 1/fan_in), norm weights ~ 1 + N(0, 0.1^2),
    biases ~ N(0, 0.05^2); embeddings ~ N(0, 1) scaled like matrices)."""
    manifest = json.loads((FIXTURES / "official_checkpoint_manifest.json").read_text())
    zero = torch.zeros(())
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for group in manifest["groups"].values():
        for key, entry in group["keys"].items():
            shape = entry["shape"]
            if not key.startswith(TEXT_TRANSFORMER_PREFIX) or key.endswith("position_ids"):
                tensors[key] = zero.expand(shape)
                continue
            values = torch.randn(shape, generator=generator)
            if len(shape) >= 2:
                values *= shape[-1] ** -0.5
            elif "norm" in key and key.endswith("weight"):
                values = 1 + 0.1 * values
            else:
                values *= 0.05
            tensors[key] = values
    return tensors


@pytest.mark.slow
def test_empty_prompt_node_equals_clip_text_encode_of_the_converted_text_encoder(comfy_host, tmp_path):
    import comfy.sd
    from nodes import CLIPTextEncode

    from diffportrait3d.nodes.model_loading import load_empty_prompt

    report = convert_source(
        CheckpointSource.from_tensors(official_checkpoint_with_random_text_encoder(), "model_state-540000-001.th"),
        tmp_path, load_architecture(), "fp16", components=("text_encoder", "empty_prompt"),
    )
    assert set(report.written) == {"text_encoder", "empty_prompt"}
    clip = comfy.sd.load_clip(
        ckpt_paths=[str(report.written["text_encoder"][0])], clip_type=comfy.sd.CLIPType.STABLE_DIFFUSION
    )
    (expected,) = CLIPTextEncode().encode(clip, "")
    (produced,) = load_empty_prompt(str(report.written["empty_prompt"][0]))

    assert produced[0].shape == expected[0][0].shape == (1, 77, 768)
    # Same weights (fp16 in the file, float32 maths on both sides), different attention and matmul kernels:
    # float32 rounding, ~sqrt(K) eps per product of length K <= 3072, over 2 products per sublayer in 12 layers,
    # relative to the largest activation.
    scale = expected[0][0].abs().max()
    tolerance = 24 * 3072**0.5 * FLOAT32_EPS * scale
    difference = (produced[0] - expected[0][0]).abs().max()
    print(f"empty prompt cond: max |diff| {difference:.2e}, tolerance {tolerance:.2e}, scale {scale:.2f}")
    assert difference <= tolerance
    pooled = (produced[1]["pooled_output"] - expected[0][1]["pooled_output"]).abs().max()
    assert produced[1]["pooled_output"].shape == (1, 768)
    assert pooled <= tolerance


def test_empty_prompt_node_refuses_files_that_are_not_an_empty_prompt(comfy_host, tiny_model_files, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save_file

    from diffportrait3d.kernels.checkpoint.errors import ConversionError
    from diffportrait3d.nodes.model_loading import load_empty_prompt

    good = tiny_model_files / "diffportrait3d_empty_prompt.safetensors"
    (cond, extra), = load_empty_prompt(str(good))
    assert cond.shape == (1, 77, 32) and extra["pooled_output"].shape == (1, 32)  # the tiny model's context width
    with pytest.raises(ConversionError, match="empty_prompt: diffportrait3d_vae.safetensors holds the DiffPortrait3D 'vae'"):
        load_empty_prompt(str(tiny_model_files / "diffportrait3d_vae.safetensors"))
    with safe_open(str(good), "pt") as handle:
        metadata = dict(handle.metadata())
    for name, tensors in {
        "wide.safetensors": {"cond": torch.zeros(1, 77, 768), "pooled_output": torch.zeros(1, 768)},
        "extra.safetensors": {"cond": cond, "pooled_output": extra["pooled_output"], "x": torch.zeros(1)},
        "no_pooled.safetensors": {"cond": cond},
    }.items():
        save_file(tensors, str(tmp_path / name), metadata=metadata)
        with pytest.raises(ConversionError, match=rf"empty_prompt: {name} does not hold exactly a \[1, tokens, 32\]"):
            load_empty_prompt(str(tmp_path / name))
