"""Rerunnable CPU timing of ONE ``apply_model`` call of the UNMODIFIED official DiffPortrait3D code.

Re-measures what ``shared/reference/timings_full_cpu.json`` records (there: 2 vCPU AMD EPYC) on the
machine at hand: the official ``ControlLDMReferenceOnlyPose`` built from the official yaml, random weights
(default PyTorch init, float32), V views, latent LxL, and per repeat one

    cond = model.apply_model(x, t, {"c_crossattn": [ctx], "c_concat": [hint]}, reference)
    uc   = model.apply_model(x, t, {"c_crossattn": [ctx], "c_concat": [hint]}, None, uc=True)

(exactly the two calls the official DDIM sampler makes per step in ``controlnet_important`` mode; the
sampler's extra dict keys are never read by ``apply_model``). Inputs: x [V,4,L,L] ~ N(0,1); t = 601 for every
view (int64); ctx = one [1,77,context_dim] N(0,1) tensor repeated V times; hint [V,3,8L,8L] ~ U(0,1);
reference = one [1,4,L,L] N(0,1) latent repeated V times. Calls run under ``torch.no_grad()`` (as the
sampler), alternating cond, uc; every call is timed with ``time.perf_counter`` and ALL calls are reported
(the first includes allocator warm-up, like the reference; see ``--warmup``). ``seconds_per_step`` = cond
median + uc median (one CFG step). Peak RSS = VmHWM of /proc/self/status. ``--autocast bf16`` wraps each
call in ``torch.autocast("cpu", dtype=torch.bfloat16)`` (weights stay float32). With default init the outputs
are all zeros (the official code zero-initialises the UNet's output conv); the work done is the same.
``--flops`` also counts each call's floating-point work once more, untimed (``bench/flop_count.py``, the
count the pack's ``bench --flops`` makes): ``flops_cond``, ``flops_uc`` and ``flops_per_step`` per run.

The official code is only imported, never copied: ``--official-repo`` is a checkout of
FreedomGu/DiffPortrait3D (its root or its ``DiffPortrait3D/`` folder), e.g. from a bare mirror

    mkdir -p /tmp/official && git --git-dir=MIRROR archive HEAD DiffPortrait3D | tar -x -C /tmp/official

(archiving the whole tree fails on the local mirror, which lacks the blob of ``Figures/teaser.gif``).
The git blob ids of every official source file that gets imported are compared with commit 91e2503 and
reported (``official_sources``).

Needs, besides torch and einops: PyYAML (only for .yaml configs), safetensors (only for ``--weights``), and
the files of diffusers 0.11.0 (the version pinned by the official ``diffportrait3D.yml``;
``motion_module.py`` subclasses its ``CrossAttention``, removed from later diffusers). Install it OUTSIDE
the project venv and pass the folder:

    pip install --no-deps --target /tmp/dp3d-official-deps diffusers==0.11.0

The harness does not run that package's ``__init__`` (it fails against a current huggingface_hub): it
registers a bare ``diffusers`` package whose ``__path__`` is that folder, so only ``diffusers.models``,
``.utils`` and ``.configuration_utils`` of 0.11.0 load (the pure-torch code the official module uses).

Stand-ins registered in ``sys.modules`` (imports that are unavailable offline or irrelevant here):
  torchvision, torchvision.utils      -- only ``make_grid`` is referenced (image logging); raises if called
  pytorch_lightning(.utilities.distributed) -- LightningModule = nn.Module + ``device``; rank_zero_only = id
  omegaconf, omegaconf.listconfig     -- ``ListConfig`` type for the official isinstance/type checks; the
                                         yaml is parsed with PyYAML into dicts with attribute access
  cond stage (not timed)              -- FrozenCLIPEmbedder needs a download: replaced by a module holding
                                         123,060,480 float32 parameters (the CLIP ViT-L/14 text tower's
                                         count) so the peak RSS stays comparable; ``--cond-stage none``
                                         uses the official ``__is_unconditional__`` instead
The VAE (not timed) is built as configured. Python bytecode goes to a temporary ``sys.pycache_prefix``:
the official tree ships stale ``__pycache__/*.pyc`` files, which are thus never read (nor written).

Full-size float32 measurement (~11.5 GB RAM, minutes of CPU):

    python tests/bench_official.py --official-repo /tmp/official \\
        --diffusers-path /tmp/dp3d-official-deps --views 8 --latent 16 --repeats 4 --threads 2 --json

Run it on an otherwise idle machine: with another process busy on the same cores the OpenMP threads are
oversubscribed and the calls get many times slower (the tiny model went from 0.3 s to 24 s per call); the
report records the load average at start and end. ``--dry-run`` builds the full model and runs both calls on
the meta device (seconds, ~0.5 GB): it checks config, parameter count (2,869,842,827 with the stand-in) and
output shapes before committing to the real run.

Smoke test (tiny model of ``shared/reference/tiny``, seconds): add ``--tiny`` (or ``--config
shared/reference/tiny/tiny_config.json``); with ``--weights tiny_official.safetensors --golden
golden_apply_v8.safetensors`` the outputs are also compared with the reference goldens.
Not collected by pytest (the name does not match test_*.py).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import copy
import hashlib
import importlib
import importlib.metadata
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path

import torch
from torch.overrides import TorchFunctionMode

from diffportrait3d.bench.flop_count import count_flops
from diffportrait3d.bench.process_memory import peak_memory_bytes

OFFICIAL_COMMIT = "91e250361d3d641e9588bd2350f07df91f3cfdd9"
OFFICIAL_YAML = "control_model/ControlNet/models/cldm_v15_diffportrait3D.yaml"
MODEL_TARGET = "control_model.ControlNet.cldm.cldm.ControlLDMReferenceOnlyPose"
CLIP_L_TEXT_PARAMS = 123_060_480
STANDIN_MODULE = "_dp3d_bench_standins"

# git blob ids (git hash-object) at OFFICIAL_COMMIT, paths relative to DiffPortrait3D/.
OFFICIAL_BLOBS = {
    "control_model/ControlNet/cldm/cldm.py": "dd558d81247573243ac9372f9af86cb8170a8e0c",
    "control_model/ControlNet/cldm/model.py": "11c4da9cb1183ac2e51609b26db6e0b99a372b7f",
    "control_model/ControlNet/ldm/models/autoencoder.py": "6c430566cfd95cc565426d6579ce9b9c4a7f3083",
    "control_model/ControlNet/ldm/models/diffusion/__init__.py": "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391",
    "control_model/ControlNet/ldm/models/diffusion/ddim.py": "3eaa13eac4638ec43cca44931b52b5829d381322",
    "control_model/ControlNet/ldm/models/diffusion/ddpm.py": "a3edccffd50f96144a608668059d25727611af02",
    "control_model/ControlNet/ldm/modules/attention.py": "db58e0fdeb8e2a5bd8cbd3ec82253afca69eba9b",
    "control_model/ControlNet/ldm/modules/diffusionmodules/__init__.py": "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391",
    "control_model/ControlNet/ldm/modules/diffusionmodules/model.py": "f9686f549ec5c738063889a7397a9aa048f4b706",
    "control_model/ControlNet/ldm/modules/diffusionmodules/openaimodel.py": "d6223380a72d67405304bfee6e51f4c9cf4bbd44",
    "control_model/ControlNet/ldm/modules/diffusionmodules/util.py": "c678d0198941b5563129273c1843b9cfa8ce38ff",
    "control_model/ControlNet/ldm/modules/distributions/__init__.py": "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391",
    "control_model/ControlNet/ldm/modules/distributions/distributions.py": "f2b8ef901130efc171aa69742ca0244d94d3f2e9",
    "control_model/ControlNet/ldm/modules/ema.py": "bded25019b9bcbcd0260f0b8185f8c7859ca58c4",
    "control_model/ControlNet/ldm/modules/motion_module.py": "e995d4805f08da831c8e6ae84b3b788cb08d9597",
    "control_model/ControlNet/ldm/util.py": "8c09ca1c72f7ceb3f9d7f9546aae5561baf62b13",
    "control_model/ControlNet/models/cldm_v15_diffportrait3D.yaml": "ec2accab37d8966a6bfba65922605b218db21c82",
}


# ---------------------------------------------------------------- stand-ins


class AttrDict(dict):
    """dict with attribute access (what OmegaConf's DictConfig gives the official code)."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError as error:
            raise AttributeError(name) from error


def to_attr(value):
    if isinstance(value, dict):
        return AttrDict({k: to_attr(v) for k, v in value.items()})
    if isinstance(value, list):
        return [to_attr(v) for v in value]
    return value


def _module(name: str, **attrs) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    sys.modules[name] = module
    return module


def install_standins(diffusers_path: Path | None) -> None:
    def make_grid(*args, **kwargs):
        raise RuntimeError("torchvision stand-in: make_grid (image logging) is not available in the benchmark")

    vision_utils = _module("torchvision.utils", make_grid=make_grid)
    _module("torchvision", utils=vision_utils, __path__=[])

    class LightningModule(torch.nn.Module):
        @property
        def device(self):
            for tensor in self.parameters():
                return tensor.device
            for tensor in self.buffers():
                return tensor.device
            return torch.device("cpu")

    distributed = _module("pytorch_lightning.utilities.distributed", rank_zero_only=lambda fn: fn)
    utilities = _module("pytorch_lightning.utilities", distributed=distributed, __path__=[])
    _module("pytorch_lightning", LightningModule=LightningModule, utilities=utilities, __path__=[])

    class ListConfig(list):
        pass

    listconfig = _module("omegaconf.listconfig", ListConfig=ListConfig)
    _module("omegaconf", ListConfig=ListConfig, listconfig=listconfig, __path__=[])

    class CondStageStandIn(torch.nn.Module):
        """Untimed stand-in for FrozenCLIPEmbedder: same parameter count, no download."""

        def __init__(self, n_params: int = CLIP_L_TEXT_PARAMS):
            super().__init__()
            self.params = torch.nn.Parameter(torch.empty(n_params).normal_(0.0, 0.02))

    _module(STANDIN_MODULE, CondStageStandIn=CondStageStandIn)

    if diffusers_path is not None:
        package = diffusers_path / "diffusers"
        if not (package / "models" / "attention.py").is_file():
            sys.exit(f"--diffusers-path {diffusers_path}: no diffusers/models/attention.py there")
        # Bare package: its __init__ (pipelines, huggingface_hub.HfFolder, ...) is never executed.
        _module("diffusers", __path__=[str(package)], __version__="0.11.0", __file__=str(package / "__init__.py"))
    else:
        try:
            version = importlib.metadata.version("diffusers")
        except importlib.metadata.PackageNotFoundError:
            version = None
        if not (version or "").startswith("0.11."):
            sys.exit(
                f"installed diffusers is {version}; the official motion_module.py needs diffusers 0.11 "
                "(CrossAttention). Run `pip install --no-deps --target /tmp/dp3d-official-deps "
                "diffusers==0.11.0` and pass --diffusers-path /tmp/dp3d-official-deps"
            )


class MetaFactories(TorchFunctionMode):
    """--dry-run: tensor factories without an explicit device allocate on the meta device (no memory).

    torch.tensor / linspace / arange stay on the CPU: the DDPM schedule is computed through numpy and checked
    with .item(), and PositionalEncoding fills its (meta) buffer from them.
    """

    FACTORIES = (torch.empty, torch.zeros, torch.ones, torch.full, torch.randn, torch.rand)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func in self.FACTORIES and kwargs.get("device") is None:
            kwargs["device"] = "meta"
        return func(*args, **kwargs)


def use_private_pycache() -> str:
    prefix = tempfile.mkdtemp(prefix="dp3d-bench-pycache-")
    atexit.register(shutil.rmtree, prefix, True)
    sys.pycache_prefix = prefix
    return prefix


# ---------------------------------------------------------------- config


def resolve_checkout(path: Path) -> Path:
    for candidate in (path, path / "DiffPortrait3D"):
        if (candidate / "control_model" / "ControlNet" / "cldm" / "cldm.py").is_file():
            return candidate.resolve()
    sys.exit(f"--official-repo {path}: no control_model/ControlNet/cldm/cldm.py (nor under DiffPortrait3D/)")


def load_model_config(path: Path) -> dict:
    if path.suffix == ".json":
        data = json.loads(path.read_text())
        data = data.get("official_yaml_equivalent", data)
    else:
        import yaml

        data = yaml.safe_load(path.read_text())
    model = data["model"]
    if model["target"] != MODEL_TARGET:
        sys.exit(f"{path}: model target {model['target']!r}, expected {MODEL_TARGET}")
    return model


def make_tiny(model: dict) -> dict:
    """The tiny shape of shared/reference/tiny/tiny_config.json, applied to the official yaml."""
    model = copy.deepcopy(model)
    params = model["params"]
    params["image_size"] = 16
    for key in ("appearance_control_stage_config", "pose_control_stage_config", "unet_config"):
        net = params[key]["params"]
        net.update(image_size=16, model_channels=32, channel_mult=[1, 2, 2, 2], num_heads=2, context_dim=32)
        extra = net.get("unet_additional_kwargs")
        if extra:
            extra["motion_module_kwargs"]["num_attention_heads"] = 2
    ddconfig = params["first_stage_config"]["params"]["ddconfig"]
    ddconfig.update(resolution=128, ch=32, ch_mult=[1, 1, 1, 1], num_res_blocks=1)
    params["cond_stage_config"] = "__is_unconditional__"
    return model


def set_cond_stage(model: dict, mode: str) -> str:
    params = model["params"]
    current = params["cond_stage_config"]
    if isinstance(current, str):  # "__is_unconditional__" / "__is_first_stage__": nothing to download
        return current
    if mode == "none":
        params["cond_stage_config"] = "__is_unconditional__"
        return f"__is_unconditional__ (instead of {current['target']})"
    params["cond_stage_config"] = {"target": f"{STANDIN_MODULE}.CondStageStandIn",
                                   "params": {"n_params": CLIP_L_TEXT_PARAMS}}
    return f"stand-in with {CLIP_L_TEXT_PARAMS:,} float32 parameters (instead of {current['target']})"


# ---------------------------------------------------------------- measurement helpers


def peak_rss_mib() -> float:
    return peak_memory_bytes() / 2**20


def git_blob_id(path: Path) -> str:
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def official_sources(checkout: Path, config_path: Path) -> dict:
    files = {}
    for module in list(sys.modules.values()):
        file = getattr(module, "__file__", None)
        if file and Path(file).resolve().is_relative_to(checkout):
            files[Path(file).resolve().relative_to(checkout).as_posix()] = git_blob_id(Path(file))
    if config_path.resolve().is_relative_to(checkout):
        files[config_path.resolve().relative_to(checkout).as_posix()] = git_blob_id(config_path)
    mismatch = sorted(k for k, v in files.items() if OFFICIAL_BLOBS.get(k) != v)
    return {"commit_compared": OFFICIAL_COMMIT, "files": dict(sorted(files.items())),
            "all_match": not mismatch, "not_matching": mismatch}


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def make_inputs(views: int, latent: int, context_dim: int, seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {
        "x_noisy": torch.randn(views, 4, latent, latent, generator=generator),
        "t": torch.full((views,), 601, dtype=torch.long),
        "c_crossattn_0": torch.randn(1, 77, context_dim, generator=generator).repeat(views, 1, 1),
        "c_concat_0": torch.rand(views, 3, 8 * latent, 8 * latent, generator=generator),
        "reference_image_noisy": torch.randn(1, 4, latent, latent, generator=generator).repeat(views, 1, 1, 1),
    }


def apply_model(model, inputs: dict[str, torch.Tensor], kind: str, autocast: str) -> torch.Tensor:
    """One official ``apply_model`` call: ``cond`` (with the reference) or ``uc``."""
    cond = {"c_crossattn": [inputs["c_crossattn_0"]], "c_concat": [inputs["c_concat_0"]]}
    scope = torch.autocast("cpu", dtype=torch.bfloat16) if autocast == "bf16" else contextlib.nullcontext()
    with torch.no_grad(), scope:
        if kind == "cond":
            return model.apply_model(inputs["x_noisy"], inputs["t"], cond, inputs["reference_image_noisy"])
        return model.apply_model(inputs["x_noisy"], inputs["t"], cond, None, uc=True)


def call_pair(model, inputs: dict[str, torch.Tensor], autocast: str):
    results = {}
    for kind in ("cond", "uc"):
        started = time.perf_counter()
        eps = apply_model(model, inputs, kind, autocast)
        results[kind] = (time.perf_counter() - started, eps)
    return results


def describe(eps: torch.Tensor) -> dict:
    if eps.device.type == "meta":
        return {"shape": list(eps.shape), "dtype": str(eps.dtype).removeprefix("torch."), "device": "meta"}
    dtype = str(eps.dtype).removeprefix("torch.")
    eps = eps.float()
    return {"shape": list(eps.shape), "dtype": dtype, "finite": bool(torch.isfinite(eps).all()),
            "mean_abs": round(eps.abs().mean().item(), 6)}


def run_config(model, views: int, latent: int, context_dim: int, autocast: str, options) -> dict:
    if options.golden:
        from safetensors.torch import load_file

        golden = load_file(options.golden)
        inputs = {k: golden[k] for k in ("x_noisy", "t", "c_crossattn_0", "c_concat_0", "reference_image_noisy")}
        views, latent = inputs["x_noisy"].shape[0], inputs["x_noisy"].shape[-1]
    else:
        golden = None
        inputs = make_inputs(views, latent, context_dim, options.seed)
    if options.dry_run:
        inputs = {k: v.to("meta") for k, v in inputs.items()}
    times: dict[str, list[float]] = {"cond": [], "uc": []}
    outputs = {}
    for index in range(options.warmup + options.repeats):
        results = call_pair(model, inputs, autocast)
        for kind, (seconds, eps) in results.items():
            if index >= options.warmup:
                times[kind].append(round(seconds, 4))
            outputs[kind] = eps
        print(f"  views {views} autocast {autocast} call {index + 1}/{options.warmup + options.repeats}: "
              f"cond {results['cond'][0]:.3f} s, uc {results['uc'][0]:.3f} s", file=sys.stderr, flush=True)
    run = {
        "views": views, "latent": f"{latent}x{latent}", "weights": "float32", "autocast": autocast,
        "video_length_patched": False, "warmup_calls_not_reported": options.warmup,
        "apply_model_cond_s": times["cond"], "apply_model_uc_s": times["uc"],
        "peak_rss_mib_so_far": peak_rss_mib(),
    }
    for kind in ("cond", "uc"):
        run[f"apply_model_{kind}_median_s"] = round(statistics.median(times[kind]), 4)
        run[f"apply_model_{kind}_min_s"] = min(times[kind])
    run["seconds_per_step"] = round(run["apply_model_cond_median_s"] + run["apply_model_uc_median_s"], 4)
    run["outputs"] = {kind: describe(eps) for kind, eps in outputs.items()}
    if options.flops and not options.dry_run:
        for kind in ("cond", "uc"):
            run[f"flops_{kind}"] = count_flops(lambda kind=kind: apply_model(model, inputs, kind, autocast))
        run["flops_per_step"] = run["flops_cond"] + run["flops_uc"]
    if golden is not None:
        run["golden_max_abs_diff"] = {
            kind: (outputs[kind].float() - golden[f"eps_{kind}"]).abs().max().item() for kind in ("cond", "uc")}
    return run


# ---------------------------------------------------------------- main


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official-repo", type=Path, required=True,
                        help="checkout of FreedomGu/DiffPortrait3D (root or its DiffPortrait3D/ folder)")
    parser.add_argument("--config", type=Path, help=f"model config (.yaml, or .json with 'official_yaml_equivalent'); "
                                                    f"default {OFFICIAL_YAML} in the checkout")
    parser.add_argument("--diffusers-path", type=Path, default=os.environ.get("DP3D_DIFFUSERS_011") or None,
                        help="folder holding diffusers 0.11.0 (pip install --no-deps --target DIR diffusers==0.11.0); "
                             "default $DP3D_DIFFUSERS_011, else the installed diffusers if it is 0.11.x")
    parser.add_argument("--views", default="8", help="views per call, comma list; multiples of 8 (official motion "
                                                     "modules hard-code groups of 8)")
    parser.add_argument("--latent", type=int, default=16, help="latent side L (hint is 8L)")
    parser.add_argument("--repeats", type=int, default=4, help="timed cond+uc pairs per configuration")
    parser.add_argument("--warmup", type=int, default=0, help="untimed pairs first (the reference used 0)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--autocast", default="none", help="none, bf16, or a comma list (run in this order)")
    parser.add_argument("--tiny", action="store_true", help="tiny shape of shared/reference/tiny (smoke test)")
    parser.add_argument("--cond-stage", choices=("standin", "none"), default="standin",
                        help="untimed text encoder: parameter-count stand-in (default) or none")
    parser.add_argument("--weights", type=Path, help="safetensors state dict (official key names) to load strictly")
    parser.add_argument("--golden", type=Path, help="golden_apply_v*.safetensors: take its inputs, compare outputs")
    parser.add_argument("--dry-run", action="store_true",
                        help="build the model and run each call once on the meta device: checks config, parameter "
                             "count and shapes of the FULL model in seconds without memory; times are meaningless")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--flops", action="store_true",
                        help="also count the floating-point work of each call (one more untimed call each)")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--out", type=Path, help="also write the JSON object to this file")
    options = parser.parse_args(argv)
    options.views = [int(v) for v in options.views.split(",")]
    options.autocast = options.autocast.split(",")
    if any(v <= 0 or v % 8 for v in options.views):
        parser.error("--views: the official code only runs with multiples of 8 views")
    if any(a not in ("none", "bf16") for a in options.autocast):
        parser.error("--autocast: none or bf16")
    if options.repeats < 1:
        parser.error("--repeats must be >= 1")
    if options.dry_run:
        if options.weights or options.golden:
            parser.error("--dry-run cannot load --weights / --golden")
        options.repeats, options.warmup = 1, 0
    return options


