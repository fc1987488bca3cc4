"""Sampling the views: DDIM with eta (the official sampler) on ComfyUI's machinery, and the all-in-one
cross-view sampler node."""

from __future__ import annotations

import comfy.model_management
import comfy.sample
import comfy.samplers
import comfy.utils
import latent_preview
import torch
from comfy.k_diffusion.sampling import default_noise_sampler
from comfy_api.latest import io
from tqdm.auto import tqdm

from ..kernels.model.ddim_sampling import official_ddim_timesteps, sample_ddim
from ..kernels.model.ddpm_schedule import (
    FLOAT16,
    FLOAT32,
    SCHEDULES,
    check_schedule,
    float16_step_coefficients,
)
from ..kernels.model.reference_attention import conditional_rows
from .cross_view import apply_cross_view, settings_from_inputs, window_inputs
from .io_types import CrossViewModules


class DDIMSamplerFunction:
    """ComfyUI KSAMPLER function: DDIM with eta, ending with the official t=0 step of this model's schedule."""

    def __call__(
        self, model, x, sigmas, extra_args=None, callback=None, disable=None, eta=0.5, schedule=FLOAT32,
        noise_sampler=None,
    ):
        extra_args = extra_args or {}
        model_sampling = model.inner_model.inner_model.model_sampling
        if noise_sampler is None:
            noise_sampler = default_noise_sampler(x, seed=extra_args.get("seed"))
        coefficients = None
        if check_schedule(schedule) == FLOAT16:
            coefficients = float16_coefficients(model_sampling, sigmas, eta)

        def checked_callback(info):
            comfy.model_management.throw_exception_if_processing_interrupted()
            if callback is not None:
                callback(info)

        return sample_ddim(
            model,
            x,
            sigmas,
            extra_args=extra_args,
            callback=checked_callback,
            eta=eta,
            final_sigma=float(model_sampling.sigma_min),
            noise_sampler=noise_sampler,
            progress=lambda steps: tqdm(steps, disable=disable),
            coefficients=coefficients,
        )


def float16_coefficients(model_sampling, sigmas: torch.Tensor, eta: float) -> list:
    """The official float16-schedule scalars of every step of ``sigmas`` (the last sigma 0 = the step to t=0)."""
    timesteps = [round(float(model_sampling.timestep(sigma))) if float(sigma) > 0 else None for sigma in sigmas]
    return [float16_step_coefficients(timesteps[i], timesteps[i + 1], eta) for i in range(len(sigmas) - 1)]


def ddim_sampler(eta: float, schedule: str = FLOAT32, noise_sampler=None) -> comfy.samplers.KSAMPLER:
    """The DDIM KSAMPLER; ``noise_sampler(sigma, sigma_next)`` replaces the seeded noise of eta > 0 (tests)."""
    options = {"eta": eta, "schedule": check_schedule(schedule)}
    if noise_sampler is not None:
        options["noise_sampler"] = noise_sampler
    return comfy.samplers.KSAMPLER(DDIMSamplerFunction(), extra_options=options)


def schedule_input(uses: str = "DDIM coefficients") -> io.Combo.Input:
    return io.Combo.Input(
        "schedule", options=list(SCHEDULES), default=FLOAT32, optional=True,
        tooltip=f"{uses}: float32 = DiffPortrait3D's and ComfyUI's; float16 = the official DiffPortrait360 code's "
        "float16 schedule buffers (differs in the 4th digit; for exact DiffPortrait360 numbers)",
    )


def official_sigmas(model, steps: int) -> torch.Tensor:
    """Sigmas of the official uniform DDIM timesteps (981 … 1 for 50 steps), then 0 — the same as the core
    'ddim_uniform' scheduler for SD1.5's 1000-step schedule."""
    sampling = model.get_model_object("model_sampling")
    timesteps = torch.tensor(official_ddim_timesteps(steps, len(sampling.sigmas)), dtype=torch.float32)
    return torch.cat([sampling.sigma(timesteps).float().to(timesteps.device), torch.zeros(1)])


