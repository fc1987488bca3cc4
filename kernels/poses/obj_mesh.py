"""Wavefront OBJ reading (positions, optional vertex colours, polygon faces) and fitting to the head frame."""

from __future__ import annotations

import math
from pathlib import Path

import torch

MAX_COORDINATE = 1e6  # beyond this float32 positions lose the precision a head needs


def _obj_numbers(parts: list[str], number: int, line: str) -> list[float]:
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise ValueError(f"OBJ line {number}: '{line.strip()}' has something that is not a number") from None
    if not all(math.isfinite(v) and abs(v) <= MAX_COORDINATE for v in values):
        raise ValueError(f"OBJ line {number}: '{line.strip()}' has a NaN, infinite or huge (> {MAX_COORDINATE:g}) number")
    return values


def _obj_corner(token: str, vertex_count: int, number: int, line: str) -> int:
    """0-based vertex index of one ``f`` corner (``i``, ``i/t``, ``i//n``, ``i/t/n``; negative = from the latest vertex)."""
    try:
        index = int(token.split("/")[0])
    except ValueError:
        raise ValueError(f"OBJ line {number}: '{line.strip()}': face corner '{token}' is not a vertex number") from None
    corner = index - 1 if index > 0 else vertex_count + index
    if index == 0 or not 0 <= corner < vertex_count:
        raise ValueError(
            f"OBJ line {number}: '{line.strip()}': vertex {index} does not exist ({vertex_count} vertices so far; "
            "OBJ counts from 1, negative numbers count back from the latest vertex)"
        )
    return corner


def parse_obj(text: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``(vertices [V, 3] float32, faces [F, 3] int64, colours [V, 3] float32 or None)`` from OBJ text.

    Reads ``v x y z [r g b]`` and ``f`` lines (``i``, ``i/t``, ``i//n``, ``i/t/n``; negative indices
    count back from the latest vertex); polygons are split into triangle fans. Other lines are ignored.
    ``ValueError`` naming the line for anything unusable: non-numbers, NaN or huge coordinates, faces
    with missing vertices; and for a mesh without faces or whose faces all have no area.
    """
    vertices, colours, faces = [], [], []
    for number, line in enumerate(text.splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "v":
            if len(parts) < 4:
                raise ValueError(f"OBJ line {number}: a vertex needs x y z, got '{line.strip()}'")
            values = _obj_numbers(parts[1:7], number, line)
            vertices.append(values[:3])
            colours.append(values[3:6] if len(values) >= 6 else None)
        elif parts[0] == "f":
            if len(parts) < 4:
                raise ValueError(f"OBJ line {number}: a face needs at least 3 vertices, got '{line.strip()}'")
            corners = [_obj_corner(token, len(vertices), number, line) for token in parts[1:]]
            faces.extend([corners[0], corners[k], corners[k + 1]] for k in range(1, len(corners) - 1))
    if not vertices or not faces:
        raise ValueError("OBJ has no vertices or no faces: need 'v x y z' and 'f a b c' lines")
    vertex_tensor = torch.tensor(vertices, dtype=torch.float64)
    face_tensor = torch.tensor(faces, dtype=torch.long)
    corners = vertex_tensor[face_tensor]
    areas = torch.linalg.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0], dim=-1).norm(dim=-1)
    if not bool((areas > 0).any()):
        raise ValueError(f"OBJ: all {len(faces)} triangles have zero area (repeated or collinear vertices); nothing to draw")
    colour_tensor = None
    if all(c is not None for c in colours):
        colour_tensor = torch.tensor(colours, dtype=torch.float32)
        if colour_tensor.max() > 1.0:  # some exporters write 0..255
            colour_tensor = colour_tensor / 255.0
    return vertex_tensor.float(), face_tensor, colour_tensor


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
