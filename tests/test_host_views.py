"""Sampling views with the pack's nodes inside the real ComfyUI: any number of views, window modes,
batching, stacking with other patches, interrupt and rerun, and clear errors for bad inputs."""

from pathlib import Path

import pytest
import torch
from guidance_helpers import (
    RecordingAttentionPatch,
    assert_equal_up_to_batch_shape_rounding,
    batched_and_apart,
    guided_step,
)
from safetensors.torch import load_file

pytestmark = pytest.mark.host

FIXTURES = Path(__file__).parent / "fixtures"
LATENT = 8  # 64x64 pixels: small enough for 64 views on a CPU


@pytest.fixture(scope="module")
def golden():
    return load_file(FIXTURES / "golden_apply_v8.safetensors")


def reference_model(tiny_dp3d, golden, model=None, size=LATENT, strength=1.0):
    from diffportrait3d.nodes.appearance_reference import ReferenceLatent, apply_appearance_reference

    reference = torch.nn.functional.interpolate(golden["reference_image_noisy"][:1], size=(size, size))
    return apply_appearance_reference(
        model or tiny_dp3d["unet"], tiny_dp3d["appearance"], ReferenceLatent(model_latent=reference), strength=strength
    )


def conditioning(tiny_dp3d, golden, views, with_pose=True, size=LATENT):
    from nodes import ControlNetApplyAdvanced

    text = [[golden["c_crossattn_0"][:1], {}]]
    if not with_pose:
        return text, text
    hints = torch.rand(views, size * 8, size * 8, 3, generator=torch.Generator().manual_seed(views))
    return ControlNetApplyAdvanced().apply_controlnet(text, text, tiny_dp3d["pose"], hints, 1.0, 0.0, 1.0)


def sample(model, tiny_dp3d, positive, negative, views, seed=7, steps=2, window_mode="official", size=LATENT,
           **options):
    from diffportrait3d.nodes.sampler import CrossViewSampler

    latent = {"samples": torch.zeros(views, 4, size, size)}
    settings = {"window_size": 8, "window_stride": 4, "window_blend": "pyramid", "middle_module": "official (uncond only)"}
    settings.update(options)
    result = CrossViewSampler.execute(
        model, tiny_dp3d["cross_view"], positive, negative, latent, seed, steps, 3.0, 0.5, window_mode, **settings
    )
    return result.result[0]["samples"]


@pytest.mark.parametrize(
    "views, window_mode",
    [(1, "official"), (3, "official"), (8, "official"), (13, "official"), (13, "sliding"), (13, "looped"),
     (64, "official"), (64, "looped")],
)
def test_any_number_of_views_samples(tiny_dp3d, golden, views, window_mode):
    model = reference_model(tiny_dp3d, golden)
    positive, negative = conditioning(tiny_dp3d, golden, views)
    first = sample(model, tiny_dp3d, positive, negative, views, window_mode=window_mode)
    assert first.shape == (views, 4, LATENT, LATENT) and torch.isfinite(first).all()
    assert first.std() > 0.1
    if views in (3, 13):  # same seed, same views: bit-identical, so no state leaks between runs
        assert torch.equal(first, sample(model, tiny_dp3d, positive, negative, views, window_mode=window_mode))


def test_window_modes_change_how_views_couple(tiny_dp3d, golden):
    model = reference_model(tiny_dp3d, golden)
    positive, negative = conditioning(tiny_dp3d, golden, 16)
    official = sample(model, tiny_dp3d, positive, negative, 16, steps=1)
    looped = sample(model, tiny_dp3d, positive, negative, 16, steps=1, window_mode="looped")
    assert not torch.allclose(official, looped)
    positive, negative = conditioning(tiny_dp3d, golden, 8)
    whole = sample(model, tiny_dp3d, positive, negative, 8, steps=1, window_mode="sliding", window_size=8)
    assert torch.allclose(whole, sample(model, tiny_dp3d, positive, negative, 8, steps=1), atol=1e-5)


def one_guided_step(model, positive, negative, views):
    noise = torch.randn(views, 4, LATENT, LATENT, generator=torch.Generator().manual_seed(3))
    return guided_step(model, positive, negative, noise)


