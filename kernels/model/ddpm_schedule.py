"""The DDPM schedule as the official DiffPortrait360 code stores it: float16 buffers.

SD1.5's linear schedule (betas = linspace(sqrt(0.00085), sqrt(0.012), 1000)^2, a = cumprod(1 - betas), in
float64) is the same for both families. DiffPortrait3D keeps it in float32 (ComfyUI's own sigmas reproduce it);
DiffPortrait360's ``register_schedule`` stores a, sqrt(a), sqrt(1 - a) as float16, so its DDIM coefficients and
its ``q_sample`` differ from the float32 ones in the 4th digit. This file computes those numbers exactly as the
official code does; every value enters a step as a float32 scalar there, and is returned as a Python float here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

FLOAT32 = "float32 (DiffPortrait3D)"
FLOAT16 = "float16 (DiffPortrait360 official)"
SCHEDULES = (FLOAT32, FLOAT16)


def linear_alphas_cumprod(train_timesteps: int = 1000, start: float = 0.00085, end: float = 0.012) -> torch.Tensor:
    """SD1.5's alphas_cumprod in float64."""
    betas = torch.linspace(start**0.5, end**0.5, train_timesteps, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0)


def _f32(value: torch.Tensor) -> float:
    return float(value.to(torch.float32))


@dataclass(frozen=True)
class StepCoefficients:
    """One DDIM step's scalars: ``pred_x0 = (x - sqrt_one_minus_a_t e) / sqrt(a_t)``,
    ``x_prev = sqrt(a_prev) pred_x0 + sqrt(1 - a_prev - sigma^2) e + sigma z``."""

    a_t: float
    a_prev: float
    sigma: float
    sqrt_one_minus_a_t: float


def float16_step_coefficients(t: int, t_prev: int | None, eta: float) -> StepCoefficients:
    """The official float16-schedule scalars of the DDIM step from timestep ``t`` to ``t_prev`` (None: the last
    step, to alphas_cumprod[0]). a_t and a_prev are float16 values, sqrt(1 - a_t) is computed in float16, sigma in
    float64 from the float16 values except its division by 1 - a_t: in the official ``make_ddim_sampling_parameters``
    a numpy array divided by a float16 tensor is torch's ``array * reciprocal(1 - a_t)``, that reciprocal taken in
    float16. Each value then rounded to float32 as the step uses it."""
    alphas = linear_alphas_cumprod().to(torch.float16)
    a_t = alphas[t]
    a_prev = alphas[0 if t_prev is None else t_prev]
    sqrt_one_minus = torch.sqrt(1.0 - a_t)  # float16 arithmetic
    a_t64, a_prev64 = float(a_t), float(a_prev)
    reciprocal = float(torch.reciprocal(1.0 - a_t))  # float16
    sigma = eta * math.sqrt((1.0 - a_prev64) * reciprocal * (1.0 - a_t64 / a_prev64))
    return StepCoefficients(_f32(a_t), _f32(a_prev), _f32(torch.tensor(sigma, dtype=torch.float64)), _f32(sqrt_one_minus))


def float16_q_sample_coefficients(t: int) -> tuple[float, float]:
    """(sqrt(a_t), sqrt(1 - a_t)) of the official float16 buffers (float64 square roots rounded to float16)."""
    alphas = linear_alphas_cumprod()
    return (
        float(torch.sqrt(alphas[t]).to(torch.float16)),
        float(torch.sqrt(1.0 - alphas[t]).to(torch.float16)),
    )


def check_schedule(schedule: str) -> str:
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule: {schedule!r} is not one of {', '.join(SCHEDULES)}")
    return schedule
