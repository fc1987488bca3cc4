import os
import pickle

import pytest
import torch

from diffportrait3d.kernels.checkpoint.errors import ConversionError
from diffportrait3d.kernels.checkpoint.source import open_checkpoint


class RunsCodeWhenUnpickled:
    """A hand-made malicious payload: unpickling it would run a shell command that creates a file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_malicious_torch_pickle_is_refused_without_running(tmp_path, zip_format):
    marker = tmp_path / "pwned"
    path = tmp_path / "model_state.th"
    payload = {"model.diffusion_model.x": torch.zeros(1), "evil": RunsCodeWhenUnpickled(marker)}
    torch.save(payload, path, _use_new_zipfile_serialization=zip_format)
    with pytest.raises(ConversionError, match="refused to load model_state.th"):
        with open_checkpoint(path):
            pass
    assert not marker.exists()


def test_raw_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "model_state.ckpt"
    path.write_bytes(pickle.dumps(RunsCodeWhenUnpickled(marker)))
    with pytest.raises(ConversionError, match="refused to load|not a torch checkpoint"):
        with open_checkpoint(path):
            pass
    assert not marker.exists()


def test_state_dict_wrapper_and_lazy_infos(tmp_path):
    path = tmp_path / "wrapped.ckpt"
    torch.save({"state_dict": {"a": torch.ones(2, 3, dtype=torch.float16)}, "global_step": 540000}, path)
    with open_checkpoint(path) as source:
        assert source.infos["a"].shape == (2, 3) and source.infos["a"].dtype == torch.float16
        assert torch.equal(source.tensor("a"), torch.ones(2, 3, dtype=torch.float16))


def test_truncated_and_foreign_files_get_one_clear_error(tmp_path):
    good = tmp_path / "good.th"
    torch.save({"a": torch.ones(1000)}, good)
    truncated = tmp_path / "truncated.th"
    truncated.write_bytes(good.read_bytes()[:300])
    with pytest.raises(ConversionError, match="truncated"):
        with open_checkpoint(truncated):
            pass
    listing = tmp_path / "list.pt"
    torch.save([torch.ones(1)], listing)
    with pytest.raises(ConversionError, match="not a state dict"):
        with open_checkpoint(listing):
            pass
    with pytest.raises(ConversionError, match="unknown checkpoint type"):
        (tmp_path / "x.gguf").write_bytes(b"GGUF")
        with open_checkpoint(tmp_path / "x.gguf"):
            pass
