"""Cross-view attention: a family's motion modules injected into a MODEL's UNet where the converted file says.

The cross-view file records each module's place by structure (``dp3d.placement``: after input block i, after
output block j, in the middle block; ``kernels/checkpoint/layout.cross_view_placements``), never by family:
DiffPortrait3D's 27 follow every input block but the first, sit in the middle block between its transformer
and its last ResBlock, and follow every output block (two after the upsampling ones); DiffPortrait360's 20
follow the input blocks that hold a ResBlock and every output block, none in the middle. A module after an
output block always runs after the block's upsampler. Injection happens when ComfyUI loads the model
(``PatcherInjection``) and is undone when it unloads it, so the incoming MODEL and every other clone stay
untouched.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import comfy.model_management
import comfy.model_patcher
import comfy.patcher_extension
import torch
from comfy.ldm.modules.attention import SpatialTransformer
from comfy_api.latest import io

from ..kernels.model.cross_view_attention import CrossViewModule, CrossViewModuleSet
from ..kernels.model.view_windows import BLENDS, WINDOW_MODES, plan_view_windows, stacked_windows
from .io_types import CrossViewModules
from .unet_structure import block_channels, require_unet, unet_blocks

ADDITIONAL_MODELS_KEY = "dp3d_cross_view"
MIDDLE_POLICIES = {
    "official (uncond only)": (False, True),
    "both branches": (True, True),
    "none": (False, False),
}  # policy -> (applies to cond rows, applies to uncond rows)


@dataclass(frozen=True)
class CrossViewSettings:
    """How views are grouped for cross-view attention, and where the middle module runs."""

    window_mode: str = "official"
    window_size: int = 8
    window_stride: int = 4
    blend: str = "pyramid"
    middle: str = "official (uncond only)"

    def windows(self, n_views: int):
        return plan_view_windows(self.window_mode, n_views, self.window_size, self.window_stride, self.blend)


def placement_slots(unet, placements) -> list[tuple[object, object, object]]:
    """(placement, block, channels of the block) for every recorded placement, in execution order; the block is
    None when the UNet has no such block."""
    blocks = {(kind, block_id): block for kind, block_id, block in unet_blocks(unet)}
    slots = []
    for place in placements:
        block = blocks.get((place.location, place.block_index))
        slots.append((place, block, None if block is None else block_channels(block)))
    return slots


class CrossViewInjection:
    """Inserts the modules into the UNet of the ModelPatcher being loaded; removes them on eject."""

    def __init__(self, modules: comfy.model_patcher.ModelPatcher):
        self.modules = modules

    def inject(self, model_patcher) -> None:
        module_set: CrossViewModuleSet = self.modules.model
        unet = require_unet(model_patcher, "model")
        for place, block, _ in placement_slots(unet, module_set.placements()):
            module = module_set.module_at(place.location, place.block_index, place.order)
            if place.location == "middle":
                after = max(i for i, layer in enumerate(block) if isinstance(layer, SpatialTransformer))
                block.insert(after + 1, module)
            else:
                block.append(module)

    def eject(self, model_patcher) -> None:
        for _, _, block in unet_blocks(model_patcher.model.diffusion_model):
            for index in reversed(range(len(block))):
                if isinstance(block[index], CrossViewModule):
                    del block[index]


@functools.lru_cache(maxsize=64)
def planned_windows(settings: CrossViewSettings, n_views: int, copies: int = 1):
    """The window plan of ``copies`` stacked blocks of ``n_views`` views, made once per shape (a plan caches
    its index tensors per device, so reusing it also saves those)."""
    return stacked_windows(settings.windows(n_views), copies)


class CrossViewRunner:
    """``forward_timestep_embed_patch`` handler: runs an injected module over the views of each cond/uncond
    chunk, grouped into windows. Chunks never mix: when every chunk runs the module, one call covers them
    all with the chunk's plan repeated per chunk; otherwise (the middle module) it runs on its chunks only."""

    def __init__(self, settings: CrossViewSettings):
        self.settings = settings
        self.middle_cond, self.middle_uncond = MIDDLE_POLICIES[settings.middle]

    # Never traced: it branches on the transformer options (chunks, block), and ComfyUI's TorchCompileModel
    # drops torch.compile's guards on those, so a compiled graph would keep its first call's branch (the
    # middle module's policy applied everywhere).
    @torch.compiler.disable
    def __call__(self, layer, x, emb, context, transformer_options, *args, **kwargs):
        chunks = transformer_options.get("cond_or_uncond") or [0]
        rows = x.shape[0] // len(chunks)
        in_middle = transformer_options.get("block", ("", 0))[0] == "middle"
        runs = [not in_middle or (self.middle_uncond if chunk == 1 else self.middle_cond) for chunk in chunks]
        if all(runs):
            return layer(x, planned_windows(self.settings, rows, len(chunks)))
        outputs = []
        for i, run in enumerate(runs):
            part = x[i * rows : (i + 1) * rows]
            outputs.append(layer(part, planned_windows(self.settings, rows)) if run else part)
        return torch.cat(outputs) if len(outputs) > 1 else outputs[0]


