"""The shared workflows as files (no ComfyUI needed): both formats of every workflow describe the same graph,
the nodes the run command drives are there, and a job is set up and laid out as documented."""

import json
from pathlib import Path

import pytest

from diffportrait3d.cli.server_client import rejection_reasons
from diffportrait3d.cli.workflow_format import NOTE_TYPES, is_link, ui_matches_api
from diffportrait3d.cli.workflow_graphs import CONTROL_TITLES, OFFICIAL, OUTPUT_ROLES, WORKFLOWS, api_file
from diffportrait3d.cli.workflow_jobs import (
    JobError,
    describe_rejection,
    job_name,
    job_prompt,
    load_prompt,
    missing_models_message,
    model_files,
    output_files,
    portrait_paths,
)

WORKFLOWS_DIR = Path(__file__).resolve().parents[1] / "workflows"


def load(name: str, suffix: str) -> dict:
    path = WORKFLOWS_DIR / (api_file(name) if suffix == ".api.json" else f"{name}{suffix}")
    return json.loads(path.read_text(encoding="utf-8"))


def test_every_workflow_ships_both_formats_and_nothing_else():
    """UI files directly in workflows/ (ComfyUI's templates menu lists those), API files in workflows/api/ (it
    does not look there: they would not load as templates)."""
    shipped = {p.relative_to(WORKFLOWS_DIR).as_posix() for p in WORKFLOWS_DIR.rglob("*.json")}
    expected = {f"{name}.json" for name in WORKFLOWS} | {api_file(name) for name in WORKFLOWS}
    assert shipped == expected
    assert all(path.startswith("api/") for path in expected if path.endswith(".api.json"))
    assert len(WORKFLOWS) >= 4 and OFFICIAL in WORKFLOWS


@pytest.mark.parametrize("name", sorted(WORKFLOWS))
def test_ui_and_api_files_describe_the_same_graph(name):
    ui, api = load(name, ".json"), load(name, ".api.json")
    assert ui["version"] == 0.4
    assert ui_matches_api(ui, api) == []
    for node in ui["nodes"]:
        if node["type"] in NOTE_TYPES:
            continue
        for socket in node["inputs"]:  # every socket input the UI shows is linked (nothing left dangling)
            assert socket["link"] is not None or socket.get("shape") == 7, (name, node["id"], socket["name"])


def test_ui_consistency_check_finds_a_changed_link():
    ui, api = load(OFFICIAL, ".json"), load(OFFICIAL, ".api.json")
    api["33"]["inputs"]["negative"] = ["30", 0]
    assert any("links differ" in problem for problem in ui_matches_api(ui, api))


@pytest.mark.parametrize("name", sorted(WORKFLOWS))
def test_run_controls_and_outputs_are_present(name):
    api = load(name, ".api.json")
    titles = {node["_meta"]["title"]: node for node in api.values()}
    assert titles[CONTROL_TITLES["portrait"]]["class_type"] == "LoadImage"
    for key in ("views", "steps", "seed"):
        assert titles[CONTROL_TITLES[key]]["class_type"] == "PrimitiveInt"
    prefixes = {node["inputs"].get("filename_prefix") for node in api.values()}
    assert {f"diffportrait3d/{role}" for role in OUTPUT_ROLES} <= prefixes
    steps_id = next(i for i, n in api.items() if n["_meta"]["title"] == "Steps")
    sampler = next(n for n in api.values() if n["class_type"] == "DP3DCrossViewSampler")
    noise = next(n for n in api.values() if n["class_type"] == "DP3DNoise")
    assert sampler["inputs"]["steps"] == noise["inputs"]["steps"] == [steps_id, 0]  # one Steps for both
    assert sampler["inputs"]["noise"] == [next(i for i, n in api.items() if n is noise), 0]


