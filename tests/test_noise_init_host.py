"""The 3D-aware noise inside the real ComfyUI: the first model input of a sampling run equals the official
``x_T`` (golden ``step_x[0]``) through SamplerCustomAdvanced (NOISE) and KSamplerAdvanced with add_noise
disabled (LATENT); the node end to end with a VAE; its input errors."""

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

pytestmark = pytest.mark.host

FIXTURES = Path(__file__).parent / "fixtures"
STEPS = 5  # the golden run: DDIM timesteps 801 ... 1


@pytest.fixture(scope="module")
def golden():
    return load_file(FIXTURES / "golden_ddim_v8.safetensors")


@pytest.fixture
def tiny_vae(tiny_dp3d):
    """The tiny official VAE (ch 32, 8x down) as ComfyUI's own ``comfy.sd.VAE``."""
    import comfy.sd

    config = json.loads((FIXTURES / "tiny_config.json").read_text())
    params = config["official_yaml_equivalent"]["model"]["params"]["first_stage_config"]["params"]
    vae_config = {"params": {"embed_dim": params["embed_dim"], "ddconfig": params["ddconfig"]}}
    return comfy.sd.VAE(sd=load_file(tiny_dp3d["files"]["vae"]), config=vae_config)


class FirstUNetInput:
    """DIFFUSION_MODEL wrapper recording the latent the UNet receives on each call."""

    def __init__(self):
        self.inputs = []

    def __call__(self, executor, x, *args, **kwargs):
        self.inputs.append(x.detach().clone())
        return executor(x, *args, **kwargs)


def recording_model(unet):
    import comfy.patcher_extension

    recorder = FirstUNetInput()
    model = unet.clone()
    model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "dp3d_test_first_input", recorder)
    return model, recorder


def text(golden):
    context = [[golden["c_crossattn_0"][:1], {}]]
    return context, context


def golden_noise(model, golden, steps: int = STEPS):
    """The NOISE object built from the golden prior latents and the golden q_sample eps, made for ``steps``."""
    from diffportrait3d.kernels.noise.start_latent import q_sample
    from diffportrait3d.nodes.noise_init import ThreeDAwareNoise
    from diffportrait3d.nodes.sampler import official_sigmas

    sampling = model.get_model_object("model_sampling")
    sigma_first = float(official_sigmas(model, steps)[0])
    sigma_start = float(sampling.sigma(torch.tensor(999.0)))
    first_input = q_sample(golden["feature_control"], golden["q_sample_noise"], sigma_start)
    return ThreeDAwareNoise(first_input, 0, model.get_model_object("latent_format"), sigma_first, float(sampling.sigma_max))


def test_noise_through_sampler_custom_advanced_starts_at_the_official_x_T(tiny_dp3d, golden):
    import comfy.samplers
    from comfy_extras.nodes_custom_sampler import SamplerCustomAdvanced

    from diffportrait3d.nodes.sampler import ddim_sampler, official_sigmas

    model, recorder = recording_model(tiny_dp3d["unet"])
    guider = comfy.samplers.CFGGuider(model)
    guider.set_conds(*text(golden))
    guider.set_cfg(3.0)
    sigmas = official_sigmas(model, STEPS)
    empty = {"samples": torch.zeros(8, 4, 16, 16)}
    SamplerCustomAdvanced.execute(golden_noise(model, golden), guider, ddim_sampler(0.0), sigmas[:2], empty)
    error = (recorder.inputs[0][:8] - golden["step_x"][0]).abs().max().item()
    print(f"SamplerCustomAdvanced first UNet input vs golden step_x[0]: max|diff| {error:.2e}")
    assert error <= 1e-5


def test_noise_through_the_cross_view_sampler_starts_at_the_official_x_T(tiny_dp3d, golden):
    from diffportrait3d.nodes.sampler import CrossViewSampler

    model, recorder = recording_model(tiny_dp3d["unet"])
    empty = {"samples": torch.zeros(8, 4, 16, 16)}
    CrossViewSampler.execute(
        model, tiny_dp3d["cross_view"], *text(golden), empty, 0, STEPS, 3.0, 0.0, "official",
        window_size=8, window_stride=4, window_blend="pyramid", middle_module="official (uncond only)",
        noise=golden_noise(model, golden),
    )
    error = (recorder.inputs[0][:8] - golden["step_x"][0]).abs().max().item()
    print(f"Cross-view sampler first UNet input vs golden step_x[0]: max|diff| {error:.2e}")
    assert error <= 1e-5


