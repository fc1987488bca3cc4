"""bench/counted_op_time: the time a call spends inside the ops whose work is counted, and nowhere else."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from diffportrait3d.bench.counted_op_time import CountedOpClock, counted_op_seconds
from diffportrait3d.bench.flop_count import count_flops, counted_ops
from diffportrait3d.kernels.cpu import matmul as cpu_matmul


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

    clock = CountedOpClock(synchronize=lambda: ticks.append(1))
    with clock:
        call()
    assert clock.ops == 5
    assert len(ticks) == 2 * clock.ops  # before and after every timed op
    assert count_flops(call) > 0


def test_each_counted_op_is_charged_from_its_start_to_its_end_and_nothing_else():
    """A scripted clock (no wall time: the test holds on a busy machine): the clock is read right before and
    right after each counted op, and the differences of those pairs are what is charged."""
    big, small = randn(256, 256), randn(8, 8, seed=1)
    readings = iter([10.0, 10.25, 40.0, 41.5])  # two products: 0.25 s and 1.5 s

    def element_wise_and_two_products():
        for _ in range(5):
            big.exp().sin_().mul_(0.5)  # element-wise: never reads the clock
        small @ small
        big.add_(1)
        return small @ small

    clock = CountedOpClock(clock=lambda: next(readings))
    with clock:
        element_wise_and_two_products()
    assert clock.ops == 2
    assert clock.seconds == 1.75
    assert next(readings, None) is None  # exactly two readings per counted op


def test_counted_op_seconds_uses_the_wall_clock():
    a = randn(64, 64)
    assert counted_op_seconds(lambda: a @ a) > 0
