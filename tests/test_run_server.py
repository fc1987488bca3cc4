"""``python -m diffportrait3d run --server`` against real ComfyUI servers (``main.py --cpu`` on 127.0.0.1,
free ports, their own base folders): portraits spread over two servers, outputs downloaded in the documented
layout; missing model files reported before anything is queued."""

import json

import pytest

pytestmark = pytest.mark.host


@pytest.fixture(scope="module")
def two_tiny_servers(tiny_model_files, tmp_path_factory, workflow_kit):
    """Two servers with the pack, the test-only tiny text node and the tiny model under the official names
    (no text encoder, no LoRA). Stopped after the module."""
    models = workflow_kit.tiny_server_models(tiny_model_files)
    servers = []
    try:
        for index in range(2):
            base = workflow_kit.comfy_base_folder(tmp_path_factory.mktemp(f"server{index}"), models)
            servers.append(workflow_kit.server_process(base, wait=False))  # both start at once
        for server in servers:
            server.wait_ready()
        yield servers
    finally:
        for server in servers:
            server.stop()


def test_run_spreads_portraits_over_servers_and_downloads_the_outputs(two_tiny_servers, tmp_path, workflow_kit):
    portraits = tmp_path / "portraits"
    images = workflow_kit.write_test_images(portraits)
    images["driving"].unlink()
    images["side"].unlink()  # the portraits folder holds portraits only
    for index in range(2):  # three portraits in all
        (portraits / f"friend_{index}.png").write_bytes(images["portrait"].read_bytes())
    workflow = tmp_path / "tiny_official.api.json"
    workflow.write_text(json.dumps(workflow_kit.tiny_workflow()))
    urls = [server.url for server in two_tiny_servers]
    result = workflow_kit.run_cli("run", "--image", str(portraits), "--workflow", str(workflow), "--views", "8",
                                  "--seed", "4", "--out", str(tmp_path / "out"), "--timeout", "240",
                                  *[arg for url in urls for arg in ("--server", url)], cwd=tmp_path)
    logs = "\n".join(server.log_tail() for server in two_tiny_servers)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr[-3000:]}\n{logs}"
    assert "3 of 3 portraits done on 2 server(s)" in result.stdout
    assert all(url in result.stdout for url in urls), result.stdout  # both servers took work
    jobs = sorted((tmp_path / "out").iterdir())
    assert [job.name.rsplit("_", 1)[0] for job in jobs] == ["friend_0", "friend_1", "portrait"]
    for job in jobs:
        files = sorted(str(p.relative_to(job)) for p in job.rglob("*") if p.is_file())
        assert files == sorted(["cameras.json", "grid.png", "orbit.webp", "outputs.json"] + [f"views/view_{i:02d}.png" for i in range(8)])
        assert len(json.loads((job / "cameras.json").read_text())["views"]) == 8
        assert (job / "orbit.webp").read_bytes()[:4] == b"RIFF"


