"""bench/flop_count: the CPU ops PyTorch's FLOP counter leaves out are counted as it counts their twins."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from op_trace import ONEDNN_LINEAR_OP, ops_run
from torch.utils.flop_counter import FlopCounterMode

from diffportrait3d.bench.flop_count import count_flops, cpu_op_flops
from diffportrait3d.kernels.cpu import matmul as cpu_matmul

requires_onednn = pytest.mark.skipif(
    not cpu_matmul.onednn_matmul_available(), reason="this PyTorch build has no oneDNN linear op"
)


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def pytorch_count(call) -> int:
    """PyTorch's own count, without the pack's additions."""
    counter = FlopCounterMode(display=False)
    with counter:
        call()
    return counter.get_total_flops()


@requires_onednn
@pytest.mark.parametrize("shape", [(7, 24), (3, 5, 24), (2, 2, 3, 24)])
def test_the_onednn_linear_counts_like_pytorchs_linear(shape):
    x, weight, bias = randn(*shape), randn(40, 24, seed=1), randn(40, seed=2)
    assert ONEDNN_LINEAR_OP in ops_run(lambda: cpu_matmul.linear(x, weight, bias))
    rows = x.numel() // 24
    assert count_flops(lambda: cpu_matmul.linear(x, weight, bias)) == 2 * rows * 24 * 40
    assert count_flops(lambda: cpu_matmul.linear(x, weight, bias)) == pytorch_count(lambda: F.linear(x, weight, bias))
    # without the mapping, PyTorch's counter would see no work at all in the pack's layers
    assert pytorch_count(lambda: cpu_matmul.linear(x, weight, bias)) == 0


@requires_onednn
def test_a_broadcast_input_is_multiplied_and_counted_once():
    shared = randn(1, 77, 32).expand(16, 77, 32)  # one text context for 16 views
    weight = randn(64, 32, seed=1)
    assert count_flops(lambda: cpu_matmul.linear(shared, weight)) == 2 * 77 * 32 * 64
    assert count_flops(lambda: F.linear(shared, weight)) == 16 * 2 * 77 * 32 * 64


@pytest.mark.parametrize("value_depth", [8, 6])
def test_cpu_attention_counts_like_its_explicit_products(value_depth):
    query, key, value = randn(2, 4, 16, 8), randn(2, 4, 12, 8, seed=1), randn(2, 4, 12, value_depth, seed=2)

    def explicit():
        return torch.softmax(query @ key.transpose(-1, -2) / 8**0.5, dim=-1) @ value

    expected = 2 * 2 * 4 * 16 * 12 * (8 + value_depth)
    assert pytorch_count(explicit) == expected
    assert count_flops(lambda: F.scaled_dot_product_attention(query, key, value)) == expected


def test_convolutions_count_and_element_wise_work_does_not():
    x, weight = randn(2, 3, 8, 8), randn(5, 3, 3, 3, seed=1)
    assert count_flops(lambda: F.conv2d(x, weight, padding=1)) == 2 * 2 * 5 * 3 * 9 * 64
    assert count_flops(lambda: F.gelu(x).mul_(2).softmax(dim=-1)) == 0


def test_the_mapping_holds_the_ops_this_build_has():
    names = {str(op) for op in cpu_op_flops()}
    assert "aten._scaled_dot_product_flash_attention_for_cpu" in names
    assert ("mkldnn._linear_pointwise" in names) == cpu_matmul.onednn_matmul_available()
