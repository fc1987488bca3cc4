"""Where the official DiffPortrait3D weights come from, and the command that turns them into the pack's files.

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


def convert_command(out: str = "ComfyUI/models/diffportrait3d", only: str | None = None) -> str:
    """The command line that writes the converted file(s) into ``out``."""
    tail = f" --only {only}" if only else ""
    return f"python -m diffportrait3d convert {CHECKPOINT_NAME} --out {out}{tail}"
