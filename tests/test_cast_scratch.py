"""The reused cast buffer: exact conversions, one buffer per thread and dtype, grown only when needed."""

from __future__ import annotations

import threading

import torch

from diffportrait3d.kernels.cpu.cast_scratch import CastScratch


def test_cast_equals_a_plain_conversion_and_reuses_the_buffer():
    scratch = CastScratch()
    big = torch.randn(64, 32, generator=torch.Generator().manual_seed(0)).bfloat16()
    small = torch.randn(3, 5, 7).half()
    cast_big = scratch.cast(big, torch.float32)
    assert cast_big.shape == big.shape and cast_big.is_contiguous() and cast_big.dtype == torch.float32
    assert torch.equal(cast_big, big.float())
    address = cast_big.data_ptr()
    cast_small = scratch.cast(small, torch.float32)
    assert torch.equal(cast_small, small.float())
    assert cast_small.data_ptr() == address  # the same memory, overwritten
    assert scratch.buffer_bytes() == big.numel() * 4
    scratch.cast(torch.zeros(100, 100).bfloat16(), torch.float32)  # larger: the buffer grows
    assert scratch.buffer_bytes() == 100 * 100 * 4
    scratch.cast(small, torch.float64)  # another dtype, another buffer
    assert scratch.buffer_bytes() == 100 * 100 * 4 + small.numel() * 8


def test_threads_get_their_own_buffers():
    scratch = CastScratch()
    mine = scratch.cast(torch.ones(10).bfloat16(), torch.float32)
    seen = {}

    def other():
        seen["bytes_before"] = scratch.buffer_bytes()
        seen["ptr"] = scratch.cast(torch.full((10,), 2.0).bfloat16(), torch.float32).data_ptr()

    thread = threading.Thread(target=other)
    thread.start()
    thread.join()
    assert seen["bytes_before"] == 0 and seen["ptr"] != mine.data_ptr()
    assert torch.equal(mine, torch.ones(10))  # untouched by the other thread
