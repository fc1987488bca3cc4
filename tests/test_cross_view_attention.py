"""Cross-view modules against the tiny official weights and a naive re-derivation of the official math."""

from __future__ import annotations

import copy
import json
import math
from dataclasses import asdict
from functools import cache
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from diffportrait3d.kernels.checkpoint.layout import DIFFUSION_PREFIX, cross_view_placements
from diffportrait3d.kernels.model.cross_view_attention import CrossViewModule, CrossViewModuleSet
from diffportrait3d.kernels.model.view_windows import ViewWindows, official_windows, plan_view_windows

FIXTURES = Path(__file__).resolve().parent / "fixtures"
HEADS = 2  # tiny config: motion_module_kwargs.num_attention_heads


@cache
def tiny_unet_params() -> dict:
    config = json.loads((FIXTURES / "tiny_config.json").read_text())["official_yaml_equivalent"]
    return config["model"]["params"]["unet_config"]["params"]


@cache
def _motion_state_dict() -> dict[str, torch.Tensor]:
    tensors = load_file(FIXTURES / "tiny_official.safetensors")
    return {
        key[len(DIFFUSION_PREFIX) :]: value.float()
        for key, value in tensors.items()
        if key.startswith(DIFFUSION_PREFIX) and "_motion_module." in key
    }


@pytest.fixture(scope="module")
def state_dict() -> dict[str, torch.Tensor]:
    return _motion_state_dict()


@pytest.fixture(scope="module")
def module_set(state_dict) -> CrossViewModuleSet:
    settings = tiny_unet_params()["unet_additional_kwargs"]["motion_module_kwargs"]
    modules = CrossViewModuleSet(
        cross_view_placements(tiny_unet_params()),
        heads=settings["num_attention_heads"],
        max_len=settings["temporal_position_encoding_max_len"],
    )
    modules.load_state_dict(state_dict, strict=True)
    return modules.eval()


@pytest.fixture(scope="module")
def module(module_set) -> CrossViewModule:
    return module_set.module_at("input", 1)  # 32 channels


@pytest.fixture(scope="module")
def wide_module(module_set) -> CrossViewModule:
    return module_set.module_at("output", 2, order=1)  # 64 channels, second after the upsampler


def views(n_views: int, channels: int = 32, size: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randn(n_views, channels, size, size, generator=torch.Generator().manual_seed(seed))


def run(module, x, windows, **kwargs):
    with torch.no_grad():
        return module(x, windows, **kwargs)


# ------------------------------------------------------------------ naive reference, from the math


def naive_cross_view(params: dict, x: torch.Tensor, windows: list[list[int]], weights: list[list[float]]):
    """README "Motion modules" step by step in float64, one window / position / head at a time.

    ``params``: one module's state dict without its prefix. Each attention output of window w for
    its i-th view is added to that view's row with weight ``weights[w][i]`` (official: all 1).
    """
    p = {k.removeprefix("temporal_transformer."): v.double() for k, v in params.items()}
    x = x.double()
    n_views, channels, height, width = x.shape
    head_dim = channels // HEADS

    def linear(name, t, bias=True):
        out = t @ p[f"{name}.weight"].T
        return out + p[f"{name}.bias"] if bias else out

    def layer_norm(name, t):
        mean = t.mean(-1, keepdim=True)
        var = ((t - mean) ** 2).mean(-1, keepdim=True)
        return (t - mean) / torch.sqrt(var + 1e-5) * p[f"{name}.weight"] + p[f"{name}.bias"]

    # 1. GroupNorm(32) per view, then tokens [view, position, channel]
    groups = x.reshape(n_views, 32, -1)
    mean = groups.mean(-1, keepdim=True)
    var = ((groups - mean) ** 2).mean(-1, keepdim=True)
    normed = ((groups - mean) / torch.sqrt(var + 1e-6)).reshape(n_views, channels, height * width)
    normed = normed * p["norm.weight"][:, None] + p["norm.bias"][:, None]
    h = linear("proj_in", normed.transpose(1, 2))

    # 2. the transformer block
    block = "transformer_blocks.0"
    for a in (0, 1):
        att = f"{block}.attention_blocks.{a}"
        y = layer_norm(f"{block}.norms.{a}", h)
        mixed = torch.zeros_like(h)
        for window, window_weights in zip(windows, weights, strict=True):
            for position in range(height * width):
                tokens = (
                    torch.stack([y[v, position] for v in window])
                    + p[f"{att}.pos_encoder.pe"][0, : len(window)]
                )
                q = linear(f"{att}.to_q", tokens, bias=False)
                k = linear(f"{att}.to_k", tokens, bias=False)
                v = linear(f"{att}.to_v", tokens, bias=False)
                heads_out = []
                for head in range(HEADS):
                    cols = slice(head * head_dim, (head + 1) * head_dim)
                    scores = torch.einsum("id,jd->ij", q[:, cols], k[:, cols]) / math.sqrt(head_dim)
                    heads_out.append(torch.softmax(scores, dim=-1) @ v[:, cols])
                out = linear(f"{att}.to_out.0", torch.cat(heads_out, dim=-1))
                for i, view in enumerate(window):
                    mixed[view, position] += window_weights[i] * out[i]
        h = mixed + h
    projected = linear(f"{block}.ff.net.0.proj", layer_norm(f"{block}.ff_norm", h))
    value, gate = projected[..., : 4 * channels], projected[..., 4 * channels :]
    gelu = 0.5 * gate * (1 + torch.erf(gate / math.sqrt(2)))
    h = linear(f"{block}.ff.net.2", value * gelu) + h

    # 3. back to images, residual
    out = linear("proj_out", h).transpose(1, 2).reshape(n_views, channels, height, width)
    return out + x


def module_params(state_dict, prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) + 1 :]: v for k, v in state_dict.items() if k.startswith(prefix + ".")}


