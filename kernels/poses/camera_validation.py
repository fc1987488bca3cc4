"""Checks for cameras where they enter the pack: camera JSON documents and any camera set.

Every failure is a :class:`CameraError` (a ``ValueError``) whose text names the view, says what is wrong
and what a valid entry looks like; the nodes put the name of their input in front. A camera set that passes
:func:`check_camera_set` is safe for every later step (inverting cam2world, yaw/pitch/roll, the pivot fit,
the frontal camera): none of them can raise a linear-algebra error on it.

Tolerances:

* Rotation. Labels are written as decimal text (this pack writes 7 decimals; other tools fewer). If every
  entry of the rotation ``R`` is off by at most ``d``, each entry of ``R^T R - I`` is off by at most
  ``2 * 3 * d + 3 * d**2`` (about ``6 d``) and ``det R`` by at most ``9 d`` (first order). Labels written
  with 4 decimals (``d = 5e-5``) are therefore within ``4.5e-4``; :data:`ROTATION_TOLERANCE` doubles that
  and rounds to ``1e-3``. A scaled, sheared or mirrored matrix is off by far more (a mirror by 2 in det).
* Camera distance from the head centre (the world origin, where every pose source puts the head, about
  0.4 units tall): at least :data:`MIN_CAMERA_DISTANCE` (nearer is inside the head, and at the centre the
  camera's yaw and pitch are undefined), at most :data:`MAX_CAMERA_DISTANCE` (37x the EG3D radius 2.7,
  where the head is under 10 pixels tall in a 512 image at the EG3D focal; the Camera Path node stays within 20).
* Intrinsics are normalised by the image size (EG3D): focal ``0 < f <= MAX_FOCAL`` (a pixel-unit focal is
  hundreds), principal point inside the image ``[0, 1]``, rows ``[f, s, cx], [0, f, cy], [0, 0, 1]``.
* The head centre must be in front of the camera (a camera that looks away would give blank condition
  images: a silent wrong result). Whether the head is inside the picture is checked where images are
  rendered (a telephoto camera aimed at the face may leave the head centre outside the picture).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .camera import EG3D_FOCAL, LABEL_SIZE, CameraSet

ROTATION_TOLERANCE = 1e-3
MIN_CAMERA_DISTANCE = 0.1
MAX_CAMERA_DISTANCE = 100.0
MAX_FOCAL = 100.0
MAX_VIEWS = 360

FRONTAL_LABEL = "[1,0,0,0, 0,-1,0,0, 0,0,-1,2.7, 0,0,0,1, 4.2647,0,0.5, 0,4.2647,0.5, 0,0,1]"
VALID_LABEL = (
    f"A valid label is {LABEL_SIZE} numbers: cam2world row by row (a rotation in the first 3 columns, the camera "
    f"position in the 4th, last row 0 0 0 1), then the normalised intrinsics f 0 0.5 0 f 0.5 0 0 1 (EG3D f = {EG3D_FOCAL}); "
    f"the frontal EG3D camera is {FRONTAL_LABEL}. The camera_json output of DiffPortrait3D Camera Path writes valid ones."
)
JSON_SHAPES = (
    '{"views": [{"label": [25 numbers]}, ...]} (what Save Camera JSON writes), {"labels": [[25 numbers], ...]}, '
    'EG3D\'s dataset.json {"labels": [["name.png", [25 numbers]], ...]} or a bare list [[25 numbers], ...]'
)


class CameraError(ValueError):
    """A camera entry that the pack cannot use; the text names the view and what to fix."""


def _kind(value) -> str:
    """How JSON would call ``value`` (for messages)."""
    if isinstance(value, bool):
        return "true/false"
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _label_numbers(label, where: str) -> list[float]:
    if not isinstance(label, list):
        raise CameraError(f"{where} must be a list of {LABEL_SIZE} numbers, got {_kind(label)}. {VALID_LABEL}")
    if len(label) != LABEL_SIZE:
        raise CameraError(
            f"{where} has {len(label)} entries; a camera label has {LABEL_SIZE} numbers (16 cam2world + 9 intrinsics). {VALID_LABEL}"
        )
    for index, value in enumerate(label):
        if not _is_number(value):
            raise CameraError(f"{where}[{index}] is {_kind(value)} ({value!r:.40}), not a number. {VALID_LABEL}")
    return [float(value) for value in label]


def _view_entries(views) -> list[tuple[str, object, str]]:
    """``(name, label, where)`` of each entry of a ``"views"`` list."""
    if not isinstance(views, list):
        raise CameraError(f"'views' must be a list of {{\"label\": [25 numbers]}} objects, got {_kind(views)}")
    entries = []
    for index, view in enumerate(views):
        if not isinstance(view, dict) or "label" not in view:
            found = f"keys: {', '.join(map(str, view))}" if isinstance(view, dict) else _kind(view)
            raise CameraError(f"views[{index}] has no 'label' ({found}); each view is {{\"label\": [25 numbers]}}. {VALID_LABEL}")
        entries.append((f"views[{index}]", view["label"], f"views[{index}].label"))
    return entries


def _label_entries(labels) -> list[tuple[str, object, str]]:
    """``(name, label, where)`` of each entry of a ``"labels"`` list (bare labels or EG3D ``[name, label]`` pairs)."""
    if not isinstance(labels, list):
        raise CameraError(f"'labels' must be a list of 25-number labels, got {_kind(labels)}. {VALID_LABEL}")
    pairs = [isinstance(label, list) and len(label) == 2 and isinstance(label[0], str) for label in labels]
    return [
        (f"labels[{index}] ('{label[0]}')", label[1], f"labels[{index}][1] ('{label[0]}')") if pair
        else (f"labels[{index}]", label, f"labels[{index}]")
        for index, (label, pair) in enumerate(zip(labels, pairs, strict=True))
    ]


def labels_from_document(document) -> tuple[torch.Tensor, list[str]]:
    """``(labels [N, 25] float64, names)`` from a parsed camera JSON document, structure checked.

    ``names`` say where each view sits in the document (``views[2]``, ``labels[0]``, ``[1]`` or an EG3D
    image name), for messages. Numbers are not checked here (see :func:`check_camera_set`).
    """
    if isinstance(document, dict) and "views" in document:
        entries = _view_entries(document["views"])
    elif isinstance(document, dict) and "labels" in document:
        entries = _label_entries(document["labels"])
    elif isinstance(document, list) and len(document) == LABEL_SIZE and all(_is_number(x) for x in document):
        entries = [("the label", document, "the label")]  # one bare label
    elif isinstance(document, list):
        entries = [(f"[{index}]", label, f"[{index}]") for index, label in enumerate(document)]
    else:
        raise CameraError(f"camera JSON must be {JSON_SHAPES}; got {_kind(document)}")
    if not entries:
        raise CameraError(f"camera JSON has no views; give at least one, e.g. {{\"views\": [{{\"label\": {FRONTAL_LABEL}}}]}}")
    if len(entries) > MAX_VIEWS:
        raise CameraError(f"camera JSON has {len(entries)} views; at most {MAX_VIEWS} (split the path into several prompts)")
    numbers = [_label_numbers(label, where) for _, label, where in entries]
    return torch.tensor(numbers, dtype=torch.float64), [name for name, _, _ in entries]


def _exceeds(values: torch.Tensor, limit: float) -> torch.Tensor:
    """[N] True where the largest |entry| of a view's ``values`` [N, ...] is above ``limit`` or NaN."""
    return ~(values.abs().reshape(values.shape[0], -1).amax(-1) <= limit)


