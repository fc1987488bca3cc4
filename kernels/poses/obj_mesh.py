"""Wavefront OBJ reading (positions, optional vertex colours, polygon faces) and fitting to the head frame."""

from __future__ import annotations

from pathlib import Path

import torch


def parse_obj(text: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``(vertices [V, 3] float32, faces [F, 3] int64, colours [V, 3] float32 or None)`` from OBJ text.

    Reads ``v x y z [r g b]`` and ``f`` lines (``i``, ``i/t``, ``i//n``, ``i/t/n``; negative indices
    count back from the latest vertex); polygons are split into triangle fans. Other lines are ignored.
    """
    vertices, colours, faces = [], [], []
    for number, line in enumerate(text.splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "v":
            if len(parts) < 4:
                raise ValueError(f"OBJ line {number}: a vertex needs x y z, got '{line.strip()}'")
            values = [float(p) for p in parts[1:7]]
            vertices.append(values[:3])
            colours.append(values[3:6] if len(values) >= 6 else None)
        elif parts[0] == "f":
            if len(parts) < 4:
                raise ValueError(f"OBJ line {number}: a face needs at least 3 vertices, got '{line.strip()}'")
            corners = []
            for token in parts[1:]:
                index = int(token.split("/")[0])
                corners.append(index - 1 if index > 0 else len(vertices) + index)
            if any(c < 0 or c >= len(vertices) for c in corners):
                raise ValueError(f"OBJ line {number}: face refers to a vertex that does not exist yet")
            faces.extend([corners[0], corners[k], corners[k + 1]] for k in range(1, len(corners) - 1))
    if not vertices or not faces:
        raise ValueError("OBJ has no vertices or no faces: need 'v x y z' and 'f a b c' lines")
    colour_tensor = None
    if all(c is not None for c in colours):
        colour_tensor = torch.tensor(colours, dtype=torch.float32)
        if colour_tensor.max() > 1.0:  # some exporters write 0..255
            colour_tensor = colour_tensor / 255.0
    return torch.tensor(vertices, dtype=torch.float32), torch.tensor(faces, dtype=torch.long), colour_tensor


def load_obj(path: str | Path):
    """:func:`parse_obj` of a file."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"OBJ file not found: {path}")
    return parse_obj(path.read_text(encoding="utf-8", errors="replace"))


def fit_to_head_frame(vertices: torch.Tensor, top_y: float, width: float) -> torch.Tensor:
    """Move and scale a Y-up, face-toward-+Z mesh so its bounding box is ``width`` wide (x), centred
    on x = z = 0, with its highest point at ``top_y`` (world units)."""
    low, high = vertices.amin(0), vertices.amax(0)
    extent = float(high[0] - low[0])
    if extent <= 0:
        raise ValueError("OBJ mesh has zero width; cannot fit it to the head frame")
    scale = width / extent
    centre = (low + high) / 2
    fitted = (vertices - centre) * scale
    fitted[:, 1] += top_y - fitted[:, 1].max()
    return fitted
