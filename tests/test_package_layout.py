"""Structural rules of the pack that hold without a host."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_package_registers_through_comfy_entrypoint_only():
    tree = ast.parse((ROOT / "__init__.py").read_text())
    names = {target.id for node in ast.walk(tree) if isinstance(node, ast.Assign) for target in node.targets
             if isinstance(target, ast.Name)}
    functions = {node.name for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}
    assert "comfy_entrypoint" in functions
    assert "NODE_CLASS_MAPPINGS" not in names


def test_kernels_never_import_comfy():
    paths = sorted((ROOT / "kernels").rglob("*.py"))
    assert len(paths) > 30
    for path in paths:
        tree = ast.parse(path.read_text())
        imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        offenders = {name for name in imported if name.split(".")[0] in {"comfy", "comfy_api", "folder_paths", "nodes"}}
        assert not offenders, f"{path.name} imports {offenders}"
