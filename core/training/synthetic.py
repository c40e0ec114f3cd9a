"""Synthetic training data: random FLAME-format heads with procedural colours and lighting, rendered with the
project's rasterizer from cameras distributed like the FFHQ/EG3D poses.

A *head sampler* turns random numbers into a head: FLAME-style parameters (shape, expression, jaw, eyes), the
deformed vertices + 68 landmarks, and per-vertex colour regions (hair, brows, lips, sclera, iris, pupil, mouth).
Two samplers exist:

* `FlameHeadSampler` evaluates a FLAME-format model (`core.flame.FlameModel`): the built-in head asset or an
  official FLAME model converted by the user. Its mouth is a real hole; the renderer draws the cavity dark.
* `StandInHeadSampler` deforms the procedural ellipsoid head (core.geometry.ellipsoid_head): it has no mouth or
  eyes of its own, so the jaw opens by rotating the lower face and the mouth gap, eyes and gaze are painted.

`default_head_sampler()` picks the built-in FLAME-format head when it is installed and falls back to the stand-in.
Everything is deterministic from a seed: image i draws from numpy's Generator seeded with (seed, i), so any image
can be regenerated alone and the output bytes do not depend on the order or the number of images.

Output folder (read by core.training.dataset.FolderDataset):

    images/img00000000.png ...   RGB, resolution x resolution
    dataset.json                 {"labels": [["img00000000.png", [25 floats]], ...]}  (EG3D camera labels)
    meshes.npz                   names [N], v [N, V + 68, 3] float32 (the generator's mesh input), and the
                                 per-image parameters: shape, expression, jaw, eyes, camera (yaw, pitch)
    topology.npz                 faces, uv_faces, uvs, uv_face_mask of the head
    synthetic.json               how the data was made (sampler, seed, count, resolution, version)
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError
from ..geometry.ellipsoid_head import CENTRE, ellipsoid_head
from ..io.atomic import atomic_write, write_bytes_atomic
from ..networks.next3d import Topology
from ..rendering.camera import FFHQ_PIVOT, FFHQ_RADIUS, camera_label, look_at_cam2world
from .mesh_render import rasterize_mesh, vertex_normals

__all__ = ["HeadSample", "HeadSampler", "StandInHeadSampler", "FlameHeadSampler", "default_head_sampler",
           "head_sampler_by_name", "builtin_head_sampler", "CameraDistribution", "Appearance", "sample_appearance",
           "render_head",
           "synthesize", "generate_dataset", "mesh_is_closed", "FFHQ_FOCAL", "write_npz_deterministic",
           "SYNTHETIC_VERSION"]

SYNTHETIC_VERSION = 1
FFHQ_FOCAL = 4.2647   # normalized focal length of the FFHQ dataset labels (docs/camera.md#ffhq-cameras)
Params = Dict[str, np.ndarray]
PathLike = Union[str, os.PathLike]

# Landmark index groups (iBUG 68).
_BROWS = list(range(17, 27))
_LEFT_EYE_IMG = list(range(36, 42))    # the subject's right eye (image left)
_RIGHT_EYE_IMG = list(range(42, 48))
_OUTER_LIP = list(range(48, 60))
_INNER_LIP = list(range(60, 68))


# ------------------------------------------------------------------------------------------------ small maths

def axis_angle_matrix(aa: np.ndarray) -> np.ndarray:
    """Rodrigues: axis-angle [3] (radians) -> rotation matrix [3, 3] (float64)."""
    aa = np.asarray(aa, dtype=np.float64)
    angle = float(np.linalg.norm(aa))
    if angle < 1e-12:
        return np.eye(3)
    k = aa / angle
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + math.sin(angle) * kx + (1 - math.cos(angle)) * kx @ kx


def gaze_axis_angle(yaw: float, pitch: float) -> np.ndarray:
    """An eye pose (axis-angle) that turns the line of sight (+z) by yaw (towards +x) and pitch (towards +y);
    exact for one angle at a time, a close approximation for both together."""
    return np.array([-pitch, yaw, 0.0], dtype=np.float32)


def eye_direction(eye_pose: np.ndarray) -> np.ndarray:
    """Where an eye with this axis-angle pose looks (unit vector, FLAME frame)."""
    return axis_angle_matrix(eye_pose)[:, 2]


def _sigmoid(x: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(x)


def _distance_to_polyline(points: torch.Tensor, polyline: torch.Tensor) -> torch.Tensor:
    """Distance [N] from 2-D points [N, 2] to an open polyline [K, 2]."""
    a, b = polyline[:-1][None], polyline[1:][None]                   # [1, K-1, 2]
    p = points[:, None]
    ab = b - a
    t = (((p - a) * ab).sum(-1) / (ab.square().sum(-1) + 1e-12)).clamp(0, 1)
    return (a + t[..., None] * ab - p).norm(dim=-1).min(1).values


def mesh_is_closed(faces: torch.Tensor) -> bool:
    """Every edge shared by exactly two faces: no holes, so renderings can skip the inner-surface pass."""
    f = faces.long()
    edges = torch.cat([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]).sort(dim=1).values
    _, counts = torch.unique(edges, dim=0, return_counts=True)
    return bool((counts == 2).all())


def _point_in_polygon(points: torch.Tensor, polygon: torch.Tensor) -> torch.Tensor:
    """Even-odd rule: points [N, 2] inside the closed polygon [K, 2] -> bool [N]."""
    x, y = points[:, 0:1], points[:, 1:2]
    x0, y0 = polygon[:, 0][None], polygon[:, 1][None]
    x1, y1 = polygon.roll(-1, 0)[:, 0][None], polygon.roll(-1, 0)[:, 1][None]
    crosses = ((y0 > y) != (y1 > y)) & (x < (x1 - x0) * (y - y0) / (y1 - y0 + 1e-12) + x0)
    return (crosses.sum(1) % 2) == 1


# ------------------------------------------------------------------------------------------------ appearance

_SKIN = np.array([[0.96, 0.80, 0.69], [0.90, 0.70, 0.57], [0.80, 0.58, 0.44], [0.64, 0.45, 0.33],
                  [0.46, 0.31, 0.22], [0.30, 0.20, 0.14]])
_HAIR = np.array([[0.05, 0.04, 0.04], [0.16, 0.10, 0.07], [0.33, 0.21, 0.12], [0.72, 0.58, 0.35],
                  [0.50, 0.21, 0.09], [0.62, 0.62, 0.62]])
_IRIS = np.array([[0.30, 0.17, 0.08], [0.45, 0.33, 0.15], [0.30, 0.45, 0.65], [0.32, 0.48, 0.30],
                  [0.45, 0.48, 0.50]])


@dataclass(frozen=True)
class Appearance:
    """Procedural colours and lighting of one image (display-referred RGB in [0, 1])."""

    skin: np.ndarray          # [3]
    hair: np.ndarray          # [3]
    lips: np.ndarray          # [3]
    iris: np.ndarray          # [3]
    background: np.ndarray    # [2, 3] top and bottom colours of a vertical gradient
    hairline: float           # hairline height above the brows, FLAME metres (large = receding/bald)
    hair_back: float          # how far down the back of the head the hair reaches (FLAME metres below the brows)
    light_dir: np.ndarray     # [3] unit vector towards the light, FLAME/world frame
    ambient: float
    diffuse: float
    specular: float
    skin_noise: float         # per-vertex brightness jitter (pores, blotches)

    def as_array(self) -> np.ndarray:
        """A flat float32 record for meshes.npz (the layout is `APPEARANCE_FIELDS`)."""
        return np.concatenate([self.skin, self.hair, self.lips, self.iris, self.background.reshape(-1),
                               [self.hairline, self.hair_back], self.light_dir,
                               [self.ambient, self.diffuse, self.specular, self.skin_noise]]).astype(np.float32)


APPEARANCE_FIELDS = ("skin_rgb(3) hair_rgb(3) lips_rgb(3) iris_rgb(3) background_top_rgb(3) background_bottom_rgb(3) "
                     "hairline hair_back light_dir(3) ambient diffuse specular skin_noise")


def _palette(rng: np.random.Generator, palette: np.ndarray, jitter: float) -> np.ndarray:
    t = rng.uniform(0, len(palette) - 1)
    i = min(int(t), len(palette) - 2)
    colour = palette[i] * (1 - (t - i)) + palette[i + 1] * (t - i)
    return np.clip(colour * (1 + rng.normal(0, jitter, 3)), 0, 1)


def sample_appearance(rng: np.random.Generator) -> Appearance:
    skin = _palette(rng, _SKIN, 0.04)
    hair = _HAIR[rng.integers(len(_HAIR))] * (1 + rng.normal(0, 0.08, 3))
    lips = np.clip(skin * np.array([0.86, 0.58, 0.58]) * (1 + rng.normal(0, 0.06, 3)), 0, 1)
    iris = np.clip(_IRIS[rng.integers(len(_IRIS))] * (1 + rng.normal(0, 0.1, 3)), 0, 1)
    base = rng.uniform(0.1, 0.9, 3)
    background = np.clip(np.stack([base, base * rng.uniform(0.6, 1.2, 3)]), 0, 1)
    bald = rng.uniform() < 0.08
    hairline = 0.11 if bald else rng.uniform(0.025, 0.05)
    hair_back = -1.0 if bald else rng.uniform(0.02, 0.09)
    yaw, pitch = rng.normal(0, 0.5), rng.uniform(0.0, 0.6)
    light = np.array([math.sin(yaw) * math.cos(pitch), math.sin(pitch), math.cos(yaw) * math.cos(pitch)])
    return Appearance(skin=skin, hair=np.clip(hair, 0, 1), lips=lips, iris=iris, background=background,
                      hairline=float(hairline), hair_back=float(hair_back), light_dir=light,
                      ambient=float(rng.uniform(0.35, 0.6)), diffuse=float(rng.uniform(0.4, 0.75)),
                      specular=float(rng.uniform(0.0, 0.12)), skin_noise=float(rng.uniform(0.0, 0.04)))


# ------------------------------------------------------------------------------------------------ samplers

@dataclass(frozen=True)
class HeadSample:
    """One random head: its parameters, the generator's mesh input, and the painting frame.

    Colours are painted per pixel from `rest_vertices` (the same head with neutral expression, closed jaw and
    straight gaze, interpolated across each face), so they stay attached to the skin as it moves and do not depend
    on how fine the mesh is. `eye_weights` marks the eyeball vertices (left, right) of heads that have eyeballs."""

    params: Params                  # shape, expression, jaw [3], eyes [6] (float32 numpy)
    vertices: torch.Tensor          # [V, 3] FLAME units
    landmarks: torch.Tensor         # [68, 3]
    rest_vertices: torch.Tensor     # [V, 3]
    rest_landmarks: torch.Tensor    # [68, 3]
    eye_weights: torch.Tensor       # [V, 2]

    def mesh_input(self) -> torch.Tensor:
        return torch.cat([self.vertices, self.landmarks])


class HeadSampler:
    """Random parameters -> a head. Subclasses implement `random_params`, `evaluate`, `rest_frame` and `paint`.

    `name` identifies the head in dataset metadata; `topology` is what the generator needs (faces, UVs, face mask);
    its faces are drawn counter-clockwise seen from outside. `has_holes` says whether the mesh is open (a FLAME
    mouth), which needs the renderer's second (inner-surface) pass."""

    name: str = "head"
    topology: Topology
    n_vertices: int
    has_holes: bool = True

    @property
    def faces(self) -> torch.Tensor:
        return self.topology.faces

    def random_params(self, rng: np.random.Generator) -> Params:
        raise NotImplementedError

    def neutral_params(self) -> Params:
        """Mean shape, zero expression, closed jaw, eyes straight ahead."""
        return {k: np.zeros_like(v) for k, v in self.random_params(np.random.default_rng(0)).items()}

    def evaluate(self, params: Params) -> Tuple[torch.Tensor, torch.Tensor]:
        """-> vertices [V, 3], landmarks [68, 3] (FLAME units, canonical pose)."""
        raise NotImplementedError

    def rest_frame(self, params: Params) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> rest vertices [V, 3], rest landmarks [68, 3], eyeball weights [V, 2] (see HeadSample)."""
        rest = dict(params)
        for k in ("expression", "jaw", "eyes"):
            rest[k] = np.zeros_like(np.asarray(params[k]))
        v, lm = self.evaluate(rest)
        return v, lm, torch.zeros(v.shape[0], 2)

    def paint(self, head: "HeadSample", appearance: Appearance, points: torch.Tensor, eye_weights: torch.Tensor
              ) -> Dict[str, torch.Tensor]:
        """Region weights [N] in [0, 1] (hair, brows, lips, sclera, iris, pupil, mouth) of rest-frame points [N, 3]
        of this head (with their eyeball weights [N, 2])."""
        raise NotImplementedError

    def sample(self, rng: np.random.Generator, params: Optional[Params] = None) -> HeadSample:
        params = self.random_params(rng) if params is None else params
        vertices, landmarks = self.evaluate(params)
        rest_v, rest_lm, eye_w = self.rest_frame(params)
        return HeadSample(params=params, vertices=vertices, landmarks=landmarks, rest_vertices=rest_v,
                          rest_landmarks=rest_lm, eye_weights=eye_w)

    @staticmethod
    def _common_regions(points: torch.Tensor, lms: torch.Tensor, appearance: Appearance) -> Dict[str, torch.Tensor]:
        """Hair, brows and lips from the rest-frame position and landmarks (works for any FLAME-like head)."""
        x, y, z = points.unbind(-1)
        brow_y = float(lms[_BROWS, 1].mean())
        eye_y = float(lms[_LEFT_EYE_IMG + _RIGHT_EYE_IMG, 1].mean())
        face_z = float(lms[_OUTER_LIP, 2].mean())
        half_width = float(lms[16, 0] - lms[0, 0]) / 2
        # Hair: above the hairline on the front, and down the back of the head to `hair_back` below the brows.
        top = _sigmoid((y - (brow_y + appearance.hairline)) / 0.003)
        back = _sigmoid((face_z - 0.075 - z) / 0.008) * _sigmoid((y - (brow_y - appearance.hair_back)) / 0.004)
        side = _sigmoid((x.abs() - 0.85 * half_width) / 0.004) * _sigmoid((y - eye_y - 0.005) / 0.004)
        hair = torch.clamp(top + back + side * float(appearance.hair_back > 0), 0, 1)
        # Brows: a band along the brow landmarks.
        d_brow = torch.minimum(_distance_to_polyline(points[:, :2], lms[17:22, :2]),
                               _distance_to_polyline(points[:, :2], lms[22:27, :2]))
        brows = _sigmoid((0.004 - d_brow) / 0.001) * _sigmoid((z - (face_z - 0.04)) / 0.004)
        # Lips: inside the outer-lip polygon (front view), on the front of the face. Anything inside the polygon
        # but well behind the lip corners is the mouth cavity (a FLAME-style mouth bag), drawn dark.
        in_lips = _point_in_polygon(points[:, :2], lms[_OUTER_LIP, :2]).float()
        corner_z = float(lms[[48, 54], 2].min())
        lips = in_lips * _sigmoid((z - (corner_z - 0.006)) / 0.002)
        cavity = in_lips * _sigmoid(((corner_z - 0.006) - z) / 0.002)
        return {"hair": hair, "brows": brows * (1 - hair), "lips": lips, "mouth": cavity}


class StandInHeadSampler(HeadSampler):
    """The procedural ellipsoid head, deformed by FLAME-style parameters: shape [4] (width, height, depth, chin),
    expression [3] (smile, brow raise, pucker), jaw [3] (jaw[0] > 0 opens the mouth), eyes [6] (axis-angle per eye).
    It is closed: the mouth gap, the eyes and the gaze are painted."""

    name = "stand-in-ellipsoid"
    has_holes = False

    def __init__(self):
        head = ellipsoid_head()
        self._vertices = head.vertices
        self._landmarks = head.landmarks
        self.topology = head.topology
        self.n_vertices = int(head.vertices.shape[0])
        lm = self._landmarks
        self._mouth_y = float((lm[48, 1] + lm[54, 1]) / 2)
        self._mouth_half_width = float((lm[54, 0] - lm[48, 0]) / 2)

    def random_params(self, rng: np.random.Generator) -> Params:
        jaw_open = max(0.0, rng.normal(0.05, 0.12)) if rng.uniform() < 0.7 else 0.0
        yaw, pitch = rng.normal(0, 0.25), rng.normal(0, 0.15)
        eyes = gaze_axis_angle(yaw, pitch)
        return {"shape": rng.normal(0, 1, 4).astype(np.float32),
                "expression": rng.normal(0, 0.7, 3).astype(np.float32),
                "jaw": np.array([min(jaw_open, 0.45), 0.0, 0.0], dtype=np.float32),
                "eyes": np.concatenate([eyes, eyes]).astype(np.float32)}

    def _deform(self, points: torch.Tensor, params: Params) -> torch.Tensor:
        p = points.double().clone()
        shape = np.asarray(params["shape"], dtype=np.float64)
        expr = np.asarray(params["expression"], dtype=np.float64)
        centre = torch.tensor(CENTRE, dtype=torch.float64)
        # Identity: scale about the head centre, lengthen the chin.
        scale = torch.tensor([1 + 0.05 * shape[0], 1 + 0.05 * shape[1], 1 + 0.05 * shape[2]], dtype=torch.float64)
        p = (p - centre) * scale + centre
        chin = _sigmoid((self._mouth_y - 0.02 - p[:, 1]) / 0.01)
        p[:, 1] = p[:, 1] - 0.006 * shape[3] * chin
        lm = self._landmarks.double()
        # Expression: smile lifts and widens the mouth corners; brow raise; pucker pulls the lips in and forward.
        for k, sign in ((48, -1.0), (54, 1.0)):
            corner = lm[k]
            w = torch.exp(-((p[:, :2] - corner[:2]) ** 2).sum(1) / (2 * 0.012 ** 2))
            p[:, 1] += 0.006 * expr[0] * w
            p[:, 0] += sign * 0.004 * expr[0] * w
        brow = lm[_BROWS].mean(0)
        w = torch.exp(-((p[:, 1] - brow[1]) ** 2) / (2 * 0.012 ** 2)) * _sigmoid((p[:, 2] - 0.0) / 0.01)
        p[:, 1] += 0.005 * expr[1] * w
        mouth = lm[_OUTER_LIP].mean(0)
        w = torch.exp(-((p[:, :2] - mouth[:2]) ** 2).sum(1) / (2 * 0.015 ** 2))
        p[:, 0] -= 0.15 * expr[2] * w * (p[:, 0] - mouth[0])
        p[:, 2] += 0.004 * expr[2] * w
        # Jaw: rotate the lower face about a hinge behind the mouth, blended smoothly at the mouth line.
        angle = float(np.clip(params["jaw"][0], -0.1, 0.6))
        if angle != 0.0:
            hinge = torch.tensor([0.0, self._mouth_y + 0.01, CENTRE[2] - 0.02], dtype=torch.float64)
            w = _sigmoid((self._mouth_y - 0.001 - points.double()[:, 1]) / 0.002) * \
                _sigmoid((points.double()[:, 2] - (CENTRE[2] - 0.03)) / 0.01)
            a = angle * w
            rel = p - hinge
            cy, sy = torch.cos(a), torch.sin(a)
            y_new = rel[:, 1] * cy - rel[:, 2] * sy
            z_new = rel[:, 1] * sy + rel[:, 2] * cy
            p[:, 1] = y_new + hinge[1]
            p[:, 2] = z_new + hinge[2]
        return p.float()

    def evaluate(self, params: Params) -> Tuple[torch.Tensor, torch.Tensor]:
        return self._deform(self._vertices, params), self._deform(self._landmarks, params)

    def paint(self, head: "HeadSample", appearance: Appearance, points: torch.Tensor, eye_weights: torch.Tensor
              ) -> Dict[str, torch.Tensor]:
        params, rest_landmarks = head.params, head.rest_landmarks
        regions = self._common_regions(points, rest_landmarks, appearance)
        x, y, z = points.unbind(-1)
        front = _sigmoid(z / 0.004)
        # Painted eyes: an almond of sclera between the eye corners, an iris and pupil shifted by the gaze.
        sclera = torch.zeros_like(x)
        iris = torch.zeros_like(x)
        pupil = torch.zeros_like(x)
        eyes = np.asarray(params["eyes"], dtype=np.float64)
        for idx, pose in ((_LEFT_EYE_IMG, eyes[:3]), (_RIGHT_EYE_IMG, eyes[3:])):
            pts = rest_landmarks[idx]
            cx, cy = float(pts[:, 0].mean()), float(pts[:, 1].mean())
            half_w = float(pts[:, 0].max() - pts[:, 0].min()) / 2
            half_h = half_w * 0.42
            inside = ((x - cx) / half_w) ** 2 + ((y - cy) / half_h) ** 2
            sclera = torch.maximum(sclera, _sigmoid((1 - inside) / 0.06) * front)
            d = eye_direction(pose)
            ix, iy = cx + 0.55 * half_w * float(d[0]), cy + 0.55 * half_w * float(d[1])
            r = torch.sqrt((x - ix) ** 2 + (y - iy) ** 2)
            iris = torch.maximum(iris, _sigmoid((0.42 * half_w - r) / 0.0004) * front)
            pupil = torch.maximum(pupil, _sigmoid((0.17 * half_w - r) / 0.0003) * front)
        # Painted mouth gap: opens between the lips as the jaw rotates.
        angle = max(0.0, float(params["jaw"][0]))
        mouth_x = float(rest_landmarks[_OUTER_LIP, 0].mean())
        gap = 0.03 * angle
        if gap > 1e-4:
            inside = ((x - mouth_x) / (0.85 * self._mouth_half_width)) ** 2 + ((y - self._mouth_y) / gap) ** 2
            mouth = _sigmoid((1 - inside) / 0.08) * front
        else:
            mouth = torch.zeros_like(x)
        regions.update(sclera=sclera, iris=iris * sclera, pupil=pupil * sclera, mouth=torch.maximum(mouth,
                                                                                                  regions["mouth"]))
        return regions


class FlameHeadSampler(HeadSampler):
    """A FLAME-format model (core.flame.FlameModel): random shape, expression, jaw and gaze. The eyes are the
    eyeball vertices (those skinned to the eye joints); the iris is painted round each eyeball's rest-pose line of
    sight, so the eye pose turns it."""

    has_holes = True

    def __init__(self, data, *, name: Optional[str] = None, n_shape: int = 50, n_expr: int = 30,
                 shape_std: float = 0.8, expr_std: float = 0.7):
        from ..flame import FlameModel

        data = _model_data(data)
        self.model = FlameModel(data).eval()
        self.name = name or f"flame:{data.name}"
        self.n_vertices = int(data.n_vertices)
        self.n_shape = min(n_shape, self.model.n_shape)
        self.n_expr = min(n_expr, self.model.n_expr)
        self.shape_std = shape_std
        self.expr_std = expr_std
        if getattr(data, "uvs", None) is None or getattr(data, "uv_faces", None) is None:
            raise InputError(f"The FLAME-format head {self.name} has no UV layout (uvs, uv_faces); the generator "
                             "needs one. Use the built-in head or a model converted with its head_template.obj.")
        mask = data.uv_face_mask if getattr(data, "uv_face_mask", None) is not None else np.ones((256, 256))
        self.topology = Topology(faces=torch.as_tensor(np.asarray(data.faces), dtype=torch.long),
                                 uv_faces=torch.as_tensor(np.asarray(data.uv_faces), dtype=torch.long),
                                 uvs=torch.as_tensor(np.asarray(data.uvs), dtype=torch.float32),
                                 uv_face_mask=torch.as_tensor(np.asarray(mask), dtype=torch.float32))
        self.has_holes = not mesh_is_closed(self.topology.faces)
        weights = torch.as_tensor(np.asarray(data.weights), dtype=torch.float32)
        self._eye_weights = (weights[:, 3:5] > 0.5).float()     # joints 3, 4: left eye, right eye

    def random_params(self, rng: np.random.Generator) -> Params:
        jaw_open = max(0.0, rng.normal(0.04, 0.1)) if rng.uniform() < 0.7 else 0.0
        yaw, pitch = rng.normal(0, 0.25), rng.normal(0, 0.15)
        eyes = gaze_axis_angle(yaw, pitch)
        return {"shape": (rng.normal(0, self.shape_std, self.n_shape)).astype(np.float32),
                "expression": (rng.normal(0, self.expr_std, self.n_expr)).astype(np.float32),
                "jaw": np.array([min(jaw_open, 0.4), rng.normal(0, 0.01), 0.0], dtype=np.float32),
                "eyes": np.concatenate([eyes, eyes]).astype(np.float32)}

    def evaluate(self, params: Params) -> Tuple[torch.Tensor, torch.Tensor]:
        from ..flame import FlameParams

        p = FlameParams(shape=torch.as_tensor(params["shape"])[None],
                        expression=torch.as_tensor(params["expression"])[None],
                        jaw=torch.as_tensor(params["jaw"])[None], eyes=torch.as_tensor(params["eyes"])[None])
        with torch.no_grad():
            out = self.model(p)
        return out.vertices[0].float(), out.landmarks[0].float()

    def rest_frame(self, params: Params) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        v, lm, _ = super().rest_frame(params)
        return v, lm, self._eye_weights

    def paint(self, head: "HeadSample", appearance: Appearance, points: torch.Tensor, eye_weights: torch.Tensor
              ) -> Dict[str, torch.Tensor]:
        regions = self._common_regions(points, head.rest_landmarks, appearance)
        n = points.shape[0]
        sclera, iris, pupil = torch.zeros(n), torch.zeros(n), torch.zeros(n)
        for k in range(2):
            w = eye_weights[:, k]
            members = self._eye_weights[:, k] > 0.5
            if not bool((w > 0.5).any()) or not bool(members.any()):
                continue
            centre = head.rest_vertices[members].mean(0)        # this head's eyeball centre (shape moves it)
            direction = F.normalize(points - centre, dim=-1)
            cos = direction[:, 2]                       # eyes look along +z at rest; the eye pose turns the paint
            sclera = torch.maximum(sclera, w)
            iris = torch.maximum(iris, w * _sigmoid((cos - math.cos(math.radians(38))) / 0.015))
            pupil = torch.maximum(pupil, w * _sigmoid((cos - math.cos(math.radians(16))) / 0.015))
        for key in ("hair", "brows", "lips", "mouth"):
            regions[key] = regions[key] * (1 - sclera)
        regions.update(sclera=sclera, iris=iris, pupil=pupil)
        return regions


def _model_data(data):
    """FlameModelData from a FlameModelData or the built-in head's dict of arrays."""
    from ..flame import FlameModelData

    if isinstance(data, FlameModelData):
        return data
    names = {f.name for f in dataclasses.fields(FlameModelData)} - {"name", "source"}
    name = str(data["name"]) if "name" in data else "FLAME-format head"
    return FlameModelData(**{k: np.array(v) for k, v in data.items() if k in names}, name=name,
                          source=f"the head {name}")


