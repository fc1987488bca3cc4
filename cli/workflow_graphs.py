"""The pack's shared workflows, each described once (``python -m diffportrait3d workflows --write`` turns
them into ``workflows/<name>.json`` (UI) and ``workflows/api/<name>.api.json`` (API)). The API files sit in a
subfolder because ComfyUI's templates menu lists every ``*.json`` directly in a custom node's ``workflows/``
folder (``app/custom_node_manager.py``: ``*/workflows/*.json``, not recursive), and API files do not load there.

Every workflow has the nodes the ``run`` command drives, found by title: a LoadImage titled ``Portrait``,
and core PrimitiveInt nodes ``Views``, ``Steps`` and ``Seed`` (each feeds every input that must agree:
the camera path and the latent batch; the noise and the sampler). Outputs are written under
``diffportrait3d/<role>`` (views, grid, orbit, cameras), which names the files ``run`` copies out.
"""

from __future__ import annotations

from .workflow_format import Group, Workflow

MODEL_FILES = {
    "unet": "diffportrait3d_unet.safetensors",
    "vae": "diffportrait3d_vae.safetensors",
    "empty_prompt": "diffportrait3d_empty_prompt.safetensors",
    "appearance": "diffportrait3d_appearance.safetensors",
    "pose_controlnet": "diffportrait3d_pose_controlnet.safetensors",
    "cross_view": "diffportrait3d_cross_view.safetensors",
}
# DiffPortrait360: the 360 model's files and the back-of-head generator's (its VAE and text are the 360 model's).
MODEL_FILES_360 = {component: f"diffportrait360_{component}.safetensors" for component in (
    "unet", "vae", "empty_prompt", "appearance", "pose_controlnet", "cross_view")}
MODEL_FILES_BACKHEAD = {component: f"diffportrait360_backhead_{component}.safetensors" for component in (
    "unet", "appearance", "pose_controlnet")}
EXAMPLE_LORA = "your_sd15_lora.safetensors"
PORTRAIT = "portrait.png"
DRIVING_FRAMES = "driving_frames.webp"
SIDE_PHOTO = "side_photo.png"
OUTPUT_ROLES = ("views", "grid", "orbit", "cameras")
CONTROL_TITLES = {"portrait": "Portrait", "views": "Views", "steps": "Steps", "seed": "Seed"}

# Layout columns of the UI workflow, left to right.
MODELS, INPUTS, TEXT, CAMERAS, POSE_PREVIEW, START, SAMPLER, OUTPUTS, MORE_OUTPUTS = range(9)
BACK_CAMERAS, BACK_SAMPLER = 9, 10  # the back-of-head step of full_head_360, in its own group on the right
GROUPS = [
    Group("1. Models", (MODELS,)),
    Group("2. Portrait and settings", (INPUTS,)),
    Group("3. Text and reference", (TEXT,)),
    Group("4. Cameras and pose condition", (CAMERAS, POSE_PREVIEW)),
    Group("5. 3D-aware start, cross-view sampling", (START, SAMPLER)),
    Group("6. Outputs", (OUTPUTS, MORE_OUTPUTS), "#3f8e5a"),
]


def _models(flow: Workflow, files=MODEL_FILES, family="DiffPortrait3D") -> None:
    flow.add(1, "DP3DUNetLoader", f"{family} UNet", MODELS, unet=files["unet"])
    flow.add(2, "DP3DVAELoader", f"{family} VAE", MODELS, vae=files["vae"])
    flow.add(4, "DP3DAppearanceNetLoader", "Appearance net", MODELS, appearance_net=files["appearance"])
    flow.add(5, "DP3DPoseControlNetLoader", "Pose ControlNet", MODELS, pose_controlnet=files["pose_controlnet"])
    flow.add(6, "DP3DCrossViewLoader", "Cross-view modules", MODELS, cross_view=files["cross_view"])


