"""ComfyUI in this process, for the command line: find it, start its node registry with this pack, and
describe the nodes the way ``GET /object_info`` does.

Importing this module does not import ``comfy``; :func:`start_comfyui` does, once per process.
"""

from __future__ import annotations

import asyncio
import importlib
import sys
import types
from pathlib import Path

from .comfy_host import PACK_ROOT, comfyui_candidates, find_comfyui

_SESSION: types.SimpleNamespace | None = None


class ComfyUINotFound(RuntimeError):
    pass


def start_comfyui(
    host: Path | None = None,
    cpu: bool | None = None,
    input_directory: Path | None = None,
    output_directory: Path | None = None,
    temp_directory: Path | None = None,
    extra_model_paths: tuple[Path, ...] = (),
    pytorch_attention: bool = False,
    host_model_paths: bool = True,
) -> types.SimpleNamespace:
    """Import the ComfyUI at ``host`` (default: found as the tests find it), load its built-in nodes and
    this pack, and return ``(path, nodes, folder_paths, execution)``. ``cpu=None``: CPU when torch sees no
    CUDA. Directories and extra model path YAML files are applied like ComfyUI's own command line does
    (the host's own ``extra_model_paths.yaml`` too, unless ``host_model_paths`` is False);
    ``pytorch_attention`` is ComfyUI's ``--use-pytorch-cross-attention``.
    A second call returns the first session (ComfyUI's state is process-wide)."""
    global _SESSION
    if _SESSION is not None:
        return _SESSION
    host = host or find_comfyui(PACK_ROOT)
    if host is None:
        searched = ", ".join(f"{label}={path}" for label, path in comfyui_candidates(PACK_ROOT))
        raise ComfyUINotFound(
            f"no ComfyUI found (searched: {searched}); set COMFYUI_PATH to your ComfyUI folder, or use --server URL"
        )
    host = Path(host).resolve()
    if str(host) not in sys.path:
        sys.path.insert(0, str(host))
    from comfy.cli_args import args

    if cpu is None:
        import torch

        cpu = not torch.cuda.is_available()
    args.cpu = bool(cpu)
    args.disable_api_nodes = True
    args.use_pytorch_cross_attention = args.use_pytorch_cross_attention or pytorch_attention
    # model_management reads args at import; ComfyUI imports utils.extra_config before nodes.
    importlib.import_module("comfy.model_management")
    extra_config = importlib.import_module("utils.extra_config")
    import folder_paths

    host_yaml = host / "extra_model_paths.yaml"
    host_configs = [host_yaml] if host_model_paths and host_yaml.is_file() else []
    for config in host_configs + [Path(p) for p in extra_model_paths]:
        if not config.is_file():
            raise FileNotFoundError(f"--extra-model-paths-config: {config} does not exist")
        extra_config.load_extra_path_config(str(config))
    if output_directory is not None:
        folder_paths.set_output_directory(str(Path(output_directory).resolve()))
    if input_directory is not None:
        folder_paths.set_input_directory(str(Path(input_directory).resolve()))
    if temp_directory is not None:
        folder_paths.set_temp_directory(str(Path(temp_directory).resolve()))  # previews
    nodes = importlib.import_module("nodes")
    execution = importlib.import_module("execution")

    async def load():
        await nodes.init_builtin_extra_nodes()
        return await nodes.load_custom_node(str(PACK_ROOT))

    if not asyncio.run(load()):
        raise RuntimeError(f"ComfyUI at {host} could not load this pack from {PACK_ROOT}; see the log above")
    _SESSION = types.SimpleNamespace(path=host, nodes=nodes, folder_paths=folder_paths, execution=execution)
    return _SESSION


def node_definition(node_class) -> dict:
    """One node's definition in the shape of ``GET /object_info`` (input, input_order, output, output_name,
    output_node), from its V3 schema or its V1 class attributes."""
    if hasattr(node_class, "GET_NODE_INFO_V1"):
        return node_class.GET_NODE_INFO_V1()
    inputs = node_class.INPUT_TYPES()
    return {
        "input": inputs,
        "input_order": {section: list(values) for section, values in inputs.items()},
        "output": list(node_class.RETURN_TYPES),
        "output_name": list(getattr(node_class, "RETURN_NAMES", None) or node_class.RETURN_TYPES),
        "output_node": bool(getattr(node_class, "OUTPUT_NODE", False)),
    }


def node_definitions(class_types=None) -> dict[str, dict]:
    """Definitions of ``class_types`` (default: every registered node) of the started session."""
    registry = start_comfyui().nodes.NODE_CLASS_MAPPINGS
    wanted = registry if class_types is None else class_types
    return {name: node_definition(registry[name]) for name in wanted if name in registry}
