"""ComfyUI layer classes ("operations") whose float32 CPU linear layers and small convolutions run on
``kernels/cpu/matmul.py``, with bf16/fp16-stored weights cast layer by layer into one reused buffer; every
other case is the base class's own code. A network built with them also gets the CPU variants of some of its
modules (``swaps.py``).

Only the networks this pack builds use them (its loaders and the benchmark): the layers are chosen when a
network is built, the way ComfyUI itself picks operations, so nothing is patched at run time. Set
``DIFFPORTRAIT3D_CPU_MATMUL=pytorch`` to build with ComfyUI's plain operations.

``DIFFPORTRAIT3D_CPU_COMPUTE=bf16`` is the opt-in the other way: on a CPU the networks are stored and computed
in bf16, as ComfyUI computes on GPUs that support it (ComfyUI itself never does on a CPU). See
``cpu_compute_dtype``.
"""

from __future__ import annotations

import functools
import logging
import os

import comfy.ops
import torch

from ...kernels.cpu import matmul as cpu_matmul
from ...kernels.cpu.cast_scratch import CastScratch

MATMUL_SWITCH = "DIFFPORTRAIT3D_CPU_MATMUL"
CHOICES = ("onednn", "pytorch")
COMPUTE_SWITCH = "DIFFPORTRAIT3D_CPU_COMPUTE"
COMPUTE_DTYPES = {"float32": None, "bf16": torch.bfloat16}
# Largest convolution weight block cast to float32 at once on a CPU (8 M elements, 32 MB): larger weights (the
# UNet's 2560-to-1280-channel 3x3 convolutions, 118 MB in float32) are cast and applied in blocks of output
# channels, so neither the cast buffer nor oneDNN's reordered copy of the weight holds a whole one (bf16
# storage: 6.04 -> 5.93 GiB peak for a full-size step on a 2 vCPU Xeon, the step time within that machine's
# drift).
CAST_BLOCK_ELEMENTS = 8 * 2**20


def _environment_choice(switch: str, choices, default: str) -> str:
    choice = os.environ.get(switch, default).strip().lower() or default
    if choice not in choices:
        raise ValueError(f"${switch} must be one of {tuple(choices)}, not {choice!r}")
    return choice


def default_cpu_matmul() -> str:
    """``onednn`` unless ``$DIFFPORTRAIT3D_CPU_MATMUL`` says ``pytorch``."""
    return _environment_choice(MATMUL_SWITCH, CHOICES, "onednn")


def default_cpu_compute() -> str:
    """``float32`` unless ``$DIFFPORTRAIT3D_CPU_COMPUTE`` says ``bf16``."""
    return _environment_choice(COMPUTE_SWITCH, COMPUTE_DTYPES, "float32")


def cpu_compute_dtype(choice: str | None = None) -> torch.dtype | None:
    """The dtype the pack's networks are stored and computed in on a CPU, or None for ComfyUI's choice
    (float32 compute, whatever the storage). ``choice``: ``float32`` or ``bf16`` (default:
    ``$DIFFPORTRAIT3D_CPU_COMPUTE``).

    ``bf16`` trades precision for speed and memory: bf16 products take half the time of float32 ones on CPUs
    with AVX512-BF16 or AMX (a full-size step 4.5-4.9 s instead of 8.2-8.7 s on a Zen 4), and the weights take half
    the memory. The results move by bf16 rounding (``docs/performance.md`` has the measured differences).
    Elsewhere bf16 is emulated and slower than float32, which the log says."""
    choice = choice or default_cpu_compute()
    if choice not in COMPUTE_DTYPES:
        raise ValueError(f"cpu_compute must be one of {tuple(COMPUTE_DTYPES)}, not {choice!r}")
    dtype = COMPUTE_DTYPES[choice]
    if dtype is not None and not cpu_matmul.native_bf16_cpu():
        _warn_emulated_bf16()
    return dtype


@functools.cache
def _warn_emulated_bf16() -> None:
    logging.warning(
        "DiffPortrait3D: bf16 compute on a CPU without native bf16 products (AVX512-BF16 or AMX) is slower "
        "than float32; unset $%s to compute in float32.", COMPUTE_SWITCH
    )


# Weights stored in bf16/fp16 are cast to float32 here, one layer at a time, into one reused buffer.
_CAST_SCRATCH = CastScratch()


def _casts_plainly(layer, input: torch.Tensor) -> bool:
    """Whether ComfyUI's cast of ``layer`` for ``input`` would be a plain dtype conversion on the CPU: no
    weight or bias functions (LoRA in low-VRAM mode, other patches), plain CPU tensors (not quantised)."""
    return (
        not layer.weight_function
        and not layer.bias_function
        and input.device.type == "cpu"
        and input.dtype.is_floating_point
        and all(cpu_matmul.plain_cpu_tensor(t) for t in (layer.weight, layer.bias))
        and not torch.compiler.is_compiling()  # the shared cast buffer is not for a traced graph
    )


