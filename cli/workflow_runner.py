"""Run a workflow's API prompt in this process with ComfyUI's own executor (``execution.PromptExecutor``),
for ``python -m diffportrait3d run`` without ``--server``. ``comfy`` is imported only when a job runs.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

from .workflow_jobs import (
    JobError,
    ModelFile,
    describe_rejection,
    missing_models_message,
    model_files,
    output_files,
)


class ExecutorMessages:
    """What a ``PromptExecutor`` reports to its server, kept in memory (no web server in this process)."""

    def __init__(self, on_message=None):
        self.client_id = None
        self.last_node_id = None
        self.last_prompt_id = None
        self.messages: list[tuple[str, dict]] = []
        self.on_message = on_message

    def send_sync(self, event, data, sid=None):
        self.messages.append((event, data))
        if self.on_message is not None:
            self.on_message(event, data)

    def queue_updated(self):
        pass


def add_models_root(folder_paths, root: Path) -> None:
    """Search ``root/<folder>`` first for every model folder ComfyUI knows (a ComfyUI-style models tree)."""
    if not Path(root).is_dir():
        raise JobError(f"--models {root}: no such folder")
    for folder in list(folder_paths.folder_names_and_paths):
        if folder not in ("custom_nodes", "configs"):
            folder_paths.add_model_folder_path(folder, str(Path(root) / folder), is_default=True)


def missing_models(folder_paths, prompt: dict) -> list[ModelFile]:
    return [item for item in model_files(prompt) if folder_paths.get_full_path(item.folder, item.filename) is None]


def check_models(folder_paths, prompt: dict) -> None:
    """JobError listing every model file the prompt needs that no model folder holds, and where it goes."""
    missing = missing_models(folder_paths, prompt)
    if missing:
        folders = {item.folder: folder_paths.get_folder_paths(item.folder) for item in missing}
        raise JobError(missing_models_message(missing, folders))


def validate(execution, prompt: dict) -> list[str]:
    """ComfyUI's own validation of ``prompt``; the output node ids to execute. JobError with its messages."""
    import asyncio

    valid, error, outputs, node_errors = asyncio.run(execution.validate_prompt(str(uuid.uuid4()), prompt, None))
    if not valid:
        raise JobError(f"ComfyUI rejected the workflow: {describe_rejection(error, node_errors)}")
    return outputs


def execute(execution, prompt: dict, outputs: list[str], executor=None, on_message=None):
    """Run a validated prompt; returns ``(executor, history outputs)``. Pass the executor of an earlier job
    to reuse its caches (loaded models). JobError naming the failing node when execution fails."""
    if executor is None:
        executor = execution.PromptExecutor(
            ExecutorMessages(on_message), cache_type=execution.CacheType.CLASSIC, cache_args={"lru": 0, "ram": 0.0}
        )
    executor.server.messages.clear()
    executor.execute(prompt, str(uuid.uuid4()), {"client_id": "diffportrait3d-run"}, outputs)
    if not executor.success:
        for event, data in executor.server.messages:
            if event == "execution_error":
                raise JobError(
                    f"node {data.get('node_id')} ({data.get('node_type')}) failed: {data.get('exception_message', '').strip()}"
                )
        raise JobError("the workflow did not finish (interrupted?)")
    return executor, executor.history_result["outputs"]


def copy_outputs(folder_paths, prompt: dict, outputs: dict, destination: Path) -> list[Path]:
    """Copy a finished job's saved files from ComfyUI's output folder into ``destination`` by role."""
    written = []
    for item in output_files(prompt, outputs):
        source = Path(folder_paths.get_directory_by_type(item.folder_type)) / item.subfolder / item.filename
        target = destination / item.destination
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        written.append(target)
    return written
