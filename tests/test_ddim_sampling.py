"""DDIM with eta on sigma-space latents against the official recorded steps and diffusers' DDIMScheduler."""

from pathlib import Path

import pytest
import torch
from diffusers import DDIMScheduler
from safetensors.torch import load_file

from diffportrait3d.kernels.model.ddim_sampling import (
    alpha_cumprod_of_sigma,
    ddim_step,
    official_ddim_timesteps,
    sample_ddim,
)

FIXTURES = Path(__file__).parent / "fixtures"


def sd15_scheduler() -> DDIMScheduler:
    return DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
        set_alpha_to_one=False, steps_offset=1, timestep_spacing="leading",
    )


def sigma_of(alpha_cumprod: torch.Tensor) -> torch.Tensor:
    return ((1 - alpha_cumprod) / alpha_cumprod).sqrt()


def test_official_timesteps_match_the_official_schedule_and_diffusers():
    assert official_ddim_timesteps(5) == [801, 601, 401, 201, 1]
    fifty = official_ddim_timesteps(50)
    assert fifty[0] == 981 and fifty[-1] == 1 and len(fifty) == 50
    scheduler = sd15_scheduler()
    scheduler.set_timesteps(50)
    assert scheduler.timesteps.tolist() == fifty
    golden = load_file(FIXTURES / "golden_ddim_v8.safetensors")
    assert sorted(golden["ddim_timesteps"].tolist()) == sorted(official_ddim_timesteps(5))


def test_each_step_reproduces_the_official_recorded_ddim_step():
    golden = load_file(FIXTURES / "golden_ddim_v8.safetensors")
    alphas = golden["ddim_alphas"].double()  # a_t for t = 1, 201, 401, 601, 801
    final_sigma = sigma_of(golden["ddim_alphas_prev"].double()[0]).item()  # a_prev of t=1 is alphas_cumprod[0]
    for i in range(5):
        index = 4 - i  # step i visits t = 801 … 1
        a_t = alphas[index]
        sigma = sigma_of(a_t).item()
        sigma_next = sigma_of(alphas[index - 1]).item() if index > 0 else 0.0
        x = golden["step_x"][i].double() / a_t.sqrt()
        denoised = x - sigma * golden["step_eps_cfg"][i].double()
        result = ddim_step(x, denoised, sigma, sigma_next, 0.0, None, final_sigma)
        expected = golden["step_x_prev"][i].double()
        if index > 0:
            expected = expected / alphas[index - 1].sqrt()  # ComfyUI carries x / sqrt(a)
        assert (result - expected).abs().max().item() < 2e-5, f"step {i}"


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_full_sampling_loop_matches_diffusers_ddim_with_eta(eta):
    torch.manual_seed(0)
    scheduler = sd15_scheduler()
    scheduler.set_timesteps(10)
    alphas_cumprod = scheduler.alphas_cumprod.double()
    sigmas_all = sigma_of(alphas_cumprod)
    timesteps = official_ddim_timesteps(10)
    sigmas = torch.cat([sigmas_all[timesteps], torch.zeros(1, dtype=torch.float64)])
    target = torch.randn(2, 4, 8, 8, dtype=torch.float64)
    noises = [torch.randn(2, 4, 8, 8, dtype=torch.float64) for _ in timesteps]

    def eps_model(x_t, t):  # any smooth function of (x_t, t) will do as a stand-in network
        return torch.tanh(x_t * 0.5 + target) * (t / 1000.0)

    x_t = torch.randn(2, 4, 8, 8, dtype=torch.float64)
    reference = x_t.clone()
    for step, t in enumerate(timesteps):
        eps = eps_model(reference, t)
        reference = scheduler.step(eps, t, reference, eta=eta, variance_noise=noises[step]).prev_sample

    def denoiser(x, sigma):  # the same network seen from ComfyUI's sigma space
        a = 1 / (1 + sigma[0] ** 2)
        t = timesteps[[abs(s - sigma[0].item()) < 1e-9 for s in sigmas[:-1].tolist()].index(True)]
        eps = eps_model(x * a.sqrt(), t)
        return x - sigma[0] * eps

    drawn = iter(noises)
    result = sample_ddim(
        denoiser, x_t / alphas_cumprod[timesteps[0]].sqrt(), sigmas, eta=eta,
        final_sigma=sigmas_all[0].item(), noise_sampler=lambda s, sn: next(drawn),
    )
    # diffusers keeps its schedule in float32: agreement to float32 precision of values up to ~20
    assert (result - reference).abs().max().item() < 1e-5


def test_alpha_cumprod_of_a_float_sigma_is_the_python_float_value():
    """The 3D-aware start (``start_latent.q_sample``) takes ``a`` of Python float sigmas: float64, bit for bit."""
    for sigma in (0.029167, 0.5, 1.0, 3.14159, 14.614642, 157.40723):
        assert alpha_cumprod_of_sigma(sigma).dtype == torch.float64
        assert float(alpha_cumprod_of_sigma(sigma)) == 1.0 / (1.0 + sigma**2)
    assert float(alpha_cumprod_of_sigma(torch.tensor(14.614642))) == 1.0 / (1.0 + float(torch.tensor(14.614642)) ** 2)


def test_the_float16_schedule_step_replays_the_official_recorded_360_steps():
    """Given the recorded eps and noise, the coefficient step turns each recorded x into the recorded x_prev (the
    official float16 scalars recomputed by the kernel), through ComfyUI's state x = x_t sqrt(1 + sigma^2)."""
    import math

    from diffportrait3d.kernels.model.ddim_sampling import ddim_step_with_coefficients
    from diffportrait3d.kernels.model.ddpm_schedule import float16_step_coefficients, linear_alphas_cumprod

    golden = load_file(FIXTURES / "tiny360" / "golden_backhead_ddim.safetensors")
    timesteps = golden["step_t"][:, 0].tolist()
    alphas = linear_alphas_cumprod()
    sigma_of = lambda t: math.sqrt((1 - float(alphas[t])) / float(alphas[t])) if t is not None else 0.0  # noqa: E731
    for i, t in enumerate(timesteps):
        t_prev = timesteps[i + 1] if i + 1 < len(timesteps) else None
        coefficients = float16_step_coefficients(t, t_prev, eta=0.5)
        sigma, sigma_next = sigma_of(t), sigma_of(t_prev)
        x = golden["step_x"][i] * math.sqrt(1 + sigma**2)
        denoised = x - sigma * golden["step_eps_cfg"][i]
        out = ddim_step_with_coefficients(x, denoised, sigma, sigma_next, coefficients, golden["step_noise"][i])
        x_prev = out if t_prev is None else out / math.sqrt(1 + sigma_next**2)
        # float32 rounding of the state round trip, amplified by 1/sqrt(a_t) <= 5.3 on values of order 1
        assert (x_prev - golden["step_x_prev"][i]).abs().max() < 1e-5, f"step {i} (t={t})"
