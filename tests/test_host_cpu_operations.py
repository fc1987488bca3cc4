"""The pack's CPU layer classes inside the real ComfyUI: every network the loaders build uses them, they
compute what ComfyUI's own layers compute, and ComfyUI's on-the-fly weight patches still apply."""

from __future__ import annotations

import shutil

import pytest
import torch
from loaded_networks import loaded_networks
from op_trace import ONEDNN_LINEAR_OP, ops_run

pytestmark = pytest.mark.host


def layer_classes(module: torch.nn.Module) -> set[type]:
    return {type(layer) for layer in module.modules() if isinstance(layer, (torch.nn.Linear, torch.nn.Conv2d))}


def test_every_loaded_network_is_built_with_the_cpu_layers(tiny_dp3d):
    import comfy.ops

    from diffportrait3d.nodes.cpu.operations import with_cpu_matmul

    operations = with_cpu_matmul(comfy.ops.disable_weight_init)  # fp32 files on a CPU: no manual cast
    for name, network in loaded_networks(tiny_dp3d).items():
        assert layer_classes(network) <= {operations.Linear, operations.Conv2d}, name


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_networks_slice_their_transformers_on_cpu_only_with_cast_weights(comfy_host, dtype):
    """bf16/fp16 storage is the memory-saving choice: its networks run feed-forwards and cross-view blocks in
    token slices; float32 networks run them in one pass (faster on our test CPU)."""
    from comfy.ldm.modules.attention import FeedForward

    from diffportrait3d.bench.benchmark import build_random_models
    from diffportrait3d.kernels.cpu.view_blocks import SlicedViewTransformerBlock
    from diffportrait3d.kernels.model.cross_view_attention import ViewTransformerBlock
    from diffportrait3d.nodes.cpu.swaps import RowSlicedFeedForward

    models = build_random_models("tiny", dtype)
    sliced = dtype == "bf16"
    for network in (models.unet.model.diffusion_model, models.appearance.model, models.pose.control_model):
        kinds = {type(m) for m in network.modules() if isinstance(m, FeedForward)}
        assert kinds == ({RowSlicedFeedForward} if sliced else {FeedForward})
    blocks = [m for m in models.cross_view.model.modules() if isinstance(m, ViewTransformerBlock)]
    assert len(blocks) == 27
    assert {type(block) for block in blocks} == {SlicedViewTransformerBlock if sliced else ViewTransformerBlock}


def test_row_sliced_feed_forward_gives_the_same_numbers(tiny_dp3d, monkeypatch):
    from comfy.ldm.modules.attention import FeedForward

    from diffportrait3d.kernels.cpu.token_slices import SLICE_TOKENS as CPU_SLICE_TOKENS
    from diffportrait3d.nodes.cpu.swaps import RowSlicedFeedForward

    network = tiny_dp3d["unet"].model.diffusion_model
    feed_forward = next(m for m in network.modules() if isinstance(m, FeedForward))
    monkeypatch.setattr(feed_forward, "__class__", RowSlicedFeedForward)
    assert {k.split(".")[0] for k in feed_forward.state_dict()} == {"net"}  # the keys ComfyUI loads
    width = feed_forward.net[-1].out_features
    tokens = torch.randn(2, CPU_SLICE_TOKENS + 77, width, generator=torch.Generator().manual_seed(4))
    slices = []
    monkeypatch.setattr(feed_forward.net, "forward", lambda x: slices.append(x.shape[0]) or
                        torch.nn.Sequential.forward(feed_forward.net, x))
    with torch.inference_mode():
        sliced = feed_forward(tokens)
        slices_seen, slices[:] = list(slices), []
        whole = FeedForward.forward(feed_forward, tokens)
    assert slices_seen == [CPU_SLICE_TOKENS, CPU_SLICE_TOKENS, 2 * 77]
    torch.testing.assert_close(sliced, whole, rtol=1e-6, atol=1e-6)


def test_unet_with_cpu_layers_equals_comfyui_layers(tiny_dp3d, monkeypatch):
    from diffportrait3d.kernels.cpu.matmul import onednn_matmul_available
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


