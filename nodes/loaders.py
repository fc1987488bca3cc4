"""Loader nodes for the converted DiffPortrait3D files in ``models/diffportrait3d/``."""

from __future__ import annotations

import folder_paths
from comfy_api.latest import io

from .model_loading import (
    MODEL_FOLDER,
    load_dp3d_unet,
    load_dp3d_vae,
    load_pose_controlnet,
    model_file_path,
    register_model_folder,
)

register_model_folder()


class PoseControlNetLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DP3DPoseControlNetLoader",
            display_name="DiffPortrait3D Pose ControlNet Loader",
            category="DiffPortrait3D/loaders",
            description="Loads diffportrait3d_pose_controlnet.safetensors as a ComfyUI ControlNet whose hint is "
            "rescaled to [-1, 1] (the core ControlNet loader skips that rescale and guesses SD1.5 sizes).",
            inputs=[
                io.Combo.Input(
                    "pose_controlnet",
                    options=folder_paths.get_filename_list(MODEL_FOLDER),
                    tooltip="diffportrait3d_pose_controlnet.safetensors in models/diffportrait3d/",
                ),
            ],
            outputs=[io.ControlNet.Output()],
        )

    @classmethod
    def execute(cls, pose_controlnet) -> io.NodeOutput:
        path = model_file_path(pose_controlnet, "pose_controlnet", "pose_controlnet")
        return io.NodeOutput(load_pose_controlnet(path))


class UNetLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DP3DUNetLoader",
            display_name="DiffPortrait3D UNet Loader",
            category="DiffPortrait3D/loaders",
            description="Loads diffportrait3d_unet.safetensors, the DiffPortrait3D-trained SD1.5 UNet, as a MODEL "
            "sized from its recorded architecture. Any SD1.5 MODEL can be used instead.",
            inputs=[io.Combo.Input("unet", options=folder_paths.get_filename_list(MODEL_FOLDER))],
            outputs=[io.Model.Output()],
        )

    @classmethod
    def execute(cls, unet) -> io.NodeOutput:
        return io.NodeOutput(load_dp3d_unet(model_file_path(unet, "unet", "unet")))


class VAELoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DP3DVAELoader",
            display_name="DiffPortrait3D VAE Loader",
            category="DiffPortrait3D/loaders",
            description="Loads diffportrait3d_vae.safetensors (the checkpoint's VAE) from its recorded architecture. "
            "The full-size one is SD1.5's VAE: the core Load VAE node works as well.",
            inputs=[io.Combo.Input("vae", options=folder_paths.get_filename_list(MODEL_FOLDER))],
            outputs=[io.Vae.Output()],
        )

    @classmethod
    def execute(cls, vae) -> io.NodeOutput:
        return io.NodeOutput(load_dp3d_vae(model_file_path(vae, "vae", "vae")))


NODES = [UNetLoader, VAELoader, PoseControlNetLoader]
