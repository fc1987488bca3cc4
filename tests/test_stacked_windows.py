"""Stacked window plans: one cross-view call over cond and uncond chunks equals one call per chunk."""

from __future__ import annotations

import pytest
import torch

from diffportrait3d.bench.random_weights import fill_random_weights_
from diffportrait3d.kernels.model.cross_view_attention import CrossViewModule
from diffportrait3d.kernels.model.view_windows import plan_view_windows, stacked_windows


@pytest.mark.parametrize("mode", ["official", "sliding", "looped"])
def test_stacked_plan_repeats_the_plan_per_block_without_mixing(mode):
    plan = plan_view_windows(mode, 13, size=8, stride=4)
    stacked = stacked_windows(plan, 3)
    assert stacked.n_views == 39
    assert len(stacked.windows) == 3 * len(plan.windows)
    for copy in range(3):
        for window, weight, original, original_weight in zip(
            stacked.windows[copy * len(plan.windows) :], stacked.weights[copy * len(plan.windows) :],
            plan.windows, plan.weights, strict=False,
        ):
            assert window.tolist() == (original + 13 * copy).tolist()
            assert torch.equal(weight, original_weight)
            assert window.min() >= 13 * copy and window.max() < 13 * (copy + 1)
    assert stacked_windows(plan, 1) is plan
    with pytest.raises(ValueError, match="copies"):
        stacked_windows(plan, 0)


@pytest.mark.parametrize("mode", ["official", "looped"])
def test_one_call_over_stacked_chunks_equals_one_call_per_chunk(mode):
    torch.manual_seed(0)
    module = fill_random_weights_(CrossViewModule(64, heads=2, max_len=32), seed=3).eval()
    views = 8
    plan = plan_view_windows(mode, views, size=8 if mode == "official" else 4, stride=2)
    x = torch.randn(2 * views, 64, 4, 4)
    with torch.no_grad():
        together = module(x, stacked_windows(plan, 2))
        apart = torch.cat([module(x[:views], plan), module(x[views:], plan)])
    assert torch.allclose(together, apart, atol=1e-5, rtol=1e-5)


def test_random_weights_are_seeded_finite_and_scaled():
    first = fill_random_weights_(torch.nn.Linear(256, 32).to(torch.bfloat16).requires_grad_(False), seed=5)
    second = fill_random_weights_(torch.nn.Linear(256, 32).to(torch.bfloat16).requires_grad_(False), seed=5)
    assert first.weight.dtype == torch.bfloat16
    assert torch.equal(first.weight, second.weight) and torch.equal(first.bias, second.bias)
    assert torch.isfinite(first.weight.float()).all()
    assert 0.8 < float(first.weight.float().std() * 256**0.5) < 1.2  # N(0, 1/fan_in)
    assert float(first.bias.float().abs().max()) < 0.5
