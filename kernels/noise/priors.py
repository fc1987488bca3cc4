"""Prior images for the 3D-aware start, one per view, from the five sources the noise node offers.

Every source returns [V, H, W, 3] float32 in [0, 1] at the views' pixel size (or None for ``none``).
Input errors raise ValueError naming the node input (the names of the noise node's inputs).
"""

from __future__ import annotations

import torch

from ..model.reference_image import fit_to_size, to_rgb
from ..poses.camera import CameraSet, frontal_camera_like
from ..poses.depth_mesh import depth_relief_mesh
from ..poses.head_template import template_head_mesh
from .reference_warp import warp_reference

SOURCES = ("reference_warped", "reference", "condition_images", "prior_images", "none")


def check_batch(images: torch.Tensor, views: int, input_name: str) -> torch.Tensor:
    """``images`` [B, H, W, 3] with B = 1 (repeated) or ``views`` -> [views, H, W, 3]."""
    if images.shape[0] not in (1, views):
        raise ValueError(
            f"{input_name}: {images.shape[0]} images for {views} views (the latent batch); give 1 image or one per view"
        )
    return images.expand(views, -1, -1, -1) if images.shape[0] == 1 else images


def check_image_size(images: torch.Tensor, height: int, width: int, input_name: str) -> torch.Tensor:
    if tuple(images.shape[1:3]) != (height, width):
        raise ValueError(
            f"{input_name}: images are {images.shape[2]}x{images.shape[1]} (WxH) but the views are {width}x{height} "
            "pixels (latent size x 8); resize them (e.g. Upscale Image) or use a latent of their size"
        )
    return images


def depth_from_image(depth: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """An IMAGE depth map [1, h, w, C] (brighter = nearer) -> [height, width] in [0, 1], fitted like the reference."""
    if depth.ndim != 4 or depth.shape[0] != 1:
        raise ValueError(f"depth: give one depth IMAGE [1, H, W, C] of the reference, got shape {tuple(depth.shape)}")
    return fit_to_size(depth[..., :3].mean(-1, keepdim=True).float(), height, width)[0, ..., 0].clamp(0, 1)


def prior_images(
    source: str,
    views: int,
    height: int,
    width: int,
    reference_image: torch.Tensor | None = None,
    cameras: CameraSet | None = None,
    depth: torch.Tensor | None = None,
    condition_images: torch.Tensor | None = None,
    own_priors: torch.Tensor | None = None,
) -> torch.Tensor | None:
    """The priors of ``source`` for ``views`` views of ``height`` x ``width`` pixels.

    ``reference_warped``: ``reference_image`` re-rendered at each of ``cameras`` through the template head
    (or a relief of ``depth``); ``reference``: the reference for every view; ``condition_images``: the pose
    condition images; ``prior_images``: ``own_priors`` as given; ``none``: None.
    """
    if source not in SOURCES:
        raise ValueError(f"source: '{source}' is not one of {', '.join(SOURCES)}")
    if source == "none":
        return None
    if source in ("reference_warped", "reference"):
        if reference_image is None:
            raise ValueError(f"reference_image: source '{source}' needs the reference portrait; connect it")
        reference = check_batch(to_rgb(reference_image, "reference_image").float(), views, "reference_image")
        reference = fit_to_size(reference, height, width)
        if source == "reference":
            return reference.contiguous()
        if cameras is None:
            raise ValueError("cameras: source 'reference_warped' needs the target cameras (DiffPortrait3D Camera Path)")
        if len(cameras) != views:
            raise ValueError(
                f"cameras: {len(cameras)} cameras for {views} views (the latent batch); make the latent batch "
                "size equal to the number of cameras"
            )
        frontal = frontal_camera_like(cameras)
        if depth is None:
            mesh = template_head_mesh()
            vertices, faces = mesh.vertices, mesh.faces
        else:
            vertices, faces, _ = depth_relief_mesh(depth_from_image(depth, height, width), frontal)
            if faces.shape[0] == 0:
                raise ValueError("depth: the depth map has no foreground (all values near 0); brighter must be nearer")
        first = reference[:1] if bool((reference == reference[:1]).all()) else reference
        return warp_reference(first, vertices, faces, cameras, frontal).images
    name = "condition_images" if source == "condition_images" else "prior_images"
    images = condition_images if source == "condition_images" else own_priors
    if images is None:
        raise ValueError(f"{name}: source '{source}' needs an IMAGE batch; connect it")
    images = check_batch(to_rgb(images, name).float(), views, name)
    return check_image_size(images, height, width, name).contiguous()
