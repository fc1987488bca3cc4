"""Appearance reference encoder: the portrait enters the base UNet's self-attention every step.

Per UNet call the appearance net runs on the clean reference latent at the current timestep — once at
batch 1 when all conditional views share timestep and text (always, in a normal sampler) — and a bank
of its transformer blocks' ``norm1`` outputs is read by the UNet's self-attention on conditional rows.

References stack: encoding a MODEL that already has references adds one more (DiffPortrait360's back of the
head, or a side photo): each runs its own appearance net pass with the same timestep and text, and the UNet
attends over ``[own ; reference 1 ; reference 2 ; ...]``, each reference with its own strength and its own
start/end percent.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import comfy.model_management
import comfy.patcher_extension
import torch
from comfy.ldm.modules.attention import BasicTransformerBlock, optimized_attention, optimized_attention_masked
from comfy_api.latest import io

from ..kernels.model.reference_attention import (
    BankFull,
    ReferenceBank,
    ReferenceBankReader,
    ReferenceBankWriter,
    all_rows_equal,
    block_key,
    chunk_rows,
    conditional_rows,
    reference_logit_bias,
)
from ..kernels.model.reference_image import fit_to_size, to_rgb
from .io_types import AppearanceNet
from .unet_structure import require_same_transformers, require_unet, transformer_positions

ADDITIONAL_MODELS_KEY = "dp3d_appearance"


class ReferenceLatent:
    """The reference as a latent of the views' size, in the model's latent space: encoded from an IMAGE with
    a VAE on first use at each size (like ComfyUI's VAE-based ControlNets), or given directly."""

    def __init__(self, latent_format=None, image: torch.Tensor | None = None, vae=None, model_latent=None):
        self.latent_format = latent_format
        self.image = None if image is None else to_rgb(image)
        self.vae = vae
        self.model_latent = model_latent
        self._encoded: dict[tuple[int, int], torch.Tensor] = {}

    def at_size(self, height: int, width: int) -> torch.Tensor:
        """[R, C, height, width] in the model's latent space (process_in applied), R = reference batch."""
        if self.model_latent is not None:
            if tuple(self.model_latent.shape[-2:]) != (height, width):
                raise ValueError(
                    f"the reference latent is {tuple(self.model_latent.shape[-2:])}, the views ({height}, {width}); "
                    "encode the reference at the size of the views"
                )
            return self.model_latent
        key = (height, width)
        if key not in self._encoded:
            compression = self.vae.spacial_compression_encode()
            pixels = fit_to_size(self.image, height * compression, width * compression)
            in_use = comfy.model_management.loaded_models(only_currently_used=True)
            encoded = self.vae.encode(pixels)
            comfy.model_management.load_models_gpu(in_use)
            self._encoded[key] = self.latent_format.process_in(encoded)
        return self._encoded[key]


@dataclass(frozen=True)
class Reference:
    """One reference of a MODEL: its appearance net, latent, sigma range (start >= end) and strength."""

    appearance: object  # ModelPatcher of the appearance net
    latent: ReferenceLatent
    sigma_start: float
    sigma_end: float
    strength: float = 1.0
    blocks: int = field(init=False)  # transformer blocks of the appearance net: its pass stops after the last

    def __post_init__(self):
        modules = self.appearance.model.modules()
        object.__setattr__(self, "blocks", sum(isinstance(m, BasicTransformerBlock) for m in modules))

    def active(self, transformer_options) -> bool:
        """Whether this reference takes part in the UNet call (strength 0 never does)."""
        if self.strength <= 0:
            return False
        sigmas = transformer_options.get("sigmas")
        return sigmas is None or self.sigma_end <= float(sigmas.max()) <= self.sigma_start


class AppearanceReference:
    """DIFFUSION_MODEL wrapper that fills the bank before each UNet call (and clears it after): one appearance
    net pass per reference active at this sigma, in the order the references were added."""

    def __init__(self, references: tuple[Reference, ...], bank_key: str | None = None):
        self.references = references
        self.bank_key = bank_key or f"dp3d_reference_bank_{uuid.uuid4().hex}"
        self.reader = ReferenceBankReader(self.bank_key)

    def with_reference(self, reference: Reference) -> AppearanceReference:
        """A new wrapper with ``reference`` added last, reading the same bank (this one is left as it is)."""
        return AppearanceReference((*self.references, reference), self.bank_key)

    @torch.compiler.disable  # branches on the transformer options: see ReferenceBankReader.__call__
    def fill_bank(self, bank: ReferenceBank, x, timesteps, context, transformer_options) -> None:
        rows = conditional_rows(transformer_options, x.shape[0]).to(x.device)
        n_cond = int(rows.sum())
        active = [r for r in self.references if r.active(transformer_options)]
        if n_cond == 0 or not active:
            return
        t_cond, context_cond = timesteps[rows], context[rows]
        shared_step = all_rows_equal(t_cond) and all_rows_equal(context_cond)
        for reference in active:
            latent = reference.latent.at_size(x.shape[-2], x.shape[-1]).to(device=x.device, dtype=x.dtype)
            t_run, context_run = t_cond, context_cond
            if shared_step and all_rows_equal(latent):
                latent, t_run, context_run = latent[:1], t_cond[:1], context_cond[:1]
            elif latent.shape[0] == 1:
                latent = latent.expand(n_cond, -1, -1, -1)
            elif latent.shape[0] != n_cond:
                raise ValueError(
                    f"reference_image has {latent.shape[0]} images for {n_cond} views: give 1, or one per view"
                )
            options = {"patches": {"attn1_patch": [ReferenceBankWriter(bank, expected_entries=reference.blocks)]}}
            try:
                reference.appearance.model(latent, t_run, context=context_run, transformer_options=options)
            except BankFull:
                pass
            bank.add_reference(reference.strength)

    def __call__(self, executor, x, timesteps, context, y, control, transformer_options, **kwargs):
        bank = ReferenceBank()
        self.fill_bank(bank, x, timesteps, context, transformer_options)
        transformer_options[self.bank_key] = bank
        try:
            return executor(x, timesteps, context, y, control, transformer_options, **kwargs)
        finally:
            transformer_options.pop(self.bank_key, None)


class ReferenceAttention:
    """attn1 replace patch: the self-attention of each chunk over the keys the bank reader gave it. Conditional
    rows attend over [own ; reference 1 ; ...], each reference's tokens' softmax weight scaled by its strength
    (a log-strength logit bias; none when all are 1), read from the call's bank under ``bank_key``.
    Unconditional rows of a mixed batch attend over their own tokens alone: the reader's [own ; own ; ...] keys
    give the same attention, at more work. q [B, T, C], k and v [B, S, C] projected, S = T (no reference in
    this call) or T + the references' tokens -> [B, T, C]."""

    def __init__(self, bank_key: str | None = None):
        self.bank_key = bank_key

    @torch.compiler.disable  # branches on the transformer options: see ReferenceBankReader.__call__
    def __call__(self, q, k, v, extra_options):
        own = q.shape[1]
        if k.shape[1] == own:
            return self.attend(q, k, v, extra_options)
        outputs = [
            self.attend_reference(q[rows], k[rows], v[rows], extra_options) if conditional
            else self.attend(q[rows], k[rows, :own], v[rows, :own], extra_options)
            for conditional, rows in chunk_rows(extra_options, q.shape[0])
        ]
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs)

    @staticmethod
    def attend(q, k, v, extra_options, mask=None):
        """ComfyUI's attention for the device, as its own self-attention calls it."""
        options = {"attn_precision": extra_options.get("attn_precision"), "transformer_options": extra_options}
        if mask is None:
            return optimized_attention(q, k, v, extra_options["n_heads"], **options)
        return optimized_attention_masked(q, k, v, extra_options["n_heads"], mask, **options)

    def attend_reference(self, q, k, v, extra_options):
        bank = extra_options.get(self.bank_key) if self.bank_key else None
        segments = bank.segments(block_key(extra_options)) if bank is not None else []
        if all(strength == 1.0 for _, strength in segments):
            return self.attend(q, k, v, extra_options)
        bias = reference_logit_bias(q.shape[1], k.shape[1], segments, q.dtype, q.device)
        return self.attend(q, k, v, extra_options, mask=bias.view(1, 1, 1, -1))


