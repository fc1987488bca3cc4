"""3D-aware noise kernels: the official start against the golden x_T, view noise statistics, low-pass,
hole filling, the reference warp (yaw 0 and direction of motion) and the prior sources' input errors."""

import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from diffportrait3d.kernels.noise.gaussian_blur import gaussian_blur
from diffportrait3d.kernels.noise.hole_fill import fill_holes
from diffportrait3d.kernels.noise.priors import prior_images
from diffportrait3d.kernels.noise.reference_warp import warp_reference
from diffportrait3d.kernels.noise.start_latent import (
    noise_for_state,
    noise_scale,
    official_start_state,
    q_sample,
)
from diffportrait3d.kernels.noise.view_noise import shared_noise_correlation, view_noise
from diffportrait3d.kernels.poses.camera import CameraSet, frontal_camera_like
from diffportrait3d.kernels.poses.head_template import render_template_head, template_head_mesh
from diffportrait3d.kernels.poses.mesh_render import render_mesh_views

FIXTURES = Path(__file__).parent / "fixtures"


def sd15_alphas_cumprod() -> torch.Tensor:
    """SD1.5's training schedule ('scaled linear' betas 0.00085..0.012 over 1000 steps), float64."""
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, 0)


def sigma_of(timestep: int) -> float:
    a = sd15_alphas_cumprod()[timestep]
    return math.sqrt((1 - a) / a)


@pytest.fixture(scope="module")
def golden():
    return load_file(FIXTURES / "golden_ddim_v8.safetensors")


# ------------------------------------------------------------------------------------- start maths


def test_schedule_matches_the_golden_ddim_alphas(golden):
    alphas = sd15_alphas_cumprod()
    torch.testing.assert_close(alphas[golden["ddim_timesteps"]].float(), golden["ddim_alphas"], rtol=0, atol=1e-6)
    assert math.sqrt(alphas[999]) == pytest.approx(0.068265, abs=1e-6)


def test_q_sample_reproduces_the_golden_x_T(golden):
    assert int(golden["q_sample_t"]) == 999
    x_T = q_sample(golden["feature_control"], golden["q_sample_noise"], sigma_of(999))
    error = (x_T - golden["x_T"]).abs().max().item()
    assert error <= 1e-5, error
    assert torch.equal(golden["x_T"], golden["step_x"][0])


def test_start_state_gives_the_official_first_model_input(golden):
    sigma_first = sigma_of(int(golden["step_t"][0, 0]))  # 801 for 5 steps
    state = official_start_state(golden["feature_control"], golden["q_sample_noise"], sigma_of(999), sigma_first)
    model_input = state / math.sqrt(1 + sigma_first**2)  # what ComfyUI's eps model sees
    assert (model_input - golden["step_x"][0]).abs().max().item() <= 1e-5


def test_start_state_without_offset_is_comfy_img2img_start():
    z, eps = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    sigma = sigma_of(981)
    torch.testing.assert_close(official_start_state(z, eps, sigma, sigma), z + sigma * eps)


@pytest.mark.parametrize("first_timestep", [801, 981, 999])
def test_noise_and_latent_rebuild_the_state_as_comfy_adds_them(first_timestep):
    sigma_first, sigma_max = sigma_of(first_timestep), sigma_of(999)
    state, latent = torch.randn(3, 4, 8, 8), torch.randn(3, 4, 8, 8)
    scale = math.sqrt(1 + sigma_first**2) if first_timestep == 999 else sigma_first  # ComfyUI's noise_scaling
    assert noise_scale(sigma_first, sigma_max) == pytest.approx(scale)
    torch.testing.assert_close(scale * noise_for_state(state, None, sigma_first, sigma_max), state)
    torch.testing.assert_close(scale * noise_for_state(state, latent, sigma_first, sigma_max) + latent, state)


# ------------------------------------------------------------------------------------- view noise


def correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.flatten() - a.mean(), b.flatten() - b.mean()
    return float((a * b).sum() / (a.norm() * b.norm()))


def mean_cross_view_correlation(noise: torch.Tensor) -> float:
    views = noise.shape[0]
    pairs = [correlation(noise[i], noise[j]) for i in range(views) for j in range(i + 1, views)]
    return sum(pairs) / len(pairs)


def test_independent_noise_has_unit_std_and_no_cross_view_correlation():
    noise = view_noise((8, 4, 64, 64), seed=3)
    assert noise.std(dim=(1, 2, 3)).sub(1).abs().max() < 0.03
    assert abs(mean_cross_view_correlation(noise)) < 0.01  # sampling std ~ 1/sqrt(16384) / sqrt(28 pairs)


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0])
def test_shared_noise_has_unit_std_and_the_predicted_correlation(alpha):
    noise = view_noise((8, 4, 64, 64), seed=11, shared_weight=alpha)
    assert noise.std(dim=(1, 2, 3)).sub(1).abs().max() < 0.03
    # The shared draw is one sample, so the measured correlation scatters by ~ alpha^2/(1+alpha^2) / sqrt(N).
    assert mean_cross_view_correlation(noise) == pytest.approx(shared_noise_correlation(alpha), abs=0.03)


