"""DDIM with eta, as the official DiffPortrait3D sampler runs it, on ComfyUI's sigma-space latents.

ComfyUI samplers carry ``x = x0 + sigma * eps`` (variance exploding); DDIM is written for
``x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps`` with ``a_t = 1 / (1 + sigma^2)``, so ``x = x_t / sqrt(a_t)``.
One DDIM step from ``a_t`` to ``a_prev`` (official ``DDIMSampler``, eta as in Song et al.):

    pred_x0 = (x_t - sqrt(1 - a_t) eps) / sqrt(a_t)
    s       = eta * sqrt((1 - a_prev) / (1 - a_t)) * sqrt(1 - a_t / a_prev)
    x_prev  = sqrt(a_prev) pred_x0 + sqrt(1 - a_prev - s^2) eps + s z

The official last step goes to ``a_prev = alphas_cumprod[0]`` (t = 0, not a clean sample) and its
result is decoded as is; ``final_sigma`` reproduces that (sigma of t = 0), ``0`` ends at pred_x0.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from .ddpm_schedule import StepCoefficients


def alpha_cumprod_of_sigma(sigma: torch.Tensor | float) -> torch.Tensor:
    """a = 1 / (1 + sigma^2) (SD's discrete schedule in ComfyUI's sigma parametrisation)."""
    sigma = torch.as_tensor(sigma, dtype=torch.float64)
    return 1.0 / (1.0 + sigma**2)


def official_ddim_timesteps(steps: int, train_timesteps: int = 1000) -> list[int]:
    """The official 'uniform' DDIM timesteps, visited high to low: 50 steps -> 981, 961, …, 21, 1."""
    if not 1 <= steps <= train_timesteps:
        raise ValueError(f"steps must be in 1..{train_timesteps}, got {steps}")
    stride = train_timesteps // steps
    return [t + 1 for t in range(0, train_timesteps, stride)][::-1]


def ddim_step(
    x: torch.Tensor,
    denoised: torch.Tensor,
    sigma: float,
    sigma_next: float,
    eta: float,
    noise: torch.Tensor | None,
    final_sigma: float,
) -> torch.Tensor:
    """One DDIM step on sigma-space latents: ``x`` at ``sigma`` with the model's ``denoised`` (pred_x0)
    -> latent at ``sigma_next``. ``sigma_next == 0`` is the official last step to ``final_sigma``,
    returned in DDIM scale (``sqrt(a_prev) pred_x0 + …``) as the official sampler returns it."""
    eps = (x - denoised) / sigma
    a_t = alpha_cumprod_of_sigma(sigma)
    last = sigma_next == 0
    a_prev = alpha_cumprod_of_sigma(final_sigma if last else sigma_next)
    s = eta * torch.sqrt((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev))
    direction = torch.sqrt(torch.clamp(1 - a_prev - s**2, min=0.0))
    x_prev = torch.sqrt(a_prev).item() * denoised + direction.item() * eps
    if s > 0 and noise is not None:
        x_prev = x_prev + s.item() * noise
    return x_prev if last else x_prev / torch.sqrt(a_prev).item()


def ddim_step_with_coefficients(
    x: torch.Tensor,
    denoised: torch.Tensor,
    sigma: float,
    sigma_next: float,
    coefficients: StepCoefficients,
    noise: torch.Tensor | None,
) -> torch.Tensor:
    """One DDIM step with given scalars (e.g. the official float16 schedule's) instead of ones derived from the
    sigmas. ``sigma``/``sigma_next`` only convert between ComfyUI's state and the DDIM latent
    (``x_t = x / sqrt(1 + sigma^2)``), so the model still sees the official ``x_t``; ``sigma_next == 0`` returns
    the DDIM latent of the last step."""
    eps = (x - denoised) / sigma
    x_t = x / (1.0 + sigma**2) ** 0.5
    scalar = lambda value: torch.tensor(value, dtype=torch.float32, device=x.device)  # noqa: E731
    a_t, a_prev, s = scalar(coefficients.a_t), scalar(coefficients.a_prev), scalar(coefficients.sigma)
    pred_x0 = (x_t - scalar(coefficients.sqrt_one_minus_a_t) * eps) / a_t.sqrt()
    x_prev = a_prev.sqrt() * pred_x0 + (1.0 - a_prev - s**2).sqrt() * eps
    if coefficients.sigma > 0 and noise is not None:
        x_prev = x_prev + s * noise
    return x_prev if sigma_next == 0 else x_prev * (1.0 + sigma_next**2) ** 0.5


@torch.no_grad()
def sample_ddim(
    model: Callable,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict | None = None,
    callback: Callable | None = None,
    disable: bool | None = None,
    eta: float = 0.5,
    final_sigma: float = 0.0,
    noise_sampler: Callable | None = None,
    progress: Callable | None = None,
    coefficients: Sequence[StepCoefficients] | None = None,
) -> torch.Tensor:
    """k-diffusion style sampler loop: ``model(x, sigma * ones(B), **extra_args) -> denoised``.

    ``callback`` receives ``{"i", "denoised", "x", "sigma", "sigma_hat"}`` like every ComfyUI sampler;
    ``noise_sampler(sigma, sigma_next) -> noise`` is only called when ``eta > 0``. ``coefficients`` (one per
    step) replace the scalars derived from the sigmas and ``final_sigma`` (then ``eta`` is already in them)."""
    extra_args = extra_args or {}
    ones = x.new_ones([x.shape[0]])
    steps = range(len(sigmas) - 1)
    for i in progress(steps) if progress else steps:
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        denoised = model(x, sigmas[i] * ones, **extra_args)
        if callback is not None:
            callback({"i": i, "denoised": denoised, "x": x, "sigma": sigmas[i], "sigma_hat": sigmas[i]})
        noise = noise_sampler(sigmas[i], sigmas[i + 1]) if eta > 0 and noise_sampler is not None else None
        if coefficients is None:
            x = ddim_step(x, denoised, sigma, sigma_next, eta, noise, final_sigma)
        else:
            x = ddim_step_with_coefficients(x, denoised, sigma, sigma_next, coefficients[i], noise)
    return x
