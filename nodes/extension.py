"""The pack's V3 extension: collects the node lists of every theme module."""

from comfy_api.latest import ComfyExtension, io
from typing_extensions import override

from . import appearance_reference, cross_view, loaders, noise_init, poses, sampler


class DiffPortrait3DExtension(ComfyExtension):
    @override
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [
            *loaders.NODES,
            *appearance_reference.NODES,
            *cross_view.NODES,
            *sampler.NODES,
            *poses.NODES,
            *noise_init.NODES,
        ]
