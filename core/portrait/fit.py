"""Fitting FLAME and the camera to a portrait's landmarks, and the eyes to its irises.

Camera model: the generator's (docs/camera.md): normalized intrinsics of the FFHQ field of view, an OpenCV
cam2world in the EG3D world, where the FLAME mesh sits at 2.5 * (p + (0, 0.01, 0)). The fit moves the head
rigidly in front of the canonical frontal camera (rotation about the FFHQ pivot, then a shift), which is the
same as moving the camera the other way round: the result is the camera C = M^-1 C0 that sees the unrotated
head, since the generator wants the global rotation in the camera, not in the mesh.

Landmark errors are measured in pixels of a 512-pixel crop whatever the crop's size, so the regularization
weights keep their meaning. The 17 jaw-contour points are left out of the fit and of the error: a 2-D contour
slides over the 3-D surface as the head turns while FLAME's static embedding does not, and the built-in head's
contour lies inside its silhouette (on a frontal photo, fitting it pitched the head by 25 degrees).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch

from ..flame.conversions import flame_to_world
from ..flame.model import FlameModel
from ..flame.params import FlameParams, axis_angle_to_matrix, matrix_to_axis_angle
from ..rendering.camera import FFHQ_PIVOT, ffhq_camera
from ..training.mesh_render import project_points

__all__ = ["FlameFit", "fit_flame", "fit_eye_pose", "eye_vertex_indices", "order_iris", "project_flame_points",
           "LEFT_EYE_JOINT", "RIGHT_EYE_JOINT", "IRIS_ANGLE"]

LEFT_EYE_JOINT, RIGHT_EYE_JOINT = 3, 4
_PX = 512.0                          # errors are measured in pixels of a 512-pixel crop
_SHAPE_REG, _EXPR_REG, _JAW_REG = 0.5, 0.5, 5.0
IRIS_ANGLE = 0.5   # rad, from the eye's centre between the line of sight and the iris rim (5.9 mm iris, 12 mm eye)

Progress = Optional[Callable[[int, int], None]]


@dataclass
class FlameFit:
    """The result of fit_flame: FLAME parameters (global rotation zero), the camera label [25] that sees that
    mesh as the photo shows it, the head's rigid motion [4, 4] in front of the canonical camera, and the mean
    error of the 51 inner landmarks in pixels of the crop."""

    params: FlameParams
    camera: torch.Tensor
    head_motion: torch.Tensor
    error_px: float


def _motion(rot_aa: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """[4, 4]: p -> R (p - pivot) + pivot + shift (EG3D world)."""
    pivot = torch.tensor(FFHQ_PIVOT, dtype=rot_aa.dtype)
    rot = axis_angle_to_matrix(rot_aa[None])[0]
    top = torch.cat([rot, (pivot - rot @ pivot + shift)[:, None]], dim=1)
    return torch.cat([top, torch.tensor([[0.0, 0.0, 0.0, 1.0]], dtype=rot_aa.dtype)], dim=0)


def _camera_for(motion: torch.Tensor, canonical: torch.Tensor) -> torch.Tensor:
    """The camera label that sees the unmoved head as `canonical` sees the head moved by `motion`."""
    cam = torch.linalg.inv(motion) @ canonical[:16].reshape(4, 4)
    return torch.cat([cam.reshape(16), canonical[16:]])


def project_flame_points(points: torch.Tensor, camera: torch.Tensor, resolution: int) -> torch.Tensor:
    """FLAME-space points [N, 3] seen by a camera label [25] -> crop pixels [N, 2]."""
    uvz = project_points(flame_to_world(points)[None], camera.reshape(1, -1).to(points.dtype))[0]
    return uvz[:, :2] * resolution


def fit_flame(flame: FlameModel, landmarks: np.ndarray, resolution: int, *, camera: Optional[torch.Tensor] = None,
              init: Optional[FlameFit] = None, steps: int = 300, progress: Progress = None) -> FlameFit:
    """FLAME shape, expression and jaw opening, and the camera, fitted to 68 landmarks [68, 2] in crop pixels (the
    51 inner ones count, see the module docstring).

    With `camera` (a label [25]) the camera is kept and only FLAME is fitted. `init` warm-starts from an earlier
    fit. Without either, the first third of the steps moves the head rigidly only."""
    target = torch.as_tensor(np.asarray(landmarks), dtype=torch.float32) * (_PX / resolution)
    inner = slice(17, 68)
    canonical = ffhq_camera()
    fixed_camera = camera is not None
    if init is not None:
        shape, expr = init.params.shape[0].clone(), init.params.expression[0].clone()
        jaw = init.params.jaw[0, :1].clone()
        rot = matrix_to_axis_angle(init.head_motion[None, :3, :3])[0].clone()
    else:
        shape, expr, jaw = torch.zeros(flame.n_shape), torch.zeros(flame.n_expr), torch.zeros(1)
        rot = torch.zeros(3)
    shift = torch.zeros(3)
    face = [shape, expr, jaw]
    rigid = [] if fixed_camera else [rot, shift]
    for t in face + rigid:
        t.requires_grad_(True)
    opt = torch.optim.Adam([{"params": face, "lr": 0.03}] + ([{"params": rigid, "lr": 0.01}] if rigid else []))
    rigid_steps = 0 if init is not None or fixed_camera else steps // 3

    def evaluate():
        params = FlameParams(shape=shape[None], expression=expr[None],
                             jaw=torch.cat([jaw.clamp(0.0, 0.6), torch.zeros(2)])[None])
        lmk = flame(params).landmarks[0]
        if fixed_camera:
            cam = camera.reshape(-1)[:25].to(torch.float32)
        else:
            cam = _camera_for(_motion(rot, shift), canonical)
        return params, cam, project_flame_points(lmk, cam, int(_PX))

    for step in range(steps):
        _, _, proj = evaluate()
        loss = ((proj - target)[inner] ** 2).sum(dim=1).mean()
        if step >= rigid_steps:
            loss = loss + _SHAPE_REG * (shape ** 2).sum() + _EXPR_REG * (expr ** 2).sum() + _JAW_REG * (jaw ** 2).sum()
        opt.zero_grad()
        loss.backward()
        if step < rigid_steps:
            for t in face:
                t.grad = None     # Adam leaves a parameter without a gradient alone
        opt.step()
        if progress is not None:
            progress(step + 1, steps)
    with torch.no_grad():
        params, cam, proj = evaluate()
        error = float((proj - target)[inner].norm(dim=1).mean()) * resolution / _PX
        motion = _motion(rot, shift) if not fixed_camera else torch.eye(4)
    return FlameFit(params=FlameParams(shape=params.shape.detach(), expression=params.expression.detach(),
                                       jaw=params.jaw.detach()),
                    camera=cam.detach(), head_motion=motion.detach(), error_px=error)


def head_pivot_in_crop(fit: FlameFit, resolution: int) -> tuple:
    """Where the FFHQ pivot of the moved head lands in the crop (pixels) and its depth from the camera."""
    pivot = torch.tensor([*FFHQ_PIVOT, 1.0])
    moved = (fit.head_motion @ pivot)[:3]
    uvz = project_points(moved[None, None], ffhq_camera()[None])[0, 0]
    return (float(uvz[0]) * resolution, float(uvz[1]) * resolution), float(uvz[2])


# ---------------------------------------------------------------------------------------------------- the eyes

def eye_vertex_indices(flame: FlameModel, iris_angle: float = IRIS_ANGLE) -> np.ndarray:
    """[2, 4] vertex indices on the rim of each iris: the image-left eye first (the subject's right, FLAME's right
    eye joint), each towards +x (image right), -x, +y (up), -y. The iris is a flat disc, so its centre is the
    mean of these four, a point inside the eyeball.

    Found from the geometry, so they hold for FLAME and the built-in head alike: an eyeball is the set of
    vertices skinned to its eye joint, its centre is the joint, and the rim points are the vertices nearest to
    `iris_angle` (radians) from the eye's line of sight (+z at rest) in each direction."""
    verts = flame.v_template.detach().double()
    joints = flame.J_regressor.detach().double() @ verts
    out = np.zeros((2, 4), dtype=np.int64)
    c, s = np.cos(iris_angle), np.sin(iris_angle)
    wanted = torch.tensor([(s, 0, c), (-s, 0, c), (0, s, c), (0, -s, c)], dtype=torch.float64)
    for row, joint in enumerate((RIGHT_EYE_JOINT, LEFT_EYE_JOINT)):
        ids = torch.nonzero(flame.lbs_weights[:, joint] > 0.99).flatten()
        if ids.numel() < 20:
            from ..errors import InputError

            raise InputError(f"The FLAME model {flame.name!r} has no eyeball skinned to eye joint {joint}; eye "
                             "fitting needs FLAME's eyeballs.")
        d = torch.nn.functional.normalize(verts[ids] - joints[joint], dim=1)
        out[row] = ids[torch.argmax(d @ wanted.T, dim=0)].numpy()
    return out


