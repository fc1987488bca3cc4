"""One reusable buffer for weights cast to the compute dtype layer by layer (bf16/fp16 storage, float32 compute).

Casting each layer's weight into a fresh tensor makes the allocator hand out and take back blocks of up to
the largest layer (118 MB for the UNet's 2560-to-1280-channel 3x3 convolutions in float32) hundreds of times per
step: the pages are faulted in and zeroed every time, and the heap keeps freed blocks around, which raises
the process's peak memory. Casting into one buffer per thread and dtype, grown to the largest weight seen,
does neither.
"""

from __future__ import annotations

import threading

import torch


class CastScratch:
    """``cast(tensor, dtype)``: ``tensor`` converted to ``dtype`` in this thread's buffer for that dtype and
    device, as a contiguous view of ``tensor``'s shape. The view is overwritten by the next ``cast`` to the
    same dtype and device on the same thread: use it before casting another weight, and do not keep it."""

    def __init__(self):
        self._local = threading.local()

    def cast(self, tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        buffers = self._local.__dict__.setdefault("buffers", {})
        key = (dtype, tensor.device)
        buffer = buffers.get(key)
        if buffer is None or buffer.numel() < tensor.numel():
            buffers.pop(key, None)  # let the old buffer go before the larger one is taken
            buffer = buffers[key] = torch.empty(tensor.numel(), dtype=dtype, device=tensor.device)
        return buffer[: tensor.numel()].view(tensor.shape).copy_(tensor)

    def buffer_bytes(self) -> int:
        """Bytes held by this thread's buffers."""
        buffers = self._local.__dict__.get("buffers", {})
        return sum(b.numel() * b.element_size() for b in buffers.values())
