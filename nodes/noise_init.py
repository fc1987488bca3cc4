"""3D-aware noise: the official DiffPortrait3D start (q_sample of a per-view prior at t=999) as a NOISE object,
the equivalent noised LATENT for the core KSampler, and a preview of the priors."""

from __future__ import annotations

import comfy.model_sampling
import comfy.sample
import torch
from comfy_api.latest import io

from ..kernels.model.ddpm_schedule import FLOAT16, FLOAT32, check_schedule
from ..kernels.noise import priors as noise_priors
from ..kernels.noise.gaussian_blur import gaussian_blur
from ..kernels.noise.start_latent import (
    OFFICIAL_START_TIMESTEP,
    noise_for_state,
    q_sample,
    q_sample_float16,
    state_for_model_input,
)
from ..kernels.noise.view_noise import view_noise
from .poses import Cameras, check_cameras
from .sampler import official_sigmas, schedule_input


class ThreeDAwareNoise:
    """ComfyUI NOISE protocol (``seed``, ``generate_noise(latent) -> tensor``): the noise that makes the
    sampler's first model input ``model_input`` (the official ``q_sample`` of the priors, model space
    [V, C, H, W]), whatever latent it is given with (an empty one, usually).

    The sampler state that gives this input depends on the sampler's first sigma. The noise is made for
    ``sigma_first``; a sampler that knows its own schedule calls ``for_first_sigma`` (the pack's Cross-View
    Sampler does), so a noise made for other steps cannot start it at the wrong level."""

    def __init__(self, model_input: torch.Tensor, seed: int, latent_format, sigma_first: float, sigma_max: float):
        self.model_input = model_input
        self.seed = seed
        self.latent_format = latent_format
        self.sigma_first = sigma_first
        self.sigma_max = sigma_max

    @property
    def state(self) -> torch.Tensor:
        """The sampler state at ``sigma_first`` (model space)."""
        return state_for_model_input(self.model_input, self.sigma_first)

    def for_first_sigma(self, sigma_first: float) -> ThreeDAwareNoise:
        """The same start for a sampler whose schedule begins at ``sigma_first``."""
        return ThreeDAwareNoise(self.model_input, self.seed, self.latent_format, float(sigma_first), self.sigma_max)

    def generate_noise(self, input_latent: dict) -> torch.Tensor:
        samples = input_latent["samples"]
        if tuple(samples.shape) != tuple(self.model_input.shape):
            raise ValueError(
                f"noise: the 3D-aware noise was made for latents {list(self.model_input.shape)}, the sampler got "
                f"{list(samples.shape)}; connect the same latent to the noise node and the sampler"
            )
        # ComfyUI processes (x0.18215) a latent before adding the noise, unless it is all zeros.
        processed = self.latent_format.process_in(samples.float()) if torch.count_nonzero(samples) > 0 else None
        return noise_for_state(self.state, processed, self.sigma_first, self.sigma_max)


def first_sigma(model, steps: int, sigmas: torch.Tensor | None) -> float:
    if sigmas is None:
        return float(official_sigmas(model, steps)[0])
    if sigmas.numel() < 2 or float(sigmas[0]) <= 0:
        raise ValueError("sigmas: give the sampler's schedule (at least two sigmas, the first one > 0)")
    return float(sigmas[0])


def encode_priors(vae, images: torch.Tensor, latent_format, latent_shape) -> torch.Tensor:
    """Priors [V, H, W, 3] -> model-space latents (the mean of the VAE posterior, then process_in)."""
    if vae is None:
        raise ValueError("vae: connect the VAE of your SD1.5 model; it encodes the priors (only source 'none' needs none)")
    with torch.no_grad():
        encoded = latent_format.process_in(vae.encode(images).float())
    if tuple(encoded.shape) != tuple(latent_shape):
        raise ValueError(
            f"vae: it encodes the priors to {list(encoded.shape)}, the latent is {list(latent_shape)}; "
            "use the VAE that belongs to the model"
        )
    return encoded


