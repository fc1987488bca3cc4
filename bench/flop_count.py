"""Floating-point work of a call: PyTorch's ``FlopCounterMode``, taught the two CPU ops it does not know.

PyTorch counts matrix products (``mm``, ``addmm``, ``bmm``, ``baddbmm``), convolutions and the GPU attention
kernels, at 2 operations per multiply-add; element-wise work is not counted. On a CPU the pack's layers
multiply with oneDNN's ``mkldnn::_linear_pointwise`` and PyTorch's SDPA runs
``aten::_scaled_dot_product_flash_attention_for_cpu``; neither is in PyTorch's table, so a count without
them would miss most of a step. Both are counted here the way PyTorch counts their GPU or BLAS twins.
"""

from __future__ import annotations

from collections.abc import Callable
from math import prod

import torch
from torch.utils.flop_counter import FlopCounterMode, flop_registry


def onednn_linear_flops(x_shape, weight_shape, *args, out_shape=None, **kwargs) -> int:
    """``_linear_pointwise`` (default overload): x [..., in] times weight [out, in]ᵀ, as PyTorch counts ``addmm``
    (the bias is not counted)."""
    out_features, in_features = weight_shape
    return 2 * prod(x_shape[:-1]) * in_features * out_features


def cpu_attention_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """SDPA on [..., L, E] queries, [..., S, E] keys, [..., S, Ev] values: QKᵀ and the product with V, as PyTorch
    counts its GPU attention kernels (the softmax is not counted)."""
    batch = prod(query_shape[:-2])
    queries, depth = query_shape[-2:]
    keys, value_depth = key_shape[-2], value_shape[-1]
    return 2 * batch * queries * keys * (depth + value_depth)


def cpu_op_flops() -> dict:
    """The ``custom_mapping`` for ``FlopCounterMode``: the CPU ops above that this PyTorch has."""
    mapping = {}
    for namespace, name, formula in (
        ("mkldnn", "_linear_pointwise", onednn_linear_flops),
        ("aten", "_scaled_dot_product_flash_attention_for_cpu", cpu_attention_flops),
    ):
        try:
            mapping[getattr(getattr(torch.ops, namespace), name)] = formula
        except (AttributeError, RuntimeError):  # a build without the op cannot run it either
            continue
    return mapping


def counted_ops() -> frozenset:
    """The ops (``OpOverloadPacket``) whose work :func:`count_flops` counts: PyTorch's table and the CPU ops above."""
    return frozenset(flop_registry) | frozenset(cpu_op_flops())


def count_flops(call: Callable[[], object]) -> int:
    """Floating-point operations ``call()`` performs in matrix products, convolutions and attention."""
    counter = FlopCounterMode(display=False, custom_mapping=cpu_op_flops())
    with counter:
        call()
    return counter.get_total_flops()
