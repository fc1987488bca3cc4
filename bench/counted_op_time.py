"""Wall time a call spends inside its counted ops — matrix products, convolutions, attention, the ops whose
work ``flop_count`` counts — each op timed on its own. What the call takes beyond that is everything else:
element-wise work, copies, normalisations, Python.

The torch profiler answers the same question less well: in a profiled full-size CPU step the largest products
seemed to run at 200-210 GFLOP/s, and timed one by one they ran at 360-375.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from torch.utils._python_dispatch import TorchDispatchMode

from .flop_count import counted_ops


class CountedOpClock(TorchDispatchMode):
    """While active, adds the wall time of every counted op to ``seconds`` and counts them in ``ops``; other ops
    run untimed. ``synchronize`` (``torch.cuda.synchronize`` on a GPU) runs before and after each timed op, so
    that an asynchronous device's op is timed to its end; a CPU runs ops synchronously and needs none.
    ``clock`` reads seconds (default ``time.perf_counter``), once before and once after each timed op."""

    def __init__(self, synchronize: Callable[[], None] | None = None, clock: Callable[[], float] = time.perf_counter):
        super().__init__()
        self.seconds = 0.0
        self.ops = 0
        self._counted = counted_ops()
        self._synchronize = synchronize or (lambda: None)
        self._clock = clock

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if getattr(func, "overloadpacket", None) not in self._counted:
            return func(*args, **kwargs)
        self._synchronize()
        started = self._clock()
        out = func(*args, **kwargs)
        self._synchronize()
        self.seconds += self._clock() - started
        self.ops += 1
        return out


def counted_op_seconds(call: Callable[[], object], synchronize: Callable[[], None] | None = None) -> float:
    """Seconds ``call()`` spends inside its counted ops (see :class:`CountedOpClock`)."""
    clock = CountedOpClock(synchronize)
    with clock:
        call()
    return clock.seconds
