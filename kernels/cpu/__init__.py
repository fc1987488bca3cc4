"""The CPU speed wing: oneDNN matrix products, one reused cast buffer, token slices, broadcast rows and the
CPU variants of the cross-view modules' parts. Pure torch; installed by ``nodes/cpu`` when a network is built
for a CPU, never named by ``kernels/model``."""
