"""More than one appearance reference inside the real ComfyUI: the Appearance Reference Encoder applied to a MODEL
that already has a reference adds one (DiffPortrait360's front and back, or a front and a side photo). Each
reference runs its own appearance net pass, the UNet's self-attention on conditional rows attends over
[own ; reference 1 ; reference 2], the unconditional rows never see a reference."""

from pathlib import Path

import pytest
import torch
from guidance_helpers import RecordingAttentionPatch, guided_step
from safetensors.torch import load_file

pytestmark = pytest.mark.host

FIXTURES = Path(__file__).parent / "fixtures"
VIEWS, SIZE = 8, 8


@pytest.fixture
def setup(tiny_dp3d):
    """Two different reference latents (the golden portrait and its mirror image), the pose ControlNet under the
    official guidance on 8 views, and the start noise of one guided step."""
    from nodes import ControlNetApplyAdvanced

    from diffportrait3d.nodes.sampler import official_guidance

    golden = load_file(FIXTURES / "golden_apply_v8.safetensors")
    front = torch.nn.functional.interpolate(golden["reference_image_noisy"][:1], size=(SIZE, SIZE))
    text = [[golden["c_crossattn_0"][:1], {}]]
    hints = torch.rand(VIEWS, SIZE * 8, SIZE * 8, 3, generator=torch.Generator().manual_seed(4))
    positive, negative = official_guidance(
        *ControlNetApplyAdvanced().apply_controlnet(text, text, tiny_dp3d["pose"], hints, 1.0, 0.0, 1.0)
    )
    noise = torch.randn(VIEWS, 4, SIZE, SIZE, generator=torch.Generator().manual_seed(3))
    return {"front": front, "side": front.flip(-1), "positive": positive, "negative": negative, "noise": noise}


def with_references(tiny_dp3d, *references, model=None):
    """``model`` (default: the tiny UNet) with each (latent, options) reference added in turn, as chained nodes."""
    from diffportrait3d.nodes.appearance_reference import ReferenceLatent, apply_appearance_reference

    model = model or tiny_dp3d["unet"]
    for latent, options in references:
        model = apply_appearance_reference(model, tiny_dp3d["appearance"], ReferenceLatent(model_latent=latent), **options)
    return model


class RecordUNetCalls:
    """DIFFUSION_MODEL wrapper inside the pack's: each call's cond/uncond chunks, output and reference bank."""

    def __init__(self):
        self.calls = []

    def __call__(self, executor, x, timesteps, context, y, control, transformer_options, **kwargs):
        out = executor(x, timesteps, context, y, control, transformer_options, **kwargs)
        banks = [v for k, v in transformer_options.items() if k.startswith("dp3d_reference_bank_")]
        self.calls.append((list(transformer_options["cond_or_uncond"]), out.detach().clone(), banks))
        return out


def eps_of(model, tiny_dp3d, setup, key_counts: RecordingAttentionPatch | None = None) -> dict:
    """eps of the conditional and unconditional rows of one guided step's UNet call (cross-view modules on),
    and the bank that call read."""
    import comfy.patcher_extension as ext

    from diffportrait3d.nodes.cross_view import CrossViewSettings, apply_cross_view

    model = apply_cross_view(model, tiny_dp3d["cross_view"], CrossViewSettings())
    recorder = RecordUNetCalls()
    model.add_wrapper_with_key(ext.WrappersMP.DIFFUSION_MODEL, "test", recorder)
    if key_counts is not None:
        model.set_model_attn1_patch(key_counts)
    with torch.no_grad():
        guided_step(model, setup["positive"], setup["negative"], setup["noise"])
    assert len(recorder.calls) == 1  # one step, cond and uncond batched
    chunks, out, banks = recorder.calls[0]
    rows = out.shape[0] // len(chunks)
    eps = {("cond" if kind == 0 else "uncond"): out[i * rows:(i + 1) * rows] for i, kind in enumerate(chunks)}
    return {**eps, "bank": banks[0] if banks else None}


def test_the_same_image_twice_is_twice_the_reference_tokens_not_one_reference(tiny_dp3d, setup):
    front = (setup["front"], {})
    counts = {}
    results = {}
    for n in (1, 2, 3):
        counts[n] = RecordingAttentionPatch()
        results[n] = eps_of(with_references(tiny_dp3d, *[front] * n), tiny_dp3d, setup, counts[n])
    plain = eps_of(tiny_dp3d["unet"], tiny_dp3d, setup)
    for n in (1, 2, 3):
        # every self-attention of the UNet call attends over own + n x own tokens (uncond rows: copies of own)
        assert counts[n].calls and all(keys == (1 + n) * own for _, own, keys in counts[n].calls)
        # the bank grows linearly: n entries per block, each the size of one reference's
        bank = results[n]["bank"]
        assert bank.strengths == [1.0] * n
        assert sum(e.numel() for entries in bank.entries.values() for e in entries) == n * sum(
            e.numel() for entries in results[1]["bank"].entries.values() for e in entries
        )
    scale = results[1]["cond"].abs().max()
    assert (results[2]["cond"] - results[1]["cond"]).abs().max() > 1e-3 * scale
    assert (results[3]["cond"] - results[2]["cond"]).abs().max() > 1e-3 * scale
    for n in (1, 2, 3):  # the unconditional rows never see a reference
        assert torch.equal(results[n]["uncond"], plain["uncond"])


