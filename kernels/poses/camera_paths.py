"""Camera paths: the official 16-view orbit, yaw sweeps, a 360 turntable, keyframed paths and DiffPortrait360's
32 inference cameras.

All return a :class:`CameraSet` (EG3D conventions, see ``camera.py``). Angles of the official orbit
are EG3D's raw radians; every other path takes degrees.
"""

from __future__ import annotations

import math
import re

import torch

from .camera import EG3D_FOCAL, EG3D_RADIUS, PIVOT_PANOHEAD, CameraSet
from .camera_path_names import (
    OFFICIAL_ORBIT_A,
    OFFICIAL_ORBIT_B,
    OFFICIAL_PITCH_OFFSET,
    PRESETS,
    SPHERE32_BACK_VIEW,
    SPHERE32_VIEWS,
)
from .camera_validation import MAX_VIEWS, CameraError, check_camera_set


def official_orbit(
    a: float = OFFICIAL_ORBIT_A, b: float = OFFICIAL_ORBIT_B, views: int = 16, **camera
) -> CameraSet:
    """The official elliptical orbit: ``h = pi/2 + a sin(2 pi k / n)``, ``v = pi/2 - 0.05 + b cos(2 pi k / n)``.

    ``a``, ``b`` radians; view 0 is the bottom of the ellipse (camera lowest, looking up), views go toward +yaw first.
    """
    phase = 2 * math.pi * torch.arange(views, dtype=torch.float64) / views
    return CameraSet.from_yaw_pitch(a * torch.sin(phase), OFFICIAL_PITCH_OFFSET + b * torch.cos(phase), 0.0, **camera)


def yaw_sweep(views: int = 16, yaw_min_deg=-45.0, yaw_max_deg=45.0, pitch_deg=0.0, **camera) -> CameraSet:
    """``views`` cameras with yaw evenly from ``yaw_min_deg`` to ``yaw_max_deg`` (both included) at one pitch."""
    yaw = torch.linspace(math.radians(yaw_min_deg), math.radians(yaw_max_deg), views, dtype=torch.float64)
    return CameraSet.from_yaw_pitch(yaw, math.radians(pitch_deg), 0.0, **camera)


def turntable(views: int = 24, pitch_deg=0.0, **camera) -> CameraSet:
    """A full turn: yaw = 360 k / views degrees (view 0 frontal, then toward +yaw), one pitch."""
    yaw = 2 * math.pi * torch.arange(views, dtype=torch.float64) / views
    return CameraSet.from_yaw_pitch(yaw, math.radians(pitch_deg), 0.0, **camera)


# DiffPortrait360 writes pi as 3.14 in its camera angles (below); kept, so the labels match the official ones.
SPHERE32_PI = 3.14


def sphere32(**camera) -> CameraSet:
    """DiffPortrait360's 32 inference cameras, in the official order (view ``k`` = frame ``k``).

    Facts from the release code (public fork twowwj/diff360, ``diffportrait360_release/code``, commit 2760f9f):
    ``3DNoise/projector_withseg.py`` renders the 3D-aware noise ``condition32.mp4`` with, for frame ``k`` of 32,
    ``LookAtPoseSampler.sample(3.14/2 + 2*3.14*k/32, 3.14/2, lookat (0, 0, 0), radius=2.7)`` and intrinsics
    ``[[4.2647, 0, 0.5], [0, 4.2647, 0.5], [0, 0, 1]]``; ``inference.py`` pairs frame ``i*8 + j`` of that video
    with pose hint ``i*8 + j`` of ``sample_data/cam_condition/sphere32`` (4 batches of 8), so the 32 pose hints
    sit at the same cameras. The hint images themselves are not in the published sources (we cannot read their
    labels); ``inference.sh`` runs the back-of-head generator at ``sphere32/0000018.png``, which is view 18 when
    the files count from 0 like the frames (``SPHERE32_BACK_VIEW``; it is view 17 if they count from 1).

    In this module's terms: yaw ``= 2*3.14*k/32 + (3.14 - pi)/2`` (steps of 11.243 degrees, view 18 at 202.4 =
    -157.6 degrees: behind the head, toward the subject's right) and pitch ``= (3.14 - pi)/2`` (-0.046 degrees).
    ``radius``, ``pivot`` and ``focal`` default to the official 2.7, (0, 0, 0) and 4.2647.
    """
    offset = (SPHERE32_PI - math.pi) / 2
    yaw = 2 * SPHERE32_PI * torch.arange(SPHERE32_VIEWS, dtype=torch.float64) / SPHERE32_VIEWS + offset
    return CameraSet.from_yaw_pitch(yaw, offset, 0.0, **camera)