def _settings(flow: Workflow, views: int, steps: int = 50, seed: int = 0) -> None:
    flow.add(10, "LoadImage", CONTROL_TITLES["portrait"], INPUTS, image=PORTRAIT)
    flow.add(11, "PrimitiveInt", CONTROL_TITLES["views"], INPUTS, value=views)
    flow.add(12, "PrimitiveInt", CONTROL_TITLES["steps"], INPUTS, value=steps)
    flow.add(13, "PrimitiveInt", CONTROL_TITLES["seed"], INPUTS, value=seed)


def _text(flow: Workflow, files=MODEL_FILES) -> None:
    # The official prompt is always '' (positive and negative alike): a constant stored by convert, so no text
    # encoder is loaded. Core CLIPLoader + CLIPTextEncode('') on the converted text encoder give the same tensors.
    flow.add(20, "DP3DEmptyPrompt", "Empty prompt (the official '', positive and negative)", TEXT,
             empty_prompt=files["empty_prompt"])


def _reference(flow: Workflow, model=(1, 0)) -> None:
    flow.add(24, "DP3DAppearanceReferenceEncoder", "Appearance reference", TEXT,
             model=model, appearance_net=(4, 0), vae=(2, 0), reference_image=(10, 0))


def _second_reference(flow: Workflow, what: str, image) -> None:
    # A second encoder on the patched MODEL adds a reference: the views attend over [own ; portrait ; second].
    flow.add(27, "DP3DAppearanceReferenceEncoder", f"Appearance reference 2 ({what})", TEXT,
             model=(24, 0), appearance_net=(4, 0), vae=(2, 0), reference_image=image, strength=1.0)


def _pose_preview(flow: Workflow) -> None:
    flow.add(25, "DP3DPreviewGrid", "Pose condition grid", POSE_PREVIEW, images=(23, 0), columns=8)
    flow.add(26, "PreviewImage", "Pose conditions (preview)", POSE_PREVIEW, images=(25, 0))


# The official DiffPortrait360 numbers: its DDPM schedule is float16 (kernels/model/ddpm_schedule.py; a combo option,
# so `workflows --check` refuses a misspelling).
SCHEDULE_360 = {"schedule": "float16 (DiffPortrait360 official)"}


def _sampling(flow: Workflow, window_mode="official", window_size=8, window_stride=4, model=(24, 0),
              schedule=None) -> None:
    flow.add(30, "ControlNetApplyAdvanced", "Pose ControlNet on the positive", START, positive=(20, 0),
             negative=(20, 0), control_net=(5, 0), image=(23, 0), strength=1.0, start_percent=0.0, end_percent=1.0)
    flow.add(31, "EmptyLatentImage", "One latent per view", START, width=512, height=512, batch_size=(11, 0))
    flow.add(32, "DP3DNoise", "3D-aware start", START, model=model, latent=(31, 0), source="reference_warped",
             seed=(13, 0), steps=(12, 0), vae=(2, 0), reference_image=(10, 0), cameras=(22, 0), **(schedule or {}))
    flow.add(33, "DP3DCrossViewSampler", "Cross-view sampler (DDIM, eta 0.5, CFG 3)", SAMPLER, model=model,
             cross_view=(6, 0), positive=(30, 0), negative=(30, 1), latent_image=(31, 0), seed=(13, 0),
             steps=(12, 0), cfg=3.0, eta=0.5, window_mode=window_mode, window_size=window_size,
             window_stride=window_stride, noise=(32, 0), **(schedule or {}))
    flow.add(34, "VAEDecode", "Decode views", SAMPLER, samples=(33, 0), vae=(2, 0))


def _outputs(flow: Workflow, grid_columns: int, fps: float) -> None:
    flow.add(40, "SaveImage", "Save views", OUTPUTS, images=(34, 0), filename_prefix="diffportrait3d/views")
    flow.add(41, "DP3DPreviewGrid", "Grid of views", OUTPUTS, images=(34, 0), columns=grid_columns)
    flow.add(42, "SaveImage", "Save grid", OUTPUTS, images=(41, 0), filename_prefix="diffportrait3d/grid")
    flow.add(43, "SaveAnimatedWEBP", "Save orbit animation", MORE_OUTPUTS, images=(34, 0),
             filename_prefix="diffportrait3d/orbit", fps=fps, lossless=False, quality=90)
    flow.add(44, "DP3DSaveCameraJSON", "Save cameras", MORE_OUTPUTS, cameras=(22, 0),
             filename_prefix="diffportrait3d/cameras")


