"""bench/heap_usage: live heap bytes follow the tensors, and the watcher sees a peak the call has freed."""

from __future__ import annotations

import pytest
import torch

from diffportrait3d.bench.heap_usage import heap_bytes_in_use, peak_heap

MIB = 2**20
pytestmark = pytest.mark.skipif(
    heap_bytes_in_use() is None, reason="no glibc mallinfo2 here: the heap count needs Linux with glibc >= 2.33"
)


def test_the_count_follows_a_tensor_from_allocation_to_release():
    before = heap_bytes_in_use()
    tensor = torch.ones(64 * MIB, dtype=torch.uint8)
    during = heap_bytes_in_use()
    del tensor
    after = heap_bytes_in_use()
    assert during - before >= 64 * MIB
    assert during - after >= 64 * MIB


def test_the_watcher_sees_the_peak_of_intermediates_freed_inside_the_call():
    def two_live_intermediates():
        first = torch.ones(32 * MIB // 4)  # float32: 32 MiB each
        second = first * 2
        del first  # the peak is after the product, with both alive
        return float(second.sum())

    watcher = peak_heap(two_live_intermediates)
    assert watcher.peak_bytes - watcher.start_bytes >= 64 * MIB
    assert heap_bytes_in_use() - watcher.start_bytes < 32 * MIB  # both were freed before the call returned
    assert "mul" in watcher.peak_op and str([32 * MIB // 4]) in watcher.peak_op
