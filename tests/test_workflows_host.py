"""The shared workflows inside the real ComfyUI: the committed files are what the node definitions give,
every API prompt passes ComfyUI's own validation, and the official workflow runs end to end with the tiny
reference model through the same functions as ``python -m diffportrait3d run``."""

import json
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from diffportrait3d.cli.workflow_format import check_against_definitions
from diffportrait3d.cli.workflow_graphs import OFFICIAL, WORKFLOWS, api_file, workflow_files

pytestmark = pytest.mark.host

ROOT = Path(__file__).resolve().parents[1]


def shared_api_prompt(name: str) -> dict:
    return json.loads((ROOT / "workflows" / api_file(name)).read_text(encoding="utf-8"))


def definitions_of(comfy_host) -> dict:
    from diffportrait3d.cli.comfy_session import node_definition

    return {name: node_definition(cls) for name, cls in comfy_host.nodes.NODE_CLASS_MAPPINGS.items()
            if name.startswith("DP3D") or name in USED_CORE_TYPES}


USED_CORE_TYPES = {
    node["class_type"] for name in WORKFLOWS for node in shared_api_prompt(name).values()
} | {"KSampler"}


@contextmanager
def comfy_folders(input_dir: Path, output_dir: Path, models: dict[str, Path]):
    """ComfyUI's input, output and temp (preview) folders pointed at temporary ones (restored after), model
    folders added."""
    import folder_paths

    saved = folder_paths.get_input_directory(), folder_paths.get_output_directory(), folder_paths.get_temp_directory()
    for folder, path in models.items():
        folder_paths.add_model_folder_path(folder, str(path))
    folder_paths.set_input_directory(str(input_dir))
    folder_paths.set_output_directory(str(output_dir))
    folder_paths.set_temp_directory(str(output_dir.parent / "temp"))
    try:
        yield folder_paths
    finally:
        folder_paths.set_input_directory(saved[0])
        folder_paths.set_output_directory(saved[1])
        folder_paths.set_temp_directory(saved[2])


def test_committed_workflow_files_are_up_to_date(comfy_host):
    stale = [name for name, text in workflow_files(definitions_of(comfy_host)).items()
             if (ROOT / "workflows" / name).read_text(encoding="utf-8") != text]
    assert not stale, f"out of date: {stale}; run: python -m diffportrait3d workflows --write"


@pytest.mark.parametrize("name", sorted(WORKFLOWS))
def test_api_prompt_validates_against_the_node_definitions(comfy_host, run_prompt, tiny_model_files, tmp_path, name,
                                                          workflow_kit):
    prompt = shared_api_prompt(name)
    assert check_against_definitions(prompt, definitions_of(comfy_host)) == []
    placeholders = tmp_path / "models"
    (placeholders / "loras").mkdir(parents=True)
    (placeholders / "loras" / "your_sd15_lora.safetensors").touch()  # validation lists file names only
    models = {"diffportrait3d": tiny_model_files, "loras": placeholders / "loras"}
    workflow_kit.write_test_images(tmp_path / "input")
    with comfy_folders(tmp_path / "input", tmp_path / "output", models):
        valid, error, outputs, node_errors = run_prompt(prompt, expect_invalid=True)
    assert valid and not node_errors, (error, node_errors)
    assert len(outputs) >= 4  # views, grid, orbit, cameras (and the pose preview)


def test_definition_check_names_a_wrong_link_and_a_bad_value(comfy_host):
    prompt = shared_api_prompt(OFFICIAL)
    prompt["33"]["inputs"]["positive"] = ["31", 0]
    prompt["33"]["inputs"]["cfg"] = "three"
    prompt["33"]["inputs"]["colour"] = 1
    problems = check_against_definitions(prompt, definitions_of(comfy_host))
    assert "node 33 input 'positive' (CONDITIONING) is fed LATENT by node 31" in problems
    assert "node 33 input 'cfg' (FLOAT) has value 'three'" in problems
    assert "node 33 (DP3DCrossViewSampler): unknown input 'colour'" in problems


