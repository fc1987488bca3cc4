"""Preview grids: a batch of images tiled into one picture."""

from __future__ import annotations

import math

import torch


def image_grid(images: torch.Tensor, columns: int = 0, gap: int = 4, gap_colour=(1.0, 1.0, 1.0)) -> torch.Tensor:
    """Tile ``images`` [B, H, W, C] row by row into [1, rows*H + gaps, columns*W + gaps, C].

    ``columns`` <= 0 picks about a square grid; empty cells and gaps take ``gap_colour``.
    """
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"image_grid takes [B, H, W, C] with B >= 1, got {tuple(images.shape)}")
    count, height, width, channels = images.shape
    columns = columns if columns > 0 else math.ceil(math.sqrt(count))
    columns = min(columns, count)
    rows = math.ceil(count / columns)
    fill = torch.ones(channels, dtype=images.dtype)  # channels past the colour (alpha) are opaque
    fill[: min(channels, len(gap_colour))] = torch.as_tensor(gap_colour, dtype=images.dtype)[:channels]
    grid = fill.expand(rows * height + (rows - 1) * gap, columns * width + (columns - 1) * gap, channels).clone()
    for index in range(count):
        row, column = divmod(index, columns)
        top, left = row * (height + gap), column * (width + gap)
        grid[top : top + height, left : left + width] = images[index]
    return grid.unsqueeze(0)
