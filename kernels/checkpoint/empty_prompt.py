"""The official model's only prompt, ``''``, as a constant: its CLIP text conditioning, computed once.

DiffPortrait3D always conditions on the empty prompt, so its conditioning is a fixed tensor of the text
encoder's weights. ``convert`` computes it with the converted text encoder and stores it in a small file;
the Empty Prompt node reads that file instead of loading the 250 MB text encoder at run time.

The forward pass is CLIP's text tower as the official ``FrozenCLIPEmbedder`` runs it (transformers
``CLIPTextModel``, layer "last"): token + position embeddings, pre-norm layers with causal self-attention and
quick-GELU MLPs, the final layer norm. The pooled output is the hidden state at the first end token.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

EMPTY_PROMPT_FILE = "diffportrait3d_empty_prompt.safetensors"
START_TOKEN, END_TOKEN = 49406, 49407  # CLIP's <|startoftext|> and <|endoftext|> (also its padding)
CONTEXT_LENGTH = 77
HEAD_WIDTH = 64  # every CLIP text tower's attention head width (ViT-L/14: 768 = 12 heads x 64)
TEXT_PREFIX = "text_model."
LAYER_NORM_EPS = 1e-5


def empty_prompt_tokens(length: int = CONTEXT_LENGTH) -> torch.Tensor:
    """The token ids of ``''``: start, end, then end tokens as padding up to ``length``; shape [1, length]."""
    return torch.tensor([[START_TOKEN] + [END_TOKEN] * (length - 1)])


def text_tower_size(weights: Mapping[str, torch.Tensor]) -> dict:
    """Width, layer count and head count of a converted text encoder (``text_model.*`` keys)."""
    hidden = weights[f"{TEXT_PREFIX}final_layer_norm.weight"].shape[0]
    pattern = re.compile(re.escape(TEXT_PREFIX) + r"encoder\.layers\.(\d+)\.")
    layers = len({match.group(1) for key in weights if (match := pattern.match(key))})
    return {"hidden": hidden, "layers": layers, "heads": max(1, hidden // HEAD_WIDTH)}


@torch.no_grad()
def clip_text_forward(
    weights: Mapping[str, torch.Tensor], tokens: torch.Tensor, heads: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """CLIP's text tower on ``tokens`` [B, L] in float32: (last hidden state after the final layer norm
    [B, L, hidden], pooled output = that state at the first end token [B, hidden])."""

    def w(name: str) -> torch.Tensor:
        return weights[TEXT_PREFIX + name].float()

    size = text_tower_size(weights)
    heads = heads or size["heads"]
    batch, length = tokens.shape
    width = (size["hidden"],)
    x = w("embeddings.token_embedding.weight")[tokens] + w("embeddings.position_embedding.weight")[:length]
    causal = torch.full((length, length), float("-inf")).triu_(1)
    for index in range(size["layers"]):
        layer = f"encoder.layers.{index}."
        h = F.layer_norm(x, width, w(layer + "layer_norm1.weight"), w(layer + "layer_norm1.bias"), LAYER_NORM_EPS)
        q, k, v = (
            F.linear(h, w(f"{layer}self_attn.{n}_proj.weight"), w(f"{layer}self_attn.{n}_proj.bias"))
            .view(batch, length, heads, -1)
            .transpose(1, 2)
            for n in "qkv"
        )
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=causal).transpose(1, 2).reshape(x.shape)
        x = x + F.linear(attended, w(layer + "self_attn.out_proj.weight"), w(layer + "self_attn.out_proj.bias"))
        h = F.layer_norm(x, width, w(layer + "layer_norm2.weight"), w(layer + "layer_norm2.bias"), LAYER_NORM_EPS)
        h = F.linear(h, w(layer + "mlp.fc1.weight"), w(layer + "mlp.fc1.bias"))
        h = h * torch.sigmoid(1.702 * h)  # quick GELU
        x = x + F.linear(h, w(layer + "mlp.fc2.weight"), w(layer + "mlp.fc2.bias"))
    x = F.layer_norm(x, width, w("final_layer_norm.weight"), w("final_layer_norm.bias"), LAYER_NORM_EPS)
    pooled = x[torch.arange(batch), (tokens == END_TOKEN).int().argmax(dim=-1)]
    return x, pooled


def empty_prompt_conditioning(weights: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``{"cond": [1, 77, hidden], "pooled_output": [1, hidden]}`` of ``''`` for a converted text encoder."""
    cond, pooled = clip_text_forward(weights, empty_prompt_tokens())
    return {"cond": cond.contiguous(), "pooled_output": pooled.contiguous()}


def write_empty_prompt(path: str | Path, conditioning: dict[str, torch.Tensor], metadata: dict[str, str]) -> int:
    """Write the conditioning (float32) with ``metadata`` plus its own ``dp3d.component`` and
    ``dp3d.architecture`` records; returns the file size in bytes."""
    cond = conditioning["cond"]
    record = {"prompt": "", "tokens": cond.shape[1], "context_dim": cond.shape[2]}
    metadata = {**metadata, "dp3d.component": "empty_prompt", "dp3d.architecture": json.dumps(record, sort_keys=True)}
    path = Path(path)
    tensors = {key: value.to(torch.float32, copy=True).contiguous() for key, value in conditioning.items()}
    save_file(tensors, str(path), metadata=metadata)
    return path.stat().st_size
