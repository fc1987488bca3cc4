"""Thin ComfyUI V3 nodes: validate inputs, wire ComfyUI objects, call ``kernels``."""
