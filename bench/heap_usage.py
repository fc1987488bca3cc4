"""Bytes the C heap holds for live allocations, and their peak over the operations of a call.

A process's resident size (RSS) keeps what the allocator has freed but not returned, so its peak says little
about what the tensors of a step needed at once. glibc's ``mallinfo2`` counts the bytes of allocations still
in use (heap chunks plus ``mmap``-ed blocks); PyTorch's CPU tensors are allocated through it. Sampled after
every operation of a call (a ``TorchDispatchMode``), its maximum is the memory the call's tensors needed, the
CPU counterpart of ``torch.cuda.max_memory_allocated``. Allocations an operation frees before it returns
(its scratch space) are not seen. Linux with glibc only; elsewhere :func:`heap_bytes_in_use` is None.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
                     "fordblks", "keepcost")
    ]


@functools.cache
def _mallinfo2():
    """glibc's ``mallinfo2`` (glibc 2.33 and later), or None."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        function = ctypes.CDLL(name).mallinfo2
    except (OSError, AttributeError):
        return None
    function.restype = _MallInfo2
    function.argtypes = []
    return function


def heap_bytes_in_use() -> int | None:
    """Bytes of live ``malloc`` allocations of this process (heap chunks + ``mmap``-ed blocks); None without
    glibc's ``mallinfo2``."""
    mallinfo2 = _mallinfo2()
    if mallinfo2 is None:
        return None
    info = mallinfo2()
    return int(info.uordblks + info.hblkhd)


class PeakHeap(TorchDispatchMode):
    """While active, the highest :func:`heap_bytes_in_use` seen after any operation (``peak_bytes``) and that
    operation with its input shapes (``peak_op``). ``start_bytes``: the count when it was entered."""

    def __init__(self):
        super().__init__()
        self.start_bytes = self.peak_bytes = 0
        self.peak_op = ""

    def __enter__(self):
        self.start_bytes = self.peak_bytes = heap_bytes_in_use() or 0
        self.peak_op = ""
        return super().__enter__()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        in_use = heap_bytes_in_use() or 0
        if in_use > self.peak_bytes:
            self.peak_bytes = in_use
            shapes = [list(a.shape) for a in args if isinstance(a, torch.Tensor)]
            self.peak_op = f"{func} {shapes}"
        return out


def peak_heap(call: Callable[[], object]) -> PeakHeap:
    """Runs ``call()`` and returns the :class:`PeakHeap` that watched it."""
    watcher = PeakHeap()
    with watcher:
        call()
    return watcher
