"""Any scene camera through a generator that only knows FFHQ's cameras (docs/camera.md#any-scene-camera).

The generator was trained on cameras 2.7 units from its world origin, looking at the head pivot with the normalized
focal length 4.2647, upright. A Blender camera can be anything: 85 mm at 0.86 m, the factory camera 11 m away, a
rolled or shifted lens. So each head is rendered by a *virtual camera*: the training camera on the line from the
head pivot to the scene camera's centre (so it sees the same side of the head), upright in the head's frame. The
generator's square image is then put into the scene camera's frame by a 2-D transform (`VirtualView.to_scene`, a
similarity fitted on the head's own vertices, with the scene's pixel aspect): it carries the head's position,
size, roll, lens shift, aspect and crop. What a similarity cannot carry is the difference in perspective strength
between the scene camera's distance and the training distance (a close-up's larger nose); that stays as the
generator renders it.

Spaces: "head space" is the rig's FLAME frame (metres, y up, z out of the face), where the job arrays keep the
vertices and the cameras (convert.camera_in_head_space); the generator's world is that space placed like the mesh,
world = scale * (p + offset) (core.flame.conversions.Placement, 2.5 (x, y + 0.01, z) officially).

numpy only: Blender's own Python imports this (the render engine), and it has no torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Tuple

import numpy as np

from ..core.errors import InputError
from . import convert
from .matte import FEATHER, WIDEN, backdrop_key, composite_by_depth, head_matte  # noqa: F401 - re-exported

# The official FFHQ-512 values (core.rendering.camera FFHQ_RADIUS / FFHQ_PIVOT, core.training.synthetic.FFHQ_FOCAL,
# core.flame.conversions.OFFICIAL_PLACEMENT); tests/core/test_framing.py checks they agree with core's.
FFHQ_RADIUS = 2.7                  # camera distance from the world origin
FFHQ_PIVOT = (0.0, 0.0, 0.2)       # the point the cameras look at (world)
FFHQ_FOCAL = 4.2647                # normalized by the image side
OFFICIAL_ORTH_SCALE = 5.0
OFFICIAL_ORTH_SHIFT = (0.0, -0.01, -0.01)
OFFICIAL_BOX_WARP = 1.0
DEFAULT_SIDE = 512
# Viewing directions the FFHQ model has seen (degrees from the front): FFHQ is mostly frontal faces; its camera
# labels reach about +-45 degrees of yaw in useful numbers (profiles are rare) and a few tens of degrees of
# elevation. Beyond this the generator extrapolates (the back of the head, the top of the skull).
TRAINED_YAW_DEG = 45.0
TRAINED_PITCH_DEG = 30.0
# A vertex closer than this to the scene camera's image plane (head units, metres for a rig at scale 1) means the
# camera is inside the head or touching it.
NEAR = 1e-3
# The generator's square ends where the FFHQ crop ends: alpha fades out over this fraction of its side at the edge.
SQUARE_FEATHER = 0.04
# The rig's own silhouette, which the backdrop key never cuts, is feathered over this fraction of the head's size.
CORE_FEATHER = 0.02


class HeadOutOfView(InputError):
    """The whole head is behind the scene camera: nothing of it can be rendered (a shot with several heads can skip
    this one)."""


@dataclass(frozen=True)
class TrainingCamera:
    """The generator's training camera and where its world puts head-space points."""

    radius: float = FFHQ_RADIUS
    pivot: Tuple[float, float, float] = FFHQ_PIVOT      # world
    focal: float = FFHQ_FOCAL                           # normalized
    scale: float = 0.5 * OFFICIAL_BOX_WARP * OFFICIAL_ORTH_SCALE
    offset: Tuple[float, float, float] = (OFFICIAL_ORTH_SHIFT[0], -OFFICIAL_ORTH_SHIFT[1], 0.0)

    @classmethod
    def of(cls, config: Any = None) -> "TrainingCamera":
        """From a generator or its Next3DConfig (avg_camera_radius, avg_camera_pivot, orth_scale, orth_shift,
        rendering.box_warp), or the official FFHQ values for None."""
        if config is None:
            return cls()
        config = getattr(config, "config", config)
        try:
            sx, sy, _ = (float(x) for x in config.orth_shift)
            return cls(radius=float(config.avg_camera_radius),
                       pivot=tuple(float(x) for x in config.avg_camera_pivot),
                       scale=0.5 * float(config.rendering.box_warp) * float(config.orth_scale), offset=(sx, -sy, 0.0))
        except (AttributeError, TypeError, ValueError):
            raise InputError(f"{type(config).__name__} is not a generator config; the virtual camera needs its "
                             "avg_camera_radius, avg_camera_pivot, orth_scale, orth_shift and rendering.box_warp.") \
                from None

    def to_world(self, p: np.ndarray) -> np.ndarray:
        return (np.asarray(p, dtype=np.float64) + np.asarray(self.offset)) * self.scale

    def to_head(self, p: np.ndarray) -> np.ndarray:
        return np.asarray(p, dtype=np.float64) / self.scale - np.asarray(self.offset)

    @property
    def pivot_head(self) -> np.ndarray:
        return self.to_head(self.pivot)