def sphere32_back(**camera) -> CameraSet:
    """One camera: view ``SPHERE32_BACK_VIEW`` of :func:`sphere32`, where DiffPortrait360's back-of-head generator runs."""
    cameras = sphere32(**camera)
    view = slice(SPHERE32_BACK_VIEW, SPHERE32_BACK_VIEW + 1)
    return CameraSet(cameras.cam2world[view].clone(), cameras.intrinsics[view].clone())


MAX_ANGLE_DEG = 360.0
MAX_PITCH_DEG = 90.0


def _angle_problem(values: list[float]) -> str | None:
    """Why (yaw, pitch, roll) degrees are not usable, or None: finite, |yaw|, |roll| <= 360, |pitch| <= 90
    (past 90 the camera would go over the pole, where EG3D's sphere stops)."""
    if not all(math.isfinite(value) for value in values):
        return "angles must be finite numbers (degrees), not NaN or infinity"
    yaw, pitch, roll = values
    if abs(yaw) > MAX_ANGLE_DEG or abs(roll) > MAX_ANGLE_DEG:
        return f"yaw and roll must be within -{MAX_ANGLE_DEG:g}..{MAX_ANGLE_DEG:g} degrees"
    if abs(pitch) > MAX_PITCH_DEG:
        return f"pitch must be within -{MAX_PITCH_DEG:g}..{MAX_PITCH_DEG:g} degrees (- = camera above the head)"
    return None


def parse_keyframes(text: str, name: str = "keyframes") -> torch.Tensor:
    """Keyframes [K, 3] (yaw, pitch, roll) in degrees from text.

    One keyframe per line or per ``;``; numbers separated by commas or spaces: ``yaw`` or
    ``yaw, pitch`` or ``yaw, pitch, roll`` (missing values are 0). ``#`` starts a comment.
    ``ValueError`` messages start with ``name`` (the input the text came from) and the entry.
    """
    rows = []
    for number, chunk in enumerate(re.split(r"[;\n]", text), start=1):
        chunk = chunk.split("#", 1)[0].strip()
        if not chunk:
            continue
        parts = [part for part in re.split(r"[,\s]+", chunk) if part]
        if len(parts) > 3:
            raise ValueError(f"{name}: entry {number} '{chunk}' has more than 3 numbers (yaw, pitch, roll)")
        try:
            values = [float(part) for part in parts]
        except ValueError:
            raise ValueError(f"{name}: entry {number} '{chunk}' is not numbers (degrees), e.g. '30, -5, 0'") from None
        values += [0.0] * (3 - len(values))
        problem = _angle_problem(values)
        if problem:
            raise ValueError(f"{name}: entry {number} '{chunk}': {problem}")
        rows.append(values)
    if not rows:
        raise ValueError(f"{name}: no keyframe found; write one 'yaw, pitch, roll' (degrees) per line")
    return torch.tensor(rows, dtype=torch.float64)