def test_official_workflow_is_the_official_setup():
    api = load(OFFICIAL, ".api.json")
    by_type = {node["class_type"]: node["inputs"] for node in api.values()}
    sampler = by_type["DP3DCrossViewSampler"]
    assert (sampler["cfg"], sampler["eta"], sampler["window_mode"], sampler["window_size"]) == (3.0, 0.5, "official", 8)
    values = {node["_meta"]["title"]: node["inputs"].get("value") for node in api.values()}
    assert values["Views"] == 8 and values["Steps"] == 50
    assert by_type["DP3DCameraPath"]["preset"] == "official16"
    assert by_type["EmptyLatentImage"]["width"] == by_type["EmptyLatentImage"]["height"] == 512
    # The official prompt '' for both branches, as a stored constant: no text encoder in the graph.
    assert by_type["ControlNetApplyAdvanced"]["positive"] == by_type["ControlNetApplyAdvanced"]["negative"]
    assert api[by_type["ControlNetApplyAdvanced"]["positive"][0]]["class_type"] == "DP3DEmptyPrompt"
    assert not {"CLIPLoader", "CLIPTextEncode"} & {n["class_type"] for n in api.values()}
    assert by_type["DP3DNoise"]["source"] == "reference_warped"
    assert {n["class_type"] for n in api.values()} >= {"SaveImage", "SaveAnimatedWEBP", "DP3DSaveCameraJSON", "DP3DPreviewGrid"}


def test_job_prompt_sets_the_portrait_numbers_and_output_folders():
    api = load(OFFICIAL, ".api.json")
    job = job_prompt(api, "me.png", "me_1234", views=16, seed=5, steps=20)
    titled = {node["_meta"]["title"]: node for node in job.values()}
    assert titled["Portrait"]["inputs"]["image"] == "me.png"
    assert (titled["Views"]["inputs"]["value"], titled["Seed"]["inputs"]["value"], titled["Steps"]["inputs"]["value"]) == (16, 5, 20)
    assert titled["Save views"]["inputs"]["filename_prefix"] == "diffportrait3d/me_1234/views"
    assert api["10"]["inputs"]["image"] == "portrait.png"  # the shipped prompt is not changed
    del api["11"]
    with pytest.raises(JobError, match="no node titled 'Views'"):
        job_prompt(api, "me.png", "me", views=4)


def test_model_files_and_the_missing_models_message():
    files = model_files(load("lora_freeu_combined", ".api.json"))
    folders = {item.filename: item.folder for item in files}
    assert folders["diffportrait3d_unet.safetensors"] == "diffportrait3d"
    assert folders["diffportrait3d_empty_prompt.safetensors"] == "diffportrait3d"
    assert folders["your_sd15_lora.safetensors"] == "loras"
    message = missing_models_message(files, {"loras": ["/x/models/loras"]})
    assert "your_sd15_lora.safetensors  ->  /x/models/loras" in message
    assert "diffportrait3d_cross_view.safetensors  ->  models/diffportrait3d/" in message
    assert "python -m diffportrait3d convert model_state-540000-001.th" in message
    assert "drive.google.com" in message and "FreedomGu/DiffPortrait3D" in message  # where the checkpoint comes from
    assert "add --only empty_prompt" in message  # the file older conversions lack


def test_output_files_are_named_by_role():
    api = job_prompt(load(OFFICIAL, ".api.json"), "p.png", "p_1")
    history = {
        "40": {"images": [{"filename": f"views_{i:05}_.png", "subfolder": "diffportrait3d/p_1", "type": "output"} for i in range(3)]},
        "42": {"images": [{"filename": "grid_00001_.png", "subfolder": "diffportrait3d/p_1", "type": "output"}]},
        "43": {"images": [{"filename": "orbit_00001_.webp", "subfolder": "diffportrait3d/p_1", "type": "output"}], "animated": [True]},
        "44": {"text": ["/abs/cameras_00001.json"], "json": [{"filename": "cameras_00001.json", "subfolder": "diffportrait3d/p_1", "type": "output"}]},
        "26": {"images": [{"filename": "preview.png", "subfolder": "", "type": "temp"}]},
    }
    names = sorted(item.destination for item in output_files(api, history))
    assert names == ["cameras.json", "grid.png", "orbit.webp", "views/view_00.png", "views/view_01.png", "views/view_02.png"]


