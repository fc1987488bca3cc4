"""Test harness: the pack under test is this checkout; host tests run inside a real ComfyUI.

Host tests are marked ``@pytest.mark.host``. ComfyUI is looked for in ``$COMFYUI_PATH``, the pack's
grandparent folder and ``~/comfy/ComfyUI``; without one they skip and the summary says so loudly.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import sys
import types
import uuid
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # 2 threads on a loaded 2-core box are ~100x slower

import pytest  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"


def _import_this_checkout() -> types.ModuleType:
    """Bind the name ``diffportrait3d`` to this checkout, whatever an editable install points at."""
    spec = importlib.util.spec_from_file_location(
        "diffportrait3d", ROOT / "__init__.py", submodule_search_locations=[str(ROOT)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["diffportrait3d"] = module
    spec.loader.exec_module(module)
    return module


_import_this_checkout()
torch.set_num_threads(1)
sys.path.insert(0, str(ROOT / "tests"))  # shared test helpers (tests/*_helpers.py)

from diffportrait3d.bench.random_weights import fill_random_weights_  # noqa: E402
from diffportrait3d.cli.comfy_host import comfyui_candidates, find_comfyui  # noqa: E402
from diffportrait3d.cli.comfy_session import start_comfyui  # noqa: E402
from diffportrait3d.cli.workflow_runner import ExecutorMessages  # noqa: E402

HOST = find_comfyui(ROOT)
HOST_SKIP_REASON = "no ComfyUI host found (searched: {}); see README 'Tests against a real ComfyUI'".format(
    ", ".join(f"{label}={path}" for label, path in comfyui_candidates(ROOT))
)


def pytest_report_header(config):
    return f"ComfyUI host: {HOST}" if HOST else f"ComfyUI host: NONE -- {HOST_SKIP_REASON}"


def pytest_collection_modifyitems(config, items):
    if HOST is not None:
        return
    skip = pytest.mark.skip(reason=HOST_SKIP_REASON)
    for item in items:
        if "host" in item.keywords:
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    host_items = [
        rep
        for key in ("passed", "failed", "skipped", "error")
        for rep in terminalreporter.stats.get(key, [])
        if getattr(rep, "when", "call") in ("call", "setup") and "host" in getattr(rep, "keywords", {})
    ]
    if HOST is None:
        terminalreporter.write_sep("!", f"HOST TESTS SKIPPED ({len(host_items)}): {HOST_SKIP_REASON}", red=True)
    else:
        terminalreporter.write_sep("=", f"host tests ran against the real ComfyUI at {HOST} ({len(host_items)} results)")


# --------------------------------------------------------------------------------------------- host


@pytest.fixture(scope="session")
def comfy_host(tmp_path_factory):
    """The real ComfyUI, imported in-process on the CPU, with its built-in nodes and this pack loaded
    (``start_comfyui`` of the command line; the host's own extra_model_paths.yaml is not read).

    Returns a namespace with ``path``, the ``nodes`` module and ``pack_module`` (the pack as ComfyUI
    imported it through ``nodes.load_custom_node``).
    """
    if HOST is None:
        pytest.skip(HOST_SKIP_REASON)
    # Previews and saved files of test prompts never land in the host's own folders.
    scratch = tmp_path_factory.mktemp("comfy_host")
    try:
        session = start_comfyui(
            HOST, cpu=True, output_directory=scratch / "output", temp_directory=scratch / "temp", host_model_paths=False
        )
    except RuntimeError as error:
        pytest.fail(f"ComfyUI could not load the pack at {ROOT}: {error}")
    module_name = str(ROOT).replace(".", "_x_")
    return types.SimpleNamespace(path=session.path, nodes=session.nodes, pack_module=sys.modules[module_name])


@pytest.fixture
def input_dir(comfy_host, tmp_path):
    """ComfyUI's input folder pointed at a fresh folder for one test (restored afterwards)."""
    import folder_paths

    previous = folder_paths.get_input_directory()
    folder = tmp_path / "input"
    folder.mkdir()
    folder_paths.set_input_directory(str(folder))
    yield folder
    folder_paths.set_input_directory(previous)


TINY_UNET_CONFIG = {
    "image_size": 32,
    "in_channels": 4,
    "out_channels": 4,
    "model_channels": 32,
    "num_res_blocks": [1, 1],
    "channel_mult": [1, 2],
    "transformer_depth": [1, 1],
    "transformer_depth_output": [1, 1, 1, 1],
    "transformer_depth_middle": 1,
    "context_dim": 32,
    "num_heads": 2,
    "num_head_channels": -1,
    "use_linear_in_transformer": False,
    "use_spatial_transformer": True,
    "legacy": False,
    "adm_in_channels": None,
    "use_temporal_attention": False,
    "use_temporal_resblock": False,
}


@pytest.fixture
def tiny_sd15_model(comfy_host):
    """A tiny randomly initialised SD1.5-family UNet as ComfyUI's own ``BaseModel`` in a ``ModelPatcher``."""
    import comfy.model_management
    import comfy.model_patcher
    import comfy.supported_models

    config = comfy.supported_models.SD15(dict(TINY_UNET_CONFIG))
    config.set_inference_dtype(torch.float32, None)
    model = config.get_model({})
    fill_random_weights_(model.diffusion_model, seed=1)  # comfy.ops layers skip init
    return comfy.model_patcher.ModelPatcher(
        model,
        load_device=comfy.model_management.get_torch_device(),
        offload_device=comfy.model_management.unet_offload_device(),
    )


@pytest.fixture
def tiny_controlnet(comfy_host):
    """A tiny randomly initialised ControlNet as ComfyUI's own ``comfy.controlnet.ControlNet``."""
    import comfy.cldm.cldm
    import comfy.controlnet
    import comfy.model_management
    import comfy.ops

    config = {k: v for k, v in TINY_UNET_CONFIG.items() if k != "out_channels"}
    net = comfy.cldm.cldm.ControlNet(hint_channels=3, operations=comfy.ops.disable_weight_init, **config)
    fill_random_weights_(net, seed=2)
    return comfy.controlnet.ControlNet(net, load_device=comfy.model_management.get_torch_device())


@pytest.fixture
def run_prompt(comfy_host):
    """Validate and run an API-format prompt with ComfyUI's in-process ``execution.PromptExecutor``.

    Returns ``(executor, server)``; raises ``AssertionError`` with ComfyUI's own message when validation
    fails (unless ``expect_invalid=True``, then the validation result is returned instead).
    """
    import execution

    def run(prompt: dict, expect_invalid: bool = False):
        prompt_id = str(uuid.uuid4())
        valid = asyncio.run(execution.validate_prompt(prompt_id, prompt, None))
        if expect_invalid:
            return valid
        assert valid[0], f"ComfyUI rejected the prompt: {valid[1]} {valid[3]}"
        server = ExecutorMessages()
        executor = execution.PromptExecutor(server, cache_type=execution.CacheType.CLASSIC, cache_args={"lru": 0, "ram": 0.0})
        executor.execute(prompt, prompt_id, {"client_id": "tests"}, valid[2])
        return executor, server

    return run


@pytest.fixture(scope="session")
def tiny_dp3d_factory(comfy_host, tmp_path_factory):
    """Loads the tiny official model of a golden directory through the project's converter (fp32) and
    loaders: {"unet", "appearance", "cross_view", "pose"} (cached per directory)."""
    from diffportrait3d.kernels.checkpoint.convert import convert_checkpoint
    from diffportrait3d.nodes.model_loading import (
        load_appearance_net,
        load_cross_view_modules,
        load_dp3d_unet,
        load_pose_controlnet,
    )

    cache = {}

    def load(directory: Path = FIXTURES):
        if directory not in cache:
            out = tmp_path_factory.mktemp("tiny_converted")
            report = convert_checkpoint(
                directory / "tiny_official.safetensors", out, dtype="fp32", config_path=directory / "tiny_config.json"
            )
            files = {component: str(path) for component, (path, _, _) in report.written.items()}
            cache[directory] = {
                "files": files,
                "unet": load_dp3d_unet(files["unet"]),
                "appearance": load_appearance_net(files["appearance"]),
                "cross_view": load_cross_view_modules(files["cross_view"]),
                "pose": load_pose_controlnet(files["pose_controlnet"]),
            }
        return cache[directory]

    return load


@pytest.fixture
def tiny_dp3d(tiny_dp3d_factory):
    return tiny_dp3d_factory(FIXTURES)


# ------------------------------------------------------------------------------------- workflows, servers

WORKFLOWS_DIR = ROOT / "workflows"


def shared_api_prompt(name: str) -> dict:
    import json

    from diffportrait3d.cli.workflow_graphs import api_file

    return json.loads((WORKFLOWS_DIR / api_file(name)).read_text(encoding="utf-8"))


def tiny_workflow(name: str = "official_8_views", size: int = 64, steps: int = 2) -> dict:
    """A shared workflow's API prompt sized for the tiny reference model: images are ``size`` pixels and Steps
    is ``steps``. Every node, link and output node stays as shipped (the Empty Prompt node reads the tiny
    model's text context from ``tiny_model_files``)."""
    from diffportrait3d.cli.demo import sized_prompt

    prompt = sized_prompt(shared_api_prompt(name), size)
    for node in prompt.values():
        if node["_meta"]["title"] == "Steps":
            node["inputs"]["value"] = steps
    return prompt


@pytest.fixture(scope="session")
def tiny_model_files(tmp_path_factory) -> Path:
    """A folder with the tiny reference model converted (fp32) under the official file names, and the tiny
    DiffPortrait360 models (360 and back-head) under theirs. The tiny models have no CLIP: each family's
    empty-prompt file holds the text context of its golden runs (``c_crossattn_0``)."""
    from safetensors.torch import load_file

    from diffportrait3d.kernels.checkpoint.convert import convert_checkpoint
    from diffportrait3d.kernels.checkpoint.empty_prompt import EMPTY_PROMPT_FILE, write_empty_prompt

    out = tmp_path_factory.mktemp("tiny_models")
    convert_checkpoint(FIXTURES / "tiny_official.safetensors", out, dtype="fp32", config_path=FIXTURES / "tiny_config.json")
    context = load_file(FIXTURES / "golden_apply_v8.safetensors")["c_crossattn_0"][:1]
    conditioning = {"cond": context, "pooled_output": context[:, 1]}  # pooled: the state at the end token
    write_empty_prompt(out / EMPTY_PROMPT_FILE, conditioning, {"dp3d.source_file": "golden_apply_v8.safetensors"})
    # DiffPortrait360's tiny 360 and back-head models beside them (diffportrait360_* names), for full_head_360.
    for stem in ("tiny_360", "tiny_backhead"):
        convert_checkpoint(FIXTURES / "tiny360" / f"{stem}.safetensors", out, dtype="fp32",
                           config_path=FIXTURES / "tiny360" / f"{stem}_config.json")
    context = load_file(FIXTURES / "tiny360" / "golden_backhead_apply.safetensors")["c_crossattn_0"][:1]
    write_empty_prompt(out / "diffportrait360_empty_prompt.safetensors",
                       {"cond": context, "pooled_output": context[:, 1]},
                       {"dp3d.source_file": "golden_backhead_apply.safetensors"})
    return out


def write_test_images(folder: Path) -> dict[str, Path]:
    """A small portrait PNG, a 4-frame animated driving WEBP and a side photo PNG, the input names the shared
    workflows use."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    y, x = np.mgrid[0:96, 0:96]
    face = ((x - 48) ** 2 / 30**2 + (y - 50) ** 2 / 38**2) < 1
    pixels = np.where(face[..., None], [214, 170, 140], [245, 245, 245]).astype(np.uint8)
    Image.fromarray(pixels).save(folder / "portrait.png")
    frames = [Image.fromarray(np.roll(pixels, shift, axis=1)) for shift in (-12, -4, 4, 12)]
    frames[0].save(folder / "driving_frames.webp", save_all=True, append_images=frames[1:], duration=100)
    side = ((x - 60) ** 2 / 24**2 + (y - 50) ** 2 / 38**2) < 1  # a narrower face turned to one side
    Image.fromarray(np.where(side[..., None], [200, 150, 120], [235, 240, 245]).astype(np.uint8)).save(folder / "side_photo.png")
    return {"portrait": folder / "portrait.png", "driving": folder / "driving_frames.webp", "side": folder / "side_photo.png"}


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ComfyServerProcess:
    """``main.py --cpu`` of the host on 127.0.0.1 and a free port, in ``base`` (its own custom_nodes,
    models, input, output and user folders, so nothing is written into the ComfyUI checkout)."""

    def __init__(self, base: Path, startup_timeout: float = 120.0, wait: bool = True):
        import subprocess

        self.base = base
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = base / "server.log"
        command = [
            sys.executable, str(HOST / "main.py"), "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
            "--disable-api-nodes", "--base-directory", str(base), "--database-url", "sqlite:///:memory:",
            "--disable-auto-launch",
        ]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        self.log = open(self.log_path, "wb")  # noqa: SIM115 -- closed in stop()
        self.process = subprocess.Popen(command, cwd=HOST, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        self.startup_timeout = startup_timeout
        if wait:
            self.wait_ready()

    def wait_ready(self) -> None:
        """Block until the server answers with the pack's nodes; RuntimeError with its log otherwise."""
        import time
        import urllib.request

        startup_timeout = self.startup_timeout
        deadline = time.monotonic() + startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.stop()
                raise RuntimeError(f"ComfyUI server exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "/object_info/DP3DCameraPath", timeout=2) as answer:
                    if answer.status == 200 and json_loads(answer.read()):
                        return
            except OSError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"ComfyUI server not ready after {startup_timeout:.0f} s (or the pack did not load):\n{self.log_tail()}")

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def stop(self) -> None:
        import subprocess

        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)
        self.log.close()


