"""Which PyTorch ops a call really ran, from the profiler: proof that a fast path was (or was not) taken."""

from __future__ import annotations

from torch.profiler import ProfilerActivity, profile

ONEDNN_LINEAR_OP = "mkldnn::_linear_pointwise"


def ops_run(call) -> set[str]:
    """Names of the ops ``call()`` ran on the CPU."""
    with profile(activities=[ProfilerActivity.CPU]) as recorded:
        call()
    return {event.key for event in recorded.key_averages()}
