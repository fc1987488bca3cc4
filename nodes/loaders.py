"""Loader nodes for the converted DiffPortrait3D files in ``models/diffportrait3d/``.

Every converted file records its component and architecture; the loaders build from that record and
refuse a file of another component with a message naming the file that belongs there.
"""

from __future__ import annotations

import folder_paths
from comfy_api.latest import io

from ..kernels.checkpoint.components import COMPONENT_FILES
from .io_types import AppearanceNet, CrossViewModules
from .model_loading import (
    MODEL_FOLDER,
    load_appearance_net,
    load_cross_view_modules,
    load_dp3d_unet,
    load_dp3d_vae,
    load_empty_prompt,
    load_pose_controlnet,
    model_file_path,
    register_model_folder,
)

register_model_folder()


def converted_file_input(name: str, component: str) -> io.Combo.Input:
    return io.Combo.Input(
        name,
        options=folder_paths.get_filename_list(MODEL_FOLDER),
        tooltip=f"{COMPONENT_FILES[component]} in models/diffportrait3d/ (python -m diffportrait3d convert …)",
    )


def loader_schema(node_id: str, title: str, description: str, name: str, component: str, output) -> io.Schema:
    return io.Schema(
        node_id=node_id,
        display_name=f"DiffPortrait3D {title} Loader",
        category="DiffPortrait3D/loaders",
        description=description,
        inputs=[converted_file_input(name, component)],
        outputs=[output],
    )


class UNetLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return loader_schema(
            "DP3DUNetLoader", "UNet", "The DiffPortrait3D-trained SD1.5 UNet as a MODEL, sized from its recorded "
            "architecture. Any SD1.5 MODEL can be used instead.", "unet", "unet", io.Model.Output(),
        )

    @classmethod
    def execute(cls, unet) -> io.NodeOutput:
        return io.NodeOutput(load_dp3d_unet(model_file_path(unet, "unet", "unet")))


class VAELoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return loader_schema(
            "DP3DVAELoader", "VAE", "The checkpoint's VAE from its recorded architecture. The full-size one is "
            "SD1.5's VAE: the core Load VAE node works as well.", "vae", "vae", io.Vae.Output(),
        )

    @classmethod
    def execute(cls, vae) -> io.NodeOutput:
        return io.NodeOutput(load_dp3d_vae(model_file_path(vae, "vae", "vae")))


class PoseControlNetLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return loader_schema(
            "DP3DPoseControlNetLoader", "Pose ControlNet", "The pose ControlNet as a ComfyUI ControlNet whose hint "
            "is rescaled to [-1, 1] (the core ControlNet loader skips that rescale and guesses SD1.5 sizes).",
            "pose_controlnet", "pose_controlnet", io.ControlNet.Output(),
        )

    @classmethod
    def execute(cls, pose_controlnet) -> io.NodeOutput:
        return io.NodeOutput(load_pose_controlnet(model_file_path(pose_controlnet, "pose_controlnet", "pose_controlnet")))


class AppearanceNetLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return loader_schema(
            "DP3DAppearanceNetLoader", "Appearance Net", "The appearance reference net, for the Appearance "
            "Reference Encoder.", "appearance_net", "appearance", AppearanceNet.Output(display_name="appearance_net"),
        )

    @classmethod
    def execute(cls, appearance_net) -> io.NodeOutput:
        return io.NodeOutput(load_appearance_net(model_file_path(appearance_net, "appearance_net", "appearance")))


class CrossViewLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return loader_schema(
            "DP3DCrossViewLoader", "Cross-View", "The 27 cross-view attention modules, for the Cross-View "
            "Attention node and the Cross-View Sampler.", "cross_view", "cross_view",
            CrossViewModules.Output(display_name="cross_view"),
        )

    @classmethod
    def execute(cls, cross_view) -> io.NodeOutput:
        return io.NodeOutput(load_cross_view_modules(model_file_path(cross_view, "cross_view", "cross_view")))


class EmptyPrompt(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DP3DEmptyPrompt",
            display_name="DiffPortrait3D Empty Prompt",
            category="DiffPortrait3D/loaders",
            description="The official prompt '' as CONDITIONING, stored by convert from the checkpoint's text "
            "encoder: the same tensors CLIPTextEncode('') gives with that encoder, without loading it.",
            inputs=[converted_file_input("empty_prompt", "empty_prompt")],
            outputs=[io.Conditioning.Output()],
        )

    @classmethod
    def execute(cls, empty_prompt) -> io.NodeOutput:
        return io.NodeOutput(load_empty_prompt(model_file_path(empty_prompt, "empty_prompt", "empty_prompt")))


NODES = [UNetLoader, VAELoader, PoseControlNetLoader, AppearanceNetLoader, CrossViewLoader, EmptyPrompt]
