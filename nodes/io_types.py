"""The pack's own ComfyUI value types (wire colours in the UI)."""

from comfy_api.latest import io

AppearanceNet = io.Custom("DP3D_APPEARANCE_NET")  # ModelPatcher of the appearance reference net
CrossViewModules = io.Custom("DP3D_CROSS_VIEW")  # ModelPatcher of the cross-view module set
