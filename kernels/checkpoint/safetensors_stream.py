"""Write a safetensors file one tensor at a time.

``safetensors.torch.save_file`` needs every tensor in memory at once; a 3.4 GB UNet converted from a
memory-mapped checkpoint would then sit in RAM twice. The format is simple enough to stream: an
8-byte little-endian header length, a JSON header (dtype, shape, byte offsets, ``__metadata__``),
then the raw little-endian tensor bytes in header order.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

SAFETENSORS_DTYPE_NAMES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}
SAFETENSORS_DTYPES = {name: dtype for dtype, name in SAFETENSORS_DTYPE_NAMES.items()}  # header name -> torch dtype


def write_safetensors_streaming(
    path: str | Path,
    entries: Sequence[tuple[str, tuple[int, ...], torch.dtype]],
    produce: Callable[[str], torch.Tensor],
    metadata: dict[str, str] | None = None,
) -> int:
    """Write ``entries`` (name, shape, dtype) to ``path``; ``produce(name)`` returns each tensor when its
    turn comes and it is cast to the declared dtype. Only one tensor is held at a time. The file appears
    atomically (written as ``path.partial`` then renamed). Returns the file size in bytes."""
    path = Path(path)
    header: dict[str, object] = {"__metadata__": dict(metadata or {})}
    offset = 0
    for name, shape, dtype in entries:
        size = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
        header[name] = {"dtype": SAFETENSORS_DTYPE_NAMES[dtype], "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    header_bytes = json.dumps(header, separators=(",", ":")).encode()
    header_bytes += b" " * (-len(header_bytes) % 8)
    partial = path.with_name(path.name + ".partial")
    try:
        with open(partial, "wb") as stream:
            stream.write(struct.pack("<Q", len(header_bytes)))
            stream.write(header_bytes)
            for name, shape, dtype in entries:
                tensor = produce(name)
                if tuple(tensor.shape) != tuple(shape):
                    raise ValueError(f"{name}: produced shape {tuple(tensor.shape)}, declared {tuple(shape)}")
                data = tensor.detach().to(device="cpu", dtype=dtype).contiguous()
                if data.numel():
                    stream.write(data.reshape(-1).view(torch.uint8).numpy().data)
                del data, tensor
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return path.stat().st_size