def test_seeds_reproduce_and_independent_noise_is_comfys_default_draw():
    assert torch.equal(view_noise((2, 4, 8, 8), 5, 1.0), view_noise((2, 4, 8, 8), 5, 1.0))
    assert not torch.equal(view_noise((2, 4, 8, 8), 5), view_noise((2, 4, 8, 8), 6))
    torch.manual_seed(5)
    assert torch.equal(view_noise((2, 4, 8, 8), 5), torch.randn(2, 4, 8, 8))
    with pytest.raises(ValueError, match="shared_weight"):
        view_noise((2, 4, 8, 8), 5, -1.0)


# ------------------------------------------------------------------------------------- low-pass, fill


def test_gaussian_blur_keeps_the_mean_and_removes_high_frequencies():
    constant = torch.full((1, 4, 16, 16), 0.7)
    torch.testing.assert_close(gaussian_blur(constant, 2.0), constant)
    checker = (torch.arange(16)[:, None] + torch.arange(16)[None]).remainder(2).float().expand(1, 4, 16, 16)
    assert gaussian_blur(checker, 1.5)[..., 5:-5, 5:-5].std() < 0.01 * checker.std()
    assert torch.equal(gaussian_blur(checker, 0.0), checker)


def test_fill_holes_keeps_known_pixels_and_fills_from_the_surroundings():
    image = torch.rand(3, 40, 50)
    known = torch.ones(40, 50, dtype=torch.bool)
    known[10:30, 15:35] = False
    image[:, known] = 0.25
    filled = fill_holes(image, known)
    assert torch.equal(filled[:, known], image[:, known])
    torch.testing.assert_close(filled[:, ~known], torch.full_like(filled[:, ~known], 0.25))
    left_right = torch.zeros(1, 8, 40)
    left_right[..., 20:] = 1.0
    middle = torch.ones(8, 40, dtype=torch.bool)
    middle[:, 10:30] = False
    ramp = fill_holes(left_right, middle)[0, 4, 10:30]
    assert ramp.diff().min() >= -1e-6 and ramp[0] < 0.5 < ramp[-1]  # a smooth transition, not a jump


# ------------------------------------------------------------------------------------- reference warp

SIZE = 96
BACKGROUND = (0.3, 0.5, 0.7)


@pytest.fixture(scope="module")
def portrait():
    """A synthetic frontal portrait: the template head rendered on a coloured background."""
    images, masks = render_template_head(CameraSet.from_yaw_pitch(0.0, 0.0), SIZE, SIZE, background=BACKGROUND)
    return images, masks


def test_warp_at_yaw_zero_reproduces_the_portrait(portrait):
    images, masks = portrait
    cameras = CameraSet.from_yaw_pitch(torch.tensor([0.0]), 0.0)
    mesh = template_head_mesh()
    warped = warp_reference(images, mesh.vertices, mesh.faces, cameras, frontal_camera_like(cameras))
    assert warped.images.shape == (1, SIZE, SIZE, 3)
    assert (warped.images - images).abs().max() < 1e-3
    assert warped.seen[0].sum() > 0.95 * warped.head[0].sum()
    assert torch.equal(warped.head[0], masks[0] > 0)


def two_colour_head(cameras, size):
    """The template head painted red on the subject's right half (-x) and blue on the left half (+x)."""
    mesh = template_head_mesh()
    red, blue = torch.tensor([0.9, 0.1, 0.1]), torch.tensor([0.1, 0.1, 0.9])
    colour = lambda values: torch.where(values[:, :1] > 0, blue, red)  # noqa: E731 (canonical x > 0 = subject's left)
    return render_mesh_views(mesh.vertices, mesh.faces, cameras, size, size, mesh.attributes, colour, background=(1.0, 1.0, 1.0))


def midline_columns(image: torch.Tensor) -> torch.Tensor:
    """Per row: column of the first blue pixel right of a red one (NaN where the row has no such pair)."""
    red = image[..., 0] > image[..., 2] + 0.1
    blue = image[..., 2] > image[..., 0] + 0.1
    boundary = red[:, :-1] & blue[:, 1:]
    columns = torch.full((image.shape[0],), float("nan"))
    for row in range(image.shape[0]):
        hits = boundary[row].nonzero()
        if len(hits):
            columns[row] = hits.float().mean()
    return columns


@pytest.mark.parametrize("yaw", [0.4, -0.4])
def test_warp_moves_the_face_the_right_way(yaw):
    """yaw > 0 turns the face toward image left: the midline moves left and the subject's left (blue) grows;
    the warped midline lies where a direct render at that yaw puts it."""
    frontal = CameraSet.from_yaw_pitch(0.0, 0.0)
    reference, _ = two_colour_head(frontal, SIZE)
    cameras = CameraSet.from_yaw_pitch(torch.tensor([yaw]), 0.0)
    mesh = template_head_mesh()
    warped = warp_reference(reference, mesh.vertices, mesh.faces, cameras, frontal_camera_like(cameras)).images[0]
    direct, _ = two_colour_head(cameras, SIZE)
    rows = slice(int(0.25 * SIZE), int(0.6 * SIZE))  # the face, where the midline is seen in both views
    warped_midline, direct_midline, frontal_midline = (
        midline_columns(image)[rows] for image in (warped, direct[0], reference[0])
    )
    moved = (warped_midline - frontal_midline).nanmean().item()
    assert moved < -3 if yaw > 0 else moved > 3
    assert (warped_midline - direct_midline).abs().nanmean().item() < 1.5
    blue_share = lambda image: (image[..., 2] > image[..., 0] + 0.1).float().sum() / (image.sum(-1) < 2.9).float().sum()  # noqa: E731
    assert (blue_share(warped) > blue_share(reference[0])) == (yaw > 0)