def test_inputs_of_the_run_command(tmp_path):
    ui_file = WORKFLOWS_DIR / f"{OFFICIAL}.json"
    with pytest.raises(JobError, match="UI workflow"):
        load_prompt(ui_file)
    assert all(not is_link(v) or isinstance(v[0], str) for n in load_prompt(WORKFLOWS_DIR / api_file(OFFICIAL)).values() for v in n["inputs"].values())
    (tmp_path / "b.png").write_bytes(b"x")
    (tmp_path / "a.jpg").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("x")
    assert [p.name for p in portrait_paths([str(tmp_path)])] == ["a.jpg", "b.png"]
    with pytest.raises(JobError, match="no such file"):
        portrait_paths([str(tmp_path / "missing.png")])
    assert job_name(tmp_path / "my portrait (1).png").startswith("my_portrait_1_")


def test_a_rejected_prompt_is_described_the_same_in_process_and_over_http():
    error = {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation", "details": ""}
    node_errors = {"33": {"class_type": "DP3DCrossViewSampler", "dependent_outputs": ["40"], "errors": [
        {"type": "value_not_in_list", "message": "Value not in list", "details": "sampler: 'x' not in ['ddim']"},
    ]}}
    described = describe_rejection(error, node_errors)
    assert described.splitlines() == [
        "Prompt outputs failed validation: ",
        "  node 33 DP3DCrossViewSampler: Value not in list: sampler: 'x' not in ['ddim']",
    ]
    assert rejection_reasons(json.dumps({"error": error, "node_errors": node_errors})) == described  # POST /prompt 400
    assert rejection_reasons("Internal Server Error") is None and rejection_reasons('{"error": "x"}') is None


def test_full_head_360_refuses_views_other_than_32_before_running():
    """sphere32 always has 32 cameras: ``run --views 8`` is refused with the fix, not deep in the noise node."""
    from diffportrait3d.cli.workflow_format import api_prompt
    from diffportrait3d.cli.workflow_graphs import full_head_360
    from diffportrait3d.cli.workflow_jobs import JobError, job_prompt

    prompt = api_prompt(full_head_360())
    with pytest.raises(JobError, match=r"--views 8: this workflow's cameras \(preset sphere32\) are always 32 views; "
                                       r"leave --views out or give 32"):
        job_prompt(prompt, "portrait.png", "head", views=8)
    assert job_prompt(prompt, "portrait.png", "head", views=32)  # the one value that fits


def test_full_head_360_back_head_step_keeps_the_official_guidance():
    """The back-head guider's negative is the plain empty prompt (no pose ControlNet: controlnet_important), its
    positive the back-head ControlNet's output, and the 360 branch's second reference is the decoded back view."""
    from diffportrait3d.cli.workflow_format import api_prompt
    from diffportrait3d.cli.workflow_graphs import full_head_360

    prompt = api_prompt(full_head_360())
    guider = next(node["inputs"] for node in prompt.values() if node["class_type"] == "CFGGuider")
    assert prompt[guider["negative"][0]]["class_type"] == "DP3DEmptyPrompt"
    control = prompt[guider["positive"][0]]
    assert control["class_type"] == "ControlNetApplyAdvanced" and guider["positive"][1] == 0
    assert prompt[control["inputs"]["control_net"][0]]["inputs"]["pose_controlnet"].startswith("diffportrait360_backhead_")
    encoders = [node["inputs"] for node in prompt.values() if node["class_type"] == "DP3DAppearanceReferenceEncoder"]
    back_image = [prompt[e["reference_image"][0]]["class_type"] for e in encoders]
    assert sorted(back_image) == ["LoadImage", "LoadImage", "VAEDecode"]  # back head: front; 360: front, back
