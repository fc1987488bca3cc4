"""Parity with the official DiffPortrait3D code, inside the real ComfyUI.

Every ``golden_apply_*`` / ``golden_ddim_*`` file of the golden directory (default: tests/fixtures;
override with $DP3D_GOLDEN_DIR, which then also holds tiny_official.safetensors and tiny_config.json) is
reproduced through the project's converter, loaders, patches and sampler:
eps (cond and uncond) max |diff| <= 1e-4, final DDIM latents max |diff| <= 1e-3.
"""

import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

pytestmark = pytest.mark.host

GOLDEN_DIR = Path(os.environ.get("DP3D_GOLDEN_DIR", Path(__file__).parent / "fixtures"))
APPLY_FILES = sorted(GOLDEN_DIR.glob("golden_apply_*.safetensors"))
DDIM_FILES = sorted(GOLDEN_DIR.glob("golden_ddim_*.safetensors"))
EPS_TOLERANCE = 1e-4
LATENT_TOLERANCE = 1e-3


@pytest.fixture(scope="module")
def converted(tiny_dp3d_factory):
    return tiny_dp3d_factory(GOLDEN_DIR)


def official_model(converted, reference_latent: torch.Tensor):
    """UNet + appearance reference (given as a model-space latent) + cross-view modules, official settings."""
    from diffportrait3d.nodes.appearance_reference import ReferenceLatent, apply_appearance_reference
    from diffportrait3d.nodes.cross_view import CrossViewSettings, apply_cross_view

    model = apply_appearance_reference(
        converted["unet"], converted["appearance"], ReferenceLatent(model_latent=reference_latent)
    )
    return apply_cross_view(model, converted["cross_view"], CrossViewSettings())


def pose_conditioning(converted, context: torch.Tensor, hint: torch.Tensor):
    """(positive with the pose ControlNet on the IMAGE path, negative without), same text for both as the
    official controlnet_important guidance feeds the conditional dict to the unconditional call."""
    from nodes import ControlNetApplyAdvanced

    from diffportrait3d.nodes.sampler import official_guidance

    image = ((hint + 1) / 2).movedim(1, -1)
    text = [[context, {}]]
    positive, negative = ControlNetApplyAdvanced().apply_controlnet(text, text, converted["pose"], image, 1.0, 0.0, 1.0)
    return official_guidance(positive, negative)


class SingleModelCall:
    """A KSAMPLER function that makes exactly one guided model call, at per-view sigmas."""

    def __init__(self, sigma_per_view: torch.Tensor):
        self.sigma_per_view = sigma_per_view

    def __call__(self, model, x, sigmas, extra_args=None, callback=None, disable=None):
        model(x, self.sigma_per_view.to(x), **(extra_args or {}))
        return x


def run_guided(model, positive, negative, latent_in_model_space, sigmas, cfg, capture=None, sampler=None):
    """ComfyUI's CFGGuider with the project's DDIM sampler (or ``sampler``); returns the final latent in
    model space."""
    import comfy.samplers

    from diffportrait3d.nodes.sampler import ddim_sampler

    model = model.clone()
    if capture is not None:
        model.set_model_sampler_post_cfg_function(capture)
    guider = comfy.samplers.CFGGuider(model)
    guider.set_conds(positive, negative)
    guider.set_cfg(cfg)
    latent_format = model.get_model_object("latent_format")
    latent_image = latent_format.process_out(latent_in_model_space)  # the guider applies process_in itself
    noise = torch.zeros_like(latent_image)
    samples = guider.sample(noise, latent_image, sampler or ddim_sampler(0.0), sigmas, seed=0)
    return latent_format.process_in(samples)


class CaptureDenoised:
    """post-CFG hook recording ComfyUI's cond/uncond predictions of every step."""

    def __init__(self):
        self.steps = []

    def __call__(self, args):
        self.steps.append((args["input"], args["sigma"], args["cond_denoised"], args["uncond_denoised"]))
        return args["denoised"]


