"""View-window plans: coverage, blend weights, the official grouping, wrap-around and option errors."""

from __future__ import annotations

from itertools import pairwise

import pytest
import torch

from diffportrait3d.kernels.model.view_windows import (
    WINDOW_MODES,
    ViewWindows,
    looped_windows,
    official_windows,
    plan_view_windows,
    sliding_windows,
    stacked_windows,
)

# (size, stride) pairs, including the degenerate size 1 and stride == size
SHAPES = [(8, 4), (8, 1), (8, 8), (5, 2), (3, 3), (1, 1), (4, 3)]


def as_lists(plan: ViewWindows) -> list[list[int]]:
    return [window.tolist() for window in plan.windows]


def per_view_weight_sums(plan: ViewWindows) -> torch.Tensor:
    total = torch.zeros(plan.n_views, dtype=torch.float64)
    for window, weight in zip(plan.windows, plan.weights, strict=True):
        for view, w in zip(window.tolist(), weight.tolist(), strict=True):
            total[view] += w
    return total


@pytest.mark.parametrize("mode", sorted(WINDOW_MODES))
@pytest.mark.parametrize("blend", ["flat", "pyramid"])
@pytest.mark.parametrize(("size", "stride"), SHAPES)
def test_every_view_covered_and_weights_sum_to_one(mode, blend, size, stride):
    for n_views in range(1, 65):
        plan = plan_view_windows(mode, n_views, size=size, stride=stride, blend=blend)
        assert plan.n_views == n_views
        for window, weight in zip(plan.windows, plan.weights, strict=True):
            views = window.tolist()
            assert window.dtype == torch.long and weight.is_floating_point()
            assert len(set(views)) == len(views) >= 1, "a window lists a view twice"
            assert all(0 <= v < n_views for v in views)
            assert len(views) <= max(size, 1)
            assert bool((weight > 0).all()), "a view in a window must get a non-zero share"
        covered = {v for window in plan.windows for v in window.tolist()}
        assert covered == set(range(n_views))
        torch.testing.assert_close(per_view_weight_sums(plan), torch.ones(n_views, dtype=torch.float64))


@pytest.mark.parametrize("mode", sorted(WINDOW_MODES))
def test_fewer_views_than_window_size_is_one_window_of_all(mode):
    for n_views in range(1, 9):
        plan = plan_view_windows(mode, n_views, size=8, stride=4)
        assert as_lists(plan) == [list(range(n_views))]
        assert plan.weights[0].tolist() == [1.0] * n_views


@pytest.mark.parametrize(
    ("n_views", "expected"),
    [
        (8, [list(range(8))]),
        (13, [list(range(8)), [8, 9, 10, 11, 12]]),
        (16, [list(range(8)), list(range(8, 16))]),
        (3, [[0, 1, 2]]),
    ],
)
def test_official_grouping(n_views, expected):
    plan = official_windows(n_views)
    assert as_lists(plan) == expected
    assert all(weight.tolist() == [1.0] * len(weight) for weight in plan.weights)


@pytest.mark.parametrize(("size", "stride"), [s for s in SHAPES if s[0] > 1])
def test_sliding_windows_are_full_consecutive_runs_that_never_wrap(size, stride):
    for n_views in range(size, 65):
        windows = as_lists(sliding_windows(n_views, size, stride))
        for views in windows:
            assert views == list(range(views[0], views[0] + size))  # full length, no wrap
        starts = [views[0] for views in windows]
        assert starts[0] == 0 and windows[-1][-1] == n_views - 1
        assert all(0 < b - a <= stride for a, b in pairwise(starts))


@pytest.mark.parametrize(("size", "stride"), [s for s in SHAPES if s[0] > 1])
def test_looped_windows_wrap_so_last_and_first_view_meet(size, stride):
    for n_views in range(size + 1, 65):
        windows = as_lists(looped_windows(n_views, size, stride))
        for views in windows:
            assert len(views) == size
            # consecutive on the ring, in positional order
            assert all((b - a) % n_views == 1 for a, b in pairwise(views))
        assert any(
            views.index(n_views - 1) + 1 == views.index(0)
            for views in windows
            if n_views - 1 in views and 0 in views
        ), "view n-1 must sit right before view 0 in some window"