@pytest.mark.parametrize("noise_steps", [2, 10, 50])
def test_the_cross_view_sampler_starts_a_noise_made_for_other_steps_at_the_official_x_T(tiny_dp3d, golden, noise_steps):
    """The noise node's steps cannot disagree with the sampler's: the sampler rescales the 3D-aware noise to
    its own first sigma (without that, a noise made for 10 steps started a 5-step run 2x too loud)."""
    from diffportrait3d.nodes.sampler import CrossViewSampler

    model, recorder = recording_model(tiny_dp3d["unet"])
    empty = {"samples": torch.zeros(8, 4, 16, 16)}
    CrossViewSampler.execute(
        model, tiny_dp3d["cross_view"], *text(golden), empty, 0, STEPS, 3.0, 0.0, "official",
        window_size=8, window_stride=4, window_blend="pyramid", middle_module="official (uncond only)",
        noise=golden_noise(model, golden, steps=noise_steps),
    )
    error = (recorder.inputs[0][:8] - golden["step_x"][0]).abs().max().item()
    assert error <= 1e-5


def test_noised_latent_through_ksampler_advanced_starts_at_the_official_x_T(tiny_dp3d, golden):
    import nodes

    model, recorder = recording_model(tiny_dp3d["unet"])
    noise = golden_noise(model, golden)
    latent = {"samples": model.get_model_object("latent_format").process_out(noise.state)}
    positive, negative = text(golden)
    # KSamplerAdvanced(add_noise="disable", scheduler "ddim_uniform" = the official timesteps), first step only.
    nodes.common_ksampler(model, 0, STEPS, 3.0, "euler", "ddim_uniform", positive, negative, latent,
                          disable_noise=True, start_step=0, last_step=1, force_full_denoise=False)
    error = (recorder.inputs[0][:8] - golden["step_x"][0]).abs().max().item()
    print(f"KSamplerAdvanced first UNet input vs golden step_x[0]: max|diff| {error:.2e}")
    assert error <= 1e-5


def test_node_start_is_q_sample_of_the_encoded_priors(tiny_dp3d, tiny_vae, golden):
    """The node end to end: priors -> VAE mean -> x0.18215 -> q_sample at 999 with the seed's noise is the
    first UNet input, whether the sampler gets the NOISE (empty latent) or the noised LATENT (no noise)."""
    import comfy.samplers
    from comfy_extras.nodes_custom_sampler import Noise_EmptyNoise, SamplerCustomAdvanced

    from diffportrait3d.kernels.noise.view_noise import view_noise
    from diffportrait3d.nodes.noise_init import DiffPortrait3DNoise
    from diffportrait3d.nodes.sampler import ddim_sampler, official_sigmas

    model, recorder = recording_model(tiny_dp3d["unet"])
    views, seed = 3, 42
    priors = torch.rand(views, 64, 64, 3, generator=torch.Generator().manual_seed(0))
    empty = {"samples": torch.zeros(views, 4, 8, 8)}
    noise, noised, preview = DiffPortrait3DNoise.execute(
        model, empty, "prior_images", seed, STEPS, 999, 0.0, 0.0, vae=tiny_vae, prior_images=priors
    ).result
    assert torch.equal(preview, priors)
    z = model.get_model_object("latent_format").process_in(tiny_vae.encode(priors))
    q = math.sqrt(0.0046601)  # sqrt(a_999) of SD1.5, as the official README states it
    expected = q * z + math.sqrt(1 - q**2) * view_noise((views, 4, 8, 8), seed)

    guider = comfy.samplers.CFGGuider(model)
    guider.set_conds(*text(golden))
    guider.set_cfg(3.0)
    sigmas = official_sigmas(model, STEPS)[:2]
    SamplerCustomAdvanced.execute(noise, guider, ddim_sampler(0.0), sigmas, empty)
    SamplerCustomAdvanced.execute(Noise_EmptyNoise(), guider, ddim_sampler(0.0), sigmas, noised)
    SamplerCustomAdvanced.execute(noise, guider, ddim_sampler(0.0), sigmas, noised)  # both: still the same start
    assert len(recorder.inputs) == 3  # one (cond + uncond batched) UNet call per run
    for first_input in recorder.inputs:
        assert (first_input[:views] - expected).abs().max() < 1e-4  # a_999 above is given to 5 digits