def _failures(cam2world: torch.Tensor, intrinsics: torch.Tensor) -> list[tuple[torch.Tensor, object]]:
    """The checks in order, each ``(failed [N] bool, describe(view) -> str)``, over all views at once."""
    rotation = cam2world[:, :3, :3]
    identity = torch.eye(3, dtype=torch.float64)
    with torch.no_grad():
        gram = (rotation.transpose(1, 2) @ rotation - identity).abs().reshape(-1, 9).amax(-1)
        det = torch.linalg.det(torch.nan_to_num(rotation, nan=0.0, posinf=0.0, neginf=0.0))
    distance = cam2world[:, :3, 3].norm(dim=-1)
    head_depth = -(rotation.transpose(1, 2) @ cam2world[:, :3, 3:])[:, 2, 0]  # z of the world origin in camera axes
    focal = torch.stack([intrinsics[:, 0, 0], intrinsics[:, 1, 1]], -1)
    principal = torch.stack([intrinsics[:, 0, 2], intrinsics[:, 1, 2]], -1)
    lower = torch.stack([intrinsics[:, 1, 0], intrinsics[:, 2, 0], intrinsics[:, 2, 1], intrinsics[:, 2, 2] - 1], -1)
    labels = torch.cat([cam2world.reshape(-1, 16), intrinsics.reshape(-1, 9)], -1)
    last_row = cam2world[:, 3] - torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64)

    def pair(values: torch.Tensor, view: int) -> tuple[float, ...]:
        return tuple(float(v) for v in values[view])

    def focal_text(view: int) -> str:
        unit = " (it looks like pixels: divide the intrinsics by the image size)" if float(focal[view].max()) > MAX_FOCAL else ""
        return f"the focal lengths {pair(focal, view)} must be positive and at most {MAX_FOCAL}, normalised by the image size{unit}"

    return [
        (~torch.isfinite(labels).all(-1),
         lambda v: f"label numbers {(~torch.isfinite(labels[v])).nonzero().flatten().tolist()} are not finite (NaN or infinite)"),
        (_exceeds(last_row, ROTATION_TOLERANCE),
         lambda v: f"the last row of cam2world (label numbers 12-15) is {cam2world[v, 3].tolist()}, must be 0 0 0 1"),
        (~(gram <= ROTATION_TOLERANCE) | ~((det - 1).abs() <= ROTATION_TOLERANCE),
         lambda v: f"the 3x3 rotation part of cam2world is not a rotation (max |R^T R - I| = {float(gram[v]):.3g}, det = "
                   f"{float(det[v]) if torch.isfinite(gram[v]) else math.nan:.3g}; needed: orthonormal columns with det +1, "
                   f"each within {ROTATION_TOLERANCE})"),
        (~((distance >= MIN_CAMERA_DISTANCE) & (distance <= MAX_CAMERA_DISTANCE)),
         lambda v: f"the camera is {float(distance[v]):.3g} world units from the head centre (0, 0, 0); it must be between "
                   f"{MIN_CAMERA_DISTANCE} and {MAX_CAMERA_DISTANCE} (EG3D cameras sit at 2.7; a closer camera is inside the head)"),
        (_exceeds(lower, ROTATION_TOLERANCE),
         lambda v: f"the intrinsics (label numbers 16-24) are {intrinsics[v].reshape(9).tolist()}, must be f s cx 0 f cy 0 0 1"),
        (~((focal > 0) & (focal <= MAX_FOCAL)).all(-1), focal_text),
        (~((principal >= 0) & (principal <= 1)).all(-1),
         lambda v: f"the principal point {pair(principal, v)} must lie in the image, 0..1 normalised by the image size (EG3D: 0.5, 0.5)"),
        (~(head_depth > 0),
         lambda v: "the head centre (0, 0, 0) is behind the camera (its viewing axis, column 2 of cam2world, points away from "
                   "the head; an OpenGL/Blender/NeRF matrix looks along -z: negate its columns 1 and 2 for OpenCV axes)"),
    ]