def test_reference_order_changes_eps_at_float_noise_only(tiny_dp3d, setup):
    """Attention is a sum over its keys: [own ; front ; side] and [own ; side ; front] differ by the order of
    float32 additions only."""
    front, side = (setup["front"], {}), (setup["side"], {})
    front_side = eps_of(with_references(tiny_dp3d, front, side), tiny_dp3d, setup)
    side_front = eps_of(with_references(tiny_dp3d, side, front), tiny_dp3d, setup)
    front_only = eps_of(with_references(tiny_dp3d, front), tiny_dp3d, setup)
    scale = front_side["cond"].abs().max()
    assert (front_side["cond"] - side_front["cond"]).abs().max() <= 1e-5 * scale
    assert (front_side["cond"] - front_only["cond"]).abs().max() > 1e-3 * scale  # the side photo matters
    assert torch.equal(front_side["uncond"], side_front["uncond"])
    assert torch.equal(front_side["uncond"], front_only["uncond"])


def test_each_reference_has_its_own_strength_and_sampling_range(tiny_dp3d, setup):
    front, side = (setup["front"], {}), (setup["side"], {})
    front_only = eps_of(with_references(tiny_dp3d, front), tiny_dp3d, setup)
    side_only = eps_of(with_references(tiny_dp3d, side), tiny_dp3d, setup)
    # strength 0 skips that reference's pass: exactly the other reference alone
    for references, alone in (((front, (setup["side"], {"strength": 0.0})), front_only),
                              (((setup["front"], {"strength": 0.0}), side), side_only)):
        result = eps_of(with_references(tiny_dp3d, *references), tiny_dp3d, setup)
        assert torch.equal(result["cond"], alone["cond"]) and torch.equal(result["uncond"], alone["uncond"])
        assert result["bank"].strengths == [1.0]
    # a reference outside its start/end percent at this step (t = 601, about 0.4 of the sampling) does not run
    late = eps_of(with_references(tiny_dp3d, front, (setup["side"], {"start_percent": 0.9})), tiny_dp3d, setup)
    assert torch.equal(late["cond"], front_only["cond"])
    # each strength weighs its own reference's tokens: swapping which reference is strong changes eps
    both = eps_of(with_references(tiny_dp3d, front, side), tiny_dp3d, setup)
    strong_side = eps_of(with_references(tiny_dp3d, front, (setup["side"], {"strength": 2.0})), tiny_dp3d, setup)
    strong_front = eps_of(with_references(tiny_dp3d, (setup["front"], {"strength": 2.0}), side), tiny_dp3d, setup)
    assert strong_side["bank"].strengths == [1.0, 2.0] and strong_front["bank"].strengths == [2.0, 1.0]
    scale = both["cond"].abs().max()
    for a, b in ((strong_side, both), (strong_front, both), (strong_side, strong_front)):
        assert (a["cond"] - b["cond"]).abs().max() > 1e-3 * scale
    # strength 1 + 1e-7 takes the biased attention path: the official numbers up to float32 rounding (DESIGN.md
    # section 4: 1e-4 of the scale for one model call)
    nudged = eps_of(with_references(tiny_dp3d, front, (setup["side"], {"strength": 1.0 + 1e-7})), tiny_dp3d, setup)
    assert (nudged["cond"] - both["cond"]).abs().max() <= 1e-4 * scale


def test_one_appearance_net_pass_per_reference_shared_by_all_views(tiny_dp3d, setup):
    batches = []
    hook = tiny_dp3d["appearance"].model.register_forward_pre_hook(lambda module, args: batches.append(args[0].shape[0]))
    try:
        eps_of(with_references(tiny_dp3d, (setup["front"], {}), (setup["side"], {})), tiny_dp3d, setup)
        assert batches == [1, 1]  # one batch-1 run per reference for all 8 views
        batches.clear()
        per_view = setup["side"].repeat(VIEWS, 1, 1, 1) + 0.1 * torch.arange(VIEWS).view(-1, 1, 1, 1)
        result = eps_of(with_references(tiny_dp3d, (setup["front"], {}), (per_view, {})), tiny_dp3d, setup)
        assert batches == [1, VIEWS] and torch.isfinite(result["cond"]).all()
    finally:
        hook.remove()


def test_adding_a_reference_leaves_the_incoming_model_as_it_was(tiny_dp3d, setup):
    import comfy.patcher_extension as ext

    from diffportrait3d.nodes.appearance_reference import ADDITIONAL_MODELS_KEY

    once = with_references(tiny_dp3d, (setup["front"], {}))
    before = eps_of(once, tiny_dp3d, setup)
    twice = with_references(tiny_dp3d, (setup["side"], {}), model=once)
    assert torch.equal(eps_of(once, tiny_dp3d, setup)["cond"], before["cond"])
    runners = once.get_wrappers(ext.WrappersMP.DIFFUSION_MODEL, ADDITIONAL_MODELS_KEY)
    assert len(runners) == 1 and len(runners[0].references) == 1
    (runner,) = twice.get_wrappers(ext.WrappersMP.DIFFUSION_MODEL, ADDITIONAL_MODELS_KEY)
    assert len(runner.references) == 2 and runner.bank_key == runners[0].bank_key
    # one appearance net for both references: ComfyUI loads it once
    assert len(twice.get_additional_models_with_key(ADDITIONAL_MODELS_KEY)) == 1


def test_a_second_reference_with_the_wrong_image_count_is_named(tiny_dp3d, setup):
    three = setup["side"].repeat(3, 1, 1, 1) + torch.arange(3.0).view(-1, 1, 1, 1)
    model = with_references(tiny_dp3d, (setup["front"], {}), (three, {}))
    with pytest.raises(ValueError, match="reference_image has 3 images for 8 views: give 1, or one per view"):
        eps_of(model, tiny_dp3d, setup)
