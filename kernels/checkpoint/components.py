"""Which converted file each key of the official checkpoint goes to, and under which name.

Official prefixes (see ``tests/fixtures/official_checkpoint_manifest.json``):

======================================  ==========================  ===========================================
official key                            component                   key in the converted file
======================================  ==========================  ===========================================
``model.diffusion_model.*`` (plain)     ``unet``                    ``input_blocks.…`` (ldm layout, SD1.5 UNET)
``model.diffusion_model.*_motion_*``    ``cross_view``              ``input_blocks_motion_module.…``
``control_model.*``                     ``appearance``              ``input_blocks.…`` (no ``input_hint_block``)
``pose_control_model.*``                ``pose_controlnet``         ``control_model.…`` (original ControlNet)
``first_stage_model.*``                 ``vae``                     ``encoder.…`` / ``decoder.…``
``cond_stage_model.transformer.*``      ``text_encoder``            ``text_model.…`` (transformers CLIP)
======================================  ==========================  ===========================================

``empty_prompt`` (``diffportrait3d_empty_prompt.safetensors``) holds no checkpoint key: it is the text encoder's
conditioning of the prompt ``''``, computed once at conversion.
"""

from __future__ import annotations

from dataclasses import dataclass

from .layout import (
    APPEARANCE_PREFIX,
    AUTOENCODER_PREFIX,
    DIFFUSION_PREFIX,
    POSE_PREFIX,
    SCHEDULE_BUFFERS,
    TEXT_TRANSFORMER_PREFIX,
)

COMPONENT_FILES = {
    "unet": "diffportrait3d_unet.safetensors",
    "appearance": "diffportrait3d_appearance.safetensors",
    "pose_controlnet": "diffportrait3d_pose_controlnet.safetensors",
    "cross_view": "diffportrait3d_cross_view.safetensors",
    "vae": "diffportrait3d_vae.safetensors",
    "text_encoder": "diffportrait3d_text_encoder.safetensors",
    # Not routed from keys: computed at conversion from the text encoder (kernels/checkpoint/empty_prompt.py).
    "empty_prompt": "diffportrait3d_empty_prompt.safetensors",
}
MOTION_MARKER = "_motion_module"
CONTROLNET_PREFIX = "control_model."  # of the converted pose ControlNet: the original ControlNet's own prefix


@dataclass(frozen=True)
class Routing:
    """Where one official key goes: ``component`` and ``target_key``, or ``dropped_reason`` when dropped."""

    component: str | None
    target_key: str | None
    dropped_reason: str | None = None


def route_key(key: str) -> Routing:
    """Route one official key (see the module table). Unknown prefixes come back as dropped 'unknown key'."""
    if key.startswith(DIFFUSION_PREFIX):
        rest = key[len(DIFFUSION_PREFIX) :]
        component = "cross_view" if MOTION_MARKER in rest.split(".", 1)[0] else "unet"
        return Routing(component, rest)
    if key.startswith(APPEARANCE_PREFIX):
        rest = key[len(APPEARANCE_PREFIX) :]
        if rest.startswith("input_hint_block."):
            return Routing(None, None, "appearance net hint block: present in the checkpoint, never executed")
        return Routing("appearance", rest)
    if key.startswith(POSE_PREFIX):
        return Routing("pose_controlnet", CONTROLNET_PREFIX + key[len(POSE_PREFIX) :])
    if key.startswith(AUTOENCODER_PREFIX):
        return Routing("vae", key[len(AUTOENCODER_PREFIX) :])
    if key.startswith(TEXT_TRANSFORMER_PREFIX):
        rest = key[len(TEXT_TRANSFORMER_PREFIX) :]
        if rest.endswith("embeddings.position_ids"):
            return Routing(None, None, "CLIP position ids: a constant arange, rebuilt by every CLIP loader")
        if not rest.startswith("text_model."):
            rest = "text_model." + rest
        return Routing("text_encoder", rest)
    if key in SCHEDULE_BUFFERS:
        return Routing(None, None, "DDPM schedule buffer: the SD1.5 linear schedule, recomputed by ComfyUI")
    return Routing(None, None, "unknown key: not part of the DiffPortrait3D architecture")