class ConditionalRowsControl:
    """A ControlNet (chain) that acts on the conditional rows of a batch only; the unconditional rows get zero
    residuals (adding zero leaves them exact). Set on both positive and negative, it lets ComfyUI batch cond
    and uncond into one UNet call (ComfyUI only batches conds that share one control object) while keeping
    the official guidance: the unconditional branch has no pose ControlNet, and the ControlNet runs on the
    conditional rows alone. Everything else is the wrapped object's."""

    def __init__(self, control):
        self.control = control

    def __getattr__(self, name):
        if name == "control":  # not set yet (copy/unpickle): no recursion
            raise AttributeError(name)
        return getattr(self.control, name)

    def get_control(self, x_noisy, t, cond, batched_number, transformer_options):
        rows = conditional_rows(transformer_options, x_noisy.shape[0]).to(x_noisy.device)
        if bool(rows.all()):
            return self.control.get_control(x_noisy, t, cond, batched_number, transformer_options)
        if not bool(rows.any()):
            return None
        batch = x_noisy.shape[0]
        cond_rows = {
            key: value[rows] if isinstance(value, torch.Tensor) and value.shape[:1] == (batch,) else value
            for key, value in cond.items()
        }
        chunks = transformer_options["cond_or_uncond"].count(0)
        control = self.control.get_control(x_noisy[rows], t[rows], cond_rows, chunks, transformer_options)
        if control is None:
            return None
        return {
            kind: [None if residual is None else _scatter_rows(residual, rows) for residual in residuals]
            for kind, residuals in control.items()
        }


def _scatter_rows(values: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    full = values.new_zeros((rows.shape[0], *values.shape[1:]))
    full[rows] = values
    return full


def official_guidance(positive, negative):
    """(positive, negative) with the official guidance: the unconditional branch gets no pose residuals, and
    ComfyUI does not copy the positive's ControlNet over to it. When the positive carries one ControlNet
    (chain), both sides get it wrapped in ``ConditionalRowsControl`` so cond and uncond still run as one
    batch; otherwise the negative simply loses its ControlNets."""
    controls = {id(extras["control"]): extras["control"] for _, extras in positive if extras.get("control") is not None}
    shared = ConditionalRowsControl(next(iter(controls.values()))) if len(controls) == 1 else None

    def positive_extras(extras):
        extras = {**extras, "control_apply_to_uncond": False}
        if shared is not None and extras.get("control") is not None:
            extras["control"] = shared
        return extras

    def negative_extras(extras):
        extras = {k: v for k, v in extras.items() if k != "control"}
        if shared is not None:
            extras["control"] = shared
        return extras

    positive = [[tensor, positive_extras(extras)] for tensor, extras in positive]
    negative = [[tensor, negative_extras(extras)] for tensor, extras in negative]
    return positive, negative


def control_hints(conditioning) -> list[torch.Tensor]:
    """The condition images [N, C, H, W] of every ControlNet chained into ``conditioning``."""
    hints = []
    for _, extras in conditioning:
        control = extras.get("control")
        while control is not None:
            if getattr(control, "cond_hint_original", None) is not None:
                hints.append(control.cond_hint_original)
            control = control.previous_controlnet
    return hints


def check_views(latent: torch.Tensor, positive) -> None:
    """Every ControlNet of ``positive`` has 1 or one condition image per view, of the views' aspect (ComfyUI
    would repeat a short batch and centre-crop another aspect: each view would get another view's pose)."""
    views, _, height, width = latent.shape
    for hint in control_hints(positive):
        if hint.shape[0] not in (1, views):
            raise ValueError(
                f"positive: the pose ControlNet has {hint.shape[0]} condition images for {views} views (latent batch); "
                "give one condition image per view"
            )
        hint_height, hint_width = hint.shape[-2:]
        if abs(hint_width / hint_height - width / height) > 0.01 * (width / height):
            raise ValueError(
                f"positive: the pose condition images are {hint_width}x{hint_height} (WxH), the views "
                f"{width * 8}x{height * 8}; ComfyUI would crop them. Render the poses at the views' aspect "
                "(the pose node's size = the latent's width and height)"
            )


class DDIMSamplerNode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DP3DDDIMSampler",
            display_name="DiffPortrait3D DDIM Sampler",
            category="DiffPortrait3D/sampling",
            description="DDIM with eta as the official DiffPortrait3D sampler runs it (official: eta 0.5, with the "
            "core BasicScheduler 'ddim_uniform', 50 steps). For SamplerCustomAdvanced.",
            inputs=[io.Float.Input("eta", default=0.5, min=0.0, max=1.0, step=0.01), schedule_input()],
            outputs=[io.Sampler.Output()],
        )

    @classmethod
    def execute(cls, eta, schedule=FLOAT32) -> io.NodeOutput:
        return io.NodeOutput(ddim_sampler(eta, schedule))


class CrossViewSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DP3DCrossViewSampler",
            display_name="DiffPortrait3D Cross-View Sampler",
            category="DiffPortrait3D",
            description="Samples all views of the latent batch together with cross-view attention, DDIM with eta "
            "and the official guidance (the negative branch gets no pose ControlNet; with the Appearance "
            "Reference Encoder it also gets no reference). Official: 50 steps, cfg 3, eta 0.5, 8-view windows.",
            inputs=[
                io.Model.Input("model", tooltip="usually from DiffPortrait3D Appearance Reference Encoder"),
                CrossViewModules.Input("cross_view"),
                io.Conditioning.Input("positive", tooltip="text (empty in the official setup) + pose ControlNet"),
                io.Conditioning.Input("negative"),
                io.Latent.Input("latent_image", tooltip="one latent per view"),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True),
                io.Int.Input("steps", default=50, min=1, max=1000),
                io.Float.Input("cfg", default=3.0, min=0.0, max=100.0, step=0.1, round=0.01),
                io.Float.Input("eta", default=0.5, min=0.0, max=1.0, step=0.01),
                *window_inputs(),
                io.Noise.Input("noise", optional=True, tooltip="e.g. DiffPortrait3D 3D-aware noise; default: seeded"),
                schedule_input(),
            ],
            outputs=[io.Latent.Output()],
        )

    @classmethod
    def execute(
        cls, model, cross_view, positive, negative, latent_image, seed, steps, cfg, eta,
        window_mode, window_size, window_stride, window_blend, middle_module, noise=None, schedule=FLOAT32,
    ) -> io.NodeOutput:
        settings = settings_from_inputs(window_mode, window_size, window_stride, window_blend, middle_module)
        patched = apply_cross_view(model, cross_view, settings)
        latent = comfy.sample.fix_empty_latent_channels(patched, latent_image["samples"])
        check_views(latent, positive)
        positive, negative = official_guidance(positive, negative)
        sigmas = official_sigmas(patched, steps)
        if noise is None:
            noise_tensor = comfy.sample.prepare_noise(latent, seed, latent_image.get("batch_index"))
            noise_seed = seed
        else:
            if hasattr(noise, "for_first_sigma"):  # the 3D-aware noise: start at this sampler's first sigma
                noise = noise.for_first_sigma(float(sigmas[0]))
            noise_tensor = noise.generate_noise({**latent_image, "samples": latent})
            noise_seed = noise.seed
        callback = latent_preview.prepare_callback(patched, len(sigmas) - 1)
        samples = comfy.sample.sample_custom(
            patched, noise_tensor, cfg, ddim_sampler(eta, schedule), sigmas, positive, negative, latent,
            noise_mask=latent_image.get("noise_mask"), callback=callback,
            disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=noise_seed,
        )
        out = {k: v for k, v in latent_image.items() if k != "noise_mask"}
        out["samples"] = samples
        return io.NodeOutput(out)


NODES = [DDIMSamplerNode, CrossViewSampler]
