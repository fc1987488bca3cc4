"""Where the official weights come from, and the command that turns them into the pack's files.

The pack never downloads anything: messages that name a missing file name this source and this command.
"""

from __future__ import annotations

CHECKPOINT_NAME = "model_state-540000-001.th"
# Linked from the official repository's README ("For pretrained checkpoint please download from google drive").
CHECKPOINT_URL = "https://drive.google.com/file/d/14qzipHghFrs4CFpVo1xW9CZt8OGLJf9t/view"
CHECKPOINT_ORIGIN = (
    f"the official DiffPortrait3D checkpoint (Google Drive: {CHECKPOINT_URL}, linked from "
    "https://github.com/FreedomGu/DiffPortrait3D)"
)
CHECKPOINT_SOURCE = f"{CHECKPOINT_NAME}, {CHECKPOINT_ORIGIN}"
DP360_ORIGIN = "the Hugging Face repository gym890/diffportrait360 (https://github.com/FreedomGu/Diffportrait360)"
# family -> (checkpoint file, where it comes from)
FAMILY_CHECKPOINTS = {
    "dp3d": (CHECKPOINT_NAME, CHECKPOINT_ORIGIN),
    "dp360": ("model_state-340000.th", f"the DiffPortrait360 360 model, from {DP360_ORIGIN}"),
    "dp360_backhead": ("back_head-230000.th", f"the DiffPortrait360 back-of-head generator, from {DP360_ORIGIN}"),
}


def convert_command(out: str = "ComfyUI/models/diffportrait3d", only: str | None = None, family: str = "dp3d") -> str:
    """The command line that writes the converted file(s) of ``family``'s checkpoint into ``out``."""
    tail = f" --only {only}" if only else ""
    return f"python -m diffportrait3d convert {FAMILY_CHECKPOINTS[family][0]} --out {out}{tail}"


def checkpoint_source(family: str = "dp3d") -> str:
    """'<file>, <where it comes from>' of ``family``'s official checkpoint."""
    name, origin = FAMILY_CHECKPOINTS[family]
    return f"{name}, {origin}"