def _template_poses(flow: Workflow, **camera) -> None:
    flow.add(22, "DP3DCameraPath", "Cameras", CAMERAS, views=(11, 0), **camera)
    flow.add(23, "DP3DPoseTemplateHead", "Pose condition (template head)", CAMERAS, cameras=(22, 0), size=512)


MODEL_NOTE = (
    "## Model files\n"
    "Convert the official checkpoint once:\n"
    "`python -m diffportrait3d convert model_state-540000-001.th --out ComfyUI/models/diffportrait3d`\n"
    "(the prompt is the official empty one, stored by convert: no text encoder is loaded).\n"
)


def official() -> Workflow:
    flow = Workflow("official_8_views", groups=list(GROUPS))
    _models(flow)
    _settings(flow, views=8)
    _text(flow)
    _template_poses(flow, preset="official16")
    _reference(flow)
    _pose_preview(flow)
    _sampling(flow)
    _outputs(flow, grid_columns=4, fps=6.0)
    flow.note(90, MODEL_NOTE + "\n## Official setup\nOne portrait, 8 views on the official elliptical orbit "
              "(every other view of the 16-view orbit: one cross-view window), DDIM 50 steps, eta 0.5, CFG 3, "
              "empty prompt, 3D-aware start.\nPut your portrait in **Portrait** and press Queue.", INPUTS)
    return flow


def long_orbit() -> Workflow:
    flow = Workflow("long_orbit_32_views", groups=list(GROUPS))
    _models(flow)
    _settings(flow, views=32)
    _text(flow)
    _template_poses(flow, preset="official16")
    _reference(flow)
    _pose_preview(flow)
    _sampling(flow, window_mode="looped", window_size=8, window_stride=4)
    _outputs(flow, grid_columns=8, fps=12.0)
    flow.note(90, MODEL_NOTE + "\n## Long orbit\n32 views around the closed official ellipse. Looped windows of 8 "
              "views, stride 4: every view shares windows with its neighbours and view 31 neighbours view 0, so "
              "the animation loops without a seam. For a full turn set Cameras to turntable360.", INPUTS)
    return flow


def driving_frames() -> Workflow:
    flow = Workflow("driving_frames_pose", groups=list(GROUPS))
    _models(flow)
    _settings(flow, views=8)
    flow.add(14, "LoadImage", "Driving frames (animated WEBP/GIF of a head turning)", INPUTS, image=DRIVING_FRAMES)
    _text(flow)
    flow.add(22, "DP3DCameraPath", "Cameras", CAMERAS, views=(11, 0), preset="yaw_sweep", yaw_min=-45.0, yaw_max=45.0)
    flow.add(23, "DP3DPoseDrivingFrames", "Pose condition (driving frames)", CAMERAS, cameras=(22, 0),
             frames=(14, 0), size=512, frame_poses="linear_sweep", yaw_start=-45.0, yaw_end=45.0)
    _reference(flow)
    _pose_preview(flow)
    _sampling(flow)
    _outputs(flow, grid_columns=4, fps=6.0)
    flow.note(90, MODEL_NOTE + "\n## Driving frames\nThe pose comes from frames of another person turning their head "
              "(an animated WEBP/GIF loads as a batch of frames): each camera gets the frame with the nearest yaw, "
              "re-framed like the official condition images. Set yaw_start/yaw_end to the turn in your clip.", INPUTS)
    return flow