def apply_appearance_reference(
    model, appearance, reference: ReferenceLatent, start_percent=0.0, end_percent=1.0, strength=1.0
):
    """A clone of ``model`` whose conditional branch attends to the reference, after any references ``model``
    already has (the input is not touched)."""
    sampling = model.get_model_object("model_sampling")
    added = Reference(
        appearance, reference, sampling.percent_to_sigma(start_percent), sampling.percent_to_sigma(end_percent), strength
    )
    patched = model.clone()
    wrappers = patched.get_wrappers(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, ADDITIONAL_MODELS_KEY)
    if wrappers:  # one wrapper for all references, kept at its place among the MODEL's wrappers
        runner = wrappers[0].with_reference(added)
        wrappers[:] = [runner]  # the clone's own list
    else:
        runner = AppearanceReference((added,))
        patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, ADDITIONAL_MODELS_KEY, runner)
        patched.set_model_attn1_patch(runner.reader)
    nets = {id(r.appearance.model): r.appearance for r in runner.references}
    patched.set_additional_models(ADDITIONAL_MODELS_KEY, list(nets.values()))
    # When every strength is 1 (or 0: that reference never runs), a self-attention another node already replaced
    # keeps its replacement (which then sees the [own ; references] keys, as ComfyUI's own attention would);
    # other strengths need this one.
    official = all(r.strength in (0.0, 1.0) for r in runner.references)
    attention = ReferenceAttention(runner.bank_key)
    replaced = model.model_options.get("transformer_options", {}).get("patches_replace", {}).get("attn1", {})
    for kind, block_id, index in transformer_positions(require_unet(model, "model")):
        theirs = [replaced[p] for p in ((kind, block_id, index), (kind, block_id)) if p in replaced]
        if not official or not any(not isinstance(other, ReferenceAttention) for other in theirs):
            patched.set_model_attn1_replace(attention, kind, block_id, index)
    return patched


