"""Float32 (and native bf16) linear layers and small-image convolutions on a CPU, computed by oneDNN's
matrix product.

PyTorch computes a float32 ``F.linear`` on a CPU with its BLAS (MKL in the x86 wheels). oneDNN's product
(``torch.ops.mkldnn._linear_pointwise``, the op PyTorch's own compiler emits for CPU linear layers) does
the same float32 arithmetic — no reduced-precision inputs — and on the reference 2-core AMD EPYC (Zen 4)
it runs the UNet's shapes 1.15-1.7x faster. A convolution whose output has only a few positions (the
UNet's 2x2 and 4x4 levels at small latents) is bound by PyTorch re-laying out its weights on every call;
written as an im2col matrix product it runs 2-4x faster there, and slower on larger images, hence the
size rule. Results equal PyTorch's to float32 rounding (a different summation order, as with any other
BLAS). bf16 tensors (the opt-in bf16 compute) take the same path on CPUs that multiply bf16 natively: the
products accumulate in float32 as PyTorch's do, without the bias copy of PyTorch's ``addmm``. Anything
else — other dtypes or devices, autograd, grouped or dilated convolutions — goes to PyTorch unchanged.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

# Output positions (height x width) up to which an im2col product beats PyTorch's convolution, per dtype
# (measured: float32 2x2 2.7-3.8x faster, 4x4 1.0-1.3x, 8x8 0.5-0.7x; bf16 2x2 2.6-7.7x, 4x4 0.7-1.1x).
SMALL_CONV_MAX_POSITIONS = {torch.float32: 16, torch.bfloat16: 4}
# On CPUs with AMX, whose bf16 tile products oneDNN's matrix product uses: bf16 4x4 2.5-5x faster (the UNet's
# 1280- to 2560-channel levels at a 16x16 latent), 8x8 0.4-1.3x (measured on a Xeon).
AMX_SMALL_CONV_MAX_POSITIONS = {torch.bfloat16: 16}


@functools.cache
def onednn_matmul_available() -> bool:
    """Whether this PyTorch has oneDNN and its linear op (x86 and Arm builds with mkldnn)."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        op = torch.ops.mkldnn._linear_pointwise
        rows, weight, bias = torch.ones(2, 3), torch.ones(4, 3), torch.zeros(4)
        return bool(torch.equal(op(rows, weight, bias, "none", [], ""), F.linear(rows, weight, bias)))
    except (AttributeError, RuntimeError):
        return False


def plain_cpu_tensor(tensor: torch.Tensor | None) -> bool:
    """None, or a dense CPU tensor or parameter that is no tensor subclass (quantised weights are)."""
    return tensor is None or (
        type(tensor) in (torch.Tensor, torch.nn.Parameter)
        and tensor.device.type == "cpu"
        and tensor.layout == torch.strided
    )


