"""Test-only ComfyUI node pack: the text conditioning of the tiny reference model.

The tiny model's cross-attention context is 32-dimensional and it has no CLIP, so CLIPTextEncode cannot
feed it. Tests swap the shipped workflows' text encoder and CLIPTextEncode nodes for this node, which
returns the context the official code used for the golden runs (``c_crossattn_0``), and keep every other
node. It is loaded only by tests (in-process, or in a test server's custom_nodes folder).
"""

from pathlib import Path

from safetensors.torch import load_file

GOLDEN = Path(__file__).resolve().parents[2] / "fixtures" / "golden_apply_v8.safetensors"


class TinyTextConditioning:
    CATEGORY = "DiffPortrait3D/testing"
    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "encode"
    DESCRIPTION = "Tests only: the tiny reference model's text context (no CLIP)."

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    def encode(self):
        return ([[load_file(GOLDEN)["c_crossattn_0"][:1], {}]],)


NODE_CLASS_MAPPINGS = {"DP3DTestTinyText": TinyTextConditioning}
NODE_DISPLAY_NAME_MAPPINGS = {"DP3DTestTinyText": "DiffPortrait3D tiny text (tests)"}
