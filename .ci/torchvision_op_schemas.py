"""Lets a torchvision whose C++ extension cannot load (the registry's CUDA-linked wheel beside a CPU-only
torch) still be imported. Installed by ``.ci/setup-comfyui.sh`` only where that import fails, as
``site-packages/dp3d_torchvision_op_schemas.py`` plus a ``.pth`` line that imports it at start-up.

Why: torchvision's ``_meta_registrations`` registers fake kernels for ``torchvision::nms`` and ``qnms``
without checking that its extension defined them, so ``import torchvision`` raises. Declaring the two
schemas first lets it finish; calling those ops still fails, which ComfyUI's start-up and our tests never do.
Nothing is imported until something imports torchvision, so other programs start as fast as before.
"""

import importlib.abc
import sys

_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor qdets, Tensor scores, float iou_threshold) -> Tensor",
)


def declare_missing_schemas() -> None:
    import torch

    missing = []
    for schema in _SCHEMAS:
        name = schema.split("(", 1)[0]
        if not _defined(torch, name):
            missing.append(schema)
    if missing:
        library = torch.library.Library("torchvision", "FRAGMENT")
        for schema in missing:
            library.define(schema)
        sys.modules[__name__].__dict__["_library"] = library  # the schemas live as long as the library object


def _defined(torch, name: str) -> bool:
    try:
        getattr(torch.ops.torchvision, name)
    except (AttributeError, RuntimeError):
        return False
    return True


class _BeforeTorchvision(importlib.abc.MetaPathFinder):
    """Runs :func:`declare_missing_schemas` once, just before the first ``import torchvision``."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname == "torchvision":
            sys.meta_path.remove(self)
            declare_missing_schemas()
        return None  # the usual finders import the real package


if not any(isinstance(finder, _BeforeTorchvision) for finder in sys.meta_path):
    sys.meta_path.insert(0, _BeforeTorchvision())