def check_fits(model, modules: comfy.model_patcher.ModelPatcher) -> None:
    """The MODEL's UNet must have every block the set's placement names, each of the module's width, and as
    many blocks as the UNet the modules were trained in."""
    unet = require_unet(model, "model")
    placements = modules.model.placements()
    misfits = [place for place, _, channels in placement_slots(unet, placements) if channels != place.channels]
    n_blocks = (len(unet.input_blocks), len(unet.output_blocks))
    wanted = (max((p.block_index for p in placements if p.location == "output"), default=-1) + 1)
    if misfits or (wanted and n_blocks[1] != wanted):
        first = misfits[0] if misfits else placements[-1]
        raise ValueError(
            f"model: its UNet ({n_blocks[0]} input and {n_blocks[1]} output blocks) offers no cross-view slots of "
            f"the right width for {len(misfits) or len(placements)} of the {len(placements)} modules of the "
            f"cross-view file (e.g. after {first.location} block {first.block_index}, {first.channels} channels); "
            "the cross-view modules need an SD1.5 model of the size they were trained in"
        )


def apply_cross_view(model, modules: comfy.model_patcher.ModelPatcher, settings: CrossViewSettings):
    """A clone of ``model`` with cross-view attention; ComfyUI loads/offloads the modules with it."""
    check_fits(model, modules)
    settings.windows(1)  # validates the options early
    patched = model.clone()
    patched.set_additional_models(ADDITIONAL_MODELS_KEY, [modules])
    injection = CrossViewInjection(modules)
    patched.set_injections(
        ADDITIONAL_MODELS_KEY, [comfy.patcher_extension.PatcherInjection(injection.inject, injection.eject)]
    )
    patched.set_model_patch((CrossViewModule, CrossViewRunner(settings)), "forward_timestep_embed_patch")
    return patched


def window_inputs() -> list:
    return [
        io.Combo.Input(
            "window_mode",
            options=list(WINDOW_MODES),
            default="official",
            tooltip="official: groups of window_size consecutive views (DiffPortrait3D: 8); sliding: overlapping "
            "windows blended; looped: sliding windows that wrap (view N-1 neighbours view 0), for 360 orbits",
        ),
        io.Int.Input("window_size", default=8, min=1, max=32, tooltip="views per window (trained with 8)"),
        io.Int.Input("window_stride", default=4, min=1, max=32, tooltip="step between windows (sliding/looped)"),
        io.Combo.Input("window_blend", options=list(BLENDS), default="pyramid"),
        io.Combo.Input(
            "middle_module",
            options=list(MIDDLE_POLICIES),
            default="official (uncond only)",
            tooltip="the official code runs the middle-block module on the unconditional branch only",
        ),
    ]


def settings_from_inputs(window_mode, window_size, window_stride, window_blend, middle_module) -> CrossViewSettings:
    """The settings of the window inputs; a ValueError naming the inputs when they disagree."""
    if window_mode != "official" and window_stride > window_size:
        raise ValueError(
            f"window_stride ({window_stride}) is larger than window_size ({window_size}): the '{window_mode}' windows "
            "would skip views; set window_stride between 1 and window_size"
        )
    return CrossViewSettings(window_mode, window_size, window_stride, window_blend, middle_module)


class ApplyCrossView(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DP3DApplyCrossView",
            display_name="DiffPortrait3D Cross-View Attention",
            category="DiffPortrait3D",
            description="Patches a MODEL (a clone) with cross-view attention across the latent batch, so the "
            "views of one batch stay consistent. Works with the core KSampler and SamplerCustomAdvanced.",
            inputs=[io.Model.Input("model"), CrossViewModules.Input("cross_view"), *window_inputs()],
            outputs=[io.Model.Output()],
        )

    @classmethod
    def execute(cls, model, cross_view, window_mode, window_size, window_stride, window_blend, middle_module):
        settings = settings_from_inputs(window_mode, window_size, window_stride, window_blend, middle_module)
        return io.NodeOutput(apply_cross_view(model, cross_view, settings))


NODES = [ApplyCrossView]
