"""Convert an official DiffPortrait3D or DiffPortrait360 checkpoint into one safetensors file per component.

The family is recognised by the checkpoint's keys (``families.py``); it chooses the default architecture,
the expected layout, the file names and the cross-view placement recorded in the cross-view file.

Reading is lazy (memory-mapped pickle or safetensors) and writing streams one tensor at a time, so
peak memory stays near one tensor plus the page cache — never the checkpoint twice.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ... import __version__ as PACK_VERSION
from .components import COMPONENT_FILES, route_key
from .empty_prompt import empty_prompt_conditioning, write_empty_prompt
from .errors import ConversionError
from .families import DP3D, SHARED_WITH_360, ModelFamily, detect_family, family_named
from .layout import cross_view_placements, is_buffer_key
from .safetensors_stream import write_safetensors_streaming
from .source import CheckpointSource, file_sha256, open_checkpoint
from .validation import raise_if_invalid, validate_checkpoint_keys

log = logging.getLogger(__name__)

FORMAT_VERSION = "1"
OFFICIAL_CONFIG_PATH = Path(__file__).with_name("official_config.json")
TINY_CONFIG_PATH = Path(__file__).with_name("tiny_config.json")
STORAGE_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def load_architecture(config_path: str | Path | None = None) -> dict:
    """The yaml-equivalent architecture dict (``official_yaml_equivalent``) of a config JSON file;
    the official DiffPortrait3D one when ``config_path`` is None."""
    path = Path(config_path) if config_path else OFFICIAL_CONFIG_PATH
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ConversionError(f"cannot read architecture config {path}: {error}") from error
    architecture = data.get("official_yaml_equivalent", data)
    if "model" not in architecture or "params" not in architecture["model"]:
        raise ConversionError(f"{path} has no 'model.params' (expected the official yaml as JSON)")
    return architecture


def component_architectures(architecture: dict) -> dict[str, dict]:
    """The architecture record each converted file carries in its metadata (loaders build from it)."""
    params = architecture["model"]["params"]
    unet = params["unet_config"]["params"]
    return {
        "unet": {k: v for k, v in unet.items() if k != "unet_additional_kwargs"},
        "cross_view": unet,
        "appearance": params["appearance_control_stage_config"]["params"],
        "pose_controlnet": params["pose_control_stage_config"]["params"],
        "vae": {**params["first_stage_config"]["params"], "scale_factor": params.get("scale_factor", 0.18215)},
        "text_encoder": {"target": _target_of(params["cond_stage_config"])},
    }


def _target_of(stage_config) -> str:
    """The ``target`` of an ldm stage config, which may also be a bare string like '__is_unconditional__'."""
    return stage_config if isinstance(stage_config, str) else stage_config.get("target", "")


@dataclass
class ConversionReport:
    """What a conversion did: files written, where every source key went, what was missing or extra."""

    source: Path
    source_sha256: str
    out_dir: Path
    dtype: str
    family: str = DP3D.name
    written: dict[str, tuple[Path, int, int]] = field(default_factory=dict)  # component -> (path, keys, bytes)
    assignments: dict[str, str] = field(default_factory=dict)  # source key -> component
    dropped: dict[str, str] = field(default_factory=dict)  # source key -> reason
    missing_optional: dict[str, int] = field(default_factory=dict)
    unexpected: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        lines = [
            f"converted {self.source.name} ({family_named(self.family).title} checkpoint, sha256 "
            f"{self.source_sha256[:12]}…) in {self.seconds:.1f} s, {self.dtype}:"
        ]
        for component, (path, n_keys, n_bytes) in self.written.items():
            lines.append(f"  {path}  [{component}: {n_keys} tensors, {n_bytes / 2**20:.1f} MiB]")
        reasons: dict[str, int] = {}
        for reason in self.dropped.values():
            reasons[reason] = reasons.get(reason, 0) + 1
        for reason, count in reasons.items():
            lines.append(f"  dropped {count} keys: {reason}")
        for part, count in self.missing_optional.items():
            lines.append(f"  not in the checkpoint (optional): {part}, {count} keys")
        if self.unexpected:
            lines.append(f"  unknown extra keys, not converted ({len(self.unexpected)}): " + ", ".join(self.unexpected[:10]))
        return "\n".join(lines)


def convert_checkpoint(
    src: str | Path,
    out_dir: str | Path,
    dtype: str = "fp16",
    config_path: str | Path | None = None,
    components: tuple[str, ...] | None = None,
) -> ConversionReport:
    """Validate the checkpoint file ``src`` against the architecture, then write the component files
    (all present ones, or only ``components``) into ``out_dir``.

    Nothing is written when validation fails (``ConversionError`` with what was expected and found).
    Floating-point parameters are stored as ``dtype``; buffers (positional tables) keep their dtype.
    """
    started = time.perf_counter()
    with open_checkpoint(src) as source:
        family = detect_family(source.infos) or DP3D
        architecture = load_architecture(config_path or family.config_path)
        config_name = Path(config_path).name if config_path else f"the official {family.title} config"
        report = convert_source(
            source,
            out_dir,
            architecture,
            dtype,
            config_name,
            source_sha256=file_sha256(source.path),
            components=components,
            family=family,
        )
    report.seconds = time.perf_counter() - started
    return report


def convert_source(
    source: CheckpointSource,
    out_dir: str | Path,
    architecture: dict,
    dtype: str = "fp16",
    config_name: str = "the official config",
    source_sha256: str = "",
    components: tuple[str, ...] | None = None,
    family: ModelFamily | None = None,
) -> ConversionReport:
    """``convert_checkpoint`` for an already opened (or in-memory) ``CheckpointSource``; ``family`` (default:
    recognised by the keys) chooses the layout and the file names."""
    if dtype not in STORAGE_DTYPES:
        raise ConversionError(f"dtype must be one of {sorted(STORAGE_DTYPES)}, not {dtype!r}")
    unknown = set(components or ()) - set(COMPONENT_FILES)
    if unknown:
        raise ConversionError(f"unknown components {sorted(unknown)}; choose from {list(COMPONENT_FILES)}")
    started = time.perf_counter()
    family = family or detect_family(source.infos) or DP3D
    found = {key: info.shape for key, info in source.infos.items()}
    validation = validate_checkpoint_keys(found, architecture, family)
    raise_if_invalid(validation, found, source.path.name, config_name)
    out_dir = Path(out_dir)
    report = ConversionReport(
        source=source.path,
        source_sha256=source_sha256,
        out_dir=out_dir,
        dtype=dtype,
        family=family.name,
        missing_optional=validation.missing_optional,
        unexpected=validation.unexpected,
    )
    plan: dict[str, list[tuple[str, str]]] = {}  # component -> [(target key, source key)]
    unexpected = set(validation.unexpected)
    for key in source.infos:
        routing = route_key(key)
        if key in unexpected:
            report.dropped[key] = "unknown extra key: not in the architecture"
        elif routing.component is None:
            report.dropped[key] = routing.dropped_reason
        elif routing.component not in family.components:
            report.dropped[key] = SHARED_WITH_360
        else:
            plan.setdefault(routing.component, []).append((routing.target_key, key))
            report.assignments[key] = routing.component
    out_dir.mkdir(parents=True, exist_ok=True)
    records = component_architectures(architecture)
    unet_params = architecture["model"]["params"]["unet_config"]["params"]
    for component in COMPONENT_FILES:
        pairs = plan.get(component)
        if not pairs or (components is not None and component not in components):
            continue
        metadata = {
            **_source_record(source, source_sha256, family),
            "dp3d.component": component,
            "dp3d.architecture": json.dumps(records[component], sort_keys=True),
            "dp3d.dtype": dtype,
        }
        if component == "cross_view":
            metadata.update(cross_view_record(unet_params, family))
        entries = [
            (target, source.infos[key].shape, _stored_dtype(key, source.infos[key].dtype, STORAGE_DTYPES[dtype]))
            for target, key in pairs
        ]
        path = out_dir / family.file_name(component)
        log.info("writing %s (%d tensors)", path, len(entries))
        size = write_safetensors_streaming(path, entries, _fetcher(source, dict(pairs)), metadata)
        report.written[component] = (path, len(entries), size)
    text_pairs = plan.get("text_encoder")
    if text_pairs and (components is None or "empty_prompt" in components):
        report.written["empty_prompt"] = _write_empty_prompt(source, source_sha256, text_pairs, dtype, out_dir, family)
    report.seconds = time.perf_counter() - started
    return report


def cross_view_record(unet_params: dict, family: ModelFamily) -> dict[str, str]:
    """The cross-view file's placement record: ``dp3d.placement``, the modules in execution order (which block
    each follows, its order there, width and resolution), and ``dp3d.cross_view``, what holds for the set
    (the rule that placed them, whether one sits in the middle block, the positional table's length, the
    branches the modules outside the middle block run on)."""
    placements = cross_view_placements(unet_params, family.placement_rule)
    motion = unet_params["unet_additional_kwargs"]["motion_module_kwargs"]
    summary = {
        "rule": family.placement_rule,
        "middle_module": any(p.location == "middle" for p in placements),
        "positional_length": motion.get("temporal_position_encoding_max_len", 24),
        "branches": list(family.cross_view_branches),
    }
    return {
        "dp3d.placement": json.dumps([dataclasses.asdict(p) for p in placements]),
        "dp3d.cross_view": json.dumps(summary),
    }


def _source_record(source: CheckpointSource, source_sha256: str, family: ModelFamily = DP3D) -> dict[str, str]:
    return {
        "dp3d.family": family.name,
        "dp3d.format_version": FORMAT_VERSION,
        "dp3d.pack_version": PACK_VERSION,
        "dp3d.source_file": source.path.name,
        "dp3d.source_sha256": source_sha256,
    }


def _write_empty_prompt(
    source, source_sha256: str, text_pairs, dtype: str, out_dir: Path, family: ModelFamily
) -> tuple[Path, int, int]:
    """The conditioning of ``''`` from the text encoder as converted (weights rounded to the storage dtype,
    computed in float32), written beside the component files."""
    storage = STORAGE_DTYPES[dtype]
    weights = {
        target: source.tensor(key).to(_stored_dtype(key, source.infos[key].dtype, storage)) for target, key in text_pairs
    }
    path = out_dir / family.file_name("empty_prompt")
    log.info("writing %s (the text encoder's conditioning of the empty prompt)", path)
    metadata = {**_source_record(source, source_sha256, family), "dp3d.dtype": "fp32", "dp3d.text_encoder_dtype": dtype}
    size = write_empty_prompt(path, empty_prompt_conditioning(weights), metadata)
    return path, 2, size


def _fetcher(source, source_key_of: dict[str, str]):
    return lambda target_key: source.tensor(source_key_of[target_key])


def _stored_dtype(key: str, found: torch.dtype, storage: torch.dtype) -> torch.dtype:
    """Floating parameters take the storage dtype; buffers (positional tables) and integers keep theirs."""
    if not found.is_floating_point or is_buffer_key(key):
        return found
    return storage