def plan_lists(plan: ViewWindows):
    return [w.tolist() for w in plan.windows], [w.tolist() for w in plan.weights]


# ------------------------------------------------------------------------------------ loading


def test_tiny_weights_load_strictly_into_all_27_modules(module_set, state_dict):
    placements = module_set.placements()
    assert len(placements) == 27
    assert placements == cross_view_placements(tiny_unet_params())  # already execution order
    assert set(module_set.state_dict()) == set(state_dict)  # strict load covered the pe buffers too
    assert sum(key.endswith("pos_encoder.pe") for key in module_set.state_dict()) == 2 * 27


def test_module_at_returns_the_module_loaded_from_that_prefix(module_set, state_dict):
    for place in module_set.placements():
        loaded = module_set.module_at(place.location, place.block_index, place.order).state_dict()
        expected = module_params(state_dict, place.key_prefix)
        assert loaded.keys() == expected.keys()
        assert all(torch.equal(loaded[k], expected[k]) for k in expected), place.key_prefix


def test_module_set_accepts_placement_dicts_and_rejects_gaps():
    placements = [asdict(p) for p in cross_view_placements(tiny_unet_params())]
    modules = CrossViewModuleSet(placements, heads=HEADS)
    assert modules.state_dict().keys() == _motion_state_dict().keys()
    with pytest.raises(ValueError, match="without gaps"):
        CrossViewModuleSet(
            [p for p in placements if p["key_prefix"] != "input_blocks_motion_module.4.0"], heads=HEADS
        )
    with pytest.raises(KeyError, match="no cross-view module"):
        modules.module_at("input", 0)


def test_fresh_positional_tables_equal_the_stored_ones(state_dict):
    fresh = CrossViewModule(32, HEADS).state_dict()
    key = "temporal_transformer.transformer_blocks.0.attention_blocks.0.pos_encoder.pe"
    torch.testing.assert_close(fresh[key], state_dict[f"input_blocks_motion_module.0.0.{key}"])


# ------------------------------------------------------------------------------ maths vs naive


@pytest.mark.parametrize("n_views", [8, 16, 1])
def test_official_windows_match_naive_reference(module, state_dict, n_views):
    x = views(n_views, seed=n_views)
    plan = official_windows(n_views)
    expected = naive_cross_view(
        module_params(state_dict, "input_blocks_motion_module.0.0"), x, *plan_lists(plan)
    )
    torch.testing.assert_close(run(module, x, plan).double(), expected, atol=1e-5, rtol=1e-5)


def test_wide_module_matches_naive_reference(wide_module, state_dict):
    x = views(8, channels=64, size=2, seed=3)
    plan = official_windows(8)
    expected = naive_cross_view(
        module_params(state_dict, "output_blocks_motion_module.2.1"), x, *plan_lists(plan)
    )
    torch.testing.assert_close(run(wide_module, x, plan).double(), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("mode", "n_views"), [("sliding", 14), ("looped", 12), ("official", 13)])
