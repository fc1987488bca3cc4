"""The official 3D-aware start, expressed in ComfyUI's sigma space.

Notation: ``a_t`` = alphas_cumprod of timestep t, ``sigma_t = sqrt((1 - a_t) / a_t)``, hence
``a_t = 1 / (1 + sigma_t^2)``. ``s`` is the start noise level (official 999), ``t0`` the first
sampling step (official 981 for 50 steps), ``z`` the prior latent (model space, x0.18215).

1. Official (``q_sample``): ``x_T = sqrt(a_s) z + sqrt(1 - a_s) eps = (z + sigma_s eps) / sqrt(1 + sigma_s^2)``.
2. The official DDIM loop feeds ``x_T`` unchanged to its first step, at ``t0``: the model sees
   ``(x_T, t0)`` even though ``x_T`` carries the noise of ``s``.
3. ComfyUI's eps models see ``x / sqrt(1 + sigma^2)`` for the sampler state ``x`` (``x = x0 + sigma eps``),
   so the first model input equals ``x_T`` exactly when

       x = sqrt(1 + sigma_t0^2) x_T = sqrt((1 + sigma_t0^2) / (1 + sigma_s^2)) (z + sigma_s eps).

   With ``s == t0`` this is ``z + sigma_t0 eps``: ComfyUI's own img2img start at full denoise.
   With ``s = 999 > t0 = 981`` the state is the s-level noisy latent shrunk by ``sqrt(a_s / a_t0) < 1``.
4. ComfyUI builds the state as ``x = c n + L`` (``noise_scaling``): ``n`` the NOISE output,
   ``L`` the sampled LATENT after ``process_in`` (0 for an all-zero latent, which is not processed),
   ``c = sigma_t0``, or ``sqrt(1 + sigma_t0^2)`` when ``sigma_t0`` reaches ``sigma_max`` ("max denoise").
   Hence ``n = (x - L) / c``; with ``n = 0`` (KSampler with add_noise disabled) the LATENT must be
   ``process_out(x)``.
"""

from __future__ import annotations

import math

import torch

from ..model.ddim_sampling import alpha_cumprod_of_sigma
from ..model.ddpm_schedule import float16_q_sample_coefficients

OFFICIAL_START_TIMESTEP = 999


def q_sample(prior: torch.Tensor, eps: torch.Tensor, sigma_start: float) -> torch.Tensor:
    """Official ``q_sample``: ``sqrt(a_s) prior + sqrt(1 - a_s) eps`` with ``a_s = 1 / (1 + sigma_start^2)``."""
    a_start = float(alpha_cumprod_of_sigma(sigma_start))  # computed in float64, as Python floats are
    return math.sqrt(a_start) * prior + math.sqrt(1.0 - a_start) * eps


def q_sample_float16(prior: torch.Tensor, eps: torch.Tensor, timestep: int) -> torch.Tensor:
    """Official DiffPortrait360 ``q_sample`` at ``timestep``: the float16 buffers' sqrt(a) and sqrt(1 - a)."""
    sqrt_a, sqrt_one_minus_a = float16_q_sample_coefficients(timestep)
    return sqrt_a * prior.float() + sqrt_one_minus_a * eps.float()


def state_for_model_input(model_input: torch.Tensor, sigma_first: float) -> torch.Tensor:
    """Sampler state whose model input at ``sigma_first`` is ``model_input``: ``model_input * sqrt(1 + sigma^2)``."""
    return model_input * math.sqrt(1.0 + float(sigma_first) ** 2)


def official_start_state(prior: torch.Tensor, eps: torch.Tensor, sigma_start: float, sigma_first: float) -> torch.Tensor:
    """The sampler state [B, C, H, W] whose first model input is the official ``q_sample(prior, eps, s)``."""
    return state_for_model_input(q_sample(prior, eps, sigma_start), sigma_first)


def is_max_denoise(sigma_first: float, sigma_max: float) -> bool:
    """Whether ComfyUI scales the start noise by ``sqrt(1 + sigma^2)`` instead of ``sigma`` (first sigma at sigma_max)."""
    return math.isclose(float(sigma_max), float(sigma_first), rel_tol=1e-5) or float(sigma_first) > float(sigma_max)


def noise_scale(sigma_first: float, sigma_max: float) -> float:
    """The factor ``c`` ComfyUI multiplies a NOISE tensor by before adding the latent."""
    sigma_first = float(sigma_first)
    return math.sqrt(1.0 + sigma_first**2) if is_max_denoise(sigma_first, sigma_max) else sigma_first


def noise_for_state(state: torch.Tensor, latent_in_model_space: torch.Tensor | None, sigma_first: float, sigma_max: float) -> torch.Tensor:
    """NOISE tensor ``n`` with ``c n + L = state`` (``L`` = processed latent, None or zeros for an empty latent)."""
    scale = noise_scale(sigma_first, sigma_max)
    if scale <= 0:
        raise ValueError(f"the first sampling sigma must be positive, got {sigma_first}")
    offset = state if latent_in_model_space is None else state - latent_in_model_space
    return offset / scale
