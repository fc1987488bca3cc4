"""DiffPortrait3D for ComfyUI.

ComfyUI imports this folder by path and calls ``comfy_entrypoint`` (V3 registration). Imported as the
plain package ``diffportrait3d`` (CLI, tests) nothing here touches ``comfy``.
"""

__version__ = "0.1.0"


async def comfy_entrypoint():
    from .nodes.extension import DiffPortrait3DExtension

    return DiffPortrait3DExtension()
