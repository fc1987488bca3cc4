"""The pack under ComfyUI's TorchCompileModel, inside the real ComfyUI: the compiled UNet gives the numbers of
the uncompiled one.

The node compiles the UNet with torch.compile and drops the guards on everything under the transformer
options, so a compiled graph that branched on them (which rows are conditional, which block is running, the
reference bank) would keep its first call's branch. The tests use the node's own wrapper and guard filter
with the "eager" backend: the same tracing and guards as inductor, without generating code (which the CPU
layer tests cover)."""

from __future__ import annotations

import pytest
import torch
from guidance_helpers import (
    SeparateCondCalls,
    assert_equal_up_to_batch_shape_rounding,
    guided_step,
    official_views_setup,
)

pytestmark = pytest.mark.host


def compiled_like_torch_compile_model(model):
    """A clone of ``model`` with what ComfyUI's TorchCompileModel node sets, on the "eager" backend."""
    from comfy_api.torch_helpers import set_torch_compile_wrapper
    from comfy_extras.nodes_torch_compile import skip_torch_compile_dict

    compiled = model.clone()
    set_torch_compile_wrapper(model=compiled, backend="eager", options={"guard_filter_fn": skip_torch_compile_dict})
    return compiled


@pytest.mark.parametrize("cond_calls", ["batched", "separate"])
def test_a_compiled_unet_keeps_the_numbers_of_the_pack(tiny_dp3d, cond_calls):
    """Batched, the middle cross-view module runs on the uncond chunk only (a guard-free graph ran it on both);
    in separate calls, the uncond call must not take the cond call's branches (reference, chunks)."""
    import comfy.patcher_extension as ext

    model, positive, negative, noise = official_views_setup(tiny_dp3d)
    if cond_calls == "separate":
        model = model.clone()
        model.add_wrapper_with_key(ext.WrappersMP.CALC_COND_BATCH, "test", SeparateCondCalls())
    torch._dynamo.reset()
    with torch.no_grad():
        eager = guided_step(model, positive, negative, noise)
        compiled = guided_step(compiled_like_torch_compile_model(model), positive, negative, noise)
    torch._dynamo.reset()
    # Traced, the pack's CPU layers take PyTorch's products instead of oneDNN's: apart by float32 rounding
    # (2e-5 of the output scale here), while a graph that kept its first branches was off by 23 %.
    assert_equal_up_to_batch_shape_rounding(compiled, eager)