def interpolate_keyframes(keys: torch.Tensor, views: int, interpolation: str = "linear") -> torch.Tensor:
    """[views, C] values spread over keyframes [K, C]: first view at key 0, last at key K-1.

    ``linear`` is piecewise linear; ``smooth`` eases in and out of every keyframe (cosine ease).
    """
    if interpolation not in ("linear", "smooth"):
        raise ValueError(f"interpolation must be 'linear' or 'smooth', got '{interpolation}'")
    if keys.shape[0] == 1 or views == 1:
        return keys[:1].expand(views, -1).clone()
    position = torch.linspace(0, keys.shape[0] - 1, views, dtype=torch.float64)
    left = position.floor().long().clamp(max=keys.shape[0] - 2)
    fraction = (position - left).unsqueeze(-1)
    if interpolation == "smooth":
        fraction = (1 - torch.cos(math.pi * fraction)) / 2
    return keys[left] * (1 - fraction) + keys[left + 1] * fraction


def keyframe_path(text: str, views: int = 16, interpolation: str = "per_view", **camera) -> CameraSet:
    """Cameras from keyframe text (see :func:`parse_keyframes`).

    ``per_view``: one camera per keyframe (``views`` ignored); ``linear``/``smooth``: ``views`` cameras
    interpolated through the keyframes.
    """
    keys = parse_keyframes(text)
    if interpolation == "per_view":
        angles = keys
    else:
        angles = interpolate_keyframes(keys, views, interpolation)
    angles = torch.deg2rad(angles)
    return CameraSet.from_yaw_pitch(angles[:, 0], angles[:, 1], angles[:, 2], **camera)


def camera_path(
    preset: str,
    views: int = 16,
    orbit_a: float = OFFICIAL_ORBIT_A,
    orbit_b: float = OFFICIAL_ORBIT_B,
    yaw_min_deg: float = -45.0,
    yaw_max_deg: float = 45.0,
    pitch_deg: float = 0.0,
    keyframes: str = "",
    interpolation: str = "per_view",
    radius: float = EG3D_RADIUS,
    pivot=PIVOT_PANOHEAD,
    focal: float = EG3D_FOCAL,
) -> CameraSet:
    """One entry point for every preset (``PRESETS``); parameters that a preset does not use are ignored
    (``sphere32`` always has 32 views, ``sphere32_back`` one).

    The cameras are checked (``camera_validation.check_camera_set``): ``ValueError`` naming the view when
    the parameters give an unusable camera (e.g. inside the head).
    """
    if not 1 <= views <= MAX_VIEWS:
        raise ValueError(f"views must be 1 to {MAX_VIEWS}, got {views}")
    numbers = {"orbit_a": orbit_a, "orbit_b": orbit_b, "yaw_min": yaw_min_deg, "yaw_max": yaw_max_deg, "pitch": pitch_deg,
               "radius": radius, "focal": focal, "pivot": math.fsum(abs(float(v)) for v in pivot)}
    bad = [name for name, value in numbers.items() if not math.isfinite(value)]
    if bad:
        raise ValueError(f"{', '.join(bad)}: must be finite numbers")
    camera = {"radius": radius, "pivot": pivot, "focal": focal}
    if preset == "official16":
        cameras = official_orbit(orbit_a, orbit_b, views, **camera)
    elif preset == "yaw_sweep":
        cameras = yaw_sweep(views, yaw_min_deg, yaw_max_deg, pitch_deg, **camera)
    elif preset == "turntable360":
        cameras = turntable(views, pitch_deg, **camera)
    elif preset == "keyframes":
        cameras = keyframe_path(keyframes, views, interpolation, **camera)
    elif preset == "sphere32":
        cameras = sphere32(**camera)
    elif preset == "sphere32_back":
        cameras = sphere32_back(**camera)
    else:
        raise ValueError(f"preset must be one of {PRESETS}, got '{preset}'")
    try:
        return check_camera_set(cameras, hint="The cameras circle the head centre (0, 0, 0) at distance radius and look at the pivot: keep the pivot well inside that circle.")
    except CameraError as error:
        raise CameraError(f"preset '{preset}' with radius {radius:g}, pivot {tuple(pivot)}, focal {focal:g}: {error}") from error