def test_gated_gelus_multiply_value_and_gate_apart_only_on_the_onednn_path(tiny_dp3d, monkeypatch):
    from comfy.ldm.modules.attention import GEGLU

    from diffportrait3d.kernels.cpu.view_blocks import HalvesGEGLUFeedForward
    from diffportrait3d.kernels.model.cross_view_attention import GEGLUFeedForward
    from diffportrait3d.nodes.cpu.swaps import HalvesGEGLU
    from diffportrait3d.nodes.model_loading import load_dp3d_unet

    networks = loaded_networks(tiny_dp3d)
    for name in ("unet", "appearance", "pose"):
        assert {type(m) for m in networks[name].modules() if isinstance(m, GEGLU)} == {HalvesGEGLU}, name
    feed_forwards = {type(m) for m in networks["cross_view"].modules() if isinstance(m, GEGLUFeedForward)}
    assert feed_forwards == {HalvesGEGLUFeedForward}
    gate = next(m for m in networks["unet"].modules() if isinstance(m, HalvesGEGLU))
    x = torch.randn(2, 9, gate.proj.in_features, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        value, gate_half = gate.proj.forward_halves(x)
        assert value.is_contiguous() and gate_half.is_contiguous()
        torch.testing.assert_close(torch.cat([value, gate_half], dim=-1), gate.proj(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(gate(x), GEGLU.forward(gate, x), rtol=1e-5, atol=1e-5)
        gate.proj.weight_function = [lambda weight: weight]  # ComfyUI casts and patches: one product as before
        try:
            assert gate.proj.forward_halves(x) is None
        finally:
            gate.proj.weight_function = []
    assert gate.proj.forward_halves(x.clone().requires_grad_(True)) is None  # autograd: PyTorch's layers

    monkeypatch.setenv("DIFFPORTRAIT3D_CPU_MATMUL", "pytorch")
    plain = load_dp3d_unet(tiny_dp3d["files"]["unet"]).model.diffusion_model
    assert {type(m) for m in plain.modules() if isinstance(m, GEGLU)} == {GEGLU}


def test_comfyui_weight_functions_still_apply(tiny_dp3d):
    """Low-VRAM loading and some patches change weights on the fly (``weight_function``): ComfyUI's cast
    applies them before the oneDNN product, so the patched weight is the one used."""
    layer = next(m for m in tiny_dp3d["unet"].model.diffusion_model.modules() if isinstance(m, torch.nn.Linear))
    x = torch.randn(5, layer.in_features, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        unpatched = layer(x)
        layer.weight_function = [lambda weight: 2 * weight]
        try:
            patched = layer(x)
            assert ONEDNN_LINEAR_OP in ops_run(lambda: layer(x))
        finally:
            layer.weight_function = []
        expected = torch.nn.functional.linear(x, 2 * layer.weight, layer.bias)
    torch.testing.assert_close(patched, expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(patched, unpatched)


def test_bf16_stored_linear_layers_cast_then_compute_on_onednn(comfy_host):
    """bf16/fp16 storage on a CPU: the weight cast to float32 (into the shared buffer), then the oneDNN
    product — the numbers of ComfyUI's own manual-cast layer, which uses PyTorch's product."""
    import comfy.ops

    from diffportrait3d.kernels.cpu.matmul import onednn_matmul_available
    from diffportrait3d.nodes.cpu.operations import with_cpu_matmul

    if not onednn_matmul_available():
        pytest.skip("this PyTorch build has no oneDNN linear op")
    generator = torch.Generator().manual_seed(2)
    weights = {"weight": torch.randn(48, 64, generator=generator).bfloat16(),
               "bias": torch.randn(48, generator=generator).bfloat16()}
    layers = {}
    for name, operations in ("comfy", comfy.ops.manual_cast), ("pack", with_cpu_matmul(comfy.ops.manual_cast)):
        layers[name] = operations.Linear(64, 48, dtype=torch.bfloat16)
        layers[name].load_state_dict(weights)
    x = torch.randn(2, 7, 64, generator=generator)
    with torch.inference_mode():
        expected, result = layers["comfy"](x), layers["pack"](x)
        assert ONEDNN_LINEAR_OP in ops_run(lambda: layers["pack"](x))
        assert ONEDNN_LINEAR_OP not in ops_run(lambda: layers["comfy"](x))
    assert result.dtype == torch.float32 and layers["pack"].weight.dtype == torch.bfloat16
    torch.testing.assert_close(result, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("size", [2, 8])  # the im2col product and PyTorch's convolution
def test_bf16_stored_convolutions_cast_into_the_shared_buffer(comfy_host, size, monkeypatch):
    import comfy.ops

    from diffportrait3d.kernels.cpu.cast_scratch import CastScratch
    from diffportrait3d.nodes.cpu import operations as cpu_operations

    monkeypatch.setattr(cpu_operations, "_CAST_SCRATCH", CastScratch())
    generator = torch.Generator().manual_seed(6)
    comfy_layer = comfy.ops.manual_cast.Conv2d(16, 24, 3, padding=1, dtype=torch.bfloat16)
    pack_layer = cpu_operations.with_cpu_matmul(comfy.ops.manual_cast).Conv2d(16, 24, 3, padding=1,
                                                                            dtype=torch.bfloat16)
    weights = {"weight": torch.randn(24, 16, 3, 3, generator=generator).bfloat16(),
               "bias": torch.randn(24, generator=generator).bfloat16()}
    comfy_layer.load_state_dict(weights)
    pack_layer.load_state_dict(weights)
    x = torch.randn(2, 16, size, size, generator=generator)
    with torch.inference_mode():
        expected, result = comfy_layer(x), pack_layer(x)
    assert cpu_operations._CAST_SCRATCH.buffer_bytes() == 24 * 16 * 9 * 4  # the weight went through it
    assert pack_layer.weight.dtype == torch.bfloat16
    torch.testing.assert_close(result, expected, rtol=1e-5, atol=1e-5)

    # A weight over the block limit is cast and applied 8 output channels at a time: same numbers, a buffer
    # of one block.
    monkeypatch.setattr(cpu_operations, "CAST_BLOCK_ELEMENTS", 10 * 16 * 9)
    monkeypatch.setattr(cpu_operations, "_CAST_SCRATCH", CastScratch())
    with torch.inference_mode():
        blocked = pack_layer(x)
    assert cpu_operations._CAST_SCRATCH.buffer_bytes() == 8 * 16 * 9 * 4
    assert blocked.shape == expected.shape and blocked.is_contiguous()
    torch.testing.assert_close(blocked, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                    reason="PyTorch's compiler (inductor) needs a C++ compiler on a CPU")
@pytest.mark.parametrize("storage", [torch.float32, torch.bfloat16])
def test_layers_compiled_by_torch_compile_compute_what_comfyuis_compute(comfy_host, storage, monkeypatch):
    """ComfyUI's TorchCompileModel compiles the UNet with inductor. Traced, the pack's layers are ComfyUI's: no
    oneDNN op (inductor cannot lower it for weights it has not frozen) and no shared cast buffer."""
    import comfy.ops

    from diffportrait3d.kernels.cpu.cast_scratch import CastScratch
    from diffportrait3d.nodes.cpu import operations as cpu_operations

    monkeypatch.setattr(cpu_operations, "_CAST_SCRATCH", CastScratch())
    base = comfy.ops.manual_cast if storage == torch.bfloat16 else comfy.ops.disable_weight_init
    generator = torch.Generator().manual_seed(9)
    layers = {}
    for name, operations in ("comfy", base), ("pack", cpu_operations.with_cpu_matmul(base)):
        linear = operations.Linear(16, 24, dtype=storage)
        conv = operations.Conv2d(24, 8, 3, padding=1, dtype=storage)  # 2x2 images: the im2col path eagerly
        layers[name] = torch.nn.ModuleDict({"linear": linear, "conv": conv})
    weights = {key: torch.randn(value.shape, generator=generator).to(storage)
               for key, value in layers["comfy"].state_dict().items()}
    for network in layers.values():
        network.load_state_dict(weights)
    x = torch.randn(2, 4, 16, generator=generator)

    def run(network):
        return network["conv"](network["linear"](x).transpose(1, 2).reshape(2, 24, 2, 2))

    torch._dynamo.reset()
    with torch.no_grad():
        expected = run(layers["comfy"])
        compiled = torch.compile(run, backend="inductor", fullgraph=True)(layers["pack"])
    assert cpu_operations._CAST_SCRATCH.buffer_bytes() == 0
    torch.testing.assert_close(compiled, expected, rtol=1e-5, atol=1e-5)


def test_output_channel_blocks_cover_the_channels_in_near_equal_blocks(comfy_host):
    from diffportrait3d.nodes.cpu.operations import CAST_BLOCK_ELEMENTS, output_channel_blocks

    def sizes(shape, limit=CAST_BLOCK_ELEMENTS):
        blocks = output_channel_blocks(torch.empty(shape, device="meta"), limit)
        covered = torch.zeros(shape[0], dtype=torch.int)
        for rows in blocks:
            covered[rows] += 1
        assert covered.eq(1).all(), blocks  # every channel once, in order
        return [len(range(shape[0])[rows]) for rows in blocks]

    assert output_channel_blocks(torch.empty(320, 320, 3, 3, device="meta"), CAST_BLOCK_ELEMENTS) == [slice(None)]
    assert sizes((1280, 2560, 3, 3)) == [320] * 4  # 29.5 M elements, 118 MB in float32
    assert sizes((1280, 1920, 3, 3)) == [427, 427, 426]
    assert sizes((1280, 1280, 3, 3)) == [640, 640]
    assert sizes((7, 10), limit=20) == [2, 2, 2, 1]
    assert sizes((3, 10), limit=1) == [1, 1, 1]  # never below one channel


def test_operations_with_their_own_cast_layer_keep_it(comfy_host):
    """A base whose Linear casts its own way (fp8, quantised weights) is left to that code."""
    import comfy.ops

    from diffportrait3d.nodes.cpu.operations import with_cpu_matmul

    class OwnCast(comfy.ops.manual_cast):
        class Linear(comfy.ops.manual_cast.Linear):
            def forward_comfy_cast_weights(self, input):
                return torch.full((*input.shape[:-1], self.out_features), 7.0)

    layer = with_cpu_matmul(OwnCast).Linear(4, 3, dtype=torch.bfloat16)
    layer.weight = torch.nn.Parameter(torch.ones(3, 4, dtype=torch.bfloat16), requires_grad=False)
    layer.bias = None
    with torch.inference_mode():
        assert torch.equal(layer(torch.ones(2, 4)), torch.full((2, 3), 7.0))


def test_unknown_cpu_matmul_setting_is_a_clear_error(comfy_host, monkeypatch):
    from diffportrait3d.nodes.model_loading import inference_setup_for

    monkeypatch.setenv("DIFFPORTRAIT3D_CPU_MATMUL", "mkl")
    with pytest.raises(ValueError, match=r"DIFFPORTRAIT3D_CPU_MATMUL must be one of \('onednn', 'pytorch'\)"):
        inference_setup_for(torch.float32)