@pytest.mark.parametrize("cpu_compute", ["float32", "bf16"])
def test_official_workflow_runs_end_to_end_with_the_tiny_model(
    comfy_host, tiny_model_files, tmp_path, workflow_kit, monkeypatch, cpu_compute
):
    """The shipped official API prompt on the tiny model (its empty-prompt file holds the golden text context),
    8 views of 64x64 and 2 steps (``tiny_workflow``), run by ComfyUI's PromptExecutor through the run command's own functions; the outputs land in the documented layout. Also
    with the opt-in bf16 compute ($DIFFPORTRAIT3D_CPU_COMPUTE), which every node must carry through."""
    import execution
    import numpy as np
    from PIL import Image

    from diffportrait3d.cli.workflow_jobs import job_prompt
    from diffportrait3d.cli.workflow_runner import check_models, copy_outputs, execute, validate

    model_loading = comfy_host.pack_module.nodes.model_loading  # the pack as ComfyUI imported it
    monkeypatch.setenv("DIFFPORTRAIT3D_CPU_COMPUTE", cpu_compute)
    storage_dtypes = []  # of every network the pack's loaders build for this run
    setup_for = model_loading.inference_setup_for

    def recording_setup(*args, **kwargs):
        setup = setup_for(*args, **kwargs)
        storage_dtypes.append(setup.dtype)
        return setup

    monkeypatch.setattr(model_loading, "inference_setup_for", recording_setup)
    workflow_kit.write_test_images(tmp_path / "input")
    with comfy_folders(tmp_path / "input", tmp_path / "output", {"diffportrait3d": tiny_model_files}) as folder_paths:
        prompt = job_prompt(workflow_kit.tiny_workflow(), "portrait.png", "tiny_job", seed=3)
        check_models(folder_paths, prompt)
        _, produced = execute(execution, prompt, validate(execution, prompt))
        written = copy_outputs(folder_paths, prompt, produced, tmp_path / "out")
    assert storage_dtypes == 4 * [torch.bfloat16 if cpu_compute == "bf16" else torch.float32]
    out = tmp_path / "out"
    assert sorted(str(p.relative_to(out)) for p in written) == sorted(
        ["cameras.json", "grid.png", "orbit.webp"] + [f"views/view_{i:02d}.png" for i in range(8)]
    )
    views = [np.asarray(Image.open(out / "views" / f"view_{i:02d}.png"), dtype=np.float32) for i in range(8)]
    assert all(v.shape == (64, 64, 3) and v.std() > 1 for v in views)
    assert min(np.abs(views[0] - v).mean() for v in views[1:]) > 0.5  # the views differ
    with Image.open(out / "orbit.webp") as orbit:
        assert orbit.n_frames == 8 and orbit.size == (64, 64)
    with Image.open(out / "grid.png") as grid:
        assert grid.size == (4 * 64 + 3 * 4, 2 * 64 + 4)  # 4 columns, gap 4
    assert len(json.loads((out / "cameras.json").read_text())["views"]) == 8
    assert (tmp_path / "output" / "diffportrait3d" / "tiny_job").is_dir()


def test_front_and_side_photos_workflow_runs_and_each_photo_reaches_the_views(
    comfy_host, tiny_model_files, tmp_path, workflow_kit
):
    """The shared two-reference graph (a second Appearance Reference Encoder on the MODEL of the first) runs in
    ComfyUI's executor on the tiny model; with the second encoder at strength 0 it gives the official workflow's
    views exactly (that reference never runs), at strength 1 other views: the side photo reaches them."""
    import execution
    import numpy as np
    from PIL import Image

    from diffportrait3d.cli.workflow_jobs import job_prompt
    from diffportrait3d.cli.workflow_runner import copy_outputs, execute, validate

    prompt = workflow_kit.tiny_workflow("front_and_side_photos")
    encoders = [i for i, n in prompt.items() if n["class_type"] == "DP3DAppearanceReferenceEncoder"]
    (second,) = [i for i in encoders if prompt[i]["inputs"]["model"][0] in encoders]
    workflow_kit.write_test_images(tmp_path / "input")
    jobs = {"official": workflow_kit.tiny_workflow(), "side_1": prompt, "side_0": json.loads(json.dumps(prompt))}
    jobs["side_0"][second]["inputs"]["strength"] = 0.0
    views = {}
    executor = None
    with comfy_folders(tmp_path / "input", tmp_path / "output", {"diffportrait3d": tiny_model_files}) as folder_paths:
        for name, graph in jobs.items():
            job = job_prompt(graph, "portrait.png", name, seed=3)
            executor, produced = execute(execution, job, validate(execution, job), executor)
            out = tmp_path / name
            copy_outputs(folder_paths, job, produced, out)
            views[name] = np.stack([np.asarray(Image.open(out / "views" / f"view_{i:02d}.png")) for i in range(8)])
    assert views["side_1"].shape == (8, 64, 64, 3) and views["side_1"].std() > 1
    assert np.array_equal(views["side_0"], views["official"])
    assert np.abs(views["side_1"].astype(np.float32) - views["official"]).mean() > 0.5