@functools.cache
def native_bf16_cpu() -> bool:
    """Whether this CPU multiplies bf16 natively (AVX512-BF16 or AMX on x86), as oneDNN reports it."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


@functools.cache
def amx_bf16_cpu() -> bool:
    """Whether this CPU has AMX bf16 tile products (Intel Xeon since Sapphire Rapids), as PyTorch reports it."""
    try:
        return bool(torch.cpu.get_capabilities().get("amx_bf16", False))
    except (AttributeError, RuntimeError):
        return False


def small_conv_max_positions(dtype: torch.dtype) -> int:
    """Output positions up to which :func:`conv2d` takes the im2col product for ``dtype`` on this CPU."""
    if amx_bf16_cpu() and dtype in AMX_SMALL_CONV_MAX_POSITIONS:
        return AMX_SMALL_CONV_MAX_POSITIONS[dtype]
    return SMALL_CONV_MAX_POSITIONS.get(dtype, 0)


def _onednn_dtype(dtype: torch.dtype) -> bool:
    return dtype == torch.float32 or (dtype == torch.bfloat16 and native_bf16_cpu())


def computes_on_onednn(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> bool:
    """True when ``linear(x, weight, bias)`` takes the oneDNN path: plain CPU tensors all float32 (or all bf16
    on a CPU with native bf16), a contiguous 2-D weight, at least one row, no autograd graph to record (the op
    has no backward), and no ``torch.compile`` tracing the call: PyTorch's compiler lowers this op only for
    weights it has frozen as constants, and makes its own CPU products from ``F.linear``."""
    needs_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, weight, bias))
    return (
        not needs_grad
        and not torch.compiler.is_compiling()
        and x.dim() >= 2
        and x.numel() > 0
        and weight.dim() == 2
        and weight.is_contiguous()
        and all(plain_cpu_tensor(t) and (t is None or t.dtype == x.dtype) for t in (x, weight, bias))
        and _onednn_dtype(x.dtype)
        and onednn_matmul_available()
    )


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear``: x [..., in], weight [out, in], bias [out] or None -> [..., out]."""
    if not computes_on_onednn(x, weight, bias):
        return F.linear(x, weight, bias)
    return onednn_linear(x, weight, bias)


def onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`linear` on oneDNN, for callers that have checked :func:`computes_on_onednn` themselves. An input
    broadcast along dim 0 (stride 0: one text context expanded to every view) is multiplied once, and the
    output is broadcast the same way (read-only, like the input)."""
    if x.dim() > 2 and x.shape[0] > 1 and x.stride(0) == 0:
        return onednn_linear(x[:1], weight, bias).expand(*x.shape[:-1], weight.shape[0])
    rows = x.reshape(-1, x.shape[-1])
    out = torch.ops.mkldnn._linear_pointwise(rows, weight, bias, "none", [], "")
    return out.view(*x.shape[:-1], weight.shape[0])


def _pair(value) -> tuple[int, int] | None:
    if isinstance(value, int):
        return value, value
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return int(value[0]), int(value[1])
    return None  # e.g. padding="same"


def conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, stride=1, padding=0,
           dilation=1, groups: int = 1) -> torch.Tensor:
    """``F.conv2d`` (zero padding): x [B, C, H, W], weight [O, C, kh, kw] -> [B, O, H', W']. Outputs of at
    most ``small_conv_max_positions(dtype)`` positions are computed as an im2col product on oneDNN."""
    stride2, padding2, dilation2 = _pair(stride), _pair(padding), _pair(dilation)
    if (
        torch.compiler.is_compiling()  # see computes_on_onednn; also keeps the CPU probes out of a traced graph
        or x.dim() != 4
        or weight.dim() != 4
        or groups != 1
        or dilation2 != (1, 1)
        or stride2 is None
        or padding2 is None
        or not weight.is_contiguous()
    ):
        return F.conv2d(x, weight, bias, stride, padding, dilation, groups)
    batch, _, height, width = x.shape
    out_channels, _, kernel_h, kernel_w = weight.shape
    out_h = (height + 2 * padding2[0] - kernel_h) // stride2[0] + 1
    out_w = (width + 2 * padding2[1] - kernel_w) // stride2[1] + 1
    columns_weight = weight.view(out_channels, -1)
    max_positions = small_conv_max_positions(x.dtype)
    if out_h < 1 or out_w < 1 or out_h * out_w > max_positions or not computes_on_onednn(
        x, columns_weight, bias
    ):
        return F.conv2d(x, weight, bias, stride, padding, dilation, groups)
    columns = F.unfold(x, (kernel_h, kernel_w), padding=padding2, stride=stride2)  # [B, C*kh*kw, H'*W']
    out = onednn_linear(columns.transpose(1, 2), columns_weight, bias)  # [B, H'*W', O]
    # A view would be valid here but channels-last strided, and the next convolution would pay for that.
    return out.transpose(1, 2).reshape(batch, out_channels, out_h, out_w).contiguous()