@dataclass(frozen=True)
class VirtualView:
    """A head rendered by the generator's virtual camera, and where that image goes in the scene camera's frame."""

    cam2world: np.ndarray     # (4, 4) float32 OpenCV cam2world in head space (an arrays["cam2world"] row)
    intrinsics: np.ndarray    # (3, 3) float32 intrinsics normalized by the image side (an arrays["intrinsics"] row,
    #                           what camera_labels takes): focal 4.2647, principal point (0.5, 0.5); times `side`
    #                           for pixels (`pixel_intrinsics`)
    side: int                 # the generator image size to_scene refers to
    to_scene: np.ndarray      # (2, 3) float64: generator pixel (x right, y down, centres at +0.5) -> scene pixel
    depth_scale: float        # scene depth = depth_scale * generator z depth + depth_offset on the central ray (the
    depth_offset: float       #   whole image: `scene_depth`, `depth_to_scene`)
    yaw_pitch: tuple          # degrees: yaw > 0 camera towards the subject's left (+x), pitch > 0 camera above
    warning: str              # "" unless the direction is outside TRAINED_YAW_DEG / TRAINED_PITCH_DEG
    residual_px: float = 0.0  # RMS of the similarity fit on the head's camera-facing vertices, scene pixels
    scene_size: Tuple[int, int] = (0, 0)   # the scene render (width, height) to_scene refers to
    scene_axis: Tuple[float, float, float] = (0.0, 0.0, 1.0)   # the scene camera's view axis, virtual camera axes
    pivot_depth: float = 0.0  # the head pivot's generator z depth (world units): the virtual camera's distance to it
    centre_depth: float = 0.0  # the generator z depth (world units) of the centre of the head's vertices' box

    @property
    def pixel_intrinsics(self) -> np.ndarray:
        k = np.array(self.intrinsics, dtype=np.float64)
        k[:2] *= self.side
        return k

    @property
    def scale(self) -> float:
        """Scene pixels per generator pixel (geometric mean of the two axes)."""
        return float(math.sqrt(abs(np.linalg.det(self.to_scene[:, :2]))))

    def scene_depth(self, z: np.ndarray, xn: np.ndarray, yn: np.ndarray) -> np.ndarray:
        """Scene depth (Blender units along the scene camera's axis) of the point the generator put at z depth `z`
        (world units along the virtual camera's axis) on the ray of normalized image coordinates (xn, yn) =
        ((u - cx) / fx, (v - cy) / fy): exact for the head's own geometry."""
        a = np.asarray(self.scene_axis, dtype=np.float64) * (self.depth_scale / self.scene_axis[2])
        return self.depth_offset + np.asarray(z, dtype=np.float64) * (a[0] * xn + a[1] * yn + a[2])

    def generator_to_scene(self, xy: np.ndarray) -> np.ndarray:
        xy = np.asarray(xy, dtype=np.float64)
        return xy @ self.to_scene[:, :2].T + self.to_scene[:, 2]


