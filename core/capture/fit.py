"""One FLAME fit over a whole clip: one shared shape; per frame the expression, the jaw opening, the head pose and
translation, and both eyes' poses; with temporal terms, so that the result follows the face without the
frame-to-frame jitter of the detected landmarks.

Camera: one for the clip. The frames are seen through a fixed square, FFHQ's alignment square of the clip's
median face (core.portrait.crop.ffhq_crop, kept upright), by the canonical FFHQ camera (its field of view over the
square: docs/camera.md#ffhq-cameras), as core/portrait/fit.py sees one portrait. The head moves in front of that
camera: it turns by FLAME's global rotation about the root joint and shifts by a translation in the EG3D world.

Where head motion goes (docs/capture.md#head-motion): the rotation is the animation's head pose
(FlameParams.global_rotation), which the renderer folds into whatever camera a render uses (fixed, orbit, a camera
file, Blender's camera); the translation is not animated by default, so the avatar stays centred as the FFHQ-aligned
frames of the official reenactment data keep it, and it is recorded in the report (and written as per-frame
cameras on request, `cameras_from_translation`). The neck stays zero: Next3D's training meshes had none.

Loss, per frame, in pixels of a 512-pixel square (as core/portrait/fit.py, so its weights keep their meaning):
  * the 51 inner landmarks (the jaw contour slides over the face as it turns; see core/portrait/fit.py) and the
    five points of each iris (centre and rim, as fit_eye_pose), an iris only while its eye is open;
  * priors: shape, expression and jaw opening towards zero (FLAME's coefficients are in standard deviations, so
    this is the Gaussian prior that keeps expressions plausible), the eyes weakly towards straight ahead;
  * smoothness: the squared frame-to-frame change of the expression, jaw and eyes, and the squared change of that
    change of the head's rotation and translation (`Smoothness`, weighted per parameter at 30 fps and scaled with
    the frame rate so that the same motion per second costs the same).
Frames without a face have no data terms; afterwards their parameters are interpolated linearly between the
nearest tracked frames (held at the ends of the clip).

Optimization: Levenberg-Marquardt over all frames at once (core/capture/solver.py, which says why not Adam): first
the head's rigid motion alone, then everything.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable, Optional

import numpy as np
import torch

from ..errors import InputError
from ..flame.conversions import Placement, flame_to_world
from ..flame.model import FlameModel
from ..flame.params import FlameParams
from ..portrait.crop import Crop, ffhq_crop
from ..portrait.fit import eye_vertex_indices, order_iris
from ..rendering.camera import ffhq_camera
from ..training.mesh_render import project_points
from .landmark_flame import LandmarkFlame
from .solver import ClipProblem, solve_clip

__all__ = ["Smoothness", "FitOptions", "ClipFit", "fit_clip", "clip_square", "fill_missing",
           "cameras_from_translation"]

_PX = 512.0                         # errors are measured in pixels of a 512-pixel square, as in core/portrait/fit.py
_INNER = slice(17, 68)
_EYE_OPEN = 0.12                    # lid gap / eye width below which an eye counts as closed (iris not used)
_JAW_MAX = 0.6
_RIGID_PRIOR = 1e-3                 # keeps the head still where nothing else says where it is (no face, no smoothing)

Progress = Optional[Callable[[int, int], None]]


@dataclass(frozen=True)
class Smoothness:
    """Weights of the temporal terms at 30 fps, in (512-px pixels)^2 per unit^2. The face's parameters pay for
    their change from one frame to the next: `expression` 20 makes a change of 0.2 (standard deviations) between
    two frames cost as much as 0.9 px of landmark error. The head's rotation and translation pay for the change of
    that change (an acceleration), so a head turning at a steady speed costs nothing and the smoothing does not
    drag the head pose behind the video (first-order weights pulled the pitch 2 degrees off on the synthetic clip;
    docs/capture.md#accuracy). Chosen on the synthetic clip of bench/track.py."""

    expression: float = 20.0        # per coefficient (standard deviations), frame-to-frame change
    jaw: float = 2000.0             # radians, frame-to-frame change
    eyes: float = 300.0             # radians, frame-to-frame change
    rotation: float = 2e4           # radians (axis-angle), change of the frame-to-frame change
    translation: float = 2e4        # EG3D world units, change of the frame-to-frame change

    def scaled(self, factor: float) -> "Smoothness":
        return Smoothness(**{k: v * factor for k, v in asdict(self).items()})


@dataclass(frozen=True)
class FitOptions:
    steps: int = 20                 # Levenberg-Marquardt iterations of the full fit (at most; it stops converged)
    rigid_steps: int = 6            # ... of the rigid fit before it
    smoothing: float = 1.0          # multiplies every Smoothness weight (0: each frame on its own)
    smoothness: Smoothness = field(default_factory=Smoothness)
    n_shape: int = 100              # coefficients fitted (DECA's numbers; the built-in head has 26 and 16)
    n_expr: int = 50
    shape_reg: float = 0.5          # as core/portrait/fit.py
    expr_reg: float = 0.5
    jaw_reg: float = 5.0
    eye_reg: float = 1.0
    iris_weight: float = 1.0
    iris_rim_weight: float = 1.0    # weight of each of the four rim points against the iris centre
    # torch threads during the fit (None: leave torch's setting). Its tensors are small: on two busy cores a second
    # thread only adds synchronisation (a 300-frame fit took 40 s with two threads, 7-11 s with one).
    threads: Optional[int] = 1


@dataclass
class ClipFit:
    """The fitted clip. `params` has the head pose in global_rotation and zero neck; `translation` [T, 3] is the
    head's shift (EG3D world) in front of `camera` [25], the clip camera over the square `crop` of the frames."""

    params: FlameParams
    translation: torch.Tensor
    camera: torch.Tensor
    crop: Crop
    error_px: np.ndarray            # [T] mean inner-landmark error in frame pixels (NaN: no face)
    iris_error_px: np.ndarray       # [T] mean iris error in frame pixels (NaN: no iris used)
    projected: np.ndarray           # [T, 68, 2] the fitted landmarks in frame pixels
    filled: np.ndarray              # [T] bool: frames interpolated from their neighbours
    cost: float = float("nan")      # the final value of the fit's cost


def clip_square(landmarks: np.ndarray, valid: np.ndarray) -> Crop:
    """The fixed, upright square of a clip: FFHQ's alignment square of each frame with a face, the median centre
    and size."""
    squares = [ffhq_crop(lm) for lm in landmarks[valid]]
    centre = np.median(np.stack([s.centre for s in squares]), axis=0)
    half = float(np.median([np.hypot(*s.x_axis) for s in squares]))
    return Crop(centre, np.array([half, 0.0]))


def _eye_open(landmarks: np.ndarray) -> np.ndarray:
    """[T, 2] whether each eye (image-left first) is open enough for its iris to be seen."""
    out = []
    for corners, upper, lower in (((36, 39), (37, 38), (41, 40)), ((42, 45), (43, 44), (47, 46))):
        width = np.linalg.norm(landmarks[:, corners[0]] - landmarks[:, corners[1]], axis=-1)
        gap = np.linalg.norm(landmarks[:, list(upper)] - landmarks[:, list(lower)], axis=-1).mean(axis=-1)
        out.append(gap > _EYE_OPEN * width)
    return np.stack(out, axis=1)


def fill_missing(values: torch.Tensor, known: np.ndarray) -> torch.Tensor:
    """Per-frame values [T, ...] with the frames where `known` is False interpolated linearly between the nearest
    known frames (held before the first and after the last)."""
    known = np.asarray(known, dtype=bool)
    if known.all() or not known.any():
        return values
    t = np.arange(known.shape[0])
    flat = values.detach().reshape(values.shape[0], -1).cpu().double().numpy()
    filled = np.stack([np.interp(t, t[known], flat[known, j]) for j in range(flat.shape[1])], axis=1)
    return torch.from_numpy(filled).to(values.dtype).reshape(values.shape)


def _smooth(x: torch.Tensor, order: int) -> torch.Tensor:
    """Mean squared frame-to-frame change (order 1) or change of the change (order 2) of [T, ...]."""
    d = x
    for _ in range(order):
        if d.shape[0] < 2:
            return x.new_zeros(())
        d = d[1:] - d[:-1]
    return d.pow(2).reshape(d.shape[0], -1).sum(dim=1).mean()


def _initial_shift(model: LandmarkFlame, camera: torch.Tensor, lm: np.ndarray, valid: np.ndarray) -> torch.Tensor:
    """[T, 3] shifts that put the mean head, straight, where each frame's inner landmarks are (centre and size);
    frames without a face get their neighbours' (the rigid fit starts from there)."""
    with torch.no_grad():
        mean_lmk, _ = model(torch.zeros(1, model.n_shape), torch.zeros(1, model.n_expr), torch.zeros(1, 15))
        world = flame_to_world(mean_lmk[0, _INNER])
        uvz = project_points(world[None], camera[None])[0]
    ref = uvz[:, :2].mean(dim=0).numpy() * _PX
    ref_size = float(np.linalg.norm(uvz[:, :2].numpy() * _PX - ref, axis=1).mean())
    depth = float(uvz[:, 2].mean())
    cam2world = camera[:16].reshape(4, 4).double().numpy()
    right, down, forward = cam2world[:3, 0], cam2world[:3, 1], cam2world[:3, 2]
    focal = float(camera[16])
    inner = lm[:, _INNER]
    centre = inner.mean(axis=1)
    size = np.linalg.norm(inner - centre[:, None], axis=2).mean(axis=1)
    new_depth = depth * ref_size / np.maximum(size, 1e-3)
    offset = (centre - ref) / _PX * new_depth[:, None] / focal
    shifts = offset[:, :1] * right + offset[:, 1:] * down + (new_depth - depth)[:, None] * forward
    return fill_missing(torch.from_numpy(shifts.astype(np.float32)), valid)


def fit_clip(flame: FlameModel, landmarks: np.ndarray, irises: Optional[np.ndarray], valid: np.ndarray,
             fps: float = 30.0, options: FitOptions = FitOptions(), progress: Progress = None) -> ClipFit:
    """Fit FLAME to a clip's landmarks [T, 68, 2] and irises [T, 2, 5, 2] (frame pixels, the image-left iris
    first; None: no irises, the eyes stay straight), where `valid` [T] says which frames have a face."""
    before = torch.get_num_threads()
    if options.threads:
        torch.set_num_threads(options.threads)
    try:
        return _fit_clip(flame, landmarks, irises, valid, fps, options, progress)
    finally:
        torch.set_num_threads(before)


def _fit_clip(flame: FlameModel, landmarks: np.ndarray, irises: Optional[np.ndarray], valid: np.ndarray,
              fps: float, options: FitOptions, progress: Progress) -> ClipFit:
    valid = np.asarray(valid, dtype=bool)
    landmarks = np.asarray(landmarks, dtype=np.float32)
    n = landmarks.shape[0]
    if not valid.any():
        raise InputError("No frame of the clip has a face to fit.")
    crop = clip_square(landmarks, valid)
    scale = _PX / crop.side
    lm = np.nan_to_num(crop.to_crop(landmarks, int(_PX)))                              # [T, 68, 2] square pixels
    rims = torch.from_numpy(eye_vertex_indices(flame))                                 # [2, 4] image-left first
    model = LandmarkFlame(flame, rims.reshape(-1).numpy(), options.n_shape, options.n_expr)
    n_s, n_e = model.n_shape, model.n_expr
    iris_w = np.zeros((n, 2), np.float32)
    iris_t = np.zeros((n, 2, 5, 2), np.float32)
    if irises is not None:
        ok = valid & np.isfinite(irises).all(axis=(1, 2, 3))
        iris_w[ok] = _eye_open(landmarks[ok])
        for t in np.flatnonzero(ok):
            iris_t[t] = [order_iris(crop.to_crop(iris, int(_PX))) for iris in irises[t]]
    camera = ffhq_camera()
    cams = camera[None].expand(n, -1)

    # Residuals scaled so that the cost is the mean over frames of the mean squared pixel error (as the portrait
    # fit's loss), plus the weighted terms. The per-frame variables: expression, jaw opening, head rotation
    # (axis-angle), shift, and the eyes' (x, y) axis-angle, left eye then right (FLAME's order).
    lay = _Layout(n_e)
    n_lm, n_iris = max(float(valid.sum()), 1.0), max(float(iris_w.sum()), 1.0)
    lm_scale = torch.from_numpy(np.sqrt(valid / (51 * n_lm)).astype(np.float32))[:, None, None]
    iris_scale = torch.from_numpy(np.sqrt(options.iris_weight * iris_w / (5 * n_iris)).astype(np.float32))
    point_w = np.array([1.0] + [options.iris_rim_weight] * 4)
    iris_scale = iris_scale[:, :, None] * torch.from_numpy(np.sqrt(point_w / point_w.mean())).float()  # [T, 2, 5]
    target = torch.from_numpy(lm[:, _INNER])
    iris_target = torch.from_numpy(iris_t)

    def pose_of(x: torch.Tensor) -> torch.Tensor:
        """FLAME's pose vector [T, 15] of the solver's rows: head rotation, no neck, jaw opening, eyes."""
        eyes = x[:, lay.eyes].reshape(-1, 2, 2)
        zero = x.new_zeros(x.shape[0], 1)
        return torch.cat([x[:, lay.rot], zero, zero, zero, x[:, lay.jaw], zero, zero, eyes[:, 0], zero,
                          eyes[:, 1], zero], dim=1)

    def project(x: torch.Tensor, shape: torch.Tensor) -> tuple:
        lmk, rim = model(shape[None], x[:, lay.expr], pose_of(x))
        points = torch.cat([lmk, rim], dim=1)                                           # [T, 68 + 8, 3]
        uv = project_points(flame_to_world(points) + x[:, None, lay.shift], cams[:x.shape[0]])[..., :2] * _PX
        rim_uv = uv[:, 68:].reshape(-1, 2, 4, 2)
        return uv[:, :68], torch.cat([rim_uv.mean(dim=2, keepdim=True), rim_uv], dim=2)  # irises [T, 2, 5, 2]

    def residuals(x: torch.Tensor, shape: torch.Tensor) -> torch.Tensor:
        proj, iris = project(x, shape)
        r_lm = (proj[:, _INNER] - target) * lm_scale
        r_iris = (iris - iris_target) * iris_scale[..., None]
        return torch.cat([r_lm.reshape(x.shape[0], -1), r_iris.reshape(x.shape[0], -1)], dim=1)

    placement_scale = float(Placement().scale)
    cam2world = camera[:16].reshape(4, 4)
    cam_rot, cam_origin, intr = cam2world[:3, :3], cam2world[:3, 3], camera[16:25].reshape(3, 3)
    blend_cols, shift_cols = lay.mask("expr"), lay.mask("shift")

    def projected_derivative(world: torch.Tensor, dworld: torch.Tensor) -> torch.Tensor:
        """Derivatives [T, 76, 3, L] of the world points [T, 76, 3] -> those of the residuals [T, R, L]."""
        cam = (world - cam_origin) @ cam_rot                                               # [T, 76, 3]
        dcam = torch.einsum("tpkl,ki->tpil", dworld, cam_rot)
        z = cam[..., 2:3, None]
        du = (intr[0, 0] * dcam[:, :, 0:1] + intr[0, 1] * dcam[:, :, 1:2]) / z \
            - (intr[0, 0] * cam[..., 0:1, None] + intr[0, 1] * cam[..., 1:2, None]) * dcam[:, :, 2:3] / z ** 2
        dv = intr[1, 1] * dcam[:, :, 1:2] / z - intr[1, 1] * cam[..., 1:2, None] * dcam[:, :, 2:3] / z ** 2
        duv = torch.cat([du, dv], dim=2) * _PX                                             # [T, 76, 2, L]
        d_lm = duv[:, _INNER] * lm_scale[..., None]
        d_rim = duv[:, 68:].reshape(n, 2, 4, 2, -1)
        d_iris = torch.cat([d_rim.mean(dim=2, keepdim=True), d_rim], dim=2) * iris_scale[..., None, None]
        return torch.cat([d_lm.reshape(n, -1, d_lm.shape[-1]), d_iris.reshape(n, -1, d_iris.shape[-1])], dim=1)

    def jacobian(x: torch.Tensor, shape: torch.Tensor, cols: np.ndarray, shared: bool) -> tuple:
        """The solver's Jacobians: forward mode for the head rotation, jaw and eyes; through the projection for the
        shift, and for the expression and shape coefficients with LandmarkFlame's exact blend-shape derivatives."""
        from torch.func import jvp, vmap

        pose_cols = [int(c) for c in cols if not blend_cols[c] and not shift_cols[c]]
        with torch.no_grad():
            r = residuals(x, shape)
            jac = torch.zeros(n, r.shape[1], lay.size + n_s)
            if pose_cols:
                tx = torch.zeros(len(pose_cols), n, lay.size)
                tx[torch.arange(len(pose_cols)), :, torch.tensor(pose_cols)] = 1.0
                cols_r = vmap(lambda a: jvp(lambda xx: residuals(xx, shape), (x,), (a,))[1])(tx)
                jac[:, :, pose_cols] = cols_r.permute(1, 2, 0)
            blend = bool(shared or blend_cols[cols].any())
            out = model(shape[None], x[:, lay.expr], pose_of(x), blend_jacobian=blend)
            world = flame_to_world(torch.cat([out[0], out[1]], dim=1)) + x[:, None, lay.shift]
            if shift_cols[cols].any():      # d world / d shift = I
                jac[:, :, lay.shift] = projected_derivative(world, torch.eye(3).expand(n, world.shape[1], 3, 3))
            if blend:
                d = projected_derivative(world, placement_scale * torch.cat([out[2], out[3]], dim=1))
                jac[:, :, lay.expr] = d[..., n_s:]
                jac[:, :, lay.size:] = d[..., :n_s]
        jac = jac.double()
        return r.double(), jac[..., cols], jac[..., lay.size:] if shared else None

    # The same motion per second costs the same at any frame rate: a change between frames shrinks as 1 / fps,
    # a change of that change as 1 / fps^2.
    w = options.smoothness.scaled(options.smoothing)
    rate = fps / 30.0
    smooth1 = lay.per_variable(expr=w.expression, jaw=w.jaw, eyes=w.eyes) * rate ** 2 / max(n - 1, 1)
    smooth2 = lay.per_variable(rot=w.rotation, shift=w.translation) * rate ** 4 / max(n - 2, 1)
    prior = lay.per_variable(expr=options.expr_reg, jaw=options.jaw_reg, rot=_RIGID_PRIOR, shift=_RIGID_PRIOR,
                             eyes=options.eye_reg)
    lower = lay.per_variable(expr=-np.inf, jaw=0.0, rot=-np.inf, shift=-np.inf, eyes=-0.8)
    upper = lay.per_variable(expr=np.inf, jaw=_JAW_MAX, rot=np.inf, shift=np.inf, eyes=0.8)
    problem = ClipProblem(residuals, np.sqrt(prior / n), np.full(n_s, np.sqrt(options.shape_reg)),
                          np.sqrt(smooth1), np.sqrt(smooth2), lower, upper, jacobian)

    x = torch.zeros(n, lay.size)
    x[:, lay.shift] = _initial_shift(model, camera, lm, valid)
    shape = torch.zeros(n_s)
    done, total = 0, options.rigid_steps + options.steps

    def step() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    x, shape, _ = solve_clip(problem, x, shape, free=lay.mask("rot", "shift"), shared=False,
                             iterations=options.rigid_steps, progress=step)
    x, shape, costs = solve_clip(problem, x, shape, free=np.ones(lay.size, bool), shared=True,
                                 iterations=options.steps, progress=step)
    if progress is not None and done < total:
        progress(total, total)

    with torch.no_grad():
        x = fill_missing(x, valid)
        proj, iris = project(x, shape)
        err = (proj - torch.from_numpy(lm))[:, _INNER].norm(dim=-1).mean(-1).numpy() / scale
        iw = torch.from_numpy(iris_w)
        ierr = (((iris - iris_target).norm(dim=-1).mean(-1) * iw).sum(1) / iw.sum(1).clamp_min(1)).numpy()
        ierr = np.where(iris_w.sum(1) > 0, ierr / scale, np.nan)
        eyes = x[:, lay.eyes].reshape(n, 2, 2)
        zero = torch.zeros(n, 2, 1)
        params = FlameParams(shape=shape[None].expand(n, -1).clone(), expression=x[:, lay.expr].clone(),
                             jaw=torch.cat([x[:, lay.jaw], torch.zeros(n, 2)], dim=1),
                             global_rotation=x[:, lay.rot].clone(),
                             eyes=torch.cat([eyes, zero], dim=2).reshape(n, 6))
        projected = crop.from_crop(proj.numpy(), int(_PX))
    return ClipFit(params=params, translation=x[:, lay.shift].clone(), camera=camera, crop=crop,
                   error_px=np.where(valid, err, np.nan), iris_error_px=ierr, projected=projected,
                   filled=~valid, cost=costs[-1])


class _Layout:
    """Where each per-frame parameter sits in the solver's row of a frame."""

    def __init__(self, n_expr: int) -> None:
        e = n_expr
        self.slices = {"expr": slice(0, e), "jaw": slice(e, e + 1), "rot": slice(e + 1, e + 4),
                       "shift": slice(e + 4, e + 7), "eyes": slice(e + 7, e + 11)}
        self.size = e + 11
        self.expr, self.jaw, self.rot, self.shift, self.eyes = (self.slices[k] for k in
                                                                 ("expr", "jaw", "rot", "shift", "eyes"))

    def per_variable(self, **values: float) -> np.ndarray:
        out = np.zeros(self.size)
        for name, value in values.items():
            out[self.slices[name]] = value
        return out

    def mask(self, *names: str) -> np.ndarray:
        out = np.zeros(self.size, bool)
        for name in names:
            out[self.slices[name]] = True
        return out


def cameras_from_translation(fit: ClipFit) -> torch.Tensor:
    """Per-frame camera labels [T, 25] that show the head shifted from its median position as it moved in the clip
    (the canonical FFHQ camera moved the other way)."""
    rel = fit.translation - fit.translation.median(dim=0).values
    cams = fit.camera[None].repeat(rel.shape[0], 1)
    cam2world = cams[:, :16].reshape(-1, 4, 4).clone()
    cam2world[:, :3, 3] -= rel
    cams[:, :16] = cam2world.reshape(-1, 16)
    return cams
