"""``python -m diffportrait3d doctor``: is everything the official workflow needs here, and what to do if not.

It looks for ComfyUI (saying where it looked), for the model files the official workflow loads (reading each
file's safetensors header only: component, architecture, dtype, the pack version that converted it), at the
device, the dtype ComfyUI would compute in there, and an estimated memory need for 8 views at 512x512. Every
problem comes with its fix. Nothing is loaded, started or downloaded.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .comfy_host import PACK_ROOT, comfyui_candidates, looks_like_comfyui

CONVERTED_FOLDERS = ("diffportrait3d", "text_encoders")  # folders the pack's converter writes for
# Modules ComfyUI imports when it starts (from its requirements.txt), looked up without importing them.
COMFYUI_MODULES = ("yaml", "aiohttp", "torchsde", "torchvision", "einops", "transformers", "safetensors", "PIL",
                   "scipy", "av", "psutil", "sqlalchemy", "alembic", "comfy_kitchen")


@dataclass
class Report:
    lines: list[str] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)  # (what is wrong, the fix)
    needs_checkpoint: bool = False  # a fix converts the official checkpoint: say once where it comes from
    convert_folder: str = "ComfyUI/models/diffportrait3d"

    def say(self, text: str = "") -> None:
        self.lines.append(text)

    def problem(self, what: str, fix: str) -> None:
        self.problems.append((what, fix))


def comfyui_version(folder: Path) -> str:
    for line in (folder / "comfyui_version.py").read_text(encoding="utf-8", errors="replace").splitlines() \
            if (folder / "comfyui_version.py").is_file() else []:
        if line.startswith("__version__"):
            return line.split("=", 1)[1].strip().strip("\"'")
    return "of unknown version"


def find_host(report: Report) -> Path | None:
    """The first ComfyUI of the usual places, each place reported with what is there."""
    report.say("ComfyUI (looked in this order):")
    host = None
    if not os.environ.get("COMFYUI_PATH"):
        report.say("  COMFYUI_PATH: not set")
    for label, folder in comfyui_candidates(PACK_ROOT):
        if looks_like_comfyui(folder):
            found = f"ComfyUI {comfyui_version(folder)}"
            if host is None:
                host = folder.resolve()
                found += "  <- used"
        else:
            found = "no folder" if not folder.exists() else "not a ComfyUI (no comfy/model_patcher.py and nodes.py)"
        report.say(f"  {label}: {folder}: {found}")
    if host is not None:
        import importlib.util

        absent = [name for name in COMFYUI_MODULES if importlib.util.find_spec(name) is None]
        if absent:
            report.say(f"  missing Python modules ComfyUI needs: {', '.join(absent)}")
            report.problem(
                f"ComfyUI's Python needs are not installed in {sys.prefix} ({', '.join(absent)})",
                f"bash .ci/setup-comfyui.sh {host}  (from a clone of this pack; it keeps your torch: README, "
                "'Install into ComfyUI')",
            )
    if host is None:
        report.problem(
            "no ComfyUI found",
            "set COMFYUI_PATH to your ComfyUI folder, or put this pack in ComfyUI/custom_nodes/; to get one: "
            "git clone https://github.com/comfyanonymous/ComfyUI ~/comfy/ComfyUI, then install its Python needs "
            "(README, 'Install into ComfyUI')",
        )
    return host


def model_folders(host: Path | None, roots: list[Path], extra_configs: list[Path]) -> dict[str, list[Path]]:
    """Folders searched per model folder name, in ComfyUI's order: ``--models`` roots first, then the host's
    own folders (with its extra_model_paths.yaml and ``--extra-model-paths-config`` files)."""
    folders: dict[str, list[Path]] = {}
    if host is not None:
        if str(host) not in sys.path:
            sys.path.insert(0, str(host))
        try:
            import folder_paths  # light: no torch, no model code
            from utils.extra_config import load_extra_path_config
        except ImportError:  # its Python needs are missing (reported above): its default folders only
            folders = {name: [host / "models" / name] for name in CONVERTED_FOLDERS}
            host = None
    if host is not None:
        if "diffportrait3d" not in folder_paths.folder_names_and_paths:  # what the pack registers when loaded
            folder_paths.folder_names_and_paths["diffportrait3d"] = (
                [os.path.join(folder_paths.models_dir, "diffportrait3d")], {".safetensors"})
        for config in ([host / "extra_model_paths.yaml"] if (host / "extra_model_paths.yaml").is_file() else []) \
                + extra_configs:
            load_extra_path_config(str(config))
        folders = {name: [Path(p) for p in folder_paths.get_folder_paths(name)] for name in CONVERTED_FOLDERS}
        folders.setdefault("loras", [Path(p) for p in folder_paths.get_folder_paths("loras")])
    for root in reversed(roots):
        for name in set(folders) | set(CONVERTED_FOLDERS):
            folders[name] = [root / name] + folders.get(name, [])
    return folders


def describe_architecture(component: str, record: dict) -> str:
    """``official`` or ``tiny`` when the record is one of the shipped architectures, else its main sizes."""
    from ..kernels.checkpoint.convert import (
        OFFICIAL_CONFIG_PATH,
        TINY_CONFIG_PATH,
        component_architectures,
        load_architecture,
    )

    for label, path in (("official", OFFICIAL_CONFIG_PATH), ("tiny (random test weights)", TINY_CONFIG_PATH)):
        if component_architectures(load_architecture(path)).get(component) == record:
            return f"{label} architecture"
    sizes = {k: record[k] for k in ("model_channels", "channel_mult", "num_heads", "context_dim") if k in record}
    return f"other architecture ({json.dumps(sizes, sort_keys=True)})" if sizes else "other architecture"


def check_file(report: Report, filename: str, folder: str, searched: list[Path]) -> None:
    """One model file: found where, and what its header says; a problem with its fix when absent or unusable."""
    from ..kernels.checkpoint.components import COMPONENT_FILES
    from ..kernels.checkpoint.official_release import convert_command
    from ..kernels.checkpoint.safetensors_header import BrokenSafetensors, read_header

    component = {name: key for key, name in COMPONENT_FILES.items()}.get(filename)
    target = searched[0] if searched else Path("ComfyUI/models") / folder
    remake = convert_command(str(target), component) if component else f"put your {filename} into {target}"

    def fail(label: str, detail: str, what: str, fix: str) -> None:
        report.say(f"  {label:8} {filename}  {detail}")
        report.problem(what, fix)
        report.needs_checkpoint = report.needs_checkpoint or component is not None

    path = next((base / filename for base in searched if (base / filename).is_file()), None)
    if path is None:
        fail("MISSING", f"(folder '{folder}')",
             f"{filename} is missing (searched: {', '.join(map(str, searched)) or 'nothing'})", remake)
        return
    try:
        header = read_header(path)
    except (BrokenSafetensors, OSError) as error:
        fail("BROKEN", f"{path}: {error}", f"{path} is broken: {error}", f"delete it, then: {remake}")
        return
    meta = header.metadata
    size = f"{header.file_bytes / 2**20:,.0f} MiB, {header.elements / 1e6:,.1f} M values"
    if component is None or "dp3d.component" not in meta:
        if component is None or component == "text_encoder":  # any SD1.5 CLIP-L serves as the text encoder
            report.say(f"  ok       {filename}  {path}  ({size}; not converted by this pack)")
        else:
            fail("UNUSABLE", f"{path}: no DiffPortrait3D metadata",
                 f"{path} has no DiffPortrait3D metadata (not made by the converter)", f"replace it: {remake}")
        return
    if meta["dp3d.component"] != component:
        fail("WRONG", f"{path}: holds the '{meta['dp3d.component']}' component",
             f"{path} holds the '{meta['dp3d.component']}' component, not '{component}'", f"replace it: {remake}")
        return
    try:
        architecture = describe_architecture(component, json.loads(meta.get("dp3d.architecture", "")))
    except json.JSONDecodeError:
        fail("BROKEN", f"{path}: no readable dp3d.architecture record",
             f"{path} has no readable architecture record", f"delete it, then: {remake}")
        return
    version = meta.get("dp3d.pack_version")
    made_by = f"pack {version}" if version else "an earlier pack (no version recorded)"
    report.say(f"  ok       {filename}  {path}")
    report.say(f"           {component}, {architecture}, {meta.get('dp3d.dtype', '?')} ({size}); converted by {made_by} "
               f"(format {meta.get('dp3d.format_version', '?')}) from {meta.get('dp3d.source_file', '?')} "
               f"(sha256 {meta.get('dp3d.source_sha256', '?')[:16]}...)")
    if architecture.startswith("tiny"):
        report.say("           (tiny random weights make noise, not faces: a check of the install only)")


def check_models(report: Report, folders: dict[str, list[Path]]) -> None:
    from .main import _workflow_path
    from .workflow_jobs import load_prompt, model_files

    report.say("Model files of the official workflow (official_8_views):")
    seen = set()
    for item in model_files(load_prompt(_workflow_path("official_8_views"))):
        if item.filename not in seen:
            seen.add(item.filename)
            check_file(report, item.filename, item.folder, folders.get(item.folder, []))


def check_device(report: Report) -> None:
    import platform

    import torch

    from ..bench.memory_estimate import step_memory_estimate
    from .cpu_threads import physical_cores

    report.say("Device:")
    if torch.cuda.is_available():
        properties = torch.cuda.get_device_properties(0)
        total = properties.total_memory / 2**30
        report.say(f"  CUDA: {properties.name}, {total:.1f} GiB; torch {torch.__version__}")
        report.say("  dtype: float16 (ComfyUI's choice for SD1.5 models on a CUDA GPU; bf16 where it prefers that)")
        kind, extra = "gpu_half", " + the CUDA context and allocator slack"
    elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        total = None
        report.say(f"  MPS (Apple GPU); torch {torch.__version__}")
        report.say("  dtype: float16 (ComfyUI's choice for SD1.5 models on MPS)")
        kind, extra = "gpu_half", " (shared with the system's memory)"
    else:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30 if hasattr(os, "sysconf") else None
        name = _cpu_name() or platform.processor() or platform.machine()
        ram = f", {total:.1f} GiB RAM" if total else ""
        report.say(f"  CPU: {name}, {physical_cores()} physical cores{ram}; torch {torch.__version__}")
        if os.environ.get("DIFFPORTRAIT3D_CPU_COMPUTE") == "bf16":
            report.say("  dtype: bf16 (DIFFPORTRAIT3D_CPU_COMPUTE=bf16; convert with --dtype bf16)")
            kind, extra = "cpu_bf16", ""
        else:
            report.say("  dtype: float32 (ComfyUI's on a CPU; DIFFPORTRAIT3D_CPU_COMPUTE=bf16 for bf16, see README)")
            kind, extra = "cpu_float32", ""
    estimate = step_memory_estimate(kind)
    span = f"{estimate.low_gib:.1f}" if estimate.low_gib == estimate.high_gib else \
        f"{estimate.low_gib:.1f}-{estimate.high_gib:.1f}"
    report.say(f"  memory for 8 views at 512x512, official model: about {span} GiB{extra} "
               f"({estimate.weights_gib:.2f} GiB of it weights). An ESTIMATE from the bench's measurements "
               "(docs/performance.md), not measured here")
    if total is not None and estimate.high_gib > total:
        report.say(f"  note: that is more than this device's {total:.1f} GiB; ComfyUI will offload or run out of memory")


def _cpu_name() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def run_doctor(roots: list[Path], extra_configs: list[Path]) -> tuple[int, str]:
    """The report's text and the exit code: 0 when everything the official workflow needs is there, 1 otherwise."""
    from .. import __version__

    report = Report()
    report.say(f"DiffPortrait3D doctor: pack {__version__} at {PACK_ROOT}")
    report.say()
    host = find_host(report)
    for root in roots:
        if not root.is_dir():
            report.problem(f"--models {root}: no such folder", "give a folder laid out like ComfyUI/models")
    folders = model_folders(host, [r for r in roots if r.is_dir()], extra_configs)
    if folders.get("diffportrait3d"):
        report.convert_folder = str(folders["diffportrait3d"][0])
    report.say()
    check_models(report, folders)
    report.say()
    check_device(report)
    report.say()
    if report.problems:
        report.say(f"{len(report.problems)} problem(s), each with its fix:")
        for number, (what, fix) in enumerate(report.problems, 1):
            report.say(f"  {number}. {what}")
            report.say(f"     fix: {fix}")
        if report.needs_checkpoint:
            from ..kernels.checkpoint.official_release import (
                CHECKPOINT_NAME,
                CHECKPOINT_ORIGIN,
                convert_command,
            )

            report.say(f"  {CHECKPOINT_NAME} is {CHECKPOINT_ORIGIN}; the pack never downloads it. All files at once: "
                       f"{convert_command(report.convert_folder)}")
    else:
        report.say("Everything the official workflow needs is here.")
    return (1 if report.problems else 0), "\n".join(report.lines)
