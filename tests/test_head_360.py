"""The template head seen from every yaw of a full turn: hair over the back down to the nape, ears, a neck, no holes.

Parts are read per pixel from the rasterised mesh (canonical direction, head/neck flag, albedo), not from
shaded colours, so the checks do not depend on the light.
"""

import math

import pytest
import torch

from diffportrait3d.kernels.poses.camera import CameraSet
from diffportrait3d.kernels.poses.camera_paths import camera_path
from diffportrait3d.kernels.poses.head_template import (
    EAR_LAT,
    EAR_LON,
    HeadLook,
    head_albedo,
    render_template_head,
    template_head_mesh,
)
from diffportrait3d.kernels.poses.rasterizer import interpolate, project_points, rasterize

SIZE = 96
TURN = [2 * math.pi * k / 16 for k in range(16)]
# Hair blue and skin red: a pixel is hair where its albedo is bluer than red (features are neither).
MARKED = HeadLook(hair=(0.0, 0.0, 1.0), skin=(1.0, 0.0, 0.0))


def parts(yaw: float, pitch: float = 0.0, size: int = SIZE) -> dict:
    """Per pixel of the view: ``mask``, ``head`` (head flag), ``neck``, ``hair`` (marked albedo), ``direction``."""
    mesh = template_head_mesh(MARKED)
    cameras = CameraSet.from_yaw_pitch(yaw, pitch)
    screen = project_points(mesh.vertices, cameras.cam2world[0], cameras.intrinsics[0], size, size)
    fragments = rasterize(screen, mesh.faces, size, size, cull="back")
    values = interpolate(fragments, mesh.attributes)
    albedo = head_albedo(values.reshape(-1, 4), MARKED).reshape(size, size, 3)
    mask = fragments.mask
    return {
        "mask": mask,
        "head": mask & (values[..., 3] > 0.5),
        "neck": mask & (values[..., 3] <= 0.5),
        "hair": mask & (albedo[..., 2] > albedo[..., 0]),
        "direction": torch.nn.functional.normalize(values[..., :3], dim=-1),
    }


def near(direction: torch.Tensor, lon: float, lat: float, radians: float) -> torch.Tensor:
    """[H, W] pixels whose canonical direction lies within ``radians`` of (lon, lat)."""
    centre = torch.tensor([math.cos(lat) * math.sin(lon), math.sin(lat), math.cos(lat) * math.cos(lon)])
    return (direction @ centre) > math.cos(radians)


def components(mask: torch.Tensor) -> int:
    """Number of 4-connected components of a [H, W] bool mask (labels spread by max-pooling until stable)."""
    labels = torch.where(mask, torch.arange(1, mask.numel() + 1, dtype=torch.float32).reshape(mask.shape), torch.zeros(mask.shape))
    cross = torch.tensor([[0.0, 1, 0], [1, 1, 1], [0, 1, 0]])
    while True:
        padded = torch.nn.functional.pad(labels, (1, 1, 1, 1))
        windows = padded.unfold(0, 3, 1).unfold(1, 3, 1) * cross
        spread = torch.where(mask, windows.amax((-1, -2)), labels)
        if torch.equal(spread, labels):
            return len(labels[mask].unique())
        labels = spread


@pytest.mark.parametrize("yaw", [math.pi, math.radians(157.5), math.radians(-157.5), "sphere32_back"])
def test_from_behind_hair_covers_the_head_down_to_the_nape(yaw):
    if yaw == "sphere32_back":  # where DiffPortrait360's back-of-head generator runs
        yaw, pitch, _ = camera_path("sphere32_back").yaw_pitch_roll()[0].tolist()
        view = parts(yaw, pitch)
    else:
        view = parts(yaw)
    assert view["hair"][view["head"]].float().mean() > 0.9
    # The hairline is on the neck, below the skull: where a column's lowest head pixel is hair, the neck pixel
    # under it is hair too (no band of bare skull between the hair and the neck).
    rows = torch.arange(SIZE).unsqueeze(1).expand(SIZE, SIZE)
    lowest = torch.where(view["head"], rows, -1).amax(0)
    columns = [c for c in range(SIZE) if 0 <= lowest[c] < SIZE - 1 and view["hair"][lowest[c], c] and view["neck"][lowest[c] + 1, c]]
    assert len(columns) >= 10
    assert sum(bool(view["hair"][lowest[c] + 1, c]) for c in columns) >= 0.9 * len(columns)


