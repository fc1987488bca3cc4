"""bench/matmul_rate: the device's best product rate, from timed square products."""

from __future__ import annotations

import math

import pytest
import torch

from diffportrait3d.bench import matmul_rate
from diffportrait3d.bench.matmul_rate import best_matmul_gflops


def test_the_rate_is_the_work_of_one_product_over_its_fastest_time(monkeypatch):
    clock = iter([0.0, 0.5, 1.0, 1.25] * 2)  # two repeats per product path: 0.5 s, then 0.25 s
    monkeypatch.setattr(matmul_rate.time, "perf_counter", lambda: next(clock))
    assert best_matmul_gflops(size=64, repeats=2) == pytest.approx(2 * 64**3 / 0.25 / 1e9)


def test_a_real_probe_gives_a_finite_positive_rate():
    rate = best_matmul_gflops(size=128, repeats=2)
    assert math.isfinite(rate) and rate > 0


@pytest.mark.parametrize("size, repeats", [(0, 1), (8, 0)])
def test_bad_probe_sizes_are_refused(size, repeats):
    with pytest.raises(ValueError, match="size and repeats"):
        best_matmul_gflops(size=size, repeats=repeats, dtype=torch.float32)