def test_overlapping_and_uneven_windows_match_naive_reference(module, state_dict, mode, n_views):
    x = views(n_views, size=2, seed=7)
    plan = plan_view_windows(mode, n_views, size=8, stride=3)
    expected = naive_cross_view(
        module_params(state_dict, "input_blocks_motion_module.0.0"), x, *plan_lists(plan)
    )
    torch.testing.assert_close(run(module, x, plan).double(), expected, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------- window effects


def test_views_mix_only_within_their_window(module):
    x = views(16)
    plan = official_windows(16)
    before = run(module, x, plan)
    x[9] += torch.randn(x[9].shape, generator=torch.Generator().manual_seed(1))
    after = run(module, x, plan)
    assert torch.equal(after[:8], before[:8])
    for view in range(8, 16):
        assert not torch.allclose(after[view], before[view], atol=1e-4), view


def test_sliding_receptive_field_spans_two_window_hops(module):
    """Each of the two attention steps mixes within windows: view 0 reaches 0..7, then 4..11."""
    x = views(16)
    plan = plan_view_windows("sliding", 16, size=8, stride=4)  # [0..7], [4..11], [8..15]
    before = run(module, x, plan)
    x[0] += torch.randn(
        x[0].shape, generator=torch.Generator().manual_seed(1)
    )  # not a constant: GroupNorm hides those
    after = run(module, x, plan)
    assert torch.equal(after[12:], before[12:])
    assert all(not torch.allclose(after[v], before[v], atol=1e-4) for v in range(12))


@pytest.mark.parametrize("n_views", [1, 5, 8])
def test_a_single_window_of_all_views_equals_official(module, n_views):
    x = views(n_views)
    official = run(module, x, official_windows(n_views))
    for mode in ("sliding", "looped"):
        assert torch.equal(run(module, x, plan_view_windows(mode, n_views, size=8)), official)
    # larger windows: sliding whose one window covers all 12 views == the official plan of size 12
    x = views(12)
    assert torch.equal(
        run(module, x, plan_view_windows("sliding", 12, size=12, stride=5)),
        run(module, x, official_windows(12, 12)),
    )


@pytest.mark.parametrize(
    ("n_views", "size", "stride", "shift"), [(16, 8, 4, 4), (16, 8, 4, 12), (10, 8, 1, 3)]
)
def test_looped_mode_is_equivariant_to_cyclic_shifts(module, n_views, size, stride, shift):
    x = views(n_views, size=2)
    plan = plan_view_windows("looped", n_views, size=size, stride=stride)
    out = run(module, x, plan)
    shifted = run(module, torch.roll(x, shift, dims=0), plan)
    torch.testing.assert_close(shifted, torch.roll(out, shift, dims=0), atol=1e-5, rtol=1e-5)


def test_sliding_mode_is_not_shift_equivariant(module):
    """The equivariance check above can fail: the ends of sliding windows break it."""
    x = views(16, size=2)
    plan = plan_view_windows("sliding", 16, size=8, stride=4)
    out, shifted = run(module, x, plan), run(module, torch.roll(x, 4, dims=0), plan)
    assert not torch.allclose(shifted, torch.roll(out, 4, dims=0), atol=1e-3)


# ------------------------------------------------------------------------- shapes, dtypes, calls


@pytest.mark.parametrize("mode", ["official", "sliding", "looped"])
def test_64_views_keep_shape_and_stay_finite(module, mode):
    x = views(64, size=2)
    out = run(module, x, plan_view_windows(mode, 64))
    assert out.shape == x.shape and out.dtype == x.dtype and bool(out.isfinite().all())


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_dtype_argument_builds_layers_and_output_keeps_it(state_dict, dtype):
    module = CrossViewModule(32, HEADS, dtype=dtype)
    module.load_state_dict(module_params(state_dict, "input_blocks_motion_module.0.0"))
    assert {t.dtype for t in module.state_dict().values()} == {dtype}
    x = views(8)
    out = run(module, x.to(dtype), official_windows(8))
    assert out.dtype == dtype and out.shape == x.shape
    reference = run(module.double(), x.double(), official_windows(8))
    torch.testing.assert_close(
        out.double(), reference, atol=0.1 if dtype == torch.bfloat16 else 1e-12, rtol=0.05
    )


def test_custom_attention_is_called_once_per_window_length(module):
    calls = []

    def naive_attention(q, k, v, heads):
        calls.append(tuple(q.shape))
        q, k, v = (t.unflatten(-1, (heads, -1)).transpose(-2, -3) for t in (q, k, v))
        scores = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
        return (scores @ v).transpose(-2, -3).flatten(-2)

    x = views(13, size=2)
    plan = official_windows(13)
    out = run(module, x, plan, attention=naive_attention)
    torch.testing.assert_close(out, run(module, x, plan), atol=1e-5, rtol=1e-5)
    # two attention blocks x two window lengths (8 and 5), N = windows * positions
    assert calls == [(4, 8, 32), (4, 5, 32)] * 2
    calls.clear()
    run(module, views(64, size=2), plan_view_windows("sliding", 64), attention=naive_attention)
    assert calls == [(15 * 4, 8, 32)] * 2
    calls.clear()
    # views cut in order into windows attend in place: [windows, positions, views, channels]
    x = views(16, size=2)
    out = run(module, x, official_windows(16), attention=naive_attention)
    torch.testing.assert_close(out, run(module, x, official_windows(16)), atol=1e-5, rtol=1e-5)
    assert calls == [(2, 4, 8, 32)] * 2


def test_operations_provide_every_layer(state_dict):
    made = []

    def recording(base):
        class Recorded(base):
            def __init__(self, *args, **kwargs):
                made.append((base.__name__, kwargs.get("dtype"), kwargs.get("device")))
                super().__init__(*args, **kwargs)

        return Recorded

    ops = SimpleNamespace(
        **{name: recording(getattr(torch.nn, name)) for name in ("Linear", "LayerNorm", "GroupNorm")}
    )
    module = CrossViewModule(32, HEADS, operations=ops, dtype=torch.float32, device="cpu")
    leaves = [m for m in module.modules() if any(True for _ in m.parameters(recurse=False))]
    assert (
        len(leaves) == len(made) == 16
    )  # GroupNorm, proj_in/out, 2 x (q, k, v, out, LayerNorm), ff (2), ff_norm
    assert all(dtype == torch.float32 and device == "cpu" for _, dtype, device in made)
    module.load_state_dict(module_params(state_dict, "input_blocks_motion_module.0.0"), strict=True)


def test_errors_for_wrong_view_count_and_too_long_windows(module):
    with pytest.raises(ValueError, match="n_views=8"):
        run(module, views(9), official_windows(8))
    with pytest.raises(ValueError, match="max_len 32"):
        run(module, views(40, size=1), official_windows(40, size=40))


def test_module_set_from_unet_params_matches_explicit_construction():
    built = CrossViewModuleSet.from_unet_params(copy.deepcopy(tiny_unet_params()))
    assert built.placements() == cross_view_placements(tiny_unet_params())
    assert (
        built.module_at("middle", 0).temporal_transformer.transformer_blocks[0].attention_blocks[0].heads
        == HEADS
    )


# ------------------------------------------------------------------------------ fast paths, layout


@pytest.mark.parametrize("n_views", [8, 16, 5])
def test_consecutive_windows_in_place_equal_the_gathered_path(module, n_views):
    """The official grouping attends in place; the same windows listed in another order take the general
    gather-and-blend path, and both give the same views."""
    x = views(n_views, seed=20 + n_views)
    plan = official_windows(n_views)
    assert plan.consecutive_length == min(n_views, 8)
    shuffled = ViewWindows(plan.windows[::-1], plan.weights[::-1], n_views)
    assert shuffled.consecutive_length is None or len(plan.windows) == 1
    torch.testing.assert_close(run(module, x, plan), run(module, x, shuffled), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("mode", ["official", "sliding"])
def test_block_in_position_slices_equals_one_pass(module, mode, monkeypatch):
    """The CPU wing's sliced block runs over slices of positions on a CPU; nothing in the block mixes
    positions, so slices of 3 positions (uneven: 16 positions) give the one-pass result."""
    from diffportrait3d.kernels.cpu.view_blocks import SlicedViewTransformerBlock
    from diffportrait3d.kernels.model.cross_view_attention import (
        ViewTransformerBlock,
        short_sequence_attention,
    )

    block = module.temporal_transformer.transformer_blocks[0]
    tokens = torch.randn(8, 16, 32, generator=torch.Generator().manual_seed(5))
    plan = plan_view_windows(mode, 8, 4, 2, "pyramid")
    calls = []
    transform = ViewTransformerBlock.forward
    monkeypatch.setattr(ViewTransformerBlock, "forward",
                        lambda self, h, *args: calls.append(h.shape[1]) or transform(self, h, *args))
    with torch.no_grad():
        one_pass = block(tokens, plan, short_sequence_attention)
        monkeypatch.setattr(block, "__class__", SlicedViewTransformerBlock)
        block.slice_tokens = 8 * 3
        sliced = block(tokens, plan, short_sequence_attention)
        block.slice_tokens = 8 * 16  # all positions fit in one slice
        unsliced = block(tokens, plan, short_sequence_attention)
    assert calls == [16, 3, 3, 3, 3, 3, 1, 16]
    assert torch.equal(unsliced, one_pass)
    torch.testing.assert_close(sliced, one_pass, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("mode", ["official", "sliding"])
def test_output_keeps_the_contiguous_layout(module, mode):
    """A channels-last output would make every following convolution re-lay out its weights."""
    x = views(16, size=4, seed=7)
    out = run(module, x, plan_view_windows(mode, 16, 8, 4, "pyramid"))
    assert out.is_contiguous()