def check_camera_set(cameras: CameraSet, names: Sequence[str] | None = None, hint: str = VALID_LABEL) -> CameraSet:
    """``cameras`` unchanged when every view is a usable camera; :class:`CameraError` naming the first bad view.

    ``names`` (one per view) say where the views came from; default ``view 0``, ``view 1``, ...; ``hint``
    ends the message (by default: what a valid label looks like).
    """
    count = len(cameras)
    if count == 0:
        raise CameraError("the camera set is empty; give at least one view")
    if count > MAX_VIEWS:
        raise CameraError(f"{count} views; at most {MAX_VIEWS}")
    failures = _failures(cameras.cam2world.to(torch.float64), cameras.intrinsics.to(torch.float64))
    bad = torch.stack([failed for failed, _ in failures]).any(0)
    if not bool(bad.any()):
        return cameras
    view = int(bad.nonzero()[0])
    problem = next(describe(view) for failed, describe in failures if bool(failed[view]))
    others = int(bad.sum()) - 1
    where = f"view {view} of {count}" + (f", {others} later views also fail" if others else "")
    name = f"{names[view]} ({where})" if names is not None else where
    raise CameraError(f"{name}: {problem}. {hint}".rstrip())


def cameras_from_document(document) -> CameraSet:
    """A checked :class:`CameraSet` from a parsed camera JSON document (see :func:`labels_from_document`)."""
    labels, names = labels_from_document(document)
    return check_camera_set(CameraSet.from_labels(labels), names)