def test_run_reports_missing_models_of_a_server_before_queueing(two_tiny_servers, tmp_path, workflow_kit):
    server = two_tiny_servers[0]
    before = server.log_tail(100_000).count("Prompt executed")
    images = workflow_kit.write_test_images(tmp_path / "images")
    result = workflow_kit.run_cli("run", "--image", str(images["portrait"]), "--workflow", "lora_freeu_combined",
                                  "--out", str(tmp_path / "out"), "--server", server.url, cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "1 model file(s) missing" in result.stderr
    assert f"your_sd15_lora.safetensors  ->  models/loras/ on {server.url}" in result.stderr
    assert server.log_tail(100_000).count("Prompt executed") == before and not (tmp_path / "out").exists()


def test_run_resumes_skipping_finished_portraits_unless_overwrite(two_tiny_servers, tmp_path, workflow_kit):
    images = workflow_kit.write_test_images(tmp_path / "images")
    workflow = tmp_path / "tiny_official.api.json"
    workflow.write_text(json.dumps(workflow_kit.tiny_workflow()))
    command = ["run", "--image", str(images["portrait"]), "--workflow", str(workflow), "--views", "2",
               "--out", str(tmp_path / "out"), "--timeout", "600", "--server", two_tiny_servers[0].url]
    first = workflow_kit.run_cli(*command, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    (job,) = (tmp_path / "out").iterdir()
    (job / "stale.txt").write_text("from an older run")
    again = workflow_kit.run_cli(*command, cwd=tmp_path)
    assert again.returncode == 0 and "skipped 1 (outputs exist; --overwrite to redo)" in again.stdout, again.stdout
    assert (job / "stale.txt").exists()
    (job / "grid.png").unlink()  # partial: redone
    partial = workflow_kit.run_cli(*command, cwd=tmp_path)
    assert partial.returncode == 0 and "1 of 1 portraits done" in partial.stdout, partial.stdout
    assert (job / "grid.png").is_file() and not (job / "stale.txt").exists()
    (job / "stale.txt").write_text("again")
    redo = workflow_kit.run_cli(*command, "--overwrite", cwd=tmp_path)
    assert redo.returncode == 0 and "1 of 1 portraits done" in redo.stdout, redo.stdout
    assert not (job / "stale.txt").exists()


def test_a_server_killed_mid_batch_hands_its_job_to_the_other(tiny_model_files, tmp_path, workflow_kit):
    import os
    import subprocess
    import sys
    import time

    models = workflow_kit.tiny_server_models(tiny_model_files)
    servers = [workflow_kit.server_process(workflow_kit.comfy_base_folder(tmp_path / f"s{i}", models), wait=False)
               for i in range(2)]
    try:
        for server in servers:
            server.wait_ready()
        portraits = tmp_path / "portraits"
        images = workflow_kit.write_test_images(portraits)
        images["driving"].unlink()
        images["side"].unlink()  # the portraits folder holds portraits only
        for index in range(3):
            (portraits / f"friend_{index}.png").write_bytes(images["portrait"].read_bytes())
        workflow = tmp_path / "tiny.api.json"
        workflow.write_text(json.dumps(workflow_kit.tiny_workflow()))
        workflow_kit.run_cli("--help", cwd=tmp_path)  # makes the package link
        env = {**os.environ, "PYTHONPATH": str(tmp_path / "pkg"), "OMP_NUM_THREADS": "1"}
        cli = subprocess.Popen([sys.executable, "-m", "diffportrait3d", "run", "--image", str(portraits), "--workflow",
                                str(workflow), "--views", "4", "--out", str(tmp_path / "out"), "--timeout", "600",
                                "--server", servers[0].url, "--server", servers[1].url],
                               cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        while "got prompt" not in servers[0].log_tail(100_000) and cli.poll() is None:
            time.sleep(0.05)
        servers[0].process.kill()
        stdout, stderr = cli.communicate(timeout=600)
        assert cli.returncode == 0, f"{stdout}\n{stderr}"
        assert "4 of 4 portraits done on 2 server(s)" in stdout
        assert f"server down: {servers[0].url}" in stderr
        assert len([p for p in (tmp_path / "out").iterdir() if (p / "outputs.json").is_file()]) == 4
    finally:
        for server in servers:
            server.stop()


def test_a_rejected_prompt_is_not_retried_and_its_reason_is_listed(two_tiny_servers, tmp_path, workflow_kit):
    images = workflow_kit.write_test_images(tmp_path / "images")
    prompt = workflow_kit.tiny_workflow()
    node_id, node = next((i, n) for i, n in prompt.items() if any(isinstance(v, list) for v in n["inputs"].values()))
    name = next(k for k, v in node["inputs"].items() if isinstance(v, list))
    node["inputs"][name] = ["9999", 0]  # a link to no node: the server refuses the prompt
    workflow = tmp_path / "broken.api.json"
    workflow.write_text(json.dumps(prompt))
    result = workflow_kit.run_cli("run", "--image", str(images["portrait"]), "--workflow", str(workflow),
                                  "--out", str(tmp_path / "out"), "--timeout", "600",
                                  *[arg for s in two_tiny_servers for arg in ("--server", s.url)], cwd=tmp_path)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "0 of 1 portraits done" in result.stdout and "1 failed:" in result.stderr
    failure = next(line for line in result.stderr.splitlines() if "FAILED" in line)
    assert "rejected the prompt" in failure and "failed validation" in failure
    assert sum(f"{s.url} rejected" in failure for s in two_tiny_servers) == 1  # tried on one server only
    assert "server down" not in result.stderr
