"""The pack's CPU layer classes inside the real ComfyUI: every network the loaders build uses them, they
compute what ComfyUI's own layers compute, and ComfyUI's on-the-fly weight patches still apply."""

from __future__ import annotations

import pytest
import torch
from op_trace import ONEDNN_LINEAR_OP, ops_run

pytestmark = pytest.mark.host


def layer_classes(module: torch.nn.Module) -> set[type]:
    return {type(layer) for layer in module.modules() if isinstance(layer, (torch.nn.Linear, torch.nn.Conv2d))}


def test_every_loaded_network_is_built_with_the_cpu_layers(tiny_dp3d):
    import comfy.ops

    from diffportrait3d.nodes.cpu_operations import with_cpu_matmul

    operations = with_cpu_matmul(comfy.ops.disable_weight_init)  # fp32 files on a CPU: no manual cast
    networks = {
        "unet": tiny_dp3d["unet"].model.diffusion_model,
        "appearance": tiny_dp3d["appearance"].model,
        "cross_view": tiny_dp3d["cross_view"].model,
        "pose": tiny_dp3d["pose"].control_model,
    }
    for name, network in networks.items():
        assert layer_classes(network) <= {operations.Linear, operations.Conv2d}, name


def test_unet_with_cpu_layers_equals_comfyui_layers(tiny_dp3d, monkeypatch):
    from diffportrait3d.kernels.cpu_matmul import onednn_matmul_available
    from diffportrait3d.nodes.model_loading import load_dp3d_unet

    if not onednn_matmul_available():
        pytest.skip("this PyTorch build has no oneDNN linear op")
    monkeypatch.setenv("DIFFPORTRAIT3D_CPU_MATMUL", "pytorch")
    plain = load_dp3d_unet(tiny_dp3d["files"]["unet"]).model.diffusion_model
    fast = tiny_dp3d["unet"].model.diffusion_model
    assert not layer_classes(plain) & layer_classes(fast)
    context_width = plain.input_blocks[1][1].transformer_blocks[0].attn2.to_k.in_features
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, 8, 8, generator=generator)
    context = torch.randn(3, 77, context_width, generator=generator)
    timesteps = torch.tensor([10.0, 500.0, 999.0])
    with torch.inference_mode():
        expected = plain(x, timesteps, context)
        result = fast(x, timesteps, context)
        assert ONEDNN_LINEAR_OP in ops_run(lambda: fast(x, timesteps, context))
        assert ONEDNN_LINEAR_OP not in ops_run(lambda: plain(x, timesteps, context))
    torch.testing.assert_close(result, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())


def test_comfyui_weight_functions_still_apply(tiny_dp3d):
    """Low-VRAM loading and some patches change weights on the fly (``weight_function``); such layers go
    through ComfyUI's own cast path, so the patched weight is the one used."""
    layer = next(m for m in tiny_dp3d["unet"].model.diffusion_model.modules() if isinstance(m, torch.nn.Linear))
    x = torch.randn(5, layer.in_features, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        unpatched = layer(x)
        layer.weight_function = [lambda weight: 2 * weight]
        try:
            patched = layer(x)
        finally:
            layer.weight_function = []
        expected = torch.nn.functional.linear(x, 2 * layer.weight, layer.bias)
    torch.testing.assert_close(patched, expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(patched, unpatched)


def test_unknown_cpu_matmul_setting_is_a_clear_error(comfy_host, monkeypatch):
    from diffportrait3d.nodes.model_loading import inference_setup_for

    monkeypatch.setenv("DIFFPORTRAIT3D_CPU_MATMUL", "mkl")
    with pytest.raises(ValueError, match=r"DIFFPORTRAIT3D_CPU_MATMUL must be one of \('onednn', 'pytorch'\)"):
        inference_setup_for(torch.float32)
