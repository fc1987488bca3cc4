"""kernels/cpu/matmul: oneDNN float32 (and native bf16) products equal PyTorch's to their dtype's rounding,
are really taken, and every case they do not cover is PyTorch's own result."""

from __future__ import annotations

import shutil

import pytest
import torch
import torch.nn.functional as F
from op_trace import ONEDNN_LINEAR_OP, ops_run

from diffportrait3d.kernels.cpu import matmul as cpu_matmul

requires_onednn = pytest.mark.skipif(
    not cpu_matmul.onednn_matmul_available(), reason="this PyTorch build has no oneDNN linear op"
)
ONEDNN_DTYPES = [
    torch.float32,
    pytest.param(torch.bfloat16, marks=pytest.mark.skipif(
        not cpu_matmul.native_bf16_cpu(), reason="this CPU has no native bf16 products (AVX512-BF16 or AMX)"
    )),
]


def randn(*shape, seed=0, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def assert_as_accurate_as_pytorch(result, exact, pytorch_result):
    """``result`` is as close to the float64 ``exact`` value as PyTorch's own result in the same dtype (within
    4x: a different summation order, not a lower precision — for float32, bf16 inputs would be ~1000x off)."""
    assert result.dtype == pytorch_result.dtype
    own_error = (pytorch_result.double() - exact).abs().max().item()
    error = (result.double() - exact).abs().max().item()
    assert error <= 4 * own_error + 1e-6, (error, own_error)


@requires_onednn
@pytest.mark.parametrize("dtype", ONEDNN_DTYPES)
@pytest.mark.parametrize("shape", [(7, 96), (3, 50, 96), (2, 3, 4, 96)])
@pytest.mark.parametrize("with_bias", [True, False])
def test_linear_equals_pytorch_to_its_rounding_on_onednn(shape, with_bias, dtype):
    x, weight = randn(*shape, seed=1, dtype=dtype), randn(80, 96, seed=2, dtype=dtype)
    bias = randn(80, seed=3, dtype=dtype) if with_bias else None
    result = cpu_matmul.linear(x, weight, bias)
    assert result.shape == (*shape[:-1], 80) and result.is_contiguous()
    exact = F.linear(x.double(), weight.double(), None if bias is None else bias.double())
    assert_as_accurate_as_pytorch(result, exact, F.linear(x, weight, bias))
    assert ONEDNN_LINEAR_OP in ops_run(lambda: cpu_matmul.linear(x, weight, bias))


@requires_onednn
@pytest.mark.parametrize(
    "make_input",
    [lambda: randn(40, 6, 32, seed=4).transpose(0, 1), lambda: randn(32, 9, seed=4).t(), lambda: randn(9, 64, seed=4)[:, ::2]],
    ids=["transposed 3-D", "transposed 2-D", "every other column"],
)
def test_linear_accepts_non_contiguous_input(make_input):
    x = make_input()
    weight = randn(16, 32, seed=5)
    torch.testing.assert_close(cpu_matmul.linear(x, weight), F.linear(x, weight), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "case",
    ["float64", "float16", "vector input", "no rows", "strided weight", "autograd"],
)
def test_cases_outside_the_oneDNN_path_are_pytorch_exactly(case):
    x, weight, bias = randn(5, 12, seed=6), randn(8, 12, seed=7), randn(8, seed=8)
    if case == "float64":
        x, weight, bias = x.double(), weight.double(), bias.double()
    elif case == "float16":
        x, weight, bias = x.half(), weight.half(), bias.half()
    elif case == "vector input":
        x = x[0]
    elif case == "no rows":
        x = x[:0]
    elif case == "strided weight":
        weight = randn(12, 8, seed=7).t()
    elif case == "autograd":
        weight.requires_grad_(True)
    assert not cpu_matmul.computes_on_onednn(x, weight, bias)
    result = cpu_matmul.linear(x, weight, bias)
    assert torch.equal(result, F.linear(x, weight, bias))
    assert ONEDNN_LINEAR_OP not in ops_run(lambda: cpu_matmul.linear(x, weight, bias))
    if case == "autograd":
        result.sum().backward()
        assert weight.grad is not None


def test_mixed_dtypes_get_pytorchs_own_error():
    x, weight, bias = randn(5, 12, seed=6).bfloat16(), randn(8, 12, seed=7).bfloat16(), randn(8, seed=8)
    assert not cpu_matmul.computes_on_onednn(x, weight, bias)
    with pytest.raises(RuntimeError, match="same dtype"):
        cpu_matmul.linear(x, weight, bias)


@requires_onednn
@pytest.mark.parametrize(
    "size, kernel, stride, padding, with_bias",
    [(2, 3, 1, 1, True), (4, 3, 1, 1, False), (4, 3, 2, 1, True), (3, 1, 1, 0, True), (5, 3, (1, 2), (0, 1), True)],
)
def test_small_convolutions_equal_pytorch_as_im2col_products(size, kernel, stride, padding, with_bias):
    x, weight = randn(3, 24, size, size, seed=9), randn(20, 24, kernel, kernel, seed=10)
    bias = randn(20, seed=11) if with_bias else None
    expected = F.conv2d(x, weight, bias, stride, padding)
    result = cpu_matmul.conv2d(x, weight, bias, stride, padding)
    assert result.shape == expected.shape and result.is_contiguous()
    exact = F.conv2d(x.double(), weight.double(), None if bias is None else bias.double(), stride, padding)
    assert_as_accurate_as_pytorch(result, exact, expected)
    assert ONEDNN_LINEAR_OP in ops_run(lambda: cpu_matmul.conv2d(x, weight, bias, stride, padding))


@requires_onednn
@pytest.mark.parametrize("dtype", ONEDNN_DTYPES[1:])
@pytest.mark.parametrize("amx", [False, True], ids=["avx512-bf16", "amx"])
@pytest.mark.parametrize("size", [2, 3, 4, 5])
def test_bf16_convolutions_take_im2col_up_to_four_positions_or_sixteen_with_amx(size, amx, dtype, monkeypatch):
    monkeypatch.setattr(cpu_matmul, "amx_bf16_cpu", lambda: amx)
    im2col = size * size <= (16 if amx else 4)
    x, weight, bias = randn(2, 32, size, size, seed=15), randn(16, 32, 3, 3, seed=16), randn(16, seed=17)
    exact = F.conv2d(x.double(), weight.double(), bias.double(), 1, 1)
    x, weight, bias = x.to(dtype), weight.to(dtype), bias.to(dtype)
    result = cpu_matmul.conv2d(x, weight, bias, 1, 1)
    assert result.is_contiguous()
    assert_as_accurate_as_pytorch(result, exact, F.conv2d(x, weight, bias, 1, 1))
    assert (ONEDNN_LINEAR_OP in ops_run(lambda: cpu_matmul.conv2d(x, weight, bias, 1, 1))) == im2col


@pytest.mark.parametrize(
    "size, groups, dilation, padding",
    [(8, 1, 1, 1), (4, 2, 1, 1), (4, 1, 2, 2), (4, 1, 1, "same")],
    ids=["output over the size rule", "grouped", "dilated", "padding string"],
)
def test_other_convolutions_are_pytorch_exactly(size, groups, dilation, padding):
    x, weight, bias = randn(2, 8, size, size, seed=12), randn(6, 8 // groups, 3, 3, seed=13), randn(6, seed=14)
    expected = F.conv2d(x, weight, bias, 1, padding, dilation, groups)
    assert torch.equal(cpu_matmul.conv2d(x, weight, bias, 1, padding, dilation, groups), expected)
    assert ONEDNN_LINEAR_OP not in ops_run(lambda: cpu_matmul.conv2d(x, weight, bias, 1, padding, dilation, groups))


@requires_onednn
@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                    reason="PyTorch's compiler (inductor) needs a C++ compiler on a CPU")
def test_layers_under_torch_compile_leave_the_products_to_the_compiler():
    """ComfyUI's TorchCompileModel node compiles the UNet with inductor, which lowers oneDNN's linear op only for
    weights it froze as constants (it failed with a LoweringException on the pack's layers). Traced, the layers
    hand their products to PyTorch's ``F.linear``/``F.conv2d``, which the compiler makes its own products of."""
    x, weight, bias = randn(2, 5, 32), randn(24, 32, seed=1), randn(24, seed=2)
    image, kernel = randn(2, 8, 2, 2, seed=3), randn(6, 8, 3, 3, seed=4)  # a 2x2 output: the im2col path eagerly

    def layers(x, image):
        return cpu_matmul.linear(x, weight, bias), cpu_matmul.conv2d(image, kernel, padding=1)

    torch._dynamo.reset()
    with torch.no_grad():
        compiled = torch.compile(layers, backend="inductor", fullgraph=True)(x, image)
        eager = layers(x, image)
    assert ONEDNN_LINEAR_OP in ops_run(lambda: layers(x, image))  # eagerly the oneDNN path is still taken
    for result, expected in zip(compiled, eager, strict=True):
        torch.testing.assert_close(result, expected, rtol=1e-5, atol=1e-5)
