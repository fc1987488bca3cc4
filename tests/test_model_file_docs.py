"""The sizes the READMEs give for the model files are what the official architecture's shapes make, and the
checkpoint's parameter count is the manifest's."""

import json
import math
import re
from pathlib import Path

import pytest

from diffportrait3d.kernels.checkpoint.components import COMPONENT_FILES, route_key
from diffportrait3d.kernels.checkpoint.convert import load_architecture
from diffportrait3d.kernels.checkpoint.layout import expected_checkpoint_shapes, is_buffer_key

ROOT = Path(__file__).resolve().parents[1]


def tensor_bytes() -> dict[str, dict[str, int]]:
    """{component: {"fp16": bytes, "fp32": bytes}} of the converted files' tensor data (buffers stay float32;
    the empty prompt's conditioning, [1, 77, width] + [1, width], is float32 whatever the dtype)."""
    sizes = {}
    shapes = expected_checkpoint_shapes(load_architecture())
    width = next(shape[0] for key, shape in shapes.items() if key.endswith("text_model.final_layer_norm.weight"))
    sizes["empty_prompt"] = dict.fromkeys(("fp16", "fp32"), (77 + 1) * width * 4)
    for key, shape in shapes.items():
        component = route_key(key).component
        if component is None:
            continue
        count = math.prod(shape)
        entry = sizes.setdefault(component, {"fp16": 0, "fp32": 0})
        entry["fp16"] += count * (4 if is_buffer_key(key) else 2)
        entry["fp32"] += count * 4
    return sizes


def gb(size: int) -> str:
    return f"{size / 1e9:.2f} GB" if size >= 1e7 else f"{size / 1e6:.2f} MB"


@pytest.mark.parametrize("component", sorted(COMPONENT_FILES))
def test_readme_sizes_are_the_official_shapes(component):
    sizes = tensor_bytes()[component]
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    row = re.search(rf"^\| `{re.escape(COMPONENT_FILES[component])}` \|[^|]*\| ([^|]*) \| ([^|]*) \|", readme, re.M)
    assert row, f"no size row for {COMPONENT_FILES[component]} in README.md"
    assert (row.group(1).strip(), row.group(2).strip()) == (gb(sizes["fp16"]), gb(sizes["fp32"]))
    shared = (ROOT / "workflows" / "README.md").read_text(encoding="utf-8")
    row = re.search(rf"^\| `{re.escape(COMPONENT_FILES[component])}` \|[^|]*\| ([^|]*) \|", shared, re.M)
    assert row and row.group(1).strip() == gb(sizes["fp16"])


def test_readme_totals_and_parameter_count():
    sizes = tensor_bytes()
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    total = (gb(sum(s["fp16"] for s in sizes.values())), gb(sum(s["fp32"] for s in sizes.values())))
    assert f"| all seven | | {total[0]} | {total[1]} |" in readme
    totals = json.loads((ROOT / "tests" / "fixtures" / "official_checkpoint_manifest.json").read_text())["totals"]
    assert f"{totals['n_param_elements']:,}" in readme
    float32 = (totals["n_param_elements"] + totals["n_buffer_elements"]) * 4
    assert f"{float32 / 1e9:.1f} GB ({float32 / 2**30:.1f} GiB) of tensor data if it is stored in float32" in readme