def main(argv=None) -> dict:
    options = parse_args(argv)
    torch.set_num_threads(options.threads)
    checkout = resolve_checkout(options.official_repo)
    config_path = options.config or checkout / OFFICIAL_YAML
    model_config = load_model_config(config_path)
    if options.tiny:
        model_config = make_tiny(model_config)
    cond_stage = set_cond_stage(model_config, options.cond_stage)
    context_dim = model_config["params"]["unet_config"]["params"]["context_dim"]

    use_private_pycache()
    install_standins(options.diffusers_path)
    sys.path.insert(0, str(checkout))

    loadavg_at_start = os.getloadavg()
    started = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # the official code prints its whole config
        util = importlib.import_module("control_model.ControlNet.ldm.util")
        with MetaFactories() if options.dry_run else contextlib.nullcontext():
            model = util.instantiate_from_config(to_attr(model_config))
        model = model.eval() if options.dry_run else model.cpu().eval()
    build_seconds = time.perf_counter() - started
    rss_after_build = peak_rss_mib()

    loaded = None
    if options.weights:
        from safetensors.torch import load_file

        state = {k: (v.float() if v.is_floating_point() else v) for k, v in load_file(options.weights).items()}
        model.load_state_dict(state, strict=True)
        loaded = {"file": str(options.weights), "keys": len(state)}
        del state

    groups = {"model.diffusion_model": model.model.diffusion_model, "control_model": model.control_model,
              "pose_control_model": model.pose_control_model, "first_stage_model": model.first_stage_model,
              "cond_stage_model": model.cond_stage_model}
    report = {
        "title": "CPU timing of one apply_model call of the official DiffPortrait3D code (random weights)",
        "command": " ".join([Path(sys.executable).name, *sys.argv]) if argv is None else argv,
        "machine": {"cpu": cpu_model(), "logical_cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "torch": torch.__version__, "python": platform.python_version(),
                    "loadavg_at_start": [round(x, 2) for x in loadavg_at_start]},
        "dry_run_on_meta_device": options.dry_run,
        "config": str(config_path), "tiny": options.tiny, "cond_stage": cond_stage,
        "diffusers": str(options.diffusers_path or "installed"),
        "official_sources": official_sources(checkout, config_path),
        "parameters": {name: sum(p.numel() for p in m.parameters()) if m is not None else 0
                       for name, m in groups.items()},
        "parameters_total": sum(p.numel() for p in model.parameters()),
        "weights_loaded": loaded,
        "build_seconds": round(build_seconds, 2),
        "peak_rss_mib_after_build_fp32": rss_after_build,
        "runs": [],
    }
    print(f"built in {build_seconds:.1f} s, {report['parameters_total']:,} parameters, "
          f"VmHWM {rss_after_build:.0f} MiB; official sources match {OFFICIAL_COMMIT[:7]}: "
          f"{report['official_sources']['all_match']}", file=sys.stderr, flush=True)
    for autocast in options.autocast:
        for views in options.views:
            report["runs"].append(run_config(model, views, options.latent, context_dim, autocast, options))
    report["peak_rss_mib"] = peak_rss_mib()
    report["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]

    for run in report["runs"]:
        print(f"views {run['views']} latent {run['latent']} autocast {run['autocast']}: "
              f"cond median {run['apply_model_cond_median_s']:.3f} s, uc median {run['apply_model_uc_median_s']:.3f} s, "
              f"seconds_per_step {run['seconds_per_step']:.3f}, peak RSS {run['peak_rss_mib_so_far']:.0f} MiB",
              file=sys.stderr)
    text = json.dumps(report, indent=1)
    if options.out:
        options.out.write_text(text + "\n")
    if options.json:
        print(text)
    return report


if __name__ == "__main__":
    main()
