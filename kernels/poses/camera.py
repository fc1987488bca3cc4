"""EG3D / PanoHead camera model: look-at cameras on a sphere, 25-number labels, yaw/pitch/roll, JSON.

Conventions (the ones EG3D and PanoHead use for their camera labels):

* World: +x = the subject's left (image right in the frontal view), +y = up, +z = out of the face
  (the frontal camera sits on +z looking toward -z).
* ``cam2world`` is a 4x4 matrix in OpenCV camera axes: column 0 = camera x (image right),
  column 1 = camera y (image down), column 2 = camera z (viewing direction), column 3 = camera origin.
* Intrinsics are normalised by the image size: ``[[f, 0, 0.5], [0, f, 0.5], [0, 0, 1]]`` with
  ``f = 4.2647`` (EG3D's 18.837 degree FOV), so a pixel is ``u = W * (f * x / z + 0.5)``.
* Label = ``cam2world.flatten()`` (16) followed by ``intrinsics.flatten()`` (9): 25 numbers.
* Angles: EG3D's sampler takes a horizontal angle ``h`` and a vertical angle ``v`` (radians) and puts
  the camera at ``radius * (sin(phi) cos(pi - h), cos(phi), sin(phi) sin(pi - h))`` with
  ``phi = arccos(1 - 2 v / pi)``, looking at the pivot, world up = +y. The frontal camera is
  ``h = v = pi/2``. Here ``yaw = h - pi/2`` and ``pitch = v - pi/2`` (radians, as EG3D's scripts add
  them): ``yaw > 0`` moves the camera toward +x (the face turns toward image left), ``pitch < 0`` moves
  it up (looking down on the head). Note ``v`` is not an elevation angle: the elevation is
  ``arcsin(2 v / pi - 1)`` negated, e.g. ``v = pi/2 - 0.05`` lifts the camera by 0.0318 rad.
* ``roll`` (our extra, radians) turns the camera about its viewing axis after the look-at;
  ``roll > 0`` makes the picture content turn counter-clockwise on screen.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import torch

EG3D_RADIUS = 2.7
EG3D_FOCAL = 4.2647
PRINCIPAL_POINT = 0.5
PIVOT_PANOHEAD = (0.0, 0.0, 0.0)
PIVOT_EG3D_FFHQ = (0.0, 0.0, 0.2)
PIVOTS = {"panohead": PIVOT_PANOHEAD, "eg3d_ffhq": PIVOT_EG3D_FFHQ}

_VERTICAL_EPS = 1e-5  # keeps the camera off the poles, where look-at with up = +y is undefined
LABEL_SIZE = 25
JSON_FORMAT = "diffportrait3d.cameras/1"


def normalized_intrinsics(focal: float = EG3D_FOCAL, principal: float = PRINCIPAL_POINT) -> torch.Tensor:
    """3x3 float64 intrinsics in image-size units: ``[[f, 0, c], [0, f, c], [0, 0, 1]]``."""
    return torch.tensor([[focal, 0.0, principal], [0.0, focal, principal], [0.0, 0.0, 1.0]], dtype=torch.float64)


def _roll_matrix(roll: torch.Tensor) -> torch.Tensor:
    cos, sin = torch.cos(roll), torch.sin(roll)
    zero, one = torch.zeros_like(roll), torch.ones_like(roll)
    return torch.stack(
        [torch.stack([cos, -sin, zero], -1), torch.stack([sin, cos, zero], -1), torch.stack([zero, zero, one], -1)],
        -2,
    )


def look_at(origins: torch.Tensor, targets: torch.Tensor, roll: torch.Tensor | None = None) -> torch.Tensor:
    """OpenCV cam2world [N, 4, 4] (float64) for cameras at ``origins`` [N, 3] looking at ``targets`` [N, 3].

    World up is +y: the camera's y axis (image down) is as close to -y as the view allows. ``roll``
    [N] radians turns the camera about its viewing axis afterwards (see module docstring for the sign).
    """
    origins = torch.as_tensor(origins, dtype=torch.float64).reshape(-1, 3)
    targets = torch.as_tensor(targets, dtype=torch.float64).expand_as(origins)
    forward = torch.nn.functional.normalize(targets - origins, dim=-1)
    world_up = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64).expand_as(forward)
    right = torch.nn.functional.normalize(torch.cross(forward, world_up, dim=-1), dim=-1)
    down = torch.cross(forward, right, dim=-1)
    rotation = torch.stack([right, down, forward], dim=-1)
    if roll is not None:
        roll = torch.as_tensor(roll, dtype=torch.float64).reshape(-1).expand(origins.shape[0])
        rotation = rotation @ _roll_matrix(roll)
    cam2world = torch.eye(4, dtype=torch.float64).repeat(origins.shape[0], 1, 1)
    cam2world[:, :3, :3] = rotation
    cam2world[:, :3, 3] = origins
    return cam2world


def sphere_origins(horizontal: torch.Tensor, vertical: torch.Tensor, radius: float = EG3D_RADIUS) -> torch.Tensor:
    """Camera origins [N, 3] for EG3D's horizontal/vertical angles (radians) on a sphere about the world origin."""
    horizontal = torch.as_tensor(horizontal, dtype=torch.float64).reshape(-1)
    vertical = torch.as_tensor(vertical, dtype=torch.float64).reshape(-1).clamp(_VERTICAL_EPS, math.pi - _VERTICAL_EPS)
    phi = torch.arccos(1 - 2 * vertical / math.pi)
    return radius * torch.stack(
        [torch.sin(phi) * torch.cos(math.pi - horizontal), torch.cos(phi), torch.sin(phi) * torch.sin(math.pi - horizontal)],
        dim=-1,
    )


