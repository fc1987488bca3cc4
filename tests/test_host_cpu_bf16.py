"""The opt-in bf16 compute on a CPU ($DIFFPORTRAIT3D_CPU_COMPUTE=bf16) inside the real ComfyUI: the loaders
build every network stored and computed in bf16, and guided sampling stays within bf16 rounding of the
official float32 outputs of the tiny reference model."""

from __future__ import annotations

import pytest
import torch
from loaded_networks import loaded_networks
from op_trace import ONEDNN_LINEAR_OP, ops_run
from safetensors.torch import load_file
from test_host_parity import APPLY_FILES, DDIM_FILES, guided_ddim, one_call_eps

from diffportrait3d.kernels.cpu import matmul as cpu_matmul

pytestmark = pytest.mark.host

# bf16 keeps 8 significant bits (rounding 2**-9 ~ 2e-3 relative per value); through the tiny model's layers
# and a few DDIM steps that compounds to about 1e-2. A network left in float32 or fed mismatched dtypes
# would either not be bf16 (checked below) or be off by the size of the signal.
BF16_RELATIVE_RMS = 3e-2


def relative_rms(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual.double() - expected.double()).norm() / expected.double().norm()).item()


@pytest.fixture(scope="module")
def bf16_tiny(tiny_dp3d_factory):
    """The tiny reference model loaded by the pack's loaders with $DIFFPORTRAIT3D_CPU_COMPUTE=bf16."""
    from diffportrait3d.nodes.model_loading import (
        load_appearance_net,
        load_cross_view_modules,
        load_dp3d_unet,
        load_pose_controlnet,
    )

    files = tiny_dp3d_factory(APPLY_FILES[0].parent)["files"]
    with pytest.MonkeyPatch.context() as environment:
        environment.setenv("DIFFPORTRAIT3D_CPU_COMPUTE", "bf16")
        return {
            "unet": load_dp3d_unet(files["unet"]),
            "appearance": load_appearance_net(files["appearance"]),
            "cross_view": load_cross_view_modules(files["cross_view"]),
            "pose": load_pose_controlnet(files["pose_controlnet"]),
        }


def test_setup_stores_and_computes_in_bf16_only_when_asked(comfy_host, monkeypatch):
    from diffportrait3d.nodes.model_loading import inference_setup_for

    setup = inference_setup_for(torch.float32, cpu_compute="bf16")
    assert (setup.dtype, setup.manual_cast_dtype) == (torch.bfloat16, None)
    assert not setup.operations.Linear.comfy_cast_weights  # no per-layer cast to float32

    setup = inference_setup_for(torch.float32, storage_dtype=torch.bfloat16)
    assert (setup.dtype, setup.manual_cast_dtype) == (torch.bfloat16, torch.float32)  # ComfyUI's own choice on a CPU

    monkeypatch.setenv("DIFFPORTRAIT3D_CPU_COMPUTE", "fp16")
    with pytest.raises(ValueError, match=r"DIFFPORTRAIT3D_CPU_COMPUTE must be one of \('float32', 'bf16'\)"):
        inference_setup_for(torch.float32)


def test_every_loaded_network_is_bf16(bf16_tiny):
    for name, network in loaded_networks(bf16_tiny).items():
        assert {p.dtype for p in network.parameters()} == {torch.bfloat16}, name
    assert bf16_tiny["unet"].model.get_dtype() == torch.bfloat16
    assert bf16_tiny["unet"].model.manual_cast_dtype is None


@pytest.mark.skipif(not cpu_matmul.native_bf16_cpu(), reason="this CPU has no native bf16 products")
def test_bf16_layers_multiply_on_onednn(bf16_tiny):
    network = bf16_tiny["unet"].model.diffusion_model
    layer = next(m for m in network.modules() if isinstance(m, torch.nn.Linear))
    x = torch.randn(3, layer.in_features, dtype=torch.bfloat16)
    with torch.inference_mode():
        assert layer(x).dtype == torch.bfloat16
        assert ONEDNN_LINEAR_OP in ops_run(lambda: layer(x))


@pytest.mark.parametrize("golden_file", APPLY_FILES, ids=lambda p: p.stem)
def test_bf16_eps_stays_within_bf16_rounding_of_official(bf16_tiny, golden_file):
    golden = load_file(golden_file)
    eps_cond, eps_uc = one_call_eps(bf16_tiny, golden)
    cond_error, uncond_error = relative_rms(eps_cond, golden["eps_cond"]), relative_rms(eps_uc, golden["eps_uc"])
    print(f"bf16 {golden_file.name}: eps_cond relative rms {cond_error:.2e}, eps_uc {uncond_error:.2e}")
    assert cond_error <= BF16_RELATIVE_RMS
    assert uncond_error <= BF16_RELATIVE_RMS


@pytest.mark.parametrize("golden_file", DDIM_FILES, ids=lambda p: p.stem)
def test_bf16_ddim_stays_within_bf16_rounding_of_official(bf16_tiny, golden_file):
    golden = load_file(golden_file)
    samples = guided_ddim(bf16_tiny, golden)
    error = relative_rms(samples, golden["samples"])
    print(f"bf16 {golden_file.name}: final latents relative rms {error:.2e}, "
          f"max|diff| {(samples - golden['samples']).abs().max().item():.2e}")
    assert samples.dtype == torch.float32
    assert error <= BF16_RELATIVE_RMS


def test_bf16_without_native_support_is_allowed_with_a_warning(comfy_host, monkeypatch, caplog):
    from diffportrait3d.nodes.cpu import operations as cpu_operations

    monkeypatch.setattr(cpu_matmul, "native_bf16_cpu", lambda: False)
    cpu_operations._warn_emulated_bf16.cache_clear()
    with caplog.at_level("WARNING"):
        assert cpu_operations.cpu_compute_dtype("bf16") == torch.bfloat16
    assert "without native bf16 products (AVX512-BF16 or AMX) is slower than float32" in caplog.text
    assert "DIFFPORTRAIT3D_CPU_COMPUTE" in caplog.text
    cpu_operations._warn_emulated_bf16.cache_clear()