class DiffPortrait3DNoise(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DP3DNoise",
            display_name="DiffPortrait3D 3D-Aware Noise",
            category="DiffPortrait3D/sampling",
            description="The official 3D-aware start: every view begins from q_sample(prior latent of that view, t=999), "
            "fed to the first sampling step. NOISE for SamplerCustomAdvanced / the Cross-View Sampler (with the "
            "empty latent), or the noised LATENT for KSampler (Advanced) with add_noise disabled. Set steps (or "
            "sigmas) to the sampler's.",
            inputs=[
                io.Model.Input("model", tooltip="the model you sample with (its noise schedule and latent format)"),
                io.Latent.Input("latent", tooltip="the empty latent you sample into: one latent per view"),
                io.Combo.Input(
                    "source", options=list(noise_priors.SOURCES), default="reference_warped",
                    tooltip="prior per view: the reference warped to each camera via the template head (or depth); the "
                    "reference as is (official fallback); the pose condition images; your own priors (e.g. 3D GAN "
                    "renders = the official method); none = plain noise",
                ),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True),
                io.Int.Input("steps", default=50, min=1, max=1000, tooltip="the sampler's steps (official DDIM timesteps 981...1 for 50); ignored when sigmas is connected. The "
                    "Cross-View Sampler adapts the noise to its own steps; core samplers need the same steps here"),
                io.Int.Input(
                    "start_timestep", default=OFFICIAL_START_TIMESTEP, min=1, max=999,
                    tooltip="noise level of the prior (official 999: only colours and coarse layout survive). Lower "
                    "(e.g. 700-900) keeps more of the prior and the result follows it more closely",
                ),
                io.Float.Input(
                    "shared_noise", default=0.0, min=0.0, max=10.0, step=0.05,
                    tooltip="alpha: 0 = independent noise per view (official); > 0 mixes in one shared draw, "
                    "cross-view correlation alpha^2/(1+alpha^2)",
                ),
                io.Float.Input("prior_blur", default=0.0, min=0.0, max=16.0, step=0.1, tooltip="Gaussian low-pass of the prior latents, sigma in latent pixels (8 image pixels); 0 = off"),
                io.Vae.Input("vae", optional=True, tooltip="encodes the priors; needed by every source except 'none'"),
                io.Image.Input("reference_image", optional=True, tooltip="the portrait (frontal), for the reference sources"),
                Cameras.Input("cameras", optional=True, tooltip="target cameras, for 'reference_warped' (one per view)"),
                io.Image.Input("depth", optional=True, tooltip="'reference_warped': depth of the reference (brighter = nearer) instead of the template head"),
                io.Image.Input("condition_images", optional=True, tooltip="'condition_images': the pose condition images, one per view"),
                io.Image.Input("prior_images", optional=True, tooltip="'prior_images': your own priors at the views' size, one per view (or 1)"),
                io.Sigmas.Input("sigmas", optional=True, tooltip="the sampler's sigmas, when not the official DDIM schedule of 'steps'"),
                schedule_input("q_sample coefficients"),
            ],
            outputs=[
                io.Noise.Output(display_name="noise"),
                io.Latent.Output(display_name="noised_latent"),
                io.Image.Output(display_name="priors"),
            ],
        )

    @classmethod
    def execute(
        cls, model, latent, source, seed, steps, start_timestep, shared_noise, prior_blur, vae=None,
        reference_image=None, cameras=None, depth=None, condition_images=None, prior_images=None, sigmas=None,
        schedule=FLOAT32,
    ) -> io.NodeOutput:
        sampling = model.get_model_object("model_sampling")
        if not isinstance(sampling, comfy.model_sampling.ModelSamplingDiscrete) or not isinstance(sampling, comfy.model_sampling.EPS):
            raise ValueError("model: the 3D-aware start needs a discrete-schedule eps/v model such as SD1.5")
        latent_format = model.get_model_object("latent_format")
        samples = comfy.sample.fix_empty_latent_channels(model, latent["samples"])
        views, _, latent_height, latent_width = samples.shape
        compression = vae.spacial_compression_encode() if vae is not None else 8
        cameras = check_cameras(cameras) if cameras is not None else None
        images = noise_priors.prior_images(
            source, views, latent_height * compression, latent_width * compression, reference_image=reference_image,
            cameras=cameras, depth=depth, condition_images=condition_images, own_priors=prior_images,
        )
        if images is None:
            prior = torch.zeros(samples.shape)
            preview = torch.full((views, latent_height * compression, latent_width * compression, 3), 0.5)
        else:
            prior = encode_priors(vae, images, latent_format, samples.shape)
            preview = images
        prior = gaussian_blur(prior, prior_blur)
        sigma_start = float(sampling.sigma(torch.tensor(float(start_timestep))))
        sigma_first = first_sigma(model, steps, sigmas)
        eps = view_noise(tuple(samples.shape), seed, shared_noise)
        if check_schedule(schedule) == FLOAT16:
            first_input = q_sample_float16(prior, eps, start_timestep)
        else:
            first_input = q_sample(prior, eps, sigma_start)
        noise = ThreeDAwareNoise(first_input, seed, latent_format, sigma_first, float(sampling.sigma_max))
        noised = {k: v for k, v in latent.items() if k != "noise_mask"}
        noised["samples"] = latent_format.process_out(noise.state)
        return io.NodeOutput(noise, noised, preview)


NODES = [DiffPortrait3DNoise]
