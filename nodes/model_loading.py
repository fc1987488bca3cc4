"""Build ComfyUI model objects from the files ``python -m diffportrait3d convert`` writes.

Every converted file records its component and architecture in its safetensors metadata; nothing
here guesses sizes or head counts from file names or shapes.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import comfy.cldm.cldm
import comfy.controlnet
import comfy.model_base
import comfy.model_management
import comfy.model_patcher
import comfy.ops
import comfy.sd
import comfy.supported_models
import comfy.utils
import folder_paths
import torch
from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

from ..kernels.checkpoint.components import COMPONENT_FILES
from ..kernels.checkpoint.errors import ConversionError
from ..kernels.checkpoint.families import family_named
from ..kernels.checkpoint.official_release import checkpoint_source, convert_command
from ..kernels.model.cross_view_attention import CrossViewModuleSet
from ..kernels.model.image_range import to_signed_unit_range
from ..kernels.model.unet_architecture import comfy_unet_kwargs
from .cpu.operations import cpu_compute_dtype, pack_operations
from .cpu.shared_text import SharedTextControlNet, share_text_context_
from .cpu.swaps import has_cpu_layers, use_cpu_modules_

MODEL_FOLDER = "diffportrait3d"
RECONVERT = f"convert it again: {convert_command()}"


def register_model_folder() -> None:
    """Make ``models/diffportrait3d/`` (and extra_model_paths entries named diffportrait3d) a model folder."""
    default = os.path.join(folder_paths.models_dir, MODEL_FOLDER)
    if MODEL_FOLDER in folder_paths.folder_names_and_paths:
        folder_paths.add_model_folder_path(MODEL_FOLDER, default)
    else:
        folder_paths.folder_names_and_paths[MODEL_FOLDER] = ([default], {".safetensors"})


def model_file_path(filename: str, input_name: str, component: str, family: str = "dp3d") -> str:
    """Full path of ``filename`` in the diffportrait3d folder, or an error that names the input, the folder, the
    file of ``family`` to put there, where it comes from and the command that makes it."""
    path = folder_paths.get_full_path(MODEL_FOLDER, filename)
    if path is None:
        folders = folder_paths.get_folder_paths(MODEL_FOLDER)
        out = folders[0] if folders else "ComfyUI/models/diffportrait3d"
        raise FileNotFoundError(
            f"{input_name}: '{filename}' is not in the diffportrait3d model folder ({', '.join(folders)}). Put "
            f"{family_named(family).file_name(component)} there: it is made from {checkpoint_source(family)} by: "
            f"{convert_command(out, family=family)}"
        )
    return path


def load_converted(
    path: str, component: str, input_name: str, family: str | None = None
) -> tuple[dict[str, torch.Tensor], dict, dict]:
    """State dict, architecture record and raw metadata of a converted file. A ``ConversionError`` naming
    ``input_name``, the file and the fix when the file is unreadable (truncated, empty, a renamed pickle),
    another component, of another model family than ``family`` (None: any), not converted at all, or has a
    missing or broken ``dp3d.architecture`` record."""
    name = os.path.basename(path)
    try:
        state_dict, metadata = comfy.utils.load_torch_file(path, safe_load=True, return_metadata=True)
    except Exception as error:  # safetensors raises its own SafetensorError, torch a RuntimeError/pickle error
        raise ConversionError(
            f"{input_name}: {name} is not a readable safetensors file ({type(error).__name__}: {error}). "
            f"It may be truncated or a renamed pickle; {RECONVERT}"
        ) from None
    metadata = metadata or {}
    found = metadata.get("dp3d.component")
    if found is None:
        raise ConversionError(
            f"{input_name}: {name} has no DiffPortrait3D metadata. Select {COMPONENT_FILES[component]}, "
            f"made from the official checkpoint by: {convert_command()}"
        )
    found_family = family_named(metadata.get("dp3d.family"))
    if found != component:
        raise ConversionError(
            f"{input_name}: {name} holds the {found_family.title} '{found}' component, this input needs "
            f"'{component}' ({found_family.file_name(component)})"
        )
    if family is not None and found_family.name != family:
        wanted = family_named(family)
        raise ConversionError(
            f"{input_name}: {name} is a {found_family.title} file, this input needs the {wanted.title}'s "
            f"{wanted.file_name(component)} (made by: {convert_command(family=family)})"
        )
    architecture = recorded_json(metadata, "dp3d.architecture", input_name, name)
    if not isinstance(architecture, dict):
        raise ConversionError(f"{input_name}: {name} has a dp3d.architecture record that is not an object; {RECONVERT}")
    return state_dict, architecture, metadata


def recorded_json(metadata: dict, key: str, input_name: str, name: str):
    """The JSON value stored under metadata ``key``, or a ``ConversionError`` when it is missing or not JSON."""
    if key not in metadata:
        raise ConversionError(f"{input_name}: {name} has no {key} record; {RECONVERT}")
    try:
        return json.loads(metadata[key])
    except (TypeError, ValueError):
        raise ConversionError(f"{input_name}: {name} has a {key} record that is not valid JSON; {RECONVERT}") from None


def load_weights_strictly(module: torch.nn.Module, state_dict, input_name: str, path: str, what: str = "architecture"):
    """Load ``state_dict`` into ``module``; every key must be present and fit (shape included), else a
    ``ConversionError`` naming the input and file (a half-filled network would render black views)."""
    try:
        missing, unexpected = module.load_state_dict(state_dict, strict=False)
    except RuntimeError as error:  # size mismatches
        first = str(error).strip().splitlines()[1:2] or [str(error)[:200]]
        raise ConversionError(
            f"{input_name}: {os.path.basename(path)} has tensors of the wrong shape for its recorded {what} "
            f"({first[0].strip()}); {RECONVERT}"
        ) from None
    require_fit(missing, unexpected, input_name, path, what)


@dataclass(frozen=True)
class NetworkSetup:
    """How a network is built and run, chosen the way ComfyUI chooses for its own models: the device it runs on,
    the dtype its weights are stored in, the dtype ComfyUI casts them to for computing (None: the storage
    dtype) and the layer classes ("operations") it is built with."""

    load_device: torch.device
    dtype: torch.dtype
    manual_cast_dtype: torch.dtype | None
    operations: type


def inference_setup(state_dict: dict[str, torch.Tensor]) -> NetworkSetup:
    """The setup for a network with these weights."""
    return inference_setup_for(comfy.utils.weight_dtype(state_dict))


def inference_setup_for(
    weight_dtype: torch.dtype | None,
    storage_dtype: torch.dtype | None = None,
    cpu_matmul: str | None = None,
    cpu_compute: str | None = None,
) -> NetworkSetup:
    """``inference_setup`` for weights of ``weight_dtype``. ``storage_dtype`` forces the dtype the weights are
    kept in (as ComfyUI's ``--bf16-unet``/``--fp16-unet`` do); ComfyUI then picks the manual-cast (compute)
    dtype for the device, e.g. bf16 weights computed in float32 on a CPU. The operations are ComfyUI's; on a
    CPU, the pack's CPU layers (``nodes/cpu``) unless ``cpu_matmul`` (default: ``$DIFFPORTRAIT3D_CPU_MATMUL``)
    is ``pytorch``. On a CPU, ``cpu_compute`` ``bf16`` (default:
    ``$DIFFPORTRAIT3D_CPU_COMPUTE``) stores and computes in bf16 instead, overriding ``storage_dtype``."""
    load_device = comfy.model_management.get_torch_device()
    cpu_dtype = cpu_compute_dtype(cpu_compute) if comfy.model_management.is_device_cpu(load_device) else None
    if cpu_dtype is not None:
        dtype, manual_cast_dtype = cpu_dtype, None
    else:
        dtype = storage_dtype or comfy.model_management.unet_dtype(
            model_params=-1, supported_dtypes=[torch.float16, torch.bfloat16, torch.float32], weight_dtype=weight_dtype
        )
        manual_cast_dtype = comfy.model_management.unet_manual_cast(dtype, load_device)
    operations = comfy.ops.pick_operations(dtype, manual_cast_dtype)
    if comfy.model_management.is_device_cpu(load_device):
        operations = pack_operations(operations, cpu_matmul)
    return NetworkSetup(load_device, dtype, manual_cast_dtype, operations)


def model_patcher(network: torch.nn.Module, setup: NetworkSetup) -> comfy.model_patcher.ModelPatcher:
    """``network`` in a ModelPatcher, so ComfyUI's model management loads and offloads it."""
    patcher = comfy.model_patcher.ModelPatcher(
        network, load_device=setup.load_device, offload_device=comfy.model_management.unet_offload_device()
    )
    if isinstance(network, comfy.model_base.BaseModel) and has_cpu_layers(setup.operations):
        share_text_context_(patcher)
    return patcher


def require_fit(missing, unexpected, input_name: str, path: str, what: str = "architecture") -> None:
    """A ``ConversionError`` when a file lacks tensors its recorded ``what`` needs, or holds extra ones."""
    if missing or unexpected:
        found = [f"{len(keys)} {kind}, e.g. {', '.join(list(keys)[:3])}"
                 for kind, keys in (("missing", missing), ("unexpected", unexpected)) if keys]
        raise ConversionError(
            f"{input_name}: {os.path.basename(path)} does not fit its recorded {what} ({'; '.join(found)}); {RECONVERT}"
        )


def build_pose_controlnet(architecture: dict, setup: NetworkSetup) -> comfy.controlnet.ControlNet:
    """ComfyUI's own ControlNet object for a pose ControlNet of this recorded architecture (weights not
    loaded), with the hint rescaled to [-1, 1] as the official model expects."""
    kwargs = comfy_unet_kwargs(architecture)
    kwargs.pop("out_channels")
    network = comfy.cldm.cldm.ControlNet(
        hint_channels=architecture.get("hint_channels", 3),
        operations=setup.operations,
        dtype=setup.dtype,
        device=comfy.model_management.unet_offload_device(),
        **kwargs,
    )
    use_cpu_modules_(network, setup.operations)
    control_class = SharedTextControlNet if has_cpu_layers(setup.operations) else comfy.controlnet.ControlNet
    return control_class(
        network,
        load_device=setup.load_device,
        manual_cast_dtype=setup.manual_cast_dtype,
        preprocess_image=to_signed_unit_range,
    )


def load_pose_controlnet(path: str, input_name: str = "pose_controlnet", family: str | None = None) -> comfy.controlnet.ControlNet:
    """``build_pose_controlnet`` for a converted file, sized from its metadata, weights loaded."""
    state_dict, architecture, _ = load_converted(path, "pose_controlnet", input_name, family)
    control = build_pose_controlnet(architecture, inference_setup(state_dict))
    weights = comfy.utils.state_dict_prefix_replace(state_dict, {"control_model.": ""}, filter_keys=True)
    outside = sorted(key for key in state_dict if not key.startswith("control_model."))
    require_fit([], outside, input_name, path)
    load_weights_strictly(control.control_model, weights, input_name, path)
    return control


def build_appearance_net(architecture: dict, setup: NetworkSetup) -> UNetModel:
    """The appearance reference net of this recorded architecture as a ComfyUI UNet (weights not loaded),
    without the ``out`` layer: nothing after its last bank write is ever used."""
    network = UNetModel(
        operations=setup.operations, dtype=setup.dtype, device=comfy.model_management.unet_offload_device(),
        **comfy_unet_kwargs(architecture),
    )
    network.out = torch.nn.Identity()
    network.architecture = architecture
    return use_cpu_modules_(network, setup.operations).eval()


def load_appearance_net(path: str, input_name: str = "appearance_net", family: str | None = None) -> comfy.model_patcher.ModelPatcher:
    """The appearance net of a converted file in a ModelPatcher that ComfyUI's model management loads and
    offloads."""
    state_dict, architecture, _ = load_converted(path, "appearance", input_name, family)
    setup = inference_setup(state_dict)
    network = build_appearance_net(architecture, setup)
    load_weights_strictly(network, state_dict, input_name, path)
    return model_patcher(network, setup)


class RecordedSD15(comfy.supported_models.SD15):
    """SD1.5 family (latent format, sampling, CLIP), with the UNet sizes — head counts included — taken
    from the recorded architecture instead of SD1.5's fixed 8 heads."""

    unet_extra_config = {}


def build_dp3d_unet(architecture: dict, setup: NetworkSetup):
    """An SD1.5-family ComfyUI ``BaseModel`` whose UNet has this recorded architecture (weights not loaded)."""
    kwargs = comfy_unet_kwargs(architecture)
    config = RecordedSD15({k: v for k, v in kwargs.items() if k != "use_checkpoint"})
    config.set_inference_dtype(setup.dtype, setup.manual_cast_dtype)
    config.custom_operations = setup.operations
    model = config.get_model({}, "")
    use_cpu_modules_(model.diffusion_model, setup.operations)
    return model


def load_dp3d_unet(path: str, input_name: str = "unet", family: str | None = None) -> comfy.model_patcher.ModelPatcher:
    """The DiffPortrait3D-trained base UNet as an SD1.5-family ComfyUI MODEL, sized from its metadata
    (the full-size file also loads with the core UNETLoader; this one loads any recorded size)."""
    state_dict, architecture, _ = load_converted(path, "unet", input_name, family)
    setup = inference_setup(state_dict)
    model = build_dp3d_unet(architecture, setup)
    load_weights_strictly(model.diffusion_model, model.model_config.process_unet_state_dict(state_dict), input_name, path)
    return model_patcher(model, setup)


def load_dp3d_vae(path: str, input_name: str = "vae") -> comfy.sd.VAE:
    """The checkpoint's VAE as ComfyUI's VAE, built from the recorded ddconfig (the full-size file is SD's
    VAE and also loads with the core VAELoader; this one loads any recorded size, e.g. the tiny test VAE)."""
    state_dict, architecture, _ = load_converted(path, "vae", input_name)
    if "ddconfig" not in architecture or "embed_dim" not in architecture:
        raise ConversionError(f"{input_name}: {os.path.basename(path)} records no VAE ddconfig/embed_dim; {RECONVERT}")
    params = {"ddconfig": architecture["ddconfig"], "embed_dim": architecture["embed_dim"]}
    given = set(state_dict)
    try:
        vae = comfy.sd.VAE(sd=state_dict, config={"params": params})
    except RuntimeError as error:  # size mismatches
        raise ConversionError(
            f"{input_name}: {os.path.basename(path)} has tensors of the wrong shape for its recorded architecture "
            f"({str(error).strip().splitlines()[-1].strip()[:200]}); {RECONVERT}"
        ) from None
    expected = set(vae.first_stage_model.state_dict())
    require_fit(sorted(expected - given), sorted(given - expected), input_name, path)
    return vae


def build_cross_view_modules(architecture: dict, placements: list[dict], setup: NetworkSetup) -> CrossViewModuleSet:
    """The cross-view module set of a recorded UNet architecture and placement (weights not loaded)."""
    motion = architecture["unet_additional_kwargs"]["motion_module_kwargs"]
    modules = CrossViewModuleSet(
        placements,
        heads=motion["num_attention_heads"],
        max_len=motion.get("temporal_position_encoding_max_len", 32),
        operations=setup.operations,
        dtype=setup.dtype,
        device=comfy.model_management.unet_offload_device(),
    )
    return use_cpu_modules_(modules, setup.operations).eval()


def load_cross_view_modules(path: str, input_name: str = "cross_view", family: str | None = None) -> comfy.model_patcher.ModelPatcher:
    """The cross-view module set of a converted file, in a ModelPatcher managed by ComfyUI."""
    state_dict, architecture, metadata = load_converted(path, "cross_view", input_name, family)
    setup = inference_setup(state_dict)
    placements = recorded_json(metadata, "dp3d.placement", input_name, os.path.basename(path))
    modules = build_cross_view_modules(architecture, placements, setup)
    load_weights_strictly(modules, state_dict, input_name, path, "placement")
    return model_patcher(modules, setup)


def load_empty_prompt(path: str, input_name: str = "empty_prompt") -> list:
    """The CONDITIONING of the prompt '' stored by ``convert`` (``[[cond [1, 77, D], {"pooled_output"}]]``),
    as CLIPTextEncode would give it with the converted text encoder; no text encoder is loaded."""
    state_dict, architecture, _ = load_converted(path, "empty_prompt", input_name)
    cond, pooled = state_dict.get("cond"), state_dict.get("pooled_output")
    width = architecture.get("context_dim")
    fits = set(state_dict) == {"cond", "pooled_output"} and cond.ndim == 3 and cond.shape[0] == 1
    if not fits or cond.shape[2] != width or tuple(pooled.shape) != (1, width):
        raise ConversionError(
            f"{input_name}: {os.path.basename(path)} does not hold exactly a [1, tokens, {width}] 'cond' and a "
            f"[1, {width}] 'pooled_output'; {RECONVERT}"
        )
    return [[cond.float(), {"pooled_output": pooled.float()}]]