def json_loads(data: bytes):
    import json

    return json.loads(data)


def comfy_base_folder(base: Path, models: dict[str, dict[str, Path | None]], extra_custom_nodes=()) -> Path:
    """A ComfyUI base directory: custom_nodes/ with this pack (a link to the checkout) and ``extra_custom_nodes``,
    models/<folder>/<name> copied from a path (or an empty placeholder for None), input/ with the test images."""
    nodes_dir = base / "custom_nodes"
    nodes_dir.mkdir(parents=True)
    (nodes_dir / "diffportrait3d").symlink_to(ROOT, target_is_directory=True)
    for extra in extra_custom_nodes:
        (nodes_dir / extra.name).symlink_to(extra, target_is_directory=True)
    for folder, files in models.items():
        (base / "models" / folder).mkdir(parents=True, exist_ok=True)
        for name, source in files.items():
            target = base / "models" / folder / name
            if source is None:
                target.touch()
            else:
                import shutil

                shutil.copyfile(source, target)
    write_test_images(base / "input")
    settings = base / "user" / "default" / "comfy.settings.json"
    settings.parent.mkdir(parents=True)
    settings.write_text('{"Comfy.TutorialCompleted": true}')  # no first-run templates dialog over the graph
    return base


@pytest.fixture
def comfy_server_factory():
    """Start ComfyUI servers (``ComfyServerProcess(base)``); every one is stopped after the test."""
    if HOST is None:
        pytest.skip(HOST_SKIP_REASON)
    started = []

    def start(base: Path) -> ComfyServerProcess:
        server = ComfyServerProcess(base)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def tiny_server_models(tiny_model_files: Path) -> dict:
    return {"diffportrait3d": {path.name: path for path in tiny_model_files.glob("*.safetensors")}}


def run_cli(*args, cwd: Path, timeout: int = 300):
    """``python -m diffportrait3d ...`` of this checkout (the package name linked to it) in a new process."""
    import subprocess

    link_root = cwd / "pkg"
    if not link_root.exists():
        link_root.mkdir()
        (link_root / "diffportrait3d").symlink_to(ROOT, target_is_directory=True)
    env = {**os.environ, "PYTHONPATH": str(link_root), "OMP_NUM_THREADS": "1"}
    if HOST is not None:
        env["COMFYUI_PATH"] = str(HOST)
    return subprocess.run([sys.executable, "-m", "diffportrait3d", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="session")
def workflow_kit():
    """Helpers of the workflow tests (conftest is not importable under --import-mode=importlib)."""
    return types.SimpleNamespace(
        host=HOST, root=ROOT, shared_api_prompt=shared_api_prompt,
        tiny_workflow=tiny_workflow, write_test_images=write_test_images, comfy_base_folder=comfy_base_folder,
        tiny_server_models=tiny_server_models, run_cli=run_cli, server_process=ComfyServerProcess,
    )
