"""Rerunnable preview and benchmark of the 3D-aware noise priors (no weights, no ComfyUI).

    python tests/bench_noise_priors.py --sheet docs/noise_priors.png [--size 512 --views 8]

The sheet shows, for a synthetic portrait (the template head in another look, on a gradient backdrop)
and a yaw sweep of -60..60 degrees, one row per source: reference_warped (template head),
reference_warped (depth relief), reference, condition_images (template-head pose renders),
prior_images (the subject rendered directly at each view: a stand-in for 3D GAN renders) and none.
Then it times prior generation at ``--size`` pixels for ``--views`` views (with ``--vae`` also an SD1.5-shaped
VAE encoder) and prints one JSON object.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def _import_this_checkout() -> None:
    """Bind the name ``diffportrait3d`` to this checkout (as tests/conftest.py does)."""
    spec = importlib.util.spec_from_file_location("diffportrait3d", ROOT / "__init__.py", submodule_search_locations=[str(ROOT)])
    sys.modules["diffportrait3d"] = importlib.util.module_from_spec(spec)


_import_this_checkout()

from diffportrait3d.cli.png_writer import write_png  # noqa: E402
from diffportrait3d.kernels.image_grid import image_grid  # noqa: E402
from diffportrait3d.kernels.noise import priors  # noqa: E402
from diffportrait3d.kernels.poses import head_template as head  # noqa: E402
from diffportrait3d.kernels.poses import rasterizer as raster  # noqa: E402
from diffportrait3d.kernels.poses.camera import CameraSet  # noqa: E402

SUBJECT = dict(skin=(0.93, 0.76, 0.66), hair=(0.62, 0.42, 0.20), lips=(0.80, 0.35, 0.38), hair_volume_cm=2.2)


def synthetic_portrait(size: int):
    """(portrait [1, S, S, 3], depth [1, S, S, 3] brighter = nearer) of a frontal subject on a gradient."""
    look = head.HeadLook(**SUBJECT)
    frontal = CameraSet.from_yaw_pitch(0.0, 0.0)
    image, mask = head.render_template_head(frontal, size, size, look=look, background=(0.0, 0.0, 0.0))
    rows = torch.linspace(0, 1, size).view(size, 1, 1)
    backdrop = (1 - rows) * torch.tensor([0.55, 0.70, 0.85]) + rows * torch.tensor([0.25, 0.35, 0.30])
    portrait = torch.where(mask[..., None] > 0, image, backdrop.expand(1, size, size, 3))
    mesh = head.template_head_mesh(look)
    fragments = raster.rasterize(
        raster.project_points(mesh.vertices, frontal.cam2world[0], frontal.intrinsics[0], size, size), mesh.faces, size, size, cull="back"
    )
    depth = fragments.depth
    near, far = depth[fragments.mask].min(), depth[fragments.mask].max()
    relief = torch.where(fragments.mask, 0.2 + 0.8 * (far - depth) / (far - near), torch.zeros_like(depth))
    return portrait, relief[None, ..., None].expand(1, size, size, 3).contiguous(), look


def source_rows(size: int, yaws_deg: list[float]) -> torch.Tensor:
    portrait, depth, look = synthetic_portrait(size)
    cameras = CameraSet.from_yaw_pitch(torch.deg2rad(torch.tensor(yaws_deg)), 0.0)
    views = len(yaws_deg)
    conditions, _ = head.render_template_head(cameras, size, size)
    own, _ = head.render_template_head(cameras, size, size, look=look, background=(0.40, 0.52, 0.58))
    rows = [
        priors.prior_images("reference_warped", views, size, size, reference_image=portrait, cameras=cameras),
        priors.prior_images("reference_warped", views, size, size, reference_image=portrait, cameras=cameras, depth=depth),
        priors.prior_images("reference", views, size, size, reference_image=portrait),
        priors.prior_images("condition_images", views, size, size, condition_images=conditions),
        priors.prior_images("prior_images", views, size, size, own_priors=own),
        torch.full((views, size, size, 3), 0.5),  # none: no prior
    ]
    return torch.cat(rows)


def timings(size: int, views: int, repeats: int = 3) -> dict:
    portrait, depth, _ = synthetic_portrait(size)
    cameras = CameraSet.from_yaw_pitch(torch.linspace(-0.8, 0.8, views), 0.0)
    result = {"size": size, "views": views, "threads": torch.get_num_threads()}
    for name, extra in (("reference_warped_template_s", {}), ("reference_warped_depth_s", {"depth": depth})):
        priors.prior_images("reference_warped", views, size, size, reference_image=portrait, cameras=cameras, **extra)
        runs = []
        for _ in range(repeats):
            start = time.perf_counter()
            priors.prior_images("reference_warped", views, size, size, reference_image=portrait, cameras=cameras, **extra)
            runs.append(time.perf_counter() - start)
        result[name] = round(sorted(runs)[len(runs) // 2], 3)
    return result


def vae_encode_seconds(size: int, views: int) -> float:
    """Encoder time of an SD1.5-shaped VAE (diffusers AutoencoderKL, random weights: the cost does not depend on
    them) for ``views`` images of ``size`` pixels, float32 on the CPU."""
    from diffusers import AutoencoderKL

    vae = AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
    ).eval()
    pixels = torch.rand(views, 3, size, size) * 2 - 1
    with torch.no_grad():
        start = time.perf_counter()
        for view in range(views):  # one at a time, as ComfyUI does on a small-memory CPU
            vae.encode(pixels[view : view + 1])
        return round(time.perf_counter() - start, 3)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sheet", help="write the preview sheet (PNG) here")
    parser.add_argument("--tile", type=int, default=128, help="sheet tile size in pixels")
    parser.add_argument("--size", type=int, default=512, help="benchmark image size")
    parser.add_argument("--views", type=int, default=8, help="benchmark views")
    parser.add_argument("--vae", action="store_true", help="also time an SD1.5-shaped VAE encoder (needs diffusers)")
    options = parser.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    if options.sheet:
        yaws = [-60.0, -40.0, -20.0, 0.0, 20.0, 40.0, 60.0]
        sheet = image_grid(source_rows(options.tile, yaws), columns=len(yaws), gap=3)[0]
        write_png(options.sheet, sheet)
    result = timings(options.size, options.views)
    if options.vae:
        result["sd15_vae_encode_s"] = vae_encode_seconds(options.size, options.views)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