def builtin_head_sampler(path: Optional[PathLike] = None) -> "FlameHeadSampler":
    """The built-in FLAME-format head (addon_assets/builtin_head.npz, or `path`)."""
    from ..flame.builtin_head import load_builtin_head_data

    return FlameHeadSampler(load_builtin_head_data(path), name="builtin-flame-head", expr_std=0.35)


def default_head_sampler() -> HeadSampler:
    """The built-in FLAME-format head when it is installed (addon_assets/builtin_head.npz), else the stand-in."""
    try:
        from ..flame.builtin_head import BUILTIN_HEAD_PATH
    except ImportError:
        return StandInHeadSampler()
    if not BUILTIN_HEAD_PATH.is_file():
        return StandInHeadSampler()
    return builtin_head_sampler()


def head_sampler_by_name(name: str) -> HeadSampler:
    """'auto' (default_head_sampler), 'standin' or 'builtin'."""
    if name == "auto":
        return default_head_sampler()
    if name == "standin":
        return StandInHeadSampler()
    if name == "builtin":
        return builtin_head_sampler()
    raise InputError(f"Unknown head {name!r}; use auto, builtin or standin.")


# ------------------------------------------------------------------------------------------------ cameras

@dataclass(frozen=True)
class CameraDistribution:
    """FFHQ-like poses (EG3D convention): a camera on a sphere of `radius` about the origin looking at `pivot`,
    yaw and pitch offsets from the frontal view drawn from clipped normals (radians)."""

    yaw_std: float = 0.3
    yaw_max: float = 0.9
    pitch_std: float = 0.12
    pitch_max: float = 0.4
    radius: float = FFHQ_RADIUS
    pivot: Tuple[float, float, float] = FFHQ_PIVOT
    focal: float = FFHQ_FOCAL

    def sample(self, rng: np.random.Generator) -> Tuple[float, float]:
        yaw = float(np.clip(rng.normal(0, self.yaw_std), -self.yaw_max, self.yaw_max))
        pitch = float(np.clip(rng.normal(0, self.pitch_std), -self.pitch_max, self.pitch_max))
        return yaw, pitch

    def label(self, yaw: float, pitch: float) -> torch.Tensor:
        intrinsics = torch.tensor([[self.focal, 0.0, 0.5], [0.0, self.focal, 0.5], [0.0, 0.0, 1.0]])
        return camera_label(look_at_cam2world(yaw, pitch, self.radius, self.pivot), intrinsics)