def test_cond_and_uncond_batched_or_apart_give_the_same_result(tiny_dp3d, golden):

    from diffportrait3d.nodes.cross_view import CrossViewSettings, apply_cross_view

    views = 8
    model = apply_cross_view(reference_model(tiny_dp3d, golden), tiny_dp3d["cross_view"], CrossViewSettings())
    positive, negative = conditioning(tiny_dp3d, golden, views, with_pose=False)
    batched, apart = batched_and_apart(model, lambda clone: one_guided_step(clone, positive, negative, views))
    assert_equal_up_to_batch_shape_rounding(batched, apart)


def test_stacks_with_lora_another_attention_patch_and_freeu(tiny_dp3d, golden):
    from comfy_extras.nodes_freelunch import FreeU_V2

    from diffportrait3d.nodes.model_loading import load_dp3d_unet

    views, size = 8, 16  # FreeU rescales by each map's spatial range: undefined on the 1x1 maps of 8x8 latents
    positive, negative = conditioning(tiny_dp3d, golden, views, size=size)
    base = tiny_dp3d["unet"]
    key = "diffusion_model.input_blocks.1.1.proj_in.weight"
    delta = 0.05 * torch.randn(base.model.state_dict()[key].shape, generator=torch.Generator().manual_seed(5))

    # LoRA-style weight patch on the MODEL, then our patches on top ...
    lora = base.clone()
    lora.add_patches({key: (delta,)}, 1.0)
    patched = reference_model(tiny_dp3d, golden, lora, size)
    with_lora = sample(patched, tiny_dp3d, positive, negative, views, steps=1, size=size)
    # ... equals the same delta baked into the weights: the weight patch reached the sampled UNet.
    baked = load_dp3d_unet(tiny_dp3d["files"]["unet"])
    baked.model.state_dict()[key].add_(delta)
    assert torch.allclose(with_lora, sample(reference_model(tiny_dp3d, golden, baked, size), tiny_dp3d, positive, negative,
                                            views, steps=1, size=size), atol=1e-5)
    assert not torch.allclose(with_lora, sample(reference_model(tiny_dp3d, golden, size=size), tiny_dp3d, positive, negative,
                                                views, steps=1, size=size), atol=1e-3)

    # Another attn1 patch and FreeU on the same MODEL: both run, our reference tokens still arrive.
    other = RecordingAttentionPatch()
    stacked = patched.clone()
    stacked.set_model_attn1_patch(other)
    stacked = FreeU_V2.execute(stacked, 1.3, 1.4, 0.9, 0.2).result[0]
    result = sample(stacked, tiny_dp3d, positive, negative, views, steps=1, size=size)
    assert torch.isfinite(result).all() and not torch.allclose(result, with_lora, atol=1e-4)
    assert "output_block_patch" in stacked.model_options["transformer_options"]["patches"]
    assert {call[0][0] for call in other.calls} == {"input", "middle", "output"}
    # the other patch runs after ours on cond rows: it sees own + reference keys (2 x tokens)
    assert any(keys == 2 * tokens for _, tokens, keys in other.calls)


