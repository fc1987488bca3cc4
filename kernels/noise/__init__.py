"""The 3D-aware start."""