def test_warp_fills_unseen_head_and_keeps_the_background(portrait):
    images, masks = portrait
    cameras = CameraSet.from_yaw_pitch(torch.tensor([1.2, math.pi]), 0.0)
    mesh = template_head_mesh()
    warped = warp_reference(images, mesh.vertices, mesh.faces, cameras, frontal_camera_like(cameras))
    assert torch.isfinite(warped.images).all()
    assert (warped.head & ~warped.seen).any() and warped.seen[0].any()
    assert warped.seen[1].sum() < 0.01 * warped.head[1].sum()  # from behind only the ear rims were in the reference
    head_colours = images[0][masks[0] > 0]
    back = warped.images[1][warped.head[1]]
    assert (back >= head_colours.amin(0) - 1e-4).all() and (back <= head_colours.amax(0) + 1e-4).all()
    corner = warped.images[:, :4, :4]  # far from the head: the reference's background
    torch.testing.assert_close(corner, torch.tensor(BACKGROUND).expand_as(corner))


def test_warp_through_a_depth_relief_reproduces_yaw_zero(portrait):
    images, _ = portrait
    depth = torch.zeros(1, SIZE, SIZE, 3)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, SIZE), torch.linspace(-1, 1, SIZE), indexing="ij")
    depth[..., :] = (1 - (xx**2 + yy**2)).clamp_min(0.0)[None, ..., None]
    cameras = CameraSet.from_yaw_pitch(torch.tensor([0.0, 0.5]), 0.0)
    priors = prior_images("reference_warped", 2, SIZE, SIZE, reference_image=images, cameras=cameras, depth=depth)
    head = depth[0, ..., 0] > 0.2
    assert (priors[0][head] - images[0][head]).abs().max() < 0.02
    assert (priors[1] - images[0]).abs().mean() > 0.01  # it does move at another yaw


# ------------------------------------------------------------------------------------- sources and errors


def test_sources_give_one_prior_per_view(portrait):
    images, _ = portrait
    cameras = CameraSet.from_yaw_pitch(torch.tensor([-0.3, 0.0, 0.3]), 0.0)
    warped = prior_images("reference_warped", 3, SIZE, SIZE, reference_image=images, cameras=cameras)
    assert warped.shape == (3, SIZE, SIZE, 3) and (warped[1] - images[0]).abs().max() < 1e-3
    as_is = prior_images("reference", 3, SIZE, SIZE, reference_image=images[..., :1].expand(1, SIZE, SIZE, 1))
    assert as_is.shape == (3, SIZE, SIZE, 3) and torch.equal(as_is[2, ..., 0], images[0, ..., 0])
    conditions = torch.rand(3, SIZE, SIZE, 3)
    assert torch.equal(prior_images("condition_images", 3, SIZE, SIZE, condition_images=conditions), conditions)
    assert torch.equal(prior_images("prior_images", 3, SIZE, SIZE, own_priors=conditions[:1])[2], conditions[0])
    assert prior_images("none", 3, SIZE, SIZE) is None


@pytest.mark.parametrize(
    "source, inputs, message",
    [
        ("prior_images", {"own_priors": torch.rand(2, SIZE, SIZE, 3)}, "prior_images: 2 images for 3 views"),
        ("prior_images", {"own_priors": torch.rand(3, SIZE, SIZE + 8, 3)}, "prior_images: images are 104x96"),
        ("condition_images", {"condition_images": torch.rand(1, 64, 64, 3)}, "condition_images: images are 64x64"),
        ("condition_images", {}, "condition_images: source 'condition_images' needs"),
        ("reference", {"reference_image": torch.rand(2, SIZE, SIZE, 3)}, "reference_image: 2 images for 3 views"),
        ("reference_warped", {}, "reference_image: source 'reference_warped' needs"),
        ("reference_warped", {"reference_image": torch.rand(1, SIZE, SIZE, 3)}, "cameras: source 'reference_warped'"),
        (
            "reference_warped",
            {"reference_image": torch.rand(1, SIZE, SIZE, 3), "cameras": CameraSet.from_yaw_pitch(torch.zeros(2), 0.0)},
            "cameras: 2 cameras for 3 views",
        ),
        ("3d_gan", {}, "source: '3d_gan' is not one of"),
    ],
)
def test_bad_prior_inputs_raise_clear_errors(source, inputs, message):
    with pytest.raises(ValueError, match=message):
        prior_images(source, 3, SIZE, SIZE, **inputs)
