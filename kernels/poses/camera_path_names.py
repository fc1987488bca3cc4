"""Names and defaults of the camera paths, without torch: what a command line or a node menu needs to list them.

The paths themselves are in ``camera_paths.py``.
"""

# EG3D's video script orbit amplitudes (yaw_range, pitch_range), used as the official orbit's defaults.
OFFICIAL_ORBIT_A = 0.35
OFFICIAL_ORBIT_B = 0.25
OFFICIAL_PITCH_OFFSET = -0.05
# DiffPortrait360's inference cameras (``sphere32``, see ``camera_paths.sphere32``): 32 views in a full turn, and
# the one the back-of-head generator runs at (``sphere32_back``).
SPHERE32_VIEWS = 32
SPHERE32_BACK_VIEW = 18
# Presets whose number of views is fixed (their ``views`` input is ignored).
FIXED_VIEWS = {"sphere32": SPHERE32_VIEWS, "sphere32_back": 1}
# New presets go at the end: saved workflows store the option, and the menu keeps old ones valid.
PRESETS = ("official16", "yaw_sweep", "turntable360", "keyframes", "sphere32", "sphere32_back")
INTERPOLATIONS = ("per_view", "linear", "smooth")
