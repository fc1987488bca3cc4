"""One job of ``python -m diffportrait3d run``: a workflow's API prompt set up for one portrait, the model
files it needs, and where its outputs go. Pure Python (shared by the in-process and the HTTP paths).
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from ..kernels.poses.camera_path_names import FIXED_VIEWS
from .workflow_graphs import CONTROL_TITLES

# (node type, input) -> ComfyUI model folder the file is listed from.
MODEL_INPUT_FOLDERS = {
    ("DP3DUNetLoader", "unet"): "diffportrait3d",
    ("DP3DVAELoader", "vae"): "diffportrait3d",
    ("DP3DAppearanceNetLoader", "appearance_net"): "diffportrait3d",
    ("DP3DPoseControlNetLoader", "pose_controlnet"): "diffportrait3d",
    ("DP3DCrossViewLoader", "cross_view"): "diffportrait3d",
    ("DP3DEmptyPrompt", "empty_prompt"): "diffportrait3d",
    ("CLIPLoader", "clip_name"): "text_encoders",
    ("CheckpointLoaderSimple", "ckpt_name"): "checkpoints",
    ("LoraLoaderModelOnly", "lora_name"): "loras",
    ("LoraLoader", "lora_name"): "loras",
    ("VAELoader", "vae_name"): "vae",
    ("ControlNetLoader", "control_net_name"): "controlnet",
    ("UNETLoader", "unet_name"): "diffusion_models",
}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}


class JobError(ValueError):
    pass


@dataclass(frozen=True)
class ModelFile:
    node_id: str
    class_type: str
    input_name: str
    filename: str
    folder: str


def load_prompt(path: Path) -> dict:
    """An API-format prompt from a file; a UI-format workflow gets a message saying which file to use."""
    try:
        prompt = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise JobError(f"--workflow {path}: cannot read it as JSON ({error})") from error
    if isinstance(prompt, dict) and "nodes" in prompt and "links" in prompt:
        raise JobError(
            f"--workflow {path} is a UI workflow (what the frontend saves); give its API format instead "
            "(workflows/api/<name>.api.json, or in ComfyUI: Workflow > Export (API))"
        )
    if not isinstance(prompt, dict) or not all(isinstance(n, dict) and "class_type" in n for n in prompt.values()):
        raise JobError(f"--workflow {path}: not an API-format prompt ({{node_id: {{class_type, inputs}}}})")
    return prompt


def portrait_paths(inputs: list[str]) -> list[Path]:
    """Image files named by ``--image`` (files, or folders whose images are taken in name order)."""
    found = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found.extend(sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES))
        elif path.is_file():
            found.append(path)
        else:
            raise JobError(f"--image {item}: no such file or folder")
    if not found:
        raise JobError(f"--image {' '.join(inputs)}: no images found (looked for {sorted(IMAGE_SUFFIXES)})")
    return found


def job_name(portrait: Path) -> str:
    """A file-system-safe name for one portrait's job: its stem and a short hash of its path."""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", portrait.stem).strip("_") or "portrait"
    return f"{stem}_{hashlib.sha1(str(portrait.resolve()).encode()).hexdigest()[:8]}"


def node_titled(prompt: dict, title: str) -> str | None:
    matches = [node_id for node_id, node in prompt.items() if node.get("_meta", {}).get("title") == title]
    return matches[0] if matches else None


def output_role(node: dict) -> str | None:
    prefix = node.get("inputs", {}).get("filename_prefix")
    return prefix.rstrip("/").rsplit("/", 1)[-1] if isinstance(prefix, str) and prefix else None


def job_prompt(prompt: dict, image_name: str, job: str, views=None, seed=None, steps=None) -> dict:
    """A copy of ``prompt`` for one portrait: the LoadImage titled Portrait reads ``image_name``; the
    PrimitiveInt nodes Views/Seed/Steps get the given values; every saving node writes under
    ``diffportrait3d/<job>/<role>`` (role = the last part of its filename_prefix)."""
    prompt = copy.deepcopy(prompt)
    settings = {"portrait": image_name, "views": views, "seed": seed, "steps": steps}
    for key, value in settings.items():
        if value is None:
            continue
        node_id = node_titled(prompt, CONTROL_TITLES[key])
        if node_id is None:
            raise JobError(
                f"the workflow has no node titled '{CONTROL_TITLES[key]}' for {'--image' if key == 'portrait' else '--' + key}; "
                "title the node (LoadImage for the portrait, PrimitiveInt for the numbers) as the shared workflows do"
            )
        prompt[node_id]["inputs"]["image" if key == "portrait" else "value"] = value
        if key == "views":
            check_fixed_views(prompt, node_id, value)
    for node in prompt.values():
        role = output_role(node)
        if role is not None:
            node["inputs"]["filename_prefix"] = f"diffportrait3d/{job}/{role}"
    return prompt