@pytest.mark.parametrize("order", [[0, 1], [1, 0]])
def test_uncond_rows_of_a_mixed_batch_attend_over_their_own_tokens_only(comfy_host, order):
    """The bank reader gives uncond rows [own ; own] keys so that one batch holds both chunks. The attention
    replacement attends them over the first half: the numbers of the duplicated keys and of plain
    self-attention, for 3/4 of the batch's attention work (cond rows over 2T keys, uncond rows over T)."""
    from comfy.ldm.modules.attention import optimized_attention

    from diffportrait3d.bench.flop_count import count_flops
    from diffportrait3d.nodes.appearance_reference import ReferenceAttention

    heads, tokens, channels, views = 2, 16, 32, 3
    generator = torch.Generator().manual_seed(0)
    q, k_own, v_own = (torch.randn(2 * views, tokens, channels, generator=generator) for _ in range(3))
    k_ref, v_ref = (torch.randn(1, tokens, channels, generator=generator) for _ in range(2))
    cond = slice(0, views) if order[0] == 0 else slice(views, 2 * views)
    uncond = slice(views, 2 * views) if order[0] == 0 else slice(0, views)
    k_second, v_second = k_own.clone(), v_own.clone()
    k_second[cond], v_second[cond] = k_ref, v_ref
    k, v = torch.cat([k_own, k_second], dim=1), torch.cat([v_own, v_second], dim=1)
    options = {"n_heads": heads, "dim_head": channels // heads, "attn_precision": None, "cond_or_uncond": order}

    out = ReferenceAttention()(q, k, v, options)
    torch.testing.assert_close(out[cond], optimized_attention(q[cond], k[cond], v[cond], heads))
    torch.testing.assert_close(out[uncond], optimized_attention(q[uncond], k_own[uncond], v_own[uncond], heads))
    torch.testing.assert_close(out, optimized_attention(q, k, v, heads))  # what the duplicated keys give
    assert 4 * count_flops(lambda: ReferenceAttention()(q, k, v, options)) == 3 * count_flops(
        lambda: optimized_attention(q, k, v, heads)
    )


def another_nodes_attention(q, k, v, extra_options):
    """Another node's attn1 replacement (plain attention)."""
    from comfy.ldm.modules.attention import optimized_attention

    return optimized_attention(q, k, v, extra_options["n_heads"])


def test_reference_leaves_another_nodes_attention_replacement_in_place_at_strength_one(tiny_dp3d, golden):
    from diffportrait3d.nodes.appearance_reference import ReferenceAttention
    from diffportrait3d.nodes.unet_structure import transformer_positions

    positions = list(transformer_positions(tiny_dp3d["unet"].model.diffusion_model))
    taken = positions[0]
    model = tiny_dp3d["unet"].clone()
    model.set_model_attn1_replace(another_nodes_attention, *taken)
    for strength in (1.0, 2.0):
        patched = reference_model(tiny_dp3d, golden, model, strength=strength)
        replaced = patched.model_options["transformer_options"]["patches_replace"]["attn1"]
        assert set(replaced) == set(positions)
        # strength 1 keeps the other node's attention; other strengths need the pack's everywhere
        assert (replaced[taken] is another_nodes_attention) == (strength == 1.0)
        assert all(isinstance(replaced[p], ReferenceAttention) for p in positions if p != taken)


def test_patching_never_touches_the_incoming_model(tiny_dp3d, golden):
    from diffportrait3d.nodes.cross_view import CrossViewSettings, apply_cross_view

    base = tiny_dp3d["unet"]
    options_before = repr(base.model_options)
    views = 8
    positive, negative = conditioning(tiny_dp3d, golden, views, with_pose=False)
    plain_before = one_guided_step(base, positive, negative, views)
    model = apply_cross_view(reference_model(tiny_dp3d, golden), tiny_dp3d["cross_view"], CrossViewSettings())
    one_guided_step(model, positive, negative, views)
    assert repr(base.model_options) == options_before
    assert torch.equal(plain_before, one_guided_step(base, positive, negative, views))


def test_interrupt_then_rerun_gives_identical_output_and_removes_every_patch(tiny_dp3d, golden):
    import comfy.model_management
    import comfy.utils

    from diffportrait3d.kernels.model.cross_view_attention import CrossViewModule

    views = 8
    model = reference_model(tiny_dp3d, golden)
    positive, negative = conditioning(tiny_dp3d, golden, views)
    reference = sample(model, tiny_dp3d, positive, negative, views, steps=3)

    def interrupt_on_second_step(value, total, preview=None, node_id=None):
        if value == 2:
            comfy.model_management.interrupt_current_processing(True)

    previous_hook = comfy.utils.PROGRESS_BAR_HOOK
    comfy.utils.set_progress_bar_global_hook(interrupt_on_second_step)
    try:
        with pytest.raises(comfy.model_management.InterruptProcessingException):
            sample(model, tiny_dp3d, positive, negative, views, steps=3)
    finally:
        comfy.utils.set_progress_bar_global_hook(previous_hook)
        comfy.model_management.interrupt_current_processing(False)
    unet = tiny_dp3d["unet"].model.diffusion_model
    assert not any(isinstance(m, CrossViewModule) for m in unet.modules())
    assert torch.equal(reference, sample(model, tiny_dp3d, positive, negative, views, steps=3))


def test_bad_inputs_get_clear_errors(tiny_dp3d, golden, tiny_sd15_model):
    from diffportrait3d.nodes.appearance_reference import AppearanceReferenceEncoder
    from diffportrait3d.nodes.cross_view import CrossViewSettings, apply_cross_view

    model = reference_model(tiny_dp3d, golden)
    positive, negative = conditioning(tiny_dp3d, golden, 5)
    with pytest.raises(ValueError, match="positive: the pose ControlNet has 5 condition images for 8 views"):
        sample(model, tiny_dp3d, positive, negative, 8, steps=1)

    image = torch.rand(1, 64, 64, 3)
    with pytest.raises(ValueError, match="model: the MODEL's UNet does not match the appearance net"):
        AppearanceReferenceEncoder.execute(tiny_sd15_model, tiny_dp3d["appearance"], object(), image, 1.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="vae: connect the VAE"):
        AppearanceReferenceEncoder.execute(tiny_dp3d["unet"], tiny_dp3d["appearance"], None, image, 1.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="cross-view slots"):
        apply_cross_view(tiny_sd15_model, tiny_dp3d["cross_view"], CrossViewSettings())
    with pytest.raises(ValueError, match="window_mode must be one of"):
        apply_cross_view(tiny_dp3d["unet"], tiny_dp3d["cross_view"], CrossViewSettings(window_mode="spiral"))


def test_reference_strength_zero_removes_the_reference_and_one_is_official(tiny_dp3d, golden):
    from diffportrait3d.nodes.appearance_reference import ReferenceLatent, apply_appearance_reference
    from diffportrait3d.nodes.cross_view import CrossViewSettings, apply_cross_view

    views = 8
    positive, negative = conditioning(tiny_dp3d, golden, views, with_pose=False)
    reference = ReferenceLatent(model_latent=torch.nn.functional.interpolate(golden["reference_image_noisy"][:1], 8))

    def step(strength=None):
        model = tiny_dp3d["unet"]
        if strength is not None:
            model = apply_appearance_reference(model, tiny_dp3d["appearance"], reference, strength=strength)
        model = apply_cross_view(model, tiny_dp3d["cross_view"], CrossViewSettings())
        return one_guided_step(model, positive, negative, views)

    without, official = step(None), step(1.0)
    scale = official.abs().max()
    # Strength 0 skips the reference (no appearance pass, no reference keys): exactly the model without it.
    assert torch.equal(step(0.0), without)
    # Strength 1 + 1e-7 biases the reference tokens: another attention kernel than the plain path, so it equals it
    # up to float32 rounding only, amplified by the network and one DDIM step. The bound is the project's float32
    # bound for one model call (DESIGN.md §4: 1e-4 of the scale), not one CPU's rounding (CPUs differ here by
    # up to about 1.5e-5 of the scale).
    assert (step(1.0 + 1e-7) - official).abs().max() <= 1e-4 * scale
    assert (step(2.0) - without).norm() > (official - without).norm() > 0


def test_encoder_node_takes_any_portrait_through_a_real_vae(tiny_dp3d, golden):
    from diffportrait3d.nodes.appearance_reference import AppearanceReferenceEncoder
    from diffportrait3d.nodes.model_loading import load_dp3d_vae

    vae = load_dp3d_vae(tiny_dp3d["files"]["vae"])
    views = 3
    positive, negative = conditioning(tiny_dp3d, golden, views)

    def views_for(image):
        model = AppearanceReferenceEncoder.execute(tiny_dp3d["unet"], tiny_dp3d["appearance"], vae, image, 1.0, 0.0, 1.0)
        return sample(model.result[0], tiny_dp3d, positive, negative, views, steps=1)

    generator = torch.Generator().manual_seed(11)
    rgba_wide = torch.rand(1, 48, 80, 4, generator=generator)
    grey_tall = torch.rand(1, 100, 60, 1, generator=generator)
    first, second = views_for(rgba_wide), views_for(grey_tall)
    assert torch.isfinite(first).all() and torch.isfinite(second).all()
    assert not torch.allclose(first, second, atol=1e-4)  # the portrait reaches the views
