"""Every option of every subcommand explains itself in --help."""

import argparse

from diffportrait3d.cli.main import build_parser


def _subparsers(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            yield from action.choices.items()


def test_every_option_has_help():
    missing = []
    for name, sub in _subparsers(build_parser()):
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            if not (action.help or "").strip():
                missing.append(f"{name} {'/'.join(action.option_strings) or action.dest}")
    assert not missing, f"options without help text: {missing}"


HEAVY = ("torch", "numpy", "safetensors", "comfy", "PIL")


def _imported_modules(args: list[str], tmp_path) -> tuple[set[str], str]:
    """Top-level module names a fresh ``python -X importtime -m diffportrait3d ARGS`` imports, and its stdout."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    link_root = tmp_path / "pkg"
    if not link_root.exists():
        link_root.mkdir()
        (link_root / "diffportrait3d").symlink_to(Path(__file__).resolve().parents[1], target_is_directory=True)
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "diffportrait3d", *args],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(link_root)}, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    names = {
        line.split("|")[-1].strip().split(".")[0]
        for line in done.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    return names, done.stdout


def test_help_imports_nothing_heavy(tmp_path):
    """--help of the program and of every command parses without torch, numpy, safetensors or ComfyUI."""
    commands = [name for name, _ in _subparsers(build_parser())]
    assert {"convert", "poses", "run", "workflows", "bench"} <= set(commands)
    for args in [["--help"]] + [[name, "--help"] for name in commands]:
        names, stdout = _imported_modules(args, tmp_path)
        assert "usage:" in stdout
        heavy = sorted(set(HEAVY) & names)
        assert not heavy, f"`{' '.join(args)}` imported {heavy} before parsing"
