"""Run jobs on ComfyUI servers through the standard HTTP API (``/upload/image``, ``/prompt``, ``/history``,
``/view``, ``/object_info``), with the standard library only. Never imports ``comfy``.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from .job_schedule import JobSchedule, ScheduledJob
from .workflow_format import combo_options, input_specs
from .workflow_jobs import JobError, ModelFile, describe_rejection, job_prompt, model_files, output_files


class ServerError(RuntimeError):
    """A request that failed; ``body`` is the server's answer to it when it gave one (an HTTP error).
    ``server_down``: the server itself failed (unreachable, reset, timed out), so the job may go to another."""

    def __init__(self, message: str, body: str = "", server_down: bool = False):
        super().__init__(message)
        self.body = body
        self.server_down = server_down


class ComfyServer:
    """One ComfyUI server at ``url`` (e.g. http://127.0.0.1:8188); every request is bounded by ``timeout``."""

    def __init__(self, url: str, timeout: float = 60.0):
        if not url.startswith(("http://", "https://")):
            raise JobError(f"--server {url}: give the address with its scheme, e.g. http://127.0.0.1:8188")
        self.url = url.rstrip("/")
        self.timeout = timeout

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None) -> bytes:
        request = urllib.request.Request(self.url + path, data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.read()
        except urllib.error.HTTPError as error:
            detail = error.read().decode("utf-8", "replace")
            raise ServerError(f"{self.url}{path}: HTTP {error.code}: {detail[:2000]}", body=detail) from error
        except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException) as error:
            raise ServerError(f"{self.url}{path}: cannot reach the server ({error}); is ComfyUI running there?",
                              server_down=True) from error

    def get_json(self, path: str):
        return json.loads(self.request("GET", path))

    def upload_image(self, path: Path, name: str) -> str:
        """Upload ``path`` into the server's input folder as ``name`` (overwriting); returns the LoadImage value."""
        boundary = uuid.uuid4().hex
        parts = [
            (f'--{boundary}\r\nContent-Disposition: form-data; name="overwrite"\r\n\r\ntrue\r\n').encode(),
            (f'--{boundary}\r\nContent-Disposition: form-data; name="type"\r\n\r\ninput\r\n').encode(),
            (f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{name}"\r\n'
             "Content-Type: application/octet-stream\r\n\r\n").encode() + Path(path).read_bytes() + b"\r\n",
            f"--{boundary}--\r\n".encode(),
        ]
        answer = json.loads(self.request(
            "POST", "/upload/image", b"".join(parts), {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        ))
        return f"{answer['subfolder']}/{answer['name']}" if answer.get("subfolder") else answer["name"]

    def queue_prompt(self, prompt: dict, client_id: str) -> str:
        body = json.dumps({"prompt": prompt, "client_id": client_id}).encode()
        try:
            answer = json.loads(self.request("POST", "/prompt", body, {"Content-Type": "application/json"}))
        except ServerError as error:
            if error.server_down:  # gone while posting (e.g. killed mid-request): another server may take the job
                raise
            raise ServerError(f"{self.url} rejected the prompt: {rejection_reasons(error.body) or error}") from error
        return answer["prompt_id"]

    def wait_for(self, prompt_id: str, timeout: float, poll: float = 0.5) -> dict:
        """The history entry of a finished prompt; ServerError when it failed or ``timeout`` seconds pass."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            entry = self.get_json(f"/history/{urllib.parse.quote(prompt_id)}").get(prompt_id)
            status = (entry or {}).get("status", {})
            if status.get("completed") or status.get("status_str") in ("success", "error"):
                if status.get("status_str") == "error":
                    raise ServerError(f"{self.url}: prompt {prompt_id} failed: {execution_error(status)}")
                return entry
            time.sleep(poll)
        raise ServerError(f"{self.url}: prompt {prompt_id} not finished after {timeout:.0f} s (--timeout)",
                          server_down=True)

    def download(self, filename: str, subfolder: str, folder_type: str) -> bytes:
        query = urllib.parse.urlencode({"filename": filename, "subfolder": subfolder, "type": folder_type})
        return self.request("GET", f"/view?{query}")

    def missing_models(self, prompt: dict) -> list[ModelFile]:
        """Model files the prompt names that the server does not list (from ``/object_info/<node>``)."""
        options: dict[str, dict] = {}
        missing = []
        for item in model_files(prompt):
            if item.class_type not in options:
                info = self.get_json(f"/object_info/{urllib.parse.quote(item.class_type)}").get(item.class_type)
                if info is None:
                    raise ServerError(f"{self.url} has no node type {item.class_type}; is the pack installed there?")
                options[item.class_type] = {name: combo_options(spec) for name, spec, _ in input_specs(info)}
            if item.filename not in (options[item.class_type].get(item.input_name) or []):
                missing.append(item)
        return missing


def rejection_reasons(body: str) -> str | None:
    """The reasons in the answer to a refused ``POST /prompt`` (``{"error": ..., "node_errors": ...}``, what
    ``execution.validate_prompt`` found); None when ``body`` is not such an answer."""
    try:
        answer = json.loads(body)
    except ValueError:
        return None
    if not isinstance(answer, dict) or "error" not in answer or "node_errors" not in answer:
        return None
    return describe_rejection(answer["error"], answer["node_errors"])


def execution_error(status: dict) -> str:
    for event, data in status.get("messages", []):
        if event == "execution_error":
            return f"node {data.get('node_id')} {data.get('node_type')}: {data.get('exception_message', '').strip()}"
        if event == "execution_interrupted":
            return "interrupted"
    return "see the server's log"


MANIFEST = "outputs.json"


@dataclass
class Job:
    portrait: Path
    name: str
    written: list[Path] = field(default_factory=list)
    server: str = ""
    error: str = ""


def run_job(server: ComfyServer, job: Job, prompt: dict, out: Path, settings: dict, timeout: float) -> None:
    """Upload the portrait, queue the prompt set up for it, wait, download its outputs into ``out/<job>``; the
    manifest ``outputs.json`` is written last, so a folder without it is a partial job."""
    job.server = server.url
    job.written = []
    image = server.upload_image(job.portrait, f"{job.name}{job.portrait.suffix.lower()}")
    ready = job_prompt(prompt, image, job.name, **settings)
    prompt_id = server.queue_prompt(ready, client_id=f"diffportrait3d-run-{uuid.uuid4().hex[:8]}")
    entry = server.wait_for(prompt_id, timeout)
    for item in output_files(ready, entry.get("outputs", {})):
        target = out / job.name / item.destination
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(server.download(item.filename, item.subfolder, item.folder_type))
        job.written.append(target)
    write_manifest(out / job.name, job.portrait, job.written, server.url)


def write_manifest(folder: Path, portrait: Path, written: list[Path], where: str) -> None:
    """Mark ``folder`` complete: the portrait, where it ran and the files written (relative to ``folder``)."""
    folder.mkdir(parents=True, exist_ok=True)
    files = sorted(str(Path(p).relative_to(folder)) for p in written)
    (folder / MANIFEST).write_text(json.dumps({"portrait": str(portrait), "ran_on": where, "files": files}, indent=1))


def outputs_complete(folder: Path) -> bool:
    """True when ``folder`` has its manifest and every file the manifest lists."""
    try:
        files = json.loads((folder / MANIFEST).read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return all((folder / name).is_file() for name in files)


def run_on_servers(servers: list[ComfyServer], jobs: list[Job], prompt: dict, out: Path, settings: dict,
                   timeout: float, on_done=None, tries: int = 3) -> tuple[list[Job], dict[str, str]]:
    """Spread ``jobs`` over ``servers``: one worker per server takes the next job when it is free, so faster
    servers take more. A server that fails (gone, refused, timed out) is marked down and its job goes to another
    live server, up to ``tries`` servers per job; a rejected or failing prompt is not retried. Returns the jobs
    with ``written`` or ``error`` filled and the servers marked down (url -> why); ``on_done(job)`` after each."""
    by_url = {server.url: server for server in servers}
    schedule = JobSchedule([ScheduledJob(job.name, job) for job in jobs], list(by_url), tries=tries)

    def worker(server: ComfyServer):
        while (scheduled := schedule.next_job(server.url)) is not None:
            job = scheduled.payload
            try:
                run_job(server, job, prompt, out, settings, timeout)
            except ServerError as error:
                if error.server_down:
                    schedule.server_failed(scheduled, str(error))
                else:
                    schedule.failed(scheduled, str(error))
            except (JobError, OSError, KeyError, ValueError) as error:
                schedule.failed(scheduled, str(error))
            else:
                schedule.succeeded(scheduled)
                if on_done is not None:
                    on_done(job)
                continue
            if scheduled.state == "failed":
                job.error = scheduled.reason
                if on_done is not None:
                    on_done(job)

    threads = [threading.Thread(target=worker, args=(server,), daemon=True) for server in by_url.values()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for scheduled in schedule.jobs:  # stranded when the last server went down
        if scheduled.state != "done" and not scheduled.payload.error:
            scheduled.payload.error = scheduled.reason
    return jobs, dict(schedule.down)
