"""Helpers shared by host tests that drive one guided step through ComfyUI's own CFGGuider."""

from pathlib import Path

import torch
from safetensors.torch import load_file

FIXTURES = Path(__file__).parent / "fixtures"
VIEWS, SIZE = 8, 8


class RecordChunks:
    """DIFFUSION_MODEL wrapper recording how ComfyUI chunked cond/uncond in each UNet call."""

    def __init__(self):
        self.chunks = []

    def __call__(self, executor, *args, **kwargs):
        self.chunks.append(list(args[5].get("cond_or_uncond", [])))
        return executor(*args, **kwargs)


class RecordingAttentionPatch:
    """Another pack's attn1 patch: leaves the math alone, records which blocks it saw and key counts."""

    def __init__(self):
        self.calls = []

    def __deepcopy__(self, memo):  # ComfyUI deep-copies patches on clone(); keep one record
        return self

    def __call__(self, n, context, value, extra_options):
        self.calls.append((extra_options["block"], n.shape[1], context.shape[1]))
        return n, context, value


class SeparateCondCalls:
    """CALC_COND_BATCH wrapper: evaluates every cond group on its own instead of batching them (the others
    are passed as None, so each keeps its position and with it its cond/uncond label)."""

    def __call__(self, executor, model, conds, x_in, timestep, model_options):
        alone = [[c if j == i else None for j, c in enumerate(conds)] for i in range(len(conds))]
        return [executor(model, only, x_in, timestep, model_options)[i] for i, only in enumerate(alone)]


def batched_and_apart(model, step) -> tuple[torch.Tensor, torch.Tensor]:
    """``step(model)`` on a clone where ComfyUI batches cond and uncond into one UNet call, and on one where
    every cond group is its own call; asserts that each clone really ran that way."""
    import comfy.patcher_extension as ext

    batched_model, apart_model = model.clone(), model.clone()
    batched_chunks, apart_chunks = RecordChunks(), RecordChunks()
    batched_model.add_wrapper_with_key(ext.WrappersMP.DIFFUSION_MODEL, "test", batched_chunks)
    apart_model.add_wrapper_with_key(ext.WrappersMP.DIFFUSION_MODEL, "test", apart_chunks)
    apart_model.add_wrapper_with_key(ext.WrappersMP.CALC_COND_BATCH, "test", SeparateCondCalls())
    batched, apart = step(batched_model), step(apart_model)
    assert sorted(batched_chunks.chunks[0]) == [0, 1]
    assert all(len(chunks) == 1 for chunks in apart_chunks.chunks)
    return batched, apart


def guided_step(model, positive, negative, noise: torch.Tensor) -> torch.Tensor:
    """One guided DDIM step (cfg 3) from t=601 to the end, starting from ``noise`` on an empty latent."""
    import comfy.samplers

    from diffportrait3d.nodes.sampler import ddim_sampler

    guider = comfy.samplers.CFGGuider(model)
    guider.set_conds(positive, negative)
    guider.set_cfg(3.0)
    sampling = model.get_model_object("model_sampling")
    sigmas = torch.stack([sampling.sigma(torch.tensor(601.0)), torch.tensor(0.0)])
    return guider.sample(noise, torch.zeros_like(noise), ddim_sampler(0.0), sigmas, seed=1)


def assert_equal_up_to_batch_shape_rounding(batched: torch.Tensor, apart: torch.Tensor) -> None:
    """The same guided step computed in one batch and in separate calls agrees to float32 rounding of the two
    batch shapes. oneDNN (the pack's CPU products) picks its kernels by shape: here that is up to 3e-5 of the
    output scale (PyTorch's MKL products: 1e-6), while mixing up cond and uncond rows changes the output by a
    large fraction of it."""
    assert (batched - apart).abs().max() <= 1e-4 * batched.abs().max()


def official_views_setup(tiny_dp3d):
    """(model with appearance reference and cross-view modules, positive and negative with the pose
    ControlNet under the official guidance, noise) for VIEWS views of SIZE x SIZE latents, one text."""
    from nodes import ControlNetApplyAdvanced

    from diffportrait3d.nodes.appearance_reference import ReferenceLatent, apply_appearance_reference
    from diffportrait3d.nodes.cross_view import CrossViewSettings, apply_cross_view
    from diffportrait3d.nodes.sampler import official_guidance

    golden = load_file(FIXTURES / "golden_apply_v8.safetensors")
    reference = torch.nn.functional.interpolate(golden["reference_image_noisy"][:1], size=(SIZE, SIZE))
    model = apply_appearance_reference(tiny_dp3d["unet"], tiny_dp3d["appearance"], ReferenceLatent(model_latent=reference))
    model = apply_cross_view(model, tiny_dp3d["cross_view"], CrossViewSettings())
    text = [[golden["c_crossattn_0"][:1], {}]]
    hints = torch.rand(VIEWS, SIZE * 8, SIZE * 8, 3, generator=torch.Generator().manual_seed(4))
    positive, negative = official_guidance(
        *ControlNetApplyAdvanced().apply_controlnet(text, text, tiny_dp3d["pose"], hints, 1.0, 0.0, 1.0)
    )
    noise = torch.randn(VIEWS, 4, SIZE, SIZE, generator=torch.Generator().manual_seed(3))
    return model, positive, negative, noise