class AppearanceReferenceEncoder(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DP3DAppearanceReferenceEncoder",
            display_name="DiffPortrait3D Appearance Reference Encoder",
            category="DiffPortrait3D",
            description="Patches a MODEL (a clone) so every view attends to the reference portrait, as in "
            "DiffPortrait3D: conditional branch only, appearance net run once per step and shared by all views. "
            "On a MODEL that already has a reference it adds one more (views attend to all of them).",
            inputs=[
                io.Model.Input(
                    "model",
                    tooltip="any SD1.5 MODEL, e.g. diffportrait3d_unet.safetensors; the output of another Appearance "
                    "Reference Encoder adds this image as one more reference",
                ),
                AppearanceNet.Input("appearance_net"),
                io.Vae.Input("vae"),
                io.Image.Input(
                    "reference_image",
                    tooltip="the portrait; centre-cropped to the views' aspect and resized to their size. "
                    "RGBA is composited on white, greyscale repeated. 1 image, or one per view",
                ),
                io.Float.Input(
                    "strength",
                    default=1.0,
                    min=0.0,
                    max=3.0,
                    step=0.01,
                    tooltip="1 = the official model; scales how much attention the views pay to this reference "
                    "(0 = off)",
                ),
                io.Float.Input("start_percent", default=0.0, min=0.0, max=1.0, step=0.001),
                io.Float.Input("end_percent", default=1.0, min=0.0, max=1.0, step=0.001),
            ],
            outputs=[io.Model.Output()],
        )

    @classmethod
    def execute(cls, model, appearance_net, vae, reference_image, strength, start_percent, end_percent) -> io.NodeOutput:
        if vae is None:
            raise ValueError("vae: connect the VAE of your SD1.5 model; it encodes reference_image")
        if start_percent > end_percent:
            raise ValueError(
                f"start_percent ({start_percent}) is after end_percent ({end_percent}): the reference acts from "
                "start_percent to end_percent of the sampling; set start_percent at or below end_percent"
            )
        require_same_transformers(model, appearance_net.model, "model", "appearance net")
        reference = ReferenceLatent(model.get_model_object("latent_format"), image=reference_image, vae=vae)
        return io.NodeOutput(
            apply_appearance_reference(model, appearance_net, reference, start_percent, end_percent, strength)
        )


NODES = [AppearanceReferenceEncoder]
