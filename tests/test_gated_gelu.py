"""kernels/model/gated_gelu and the CPU wing's geglu_in_halves: value * gelu(gate) from one projection, or from
a layer's two fresh halves."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from diffportrait3d.bench.heap_usage import heap_bytes_in_use, peak_heap
from diffportrait3d.kernels.cpu.gated_gelu_halves import geglu_in_halves
from diffportrait3d.kernels.model.gated_gelu import geglu


def reference_geglu(projection: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    value, gate = F.linear(x.double(), projection.weight.double(), projection.bias.double()).chunk(2, dim=-1)
    return value * F.gelu(gate)


class HalvesLinear(torch.nn.Linear):
    """A projection offering its output halves as two products (what the pack's CPU layers do), or declining."""

    def __init__(self, *args, offers_halves: bool, **kwargs):
        super().__init__(*args, **kwargs)
        self.offers_halves = offers_halves
        self.calls = []

    def forward_halves(self, x):
        self.calls.append("halves")
        if not self.offers_halves:
            return None
        weights, biases = self.weight.chunk(2), self.bias.chunk(2)
        return tuple(F.linear(x, w, b) for w, b in zip(weights, biases, strict=True))

    def forward(self, x):
        self.calls.append("forward")
        return super().forward(x)


def test_plain_projection_gives_value_times_exact_gelu_of_gate():
    torch.manual_seed(0)
    projection, x = torch.nn.Linear(16, 2 * 24), torch.randn(3, 5, 16)
    with torch.no_grad():
        out = geglu(projection, x)
    assert out.shape == (3, 5, 24)
    torch.testing.assert_close(out.double(), reference_geglu(projection, x), rtol=1e-5, atol=1e-6)


def test_the_model_geglu_never_asks_for_halves():
    projection = HalvesLinear(16, 2 * 12, offers_halves=True)
    with torch.no_grad():
        geglu(projection, torch.randn(2, 7, 16))
    assert projection.calls == ["forward"]


def test_offered_halves_are_used_and_give_the_same_numbers():
    torch.manual_seed(1)
    x = torch.randn(2, 7, 16)
    for offers in (True, False):
        projection = HalvesLinear(16, 2 * 12, offers_halves=offers)
        with torch.no_grad():
            out = geglu_in_halves(projection, x)
        assert projection.calls == (["halves"] if offers else ["halves", "forward"])
        assert out.is_contiguous()
        torch.testing.assert_close(out.double(), reference_geglu(projection, x), rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(heap_bytes_in_use() is None, reason="no glibc mallinfo2 here: the heap count needs glibc >= 2.33")
def test_plain_projection_peaks_at_the_projection_and_one_half():
    """The chunked form keeps the [tokens, 2n] projection and a single [tokens, n] buffer live at its peak
    (value * gelu(gate) into a new tensor would hold a second one: the largest activation of a 512x512 step
    on ComfyUI's GPU code path)."""
    tokens, channels, n = 4096, 64, 1024
    projection, x = torch.nn.Linear(channels, 2 * n), torch.randn(tokens, channels)
    half_bytes = tokens * n * 4
    with torch.no_grad():
        geglu(projection, x)  # warm-up: one-off allocations of the first call stay out of the count
        watcher = peak_heap(lambda: geglu(projection, x))
    added = watcher.peak_bytes - watcher.start_bytes
    assert 3 * half_bytes <= added < 4 * half_bytes  # a second half would make it 4 and more
