"""Which views attend to each other in the cross-view modules, and how overlapping outputs blend.

A plan is plain data (index and weight tensors), built on the CPU; the attention code only gathers,
attends and scatters by it. Positions inside a window are its views' positional-encoding slots, so
a window's view order matters (a looped window that wraps lists ``n-2, n-1, 0, 1, ...``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import torch

BLENDS = ("flat", "pyramid")


@dataclass(frozen=True, eq=False)
class ViewWindows:
    """Groups of views that attend to each other, and how their outputs blend back per view.

    ``windows[w]``: LongTensor [f_w] of distinct view indices (f_w >= 1) in positional order.
    ``weights[w]``: float32 tensor [f_w], the blend weight of window ``w``'s output for each of its
    views. Invariant: for every view, the weights of all windows containing it sum to 1.
    Compared and hashed by identity, so a plan can key a cache.
    """

    windows: tuple[torch.Tensor, ...]
    weights: tuple[torch.Tensor, ...]
    n_views: int
    _batches: dict = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self):
        if len(self.windows) != len(self.weights) or not self.windows:
            raise ValueError("a ViewWindows plan needs one weight vector per window and >= 1 window")
        for window, weight in zip(self.windows, self.weights, strict=True):
            if window.ndim != 1 or window.shape != weight.shape or window.numel() == 0:
                raise ValueError("each window and its weights must be equal-length, non-empty 1-D tensors")

    @property
    def max_length(self) -> int:
        return max(int(window.numel()) for window in self.windows)

    @functools.cached_property
    def consecutive_length(self) -> int | None:
        """``f`` when the plan is the views cut in order into windows of ``f`` (``0..f-1, f..2f-1, ...``) with
        every weight exactly 1 — e.g. the official grouping of 8 — else None. Such a plan needs no gathering
        or blending: a window is a reshape of the views."""
        length = int(self.windows[0].numel())
        starts = range(0, self.n_views, length)
        if len(self.windows) != len(starts) or self.n_views % length:
            return None
        for start, window, weight in zip(starts, self.windows, self.weights, strict=True):
            if not torch.equal(window, torch.arange(start, start + length)) or not bool((weight == 1).all()):
                return None
        return length

    def batches(self, device: torch.device | str | None = None) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
        """Windows grouped by length: ``(indices [n_w, f], weights [n_w, f])`` per length, on ``device``
        (default: where the plan was built).

        Equal-length windows can share one attention call. Cached per device on the plan.
        """
        device = self.windows[0].device if device is None else torch.device(device)
        key = str(device)
        if key not in self._batches:
            by_length: dict[int, list[int]] = {}
            for w, window in enumerate(self.windows):
                by_length.setdefault(int(window.numel()), []).append(w)
            self._batches[key] = tuple(
                (
                    torch.stack([self.windows[w] for w in members]).to(device),
                    torch.stack([self.weights[w] for w in members]).to(device),
                )
                for members in by_length.values()
            )
        return self._batches[key]


def _check_common(n_views: int, size: int) -> None:
    if not isinstance(n_views, int) or n_views < 1:
        raise ValueError(f"n_views must be an integer >= 1, got {n_views!r}")
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"window_size must be >= 1, got {size!r}")


def _check_overlap_options(size: int, stride: int, blend: str) -> None:
    if not isinstance(stride, int) or not 1 <= stride <= size:
        raise ValueError(f"stride must be in 1..window_size ({size}), got {stride!r}")
    if blend not in BLENDS:
        raise ValueError(f"blend must be one of {BLENDS}, got {blend!r}")


def _raw_weights(length: int, blend: str) -> torch.Tensor:
    """Unnormalised weight per window position; pyramid: 1, 2, ..., peak, ..., 2, 1 (never 0)."""
    if blend == "flat":
        return torch.ones(length, dtype=torch.float64)
    position = torch.arange(length, dtype=torch.float64)
    return torch.minimum(position + 1, length - position)


def _plan(windows: list[torch.Tensor], n_views: int, blend: str) -> ViewWindows:
    """Normalise raw blend weights so every view's weights sum to 1 across its windows."""
    raw = [_raw_weights(len(window), blend) for window in windows]
    total = torch.zeros(n_views, dtype=torch.float64)
    for window, weight in zip(windows, raw, strict=True):
        total.index_add_(0, window, weight)
    if bool((total == 0).any()):
        missing = torch.nonzero(total == 0).flatten().tolist()
        raise AssertionError(f"views {missing} are in no window")  # a planner bug, not a user error
    weights = tuple((weight / total[window]).float() for window, weight in zip(windows, raw, strict=True))
    return ViewWindows(tuple(windows), weights, n_views)


