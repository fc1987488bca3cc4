"""The CLIP text forward that computes the empty prompt's conditioning (no host needed)."""

import torch

from diffportrait3d.bench.random_weights import random_weight
from diffportrait3d.kernels.checkpoint.empty_prompt import (
    END_TOKEN,
    START_TOKEN,
    TEXT_PREFIX,
    clip_text_forward,
    empty_prompt_conditioning,
    empty_prompt_tokens,
)
from diffportrait3d.kernels.checkpoint.layout import clip_text_shapes

TOWER = {"hidden": 64, "layers": 2, "mlp": 256, "vocab": 49408, "positions": 77}


def random_text_tower(seed=0):
    generator = torch.Generator().manual_seed(seed)
    return {key: random_weight(key, shape, generator) for key, shape in clip_text_shapes(TEXT_PREFIX, TOWER).items()}


def test_empty_prompt_tokens_are_start_then_end_tokens_as_padding():
    tokens = empty_prompt_tokens()
    assert tokens.shape == (1, 77)
    assert tokens[0, 0] == START_TOKEN and bool((tokens[0, 1:] == END_TOKEN).all())


def test_attention_is_causal_and_pooled_is_the_state_at_the_first_end_token():
    weights = random_text_tower()
    conditioning = empty_prompt_conditioning(weights)
    cond, pooled = conditioning["cond"], conditioning["pooled_output"]
    assert cond.shape == (1, 77, 64) and pooled.shape == (1, 64)
    assert torch.equal(pooled, cond[:, 1])
    # Causal: the first 5 positions do not see the rest, so a 5-token prompt gives the same first 5 states. The
    # masked terms are exact zeros; only float32 rounding of differently blocked sums remains: a few eps per
    # product of length <= 256 (sqrt(256) = 16), in 2 layers, relative to the largest state.
    short, _ = clip_text_forward(weights, empty_prompt_tokens(5))
    tolerance = 2 * 2 * 16 * torch.finfo(torch.float32).eps * cond.abs().max()
    assert (short - cond[:, :5]).abs().max() <= tolerance
    # The padding tokens are the same id, yet every position has its own state (position embeddings).
    assert (cond[0, 2] - cond[0, 3]).abs().max() > 1e-3
    assert torch.isfinite(cond).all()


def test_convert_only_empty_prompt_adds_just_that_file(tmp_path):
    """For files converted before the Empty Prompt node existed: ``--only empty_prompt`` reads the text encoder
    and writes only the small file, with its dp3d records."""
    import json
    from pathlib import Path

    from safetensors import safe_open

    from diffportrait3d.kernels.checkpoint.convert import convert_source, load_architecture
    from diffportrait3d.kernels.checkpoint.source import CheckpointSource

    manifest = json.loads((Path(__file__).parent / "fixtures" / "official_checkpoint_manifest.json").read_text())
    zero = torch.zeros(())
    tensors = {k: zero.expand(e["shape"]) for g in manifest["groups"].values() for k, e in g["keys"].items()}
    report = convert_source(CheckpointSource.from_tensors(tensors, "model_state-540000-001.th"), tmp_path,
                            load_architecture(), "fp16", source_sha256="ab" * 32, components=("empty_prompt",))
    assert list(report.written) == ["empty_prompt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["diffportrait3d_empty_prompt.safetensors"]
    with safe_open(str(report.written["empty_prompt"][0]), "pt") as handle:
        metadata = handle.metadata()
        assert handle.get_slice("cond").get_shape() == [1, 77, 768]
        assert handle.get_slice("pooled_output").get_shape() == [1, 768]
    assert metadata["dp3d.component"] == "empty_prompt" and metadata["dp3d.source_sha256"] == "ab" * 32
    assert json.loads(metadata["dp3d.architecture"]) == {"context_dim": 768, "prompt": "", "tokens": 77}
    assert metadata["dp3d.text_encoder_dtype"] == "fp16"
