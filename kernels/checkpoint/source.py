"""Lazy, safe reading of a checkpoint: names, shapes and dtypes first, tensor data one at a time.

Pickled files (``.th/.pt/.ckpt``) are opened only with ``torch.load(weights_only=True, mmap=True)``:
a pickle that tries to build anything but tensors and plain containers is refused before any of
its code runs.
"""

from __future__ import annotations

import hashlib
import logging
import pickle
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

from .errors import ConversionError
from .safetensors_stream import SAFETENSORS_DTYPES

log = logging.getLogger(__name__)

PICKLE_SUFFIXES = {".th", ".pt", ".pth", ".ckpt", ".bin"}


@dataclass(frozen=True)
class TensorInfo:
    shape: tuple[int, ...]
    dtype: torch.dtype


class CheckpointSource:
    """Read-only view of a state dict: ``infos`` without reading data, ``tensor(key)`` on demand."""

    def __init__(self, path: Path, infos: dict[str, TensorInfo], fetch):
        self.path = path
        self.infos = infos
        self._fetch = fetch

    def tensor(self, key: str) -> torch.Tensor:
        return self._fetch(key)

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], name: str = "in-memory state dict") -> CheckpointSource:
        """A source over tensors already in memory (tests build full-size ones as zero-stride views)."""
        infos = {key: TensorInfo(tuple(t.shape), t.dtype) for key, t in tensors.items()}
        return cls(Path(name), infos, tensors.__getitem__)


@contextmanager
def open_checkpoint(path: str | Path) -> Iterator[CheckpointSource]:
    """Open ``path`` (safetensors, or a torch pickle read with ``weights_only=True``) lazily.

    Raises ``ConversionError`` for a missing file, an unknown extension, a refused pickle, a file that
    is not a state dict, or a truncated/corrupt archive.
    """
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"checkpoint not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        try:
            handle = safe_open(str(path), framework="pt", device="cpu")
        except Exception as error:  # safetensors raises its own error types for broken headers
            raise ConversionError(f"{path.name} is not a readable safetensors file ({error})") from error
        infos = {}
        for key in handle.keys():
            sliced = handle.get_slice(key)
            infos[key] = TensorInfo(tuple(sliced.get_shape()), _safetensors_dtype(sliced.get_dtype()))
        yield CheckpointSource(path, infos, handle.get_tensor)
        return
    if suffix not in PICKLE_SUFFIXES:
        raise ConversionError(
            f"{path.name}: unknown checkpoint type '{suffix}'; expected .th/.pt/.ckpt (torch) or .safetensors"
        )
    state_dict = _load_pickle_weights_only(path)
    infos = {key: TensorInfo(tuple(value.shape), value.dtype) for key, value in state_dict.items()}
    yield CheckpointSource(path, infos, state_dict.__getitem__)


def _starts_like_a_zip(path: Path) -> bool:
    """True when the file begins with a zip header (a truncated zip ``.pt`` has none of its directory left,
    so ``zipfile.is_zipfile`` alone would take it for the legacy format)."""
    with open(path, "rb") as handle:
        return handle.read(4) == b"PK\x03\x04"


def _load_pickle_weights_only(path: Path) -> dict[str, torch.Tensor]:
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as error:
        raise ConversionError(
            f"refused to load {path.name}: it contains pickled objects other than tensors "
            f"(torch.load(weights_only=True) said: {str(error).splitlines()[0]}). An untrusted pickle can run "
            "code; only plain state-dict checkpoints are converted."
        ) from error
    except RuntimeError as error:
        if "mmap" not in str(error) and "zip" not in str(error).lower():
            raise ConversionError(f"{path.name} could not be read as a torch checkpoint ({error})") from error
        if not zipfile.is_zipfile(path) and not _starts_like_a_zip(path):
            log.warning("%s uses the legacy torch format: reading it without mmap (needs its size in RAM)", path.name)
            try:
                loaded = torch.load(path, map_location="cpu", weights_only=True)
            except pickle.UnpicklingError as legacy_error:
                raise ConversionError(f"refused to load {path.name}: {legacy_error}") from legacy_error
            except Exception as legacy_error:
                raise ConversionError(f"{path.name} is truncated or not a torch checkpoint ({legacy_error})") from legacy_error
        else:
            raise ConversionError(f"{path.name} is truncated or corrupt ({error})") from error
    except (EOFError, zipfile.BadZipFile, OSError) as error:
        raise ConversionError(f"{path.name} is truncated or not a torch checkpoint ({error})") from error
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise ConversionError(
            f"{path.name} holds a {type(loaded).__name__}, not a state dict of tensors (optionally under 'state_dict')"
        )
    return loaded


def _safetensors_dtype(name: str) -> torch.dtype:
    return SAFETENSORS_DTYPES.get(name, torch.float32)


def file_sha256(path: str | Path, chunk_bytes: int = 16 << 20) -> str:
    """Hex sha256 of a file, read in chunks (constant memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()