def cam2world_from_yaw_pitch(
    yaw, pitch, roll=0.0, radius: float = EG3D_RADIUS, pivot=PIVOT_PANOHEAD
) -> torch.Tensor:
    """cam2world [N, 4, 4] float64 for EG3D yaw/pitch (radians, ``h = pi/2 + yaw``, ``v = pi/2 + pitch``) and roll."""
    yaw = torch.as_tensor(yaw, dtype=torch.float64).reshape(-1)
    pitch = torch.as_tensor(pitch, dtype=torch.float64).reshape(-1).expand_as(yaw)
    roll = torch.as_tensor(roll, dtype=torch.float64).reshape(-1).expand_as(yaw)
    origins = sphere_origins(math.pi / 2 + yaw, math.pi / 2 + pitch, radius)
    pivot = torch.as_tensor(pivot, dtype=torch.float64).reshape(1, 3)
    return look_at(origins, pivot, roll)


def yaw_pitch_roll_from_cam2world(cam2world: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`cam2world_from_yaw_pitch`: [N, 3] (yaw, pitch, roll) radians, float64.

    Yaw and pitch come from the camera origin (on a sphere about the world origin, any radius);
    roll from the camera's rotation about its viewing axis relative to the roll-free look-at.
    """
    cam2world = torch.as_tensor(cam2world, dtype=torch.float64).reshape(-1, 4, 4)
    origins = cam2world[:, :3, 3]
    radius = origins.norm(dim=-1).clamp_min(1e-12)
    phi = torch.arccos((origins[:, 1] / radius).clamp(-1, 1))
    vertical = math.pi * (1 - torch.cos(phi)) / 2
    horizontal = math.pi - torch.atan2(origins[:, 2], origins[:, 0])
    yaw = torch.remainder(horizontal - math.pi / 2 + math.pi, 2 * math.pi) - math.pi
    forward = cam2world[:, :3, 2]
    roll_free = look_at(origins, origins + forward)[:, :3, :3]
    relative = roll_free.transpose(-1, -2) @ cam2world[:, :3, :3]
    roll = torch.atan2(relative[:, 1, 0], relative[:, 0, 0])
    return torch.stack([yaw, vertical - math.pi / 2, roll], dim=-1)


@dataclass(frozen=True)
class CameraSet:
    """A batch of cameras: the ``DP3D_CAMERAS`` value passed between nodes.

    ``cam2world`` [N, 4, 4] and ``intrinsics`` [N, 3, 3] are float64, EG3D conventions (module docstring).
    """

    cam2world: torch.Tensor
    intrinsics: torch.Tensor

    def __post_init__(self):
        if self.cam2world.ndim != 3 or self.cam2world.shape[1:] != (4, 4):
            raise ValueError(f"cam2world must be [N, 4, 4], got {tuple(self.cam2world.shape)}")
        if self.intrinsics.shape != (self.cam2world.shape[0], 3, 3):
            raise ValueError(f"intrinsics must be [N, 3, 3] with N={self.cam2world.shape[0]}, got {tuple(self.intrinsics.shape)}")

    def __len__(self) -> int:
        return self.cam2world.shape[0]

    @classmethod
    def from_yaw_pitch(cls, yaw, pitch, roll=0.0, radius=EG3D_RADIUS, pivot=PIVOT_PANOHEAD, focal=EG3D_FOCAL):
        """Cameras for yaw/pitch/roll in radians (EG3D convention), shared radius, pivot and focal."""
        cam2world = cam2world_from_yaw_pitch(yaw, pitch, roll, radius, pivot)
        return cls(cam2world, normalized_intrinsics(focal).repeat(cam2world.shape[0], 1, 1))

    def labels(self) -> torch.Tensor:
        """[N, 25] float32 EG3D labels: flattened cam2world then flattened normalised intrinsics."""
        return torch.cat([self.cam2world.reshape(-1, 16), self.intrinsics.reshape(-1, 9)], dim=-1).float()

    @classmethod
    def from_labels(cls, labels) -> CameraSet:
        """Cameras from [N, 25] (or [25]) labels."""
        labels = torch.as_tensor(labels, dtype=torch.float64)
        if labels.shape[-1] != LABEL_SIZE:
            raise ValueError(f"a camera label has {LABEL_SIZE} numbers, got {labels.shape[-1]}")
        labels = labels.reshape(-1, LABEL_SIZE)
        return cls(labels[:, :16].reshape(-1, 4, 4).clone(), labels[:, 16:].reshape(-1, 3, 3).clone())

    def yaw_pitch_roll(self) -> torch.Tensor:
        """[N, 3] yaw, pitch, roll in radians (EG3D convention)."""
        return yaw_pitch_roll_from_cam2world(self.cam2world)

    def to_json(self) -> str:
        """JSON text: the 25-number label per view, with yaw/pitch/roll in degrees for reading."""
        angles = torch.rad2deg(self.yaw_pitch_roll())
        views = [
            {
                "label": [round(float(x), 7) for x in label],
                "yaw_deg": round(float(angle[0]), 4),
                "pitch_deg": round(float(angle[1]), 4),
                "roll_deg": round(float(angle[2]), 4),
            }
            for label, angle in zip(torch.cat([self.cam2world.reshape(-1, 16), self.intrinsics.reshape(-1, 9)], -1), angles, strict=True)
        ]
        document = {
            "format": JSON_FORMAT,
            "convention": "EG3D/PanoHead: label = cam2world (OpenCV axes, 4x4 row-major) + normalised intrinsics (3x3)",
            "views": views,
        }
        return json.dumps(document, indent=1)

    @classmethod
    def from_json(cls, text: str) -> CameraSet:
        """Checked cameras from :meth:`to_json` text, ``{"labels": [...]}`` (EG3D dataset.json too) or a bare
        list of 25-number labels; ``ValueError`` naming the view otherwise (see ``camera_validation.py``)."""
        from .camera_validation import CameraError, cameras_from_document

        try:
            document = json.loads(text)
        except ValueError as error:  # JSONDecodeError, or a number too long to convert
            raise CameraError(f"camera JSON does not parse: {error}") from error
        except RecursionError as error:
            raise CameraError("camera JSON does not parse: it is nested too deeply") from error
        return cameras_from_document(document)


def estimate_pivot(cameras: CameraSet) -> torch.Tensor:
    """[3] float64 point nearest (least squares) to every camera's viewing axis: the look-at pivot.

    With one camera or parallel axes the pivot is ambiguous along the axis; the point of the axis
    nearest the world origin is returned.
    """
    origins = cameras.cam2world[:, :3, 3]
    axes = cameras.cam2world[:, :3, 2]
    projector = torch.eye(3, dtype=torch.float64) - axes[:, :, None] * axes[:, None, :]
    system = projector.sum(0)
    if torch.linalg.matrix_rank(system, atol=1e-6) < 3:
        return origins[0] - axes[0] * torch.dot(origins[0], axes[0])
    return torch.linalg.solve(system, (projector @ origins[:, :, None]).sum(0)).squeeze(-1)


def frontal_camera_like(cameras: CameraSet) -> CameraSet:
    """The yaw = pitch = roll = 0 camera with the first camera's radius, intrinsics and the set's pivot."""
    radius = float(cameras.cam2world[0, :3, 3].norm())
    pivot = estimate_pivot(cameras)
    if float((pivot - torch.tensor([0.0, 0.0, radius], dtype=torch.float64)).norm()) < 1e-6:
        # look-at toward the camera's own position has no direction (a zero, singular rotation)
        raise ValueError(f"cameras: the viewing axes meet at {pivot.tolist()}, where the frontal camera would sit; move the cameras' pivot")
    frontal = cam2world_from_yaw_pitch(0.0, 0.0, 0.0, radius=radius, pivot=pivot)
    return CameraSet(frontal, cameras.intrinsics[:1].clone())
