"""ComfyUI's messages in a log file, so that the command line shows the pack's own.

Imported in-process, ComfyUI logs its start-up (devices, backends, the tracebacks of the optional node files it
skips, e.g. without torchaudio) and its model loading through the root logger, and prints a few lines. Those
go to the file; the console keeps the pack's own warnings (messages starting with "DiffPortrait3D").
"""

from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path

PACK_PREFIX = "DiffPortrait3D"


def _for_console(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING and record.getMessage().startswith(PACK_PREFIX)


def log_to_file(path: Path) -> logging.Handler:
    """From now on every log record goes to ``path`` (overwritten); the console gets only the pack's warnings.
    Python warnings are logged too. Returns the file handler."""
    path.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    file_handler = logging.FileHandler(path, mode="w", encoding="utf-8")
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(logging.Formatter("%(message)s"))
    console.addFilter(_for_console)
    root.addHandler(file_handler)
    root.addHandler(console)
    root.setLevel(logging.INFO)
    logging.captureWarnings(True)
    return file_handler


@contextlib.contextmanager
def prints_to(handler: logging.Handler):
    """``print`` output of the block (ComfyUI's start-up prints some) appended to the handler's file."""
    stream = handler.stream
    with contextlib.redirect_stdout(stream), contextlib.redirect_stderr(stream):
        yield
    stream.flush()


def default_log_path() -> Path:
    """Where commands without an output folder (``workflows``, ``bench``) keep ComfyUI's messages."""
    import tempfile

    return Path(tempfile.gettempdir()) / "diffportrait3d-comfyui.log"


def start_comfyui_logged(log_path: Path, **options):
    """``start_comfyui(**options)`` with ComfyUI's messages, from now on, in ``log_path`` (see ``log_to_file``)."""
    from .comfy_session import start_comfyui

    with prints_to(log_to_file(log_path)):
        return start_comfyui(**options)
