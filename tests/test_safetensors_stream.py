import pytest
import torch
from safetensors import safe_open

from diffportrait3d.kernels.checkpoint.safetensors_stream import write_safetensors_streaming


def test_streamed_file_reads_back_with_safetensors(tmp_path):
    tensors = {
        "a.weight": torch.randn(3, 5),
        "b.bias": torch.arange(7, dtype=torch.float32),
        "c.scalar": torch.tensor(2.5),
        "d.ids": torch.arange(4, dtype=torch.int64).reshape(1, 4),
        "e.empty": torch.zeros(0, 3),
    }
    declared = {"a.weight": torch.float16, "b.bias": torch.bfloat16, "c.scalar": torch.float32,
                "d.ids": torch.int64, "e.empty": torch.float16}
    entries = [(name, tuple(t.shape), declared[name]) for name, t in tensors.items()]
    produced = []

    def produce(name):
        produced.append(name)
        return tensors[name].t().contiguous().t() if tensors[name].ndim == 2 else tensors[name]

    path = tmp_path / "x.safetensors"
    size = write_safetensors_streaming(path, entries, produce, {"dp3d.component": "test"})
    assert size == path.stat().st_size
    assert produced == list(tensors)  # one at a time, in order
    with safe_open(str(path), "pt") as handle:
        assert handle.metadata() == {"dp3d.component": "test"}
        assert set(handle.keys()) == set(tensors)
        for name, tensor in tensors.items():
            loaded = handle.get_tensor(name)
            assert loaded.dtype == declared[name]
            assert torch.equal(loaded, tensor.to(declared[name]))
    assert not (tmp_path / "x.safetensors.partial").exists()


def test_shape_mismatch_leaves_no_file(tmp_path):
    path = tmp_path / "bad.safetensors"
    with pytest.raises(ValueError, match="declared"):
        write_safetensors_streaming(path, [("w", (2, 2), torch.float32)], lambda _: torch.zeros(3))
    assert not path.exists() and not (tmp_path / "bad.safetensors.partial").exists()
