"""The official cross-view ("motion") modules: self-attention across views at every spatial position.

Submodule names mirror the official state dict (``temporal_transformer.…``), so converted weights
load with ``strict=True``. Which views attend together is a ``ViewWindows`` plan; only the two
attention steps mix views, everything else is per view.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable

import torch
from einops import rearrange
from torch import nn

from ..checkpoint.layout import CrossViewPlacement, cross_view_placements
from .gated_gelu import geglu
from .view_windows import ViewWindows

# attention(q, k, v, heads) -> out, all [..., T, heads * dim_head]: leading dims are batch, any strides
Attention = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int], torch.Tensor]

GROUP_NORM_GROUPS = 32
GROUP_NORM_EPS = 1e-6
LAYER_NORM_EPS = 1e-5
FF_MULT = 4


def short_sequence_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """Multi-head softmax attention (scale ``dim_head ** -0.5``) for the many very short sequences of
    attention across views: q, k, v and out [..., T, heads*dim_head], T = views per window, the leading dims
    (windows, spatial positions) a batch of independent sequences, in any memory layout.

    Two einsums and a softmax, the official module's maths. PyTorch turns each einsum into one batched
    product over the leading dims, so a caller's strided window view needs no rearranged copy first. For
    16 views of 640 channels at 16x16 on 2 CPU cores: 9-11 ms, against 26-40 ms for rearranged copies
    with per-head baddbmm/bmm and 11-15 ms for SDPA (fused kernels are overhead-bound at T ~ 8)."""
    q, k, v = (t.unflatten(-1, (heads, -1)) for t in (q, k, v))
    scores = torch.einsum("...the,...she->...hts", q, k) * q.shape[-1] ** -0.5
    return torch.einsum("...hts,...she->...the", scores.softmax(dim=-1), v).flatten(-2)


def sinusoid_table(length: int, channels: int) -> torch.Tensor:
    """[1, length, channels]: ``[p, 2i] = sin(p * 10000^(-2i/C))``, ``[p, 2i+1] = cos(...)``."""
    position = torch.arange(length, dtype=torch.float64)[:, None]
    frequency = torch.exp(torch.arange(0, channels, 2, dtype=torch.float64) * (-math.log(10000.0) / channels))
    table = torch.zeros(length, channels, dtype=torch.float64)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency)[:, : channels // 2]
    return table[None].float()


class PositionalTable(nn.Module):
    """Holds the persistent ``pe`` buffer [1, max_len, C]; initialised to the sinusoid, loaded from weights."""

    def __init__(self, channels: int, max_len: int, dtype=None, device=None):
        super().__init__()
        self.register_buffer("pe", sinusoid_table(max_len, channels).to(device=device, dtype=dtype))

    @property
    def max_len(self) -> int:
        return self.pe.shape[1]


class ViewSelfAttention(nn.Module):
    """One ``attention_blocks.{a}``: windowed multi-head self-attention across views, blended per view."""

    def __init__(self, channels: int, heads: int, max_len: int, operations=nn, dtype=None, device=None):
        super().__init__()
        if channels % heads:
            raise ValueError(f"channels ({channels}) must be divisible by heads ({heads})")
        self.heads = heads
        linear = operations.Linear
        self.to_q = linear(channels, channels, bias=False, dtype=dtype, device=device)
        self.to_k = linear(channels, channels, bias=False, dtype=dtype, device=device)
        self.to_v = linear(channels, channels, bias=False, dtype=dtype, device=device)
        self.to_out = nn.ModuleList([linear(channels, channels, dtype=dtype, device=device)])
        self.pos_encoder = PositionalTable(channels, max_len, dtype=dtype, device=device)

    def attend(self, y: torch.Tensor, attention: Attention) -> torch.Tensor:
        """y [N, f, C] (one window's views per row, positional encoding added) -> [N, f, C]."""
        out = attention(self.to_q(y), self.to_k(y), self.to_v(y), self.heads)
        return self.to_out[0](out)

    def attend_consecutive(self, y: torch.Tensor, length: int, attention: Attention) -> torch.Tensor:
        """``forward`` for views cut in order into windows of ``length`` with weight 1: the projections run on
        the views as they lie, and only the attention sees them grouped by window."""
        y = y + self.pos_encoder.pe[0, :length].to(y).repeat(y.shape[0] // length, 1)[:, None]
        # [w, d, f, c] views of the projections: no copy before the attention reads them
        q, k, v = (
            rearrange(projection(y), "(w f) d c -> w d f c", f=length)
            for projection in (self.to_q, self.to_k, self.to_v)
        )
        out = attention(q, k, v, self.heads)
        return self.to_out[0](rearrange(out, "w d f c -> (w f) d c"))

    def forward(self, y: torch.Tensor, windows: ViewWindows, attention: Attention) -> torch.Tensor:
        """y [V, D, C] (views, spatial positions, channels), normalised -> blended attention output, same shape."""
        if windows.max_length > self.pos_encoder.max_len:
            raise ValueError(
                f"window of {windows.max_length} views exceeds the positional table "
                f"(max_len {self.pos_encoder.max_len})"
            )
        length = windows.consecutive_length
        if length is not None:
            return self.attend_consecutive(y, length, attention)
        out = y.new_zeros(y.shape)
        for indices, weights in windows.batches(y.device):
            count, length = indices.shape
            gathered = y[indices] + self.pos_encoder.pe[0, :length, None].to(y)  # [w, f, D, C]
            attended = self.attend(rearrange(gathered, "w f d c -> (w d) f c"), attention)
            attended = rearrange(attended, "(w d) f c -> w f d c", w=count) * weights[..., None, None].to(y)
            # Weight 1 added into zeros is exact, so non-overlapping windows give the plain grouped result.
            out.index_add_(0, indices.flatten(), rearrange(attended, "w f d c -> (w f) d c"))
        return out


class GEGLUFeedForward(nn.Module):
    """``ff``: ``net.0.proj`` C -> 2*4C, value * gelu(gate) (exact erf GELU), ``net.2`` 4C -> C."""

    def __init__(self, channels: int, operations=nn, dtype=None, device=None):
        super().__init__()
        inner = FF_MULT * channels
        gate = nn.Module()
        gate.proj = operations.Linear(channels, 2 * inner, dtype=dtype, device=device)
        # net.1 is the official (inactive) dropout; kept so the indices of net.0/net.2 match.
        self.net = nn.ModuleList(
            [gate, nn.Identity(), operations.Linear(inner, channels, dtype=dtype, device=device)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., C] -> [..., C]."""
        return self.net[2](geglu(self.net[0].proj, x))


class ViewTransformerBlock(nn.Module):
    """``transformer_blocks.0``: two pre-norm windowed view attentions, then a pre-norm GEGLU feed-forward.
    Nothing in the block mixes spatial positions."""

    def __init__(self, channels: int, heads: int, max_len: int, operations=nn, dtype=None, device=None):
        super().__init__()
        kwargs = {"dtype": dtype, "device": device}
        self.attention_blocks = nn.ModuleList(
            [ViewSelfAttention(channels, heads, max_len, operations, **kwargs) for _ in range(2)]
        )
        self.norms = nn.ModuleList(
            [operations.LayerNorm(channels, eps=LAYER_NORM_EPS, **kwargs) for _ in range(2)]
        )
        self.ff = GEGLUFeedForward(channels, operations, **kwargs)
        self.ff_norm = operations.LayerNorm(channels, eps=LAYER_NORM_EPS, **kwargs)

    def forward(self, h: torch.Tensor, windows: ViewWindows, attention: Attention) -> torch.Tensor:
        """h [V, D, C] -> [V, D, C]."""
        for attend, norm in zip(self.attention_blocks, self.norms, strict=True):
            h = attend(norm(h), windows, attention) + h
        return self.ff(self.ff_norm(h)) + h


class ViewTransformer(nn.Module):
    """``temporal_transformer``: GroupNorm, ``proj_in``, one transformer block, ``proj_out``, residual."""

    def __init__(self, channels: int, heads: int, max_len: int, operations=nn, dtype=None, device=None):
        super().__init__()
        kwargs = {"dtype": dtype, "device": device}
        self.norm = operations.GroupNorm(
            GROUP_NORM_GROUPS, channels, eps=GROUP_NORM_EPS, affine=True, **kwargs
        )
        self.proj_in = operations.Linear(channels, channels, **kwargs)
        self.transformer_blocks = nn.ModuleList(
            [ViewTransformerBlock(channels, heads, max_len, operations, **kwargs)]
        )
        self.proj_out = operations.Linear(channels, channels, **kwargs)

    def forward(self, x: torch.Tensor, windows: ViewWindows, attention: Attention) -> torch.Tensor:
        height, width = x.shape[-2:]
        h = self.proj_in(rearrange(self.norm(x), "v c y x -> v (y x) c"))
        for block in self.transformer_blocks:
            h = block(h, windows, attention)
        # x first: the sum takes x's contiguous layout, not the channels-last strides of the rearranged
        # output, which would make every following convolution re-lay out its weights.
        return x + rearrange(self.proj_out(h), "v (y x) c -> v c y x", y=height, x=width)


class CrossViewModule(nn.Module):
    """One official cross-view (motion) module: attention across views per spatial position."""

    def __init__(
        self, channels: int, heads: int, max_len: int = 32, operations=torch.nn, dtype=None, device=None
    ):
        super().__init__()
        self.temporal_transformer = ViewTransformer(channels, heads, max_len, operations, dtype, device)

    def forward(
        self, x: torch.Tensor, windows: ViewWindows, attention: Attention | None = None
    ) -> torch.Tensor:
        """x [B, C, H, W] with B == windows.n_views -> same shape. ``attention(q, k, v, heads) -> out``
        with q,k,v,out as [..., T, heads*dim_head]; default: ``short_sequence_attention``."""
        if x.ndim != 4 or x.shape[0] != windows.n_views:
            raise ValueError(f"expected x [n_views={windows.n_views}, C, H, W], got {tuple(x.shape)}")
        return self.temporal_transformer(x, windows, attention or short_sequence_attention)


# ----------------------------------------------------------------------------------- module set

_KEY_PREFIX = re.compile(r"^(input_blocks|middle_block|output_blocks)_motion_module\.(\d+)(?:\.(\d+))?$")
_LOCATION_ORDER = {"input": 0, "middle": 1, "output": 2}


def _as_placement(place: dict | CrossViewPlacement) -> CrossViewPlacement:
    return place if isinstance(place, CrossViewPlacement) else CrossViewPlacement(**place)


def _dense(indices: Iterable[int], what: str) -> int:
    indices = sorted(indices)
    if indices != list(range(len(indices))):
        raise ValueError(f"{what} indices must be 0..n-1 without gaps, got {indices}")
    return len(indices)


class CrossViewModuleSet(nn.Module):
    """All cross-view modules of one UNet, laid out so the converted file's keys load with strict=True:
    input_blocks_motion_module[i][0], middle_block_motion_module[0], output_blocks_motion_module[j][k]."""

    def __init__(
        self,
        placements: list[dict | CrossViewPlacement],
        heads: int,
        max_len: int = 32,
        operations=torch.nn,
        dtype=None,
        device=None,
    ):
        super().__init__()
        places = [_as_placement(place) for place in placements]
        # (list name, outer index) -> {inner index: placement}
        slots: dict[tuple[str, int], dict[int, CrossViewPlacement]] = {}
        self._where: dict[tuple[str, int, int], tuple[str, int, int]] = {}
        for place in places:
            match = _KEY_PREFIX.match(place.key_prefix)
            if match is None:
                raise ValueError(f"unexpected cross-view module prefix {place.key_prefix!r}")
            group, outer, inner = match.groups()
            name = f"{group}_motion_module"
            # middle_block_motion_module.0 is the only prefix with a single index: [0] of one list.
            outer, inner = (0, int(outer)) if inner is None else (int(outer), int(inner))
            slot = slots.setdefault((name, outer), {})
            key = (place.location, place.block_index, place.order)
            if inner in slot or key in self._where:
                raise ValueError(f"duplicate cross-view placement {place.key_prefix!r}")
            slot[inner] = place
            self._where[key] = (name, outer, inner)
        self._placements = sorted(places, key=lambda p: (_LOCATION_ORDER[p.location], p.block_index, p.order))

        def build(place: CrossViewPlacement) -> CrossViewModule:
            return CrossViewModule(place.channels, heads, max_len, operations, dtype, device)

        for name in (
            "input_blocks_motion_module",
            "middle_block_motion_module",
            "output_blocks_motion_module",
        ):
            outers = {outer: slot for (group, outer), slot in slots.items() if group == name}
            if not outers:
                continue
            _dense(outers, name)
            if name == "middle_block_motion_module":
                modules = nn.ModuleList([build(outers[0][i]) for i in range(_dense(outers[0], name))])
            else:
                modules = nn.ModuleList(
                    nn.ModuleList([build(outers[o][i]) for i in range(_dense(outers[o], f"{name}.{o}"))])
                    for o in range(len(outers))
                )
            self.add_module(name, modules)

    @classmethod
    def from_unet_params(cls, unet_params: dict, operations=torch.nn, dtype=None, device=None):
        """Built from an official ``unet_config.params`` (heads and max_len from ``motion_module_kwargs``)."""
        settings = unet_params["unet_additional_kwargs"]["motion_module_kwargs"]
        if (
            settings.get("num_transformer_block", 1) != 1
            or settings.get("temporal_attention_dim_div", 1) != 1
        ):
            raise ValueError(
                "only one transformer block per module and temporal_attention_dim_div 1 are supported"
            )
        return cls(
            cross_view_placements(unet_params),
            heads=settings.get("num_attention_heads", 8),
            max_len=settings.get("temporal_position_encoding_max_len", 24),
            operations=operations,
            dtype=dtype,
            device=device,
        )

    def module_at(self, location: str, block_index: int, order: int = 0) -> CrossViewModule:
        try:
            name, outer, inner = self._where[(location, block_index, order)]
        except KeyError:
            raise KeyError(f"no cross-view module at {location} block {block_index} order {order}") from None
        modules = getattr(self, name)
        return modules[inner] if name == "middle_block_motion_module" else modules[outer][inner]

    def placements(self) -> list[CrossViewPlacement]:
        """In execution order: input blocks, middle, output blocks (order 0 then 1)."""
        return list(self._placements)
