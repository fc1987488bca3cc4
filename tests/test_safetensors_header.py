"""The header reader agrees with the safetensors library on a whole file and names what is wrong with a broken one."""

from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from diffportrait3d.kernels.checkpoint.safetensors_header import BrokenSafetensors, read_header


@pytest.fixture
def whole(tmp_path) -> Path:
    path = tmp_path / "whole.safetensors"
    tensors = {"a.weight": torch.zeros(3, 4, dtype=torch.float16), "b": torch.ones(5), "c.int": torch.arange(2)}
    save_file(tensors, str(path), metadata={"dp3d.component": "unet", "note": "x"})
    return path


def test_header_matches_the_safetensors_library(whole):
    header = read_header(whole)
    with safe_open(str(whole), "pt") as handle:
        assert header.metadata == handle.metadata()
        assert header.shapes == {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
    assert header.dtypes == {"a.weight": "F16", "b": "F32", "c.int": "I64"}
    assert header.elements == 12 + 5 + 2
    assert header.file_bytes == whole.stat().st_size


@pytest.mark.parametrize("damage", ["empty", "7_bytes", "half", "one_byte_short", "one_byte_extra", "pickle"])
def test_broken_files_are_named_not_raised_as_other_errors(whole, tmp_path, damage):
    data = whole.read_bytes()
    bad = tmp_path / "bad.safetensors"
    if damage == "pickle":
        torch.save({"w": torch.zeros(2)}, bad)
    else:
        cut = {"empty": b"", "7_bytes": data[:7], "half": data[: len(data) // 2], "one_byte_short": data[:-1],
               "one_byte_extra": data + b"\0"}[damage]
        bad.write_bytes(cut)
    with pytest.raises(BrokenSafetensors) as caught:
        read_header(bad)
    expected = {"empty": "too short", "7_bytes": "too short", "one_byte_short": "truncated",
                "one_byte_extra": "longer than its tensors"}.get(damage)
    if expected:
        assert expected in str(caught.value)
