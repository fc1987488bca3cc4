"""Speed and memory benchmark of guided DiffPortrait3D sampling through the pack's real ComfyUI path.

Random-weight networks are built from a recorded architecture (the official one, or the tiny test one)
with the same builders the file loaders use — no files are read or written. The views are sampled with
the Appearance Reference Encoder's patch, cross-view attention, the pose ControlNet applied by ComfyUI's
own ControlNetApplyAdvanced node, the official guidance and the DDIM sampler, driven by ComfyUI's
CFGGuider. Timing wrappers measure each network inside the steps; afterwards the same calls of the last
step are repeated on their own, so the overhead over the bare networks is measured, not estimated.
With ``flops`` those calls are also replayed once under a FLOP counter, which gives the work per step, the
rate the step achieved, and a floor on its time: the work at this device's best single-product rate; and once
more with each counted op (products, convolutions, attention) timed on its own, which splits the networks'
time into those ops and everything else. With ``heap`` they are replayed once while the C heap's live bytes
are sampled after every operation: the memory the tensors needed, without the allocator's slack that the peak
RSS includes.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import statistics
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

import comfy.model_management
import comfy.patcher_extension
import comfy.samplers
import torch
from comfy.ldm.modules.attention import BasicTransformerBlock

from ..kernels.checkpoint.convert import TINY_CONFIG_PATH, component_architectures, load_architecture
from ..kernels.checkpoint.families import FAMILIES
from ..kernels.checkpoint.layout import cross_view_placements
from ..kernels.model.cross_view_attention import CrossViewModule
from ..kernels.model.reference_attention import BankFull, ReferenceBank, ReferenceBankWriter
from ..nodes.appearance_reference import ReferenceLatent, apply_appearance_reference
from ..nodes.cpu.operations import CHOICES as CPU_MATMUL_CHOICES
from ..nodes.cpu.operations import COMPUTE_DTYPES as CPU_COMPUTE_DTYPES
from ..nodes.cross_view import CrossViewSettings, apply_cross_view
from ..nodes.model_loading import (
    build_appearance_net,
    build_cross_view_modules,
    build_dp3d_unet,
    build_pose_controlnet,
    inference_setup_for,
    model_patcher,
)
from ..nodes.sampler import DDIMSamplerFunction, official_guidance, official_sigmas
from .counted_op_time import counted_op_seconds
from .flop_count import count_flops
from .heap_usage import PeakHeap, heap_bytes_in_use, peak_heap
from .matmul_rate import best_matmul_gflops
from .official_timings import official_step_timings
from .process_memory import peak_memory_bytes
from .random_weights import fill_random_weights_

ARCHITECTURES = {"full": None, "tiny": TINY_CONFIG_PATH}
# Families with cross-view modules, and how many references each samples with (DiffPortrait360: the front and
# the back of the head). "tiny" is one small architecture for both; the family sets where its modules sit.
REFERENCES = {"dp3d": 1, "dp360": 2}
BENCH_FAMILIES = tuple(REFERENCES)
WEIGHT_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
OFFICIAL_SCHEDULE_STEPS = 50
TIMING_KEY = "dp3d_benchmark"
KERNEL_HUGE_PAGE_MODE = Path("/sys/kernel/mm/transparent_hugepage/enabled")
TORCH_HUGE_PAGE_SWITCH = "THP_MEM_ALLOC_ENABLE"


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """What to run: architecture (``full`` or ``tiny``), views, latent size, timed and warm-up steps, the
    weights' storage dtype (ComfyUI picks the compute dtype for the device), guidance, seed, the layers'
    float32 CPU products (``onednn`` or ``pytorch``) and the compute dtype on a CPU (``float32``, or the
    opt-in ``bf16``, which needs bf16 storage); see ``nodes/cpu/operations.py``. ``official``: a timing file of
    the official code to compare against (``tests/bench_official.py --out FILE`` on this machine, or
    ``shared/reference/timings_full_cpu.json`` of another); none is built in. ``flops``: also count the
    floating-point work of a step (one more untimed replay of the last step's calls) and probe the device's
    best product rate. ``heap``: also the peak of the C heap's live bytes during one more replay (glibc only);
    with ``cpu_matmul="pytorch"`` and bf16 compute a CPU runs ComfyUI's GPU code path in 2-byte activations, so
    this estimates an fp16 GPU's need."""

    model: str = "tiny"
    family: str = "dp3d"
    views: int = 8
    latent: int = 16
    steps: int = 3
    warmup: int = 1
    dtype: str = "fp32"
    cpu_matmul: str = "onednn"
    cpu_compute: str = "float32"
    cfg: float = 3.0
    eta: float = 0.5
    seed: int = 0
    alone_repeats: int = 2
    official: str | None = None
    flops: bool = False
    heap: bool = False

    def check(self) -> None:
        if self.model not in ARCHITECTURES:
            raise ValueError(f"model must be one of {sorted(ARCHITECTURES)}, not {self.model!r}")
        if self.family not in BENCH_FAMILIES:
            raise ValueError(f"family must be one of {BENCH_FAMILIES}, not {self.family!r}")
        if self.dtype not in WEIGHT_DTYPES:
            raise ValueError(f"dtype must be one of {sorted(WEIGHT_DTYPES)}, not {self.dtype!r}")
        if self.cpu_matmul not in CPU_MATMUL_CHOICES:
            raise ValueError(f"cpu_matmul must be one of {CPU_MATMUL_CHOICES}, not {self.cpu_matmul!r}")
        if self.cpu_compute not in CPU_COMPUTE_DTYPES:
            raise ValueError(f"cpu_compute must be one of {tuple(CPU_COMPUTE_DTYPES)}, not {self.cpu_compute!r}")
        if self.cpu_compute == "bf16" and self.dtype != "bf16":
            raise ValueError("cpu_compute bf16 computes with the weights stored in bf16: set dtype bf16 too (--dtype bf16)")
        if self.views < 1 or self.latent < 8 or self.latent % 8:
            raise ValueError("views must be >= 1 and latent a multiple of 8 (>= 8)")
        if self.steps < 1 or self.warmup < 0 or self.alone_repeats < 1:
            raise ValueError("steps and alone_repeats must be >= 1, warmup >= 0")
        if self.steps + self.warmup > OFFICIAL_SCHEDULE_STEPS:
            raise ValueError(f"steps + warmup must not exceed {OFFICIAL_SCHEDULE_STEPS}")
        if self.official is not None:
            official_step_timings(self.official, self.views, self.latent)  # a bad file fails before the build
        if self.heap and heap_bytes_in_use() is None:
            raise ValueError("heap needs glibc's mallinfo2 (Linux with glibc 2.33 or later)")

    def official_reference(self) -> dict | None:
        """The official timings to compare with, from the ``official`` file; None without one."""
        if self.official is None:
            return None
        return official_step_timings(self.official, self.views, self.latent)


@dataclasses.dataclass
class RandomModels:
    unet: object  # ModelPatcher
    appearance: object  # ModelPatcher
    cross_view: object  # ModelPatcher
    pose: object  # comfy.controlnet.ControlNet
    architecture: dict

    def weight_bytes(self) -> int:
        """Bytes of all weights and buffers, each tensor counted once (injected modules sit in two trees)."""
        modules = [self.unet.model, self.appearance.model, self.cross_view.model, self.pose.control_model]
        tensors = {t.data_ptr(): t for m in modules for t in [*m.parameters(), *m.buffers()]}
        return sum(t.numel() * t.element_size() for t in tensors.values())


def build_random_models(
    model: str = "tiny", dtype: str = "fp32", seed: int = 0, cpu_matmul: str = "onednn", cpu_compute: str = "float32",
    family: str = "dp3d",
) -> RandomModels:
    """The four networks of a family's architecture with seeded random weights, as the loaders return them
    (ModelPatchers and ComfyUI's ControlNet), weights stored as ``dtype``; the cross-view modules placed by the
    family's rule."""
    rules = FAMILIES[family]
    architecture = load_architecture(rules.config_path if model == "full" else ARCHITECTURES[model])
    records = component_architectures(architecture)
    setup = inference_setup_for(None, WEIGHT_DTYPES[dtype], cpu_matmul, cpu_compute)
    unet = build_dp3d_unet(records["unet"], setup)
    fill_random_weights_(unet.diffusion_model, seed)
    appearance = fill_random_weights_(build_appearance_net(records["appearance"], setup), seed + 1)
    placements = [dataclasses.asdict(p) for p in cross_view_placements(records["cross_view"], rules.placement_rule)]
    cross_view = build_cross_view_modules(records["cross_view"], placements, setup)
    fill_random_weights_(cross_view, seed + 2)
    pose = build_pose_controlnet(records["pose_controlnet"], setup)
    fill_random_weights_(pose.control_model, seed + 3)
    return RandomModels(
        model_patcher(unet, setup), model_patcher(appearance, setup), model_patcher(cross_view, setup), pose,
        architecture,
    )


def huge_page_setup(mode_file: Path = KERNEL_HUGE_PAGE_MODE) -> dict:
    """Linux transparent huge pages: the kernel's mode (``always``, ``madvise``, ``never``; None elsewhere)
    and PyTorch's ``$THP_MEM_ALLOC_ENABLE``, which asks for huge pages for large CPU tensors — in
    ``madvise`` mode the only way they get them. Read when PyTorch starts, so it must be set before."""
    try:
        text = mode_file.read_text()
        mode = text[text.index("[") + 1 : text.index("]")]
    except (OSError, ValueError):
        mode = None
    return {"kernel_mode": mode, TORCH_HUGE_PAGE_SWITCH: os.environ.get(TORCH_HUGE_PAGE_SWITCH)}


class PartTimer:
    """Seconds per part of the current step; ``close_step`` files them and starts the next step. On CUDA
    every boundary synchronises, so GPU work is charged to the part that queued it."""

    def __init__(self, device: torch.device):
        self.synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        self.current: dict[str, float] = defaultdict(float)
        self.steps: list[dict[str, float]] = []
        self.marks: list[float] = []
        self.calls: dict[str, list] = defaultdict(list)  # part -> calls of the current step, to replay
        self.last_step_calls: dict[str, list] = {}

    def now(self) -> float:
        self.synchronize()
        return time.perf_counter()

    @contextmanager
    def measure(self, part: str):
        started = self.now()
        try:
            yield
        finally:
            self.current[part] += self.now() - started

    def start(self) -> None:
        self.marks = [self.now()]

    def close_step(self) -> None:
        self.marks.append(self.now())
        self.steps.append(dict(self.current))
        self.current = defaultdict(float)
        self.last_step_calls = dict(self.calls)
        self.calls = defaultdict(list)


class TimedDiffusionModel:
    """DIFFUSION_MODEL wrapper charging the wrapped call to ``part``; the inner one also records the call (the
    wrappers inside it, such as the cross-view patch's shared text context, and the UNet) for the replay."""

    def __init__(self, timer: PartTimer, part: str, record: bool):
        self.timer, self.part, self.record = timer, part, record

    def __call__(self, executor, x, timesteps, context, y, control, transformer_options, **kwargs):
        if self.record:
            options = dict(transformer_options)  # keeps this call's bank

            def replay():  # the UNet writes into its transformer options: give it a fresh copy each time
                return executor(x, timesteps, context, y, control, dict(options), **kwargs)

            self.timer.calls["unet"].append(replay)
        with self.timer.measure(self.part):
            return executor(x, timesteps, context, y, control, transformer_options, **kwargs)


def time_pose_controlnet(control, timer: PartTimer) -> None:
    """Charge every ``get_control`` of this ControlNet object to 'pose_controlnet' and record the call."""
    original = control.get_control

    def timed_get_control(*args):
        timer.calls["pose_controlnet"].append(lambda: original(*args))
        with timer.measure("pose_controlnet"):
            return original(*args)

    control.get_control = timed_get_control


def time_appearance_runs(appearance_net: torch.nn.Module, timer: PartTimer) -> None:
    """Record the appearance net's inputs of every run (its time is the outer minus the inner wrapper)."""
    blocks = sum(isinstance(m, BasicTransformerBlock) for m in appearance_net.modules())

    def record(module, args, kwargs):
        inputs = {k: v for k, v in kwargs.items() if k != "transformer_options"}

        def replay():  # a fresh bank each time, stopped after its last entry as in the step
            options = {"patches": {"attn1_patch": [ReferenceBankWriter(ReferenceBank(), expected_entries=blocks)]}}
            try:
                appearance_net(*args, **inputs, transformer_options=options)
            except BankFull:
                pass

        timer.calls["appearance_net"].append(replay)

    appearance_net.register_forward_pre_hook(record, with_kwargs=True)


def time_cross_view_modules(modules: torch.nn.Module, timer: PartTimer) -> None:
    """Charge the injected cross-view modules to 'cross_view' (a part of the UNet's time)."""
    started = {}

    def before(module, args):
        started[id(module)] = timer.now()

    def after(module, args, output):
        timer.current["cross_view"] += timer.now() - started.pop(id(module))

    for module in modules.modules():
        if isinstance(module, CrossViewModule):
            module.register_forward_pre_hook(before)
            module.register_forward_hook(after)


class TimedDDIM:
    """KSAMPLER function: the pack's DDIM sampler with a step boundary at every callback; after the last
    step, while every network is still loaded, replays the recorded calls of that step on their own."""

    def __init__(self, timer: PartTimer, alone_repeats: int, count_work: bool = False, watch_heap: bool = False):
        self.timer = timer
        self.alone_repeats = alone_repeats
        self.count_work = count_work
        self.watch_heap = watch_heap
        self.alone: dict[str, float] = {}
        self.flops: dict[str, int] = {}
        self.counted_op_seconds: dict[str, float] = {}
        self.heap: dict[str, PeakHeap] = {}

    def __call__(self, model, x, sigmas, extra_args=None, callback=None, disable=None, eta=0.5):
        def step_done(info):
            self.timer.close_step()

        self.timer.start()
        samples = DDIMSamplerFunction()(model, x, sigmas, extra_args, callback=step_done, disable=True, eta=eta)
        with torch.no_grad():
            for part, calls in self.timer.last_step_calls.items():
                self.alone[part] = sum(self.best_of(call) for call in calls)
                if self.count_work:
                    self.flops[part] = sum(count_flops(call) for call in calls)
                    self.counted_op_seconds[part] = sum(counted_op_seconds(call, self.timer.synchronize) for call in calls)
                if self.watch_heap:
                    self.heap[part] = max((peak_heap(call) for call in calls), key=lambda watcher: watcher.peak_bytes)
        return samples

    def best_of(self, call) -> float:
        seconds = []
        for _ in range(self.alone_repeats):
            started = self.timer.now()
            call()
            seconds.append(self.timer.now() - started)
        return min(seconds)


def guided_inputs(models: RandomModels, config: BenchConfig, generator: torch.Generator):
    """(positive, negative, latent, reference latent): random text context and pose images, the pose
    ControlNet applied with ComfyUI's own ControlNetApplyAdvanced, then the official guidance."""
    from nodes import ControlNetApplyAdvanced

    context_dim = models.architecture["model"]["params"]["unet_config"]["params"]["context_dim"]
    context = torch.randn(1, 77, context_dim, generator=generator)
    pose_images = torch.rand(config.views, config.latent * 8, config.latent * 8, 3, generator=generator)
    text = [[context, {}]]
    positive, negative = ControlNetApplyAdvanced().apply_controlnet(text, text, models.pose, pose_images, 1.0, 0.0, 1.0)
    latent = torch.randn(config.views, 4, config.latent, config.latent, generator=generator)
    reference = torch.randn(1, 4, config.latent, config.latent, generator=generator)
    positive, negative = official_guidance(positive, negative)
    return positive, negative, latent, reference


def run_benchmark(config: BenchConfig, models: RandomModels | None = None) -> dict:
    """Build (unless given) and sample; returns the measurements as one JSON-ready dict."""
    config.check()
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None  # timings need a quiet machine
    device = comfy.model_management.get_torch_device()
    build_started = time.perf_counter()
    if models is None:
        models = build_random_models(config.model, config.dtype, config.seed, config.cpu_matmul, config.cpu_compute,
                                     config.family)
    build_seconds = time.perf_counter() - build_started
    rss_after_build = peak_memory_bytes()
    timer = PartTimer(device)
    generator = torch.Generator().manual_seed(config.seed)
    positive, negative, latent, reference = guided_inputs(models, config, generator)
    time_pose_controlnet(positive[0][1]["control"], timer)
    time_appearance_runs(models.appearance.model, timer)
    time_cross_view_modules(models.cross_view.model, timer)

    model = models.unet.clone()
    model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, TIMING_KEY + "_outer",
                               TimedDiffusionModel(timer, "reference_and_unet", record=False))
    for index in range(REFERENCES[config.family]):  # DiffPortrait360: the front and the back of the head
        latent_of_reference = reference if index == 0 else torch.randn(reference.shape, generator=generator)
        model = apply_appearance_reference(model, models.appearance, ReferenceLatent(model_latent=latent_of_reference))
    model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, TIMING_KEY + "_inner",
                               TimedDiffusionModel(timer, "unet", record=True))
    model = apply_cross_view(model, models.cross_view, CrossViewSettings())

    total_steps = config.warmup + config.steps
    sigmas = official_sigmas(model, OFFICIAL_SCHEDULE_STEPS)[:total_steps + 1]
    noise = torch.randn(latent.shape, generator=generator)
    sampler_function = TimedDDIM(timer, config.alone_repeats, count_work=config.flops, watch_heap=config.heap)
    guider = comfy.samplers.CFGGuider(model)
    guider.set_conds(positive, negative)
    guider.set_cfg(config.cfg)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    sampler = comfy.samplers.KSAMPLER(sampler_function, extra_options={"eta": config.eta})
    samples = guider.sample(noise, latent, sampler, sigmas, seed=config.seed, disable_pbar=True)
    if not torch.isfinite(samples).all():
        raise RuntimeError("the benchmark produced non-finite latents")
    result = summarise(
        config, models, timer, sampler_function.alone, build_seconds, rss_after_build, device, load_before
    )
    if config.flops:
        result.update(work_summary(sampler_function.flops, sampler_function.counted_op_seconds, result, device,
                                   compute_dtype(config)))
    if config.heap:
        result.update(heap_summary(sampler_function.heap))
    return result


