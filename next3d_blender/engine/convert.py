"""Blender's conventions <-> the engine's, as plain numbers and arrays: cameras, rotations, image pixel order.

Camera conventions (docs/camera.md#blender-cameras, checked against
`bpy_extras.object_utils.world_to_camera_view` in tests/blender/test_convert.py):

* A Blender camera looks down its local -Z with +Y up. OpenCV cam2world = matrix_world (scale removed) @
  diag(1, -1, -1, 1): x right, y down, z forward.
* Pixel intrinsics: f = lens / sensor * fit, where the fit dimension and sensor are chosen by `sensor_fit`
  (AUTO: the larger side with sensor_width). cx = W/2 - shift_x * fit, cy = H/2 + shift_y * fit (y down).
* The generator renders a square image with intrinsics normalized by its side. A W x H render is the centre crop
  of a square of side S = max(W, H) (`square_framing`): the generator's image is resized to S and cropped.
* The generator's world is FLAME space (metres, y up, face towards +z) scaled by core.flame.conversions. A rig keeps
  its mesh data in FLAME space; the head's rigid motion in Blender's world (object transform, root and neck bones)
  is folded into the camera: cam2world_flame = inverse(head_to_world) @ cam2world (`camera_in_head_space`).

No bpy here: reading the camera from the scene is blender/scene.py's (`camera_params`), making images and meshes
blender/datablocks.py's. Rendering a head through any scene camera (a virtual training camera and a 2-D transform
into the scene's frame) is framing.py's (docs/camera.md#any-scene-camera).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..core.errors import InputError

CV_FROM_BLENDER = np.diag([1.0, -1.0, -1.0, 1.0])   # Blender camera axes -> OpenCV camera axes (its own inverse)
SENSOR_FITS = ("AUTO", "HORIZONTAL", "VERTICAL")


# ------------------------------------------------------------------------------------------------ cameras

@dataclass(frozen=True)
class CameraParams:
    """What the projection of a perspective Blender camera depends on, as plain numbers."""

    lens: float                 # mm
    sensor_width: float         # mm
    sensor_height: float        # mm
    sensor_fit: str             # AUTO | HORIZONTAL | VERTICAL
    shift_x: float              # fraction of the fit dimension
    shift_y: float
    width: int                  # render pixels (after resolution_percentage)
    height: int
    pixel_aspect_x: float = 1.0
    pixel_aspect_y: float = 1.0


def intrinsics_pixels(p: CameraParams) -> np.ndarray:
    """3x3 pixel intrinsics (OpenCV: y down, origin at the top-left corner of the top-left pixel)."""
    if p.sensor_fit not in SENSOR_FITS:
        raise InputError(f"Unknown sensor fit {p.sensor_fit!r}; expected one of {SENSOR_FITS}.")
    w, h = float(p.width), float(p.height)
    ax, ay = float(p.pixel_aspect_x), float(p.pixel_aspect_y)
    ycor = ay / ax                        # Blender's viewplane works in x-pixel units; y pixels are ycor of those
    fit = p.sensor_fit
    if fit == "AUTO":
        fit = "HORIZONTAL" if w * ax >= h * ay else "VERTICAL"
        sensor = p.sensor_width
    else:
        sensor = p.sensor_width if fit == "HORIZONTAL" else p.sensor_height
    viewfac = w if fit == "HORIZONTAL" else ycor * h
    fx = p.lens / sensor * viewfac
    fy = fx / ycor
    cx = w / 2.0 - p.shift_x * viewfac
    cy = h / 2.0 + p.shift_y * viewfac / ycor
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


@dataclass(frozen=True)
class SquareFraming:
    """A W x H render as the centre crop of a square of side `side` pixels."""

    intrinsics: np.ndarray   # 3x3 intrinsics normalized by the square's side (what the generator takes)
    side: int
    x0: int                  # crop origin inside the square
    y0: int
    width: int
    height: int


def square_framing(k_px: np.ndarray, width: int, height: int) -> SquareFraming:
    side = max(int(width), int(height))
    x0, y0 = (side - int(width)) // 2, (side - int(height)) // 2
    k = np.array(k_px, dtype=np.float64).copy()
    k[0, 2] += x0
    k[1, 2] += y0
    k[:2] /= side
    return SquareFraming(intrinsics=k, side=side, x0=x0, y0=y0, width=int(width), height=int(height))


def without_scale(m: np.ndarray) -> np.ndarray:
    """A 4x4 affine matrix with its 3x3 columns normalized (object scale removed)."""
    m = np.array(m, dtype=np.float64).copy()
    norms = np.linalg.norm(m[:3, :3], axis=0)
    if np.any(norms < 1e-12):
        raise InputError("A transform has zero scale on an axis; give the object a non-zero scale.")
    m[:3, :3] /= norms
    return m


def opencv_cam2world(camera_matrix_world: np.ndarray) -> np.ndarray:
    """Blender camera matrix_world -> OpenCV cam2world (x right, y down, z forward), scale removed."""
    return without_scale(camera_matrix_world) @ CV_FROM_BLENDER


def camera_in_head_space(cam2world_cv: np.ndarray, head_to_world: np.ndarray) -> np.ndarray:
    """The camera as seen from the head's own (FLAME) frame: inverse(head_to_world) @ cam2world, rotation columns
    re-normalized (a scaled head only changes the camera's distance, in FLAME units)."""
    m = np.linalg.inv(np.asarray(head_to_world, dtype=np.float64)) @ np.asarray(cam2world_cv, dtype=np.float64)
    rot = m[:3, :3]
    u, _, vt = np.linalg.svd(rot)
    m[:3, :3] = u @ vt
    return m


def project_points(points_world: np.ndarray, cam2world_cv: np.ndarray, k_px: np.ndarray) -> np.ndarray:
    """Pixel coordinates [N, 2] (x right, y down) of world points seen by an OpenCV camera."""
    w2c = np.linalg.inv(cam2world_cv)
    p = np.asarray(points_world, dtype=np.float64) @ w2c[:3, :3].T + w2c[:3, 3]
    uvw = p @ np.asarray(k_px).T
    return uvw[:, :2] / uvw[:, 2:3]


# ------------------------------------------------------------------------------------------------ matrices, rotations

def matrix_to_numpy(m) -> np.ndarray:
    """A mathutils.Matrix (or nested sequence) -> float64 numpy array."""
    return np.array([list(row) for row in m], dtype=np.float64)


def matrix_to_axis_angle(rot: np.ndarray) -> np.ndarray:
    """3x3 rotation -> axis-angle vector (radians), stable near 0 and pi."""
    r = np.asarray(rot, dtype=np.float64)
    u, _, vt = np.linalg.svd(r)
    r = u @ vt
    cos = np.clip((np.trace(r) - 1.0) / 2.0, -1.0, 1.0)
    angle = math.acos(cos)
    if angle < 1e-8:
        return np.array([r[2, 1] - r[1, 2], r[0, 2] - r[2, 0], r[1, 0] - r[0, 1]]) / 2.0
    if math.pi - angle < 1e-4:
        # Near pi: the axis is the eigenvector of R with eigenvalue 1 (the skew part vanishes).
        w, vecs = np.linalg.eigh((r + r.T) / 2.0)
        axis = vecs[:, np.argmax(w)]
        skew = np.array([r[2, 1] - r[1, 2], r[0, 2] - r[2, 0], r[1, 0] - r[0, 1]])
        if skew @ axis < 0:
            axis = -axis
        return axis * angle
    axis = np.array([r[2, 1] - r[1, 2], r[0, 2] - r[2, 0], r[1, 0] - r[0, 1]]) / (2.0 * math.sin(angle))
    return axis * angle


def axis_angle_to_matrix(aa: Sequence[float]) -> np.ndarray:
    aa = np.asarray(aa, dtype=np.float64)
    angle = float(np.linalg.norm(aa))
    if angle < 1e-12:
        return np.eye(3)
    x, y, z = aa / angle
    k = np.array([[0, -z, y], [z, 0, -x], [-y, x, 0]])
    return np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * (k @ k)


def bone_rotation_in_parent_axes(rest_matrix: np.ndarray, basis_matrix: np.ndarray) -> np.ndarray:
    """A pose bone's rotation expressed in armature axes: B R B^T, where B is the bone's rest orientation
    (bone.matrix_local) and R its pose rotation (pose_bone.matrix_basis). For bones whose rest orientation is the
    identity (the rigs this add-on builds) this is R itself."""
    b = without_scale(rest_matrix)[:3, :3]
    r = without_scale(basis_matrix)[:3, :3]
    return b @ r @ b.T


# ------------------------------------------------------------------------------------------------ images

def pixels_to_blender(pixels: np.ndarray) -> np.ndarray:
    """[H, W, 3|4] uint8 (row 0 at the top) -> flat float32 RGBA, rows bottom to top, as Image.pixels stores."""
    px = np.asarray(pixels)
    if px.ndim != 3 or px.shape[2] not in (3, 4):
        raise InputError(f"An image must be [H, W, 3] or [H, W, 4]; got {list(px.shape)}.")
    rgba = np.ones((px.shape[0], px.shape[1], 4), dtype=np.float32)
    rgba[..., :px.shape[2]] = px.astype(np.float32) / (255.0 if px.dtype == np.uint8 else 1.0)
    return np.ascontiguousarray(rgba[::-1]).reshape(-1)


def blender_to_pixels(flat: np.ndarray, width: int, height: int) -> np.ndarray:
    """Flat RGBA floats (rows bottom to top) -> [H, W, 4] uint8 with row 0 at the top."""
    rgba = np.asarray(flat, dtype=np.float32).reshape(height, width, 4)[::-1]
    return np.clip(np.round(rgba * 255.0), 0, 255).astype(np.uint8)