def with_lora_and_freeu() -> Workflow:
    flow = Workflow("lora_freeu_combined", groups=list(GROUPS))
    _models(flow)
    flow.add(7, "LoraLoaderModelOnly", "Your SD1.5 LoRA", MODELS, model=(1, 0), lora_name=EXAMPLE_LORA,
             strength_model=0.6)
    flow.add(8, "FreeU_V2", "FreeU (SD1.5 values)", MODELS, model=(7, 0), b1=1.5, b2=1.6, s1=0.9, s2=0.2)
    _settings(flow, views=8)
    _text(flow)
    _template_poses(flow, preset="official16")
    _reference(flow, model=(8, 0))
    _pose_preview(flow)
    _sampling(flow)
    _outputs(flow, grid_columns=4, fps=6.0)
    flow.note(90, MODEL_NOTE + "\n## With other SD nodes\nThe DiffPortrait3D UNet goes through a LoRA and FreeU before "
              "the appearance reference and cross-view attention are added: the pack patches a clone of whatever "
              f"MODEL it gets. Put an SD1.5 LoRA in models/loras/ and pick it instead of {EXAMPLE_LORA}.", INPUTS)
    return flow


def front_and_side_photos() -> Workflow:
    flow = Workflow("front_and_side_photos", groups=list(GROUPS))
    _models(flow)
    _settings(flow, views=8)
    flow.add(15, "LoadImage", "Second photo (side view of the same person)", INPUTS, image=SIDE_PHOTO)
    _text(flow)
    _template_poses(flow, preset="official16")
    _reference(flow)
    _second_reference(flow, "side photo", image=(15, 0))
    _pose_preview(flow)
    _sampling(flow, model=(27, 0))
    _outputs(flow, grid_columns=4, fps=6.0)
    flow.note(90, MODEL_NOTE + "\n## Two reference photos\nThe portrait (front) and a second photo of the same person "
              f"(e.g. from the side; {SIDE_PHOTO} in ComfyUI's input folder) are both appearance references: the "
              "second Appearance Reference Encoder patches the MODEL the first one made, and every view attends "
              "to both photos' tokens. Each encoder's strength weighs its own photo (lower the side photo's to keep "
              "the portrait dominant; 0 turns it off); start/end percent act per photo. DiffPortrait3D was trained "
              "with one reference: a second one is an extension (DiffPortrait360 uses it for the back of the head).",
              INPUTS)
    return flow


def _back_of_head(flow: Workflow) -> None:
    """DiffPortrait360's back-of-head step from core and pack nodes: one view at the back camera from plain noise,
    the front photo as the reference, the back-head pose ControlNet on the positive only (the official
    guidance: the negative keeps the empty text, drops the pose residuals, and the reference drops itself on
    unconditional rows), DDIM eta 0.5 over the ddim_uniform steps, CFG 3. Its decoded IMAGE is node 56."""
    flow.add(45, "DP3DUNetLoader", "Back-head UNet", MODELS, unet=MODEL_FILES_BACKHEAD["unet"])
    flow.add(46, "DP3DAppearanceNetLoader", "Back-head appearance net", MODELS,
             appearance_net=MODEL_FILES_BACKHEAD["appearance"])
    flow.add(47, "DP3DPoseControlNetLoader", "Back-head pose ControlNet", MODELS,
             pose_controlnet=MODEL_FILES_BACKHEAD["pose_controlnet"])
    flow.add(48, "PrimitiveInt", "Back views (always 1)", INPUTS, value=1)
    flow.add(49, "DP3DCameraPath", "Back camera", BACK_CAMERAS, views=(48, 0), preset="sphere32_back")
    flow.add(50, "DP3DPoseTemplateHead", "Back pose condition", BACK_CAMERAS, cameras=(49, 0), size=512)
    flow.add(51, "DP3DAppearanceReferenceEncoder", "Back head: front photo reference", BACK_CAMERAS,
             model=(45, 0), appearance_net=(46, 0), vae=(2, 0), reference_image=(10, 0))
    flow.add(52, "ControlNetApplyAdvanced", "Back-head pose ControlNet (positive only)", BACK_SAMPLER,
             positive=(20, 0), negative=(20, 0), control_net=(47, 0), image=(50, 0), strength=1.0,
             start_percent=0.0, end_percent=1.0)
    flow.add(53, "EmptyLatentImage", "One back-view latent", BACK_SAMPLER, width=512, height=512, batch_size=(48, 0))
    flow.add(54, "CFGGuider", "Back-head guidance (CFG 3, negative without pose)", BACK_SAMPLER,
             model=(51, 0), positive=(52, 0), negative=(20, 0), cfg=3.0)
    flow.add(55, "DP3DDDIMSampler", "DDIM eta 0.5", BACK_SAMPLER, eta=0.5, **SCHEDULE_360)
    flow.add(57, "BasicScheduler", "DDIM steps", BACK_SAMPLER, model=(51, 0), scheduler="ddim_uniform",
             steps=(12, 0), denoise=1.0)
    flow.add(58, "RandomNoise", "Back-head noise", BACK_SAMPLER, noise_seed=(13, 0))
    flow.add(59, "SamplerCustomAdvanced", "Sample the back of the head", BACK_SAMPLER, noise=(58, 0),
             guider=(54, 0), sampler=(55, 0), sigmas=(57, 0), latent_image=(53, 0))
    flow.add(56, "VAEDecode", "Decode the back of the head", BACK_SAMPLER, samples=(59, 0), vae=(2, 0))
    flow.add(60, "PreviewImage", "Back of the head (preview)", BACK_SAMPLER, images=(56, 0))


