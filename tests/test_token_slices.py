"""apply_in_slices: per-index computations over slices give the one-call result, along any dim."""

from __future__ import annotations

import torch

from diffportrait3d.kernels.cpu.token_slices import apply_in_slices


def test_slices_along_any_dim_equal_one_call_and_may_change_width():
    x = torch.randn(3, 10, 4, generator=torch.Generator().manual_seed(0))
    weight = torch.randn(6, 4, generator=torch.Generator().manual_seed(1))
    seen = []

    def per_token(part):
        seen.append(part.shape[1])
        return part @ weight.T  # [..., 4] -> [..., 6]

    out = apply_in_slices(per_token, x, 1, 4)
    assert seen == [4, 4, 2] and out.shape == (3, 10, 6) and out.is_contiguous()
    torch.testing.assert_close(out, x @ weight.T)
    assert torch.equal(apply_in_slices(torch.sin, x, 0, 2), torch.sin(x))
    assert torch.equal(apply_in_slices(torch.sin, x, 1, 100), torch.sin(x))  # one slice
