"""Names and defaults of the camera paths, without torch: what a command line or a node menu needs to list them.

The paths themselves are in ``camera_paths.py``.
"""

# EG3D's video script orbit amplitudes (yaw_range, pitch_range), used as the official orbit's defaults.
OFFICIAL_ORBIT_A = 0.35
OFFICIAL_ORBIT_B = 0.25
OFFICIAL_PITCH_OFFSET = -0.05
PRESETS = ("official16", "yaw_sweep", "turntable360", "keyframes")
INTERPOLATIONS = ("per_view", "linear", "smooth")