def _cast_on_cpu(layer, input: torch.Tensor, rows: slice = slice(None)) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(weight, bias) of ``layer`` in ``input``'s dtype, output features ``rows`` only; the weight lives in the
    shared cast buffer."""
    weight = layer.weight[rows]
    weight = weight if weight.dtype == input.dtype else _CAST_SCRATCH.cast(weight, input.dtype)
    bias = None if layer.bias is None else layer.bias[rows].to(input.dtype)
    return weight, bias


def output_channel_blocks(weight: torch.Tensor, max_elements: int) -> list[slice]:
    """Consecutive blocks of ``weight``'s output channels (dim 0), as few as keep each block near
    ``max_elements`` (at most one channel over), in near-equal sizes; ``[slice(None)]`` for a weight that fits."""
    channels = weight.shape[0]
    blocks = min(channels, -(-weight.numel() // max_elements))
    if blocks <= 1:
        return [slice(None)]
    size = -(-channels // blocks)
    return [slice(start, min(start + size, channels)) for start in range(0, channels, size)]


def _is_comfy_plain_cast(layer_class, comfy_layer_class) -> bool:
    return getattr(layer_class, "forward_comfy_cast_weights", None) is comfy_layer_class.forward_comfy_cast_weights


@functools.cache
def with_cpu_matmul(base: type) -> type:
    """``base`` (a ComfyUI operations class) with Linear and Conv2d computing through ``cpu_matmul``.

    Layers whose weights ComfyUI casts on the fly (``comfy_cast_weights``: bf16/fp16 storage) cast into one
    reused buffer and then take the same path; with weight functions (low-VRAM LoRA, other patches) ComfyUI
    casts them itself first. Either only where ``base`` keeps ComfyUI's plain cast-then-compute layers."""

    plain_linear = _is_comfy_plain_cast(base.Linear, comfy.ops.disable_weight_init.Linear)
    plain_conv = _is_comfy_plain_cast(base.Conv2d, comfy.ops.disable_weight_init.Conv2d)

    class Linear(base.Linear):
        def _own_weights_on_onednn(self, input) -> bool:
            """Whether ``input`` meets the stored weights on oneDNN as they are: no cast, no patch functions."""
            return not (
                self.comfy_cast_weights or self.weight_function or self.bias_function
            ) and cpu_matmul.computes_on_onednn(input, self.weight, self.bias)

        def forward(self, input, *args, **kwargs):
            if args or kwargs or not self._own_weights_on_onednn(input):
                return super().forward(input, *args, **kwargs)
            comfy.ops.run_every_op()  # ComfyUI's per-layer interrupt check
            return cpu_matmul.onednn_linear(input, self.weight, self.bias)

        def forward_halves(self, input):
            """(first, second) half of the output features as two fresh tensors, each its own oneDNN product
            (for ``kernels/gated_gelu.geglu``); None where ``forward`` would not take the oneDNN path."""
            if self.out_features % 2 or not self._own_weights_on_onednn(input):
                return None
            comfy.ops.run_every_op()
            weights = self.weight.chunk(2)  # row blocks of a contiguous weight: contiguous views
            biases = (None, None) if self.bias is None else self.bias.chunk(2)
            return tuple(cpu_matmul.onednn_linear(input, w, b) for w, b in zip(weights, biases, strict=True))

        def forward_comfy_cast_weights(self, input, *args, **kwargs):
            if args or kwargs or not plain_linear or input.device.type != "cpu":
                return super().forward_comfy_cast_weights(input, *args, **kwargs)
            if _casts_plainly(self, input):
                return cpu_matmul.linear(input, *_cast_on_cpu(self, input))
            weight, bias, offload_stream = comfy.ops.cast_bias_weight(self, input, offloadable=True)
            out = cpu_matmul.linear(input, weight, bias)
            comfy.ops.uncast_bias_weight(self, weight, bias, offload_stream)
            return out

    class Conv2d(base.Conv2d):
        def _conv_forward(self, input, weight, bias):
            if self.padding_mode != "zeros":
                return super()._conv_forward(input, weight, bias)
            return cpu_matmul.conv2d(input, weight, bias, self.stride, self.padding, self.dilation, self.groups)

        def forward_comfy_cast_weights(self, input, *args, **kwargs):
            if args or kwargs or not plain_conv or not _casts_plainly(self, input):
                return super().forward_comfy_cast_weights(input, *args, **kwargs)
            outputs = [self._conv_forward(input, *_cast_on_cpu(self, input, rows))
                       for rows in output_channel_blocks(self.weight, CAST_BLOCK_ELEMENTS)]
            return outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=1)

    Linear.__qualname__, Conv2d.__qualname__ = f"{base.__name__}.Linear", f"{base.__name__}.Conv2d"
    return type(f"{base.__name__}_cpu_matmul", (base,), {"Linear": Linear, "Conv2d": Conv2d, "cpu_layers": True})


def pack_operations(base: type, cpu_matmul_choice: str | None = None) -> type:
    """The operations the pack builds its networks with: ``base`` with the CPU matrix-product layers
    (``onednn``, the default) or ``base`` itself (``pytorch``)."""
    choice = cpu_matmul_choice or default_cpu_matmul()
    if choice not in CHOICES:
        raise ValueError(f"cpu_matmul must be one of {CHOICES}, not {choice!r}")
    return with_cpu_matmul(base) if choice == "onednn" else base
