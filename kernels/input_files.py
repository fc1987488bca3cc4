"""Files named by node inputs, confined to one folder (ComfyUI's input folder, given by the caller).

A name is resolved inside the folder (relative names), symlinks and ``..`` are followed to the real file,
and only a regular file inside the folder is returned. Anything else, missing or outside alike, gives the
same answer (None), so a remote client learns nothing about files outside the folder.
"""

from __future__ import annotations

import os
from pathlib import Path


def file_in_folder(name: str, folder: str | os.PathLike) -> Path | None:
    """The real path of the regular file ``name`` names inside ``folder`` (relative to it, or absolute
    but inside it; a ComfyUI-style `` [input]`` suffix is allowed), or None."""
    name = name.strip()
    if name.endswith("[input]"):
        name = name[: -len("[input]")].rstrip()
    if not name or "\0" in name:
        return None
    try:
        root = os.path.realpath(folder)
        real = os.path.realpath(os.path.join(root, name))  # an absolute name replaces root here
        inside = os.path.commonpath([root, real]) == root and real != root
    except (OSError, ValueError):
        return None
    return Path(real) if inside and os.path.isfile(real) else None

