"""ComfyUI layer classes ("operations") whose float32 CPU linear layers and small convolutions run on
``kernels/cpu_matmul``; every other case is the base class's own code.

Only the networks this pack builds use them (its loaders and the benchmark): the layers are chosen when a
network is built, the way ComfyUI itself picks operations, so nothing is patched at run time. Set
``DIFFPORTRAIT3D_CPU_MATMUL=pytorch`` to build with ComfyUI's plain operations.
"""

from __future__ import annotations

import functools
import os

import comfy.ops

from ..kernels import cpu_matmul

ENVIRONMENT_SWITCH = "DIFFPORTRAIT3D_CPU_MATMUL"
CHOICES = ("onednn", "pytorch")


def default_cpu_matmul() -> str:
    """``onednn`` unless ``$DIFFPORTRAIT3D_CPU_MATMUL`` says ``pytorch``."""
    choice = os.environ.get(ENVIRONMENT_SWITCH, "onednn").strip().lower() or "onednn"
    if choice not in CHOICES:
        raise ValueError(f"${ENVIRONMENT_SWITCH} must be one of {CHOICES}, not {choice!r}")
    return choice


@functools.cache
def with_cpu_matmul(base: type) -> type:
    """``base`` (a ComfyUI operations class) with Linear and Conv2d computing through ``cpu_matmul``.

    Linear layers whose weights ComfyUI casts or patches on the fly (``comfy_cast_weights`` for bf16/fp16
    storage, low-VRAM weight functions) run ComfyUI's cast first, then the same product, provided ``base``
    keeps ComfyUI's plain cast-then-product layer; convolutions take it in either case, after the cast."""

    plain_cast = getattr(base.Linear, "forward_comfy_cast_weights", None) is (
        comfy.ops.disable_weight_init.Linear.forward_comfy_cast_weights
    )

    class Linear(base.Linear):
        def forward(self, input, *args, **kwargs):
            if (
                args
                or kwargs
                or self.comfy_cast_weights
                or self.weight_function
                or self.bias_function
                or not cpu_matmul.computes_on_onednn(input, self.weight, self.bias)
            ):
                return super().forward(input, *args, **kwargs)
            comfy.ops.run_every_op()  # ComfyUI's per-layer interrupt check
            return cpu_matmul.onednn_linear(input, self.weight, self.bias)

        def forward_comfy_cast_weights(self, input, *args, **kwargs):
            if args or kwargs or not plain_cast or input.device.type != "cpu":
                return super().forward_comfy_cast_weights(input, *args, **kwargs)
            weight, bias, offload_stream = comfy.ops.cast_bias_weight(self, input, offloadable=True)
            out = cpu_matmul.linear(input, weight, bias)
            comfy.ops.uncast_bias_weight(self, weight, bias, offload_stream)
            return out

    class Conv2d(base.Conv2d):
        def _conv_forward(self, input, weight, bias):
            if self.padding_mode != "zeros":
                return super()._conv_forward(input, weight, bias)
            return cpu_matmul.conv2d(input, weight, bias, self.stride, self.padding, self.dilation, self.groups)

    Linear.__qualname__, Conv2d.__qualname__ = f"{base.__name__}.Linear", f"{base.__name__}.Conv2d"
    return type(f"{base.__name__}_cpu_matmul", (base,), {"Linear": Linear, "Conv2d": Conv2d})


def pack_operations(base: type, cpu_matmul_choice: str | None = None) -> type:
    """The operations the pack builds its networks with: ``base`` with the CPU matrix-product layers
    (``onednn``, the default) or ``base`` itself (``pytorch``)."""
    choice = cpu_matmul_choice or default_cpu_matmul()
    if choice not in CHOICES:
        raise ValueError(f"cpu_matmul must be one of {CHOICES}, not {choice!r}")
    return with_cpu_matmul(base) if choice == "onednn" else base
