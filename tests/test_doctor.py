"""``python -m diffportrait3d doctor``: every missing file with its fix, converted files with their architecture
and converting version, broken files named as broken (no traceback), and the exit code."""

import shutil
from pathlib import Path

import pytest

from diffportrait3d.cli.cpu_threads import physical_cores, thread_count
from diffportrait3d.cli.main import _workflow_path
from diffportrait3d.cli.workflow_jobs import load_prompt, model_files
from diffportrait3d.kernels.checkpoint.components import COMPONENT_FILES

COMPONENT_OF = {name: component for component, name in COMPONENT_FILES.items()}


def needed_files() -> dict[str, str]:
    """{file name: model folder} the official workflow loads."""
    return {item.filename: item.folder for item in model_files(load_prompt(_workflow_path("official_8_views")))}


def host_holds_model_files(host) -> bool:
    return host is not None and (
        any((host / "models" / folder / name).exists() for name, folder in needed_files().items())
        or (host / "extra_model_paths.yaml").exists()
    )


def doctor(workflow_kit, models: Path, tmp_path: Path):
    if host_holds_model_files(workflow_kit.host):
        pytest.skip(f"{workflow_kit.host} holds model files of its own; doctor would report those")
    result = workflow_kit.run_cli("doctor", "--models", str(models), cwd=tmp_path, timeout=120)
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    return result


def test_empty_models_folder_lists_every_missing_file_with_its_fix(workflow_kit, tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    result = doctor(workflow_kit, models, tmp_path)
    assert result.returncode == 1, result.stdout
    for filename, folder in needed_files().items():
        assert f"MISSING  {filename}  (folder '{folder}')" in result.stdout
        fix = (f"python -m diffportrait3d convert model_state-540000-001.th --out {models / folder} "
               f"--only {COMPONENT_OF[filename]}")
        assert f"{filename} is missing" in result.stdout and fix in result.stdout, (filename, result.stdout)
    assert "drive.google.com" in result.stdout  # where the checkpoint comes from, said once
    assert "ComfyUI (looked in this order):" in result.stdout and "comfy-cli default" in result.stdout
    assert "ESTIMATE" in result.stdout and "8 views at 512x512" in result.stdout


def test_converted_tiny_files_are_reported_with_architecture_and_version(workflow_kit, tiny_model_files, tmp_path):
    import diffportrait3d

    models = tmp_path / "models"
    (models / "diffportrait3d").mkdir(parents=True)
    for path in tiny_model_files.glob("*.safetensors"):
        shutil.copy(path, models / "diffportrait3d" / path.name)
    result = doctor(workflow_kit, models, tmp_path)
    for filename, folder in needed_files().items():
        assert f"ok       {filename}  {models / folder / filename}" in result.stdout, result.stdout
    for component in ("unet", "appearance", "pose_controlnet", "cross_view", "vae"):
        assert (f"{component}, tiny (random test weights) architecture, fp32" in result.stdout), component
    assert f"converted by pack {diffportrait3d.__version__} (format 1) from tiny_official.safetensors" in result.stdout
    assert "diffportrait3d_empty_prompt.safetensors" in needed_files()  # the workflows need no text encoder
    if workflow_kit.host is not None:
        assert result.returncode == 0 and "Everything the official workflow needs is here." in result.stdout
    else:
        assert result.returncode == 1 and "no ComfyUI found" in result.stdout


def test_a_truncated_file_is_reported_as_broken(workflow_kit, tiny_model_files, tmp_path):
    models = tmp_path / "models"
    (models / "diffportrait3d").mkdir(parents=True)
    name = COMPONENT_FILES["appearance"]
    data = (tiny_model_files / name).read_bytes()
    (models / "diffportrait3d" / name).write_bytes(data[: len(data) // 2])
    result = doctor(workflow_kit, models, tmp_path)
    assert result.returncode == 1
    assert f"BROKEN   {name}  {models / 'diffportrait3d' / name}: truncated" in result.stdout, result.stdout
    assert (f"fix: delete it, then: python -m diffportrait3d convert model_state-540000-001.th --out "
            f"{models / 'diffportrait3d'} --only appearance") in result.stdout


def test_physical_cores_count_cores_not_hyperthreads(monkeypatch):
    cpuinfo = "\n\n".join(f"processor\t: {cpu}\nphysical id\t: 0\ncore id\t\t: {cpu // 2}" for cpu in (0, 1))
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert physical_cores(cpuinfo) == 1  # two hyper-threads of one core
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert thread_count() == (3, "OMP_NUM_THREADS") and thread_count(5) == (5, "--threads")
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert thread_count()[1] == "physical cores"


def test_memory_estimate_weights_match_the_measured_weights():
    """The parameter count of the official architecture gives the weights the bench measured (4.96 GiB at 2 bytes,
    9.92 at 4, both printed to 2 decimals), so the estimate's weight part is the measured one."""
    from diffportrait3d.bench.memory_estimate import step_memory_estimate

    half, single = step_memory_estimate("gpu_half"), step_memory_estimate("cpu_float32")
    assert abs(half.weights_gib - 4.96) <= 0.005 and abs(single.weights_gib - 9.92) <= 0.005
    assert half.low_gib == pytest.approx(4.96 + 1.40, abs=0.01) and single.high_gib == pytest.approx(12.39, abs=0.01)