def _check_matrix(name: str, m: Any, shape: Tuple[int, ...]) -> np.ndarray:
    a = np.asarray(m, dtype=np.float64)
    if a.shape != shape:
        raise InputError(f"{name} must have shape {list(shape)}; got {list(a.shape)}.")
    if not np.isfinite(a).all():
        raise InputError(f"{name} has non-finite values; check the camera and the rig's keyframes.")
    return a


def _check_points(name: str, points: Any) -> np.ndarray:
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 3 or len(p) < 3:
        raise InputError(f"{name} must be [N, 3] points with N >= 3; got {list(p.shape)}.")
    if not np.isfinite(p).all():
        raise InputError(f"{name} has non-finite values; check the rig's keyframes.")
    return p


def look_at(position: np.ndarray, target: np.ndarray, up_hint: Optional[np.ndarray] = None) -> np.ndarray:
    """OpenCV cam2world at `position` looking at `target`, upright about +y (EG3D's look-at,
    docs/camera.md#look-at-cameras). Straight above or below the target, where +y gives no roll, `up_hint` (a
    direction that should point up the image) decides."""
    forward = np.asarray(target, dtype=np.float64) - np.asarray(position, dtype=np.float64)
    forward /= np.linalg.norm(forward)
    up = np.array([0.0, 1.0, 0.0])
    right = -np.cross(up, forward)
    if np.linalg.norm(right) < 1e-6:
        hint = np.asarray(up_hint if up_hint is not None else (0.0, 0.0, 1.0), dtype=np.float64)
        right = -np.cross(hint, forward)
        if np.linalg.norm(right) < 1e-6:
            right = -np.cross(np.array([0.0, 0.0, 1.0]), forward)
    right /= np.linalg.norm(right)
    cam_y = np.cross(forward, right)
    cam_y /= np.linalg.norm(cam_y)
    m = np.eye(4)
    m[:3, :3] = np.stack([right, cam_y, forward], axis=1)
    m[:3, 3] = position
    return m


def _sphere_hit(start: np.ndarray, direction: np.ndarray, radius: float) -> float:
    """t > 0 with |start + t direction| = radius (start inside the sphere); radius itself if there is none."""
    b = float(start @ direction)
    disc = b * b - float(start @ start) + radius * radius
    if disc <= 0:
        return radius
    t = -b + math.sqrt(disc)
    return t if t > 0 else radius


