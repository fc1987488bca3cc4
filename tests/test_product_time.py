"""kernels/product_time: the time a call spends inside the ops whose work is counted, and nowhere else."""

from __future__ import annotations

import time

import pytest
import torch
import torch.nn.functional as F

from diffportrait3d.kernels import cpu_matmul
from diffportrait3d.kernels.flop_count import count_flops, counted_ops
from diffportrait3d.kernels.product_time import ProductClock, product_seconds


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_the_counted_ops_are_the_products_convolutions_and_attention():
    names = {str(op) for op in counted_ops()}
    assert {"aten.mm", "aten.addmm", "aten.bmm", "aten.convolution"} <= names
    assert "aten._scaled_dot_product_flash_attention_for_cpu" in names
    assert ("mkldnn._linear_pointwise" in names) == cpu_matmul.onednn_matmul_available()
    assert not names & {"aten.add", "aten.mul", "aten.gelu", "aten._softmax", "aten.copy_", "aten.native_layer_norm"}


def test_the_clock_times_each_counted_op_and_nothing_else():
    x, weight = randn(4, 16, 32), randn(24, 32, seed=1)
    image, kernel = randn(2, 3, 8, 8, seed=2), randn(5, 3, 3, 3, seed=3)
    query = randn(2, 4, 16, 8, seed=4)
    ticks = []

    def call():
        hidden = F.gelu(F.linear(x, weight)).softmax(dim=-1)  # one product, element-wise work
        hidden = cpu_matmul.linear(hidden, randn(8, 24, seed=5))  # oneDNN's product where there is one
        F.conv2d(image, kernel, padding=1).add_(1)
        F.scaled_dot_product_attention(query, query, query)
        return F.layer_norm(torch.bmm(hidden, hidden.transpose(1, 2)), [16])

    clock = ProductClock(synchronize=lambda: ticks.append(1))
    with clock:
        call()
    assert clock.ops == 5
    assert len(ticks) == 2 * clock.ops  # before and after every timed op
    assert count_flops(call) > 0


def test_time_outside_the_counted_ops_is_not_charged():
    big = randn(2048, 2048)
    small = randn(8, 8, seed=1)

    def element_wise_and_a_tiny_product():
        for _ in range(20):
            big.exp().sin_().mul_(0.5)
        return small @ small

    started = time.perf_counter()
    inside = product_seconds(element_wise_and_a_tiny_product)
    wall = time.perf_counter() - started
    assert 0 < inside < 0.05 * wall


def test_a_products_time_is_charged_in_full():
    a, b = randn(768, 768), randn(768, 768, seed=1)
    with torch.no_grad():
        alone = min(timed(lambda: a @ b) for _ in range(3))
        started = time.perf_counter()
        inside = min(product_seconds(lambda: a @ b) for _ in range(3))
        wall = time.perf_counter() - started
    assert inside == pytest.approx(alone, rel=0.5)
    assert inside <= wall


def timed(call) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started
