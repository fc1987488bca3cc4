"""Bad inputs through a real ComfyUI server's HTTP API (``main.py --cpu``, the tiny model): every one is
answered with a message that names the node input and the fix (at ``POST /prompt`` or as the prompt's
execution error), none runs to a silently wrong result, and the server serves after each of them."""

import json
import uuid

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

pytestmark = pytest.mark.host

UNET, APPEARANCE, NOISE = "1", "24", "32"  # node ids of the shipped official workflow


def broken_unet_files(unet: "Path", folder: "Path") -> dict:  # noqa: F821
    """Damaged copies of the converted tiny UNet, as a user might end up with them."""
    folder.mkdir()
    data = unet.read_bytes()
    (folder / "unet_truncated.safetensors").write_bytes(data[: len(data) // 2])
    (folder / "unet_empty.safetensors").write_bytes(b"")
    torch.save({"weight": torch.zeros(2)}, folder / "unet_pickle.safetensors")
    with safe_open(str(unet), "pt") as handle:
        keys = sorted(handle.keys())
        kept = {key: handle.get_tensor(key) for key in keys[: len(keys) // 2]}
        metadata = handle.metadata()
    save_file(kept, str(folder / "unet_half.safetensors"), metadata=metadata)
    return {path.name: path for path in folder.iterdir()}


@pytest.fixture(scope="module")
def tiny_server(tiny_model_files, tmp_path_factory, workflow_kit):
    from diffportrait3d.cli.server_client import ComfyServer

    models = workflow_kit.tiny_server_models(tiny_model_files)
    broken = broken_unet_files(tiny_model_files / "diffportrait3d_unet.safetensors", tmp_path_factory.mktemp("broken") / "files")
    models["diffportrait3d"].update(broken)
    base = workflow_kit.comfy_base_folder(tmp_path_factory.mktemp("server"), models)
    process = workflow_kit.server_process(base)
    try:
        yield ComfyServer(process.url, timeout=60), process
    finally:
        process.stop()


def submit(server, prompt: dict) -> tuple[dict, str | None]:
    """POST the prompt; (the server's answer, the execution error message or None when it ran)."""
    from diffportrait3d.cli.server_client import ServerError

    try:
        answer = json.loads(server.request("POST", "/prompt", json.dumps({"prompt": prompt, "client_id": uuid.uuid4().hex}).encode(),
                                           {"Content-Type": "application/json"}))
    except ServerError as error:
        return json.loads(error.body), None
    try:
        server.wait_for(answer["prompt_id"], timeout=600)
    except ServerError as error:
        return answer, str(error)
    return answer, None


CASES = {
    "truncated file": ({UNET: {"unet": "unet_truncated.safetensors"}},
                       "unet: unet_truncated.safetensors is not a readable safetensors file"),
    "empty file": ({UNET: {"unet": "unet_empty.safetensors"}}, "unet: unet_empty.safetensors is not a readable safetensors file"),
    "pickle renamed .safetensors": ({UNET: {"unet": "unet_pickle.safetensors"}},
                                    "unet: unet_pickle.safetensors is not a readable safetensors file"),
    "half the tensors": ({UNET: {"unet": "unet_half.safetensors"}}, "unet: unet_half.safetensors does not fit its recorded architecture"),
    "start after end": ({APPEARANCE: {"start_percent": 0.9, "end_percent": 0.1}}, "start_percent (0.9) is after end_percent (0.1)"),
    "outside the output folder": ({"44": {"filename_prefix": "../escape/cameras"}}, "filename_prefix: '../escape/cameras' would write outside"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_an_execution_error_names_the_input_and_the_server_serves_on(tiny_server, workflow_kit, case):
    server, process = tiny_server
    edits, expected = CASES[case]
    prompt = workflow_kit.tiny_workflow(size=64, steps=2)
    for node_id, inputs in edits.items():
        prompt[node_id]["inputs"].update(inputs)
    answer, error = submit(server, prompt)
    assert not answer.get("node_errors"), answer
    assert error is not None and expected in error, error
    if "file" in case or "tensors" in case:
        assert "python -m diffportrait3d convert" in error  # the fix
    assert "Traceback" not in error
    assert server.get_json("/system_stats")["system"]  # still serving
    assert process.process.poll() is None


def test_limits_are_refused_at_the_door_and_a_good_prompt_runs_after_them(tiny_server, workflow_kit):
    server, _ = tiny_server
    for inputs, expected in [({"strength": -1.0}, "Value -1.0 smaller than min of 0.0"),
                             ({"end_percent": 5.0}, "Value 5.0 bigger than max of 1.0")]:
        prompt = workflow_kit.tiny_workflow(size=64, steps=2)
        prompt[APPEARANCE]["inputs"].update(inputs)
        answer, _ = submit(server, prompt)
        [reason] = answer["node_errors"][APPEARANCE]["errors"]
        assert reason["message"] == expected and reason["details"] == next(iter(inputs))
    # The noise made for 10 steps with a 2-step sampler runs (the sampler adapts it) and so does the plain prompt.
    prompt = workflow_kit.tiny_workflow(size=64, steps=2)
    prompt[NOISE]["inputs"]["steps"] = 10
    answer, error = submit(server, prompt)
    assert not answer.get("node_errors") and error is None, (answer, error)
