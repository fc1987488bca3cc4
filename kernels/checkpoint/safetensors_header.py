"""The header of a safetensors file, read without touching its tensors: metadata, names, shapes, and whether
the file is whole.

Format: 8 bytes little-endian header length N, N bytes of JSON (``{name: {dtype, shape, data_offsets}}``
plus an optional ``__metadata__`` of strings), then the tensor data, which the offsets must cover exactly.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path

MAX_HEADER_BYTES = 100_000_000  # the safetensors library's own limit


class BrokenSafetensors(ValueError):
    """The file is not a whole safetensors file; the message says what is wrong with it."""


@dataclass(frozen=True)
class SafetensorsHeader:
    metadata: dict[str, str]
    shapes: dict[str, tuple[int, ...]]
    dtypes: dict[str, str]
    file_bytes: int

    @property
    def elements(self) -> int:
        return sum(math.prod(shape) for shape in self.shapes.values())


def read_header(path: str | Path) -> SafetensorsHeader:
    """The header of ``path``; :class:`BrokenSafetensors` when the file is empty, truncated, too short for its
    header, not JSON inside, or longer or shorter than its tensors' offsets say."""
    path = Path(path)
    size = path.stat().st_size
    with path.open("rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise BrokenSafetensors(f"{size} bytes: too short to hold a safetensors header")
        (length,) = struct.unpack("<Q", prefix)
        if length > MAX_HEADER_BYTES or 8 + length > size:
            raise BrokenSafetensors(f"header of {length} bytes announced, the file has {size} (truncated, or not safetensors)")
        raw = handle.read(length)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BrokenSafetensors(f"header is not JSON ({error}): not a safetensors file") from None
    if not isinstance(header, dict):
        raise BrokenSafetensors("header is not a JSON object: not a safetensors file")
    metadata = header.pop("__metadata__", None) or {}
    shapes, dtypes, end = {}, {}, 0
    for name, entry in header.items():
        try:
            shapes[name] = tuple(int(d) for d in entry["shape"])
            dtypes[name] = str(entry["dtype"])
            end = max(end, int(entry["data_offsets"][1]))
        except (TypeError, KeyError, IndexError, ValueError):
            raise BrokenSafetensors(f"tensor '{name}' has no valid shape, dtype and data_offsets") from None
    if 8 + length + end != size:
        state = "truncated" if 8 + length + end > size else "longer than its tensors"
        raise BrokenSafetensors(f"{state}: its tensors end at byte {8 + length + end}, the file has {size}")
    return SafetensorsHeader(metadata=dict(metadata), shapes=shapes, dtypes=dtypes, file_bytes=size)
