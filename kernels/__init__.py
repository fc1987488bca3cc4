"""Pure torch/numpy maths and formats for DiffPortrait3D. Never imports ``comfy``."""
