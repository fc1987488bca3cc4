"""The best matrix-product rate of this device: the ceiling a network's products can reach.

A step's counted work (``bench/flop_count.py``) divided by this rate is a floor on its time: the step could
only be faster if its products, mostly far smaller than the probe's, ran faster than one large square
product — and if nothing else took time.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from ..kernels.cpu import matmul as cpu_matmul


def best_matmul_gflops(device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, size: int = 2048,
                        repeats: int = 3) -> float:
    """GFLOP/s of the fastest of ``repeats`` [size, size] x [size, size] products in ``dtype`` (after one
    untimed warm-up each), at 2 operations per multiply-add. On a CPU the better of the pack's layer product
    (oneDNN) and PyTorch's own."""
    device = torch.device(device)
    if size < 1 or repeats < 1:
        raise ValueError("size and repeats must be >= 1")
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(size, size, generator=generator).to(device=device, dtype=dtype)
    weight = torch.randn(size, size, generator=generator).to(device=device, dtype=dtype)
    synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    products = [cpu_matmul.linear, F.linear] if device.type == "cpu" else [F.linear]
    best = float("inf")
    with torch.no_grad():
        for product in products:
            product(x, weight)
            for _ in range(repeats):
                synchronize()
                started = time.perf_counter()
                product(x, weight)
                synchronize()
                best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best / 1e9