def compute_dtype(config: BenchConfig) -> torch.dtype:
    """The dtype the layers compute in on this device (ComfyUI's choice, or the pack's opt-in bf16 on a CPU)."""
    setup = inference_setup_for(None, WEIGHT_DTYPES[config.dtype], config.cpu_matmul, config.cpu_compute)
    return setup.manual_cast_dtype or WEIGHT_DTYPES[config.dtype]


def work_summary(flops: dict[str, int], products: dict[str, float], result: dict, device: torch.device,
                 dtype: torch.dtype) -> dict:
    """Work per step by network (``flops_per_step``, with ``total``), the rate the step achieved, the device's
    best product rate in ``dtype`` and the floor it puts on a step (work / best rate). ``products``: seconds
    per network inside the counted ops, timed one by one in a replay (``product_seconds_per_step``); their
    rate, and the rest of the networks' time run alone (``outside_products_seconds_per_step``: element-wise
    work, copies, normalisations). With an official timing file that has the official step's work, the floor
    as a fraction of the official step."""
    total = sum(flops.values())
    in_products = sum(products.values())
    best = best_matmul_gflops(device, dtype)
    summary = {
        "flops_per_step": {**flops, "total": total},
        "achieved_gflops": total / result["seconds_per_step"] / 1e9,
        "best_matmul_gflops": best,
        "floor_seconds_per_step": total / best / 1e9,
        "product_seconds_per_step": {**products, "total": in_products},
        "product_gflops": total / in_products / 1e9 if in_products else None,
        "outside_products_seconds_per_step": result["sum_of_parts_alone"] - in_products,
    }
    official = result.get("official_cpu") or {}
    if official.get("flops_per_step_fp32") and dtype == torch.float32:
        summary["work_vs_official"] = total / official["flops_per_step_fp32"]
        summary["floor_vs_official_step"] = summary["floor_seconds_per_step"] / official["seconds_per_step_fp32"]
    return summary