# ------------------------------------------------------------------------------------------------ rendering

def _solid_noise(points: torch.Tensor, rng: np.random.Generator, octaves: int = 6, base: float = 60.0) -> torch.Tensor:
    """A smooth 3-D noise field [N] in about [-1, 1] (a sum of random plane waves), fixed to the skin so it looks
    the same from every camera."""
    dirs = rng.normal(0, 1, (octaves, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    freqs = base * 2.0 ** rng.uniform(0, 2.5, octaves)
    phases = rng.uniform(0, 2 * math.pi, octaves)
    w = torch.as_tensor((dirs * freqs[:, None]).astype(np.float32))
    waves = torch.sin(points @ w.t() + torch.as_tensor(phases.astype(np.float32)))
    return waves.mean(1) * math.sqrt(2.0)


def surface_colours(head: HeadSample, sampler: HeadSampler, appearance: Appearance, points: torch.Tensor,
                    eye_weights: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Albedo [N, 3] of rest-frame surface points."""
    r = sampler.paint(head, appearance, points, eye_weights)
    t = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float32))  # noqa: E731
    skin_noise = _solid_noise(points, rng)[:, None] * appearance.skin_noise * 2
    hair_noise = _solid_noise(points * torch.tensor([1.0, 0.15, 1.0]), rng, base=400.0)[:, None] * 0.15
    colour = t(appearance.skin)[None] * (1 + skin_noise)
    colour = torch.lerp(colour, t(appearance.lips)[None].expand_as(colour), r["lips"][:, None])
    brow_colour = t(appearance.hair) * 0.75 + t(appearance.skin) * 0.1
    colour = torch.lerp(colour, brow_colour[None].expand_as(colour), 0.8 * r["brows"][:, None])
    colour = torch.lerp(colour, t(appearance.hair)[None] * (1 + hair_noise), r["hair"][:, None])
    colour = torch.lerp(colour, t([0.93, 0.92, 0.9])[None].expand_as(colour), r["sclera"][:, None])
    colour = torch.lerp(colour, t(appearance.iris)[None].expand_as(colour), r["iris"][:, None])
    colour = torch.lerp(colour, t([0.03, 0.03, 0.03])[None].expand_as(colour), r["pupil"][:, None])
    colour = torch.lerp(colour, t([0.18, 0.05, 0.05])[None].expand_as(colour), r["mouth"][:, None])
    return colour.clamp(0, 1)


def render_head(head: HeadSample, sampler: HeadSampler, c: torch.Tensor, appearance: Appearance, resolution: int,
                rng: np.random.Generator, supersample: int = 2) -> np.ndarray:
    """Paint, shade and rasterize one head from camera label c [25] -> uint8 [R, R, 3]."""
    faces = sampler.faces
    normals = vertex_normals(head.vertices[None], faces)[0]
    attrs = torch.cat([head.rest_vertices, normals, head.eye_weights], dim=-1)[None]
    size = resolution * supersample
    frags = rasterize_mesh(head.vertices[None], faces, c[None], size, attrs, inner_pass=sampler.has_holes)
    cov = frags.coverage[0, 0] > 0
    pix = frags.attributes[0].permute(1, 2, 0)[cov]                  # [P, 8]
    albedo = surface_colours(head, sampler, appearance, pix[:, :3], pix[:, 6:8], rng)
    n = F.normalize(pix[:, 3:6], dim=-1, eps=1e-6)
    light = torch.as_tensor(appearance.light_dir, dtype=torch.float32)
    lambert = (n @ light).clamp_min(0)[:, None]
    # Specular: Blinn-Phong with the half vector between the light and the direction to the camera.
    cam_dir = F.normalize(c[:16].reshape(4, 4)[:3, 3].float() - torch.tensor(FFHQ_PIVOT), dim=0)
    half = F.normalize(light + cam_dir, dim=0)
    spec = (n @ half).clamp_min(0)[:, None] ** 24 * appearance.specular
    shaded = albedo * (appearance.ambient + appearance.diffuse * lambert) + spec
    rows = torch.linspace(0, 1, size).view(size, 1, 1)
    bg = torch.as_tensor(appearance.background, dtype=torch.float32)
    image = (bg[0] * (1 - rows) + bg[1] * rows).expand(size, size, 3).clone()
    image[cov] = shaded
    cavity = torch.tensor([0.10, 0.03, 0.03]) * (0.5 + 0.5 * appearance.ambient)
    image[frags.interior[0, 0] > 0] = cavity
    image = image.permute(2, 0, 1)
    if supersample > 1:
        image = F.avg_pool2d(image[None], supersample)[0]
    return (image.clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(1, 2, 0).numpy()


# ------------------------------------------------------------------------------------------------ writing

def write_npz_deterministic(path: PathLike, arrays: Dict[str, np.ndarray]) -> None:
    """Like np.savez, but byte-identical for identical arrays (fixed zip timestamps) and written atomically."""

    def write(fh) -> None:
        with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_STORED) as zf:
            for name, value in arrays.items():
                buf = io.BytesIO()
                np.lib.format.write_array(buf, np.asarray(value), allow_pickle=False)
                info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                info.external_attr = 0o644 << 16
                zf.writestr(info, buf.getvalue())

    atomic_write(path, write)


def _write_text(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def image_name(index: int) -> str:
    return f"img{index:08d}.png"


def synthesize(index: int, seed: int, sampler: HeadSampler, resolution: int,
               cameras: CameraDistribution = CameraDistribution(), supersample: int = 2
               ) -> Tuple[np.ndarray, torch.Tensor, HeadSample, Tuple[float, float], Appearance]:
    """Image `index` of the synthetic set with this seed: (pixels, label [25], head, (yaw, pitch), appearance)."""
    rng = np.random.default_rng([int(seed), int(index)])
    appearance = sample_appearance(rng)
    yaw, pitch = cameras.sample(rng)
    head = sampler.sample(rng)
    label = cameras.label(yaw, pitch)
    pixels = render_head(head, sampler, label, appearance, resolution, rng, supersample)
    return pixels, label, head, (yaw, pitch), appearance


def generate_dataset(outdir: PathLike, *, count: int, resolution: int = 64, seed: int = 0,
                     sampler: Optional[HeadSampler] = None, cameras: CameraDistribution = CameraDistribution(),
                     supersample: int = 2, progress: Optional[Callable[[int], None]] = None) -> Path:
    """Write a synthetic dataset of `count` images to `outdir` (see the module docstring). Returns the folder."""
    from ..io.images import ensure_writable_dir, write_png

    if count < 1:
        raise InputError(f"count must be at least 1, got {count}.")
    if resolution < 8 or resolution & (resolution - 1):
        raise InputError(f"resolution must be a power of two >= 8 (the generator's image sizes), got {resolution}.")
    sampler = sampler or default_head_sampler()
    root = ensure_writable_dir(outdir)
    images = ensure_writable_dir(root / "images")
    labels, names, meshes = [], [], []
    params: Dict[str, list] = {}
    poses, looks = [], []
    for i in range(count):
        pixels, label, head, pose, appearance = synthesize(i, seed, sampler, resolution, cameras, supersample)
        name = image_name(i)
        write_png(images / name, pixels)
        labels.append([name, [float(x) for x in label.tolist()]])
        names.append(name)
        meshes.append(head.mesh_input().numpy().astype(np.float32))
        for k, v in head.params.items():
            params.setdefault(k, []).append(np.asarray(v, dtype=np.float32))
        poses.append(pose)
        looks.append(appearance.as_array())
        if progress is not None:
            progress(i + 1)
    _write_text(root / "dataset.json", json.dumps({"labels": labels}, indent=None) + "\n")
    arrays = {"names": np.array(names), "v": np.stack(meshes)}
    arrays.update({k: np.stack(v) for k, v in params.items()})
    arrays["camera_yaw_pitch"] = np.asarray(poses, dtype=np.float32)
    arrays["appearance"] = np.stack(looks)
    write_npz_deterministic(root / "meshes.npz", arrays)
    topo = sampler.topology
    write_npz_deterministic(root / "topology.npz", {
        "faces": topo.faces.numpy().astype(np.int64), "uv_faces": topo.uv_faces.numpy().astype(np.int64),
        "uvs": topo.uvs.numpy().astype(np.float32), "uv_face_mask": topo.uv_face_mask.numpy().astype(np.float32),
        "n_vertices": np.array(sampler.n_vertices, dtype=np.int64)})
    info = {"generator": "next3d-blender synthetic heads", "version": SYNTHETIC_VERSION, "head": sampler.name,
            "seed": int(seed), "count": int(count), "resolution": int(resolution), "supersample": int(supersample),
            "cameras": {"yaw_std": cameras.yaw_std, "yaw_max": cameras.yaw_max, "pitch_std": cameras.pitch_std,
                        "pitch_max": cameras.pitch_max, "radius": cameras.radius, "pivot": list(cameras.pivot),
                        "focal": cameras.focal},
            "appearance_fields": APPEARANCE_FIELDS}
    _write_text(root / "synthetic.json", json.dumps(info, indent=2) + "\n")
    return root
