"""How many CPU threads torch should use: physical cores this process may run on, unless told otherwise.

Hyper-threads share a core's vector units, so more threads than physical cores make float32 products slower.
"""

from __future__ import annotations

import os
from pathlib import Path


def physical_cores(cpuinfo: str | None = None) -> int:
    """Distinct (package, core) pairs among the CPUs this process may use (Linux ``/proc/cpuinfo``); the logical
    CPU count where that is not readable."""
    allowed = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            cpuinfo = ""
    cores = set()
    for block in cpuinfo.split("\n\n"):
        fields = dict(line.split(":", 1) for line in block.splitlines() if ":" in line)
        fields = {key.strip(): value.strip() for key, value in fields.items()}
        if "processor" not in fields or "core id" not in fields:
            continue
        if allowed is not None and int(fields["processor"]) not in allowed:
            continue
        cores.add((fields.get("physical id", "0"), fields["core id"]))
    if cores:
        return len(cores)
    return len(allowed) if allowed else (os.cpu_count() or 1)


def thread_count(requested: int | None = None) -> tuple[int, str]:
    """``(threads, why)``: ``--threads`` when given, else a valid ``$OMP_NUM_THREADS``, else the physical cores."""
    if requested is not None:
        if requested < 1:
            raise ValueError(f"--threads {requested}: must be at least 1")
        return requested, "--threads"
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) >= 1:
        return int(env), "OMP_NUM_THREADS"
    return physical_cores(), "physical cores"
