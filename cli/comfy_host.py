"""Where a ComfyUI checkout lives on disk. Path logic only: nothing here imports ``comfy``."""

from __future__ import annotations

import os
from pathlib import Path

PACK_ROOT = Path(__file__).resolve().parents[1]


def looks_like_comfyui(folder: Path) -> bool:
    """True when ``folder`` holds a ComfyUI source tree (``comfy/model_patcher.py`` and ``nodes.py``)."""
    return (folder / "comfy" / "model_patcher.py").is_file() and (folder / "nodes.py").is_file()


def comfyui_candidates(pack_root: Path = PACK_ROOT) -> list[tuple[str, Path]]:
    """Places searched for ComfyUI, in order: ``$COMFYUI_PATH``, the pack's grandparent folder
    (the pack installed in ``ComfyUI/custom_nodes/``), ``~/comfy/ComfyUI`` (comfy-cli's default)."""
    candidates = []
    if os.environ.get("COMFYUI_PATH"):
        candidates.append(("COMFYUI_PATH", Path(os.environ["COMFYUI_PATH"]).expanduser()))
    candidates.append(("custom_nodes parent", pack_root.parent.parent))
    candidates.append(("comfy-cli default", Path.home() / "comfy" / "ComfyUI"))
    return candidates


def find_comfyui(pack_root: Path = PACK_ROOT) -> Path | None:
    """The first candidate that looks like ComfyUI, resolved; None when there is none."""
    for _, folder in comfyui_candidates(pack_root):
        if looks_like_comfyui(folder):
            return folder.resolve()
    return None