def order_iris(points: np.ndarray) -> np.ndarray:
    """One iris's five detected points [5, 2] (centre first) -> centre, rim rightmost, leftmost, top, bottom in
    the image, matching eye_vertex_indices for a face seen upright from the front."""
    rim = points[1:]
    return np.stack([points[0], rim[np.argmax(rim[:, 0])], rim[np.argmin(rim[:, 0])], rim[np.argmin(rim[:, 1])],
                     rim[np.argmax(rim[:, 1])]])


def fit_eye_pose(flame: FlameModel, params: FlameParams, camera: torch.Tensor, eye_landmarks: np.ndarray,
                 resolution: int, *, weights: Optional[np.ndarray] = None, iris_angle: float = IRIS_ANGLE,
                 steps: int = 150, progress: Progress = None) -> tuple:
    """Each eye's yaw and pitch by gradient descent on the re-projection error of its iris: the four rim vertices
    of eye_vertex_indices and the disc's centre against five landmarks per eye.

    eye_landmarks [2, 5, 2] in crop pixels, the image-left eye first, each ordered as order_iris gives; weights
    [2, 5] (default all 1) can leave out points the lids hide. Returns (FlameParams.eyes [1, 6], the weighted mean
    error in crop pixels). An eye pose is the rotation (-pitch, yaw, 0) as an
    axis-angle: no roll, the one rotation the iris cannot show."""
    rims = torch.from_numpy(eye_vertex_indices(flame, iris_angle))
    target = torch.as_tensor(np.asarray(eye_landmarks).reshape(-1, 2), dtype=torch.float32) * (_PX / resolution)
    w = torch.ones(10) if weights is None else torch.as_tensor(np.asarray(weights), dtype=torch.float32).reshape(10)
    w = w / w.sum()
    cam = camera.reshape(-1)[:25].to(torch.float32)
    tilt = torch.zeros(2, 2, requires_grad=True)     # per FLAME eye (left, right): (x, y) of the axis-angle
    opt = torch.optim.Adam([tilt], lr=0.02)
    base = params[0:1]

    def evaluate():
        eyes = torch.cat([tilt, torch.zeros(2, 1)], dim=1).reshape(1, 6)
        rim = flame(base.replace(eyes=eyes)).vertices[0][rims]                  # [2, 4, 3]
        points = torch.cat([rim.mean(dim=1, keepdim=True), rim], dim=1).reshape(-1, 3)
        return eyes, project_flame_points(points, cam, int(_PX))

    for step in range(steps):
        _, proj = evaluate()
        loss = (w * ((proj - target) ** 2).sum(dim=1)).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            tilt.clamp_(-0.8, 0.8)
        if progress is not None:
            progress(step + 1, steps)
    with torch.no_grad():
        eyes, proj = evaluate()
        error = float((w * (proj - target).norm(dim=1)).sum()) * resolution / _PX
    return eyes.detach(), error
