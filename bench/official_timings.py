"""Reading timings of the official DiffPortrait3D code: ``shared/reference/timings_full_cpu.json`` or a file
written by ``tests/bench_official.py`` on the machine at hand (same layout: a ``runs`` list with per-call
medians). The benchmark compares against one of these; a step of the official sampler is one conditional
plus one unconditional ``apply_model`` call.
"""

from __future__ import annotations

import json
from pathlib import Path

MIB = 2**20


class OfficialTimingsError(ValueError):
    pass


def _run_for(runs: list, views: int, latent: int, autocast: str) -> dict | None:
    for run in runs:
        if run.get("views") == views and run.get("latent") == f"{latent}x{latent}" and run.get("autocast") == autocast:
            return run
    return None


def _step_seconds(run: dict) -> float:
    return float(run["apply_model_cond_median_s"]) + float(run["apply_model_uc_median_s"])


def official_step_timings(path: Path | str, views: int, latent: int) -> dict:
    """Official seconds per guided step (cond + uc medians) for ``views`` views at latent ``latent`` x ``latent``:
    ``seconds_per_step_fp32``, ``seconds_per_step_bf16_autocast`` when the file has a bf16 run,
    ``peak_memory_bytes_fp32`` (peak RSS after the float32 run), ``flops_per_step_fp32`` when the run counted its
    work (``--flops``), ``machine`` and ``source``. Raises
    ``OfficialTimingsError`` naming the file when it is unreadable or has no float32 run of that size."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        runs = data["runs"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise OfficialTimingsError(
            f"{path}: not a timing file of the official code (write one with tests/bench_official.py --json --out FILE): "
            f"{error}"
        ) from error
    fp32 = _run_for(runs, views, latent, "none")
    if fp32 is None:
        raise OfficialTimingsError(
            f"{path}: no float32 run with {views} views at latent {latent}x{latent}; "
            f"rerun tests/bench_official.py with --views {views} --latent {latent}"
        )
    try:
        result = {"seconds_per_step_fp32": round(_step_seconds(fp32), 4)}
        bf16 = _run_for(runs, views, latent, "bf16")
        if bf16 is not None:
            result["seconds_per_step_bf16_autocast"] = round(_step_seconds(bf16), 4)
        if "peak_rss_mib_so_far" in fp32:
            result["peak_memory_bytes_fp32"] = int(float(fp32["peak_rss_mib_so_far"]) * MIB)
        if "flops_per_step" in fp32:
            result["flops_per_step_fp32"] = int(fp32["flops_per_step"])
    except (KeyError, TypeError, ValueError) as error:
        raise OfficialTimingsError(f"{path}: run without per-call medians ({error})") from error
    machine = data.get("machine")
    result["machine"] = machine.get("cpu", "") if isinstance(machine, dict) else str(machine or "")
    result["source"] = str(path)
    return result