@pytest.mark.parametrize(
    ("n_views", "size", "stride", "shift"), [(16, 8, 4, 4), (16, 8, 4, 8), (24, 8, 6, 6), (10, 8, 1, 3)]
)
def test_looped_plan_is_invariant_under_cyclic_shifts(n_views, size, stride, shift):
    plan = looped_windows(n_views, size, stride)

    def shifted(by):
        return {
            tuple((v + by) % n_views for v in window.tolist()): tuple(weight.tolist())
            for window, weight in zip(plan.windows, plan.weights, strict=True)
        }

    assert shifted(shift) == shifted(0)


def test_sliding_plan_is_not_shift_invariant():
    """Guards the shift test above: a plan with ends must fail it."""
    plan = sliding_windows(16, 8, 4)
    windows = {tuple(w.tolist()) for w in plan.windows}
    assert {tuple((v + 4) % 16 for v in w) for w in windows} != windows


def test_pyramid_prefers_the_window_where_the_view_is_central():
    plan = sliding_windows(20, size=8, stride=4, blend="pyramid")
    for view in range(20):
        entries = []  # (distance of the view from its window's centre, weight)
        for window, weight in zip(plan.windows, plan.weights, strict=True):
            views = window.tolist()
            if view in views:
                position = views.index(view)
                entries.append((abs(position - (len(views) - 1) / 2), weight[position].item()))
        for distance_a, weight_a in entries:
            for distance_b, weight_b in entries:
                if distance_a < distance_b:
                    assert weight_a > weight_b


def test_flat_blend_splits_evenly():
    plan = sliding_windows(20, size=8, stride=4, blend="flat")
    counts = torch.zeros(20)
    for window in plan.windows:
        counts[window] += 1
    for window, weight in zip(plan.windows, plan.weights, strict=True):
        torch.testing.assert_close(weight, 1 / counts[window])


def test_batches_group_equal_lengths():
    plan = official_windows(13)
    batches = plan.batches()
    assert [tuple(indices.shape) for indices, _ in batches] == [(1, 8), (1, 5)]
    plan = sliding_windows(64)
    ((indices, weights),) = plan.batches()
    assert indices.shape == weights.shape == (len(plan.windows), 8)
    assert indices.tolist() == as_lists(plan)
    assert plan.batches() is plan.batches()  # cached per device


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "spiral", "n_views": 8}, "window_mode must be one of"),
        ({"mode": "sliding", "n_views": 8, "size": 0}, "window_size must be >= 1"),
        ({"mode": "official", "n_views": 8, "size": 0}, "window_size must be >= 1"),
        ({"mode": "sliding", "n_views": 8, "stride": 0}, "stride must be in 1..window_size"),
        ({"mode": "looped", "n_views": 8, "size": 4, "stride": 5}, "stride must be in 1..window_size"),
        ({"mode": "looped", "n_views": 8, "blend": "gauss"}, "blend must be one of"),
        ({"mode": "official", "n_views": 0}, "n_views must be"),
    ],
)
def test_bad_options_raise_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        plan_view_windows(**kwargs)


def test_official_ignores_stride_and_blend():
    assert as_lists(plan_view_windows("official", 16, size=2, stride=4, blend="gauss")) == [
        [v, v + 1] for v in range(0, 16, 2)
    ]


@pytest.mark.parametrize(
    ("plan", "expected"),
    [
        (lambda: official_windows(16), 8),
        (lambda: official_windows(5), 5),
        (lambda: official_windows(13), None),  # a shorter last window
        (lambda: stacked_windows(official_windows(8), 2), 8),  # cond and uncond chunks
        (lambda: sliding_windows(16, 8, 4), None),  # overlapping, blended
        (lambda: looped_windows(8, 4, 4), None),  # non-overlapping, but wraps: 6, 7, 0, 1 then 2..5
    ],
    ids=["official 16", "official 5", "official 13", "stacked", "sliding", "looped"],
)
def test_consecutive_length_only_for_in_order_unit_weight_partitions(plan, expected):
    assert plan().consecutive_length == expected