def official_windows(n_views: int, size: int = 8) -> ViewWindows:
    """Consecutive, non-overlapping groups ``0..size-1, size..2*size-1, ...``; the last may be shorter.

    With ``size=8`` and a multiple of 8 views this is exactly the official grouping.
    """
    _check_common(n_views, size)
    windows = [torch.arange(start, min(start + size, n_views)) for start in range(0, n_views, size)]
    return _plan(windows, n_views, "flat")


def sliding_windows(n_views: int, size: int = 8, stride: int = 4, blend: str = "pyramid") -> ViewWindows:
    """Overlapping windows every ``stride`` views, the last one aligned to the end; never wraps.

    All windows have ``size`` views when ``n_views >= size``; otherwise one window of all views.
    """
    _check_common(n_views, size)
    _check_overlap_options(size, stride, blend)
    if n_views <= size:
        return _plan([torch.arange(n_views)], n_views, blend)
    starts = list(range(0, n_views - size + 1, stride))
    if starts[-1] != n_views - size:
        starts.append(n_views - size)
    return _plan([torch.arange(start, start + size) for start in starts], n_views, blend)


def looped_windows(n_views: int, size: int = 8, stride: int = 4, blend: str = "pyramid") -> ViewWindows:
    """Windows on a ring of views (view ``n-1`` neighbours view 0), each ``size`` long when ``n_views > size``.

    ``count = ceil(n_views / stride)`` windows start at ``floor(j * n_views / count) - size // 2``
    (mod ``n_views``): every ``stride`` views exactly when ``stride`` divides ``n_views`` (then the
    plan is invariant under cyclic shifts by multiples of ``stride``; with ``stride=1`` under every
    shift), otherwise as evenly as integers allow, never more than ``stride`` apart. The offset
    centres a window on the seam, so views ``n-1`` and 0 always share one, even when ``stride ==
    size``. ``n_views <= size``: one window of all views.
    """
    _check_common(n_views, size)
    _check_overlap_options(size, stride, blend)
    if n_views <= size:
        return _plan([torch.arange(n_views)], n_views, blend)
    count = -(-n_views // stride)
    starts = [(j * n_views // count - size // 2) % n_views for j in range(count)]
    return _plan([(start + torch.arange(size)) % n_views for start in starts], n_views, blend)


def _official_mode(n_views: int, size: int, stride: int, blend: str) -> ViewWindows:
    del stride, blend  # windows never overlap, so there is nothing to blend
    return official_windows(n_views, size)


WINDOW_MODES = {"official": _official_mode, "sliding": sliding_windows, "looped": looped_windows}


def plan_view_windows(
    mode: str, n_views: int, size: int = 8, stride: int = 4, blend: str = "pyramid"
) -> ViewWindows:
    """The window plan for ``mode`` (one of ``WINDOW_MODES``); ``stride``/``blend`` ignored by "official"."""
    if mode not in WINDOW_MODES:
        raise ValueError(f"window_mode must be one of {tuple(WINDOW_MODES)}, got {mode!r}")
    return WINDOW_MODES[mode](n_views, size, stride, blend)


def stacked_windows(plan: ViewWindows, copies: int) -> ViewWindows:
    """``copies`` independent copies of ``plan`` over consecutive blocks of ``plan.n_views`` rows (e.g. the
    cond and uncond chunks of one batch): copy ``c`` uses views ``c * n .. c * n + n - 1`` and never mixes
    with another copy, so one module call over the stack equals one call per block."""
    if copies < 1:
        raise ValueError(f"copies must be >= 1, got {copies!r}")
    if copies == 1:
        return plan
    n = plan.n_views
    windows = tuple(window + copy * n for copy in range(copies) for window in plan.windows)
    weights = tuple(weight for _ in range(copies) for weight in plan.weights)
    return ViewWindows(windows, weights, n * copies)
