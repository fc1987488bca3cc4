"""The views of one portrait share one text context: on a CPU the pack's layers then project it once.

``broadcast_equal_rows`` hands a network the context as one row expanded to all (stride 0), and the pack's
CPU layers (``kernels/cpu/matmul.py``) compute such a row once instead of once per view. Installed when a
network is built with those layers: a wrapper on the UNet's ModelPatcher, a ControlNet subclass for the
pose ControlNet. Same numbers; other contexts pass unchanged.
"""

from __future__ import annotations

import comfy.controlnet
import comfy.patcher_extension
import torch

from ...kernels.cpu.broadcast_rows import broadcast_equal_rows

WRAPPER_KEY = "dp3d_shared_text_context"


class SharedTextContext:
    """DIFFUSION_MODEL wrapper: the UNet gets a text context whose rows are all equal (the views of one
    portrait; the official guidance gives cond and uncond the same text) as one broadcast row."""

    def __call__(self, executor, x, timesteps, context, *args, **kwargs):
        if isinstance(context, torch.Tensor):
            context = broadcast_equal_rows(context)
        return executor(x, timesteps, context, *args, **kwargs)


def share_text_context_(model_patcher):
    """Adds ``SharedTextContext`` to a UNet's ModelPatcher (and so to every clone of it); returns it."""
    model_patcher.add_wrapper_with_key(
        comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, WRAPPER_KEY, SharedTextContext()
    )
    return model_patcher


class SharedTextControlNet(comfy.controlnet.ControlNet):
    """ComfyUI's ControlNet whose text context reaches the network as one broadcast row when all rows agree.
    ComfyUI casts the context to the ControlNet's compute dtype, and a cast copy would hold every row again,
    so the context is cast first (the same values the ControlNet computes with)."""

    def get_control(self, x_noisy, t, cond, batched_number, transformer_options):
        context = cond.get("c_crossattn")
        if isinstance(context, torch.Tensor):
            dtype = self.manual_cast_dtype or self.control_model.dtype
            cond = {**cond, "c_crossattn": broadcast_equal_rows(context.to(dtype))}
        return super().get_control(x_noisy, t, cond, batched_number, transformer_options)

    def copy(self):
        duplicate = super().copy()
        duplicate.__class__ = SharedTextControlNet
        return duplicate