def check_fixed_views(prompt: dict, views_node: str, views: int) -> None:
    """``--views`` must match a camera path it feeds whose preset fixes the number of views (sphere32: 32)."""
    for node in prompt.values():
        inputs = node.get("inputs", {})
        fixed = FIXED_VIEWS.get(inputs.get("preset")) if node.get("class_type") == "DP3DCameraPath" else None
        if fixed is not None and inputs.get("views") == [views_node, 0] and views != fixed:
            raise JobError(
                f"--views {views}: this workflow's cameras (preset {inputs['preset']}) are always {fixed} views; "
                f"leave --views out or give {fixed}"
            )


def model_files(prompt: dict) -> list[ModelFile]:
    """The model files a prompt's loader nodes name, with the folder each is listed from."""
    files = []
    for node_id, node in prompt.items():
        for input_name, value in node.get("inputs", {}).items():
            folder = MODEL_INPUT_FOLDERS.get((node["class_type"], input_name))
            if folder is not None and isinstance(value, str):
                files.append(ModelFile(node_id, node["class_type"], input_name, value, folder))
    return files


def missing_models_message(missing: list[ModelFile], folder_paths: dict[str, list[str]]) -> str:
    """One line per missing file: its name, the folder(s) to put it in, and the node that needs it."""
    lines = [f"{len(missing)} model file(s) missing; put each in one of the listed folders:"]
    for item in missing:
        where = " or ".join(folder_paths.get(item.folder, [])) or f"models/{item.folder}/"
        lines.append(f"  {item.filename}  ->  {where}  (node {item.node_id} {item.class_type}.{item.input_name})")
    if any(item.folder in ("diffportrait3d", "text_encoders") for item in missing):
        from ..kernels.checkpoint.official_release import CHECKPOINT_SOURCE, convert_command

        lines.append(f"The diffportrait3d_*.safetensors files are made from {CHECKPOINT_SOURCE} by: "
                     f"{convert_command()}. `python -m diffportrait3d doctor` checks them.")
    if any(item.class_type == "DP3DEmptyPrompt" for item in missing):
        lines.append("Files converted before the Empty Prompt node existed: add --only empty_prompt to that "
                     "command to write just diffportrait3d_empty_prompt.safetensors.")
    return "\n".join(lines)


def describe_rejection(error, node_errors: dict | None) -> str:
    """Why ComfyUI rejected a prompt, from ``execution.validate_prompt``'s error and node errors (the body of a
    refused ``POST /prompt`` holds the same two): ``<message>: <details>``, then one line per node error."""
    if isinstance(error, dict):
        error = f"{error.get('message')}: {error.get('details')}"
    lines = [str(error)]
    for node_id, entry in (node_errors or {}).items():
        for reason in entry.get("errors", []):
            lines.append(f"  node {node_id} {entry.get('class_type', '')}: {reason.get('message')}: {reason.get('details')}")
    return "\n".join(lines)


@dataclass(frozen=True)
class OutputFile:
    """One file a job produced (as ComfyUI's history lists it) and its name in the ``--out`` folder."""

    filename: str
    subfolder: str
    folder_type: str
    destination: str


def output_files(prompt: dict, outputs: dict) -> list[OutputFile]:
    """Saved files of a finished job (``history[...]["outputs"]``), named by role: ``views/view_00.png``...,
    ``grid.png``, ``orbit.webp``, ``cameras.json``; other saving nodes as ``<role>_NN.<ext>``. Previews (temp
    files) are left out."""
    files = []
    for node_id, produced in outputs.items():
        node = prompt.get(node_id, {})
        role = output_role(node) or f"node{node_id}"
        saved = [item for key in ("images", "json") for item in produced.get(key, []) if isinstance(item, dict)]
        saved = [item for item in saved if item.get("type") == "output"]
        for index, item in enumerate(saved):
            suffix = Path(item["filename"]).suffix
            if role == "views":
                destination = f"views/view_{index:02d}{suffix}"
            elif len(saved) == 1:
                destination = f"{role}{suffix}"
            else:
                destination = f"{role}_{index:02d}{suffix}"
            files.append(OutputFile(item["filename"], item.get("subfolder", ""), "output", destination))
    return files