def eps_of(x: torch.Tensor, sigma: torch.Tensor, denoised: torch.Tensor) -> torch.Tensor:
    """The eps prediction behind ComfyUI's ``denoised = x - sigma * eps`` (per-row sigma)."""
    return (x - denoised) / sigma.view(-1, 1, 1, 1)


def one_call_eps(converted, golden: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(eps_cond, eps_uc) of one guided model call on a ``golden_apply_*`` file's inputs."""
    return guided_call_eps(official_model(converted, golden["reference_image_noisy"]), converted, golden)


def guided_call_eps(model, converted, golden: dict, cfg: float = 3.0) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(eps_cond, eps_uc) of one call of the patched ``model`` with the pose ControlNet of ``converted`` on the
    golden's x_noisy, t, text and pose hint, official guidance; ``cfg`` 1 runs the cond rows only (eps_uc None)."""
    import comfy.samplers

    positive, negative = pose_conditioning(converted, golden["c_crossattn_0"], golden["c_concat_0"])
    sigma = model.get_model_object("model_sampling").sigma(golden["t"].float())  # per view
    x_in = golden["x_noisy"] * torch.sqrt(1 + sigma**2).view(-1, 1, 1, 1)
    capture = CaptureDenoised()
    one_call = comfy.samplers.KSAMPLER(SingleModelCall(sigma))
    run_guided(model, positive, negative, x_in, torch.stack([sigma.max(), torch.tensor(0.0)]), cfg, capture, one_call)
    x, step_sigma, cond_denoised, uncond_denoised = capture.steps[0]
    eps_uc = None if cfg == 1.0 else eps_of(x, step_sigma, uncond_denoised)
    return eps_of(x, step_sigma, cond_denoised), eps_uc


def guided_ddim(converted, golden: dict, capture=None) -> torch.Tensor:
    """Final latents (model space) of the guided DDIM run of a ``golden_ddim_*`` file's inputs."""
    from diffportrait3d.nodes.sampler import official_sigmas

    model = official_model(converted, golden["reference_latent"])
    positive, negative = pose_conditioning(converted, golden["c_crossattn_0"], golden["c_concat_0"])
    sigmas = official_sigmas(model, golden["step_x"].shape[0])
    x_in = golden["x_T"] * torch.sqrt(1 + sigmas[0] ** 2)  # the official first model input is x_T itself
    return run_guided(model, positive, negative, x_in, sigmas, 3.0, capture)


@pytest.mark.parametrize("golden_file", APPLY_FILES, ids=lambda p: p.stem)
def test_one_model_call_matches_official_eps(converted, golden_file):
    golden = load_file(golden_file)
    views = golden["x_noisy"].shape[0]
    eps_cond, eps_uc = one_call_eps(converted, golden)
    cond_error = (eps_cond - golden["eps_cond"]).abs().max().item()
    uncond_error = (eps_uc - golden["eps_uc"]).abs().max().item()
    print(f"{golden_file.name}: V={views} eps_cond max|diff| {cond_error:.2e}, eps_uc max|diff| {uncond_error:.2e}")
    assert cond_error <= EPS_TOLERANCE
    assert uncond_error <= EPS_TOLERANCE


@pytest.mark.parametrize("golden_file", DDIM_FILES, ids=lambda p: p.stem)
def test_guided_ddim_matches_official_samples(converted, golden_file):
    golden = load_file(golden_file)
    steps = golden["step_x"].shape[0]
    capture = CaptureDenoised()
    samples = guided_ddim(converted, golden, capture)
    for i, (x, sigma, cond_denoised, _) in enumerate(capture.steps):
        error = (eps_of(x, sigma, cond_denoised) - golden["step_eps_cond"][i]).abs().max().item()
        assert error <= 10 * EPS_TOLERANCE, f"step {i}: eps_cond max|diff| {error:.2e}"
    error = (samples - golden["samples"]).abs().max().item()
    print(f"{golden_file.name}: {steps} steps, final latents max|diff| {error:.2e}")
    assert error <= LATENT_TOLERANCE