def test_node_options_shared_noise_blur_and_start_level(tiny_dp3d, tiny_vae):
    from diffportrait3d.nodes.noise_init import DiffPortrait3DNoise

    model = tiny_dp3d["unet"]
    empty = {"samples": torch.zeros(4, 4, 8, 8)}
    reference = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(1))

    def model_input(source, start=999, shared=0.0, blur=0.0):
        sigma_first = float(model.get_model_object("model_sampling").sigma(torch.tensor(801.0)))
        noised = DiffPortrait3DNoise.execute(
            model, empty, source, 1, STEPS, start, shared, blur, vae=tiny_vae, reference_image=reference
        ).result[1]["samples"]
        return model.get_model_object("latent_format").process_in(noised) / math.sqrt(1 + sigma_first**2)

    def mean_correlation(x):
        return torch.corrcoef(x.reshape(x.shape[0], -1))[0, 1:].mean().item()

    assert abs(mean_correlation(model_input("none"))) < 0.1
    assert mean_correlation(model_input("none", shared=2.0)) == pytest.approx(0.8, abs=0.1)
    # Same seed: the prior part of the first model input is sqrt(a_s) z, so it grows as the start level drops.
    prior_999 = model_input("reference") - model_input("none")
    prior_700 = model_input("reference", start=700) - model_input("none", start=700)
    torch.testing.assert_close(prior_700, prior_999 * (0.2872645 / 0.0682649), atol=1e-4, rtol=1e-4)
    blurred = model_input("reference", blur=2.0) - model_input("none")
    assert blurred.std() < 0.9 * prior_999.std() and blurred.mean().item() == pytest.approx(prior_999.mean().item(), abs=2e-3)


def test_node_input_errors(tiny_dp3d, tiny_vae):
    from diffportrait3d.kernels.poses.camera import CameraSet
    from diffportrait3d.nodes.noise_init import DiffPortrait3DNoise

    model = tiny_dp3d["unet"]
    empty = {"samples": torch.zeros(4, 4, 8, 8)}
    with pytest.raises(ValueError, match="vae: connect the VAE"):
        DiffPortrait3DNoise.execute(model, empty, "reference", 0, STEPS, 999, 0.0, 0.0, reference_image=torch.rand(1, 64, 64, 3))
    with pytest.raises(ValueError, match="prior_images: 3 images for 4 views"):
        DiffPortrait3DNoise.execute(model, empty, "prior_images", 0, STEPS, 999, 0.0, 0.0, vae=tiny_vae, prior_images=torch.rand(3, 64, 64, 3))
    with pytest.raises(ValueError, match="prior_images: images are 128x128 .* views are 64x64"):
        DiffPortrait3DNoise.execute(model, empty, "prior_images", 0, STEPS, 999, 0.0, 0.0, vae=tiny_vae, prior_images=torch.rand(4, 128, 128, 3))
    with pytest.raises(ValueError, match="cameras: connect"):
        DiffPortrait3DNoise.execute(model, empty, "reference_warped", 0, STEPS, 999, 0.0, 0.0, vae=tiny_vae,
                                    reference_image=torch.rand(1, 64, 64, 3), cameras=object())
    noise = DiffPortrait3DNoise.execute(
        model, empty, "reference_warped", 0, STEPS, 999, 0.0, 0.0, vae=tiny_vae,
        reference_image=torch.rand(1, 64, 64, 3), cameras=CameraSet.from_yaw_pitch(torch.linspace(-0.5, 0.5, 4), 0.0),
    ).result[0]
    with pytest.raises(ValueError, match="noise: the 3D-aware noise was made for latents"):
        noise.generate_noise({"samples": torch.zeros(8, 4, 8, 8)})


def test_node_is_registered_with_its_inputs_and_outputs(comfy_host):
    node = comfy_host.nodes.NODE_CLASS_MAPPINGS["DP3DNoise"]
    inputs = node.INPUT_TYPES()
    assert {"model", "latent", "source", "seed", "steps", "start_timestep", "shared_noise", "prior_blur"} <= set(inputs["required"])
    assert {"vae", "reference_image", "cameras", "depth", "condition_images", "prior_images", "sigmas"} <= set(inputs["optional"])
    assert tuple(node.RETURN_TYPES) == ("NOISE", "LATENT", "IMAGE")


def test_the_float16_schedule_starts_with_the_official_diffportrait360_q_sample(tiny_dp3d):
    """schedule 'float16 (DiffPortrait360 official)': q_sample at 999 uses the float16 buffers' sqrt(1 - a_999) =
    0.9975586 (fp16 0.99755859375) instead of float64's 0.9976672; with no prior that is the whole first input."""
    from diffportrait3d.kernels.model.ddpm_schedule import FLOAT16
    from diffportrait3d.kernels.noise.view_noise import view_noise
    from diffportrait3d.nodes.noise_init import DiffPortrait3DNoise

    empty = {"samples": torch.zeros(2, 4, 8, 8)}
    noise = DiffPortrait3DNoise.execute(tiny_dp3d["unet"], empty, "none", 7, STEPS, 999, 0.0, 0.0, schedule=FLOAT16).result[0]
    assert torch.equal(noise.model_input, 0.99755859375 * view_noise((2, 4, 8, 8), 7))
    with pytest.raises(ValueError, match="schedule: 'float8' is not one of"):
        DiffPortrait3DNoise.execute(tiny_dp3d["unet"], empty, "none", 7, STEPS, 999, 0.0, 0.0, schedule="float8")
