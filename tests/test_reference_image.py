"""Reference image policy: channels, centre crop to the views' aspect, exact size."""

import pytest
import torch

from diffportrait3d.kernels.model.reference_image import fit_to_size, to_rgb


def test_channels_become_rgb():
    grey = torch.rand(2, 5, 7, 1)
    assert torch.equal(to_rgb(grey), grey.expand(-1, -1, -1, 3))
    rgba = torch.cat([torch.zeros(1, 2, 2, 3), torch.tensor([0.0, 1.0, 0.25, 0.5]).view(1, 2, 2, 1)], dim=-1)
    composited = to_rgb(rgba)
    assert torch.allclose(composited[0, :, :, 0].flatten(), torch.tensor([1.0, 0.0, 0.75, 0.5]))  # black over white
    with pytest.raises(ValueError, match="reference_image: images with 2 channels"):
        to_rgb(torch.rand(1, 4, 4, 2))
    with pytest.raises(ValueError, match=r"expected an IMAGE batch \[B, H, W, C\]"):
        to_rgb(torch.rand(4, 4, 3))


def test_centre_crop_to_the_target_aspect_then_exact_size():
    wide = torch.zeros(1, 40, 80, 3)
    wide[:, :, 20:60] = 1.0  # a bright square in the middle of a wide image
    square = fit_to_size(wide, 16, 16)
    assert square.shape == (1, 16, 16, 3) and torch.allclose(square, torch.ones_like(square))
    tall = torch.rand(2, 90, 30, 3)
    fitted = fit_to_size(tall, 15, 15)
    assert fitted.shape == (2, 15, 15, 3)
    assert torch.allclose(fitted.mean(dim=(1, 2)), tall[:, 30:60].mean(dim=(1, 2)), atol=1e-5)  # centre crop, then 2x2 area means
    assert fit_to_size(torch.rand(1, 8, 8, 3), 32, 32).shape == (1, 32, 32, 3)  # enlarging works too
    same = torch.rand(1, 16, 24, 3)
    assert torch.equal(fit_to_size(same, 16, 24), same)