def fit_similarity(src: np.ndarray, dst: np.ndarray, aspect: float = 1.0) -> np.ndarray:
    """(2, 3) least-squares map src -> dst that is a similarity (scale, rotation, translation) once dst's y is
    divided by `aspect` (the scene's pixel aspect fy / fx): no shear, no mirror."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64) / np.array([1.0, aspect])
    zs = src[:, 0] + 1j * src[:, 1]
    zd = dst[:, 0] + 1j * dst[:, 1]
    ms, md = zs.mean(), zd.mean()
    denom = float(np.sum(np.abs(zs - ms) ** 2))
    if denom < 1e-18:
        raise InputError("The head projects to a single point in the generator's image; it cannot be framed.")
    a = np.sum(np.conj(zs - ms) * (zd - md)) / denom
    b = md - a * ms
    m = np.array([[a.real, -a.imag, b.real], [a.imag, a.real, b.imag]])
    m[1] *= aspect
    return m


def view_angles(direction: np.ndarray) -> Tuple[float, float]:
    """(yaw, pitch) in degrees of a unit direction from the head pivot in head space: yaw about +y from the front
    (+z), > 0 towards +x (the subject's left); pitch the elevation, > 0 above."""
    d = np.asarray(direction, dtype=np.float64)
    return math.degrees(math.atan2(d[0], d[2])), math.degrees(math.asin(max(-1.0, min(1.0, d[1]))))


def direction_warning(yaw: float, pitch: float) -> str:
    if abs(yaw) <= TRAINED_YAW_DEG and abs(pitch) <= TRAINED_PITCH_DEG:
        return ""
    where = "from behind" if abs(yaw) > 90 else ("from above" if pitch > TRAINED_PITCH_DEG else
                                                 "from below" if pitch < -TRAINED_PITCH_DEG else "from the side")
    return (f"The camera sees the head {where} (yaw {yaw:.0f}, pitch {pitch:.0f} degrees from the front); the FFHQ "
            f"model was trained on faces seen within {TRAINED_YAW_DEG:.0f} degrees of yaw and "
            f"{TRAINED_PITCH_DEG:.0f} of pitch, so expect artefacts.")


def virtual_view(scene_cam2world: np.ndarray, params: "convert.CameraParams", vertices: np.ndarray,
                 side: int = DEFAULT_SIDE, config: Any = None, head_scale: float = 1.0,
                 focal_scale: float = 1.0) -> VirtualView:
    """The virtual camera for a scene camera and a head, and the transform into the scene camera's frame.

    scene_cam2world: the scene camera in head space (an arrays["cam2world"] row); params: its projection;
    vertices [N, 3]: the head in head space (an arrays["vertices"] row); config: the generator or its config (None:
    the official FFHQ values); head_scale: Blender units per head-space unit (the rig's object scale), for depth;
    focal_scale: the virtual camera's focal length relative to the training one (below 1 widens its view, to take
    in more of the head than FFHQ's crop at the cost of detail; 1, the trained framing, by default).
    InputError when the camera is inside the head; HeadOutOfView when the head is wholly behind the camera."""
    c2w_s = _check_matrix("The scene camera", scene_cam2world, (4, 4))
    verts = _check_points("The head's vertices", vertices)
    if int(side) <= 0:
        raise InputError(f"The generator image size must be positive; got {side}.")
    if not (math.isfinite(float(head_scale)) and float(head_scale) > 0):
        raise InputError(f"The head's scale must be positive; got {head_scale}. Give the rig a non-zero scale.")
    if not 0.1 <= float(focal_scale) <= 10.0:
        raise InputError(f"The virtual camera's focal scale must be between 0.1 and 10; got {focal_scale}.")
    train = TrainingCamera.of(config)
    k_scene = convert.intrinsics_pixels(params)
    w2c_s = np.linalg.inv(c2w_s)
    z_scene = verts @ w2c_s[2, :3] + w2c_s[2, 3]
    if np.all(z_scene <= NEAR):
        raise HeadOutOfView("The head is behind the scene camera; turn the camera towards it (or unmark the head).")
    if np.any(z_scene <= NEAR):
        raise InputError("The scene camera is inside the head or touching it (part of the head is behind the lens); "
                         "move the camera away from the head.")
    pivot_h = train.pivot_head
    centre = c2w_s[:3, 3]
    direction = centre - pivot_h
    dist = float(np.linalg.norm(direction))
    if dist < 1e-9:
        raise InputError("The scene camera sits at the head's centre; move it away from the head.")
    direction /= dist
    # The training cameras sit on a sphere about the world origin and look at the pivot: the same along our line.
    pivot_w = np.asarray(train.pivot, dtype=np.float64)
    t = _sphere_hit(pivot_w, direction, train.radius)
    position_h = train.to_head(pivot_w + t * direction)
    c2w_v = look_at(position_h, pivot_h, up_hint=-c2w_s[:3, 1])
    focal = train.focal * float(focal_scale)
    k_norm = np.array([[focal, 0.0, 0.5], [0.0, focal, 0.5], [0.0, 0.0, 1.0]])
    k_virtual = k_norm.copy()
    k_virtual[:2] *= int(side)

    # Fit on the side of the head that faces the camera: what the scene shows, and where perspective differs least.
    # (The pivot sits at the tip of the nose, so the split is through the head's centre instead.)
    centre_h = 0.5 * (verts.min(axis=0) + verts.max(axis=0))
    front = (verts - centre_h) @ direction > 0
    fit_on = verts[front] if int(front.sum()) >= 3 else verts
    src = convert.project_points(fit_on, c2w_v, k_virtual)
    dst = convert.project_points(fit_on, c2w_s, k_scene)
    to_scene = fit_similarity(src, dst, aspect=float(k_scene[1, 1] / k_scene[0, 0]))
    residual = float(np.sqrt(np.mean(np.sum((src @ to_scene[:, :2].T + to_scene[:, 2] - dst) ** 2, axis=1))))

    # Depth: the point at z on a virtual ray is c_v + (z / s) R_v (xn, yn, 1) in head units (s = train.scale, z in
    # world units); its scene depth is its offset from the scene camera along that camera's axis f_s: linear in z,
    # with the slope f_s . R_v (xn, yn, 1) / s. On the central ray that is the cosine between the axes over s.
    # Head units -> Blender units: head_scale.
    axis = c2w_v[:3, :3].T @ c2w_s[:3, 2]
    cos = float(axis[2])
    if cos < 1e-3:
        raise InputError("The head lies at the very edge of the scene camera's view (more than 89 degrees off its "
                         "axis); aim the camera at the head.")
    depth_scale = float(head_scale) * cos / train.scale
    z_pivot_scene = float(w2c_s[2, :3] @ pivot_h + w2c_s[2, 3]) * float(head_scale)
    depth_offset = z_pivot_scene - depth_scale * t
    w2c_v = np.linalg.inv(c2w_v)
    centre_depth = float(w2c_v[2, :3] @ centre_h + w2c_v[2, 3]) * train.scale
    yaw, pitch = view_angles(direction)
    return VirtualView(cam2world=c2w_v.astype(np.float32), intrinsics=k_norm.astype(np.float32), side=int(side),
                       to_scene=to_scene, depth_scale=depth_scale, depth_offset=depth_offset, yaw_pitch=(yaw, pitch),
                       warning=direction_warning(yaw, pitch), residual_px=residual,
                       scene_size=(int(params.width), int(params.height)), scene_axis=tuple(float(a) for a in axis),
                       pivot_depth=float(t), centre_depth=centre_depth)


# ------------------------------------------------------------------------------------------------ images

def _area_reduce(image: np.ndarray, k: int) -> np.ndarray:
    """Average k x k blocks (the last partial row/column of blocks is dropped: the image's border)."""
    n = (image.shape[0] // k) * k
    img = image[:n, :n]
    return img.reshape(n // k, k, n // k, k, -1).mean(axis=(1, 3))


def _bilinear(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Sample image [S, S, C] at continuous coordinates (pixel centres at +0.5), zero outside."""
    s_h, s_w, c = image.shape
    # Zeros around the image (one ring before, two after, so both neighbours of a clamped coordinate exist):
    # coordinates beyond the ring only ever read zeros, so clamping them there needs no masks.
    padded = np.zeros((s_h + 3, s_w + 3, c), dtype=np.float32)
    padded[1:s_h + 1, 1:s_w + 1] = image
    flat = padded.reshape(-1, c)
    fx = np.clip(x - 0.5, -1.0, s_w).astype(np.float32)
    fy = np.clip(y - 0.5, -1.0, s_h).astype(np.float32)
    x0, y0 = np.floor(fx), np.floor(fy)
    wx, wy = (fx - x0)[..., None], (fy - y0)[..., None]
    row = s_w + 3
    idx = (y0.astype(np.int64) + 1) * row + x0.astype(np.int64) + 1
    top, right = flat[idx], flat[idx + 1]
    top += (right - top) * wx
    bottom, right = flat[idx + row], flat[idx + row + 1]
    bottom += (right - bottom) * wx
    top += (bottom - top) * wy
    return top


Box = Tuple[int, int, int, int]   # scene pixels x0, y0, x1, y1 (ends excluded)


def _image(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image, dtype=np.float32)
    if img.ndim == 2:
        img = img[..., None]
    if img.ndim != 3 or img.shape[0] != img.shape[1] or img.shape[0] == 0:
        raise InputError(f"The generator image must be square [S, S, C]; got {list(np.shape(image))}.")
    return img


def _size(width: int, height: int) -> Tuple[int, int]:
    width, height = int(width), int(height)
    if width <= 0 or height <= 0:
        raise InputError(f"The scene render must have a positive size; got {width} x {height}.")
    return width, height


def _image_to_scene(img: np.ndarray, view: VirtualView) -> Tuple[np.ndarray, np.ndarray]:
    """(the image, area-reduced where the head shrinks by 2x or more, and its 3x3 pixel -> scene pixel map)."""
    unit = view.side / img.shape[0]                  # generator pixels per image pixel
    scene_per_image = view.scale * unit
    k = int(1.0 / scene_per_image) if scene_per_image > 0 else 1
    if k >= 2 and img.shape[0] // k >= 2:
        img = _area_reduce(img, k)
        unit *= k
    return img, np.vstack([view.to_scene, [0.0, 0.0, 1.0]]) @ np.diag([unit, unit, 1.0])


def _clip_box(box: Optional[Box], width: int, height: int) -> Box:
    b = (0, 0, width, height) if box is None else tuple(int(v) for v in box)
    return max(b[0], 0), max(b[1], 0), min(b[2], width), min(b[3], height)


def _warp_box(img: np.ndarray, m: np.ndarray, box: Box) -> np.ndarray:
    """Bilinear samples [y1 - y0, x1 - x0, C] of img at the scene pixel centres of `box`, through the map m."""
    x0, y0, x1, y1 = box
    if x0 >= x1 or y0 >= y1:
        return np.zeros((max(y1 - y0, 0), max(x1 - x0, 0), img.shape[2]), dtype=np.float32)
    inv = np.linalg.inv(m)
    xs, ys = np.meshgrid(np.arange(x0, x1) + 0.5, np.arange(y0, y1) + 0.5)
    sx = inv[0, 0] * xs + inv[0, 1] * ys + inv[0, 2]
    sy = inv[1, 0] * xs + inv[1, 1] * ys + inv[1, 2]
    return _bilinear(img, sx, sy)


def _reach(img: np.ndarray, m: np.ndarray, width: int, height: int, box: Optional[Box]) -> Box:
    """The scene pixels the image can reach (its square and the one pixel bilinear sampling fades over), in box."""
    n = img.shape[0]
    corners = np.array([[-1, -1, 1], [n + 1, -1, 1], [-1, n + 1, 1], [n + 1, n + 1, 1]], dtype=np.float64) @ m[:2].T
    lo, hi = np.floor(corners.min(axis=0)).astype(int), np.ceil(corners.max(axis=0)).astype(int)
    b = _clip_box(box, width, height)
    return max(lo[0], b[0]), max(lo[1], b[1]), min(hi[0], b[2]), min(hi[1], b[3])


def warp_to_scene(image: np.ndarray, view: VirtualView, width: int, height: int,
                  box: Optional[Box] = None) -> np.ndarray:
    """The generator's square image [S, S, C] (any S: it is taken as covering the `view.side` square) placed in a
    width x height scene render: bilinear, zero outside it, area-averaged first where the head shrinks by 2x or
    more (so a small far head does not alias). `box` (x0, y0, x1, y1) limits the work to those scene pixels (the
    rest stays zero): a head's matte box, say."""
    width, height = _size(width, height)
    img, m = _image_to_scene(_image(image), view)
    out = np.zeros((height, width, img.shape[2]), dtype=np.float32)
    x0, y0, x1, y1 = b = _reach(img, m, width, height, box)
    if x0 < x1 and y0 < y1:
        out[y0:y1, x0:x1] = _warp_box(img, m, b)
    return out


def generator_z_depth(depth: np.ndarray, view: VirtualView) -> np.ndarray:
    """The generator's depth image [R, R] (GeneratorOutput.image_depth: distance along each normalized ray, world
    units, docs/camera.md#rays) -> depth along the virtual camera's axis (z), same units."""
    d = np.asarray(depth, dtype=np.float64)
    if d.ndim != 2 or d.shape[0] != d.shape[1]:
        raise InputError(f"The generator depth must be a square [R, R] image; got {list(d.shape)}.")
    r = d.shape[0]
    k = np.asarray(view.intrinsics, dtype=np.float64)
    u = (np.arange(r) + 0.5) / r
    xn = (u[None, :] - k[0, 2]) / k[0, 0]
    yn = (u[:, None] - k[1, 2]) / k[1, 1]
    return d / np.sqrt(xn * xn + yn * yn + 1.0)


def _scene_depth_image(depth: np.ndarray, view: VirtualView) -> np.ndarray:
    """The generator's depth image [R, R] (ray distance, world units) -> scene depth per generator pixel."""
    z = generator_z_depth(depth, view)
    u = (np.arange(z.shape[0]) + 0.5) / z.shape[0]
    k = np.asarray(view.intrinsics, dtype=np.float64)
    return view.scene_depth(z, ((u - k[0, 2]) / k[0, 0])[None, :], ((u - k[1, 2]) / k[1, 1])[:, None])


def _depth_box(depth: np.ndarray, view: VirtualView, box: Box) -> np.ndarray:
    """Scene depth [y1 - y0, x1 - x0] over box, inf where the generator's image does not reach."""
    z = _scene_depth_image(depth, view)
    img, m = _image_to_scene(np.stack([z, np.ones_like(z)], axis=-1).astype(np.float32), view)
    warped = _warp_box(img, m, box)
    cover = warped[..., 1]
    out = np.full(cover.shape, np.inf, dtype=np.float32)
    ok = cover > 1e-6                       # depth / cover undoes the fade at the square's edge
    out[ok] = warped[..., 0][ok] / cover[ok]
    return out


def depth_to_scene(depth: np.ndarray, view: VirtualView, width: int, height: int,
                   box: Optional[Box] = None) -> np.ndarray:
    """The generator's depth image [R, R] (ray distance, world units) -> the scene camera's depth [height, width]
    float32 (Blender units along its view axis, as Blender's Depth pass), inf where the image does not reach (or
    outside `box`, as in warp_to_scene)."""
    width, height = _size(width, height)
    out = np.full((height, width), np.inf, dtype=np.float32)
    x0, y0, x1, y1 = b = _clip_box(box, width, height)
    if x0 < x1 and y0 < y1:
        out[y0:y1, x0:x1] = _depth_box(depth, view, b)
    return out


def head_layer(image: np.ndarray, depth: Optional[np.ndarray], view: VirtualView, pixels: np.ndarray,
               faces: np.ndarray, width: int, height: int, widen: float = WIDEN, feather: float = FEATHER
               ) -> Tuple[np.ndarray, np.ndarray]:
    """One head's layer in the scene render, ready for composite_by_depth: (rgba [H, W, 4] float32 premultiplied,
    depth [H, W] float32, inf where alpha is 0).

    image [S, S, 3] (colours in 0..1) and depth [R, R] (GeneratorOutput.image_depth, or None: then the depth of the
    central ray's mapping at the head pivot everywhere on the head) from the generator at view.cam2world; pixels
    [N, 2] the head's vertices in the scene render (head_pixels), faces [F, 3] its triangles. Alpha is the matte
    (head_matte) cut to where the generator's square reaches: the virtual camera frames FFHQ's crop, so on views
    from the side the back of the head falls outside it and stays transparent. The work is done inside the
    matte's bounding box only."""
    img = _image(image)
    if img.shape[2] != 3:
        raise InputError(f"The generator image must be [S, S, 3] RGB; got {list(np.shape(image))}.")
    width, height = _size(width, height)
    rgba = np.zeros((height, width, 4), dtype=np.float32)
    scene_depth = np.full((height, width), np.inf, dtype=np.float32)
    matte = head_matte(pixels, faces, width, height, widen=widen, feather=feather)
    rows, cols = np.nonzero(matte.any(axis=1))[0], np.nonzero(matte.any(axis=0))[0]
    if not len(rows):
        return rgba, scene_depth
    x0, y0, x1, y1 = box = (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)
    # Two coverage channels: plain (to undo the fade of colour at the square's edge) and one that ramps to 0 over
    # the outer SQUARE_FEATHER of the square (so the cut there is soft).
    n = img.shape[0]
    ramp = np.clip((np.minimum(np.arange(n), n - 1 - np.arange(n)) + 0.5) / max(SQUARE_FEATHER * n, 1.0), 0, 1)
    soft = np.minimum(ramp[:, None], ramp[None, :])[..., None].astype(np.float32)
    src, m = _image_to_scene(np.concatenate([img, np.ones_like(img[..., :1]), soft], axis=-1), view)
    warped = _warp_box(src, m, box)
    cover = np.clip(warped[..., 3], 0.0, 1.0)
    alpha = matte[y0:y1, x0:x1] * np.clip(warped[..., 4], 0.0, 1.0)
    if depth is not None:
        # Around the rig's own silhouette, the widening takes in hair but also some of the generator's backdrop: its
        # depth tells them apart there (never on the silhouette itself, which is the head whatever the depth says).
        key = backdrop_key(generator_z_depth(depth, view), view.centre_depth).astype(np.float32)
        key_src, key_map = _image_to_scene(key[..., None], view)
        keyed = np.clip(_warp_box(key_src, key_map, box)[..., 0], 0.0, 1.0)
        core = head_matte(pixels, faces, width, height, widen=0.0, feather=CORE_FEATHER)[y0:y1, x0:x1]
        alpha = alpha * np.maximum(core, keyed)
    # warp fades colour and coverage together at the square's edge: colour / cover is the true colour.
    rgba[y0:y1, x0:x1, :3] = warped[..., :3] * (alpha / np.maximum(cover, 1e-6))[..., None]
    rgba[y0:y1, x0:x1, 3] = alpha
    if depth is None:
        z = np.full(alpha.shape, view.depth_offset + view.depth_scale * view.pivot_depth, np.float32)
    else:
        z = _depth_box(depth, view, box)
    scene_depth[y0:y1, x0:x1] = np.where(alpha > 0, z, np.inf)
    return rgba, scene_depth


def head_pixels(vertices: np.ndarray, scene_cam2world: np.ndarray, params: "convert.CameraParams") -> np.ndarray:
    """The head's vertices (head space) in the scene render's pixels: the `pixels` head_matte takes."""
    return convert.project_points(_check_points("The head's vertices", vertices),
                                  _check_matrix("The scene camera", scene_cam2world, (4, 4)),
                                  convert.intrinsics_pixels(params))


def frame_views(cam2world_rows: np.ndarray, params: Sequence["convert.CameraParams"], vertex_rows: np.ndarray,
                side: int = DEFAULT_SIDE, config: Any = None, head_scale: float = 1.0):
    """virtual_view per frame: lists of views (None where the head is wholly behind the camera)."""
    views = []
    for c2w, p, v in zip(cam2world_rows, params, vertex_rows):
        try:
            views.append(virtual_view(c2w, p, v, side=side, config=config, head_scale=head_scale))
        except HeadOutOfView:
            views.append(None)
    return views