@pytest.mark.parametrize("side", [1, -1])
def test_behind_the_ear_the_hairline_runs_down_to_the_nape(side):
    view = parts(side * math.radians(135))
    behind_ear = near(view["direction"], side * (EAR_LON + 0.45), EAR_LAT - 0.25, 0.12) & view["head"]
    assert behind_ear.sum() > 20
    assert view["hair"][behind_ear].float().mean() > 0.9


@pytest.mark.parametrize("side", [1, -1])
def test_ears_are_seen_from_the_side_and_from_behind(side):
    """At yaw +90 the camera is on +x and sees the subject's left ear (canonical lon +EAR_LON): skin, not hair,
    with its darker hollow; from behind both ear rims stand out of the silhouette beside the hair."""
    look = HeadLook()
    view = parts(side * math.pi / 2)
    ear = near(view["direction"], side * EAR_LON, EAR_LAT, 0.15) & view["mask"]
    assert ear.sum() > 40 and not view["hair"][ear].any()
    hollow = near(view["direction"], side * EAR_LON, EAR_LAT, 0.04) & view["mask"]
    rim = ear & ~near(view["direction"], side * EAR_LON, EAR_LAT, 0.10)
    assert hollow.any() and rim.any()
    brightness = [head_albedo(torch.cat([view["direction"][part], torch.ones(int(part.sum()), 1)], -1), look).sum(-1).mean()
                  for part in (hollow, rim)]
    assert brightness[0] < brightness[1] - 0.1

    back = parts(math.pi)
    rim_from_behind = near(back["direction"], side * (EAR_LON + 0.1), EAR_LAT, 0.12) & back["mask"] & ~back["hair"]
    assert rim_from_behind.sum() > 5
    columns = rim_from_behind.nonzero()[:, 1].float()
    hair_columns = back["hair"].nonzero()[:, 1].float()
    assert (columns.mean() > hair_columns.mean()) == (side < 0)  # seen from behind, the subject's left is image left


@pytest.mark.parametrize("yaw", TURN)
def test_a_neck_below_the_head_at_every_yaw(yaw):
    view = parts(yaw)
    assert view["head"].any() and view["neck"].any()
    head_rows = view["head"].nonzero()[:, 0].float()
    neck_rows = view["neck"].nonzero()[:, 0].float()
    assert neck_rows.mean() > head_rows.mean() + 0.15 * SIZE
    assert view["neck"][-1].any() and not view["head"][-int(0.1 * SIZE) :].any()  # the neck alone reaches the bottom edge


@pytest.mark.parametrize("pitch", [0.0, -0.35, 0.3])
def test_silhouettes_have_no_holes_at_any_yaw(pitch):
    _, masks = render_template_head(CameraSet.from_yaw_pitch(torch.tensor(TURN, dtype=torch.float64), pitch), SIZE, SIZE)
    for yaw, mask in zip(TURN, masks.bool(), strict=True):
        assert components(mask) == 1, f"yaw {math.degrees(yaw):.1f}: the head and neck are not one piece"
        assert components(~mask) == 1, f"yaw {math.degrees(yaw):.1f}: the silhouette has a hole"


@pytest.mark.parametrize("offset", [0.0, 0.5])
def test_views_mirrored_about_the_back_are_mirror_images(offset):
    """A symmetric head: the view at pi + d is the mirror image of the view at pi - d (d = 0: the back view
    itself is left-right symmetric). Tolerance: the mesh's vertex grid is symmetric, so only pixels on edges
    whose centres fall on a triangle boundary can differ."""
    cameras = CameraSet.from_yaw_pitch(torch.tensor([math.pi + offset, math.pi - offset], dtype=torch.float64), -0.1)
    images, masks = render_template_head(cameras, SIZE, SIZE)
    mirrored_image, mirrored_mask = images[1].flip(1), masks[1].flip(1)
    intersection = (masks[0] * mirrored_mask).sum()
    union = ((masks[0] + mirrored_mask) > 0).float().sum()
    assert intersection / union > 0.985
    assert (images[0] - mirrored_image).abs().mean() < 0.01