def heap_summary(watchers: dict[str, PeakHeap]) -> dict:
    """The replayed network whose call peaked highest in live heap bytes: that peak, what was live before the
    call (weights and the step's state it reads), and the operation at the peak."""
    part, watcher = max(watchers.items(), key=lambda item: item[1].peak_bytes)
    return {
        "heap_peak_bytes": watcher.peak_bytes,
        "heap_before_peak_call_bytes": watcher.start_bytes,
        "heap_peak_part": part,
        "heap_peak_op": watcher.peak_op,
    }


def summarise(config, models, timer, alone, build_seconds, rss_after_build, device, load_before) -> dict:
    timed = slice(config.warmup, None)
    step_seconds = [b - a for a, b in zip(timer.marks, timer.marks[1:], strict=False)][timed]
    parts = timer.steps[timed]

    def median_of(name):
        return statistics.median(step.get(name, 0.0) for step in parts)

    unet = median_of("unet")
    appearance = statistics.median(s.get("reference_and_unet", 0.0) - s.get("unet", 0.0) for s in parts)
    pose = median_of("pose_controlnet")
    per_step = statistics.median(step_seconds)
    breakdown = {
        "appearance_net": appearance,
        "pose_controlnet": pose,
        "unet_with_cross_view": unet,
        "cross_view_modules_in_unet": median_of("cross_view"),
        "sampler_overhead": statistics.median(
            total - s.get("reference_and_unet", 0.0) - s.get("pose_controlnet", 0.0)
            for total, s in zip(step_seconds, parts, strict=True)
        ),
    }
    sum_alone = sum(alone.values())
    result = {
        "model": config.model,
        "family": config.family,
        "references": REFERENCES[config.family],
        "views": config.views,
        "latent": [config.latent, config.latent],
        "weight_dtype": config.dtype,
        "cpu_matmul": config.cpu_matmul,
        "cpu_compute": config.cpu_compute,
        "compute_dtype": str(compute_dtype(config)).replace("torch.", ""),
        "device": str(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "load_average_before": load_before,
        "huge_pages": huge_page_setup(),
        "steps_timed": config.steps,
        "warmup_steps": config.warmup,
        "seconds_per_step": per_step,
        "step_seconds": step_seconds,
        "breakdown": breakdown,
        "unet_calls_per_step": len(timer.last_step_calls.get("unet", [])),
        "appearance_runs_per_step": len(timer.last_step_calls.get("appearance_net", [])),
        "parts_alone": alone,
        "sum_of_parts_alone": sum_alone,
        "overhead_over_parts": per_step / sum_alone - 1 if sum_alone else None,
        "peak_memory_bytes": peak_memory_bytes(),
        "rss_after_build_bytes": rss_after_build,
        "weight_bytes": models.weight_bytes(),
        "build_seconds": build_seconds,
    }
    result["seconds_per_view_per_step"] = per_step / config.views
    if device.type == "cuda":
        result["peak_vram_bytes"] = torch.cuda.max_memory_allocated()
    official = config.official_reference()
    if official is not None and device.type == "cpu":
        result["official_cpu"] = official
    return result


def format_report(result: dict) -> str:
    """Human-readable summary of ``run_benchmark``'s result."""
    gib = 2**30
    lines = [
        f"{result['model']} architecture, {result['views']} views, latent {result['latent'][0]}x{result['latent'][1]}, "
        f"weights {result['weight_dtype']} (compute {result['compute_dtype']}), {result['device']} "
        f"(float32 CPU products: {result['cpu_matmul']}), "
        f"{result['threads']} threads, torch {result['torch']}, load average before {result['load_average_before']}",
        f"  per guided step: {result['seconds_per_step']:.3f} s (median of {result['steps_timed']}; "
        f"{', '.join(f'{s:.3f}' for s in result['step_seconds'])})",
    ]
    for name, seconds in result["breakdown"].items():
        lines.append(f"    {name:28s} {seconds:8.3f} s")
    lines.append(f"  UNet calls per step: {result['unet_calls_per_step']}")
    alone = ", ".join(f"{name} {seconds:.3f} s" for name, seconds in result["parts_alone"].items())
    overhead = result["overhead_over_parts"]
    lines.append(f"  networks alone: {alone}; sum {result['sum_of_parts_alone']:.3f} s; "
                 f"overhead of a step over them {100 * overhead:+.1f} %" if overhead is not None else "")
    lines.append(f"  peak memory (RSS) {result['peak_memory_bytes'] / gib:.2f} GiB "
                 f"(after build {result['rss_after_build_bytes'] / gib:.2f} GiB, weights {result['weight_bytes'] / gib:.2f} GiB)")
    if "peak_vram_bytes" in result:
        lines.append(f"  peak VRAM {result['peak_vram_bytes'] / gib:.2f} GiB, "
                     f"{result['seconds_per_view_per_step']:.3f} s per view per step")
    huge_pages = result["huge_pages"]
    if result["device"] == "cpu" and huge_pages["kernel_mode"] == "madvise" and huge_pages[TORCH_HUGE_PAGE_SWITCH] != "1":
        lines.append(f"  tip: this kernel gives huge pages only on request; {TORCH_HUGE_PAGE_SWITCH}=1 before starting "
                     "makes PyTorch ask for them for large tensors (a full-size step up to 6 % faster on our test machine)")
    official = result.get("official_cpu")
    if official:
        reference = official["seconds_per_step_fp32"]
        lines.append(f"  official code on {official['machine'] or 'the measuring machine'}: {reference:.2f} s per step "
                     f"fp32 (ours {result['seconds_per_step'] / reference:.2f}x); {official['source']}")
    if "flops_per_step" in result:
        lines.extend(format_work(result))
    if "heap_peak_bytes" in result:
        added = result["heap_peak_bytes"] - result["heap_before_peak_call_bytes"]
        lines.append(f"  live heap (no allocator slack): {result['heap_before_peak_call_bytes'] / gib:.2f} GiB before "
                     f"the {result['heap_peak_part']} call, peak {result['heap_peak_bytes'] / gib:.2f} GiB "
                     f"({added / gib:.2f} GiB more) at {result['heap_peak_op']}")
    return "\n".join(lines)


def format_work(result: dict) -> list[str]:
    """Report lines of ``work_summary``."""
    giga = 1e9
    flops = result["flops_per_step"]
    parts = ", ".join(f"{name} {count / giga:.1f}" for name, count in flops.items() if name != "total")
    lines = [
        f"  work per step {flops['total'] / giga:.1f} GFLOP ({parts}), achieved {result['achieved_gflops']:.0f} GFLOP/s",
        f"  best single product here {result['best_matmul_gflops']:.0f} GFLOP/s ({result['compute_dtype']}): "
        f"floor {result['floor_seconds_per_step']:.3f} s per step (the work at that rate, nothing else)",
    ]
    if result["product_gflops"] is not None:
        lines.append(f"  networks alone, timed op by op: {result['product_seconds_per_step']['total']:.3f} s in products, "
                     f"convolutions and attention ({result['product_gflops']:.0f} GFLOP/s), "
                     f"{result['outside_products_seconds_per_step']:.3f} s outside them")
    if "work_vs_official" in result:
        official_work = result["official_cpu"]["flops_per_step_fp32"]
        lines.append(f"  official step {official_work / giga:.1f} GFLOP: ours is {result['work_vs_official']:.2f}x its "
                     f"work; the floor is {result['floor_vs_official_step']:.2f}x the official step's time")
        if result["product_gflops"] is not None:
            half = result["official_cpu"]["seconds_per_step_fp32"] / 2
            lines.append(f"  half the official step, {half:.3f} s, less the time in those ops leaves "
                         f"{half - result['product_seconds_per_step']['total']:.3f} s for everything else")
    return lines
