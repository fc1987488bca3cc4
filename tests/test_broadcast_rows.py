"""kernels/cpu/broadcast_rows: equal rows held once, and oneDNN products that multiply such a row once."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from op_trace import ONEDNN_LINEAR_OP
from torch.profiler import ProfilerActivity, profile

from diffportrait3d.kernels.cpu import matmul as cpu_matmul
from diffportrait3d.kernels.cpu.broadcast_rows import broadcast_equal_rows
from diffportrait3d.kernels.model.reference_attention import all_rows_equal


def test_equal_rows_become_one_broadcast_row():
    context = torch.randn(1, 77, 32).repeat(6, 1, 1)
    shared = broadcast_equal_rows(context)
    assert shared.shape == context.shape and shared.stride(0) == 0
    assert shared.data_ptr() == context.data_ptr()
    assert torch.equal(shared, context)


@pytest.mark.parametrize(
    "tensor",
    [torch.randn(6, 77, 32), torch.randn(1, 77, 32), torch.tensor(3.0), torch.randn(1, 5).expand(4, 5)],
    ids=["different rows", "one row", "scalar", "already broadcast"],
)
def test_other_tensors_pass_unchanged(tensor):
    assert broadcast_equal_rows(tensor) is tensor


def test_rows_differing_in_one_value_are_not_equal():
    rows = torch.zeros(4, 3, 5)
    assert all_rows_equal(rows) and all_rows_equal(rows[:1])
    rows[3, 2, 4] = 1e-7
    assert not all_rows_equal(rows)
    assert broadcast_equal_rows(rows).stride(0) != 0


@pytest.mark.skipif(not cpu_matmul.onednn_matmul_available(), reason="this PyTorch build has no oneDNN linear op")
def test_onednn_linear_multiplies_a_broadcast_row_once():
    row, weight, bias = torch.randn(1, 77, 48), torch.randn(40, 48), torch.randn(40)
    shared = row.expand(8, 77, 48)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as recorded:
        out = cpu_matmul.linear(shared, weight, bias)
    shapes = [event.input_shapes[0] for event in recorded.events() if event.name == ONEDNN_LINEAR_OP]
    assert shapes == [[77, 48]]  # one row of 77 tokens, not 8
    assert out.shape == (8, 77, 40) and out.stride(0) == 0
    torch.testing.assert_close(out, F.linear(shared.contiguous(), weight, bias), rtol=1e-5, atol=1e-5)
