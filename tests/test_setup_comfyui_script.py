"""``.ci/setup-comfyui.sh`` refuses, before installing anything, a folder that is not ComfyUI and a Python
without torch (the torch it must keep). Its installing run is checked on a fresh venv (README, .ci/run)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / ".ci" / "setup-comfyui.sh"
pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def setup(*args, python: str = sys.executable) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHON": python})


def test_a_folder_that_is_not_comfyui_is_refused(tmp_path):
    result = setup(str(tmp_path))
    assert result.returncode == 2
    assert f"{tmp_path} is not a ComfyUI checkout" in result.stderr


def test_a_python_without_torch_is_refused_with_the_fix(tmp_path):
    fake = tmp_path / "ComfyUI"
    (fake / "comfy").mkdir(parents=True)
    for name in ("comfy/model_patcher.py", "nodes.py", "requirements.txt"):
        (fake / name).write_text("")
    no_torch = tmp_path / "python"
    no_torch.write_text(f"#!/bin/sh\nexec {sys.executable} -S -I \"$@\"\n")  # no site-packages: no torch
    no_torch.chmod(0o755)
    result = setup(str(fake), python=str(no_torch))
    assert result.returncode == 2, result.stderr
    assert "torch is not installed" in result.stderr and "pip install torch==" in result.stderr
