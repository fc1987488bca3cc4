"""A procedural template head: geometry and per-pixel colours, written from scratch (no scanned data).

The head is a star-shaped surface around a centre between the ears at eye height: the distance
along each unit direction is a smooth union of a cranium and a jaw ellipsoid, plus Gaussian bumps
and dents for brows, eye sockets and eyeballs, nose, cheekbones, lips, chin and ears, plus a hair
layer over the scalp. A tapered tube makes the neck. The hairline is high on the forehead, arches over the
ears and runs down behind them to the nape, where it continues onto the neck, so that the head reads as a
head from every yaw of a full turn. Shapes are designed in centimetres in head
coordinates (+x = the subject's left, +y = up, +z = out of the face) and placed in the EG3D world
(see ``camera.py``) so that at radius 2.7 / focal 4.2647 the head fills the frame like the official
condition renders: eyes slightly above the image centre, crown near the top, chin at about 4/5.

Colours are evaluated per pixel from the interpolated "canonical direction" of the surface (the
unit direction from the head centre), so eyes, brows and lips stay crisp at any mesh resolution.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch

WORLD_UNITS_PER_CM = 0.0172  # about 23 cm chin-to-crown -> 0.4 world units, as the official crops frame it
DEFAULT_EYE_HEIGHT = 0.02  # world y of the eyes; the PanoHead pivot (0, 0, 0) is just below them


@dataclass(frozen=True)
class HeadLook:
    """What the template head looks like. Colours are RGB in [0, 1]; lengths in centimetres."""

    skin: tuple[float, float, float] = (0.86, 0.68, 0.57)
    hair: tuple[float, float, float] = (0.20, 0.14, 0.10)
    lips: tuple[float, float, float] = (0.72, 0.40, 0.40)
    iris: tuple[float, float, float] = (0.28, 0.20, 0.14)
    hair_volume_cm: float = 1.5
    head_scale: float = 1.0
    eye_height: float = DEFAULT_EYE_HEIGHT


def parse_hex_colour(text: str, input_name: str) -> tuple[float, float, float]:
    """'#rrggbb' (or 'rrggbb') -> RGB floats in [0, 1]; ValueError naming ``input_name`` (the node input or
    command line option) otherwise."""
    match = re.fullmatch(r"#?([0-9a-fA-F]{6})", text.strip())
    if not match:
        raise ValueError(f"{input_name}: '{text}' is not a colour; write it as #rrggbb, e.g. #ffffff for white")
    value = match.group(1)
    return tuple(int(value[i : i + 2], 16) / 255.0 for i in (0, 2, 4))


@dataclass
class HeadMesh:
    """Triangle mesh in world units: ``vertices`` [V, 3] float32, ``faces`` [F, 3] int64 (counter-clockwise
    from outside), ``attributes`` [V, 4] float32 = canonical direction (3: the unit direction from the head centre, for the
    neck too) and a head flag (1 = head, 0 = neck: no face is painted there)."""

    vertices: torch.Tensor
    faces: torch.Tensor
    attributes: torch.Tensor


def _angles(directions: torch.Tensor):
    """Longitude (0 at the face, + toward the subject's left) and latitude (+ up) of unit directions."""
    x, y, z = directions.unbind(-1)
    return torch.atan2(x, z), torch.atan2(y, torch.sqrt(x * x + z * z))


def _gauss(lon, lat, lon0, lat0, s_lon, s_lat):
    return torch.exp(-0.5 * (((lon - lon0) / s_lon) ** 2 + ((lat - lat0) / s_lat) ** 2))


def _mirrored(lon, lat, lon0, lat0, s_lon, s_lat):
    """A Gaussian and its mirror image across the face's midline."""
    return _gauss(lon.abs(), lat, lon0, lat0, s_lon, s_lat)


def _ellipsoid_exit(directions: torch.Tensor, centre, axes) -> torch.Tensor:
    """Distance from the origin (inside the ellipsoid) along each direction to the ellipsoid surface."""
    centre = torch.tensor(centre, dtype=directions.dtype)
    axes = torch.tensor(axes, dtype=directions.dtype)
    d = directions / axes
    e = centre / axes
    a = (d * d).sum(-1)
    b = (d * e).sum(-1)
    c = (e * e).sum() - 1.0
    return (b + torch.sqrt(b * b - a * c)) / a


EAR_LON, EAR_LAT = 1.64, -0.12  # centre of each ear (longitude +/-), radians
NAPE_LAT = -0.86  # hairline latitude straight behind the head, on the neck below the skull


def _hairline(lon: torch.Tensor) -> torch.Tensor:
    """Latitude of the hairline at each longitude: high on the forehead, arched over the ears, then down
    behind them to the nape (on the neck, below where the skull meets it)."""
    side = lon.abs()
    facing = torch.cos(side)
    front = 0.12 + 0.74 * facing.clamp_min(0) ** 1.5
    behind = ((side - EAR_LON - 0.10) / 0.40).clamp(0, 1)
    drop = 0.12 + (NAPE_LAT - 0.12) * (3 * behind**2 - 2 * behind**3)  # smoothstep from the ear to the nape
    arch = 0.12 * torch.exp(-0.5 * ((side - EAR_LON) / 0.13) ** 2)
    return torch.where(facing >= 0, front, drop) + arch


def _hair_coverage(lon: torch.Tensor, lat: torch.Tensor) -> torch.Tensor:
    """0..1 coverage by hair, for scalp and neck alike: everything above the :func:`_hairline`."""
    return torch.sigmoid((lat - _hairline(lon)) / 0.03)


def head_radius_cm(directions: torch.Tensor, look: HeadLook = HeadLook()) -> torch.Tensor:
    """Distance (cm) from the head centre to the surface (hair included) along unit ``directions`` [N, 3]."""
    cranium = _ellipsoid_exit(directions, (0.0, 2.3, -1.0), (7.9, 10.4, 10.0))
    jaw = _ellipsoid_exit(directions, (0.0, -4.0, 2.3), (6.5, 8.2, 6.7))
    softness = 0.6
    radius = softness * torch.logaddexp(cranium / softness, jaw / softness)
    lon, lat = _angles(directions)
    front = (torch.cos(lon) > 0).to(directions.dtype)

    # Nose: a ridge from the bridge (between the eyes) growing toward the tip, then tucking under.
    bridge, tip = 0.03, -0.36
    along = ((bridge - lat) / (bridge - tip)).clamp(0, 1)
    ridge = (0.35 + 2.1 * along**1.6) * torch.exp(-0.5 * (lon / (0.05 + 0.07 * along)) ** 2)
    ridge = ridge * torch.where(lat < tip, torch.exp(-0.5 * ((lat - tip) / 0.045) ** 2), torch.ones_like(lat))
    ridge = ridge * (lat < bridge + 0.2).to(lat.dtype) * torch.exp(-0.5 * (torch.relu(lat - bridge) / 0.06) ** 2)
    wings = 0.7 * _mirrored(lon, lat, 0.12, -0.34, 0.05, 0.05)

    features = (
        ridge
        + wings
        + 0.55 * _gauss(lon, lat, 0.0, 0.20, 0.45, 0.06)  # brow ridge
        - 0.85 * _mirrored(lon, lat, 0.37, 0.02, 0.15, 0.09)  # eye sockets
        + 0.55 * _mirrored(lon, lat, 0.37, 0.0, 0.10, 0.06)  # eyeballs
        + 0.55 * _mirrored(lon, lat, 0.62, -0.15, 0.16, 0.12)  # cheekbones
        + 0.45 * _gauss(lon, lat, 0.0, -0.60, 0.20, 0.035)  # upper lip
        + 0.55 * _gauss(lon, lat, 0.0, -0.71, 0.18, 0.04)  # lower lip
        - 0.30 * _gauss(lon, lat, 0.0, -0.655, 0.22, 0.012)  # mouth line
        + 0.60 * _gauss(lon, lat, 0.0, -0.98, 0.20, 0.12)  # chin
    ) * front
    ears = 2.0 * _mirrored(lon, lat, EAR_LON, EAR_LAT, 0.11, 0.21) - 0.6 * _mirrored(lon, lat, EAR_LON, EAR_LAT, 0.05, 0.11)
    ears = ears + 0.8 * _mirrored(lon, lat, EAR_LON + 0.11, EAR_LAT + 0.02, 0.07, 0.17)  # the rim stands off the skull, seen from behind
    # Behind the ears the hair thins out toward the nape instead of ending in a ledge, and leaves the ears free.
    behind = (-4.0 * torch.cos(lon)).clamp(0, 1)
    above = ((lat - _hairline(lon)) / 0.35).clamp(0, 1)
    thinning = 1.0 - behind * (1.0 - above * above * (3 - 2 * above))
    over_ears = 0.6 * _mirrored(lon, lat, math.pi / 2, 0.20, 0.30, 0.10)  # hair standing out above the ears
    hair = look.hair_volume_cm * _hair_coverage(lon, lat) * thinning * (1.0 + 0.35 * torch.sin(lat).clamp_min(0) + over_ears)
    return radius + features + ears + hair


def _wrapped_grid_faces(rows: int, columns: int) -> torch.Tensor:
    """[2 * rows * columns, 3] triangles of a grid of (rows + 1) x columns vertices stored row by row, each row
    closed into a ring (the last column joins the first): two per cell, counter-clockwise when rows run
    upwards and columns to the right."""
    row = torch.arange(rows).unsqueeze(1)
    col = torch.arange(columns).unsqueeze(0)
    here = row * columns + col
    right = row * columns + (col + 1) % columns
    above, above_right = here + columns, right + columns
    return torch.cat([torch.stack([here, right, above_right], -1), torch.stack([here, above_right, above], -1)]).reshape(-1, 3)


def _sphere_grid(rows: int, columns: int):
    """Unit directions on a latitude/longitude grid (poles included) and its outward-facing triangles."""
    lat = torch.linspace(-math.pi / 2, math.pi / 2, rows + 1, dtype=torch.float64)
    lon = -math.pi + 2 * math.pi * torch.arange(columns, dtype=torch.float64) / columns
    lat_grid, lon_grid = torch.meshgrid(lat, lon, indexing="ij")
    directions = torch.stack(
        [torch.cos(lat_grid) * torch.sin(lon_grid), torch.sin(lat_grid), torch.cos(lat_grid) * torch.cos(lon_grid)], -1
    ).reshape(-1, 3)
    return directions, _wrapped_grid_faces(rows, columns)


def _neck_tube(rows: int, columns: int):
    """A tapered neck tube in head centimetres, open at both ends, outward-facing triangles."""
    heights = torch.linspace(-2.0, -34.0, rows + 1, dtype=torch.float64)
    angle = -math.pi + 2 * math.pi * torch.arange(columns, dtype=torch.float64) / columns
    h, a = torch.meshgrid(heights, angle, indexing="ij")
    flare = 1.0 + 1.6 * torch.sigmoid((-h - 22.0) / 3.0)  # widens toward the shoulders
    vertices = torch.stack([5.9 * flare * torch.sin(a), h, -1.6 + 6.0 * torch.cos(a) * (0.8 + 0.2 * flare)], -1)
    # rows run downwards here, so the sphere grid's winding is reversed to face outwards
    return vertices.reshape(-1, 3), _wrapped_grid_faces(rows, columns)[:, [0, 2, 1]]


def build_head_mesh(look: HeadLook = HeadLook(), rows: int = 120, columns: int = 180) -> HeadMesh:
    """The template head (plus neck) as a world-space mesh; ``rows`` x ``columns`` sets the head's grid."""
    directions, head_faces = _sphere_grid(rows, columns)
    head_cm = directions * head_radius_cm(directions, look).unsqueeze(-1)
    neck_cm, neck_faces = _neck_tube(24, 48)
    scale = WORLD_UNITS_PER_CM * look.head_scale
    offset = torch.tensor([0.0, look.eye_height, 0.0], dtype=torch.float64)
    vertices = torch.cat([head_cm, neck_cm]) * scale + offset
    faces = torch.cat([head_faces, neck_faces + head_cm.shape[0]])
    neck_direction = torch.nn.functional.normalize(neck_cm, dim=-1)  # the nape's hair continues onto the neck
    attributes = torch.cat(
        [
            torch.cat([directions, torch.ones(directions.shape[0], 1, dtype=torch.float64)], -1),
            torch.cat([neck_direction, torch.zeros(neck_cm.shape[0], 1, dtype=torch.float64)], -1),
        ]
    )
    return HeadMesh(vertices.float(), faces.long(), attributes.float())


def _blend(base: torch.Tensor, colour, weight: torch.Tensor) -> torch.Tensor:
    colour = torch.as_tensor(colour, dtype=base.dtype)
    return base + (colour - base) * weight.unsqueeze(-1)


def _soft_ellipse(lon, lat, lon0, lat0, r_lon, r_lat, edge=0.25):
    distance = torch.sqrt(((lon - lon0) / r_lon) ** 2 + ((lat - lat0) / r_lat) ** 2)
    return torch.sigmoid((1.0 - distance) / edge)


def head_albedo(attributes: torch.Tensor, look: HeadLook = HeadLook()) -> torch.Tensor:
    """Surface colour [N, 3] in [0, 1] from interpolated mesh ``attributes`` [N, 4] (see :class:`HeadMesh`)."""
    directions = torch.nn.functional.normalize(attributes[:, :3], dim=-1)
    is_head = attributes[:, 3].clamp(0, 1)
    lon, lat = _angles(directions)
    side = lon.abs()  # features are mirror-symmetric
    colour = torch.as_tensor(look.skin, dtype=attributes.dtype).expand(attributes.shape[0], 3).clone()
    front = (torch.cos(lon) > 0).to(lat.dtype) * is_head  # the face is painted on the head, never on the neck
    colour = _blend(colour, (0.85, 0.50, 0.45), 0.25 * _gauss(side, lat, 0.50, -0.28, 0.14, 0.10) * is_head)  # cheeks
    concha = _soft_ellipse(side, lat, EAR_LON + 0.01, EAR_LAT, 0.05, 0.10, 0.3) * is_head
    colour = _blend(colour, tuple(0.72 * c for c in look.skin), 0.6 * concha)  # the ear's hollow, so ears read from the side
    lips = _soft_ellipse(lon, lat, 0.0, -0.655, 0.20, 0.07, 0.15) * front
    colour = _blend(colour, look.lips, 0.85 * lips)
    colour = _blend(colour, (0.30, 0.12, 0.12), 0.8 * torch.exp(-0.5 * ((lat + 0.655) / 0.007) ** 2) * lips)
    nostrils = _soft_ellipse(side, lat, 0.07, -0.395, 0.03, 0.015) * front
    colour = _blend(colour, (0.25, 0.12, 0.10), 0.8 * nostrils)

    white = _soft_ellipse(side, lat, 0.37, 0.005, 0.15, 0.05, 0.12) * front
    colour = _blend(colour, (0.93, 0.91, 0.88), white)
    iris = _soft_ellipse(side, lat, 0.37, 0.0, 0.055, 0.055, 0.15) * white
    colour = _blend(colour, look.iris, iris)
    pupil = _soft_ellipse(side, lat, 0.37, 0.0, 0.022, 0.022, 0.15) * white
    colour = _blend(colour, (0.03, 0.03, 0.03), pupil)
    lash_line = _soft_ellipse(side, lat, 0.37, 0.05, 0.15, 0.014, 0.2) * front
    colour = _blend(colour, (0.10, 0.07, 0.06), 0.9 * lash_line)
    brow_centre = 0.185 + 0.02 * torch.exp(-0.5 * ((side - 0.36) / 0.08) ** 2)
    brows = _soft_ellipse(side, lat - brow_centre, 0.37, 0.0, 0.17, 0.022, 0.2) * front
    colour = _blend(colour, tuple(0.7 * c for c in look.hair), 0.9 * brows)

    strands = 0.88 + 0.12 * torch.sin(70.0 * side + 9.0 * lat) * torch.sin(23.0 * lat + 5.0 * side)
    hair_colour = torch.as_tensor(look.hair, dtype=attributes.dtype) * strands.unsqueeze(-1)
    coverage = _hair_coverage(lon, lat)
    colour = colour + (hair_colour - colour) * coverage.unsqueeze(-1)
    neck_shade = 0.94 + 0.06 * is_head
    return (colour * neck_shade.unsqueeze(-1)).clamp(0, 1)


_MESH_CACHE: dict[HeadLook, HeadMesh] = {}


def template_head_mesh(look: HeadLook = HeadLook()) -> HeadMesh:
    """:func:`build_head_mesh` for ``look``, cached (the last few looks are kept)."""
    if look not in _MESH_CACHE:
        if len(_MESH_CACHE) >= 4:
            _MESH_CACHE.pop(next(iter(_MESH_CACHE)))
        _MESH_CACHE[look] = build_head_mesh(look)
    return _MESH_CACHE[look]


def render_template_head(cameras, height: int, width: int, look: HeadLook = HeadLook(), background=(1.0, 1.0, 1.0), supersample: int = 1):
    """Condition images of the template head: ``(images [N, H, W, 3], masks [N, H, W])``, float32 in [0, 1]."""
    from .mesh_render import render_mesh_views

    mesh = template_head_mesh(look)
    return render_mesh_views(
        mesh.vertices, mesh.faces, cameras, height, width, mesh.attributes,
        colour_of=lambda values: head_albedo(values, look), background=background, supersample=supersample,
    )
