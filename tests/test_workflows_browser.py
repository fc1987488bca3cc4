"""Every UI workflow in the real ComfyUI frontend: ``main.py --cpu`` with the pack, headless Debian chromium
driven by playwright-core (``tests/browser``, no browser download). Each workflow loads with no missing node
types, converts (app.graphToPrompt) to exactly the committed API prompt, and the server accepts that prompt.

Needs: a ComfyUI host, chromium (``$DP3D_CHROMIUM`` or /usr/bin/chromium), node, and
``npm install --prefix tests/browser`` (``.ci/run`` does it). Set ``DP3D_SCREENSHOT=path.png`` to save a
picture of the official workflow in the frontend (how docs/official_workflow.png was made).
"""

import json
import os
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest

from diffportrait3d.cli.workflow_graphs import WORKFLOWS

pytestmark = pytest.mark.host

BROWSER_DIR = Path(__file__).parent / "browser"
CHROMIUM = Path(os.environ.get("DP3D_CHROMIUM", "/usr/bin/chromium"))


def browser_skip_reason() -> str | None:
    if not CHROMIUM.is_file():
        return f"no chromium at {CHROMIUM} (apt-get install chromium, or set DP3D_CHROMIUM)"
    if shutil.which("node") is None:
        return "no node on PATH (the frontend is driven by playwright-core from npm)"
    if not (BROWSER_DIR / "node_modules" / "playwright-core").is_dir():
        return "playwright-core not installed: npm install --prefix tests/browser (no browser download needed)"
    return None


def post_json(url: str, body: dict, timeout: float = 30):
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status, json.loads(answer.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def test_ui_workflows_load_in_the_frontend_and_convert_to_accepted_prompts(
    comfy_server_factory, tiny_model_files, tmp_path, workflow_kit
):
    reason = browser_skip_reason()
    if reason:
        pytest.skip(reason)
    models = workflow_kit.tiny_server_models(tiny_model_files)
    # Validation lists file names only; this one is never loaded (the queued prompts are cancelled).
    models["loras"] = {"your_sd15_lora.safetensors": None}
    server = comfy_server_factory(workflow_kit.comfy_base_folder(tmp_path / "server", models))
    names = sorted(WORKFLOWS)
    ui_files = [str(workflow_kit.root / "workflows" / f"{name}.json") for name in names]
    command = ["node", str(BROWSER_DIR / "load_workflows.mjs"), "--url", server.url + "/", "--chromium", str(CHROMIUM),
               "--profile", str(tmp_path / "chromium-profile"), *ui_files]
    if os.environ.get("DP3D_SCREENSHOT"):
        command += ["--screenshot", os.environ["DP3D_SCREENSHOT"], "--viewport", "2800x1250"]
    result = subprocess.run(command, cwd=BROWSER_DIR, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, f"{result.stderr[-3000:]}\n--- server log\n{server.log_tail()}"
    report = json.loads(result.stdout)
    try:
        for name, path in zip(names, ui_files, strict=True):
            loaded = report["workflows"][path]
            ui = json.loads(Path(path).read_text())
            assert loaded["missing"] == [], f"{name}: node types unknown to the frontend: {loaded['missing']}"
            assert sorted(n["id"] for n in loaded["nodes"]) == sorted(n["id"] for n in ui["nodes"]), name
            assert loaded["prompt"] == workflow_kit.shared_api_prompt(name), f"{name}: frontend prompt differs from the API file"
            status, answer = post_json(server.url + "/prompt", {"prompt": loaded["prompt"], "client_id": "dp3d-tests"})
            assert status == 200 and answer.get("node_errors") == {}, f"{name}: server rejected it: {answer}"
    finally:
        post_json(server.url + "/queue", {"clear": True})
        post_json(server.url + "/interrupt", {})
