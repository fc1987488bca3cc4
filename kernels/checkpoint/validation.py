"""Check a checkpoint's keys and shapes against its family's architecture before converting.

The expected key set is derived from the architecture config and the family's layout rules
(``families.py``) — for the official configs it equals the manifest of the real checkpoint key for key.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from .errors import ConversionError
from .families import DP3D, ModelFamily

# Parts the official loader (strict=False) tolerates missing: we report them, and convert without them.
OPTIONAL_PARTS = {
    "VAE (first_stage_model.*)": lambda key: key.startswith("first_stage_model."),
    "text encoder (cond_stage_model.*)": lambda key: key.startswith("cond_stage_model."),
    "cross-view positional tables (pos_encoder.pe)": lambda key: key.endswith(".pos_encoder.pe"),
    "DDPM schedule buffers": lambda key: "." not in key,
    "appearance-net hint block (never executed)": lambda key: key.startswith("control_model.input_hint_block."),
}
# Keys a checkpoint may carry that the architecture does not list (older transformers saved it).
TOLERATED_EXTRAS = {"cond_stage_model.transformer.text_model.embeddings.position_ids", "lvlb_weights"}
OPTIONAL_PARTS["CLIP position ids (a constant)"] = lambda key: key in TOLERATED_EXTRAS

SIGNATURE_PARTS = {
    "cross-view modules (model.diffusion_model.*_motion_module*)": lambda key: "_motion_module" in key,
    "appearance net (control_model.*)": lambda key: key.startswith("control_model."),
    "pose ControlNet (pose_control_model.*)": lambda key: key.startswith("pose_control_model."),
}


def optional_part_of(key: str) -> str | None:
    return next((name for name, belongs in OPTIONAL_PARTS.items() if belongs(key)), None)


@dataclass
class ValidationReport:
    """Outcome of comparing found keys/shapes with the expected ones."""

    n_expected: int
    n_found: int
    missing_required: list[str] = field(default_factory=list)
    shape_mismatches: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    missing_optional: dict[str, int] = field(default_factory=dict)
    unexpected: list[str] = field(default_factory=list)
    family: ModelFamily = DP3D
    n_cross_view_modules: int = 0

    @property
    def ok(self) -> bool:
        return not self.missing_required and not self.shape_mismatches


def validate_checkpoint_keys(
    found: dict[str, tuple[int, ...]], yaml_equivalent: dict, family: ModelFamily = DP3D
) -> ValidationReport:
    """Compare ``found`` (key -> shape) with the family's layout of the architecture; never raises, see
    ``raise_if_invalid``."""
    expected = family.expected_shapes(yaml_equivalent)
    report = ValidationReport(n_expected=len(expected), n_found=len(found), family=family)
    optional_missing: Counter[str] = Counter()
    for key, shape in expected.items():
        if key not in found:
            part = optional_part_of(key)
            if part:
                optional_missing[part] += 1
            else:
                report.missing_required.append(key)
        elif tuple(found[key]) != tuple(shape):
            report.shape_mismatches.append((key, tuple(shape), tuple(found[key])))
    report.missing_optional = dict(optional_missing)
    report.n_cross_view_modules = len({key.split(".temporal_transformer.")[0] for key in expected if "_motion_module" in key})
    report.unexpected = sorted(k for k in found if k not in expected and k not in TOLERATED_EXTRAS)
    return report


def describe_key_families(keys) -> str:
    """'model.diffusion_model.* (686), control_model.* (698), …' — a short picture of what a file holds."""
    families: Counter[str] = Counter()
    for key in keys:
        if "." not in key:
            families["top-level buffers"] += 1
            continue
        head = key.split(".", 1)[0]
        if head == "model" and key.count(".") > 1:
            head = ".".join(key.split(".", 2)[:2])
        families[head + ".*"] += 1
    return ", ".join(f"{name} ({count})" for name, count in families.most_common(8)) or "no tensors"


def guess_file_kind(keys) -> str:
    """A human guess of what a non-DiffPortrait3D file is, from its key names."""
    keys = list(keys)
    if any("lora" in key.lower() for key in keys):
        return "a LoRA"
    if any(k.startswith("control_model.zero_convs.") for k in keys) or any(k.startswith("zero_convs.") for k in keys):
        return "a plain ControlNet"
    if any(k.startswith("model.diffusion_model.") for k in keys):
        return "a plain Stable Diffusion checkpoint"
    if any(k.startswith("input_blocks.") for k in keys):
        return "a bare UNet"
    if any(k.startswith(("encoder.", "decoder.")) for k in keys):
        return "a VAE"
    return "a file of unknown kind (none of the key families of a model the converter knows)"


def raise_if_invalid(report: ValidationReport, found_keys, source_name: str, config_name: str) -> None:
    """Raise one readable ``ConversionError`` that says what was expected and what was found."""
    if report.ok:
        return
    found_keys = list(found_keys)
    title = report.family.title
    signature = SIGNATURE_PARTS if report.n_cross_view_modules else dict(list(SIGNATURE_PARTS.items())[1:])
    absent = [name for name, belongs in signature.items() if not any(belongs(k) for k in found_keys)]
    modules = f"with {report.n_cross_view_modules} cross-view modules " if report.n_cross_view_modules else ""
    expected_picture = (
        f"{report.n_expected} keys of the {title} architecture in {config_name}: SD1.5 UNet {modules}"
        "(model.diffusion_model.*), appearance net (control_model.*), pose ControlNet (pose_control_model.*), "
        "optionally VAE and text encoder"
    )
    found_picture = f"{report.n_found} keys: {describe_key_families(found_keys)}"
    if len(absent) == len(signature):
        raise ConversionError(
            f"{source_name} is not a DiffPortrait3D checkpoint; it looks like {guess_file_kind(found_keys)} "
            "(the converter knows DiffPortrait3D's and DiffPortrait360's two checkpoints).\n"
            f"  expected: {expected_picture}\n  found:    {found_picture}"
        )
    lines = [f"{source_name} does not match the {title} architecture in {config_name}."]
    lines.append(f"  expected: {expected_picture}")
    lines.append(f"  found:    {found_picture}")
    if absent:
        lines.append("  absent parts: " + "; ".join(absent))
    if report.missing_required:
        lines.append(
            f"  {len(report.missing_required)} required keys missing (truncated or partial file?), e.g. "
            + ", ".join(report.missing_required[:5])
        )
    if report.shape_mismatches:
        examples = "; ".join(f"{k}: expected {list(e)}, found {list(f)}" for k, e, f in report.shape_mismatches[:3])
        lines.append(
            f"  {len(report.shape_mismatches)} shapes differ (another architecture? pass --config): {examples}"
        )
    raise ConversionError("\n".join(lines))
