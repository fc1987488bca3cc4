"""Rerunnable benchmark: convert a full-size synthetic official checkpoint and measure time and memory.

    python tests/bench_convert.py --work /tmp/dp3d-bench [--keep]

Builds ``model_state-synthetic.th`` (every key and shape of the official manifest, float32, ~11.5 GB,
zip format like torch.save writes) unless it already exists, then runs ``python -m diffportrait3d convert``
in a child process and samples its /proc status: peak resident set (VmHWM), and the peaks of anonymous
memory (what the process really holds) and of file-backed pages (the memory-mapped checkpoint, page
cache the kernel can drop). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

FIXTURES = Path(__file__).parent / "fixtures"


def build_synthetic_checkpoint(path: Path) -> None:
    manifest = json.loads((FIXTURES / "official_checkpoint_manifest.json").read_text())
    # torch.empty pages are never touched before torch.save reads them, so building costs little RAM.
    state = {k: torch.empty(e["shape"]) for g in manifest["groups"].values() for k, e in g["keys"].items()}
    torch.save(state, path)


def read_status(pid: int) -> dict[str, int]:
    fields = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("VmHWM", "RssAnon", "RssFile"):
                fields[name] = int(value.split()[0]) * 1024
    except FileNotFoundError:
        pass
    return fields


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default="/tmp/dp3d-bench-convert")
    parser.add_argument("--dtype", default="fp16")
    parser.add_argument("--keep", action="store_true", help="keep the synthetic checkpoint and outputs")
    options = parser.parse_args()
    work = Path(options.work)
    work.mkdir(parents=True, exist_ok=True)
    source = work / "model_state-synthetic.th"
    if not source.exists():
        started = time.perf_counter()
        build_synthetic_checkpoint(source)
        print(f"built {source} ({source.stat().st_size / 2**30:.2f} GiB) in {time.perf_counter() - started:.0f} s",
              file=sys.stderr)
    out = work / "converted"
    command = [sys.executable, "-m", "diffportrait3d", "convert", str(source), "--out", str(out), "--dtype", options.dtype]
    started = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    peaks = {"VmHWM": 0, "RssAnon": 0, "RssFile": 0}
    while child.poll() is None:
        for name, value in read_status(child.pid).items():
            peaks[name] = max(peaks[name], value)
        time.sleep(0.1)
    seconds = time.perf_counter() - started
    summary = child.stdout.read()
    if child.returncode != 0:
        raise SystemExit(f"conversion failed ({child.returncode})")
    result = {
        "source_bytes": source.stat().st_size,
        "dtype": options.dtype,
        "seconds": round(seconds, 1),
        "peak_rss_bytes": peaks["VmHWM"],
        "peak_anonymous_bytes": peaks["RssAnon"],
        "peak_file_backed_bytes": peaks["RssFile"],
        "outputs": {p.name: p.stat().st_size for p in sorted(out.glob("*.safetensors"))},
    }
    print(summary, file=sys.stderr)
    print(json.dumps(result, indent=1))
    if not options.keep:
        for path in out.glob("*.safetensors"):
            path.unlink()
        source.unlink()


if __name__ == "__main__":
    main()