def test_run_in_process_lists_every_missing_model_file_before_running(comfy_host, tmp_path, workflow_kit):
    host = workflow_kit.host
    if (host / "models" / "diffportrait3d" / "diffportrait3d_unet.safetensors").exists() or (host / "extra_model_paths.yaml").exists():
        pytest.skip(f"{host} may hold the real model files; the missing-model message cannot be shown there")
    images = workflow_kit.write_test_images(tmp_path / "images")
    (tmp_path / "models").mkdir()
    result = workflow_kit.run_cli("run", "--image", str(images["portrait"]), "--out", str(tmp_path / "out"), "--models",
                 str(tmp_path / "models"), cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    for filename, folder in [("diffportrait3d_unet.safetensors", "diffportrait3d"), ("diffportrait3d_vae.safetensors", "diffportrait3d"),
                             ("diffportrait3d_appearance.safetensors", "diffportrait3d"), ("diffportrait3d_cross_view.safetensors", "diffportrait3d"),
                             ("diffportrait3d_pose_controlnet.safetensors", "diffportrait3d"), ("diffportrait3d_empty_prompt.safetensors", "diffportrait3d")]:
        line = next((line for line in result.stderr.splitlines() if line.strip().startswith(filename)), None)
        assert line is not None and str(tmp_path / "models" / folder) in line, (filename, result.stderr[-3000:])
    # Nothing ran: the output folder holds ComfyUI's log only, and ComfyUI's start-up lines are there, not on
    # the console, which says the device and threads instead.
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["comfyui.log"]
    log = (out / "comfyui.log").read_text(encoding="utf-8")
    assert "pytorch version:" in log and "Device: cpu" in log
    for noise in ("pytorch version:", "Device: cpu", "Traceback", "Cannot import"):
        assert noise not in result.stdout and noise not in result.stderr, noise
    assert f"device: CPU, 1 threads (OMP_NUM_THREADS; --threads N to change); ComfyUI {host}, its log: {out / 'comfyui.log'}" in result.stdout


def test_templates_menu_of_a_real_server_lists_only_the_ui_workflows(comfy_server_factory, tmp_path, workflow_kit):
    """ComfyUI's templates menu (GET /workflow_templates) offers the UI workflows, not their API files,
    and serves each as a UI graph."""
    import urllib.request

    server = comfy_server_factory(workflow_kit.comfy_base_folder(tmp_path / "server", {}))
    with urllib.request.urlopen(server.url + "/workflow_templates", timeout=30) as answer:
        listed = json.loads(answer.read())
    assert sorted(listed.get("diffportrait3d", [])) == sorted(WORKFLOWS), listed
    for name in listed["diffportrait3d"]:
        with urllib.request.urlopen(f"{server.url}/api/workflow_templates/diffportrait3d/{name}.json", timeout=30) as answer:
            served = json.loads(answer.read())
        assert served["nodes"] and served["links"], name  # the UI format the menu can open


def test_workflows_check_finds_misplaced_api_files_and_write_moves_them(comfy_host, tmp_path, workflow_kit):
    folder = tmp_path / "workflows"
    folder.mkdir()
    misplaced = folder / f"{OFFICIAL}.api.json"
    misplaced.write_text("{}", encoding="utf-8")
    check = workflow_kit.run_cli("workflows", "--check", "--dir", str(folder), cwd=tmp_path)
    assert check.returncode == 1, check.stderr[-3000:]
    assert f"{misplaced} (misplaced" in check.stderr and str(folder / api_file(OFFICIAL)) in check.stderr
    write = workflow_kit.run_cli("workflows", "--write", "--dir", str(folder), cwd=tmp_path)
    assert write.returncode == 0, write.stderr[-3000:]
    assert not misplaced.exists() and (folder / api_file(OFFICIAL)).is_file()
    again = workflow_kit.run_cli("workflows", "--check", "--dir", str(folder), cwd=tmp_path)
    assert again.returncode == 0 and "workflows up to date" in again.stdout, again.stderr[-3000:]


SIZE_360 = 64


def test_full_head_360_runs_end_to_end_with_the_tiny_360_models(comfy_host, tiny_model_files, tmp_path, workflow_kit):
    """Back view from the back-head generator -> the 360 model's second reference -> 32 views in 4 windows of 8:
    the outputs are 32 views, an 8-column grid, a 32-frame orbit and 32 cameras (the tiny models' views are
    noise, so only their layout and that they vary are checked)."""
    import execution
    import numpy as np
    from PIL import Image

    from diffportrait3d.cli.workflow_graphs import MODEL_FILES_360, MODEL_FILES_BACKHEAD
    from diffportrait3d.cli.workflow_jobs import job_prompt, model_files
    from diffportrait3d.cli.workflow_runner import check_models, copy_outputs, execute, validate

    prompt = job_prompt(workflow_kit.tiny_workflow("full_head_360", size=SIZE_360), "portrait.png", "head", seed=5)
    used = {f.filename for f in model_files(prompt)}
    assert used == set(MODEL_FILES_360.values()) | set(MODEL_FILES_BACKHEAD.values())
    workflow_kit.write_test_images(tmp_path / "input")
    with comfy_folders(tmp_path / "input", tmp_path / "output", {"diffportrait3d": tiny_model_files}) as folder_paths:
        check_models(folder_paths, prompt)
        _, produced = execute(execution, prompt, validate(execution, prompt))
        written = copy_outputs(folder_paths, prompt, produced, tmp_path / "out")
    out = tmp_path / "out"
    assert sorted(str(p.relative_to(out)) for p in written) == sorted(
        ["cameras.json", "grid.png", "orbit.webp"] + [f"views/view_{i:02d}.png" for i in range(32)]
    )
    views = [np.asarray(Image.open(out / "views" / f"view_{i:02d}.png"), dtype=np.float32) for i in range(32)]
    assert all(v.shape == (SIZE_360, SIZE_360, 3) and v.std() > 1 for v in views)
    assert min(np.abs(views[0] - v).mean() for v in views[1:]) > 0.5
    with Image.open(out / "orbit.webp") as orbit:
        assert orbit.n_frames == 32
    with Image.open(out / "grid.png") as grid:
        assert grid.size == (8 * SIZE_360 + 7 * 4, 4 * SIZE_360 + 3 * 4)
    assert len(json.loads((out / "cameras.json").read_text())["views"]) == 32


def run_full_head_360(tiny_model_files, tmp_path, workflow_kit, edit=None, **settings):
    """The tiny full_head_360 job's outputs (``edit`` may change the prompt first), or the executor's error."""
    import execution

    from diffportrait3d.cli.workflow_jobs import job_prompt
    from diffportrait3d.cli.workflow_runner import copy_outputs, execute, validate

    prompt = job_prompt(workflow_kit.tiny_workflow("full_head_360", size=SIZE_360), "portrait.png", "head", **settings)
    if edit is not None:
        edit(prompt)
    workflow_kit.write_test_images(tmp_path / "input")
    with comfy_folders(tmp_path / "input", tmp_path / "output", {"diffportrait3d": tiny_model_files}) as folder_paths:
        _, produced = execute(execution, prompt, validate(execution, prompt))
        return copy_outputs(folder_paths, prompt, produced, tmp_path / "out")



def test_full_head_360_second_reference_is_the_generated_back_of_the_head(comfy_host, tiny_model_files, tmp_path,
                                                                          workflow_kit):
    """The back-head step's image reaches the 32 views through reference 2 (at its strength 0 the views change),
    and the whole graph is deterministic for one seed."""
    import numpy as np
    from PIL import Image

    def views(folder, edit=None, seed=5):
        written = run_full_head_360(tiny_model_files, tmp_path / folder, workflow_kit, edit, seed=seed)
        return np.stack([np.asarray(Image.open(p), dtype=np.float32) for p in sorted(written) if p.parent.name == "views"])

    def without_back(prompt):
        prompt["27"]["inputs"]["strength"] = 0.0

    shipped = views("shipped")
    assert shipped.shape[0] == 32
    assert np.abs(shipped - views("no_back", without_back)).mean() > 0.5
    assert np.array_equal(shipped, views("again"))  # deterministic for one seed
