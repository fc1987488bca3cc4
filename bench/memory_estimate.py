"""Memory of one guided step of 8 views at 512x512 with the official model: an estimate from the bench's
measurements on a 2-core Xeon (docs/performance.md, "512x512 (latent 64), and an estimate for GPUs"), not a
measurement of the device that asks.

The estimate is the four networks' weights at the storage dtype (parameter counts from the official
architecture) plus what the measured step needed above its weights:

- 2-byte weights on ComfyUI's GPU code path (``bench --model full --latent 64 --dtype bf16 --cpu-compute bf16
  --cpu-matmul pytorch --heap``): live-heap peak 6.66 GiB over 4.96 GiB of weights, 1.40 GiB above them
  (1.71 before the GEGLU change): the counterpart of ``torch.cuda.max_memory_allocated`` for fp16 on a GPU,
  to which the CUDA context and the caching allocator's slack add;
- float32 on a CPU (``bench --model full --latent 64``): peak RSS 12.39 GiB over 9.92 GiB of weights, 2.47 above;
- bf16 compute on a CPU (``--dtype bf16 --cpu-compute bf16``): peak RSS 8.04 GiB over 4.96 GiB, 3.08 above.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

GIB = 2**30
NETWORKS = ("unet", "appearance", "pose_controlnet", "cross_view")  # sampled every step; the VAE only once
# (bytes per weight, GiB above the weights at the step's peak: low, high) per way of running
MEASURED = {
    "gpu_half": (2, 1.40, 1.71),
    "cpu_float32": (4, 2.47, 2.47),
    "cpu_bf16": (2, 3.08, 3.08),
}


@dataclass(frozen=True)
class StepMemory:
    weights_gib: float
    low_gib: float
    high_gib: float


def official_network_parameters() -> int:
    """Parameters (and positional buffers) of the four networks a step runs, from the official architecture."""
    from ..kernels.checkpoint.components import route_key
    from ..kernels.checkpoint.convert import load_architecture
    from ..kernels.checkpoint.layout import expected_checkpoint_shapes

    shapes = expected_checkpoint_shapes(load_architecture())
    return sum(math.prod(shape) for key, shape in shapes.items() if route_key(key).component in NETWORKS)


def step_memory_estimate(kind: str) -> StepMemory:
    """``kind``: ``gpu_half`` (fp16/bf16 on a GPU), ``cpu_float32`` or ``cpu_bf16``."""
    bytes_per_weight, low, high = MEASURED[kind]
    weights = official_network_parameters() * bytes_per_weight / GIB
    return StepMemory(weights, weights + low, weights + high)
