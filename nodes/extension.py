from comfy_api.latest import ComfyExtension, io
from typing_extensions import override

from . import poses


class DiffPortrait3DExtension(ComfyExtension):
    @override
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [*poses.NODES]
