"""``python -m diffportrait3d demo``: the official workflow end to end on a tiny random model, from a copy of the
pack without tests/ (what an installed copy has), run from another folder."""

import json
import os
import shutil
import subprocess
import sys

import pytest

pytestmark = pytest.mark.host


def copy_without_tests(root, target):
    """The pack's files as an install has them: no tests/, no git, no caches."""
    shutil.copytree(root, target, ignore=shutil.ignore_patterns("tests", ".git", "__pycache__", ".ruff_cache", "*.pyc"))
    assert not (target / "tests").exists()


@pytest.mark.slow
def test_demo_runs_the_official_workflow_and_says_its_weights_are_random(tmp_path, workflow_kit):
    from PIL import Image

    copy_without_tests(workflow_kit.root, tmp_path / "site" / "diffportrait3d")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site"), "OMP_NUM_THREADS": "1", "COMFYUI_PATH": str(workflow_kit.host)}
    result = subprocess.run([sys.executable, "-m", "diffportrait3d", "demo", "--steps", "2"], cwd=elsewhere, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]

    out = elsewhere / "diffportrait3d-demo"  # the default --out, in the working folder
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    views = [f"views/view_{i:02d}.png" for i in range(8)]  # default --views 8
    assert files == sorted(["DEMO_README.txt", "cameras.json", "comfyui.log", "grid.png", "orbit.webp", "outputs.json",
                            "portrait.png", *views])
    for name in views:
        with Image.open(out / name) as view:
            assert view.size == (128, 128)  # default --size 128
    with Image.open(out / "grid.png") as grid:
        assert grid.size == (4 * 128 + 3 * 4, 2 * 128 + 4)  # 4 per row, gap 4
    with Image.open(out / "orbit.webp") as orbit:
        assert orbit.n_frames == 8 and orbit.size == (128, 128)
    assert len(json.loads((out / "cameras.json").read_text())["views"]) == 8

    notice = (out / "DEMO_README.txt").read_text()
    assert "RANDOM TINY WEIGHTS" in notice and "not a picture of a face" in notice
    for instruction in ("model_state-540000-001.th", "drive.google.com",
                        "python -m diffportrait3d convert model_state-540000-001.th --out ComfyUI/models/diffportrait3d"):
        assert instruction in notice
    assert notice in result.stdout  # printed as well as written
    # ComfyUI's start-up lines go to the log, not to the console.
    assert "Total VRAM" in (out / "comfyui.log").read_text() and "Total VRAM" not in result.stdout + result.stderr


def test_demo_refuses_a_size_the_tiny_model_cannot_take(tmp_path, workflow_kit):
    result = workflow_kit.run_cli("demo", "--size", "100", "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 2
    assert "--size 100 must be a multiple of 64" in result.stderr
    assert not (tmp_path / "out").exists()
