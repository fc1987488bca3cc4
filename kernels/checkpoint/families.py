"""The model families the converter knows, recognised by the keys of a checkpoint (never by file name).

===================  =====================================================  ==========================
family               key signature                                          converted files
===================  =====================================================  ==========================
``dp3d``             motion modules, one of them only DiffPortrait3D has    ``diffportrait3d_*``
                     (middle block, second after an upsampler, input 8+),
                     or an appearance-net hint block
``dp360``            motion modules, none of those                          ``diffportrait360_*``
``dp360_backhead``   no motion modules, no appearance-net hint block        ``diffportrait360_backhead_*``
===================  =====================================================  ==========================

Every converted file records its family (``dp3d.family``; files without the record are DiffPortrait3D's,
written before families existed), so the three sets can sit side by side in ``models/diffportrait3d/``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .layout import (
    APPEARANCE_PREFIX,
    DIFFUSION_PREFIX,
    EVERY_BLOCK,
    POSE_PREFIX,
    RESBLOCK_INPUTS_AND_OUTPUTS,
    Shapes,
    expected_checkpoint_shapes,
)

CONFIG_DIR = Path(__file__).parent
MOTION_MARKER = "_motion_module"
# Motion keys only DiffPortrait3D's layout has: the middle module, the second module after an upsampling
# output block, input modules 8..10 (DiffPortrait360 has 8 input modules).
DP3D_ONLY_MOTION = re.compile(r"^(middle_block_motion_module\.|output_blocks_motion_module\.\d+\.1\.|input_blocks_motion_module\.(?:[89]|\d\d+)\.)")
APPEARANCE_HINT_PREFIX = APPEARANCE_PREFIX + "input_hint_block."


@dataclass(frozen=True)
class ModelFamily:
    """What differs between the families: names, the default architecture and the layout rules."""

    name: str
    title: str
    file_prefix: str
    config_file: str
    placement_rule: str
    appearance_hint_block: bool
    clip_position_ids: bool
    # Components this family's conversion writes (the others are dropped with a reason).
    components: tuple[str, ...]
    # Which branches the cross-view modules outside the middle block run on (all families: both).
    cross_view_branches: tuple[str, ...] = ("cond", "uncond")

    @property
    def config_path(self) -> Path:
        return CONFIG_DIR / self.config_file

    def file_name(self, component: str) -> str:
        return f"{self.file_prefix}_{component}.safetensors"

    def expected_shapes(self, architecture: dict) -> Shapes:
        return expected_checkpoint_shapes(
            architecture,
            placement_rule=self.placement_rule,
            appearance_hint_block=self.appearance_hint_block,
            clip_position_ids=self.clip_position_ids,
        )


ALL_COMPONENTS = ("unet", "appearance", "pose_controlnet", "cross_view", "vae", "text_encoder", "empty_prompt")

DP3D = ModelFamily(
    "dp3d", "DiffPortrait3D", "diffportrait3d", "official_config.json", EVERY_BLOCK, True, False, ALL_COMPONENTS
)
DP360 = ModelFamily(
    "dp360",
    "DiffPortrait360",
    "diffportrait360",
    "official_360_config.json",
    RESBLOCK_INPUTS_AND_OUTPUTS,
    False,
    True,
    ALL_COMPONENTS,
)
DP360_BACKHEAD = ModelFamily(
    "dp360_backhead",
    "DiffPortrait360 back-of-head generator",
    "diffportrait360_backhead",
    "official_backhead_config.json",
    RESBLOCK_INPUTS_AND_OUTPUTS,
    False,
    True,
    ("unet", "appearance", "pose_controlnet"),
)
FAMILIES = {family.name: family for family in (DP3D, DP360, DP360_BACKHEAD)}
# The back-head checkpoint repeats the 360 model's VAE and text encoder key for key.
SHARED_WITH_360 = "the back-head checkpoint's copy of the 360 model's VAE/text encoder: convert model_state-340000.th for it"


def family_named(name: str | None) -> ModelFamily:
    """The family of a ``dp3d.family`` record; files without one are DiffPortrait3D's."""
    return FAMILIES.get(name or DP3D.name, DP3D)


def detect_family(keys) -> ModelFamily | None:
    """The family whose key signature ``keys`` carry, or None when they are of none (see the module table).

    A checkpoint without motion modules is the back-head generator only when it also has the other two
    networks and no appearance-net hint block (DiffPortrait3D's appearance net has one).
    """
    keys = list(keys)
    motion = [key[len(DIFFUSION_PREFIX) :] for key in keys if key.startswith(DIFFUSION_PREFIX) and MOTION_MARKER in key]
    has_hint = any(key.startswith(APPEARANCE_HINT_PREFIX) for key in keys)
    if motion:
        return DP3D if has_hint or any(DP3D_ONLY_MOTION.match(key) for key in motion) else DP360
    has_unet = any(key.startswith(DIFFUSION_PREFIX) for key in keys)
    has_appearance = any(key.startswith(APPEARANCE_PREFIX) for key in keys)
    has_pose = any(key.startswith(POSE_PREFIX) for key in keys)
    if has_unet and has_appearance and has_pose and not has_hint:
        return DP360_BACKHEAD
    return None
