"""``python -m diffportrait3d demo``: the official workflow end to end, with nothing downloaded.

A tiny model (the architecture of ``kernels/checkpoint/tiny_config.json``) gets seeded random weights, goes
through the pack's own converter into a temporary models folder, and the shipped official API workflow runs on
it in this process, in ComfyUI's executor (the path ``run`` takes), on a portrait rendered from the template
head. The outputs check the install and show the output layout; random weights draw no face.
"""

from __future__ import annotations

from pathlib import Path

import torch

NOTICE_FILE = "DEMO_README.txt"
PORTRAIT_FILE = "portrait.png"
DEMO_SOURCE_NAME = "diffportrait3d-demo-tiny-random.safetensors"
# A tiny CLIP text tower whose width is the tiny UNet's context (32): the demo's empty prompt is computed with
# it exactly as convert computes the real one with the checkpoint's CLIP ViT-L/14.
TINY_TEXT_TOWER = {"hidden": 32, "layers": 2, "mlp": 128, "vocab": 49408, "positions": 77}
OFFICIAL_CHECKPOINT_URL = "https://drive.google.com/file/d/14qzipHghFrs4CFpVo1xW9CZt8OGLJf9t/view?usp=sharing"
OFFICIAL_REPOSITORY = "https://github.com/FreedomGu/DiffPortrait3D"


def write_tiny_random_model(folder: Path, seed: int = 0) -> list[Path]:
    """The tiny architecture with seeded random weights (``bench/random_weights.py``), converted by
    ``convert_source`` (fp32) into ``folder``, plus its empty-prompt file; returns the files written."""
    from ..bench.random_weights import random_weight
    from ..kernels.checkpoint.components import COMPONENT_FILES
    from ..kernels.checkpoint.convert import (
        FORMAT_VERSION,
        TINY_CONFIG_PATH,
        convert_source,
        load_architecture,
    )
    from ..kernels.checkpoint.empty_prompt import TEXT_PREFIX, empty_prompt_conditioning, write_empty_prompt
    from ..kernels.checkpoint.layout import clip_text_shapes, expected_checkpoint_shapes
    from ..kernels.checkpoint.source import CheckpointSource

    generator = torch.Generator().manual_seed(seed)
    architecture = load_architecture(TINY_CONFIG_PATH)
    tensors = {key: random_weight(key, shape, generator) for key, shape in expected_checkpoint_shapes(architecture).items()}
    source = CheckpointSource.from_tensors(tensors, DEMO_SOURCE_NAME)
    report = convert_source(source, folder, architecture, "fp32", TINY_CONFIG_PATH.name)
    text_tower = {key: random_weight(key, shape, generator) for key, shape in clip_text_shapes(TEXT_PREFIX, TINY_TEXT_TOWER).items()}
    empty_prompt = folder / COMPONENT_FILES["empty_prompt"]
    metadata = {"dp3d.format_version": FORMAT_VERSION, "dp3d.source_file": DEMO_SOURCE_NAME, "dp3d.dtype": "fp32"}
    write_empty_prompt(empty_prompt, empty_prompt_conditioning(text_tower), metadata)
    return [path for path, _, _ in report.written.values()] + [empty_prompt]


def write_template_portrait(path: Path, size: int) -> None:
    """The pack's template head seen from the front camera (yaw 0, pitch 0), ``size`` pixels square."""
    from ..kernels.poses.camera_paths import yaw_sweep
    from ..kernels.poses.head_template import render_template_head
    from .png_writer import write_png

    images, _ = render_template_head(yaw_sweep(1, 0.0, 0.0), size, size, supersample=2)
    write_png(path, images[0])


def sized_prompt(prompt: dict, size: int) -> dict:
    """The prompt with every image size the official workflow sets (latents, pose conditions) set to ``size``."""
    for node in prompt.values():
        if node["class_type"] == "EmptyLatentImage":
            node["inputs"].update(width=size, height=size)
        elif node["class_type"].startswith("DP3DPose") and "size" in node["inputs"]:
            node["inputs"]["size"] = size
    return prompt