MODEL_NOTE_360 = (
    "## Model files\n"
    "From the Hugging Face repo gym890/diffportrait360 (model_state-340000.th, back_head-230000.th), "
    "convert each once:\n"
    "`python -m diffportrait3d convert model_state-340000.th --out ComfyUI/models/diffportrait3d`\n"
    "`python -m diffportrait3d convert back_head-230000.th --out ComfyUI/models/diffportrait3d`\n"
    "(diffportrait360_* and diffportrait360_backhead_* files; the back-head generator uses the 360 model's VAE "
    "and empty prompt).\n"
)


def full_head_360() -> Workflow:
    back = Group("0. Back of the head first (back-head generator; its image is reference 2)",
                 (BACK_CAMERAS, BACK_SAMPLER), "#8e5a3f")
    flow = Workflow("full_head_360", groups=[*GROUPS, back])
    _models(flow, MODEL_FILES_360, "DiffPortrait360")
    _settings(flow, views=32)
    _text(flow, MODEL_FILES_360)
    _back_of_head(flow)
    _template_poses(flow, preset="sphere32")
    _reference(flow)
    _second_reference(flow, "the generated back of the head", image=(56, 0))
    _pose_preview(flow)
    _sampling(flow, window_mode="official", window_size=8, window_stride=8, model=(27, 0), schedule=SCHEDULE_360)
    _outputs(flow, grid_columns=8, fps=12.0)
    flow.note(90, MODEL_NOTE_360 + "\n## DiffPortrait360: the whole head\nAs the official inference: first the "
              "back-head generator makes ONE view at the back camera (sphere32_back) from plain noise with your "
              "portrait as the reference; that image is the 360 model's second reference. Then the 32 cameras of "
              "sphere32 (a full turn) run as 4 independent windows of 8 views (window_mode official), both "
              "references, the 3D-aware start. **Views** must stay 32 (sphere32 always has 32 cameras).", INPUTS)
    return flow


WORKFLOWS = {
    flow().name: flow
    for flow in (official, long_orbit, driving_frames, with_lora_and_freeu, front_and_side_photos, full_head_360)
}
OFFICIAL = "official_8_views"


API_FOLDER = "api"


def api_file(name: str) -> str:
    """Path of a shared workflow's API-format file, relative to the workflows folder."""
    return f"{API_FOLDER}/{name}.api.json"


def workflow_files(definitions: dict) -> dict[str, str]:
    """``{path relative to workflows/: JSON text}`` of every shared workflow: ``<name>.json`` (UI) and
    ``api/<name>.api.json``."""
    import json

    from .workflow_format import api_prompt, complete_inputs, ui_workflow

    files = {}
    for name, build in WORKFLOWS.items():
        flow = build()
        complete_inputs(flow, definitions)
        files[f"{name}.json"] = json.dumps(ui_workflow(flow, definitions), indent=1) + "\n"
        files[api_file(name)] = json.dumps(api_prompt(flow), indent=1) + "\n"
    return files
