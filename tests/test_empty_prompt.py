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