def notice(out: Path, views: int, steps: int, size: int, seconds: float, comfyui: Path) -> str:
    """What the demo made, that its pictures come from random weights, and what to download for real views."""
    return f"""\
DiffPortrait3D demo: RANDOM TINY WEIGHTS -- these images are not a picture of a face.

What ran: the shipped official workflow (workflows/official_8_views) end to end in ComfyUI's executor
(ComfyUI at {comfyui}), {views} views of {size}x{size}, {steps} DDIM steps, in {seconds:.0f} s, on a TINY model
with RANDOM weights made for this run (kernels/checkpoint/tiny_config.json, converted by the pack's converter).
It checks the install and shows the output layout; coloured noise is the expected result.

Outputs in {out}:
  {PORTRAIT_FILE}                        the input portrait (the pack's template head, front camera)
  views/view_00.png ...               one image per camera, in camera order
  grid.png                            all views, 4 per row
  orbit.webp                          the views as a looping animation
  cameras.json                        the cameras (EG3D labels, yaw/pitch/roll per view)
  outputs.json                        what was written, from which portrait
  comfyui.log                         ComfyUI's own messages during the run

For real views:
  1. Download the official checkpoint model_state-540000-001.th (about 10 GB; linked from the official
     repository {OFFICIAL_REPOSITORY}, file DiffPortrait3D/checkpoints/readme.md):
     {OFFICIAL_CHECKPOINT_URL}
  2. Convert it once into ComfyUI's models folder:
     python -m diffportrait3d convert model_state-540000-001.th --out ComfyUI/models/diffportrait3d
     That folder then holds every file the shipped workflows load: diffportrait3d_unet, _vae, _appearance,
     _pose_controlnet, _cross_view and _empty_prompt (.safetensors). diffportrait3d_text_encoder.safetensors
     is written too; the workflows do not need it (it goes in ComfyUI/models/text_encoders/ for the core
     CLIP nodes). See workflows/README.md, "Model files".
  3. Run on your portrait:
     python -m diffportrait3d run --image me.jpg --out out
     or open workflows/official_8_views.json in ComfyUI.
"""


def run_demo(out: Path, views: int, steps: int, size: int, seed: int = 0) -> int:
    """Make the tiny model and the portrait, run the official workflow on them, write the outputs and the
    notice into ``out``. Returns the exit status (2: no ComfyUI, 1: the workflow failed)."""
    import shutil
    import sys
    import tempfile
    import time

    from .comfy_log import start_comfyui_logged
    from .comfy_session import ComfyUINotFound
    from .main import _workflow_path
    from .server_client import write_manifest
    from .workflow_graphs import OFFICIAL
    from .workflow_jobs import JobError, job_prompt, load_prompt
    from .workflow_runner import add_models_root, check_models, copy_outputs, execute, validate

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="diffportrait3d-demo-") as scratch:
        scratch = Path(scratch)
        folders = {name: scratch / name for name in ("input", "output", "temp", "models")}
        for folder in folders.values():
            folder.mkdir()
        log_path = out / "comfyui.log"
        try:
            session = start_comfyui_logged(
                log_path, input_directory=folders["input"], output_directory=folders["output"],
                temp_directory=folders["temp"], host_model_paths=False,
            )
        except ComfyUINotFound as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        print(f"ComfyUI {session.path} (its messages: {log_path})")
        print(f"making a tiny model with random weights in {folders['models']} ...")
        write_tiny_random_model(folders["models"] / "diffportrait3d", seed)
        add_models_root(session.folder_paths, folders["models"])
        write_template_portrait(folders["input"] / PORTRAIT_FILE, max(size, 128))
        prompt = sized_prompt(load_prompt(_workflow_path(OFFICIAL)), size)
        job = job_prompt(prompt, PORTRAIT_FILE, "demo", views=views, seed=seed, steps=steps)
        print(f"running the official workflow: {views} views of {size}x{size}, {steps} steps ...")
        try:
            check_models(session.folder_paths, job)
            _, produced = execute(session.execution, job, validate(session.execution, job))
            if out.is_dir():
                shutil.rmtree(out / "views", ignore_errors=True)
            written = copy_outputs(session.folder_paths, job, produced, out)
        except JobError as error:
            print(f"error: the demo workflow failed: {error}", file=sys.stderr)
            return 1
        shutil.copyfile(folders["input"] / PORTRAIT_FILE, out / PORTRAIT_FILE)
        write_manifest(out, out / PORTRAIT_FILE, written, "this process")
    text = notice(out, views, steps, size, time.perf_counter() - started, session.path)
    (out / NOTICE_FILE).write_text(text, encoding="utf-8")
    print(f"\nwrote {len(written)} files to {out}\n")
    print(text)
    return 0
