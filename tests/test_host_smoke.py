"""The pack loads in a real ComfyUI through ComfyUI's own custom-node loader, as V3 nodes."""

import pytest

pytestmark = pytest.mark.host


def test_pack_loads_through_load_custom_node_with_v3_schema(comfy_host):
    from comfy_api.latest import io

    mappings = comfy_host.nodes.NODE_CLASS_MAPPINGS
    ours = {name: cls for name, cls in mappings.items() if name.startswith("DP3D")}
    assert "DP3DPoseControlNetLoader" in ours
    for node_id, node_cls in ours.items():
        assert issubclass(node_cls, io.ComfyNode), node_id
        schema = node_cls.GET_SCHEMA()
        assert schema.node_id == node_id
        assert schema.category.startswith("DiffPortrait3D")
        info = node_cls.GET_NODE_INFO_V1()
        assert info["name"] == node_id and info["display_name"].startswith("DiffPortrait3D")
        assert node_cls.RELATIVE_PYTHON_MODULE.startswith("custom_nodes.")
    assert "diffportrait3d" in comfy_host.nodes.folder_paths.folder_names_and_paths
