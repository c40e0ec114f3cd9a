"""FLAME space <-> the generator's EG3D world, and head pose folded into the camera.

Spaces:
  * FLAME space: metres, x towards the subject's left, y up, z out of the face.
  * EG3D world (docs/flame.md#placement-in-the-generator-world, docs/camera.md#labels): the generator's orthographic
    rasterisation places the FLAME mesh at world = (box_warp * orth_scale / 2) * (x + sx, y - sy, z) in its front
    and side views (the top view adds sz to z as well), with the model's own orth_scale and orth_shift
    (sx, sy, sz): 2.5 * (x, y + 0.01, z) for the official settings. `Placement` holds this for one model
    (`Placement.of(generator)`); every function here takes one and defaults to the official settings. Cameras are
    OpenCV cam2world 4x4 matrices (x right, y down, z = viewing direction) in that y-up world.

Head pose: the generator was trained on meshes with the global rotation zeroed (DECA sets pose[:, :3] = 0), so a
head rotation R about the FLAME root joint must not go into the vertices. Rendering the rotated head from camera C
equals rendering the unrotated head from C' = M^-1 C, where M is the head's rigid motion in world coordinates;
`fold_head_pose_into_camera` computes C'.

The neck: Next3D's training meshes had a fixed (zero) neck pose, so a neck rotation is out of the generator's
distribution either way. Folding it is optional: pass `neck_rot_aa` (and evaluate FLAME with include_neck=False)
to turn the whole head rigidly, which is exact for every vertex skinned entirely to the neck and its children
and approximate for the lower neck; leave it out to bend the neck in the mesh instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Tuple

import numpy as np
import torch

from ..checks import check_tensor
from ..errors import InputError
from .params import axis_angle_to_matrix

__all__ = ["Placement", "OFFICIAL_PLACEMENT", "FLAME_TO_WORLD_SCALE", "VIEW_OFFSETS", "flame_to_world",
           "world_to_flame", "camera_to_world", "head_pose_transform", "flame_transform_to_world",
           "fold_head_pose_into_camera", "fold_head_pose_into_label"]

VIEWS = ("front", "side", "top")


@dataclass(frozen=True)
class Placement:
    """Where a generator's orthographic views put FLAME points in its world
    (docs/flame.md#placement-in-the-generator-world): world = scale * (p + offset(view)), scale =
    box_warp * orth_scale / 2 and offset (sx, -sy, 0) in the front and side views, (sx, -sy, sz) in the top view,
    for orth_shift (sx, sy, sz).

    The front view fixes x and y, so code that needs one placement uses it (the default view everywhere)."""

    orth_scale: float = 5.0
    orth_shift: Tuple[float, float, float] = (0.0, -0.01, -0.01)
    box_warp: float = 1.0

    @classmethod
    def of(cls, source: Any = None) -> "Placement":
        """The placement of a generator, a Next3DConfig, a Placement, or (None) the official settings."""
        if source is None or isinstance(source, Placement):
            return source or OFFICIAL_PLACEMENT
        config = getattr(source, "config", source)
        try:
            return cls(float(config.orth_scale), tuple(float(x) for x in config.orth_shift),
                       float(config.rendering.box_warp))
        except (AttributeError, TypeError, ValueError):
            raise InputError(f"{type(source).__name__} is not a generator or its config; a placement needs the "
                             "model's orth_scale, orth_shift and box_warp.") from None

    @property
    def scale(self) -> float:
        return 0.5 * self.box_warp * self.orth_scale

    def offset(self, view: str = "front") -> Tuple[float, float, float]:
        if view not in VIEWS:
            raise InputError(f"Unknown view {view!r}; use one of {', '.join(VIEWS)}.")
        sx, sy, sz = self.orth_shift
        return (sx, -sy, sz if view == "top" else 0.0)

    def to_world(self, points: Any, view: str = "front") -> Any:
        """FLAME points [..., 3] (torch tensor or numpy array) -> world, in the same type."""
        return (points + _like(self.offset(view), points)) * self.scale

    def to_flame(self, points: Any, view: str = "front") -> Any:
        """World points [..., 3] -> FLAME space (the inverse of to_world)."""
        return points / self.scale - _like(self.offset(view), points)


def _like(values: Tuple[float, ...], like: Any) -> Any:
    if isinstance(like, torch.Tensor):
        return torch.tensor(values, dtype=like.dtype, device=like.device)
    return np.asarray(values, dtype=np.asarray(like).dtype if np.asarray(like).dtype.kind == "f" else np.float64)


OFFICIAL_PLACEMENT = Placement()
FLAME_TO_WORLD_SCALE = OFFICIAL_PLACEMENT.scale   # 2.5, the official settings' scale
# FLAME-space offsets added before scaling, per orthographic view, with the official settings (docs/flame.md).
VIEW_OFFSETS = {view: OFFICIAL_PLACEMENT.offset(view) for view in VIEWS}


def _points(name: str, points: torch.Tensor) -> torch.Tensor:
    if not isinstance(points, torch.Tensor) or points.ndim < 1 or points.shape[-1] != 3:
        shape = list(points.shape) if isinstance(points, torch.Tensor) else type(points).__name__
        raise InputError(f"{name} must be a tensor of 3-D points [..., 3], got {shape}.")
    if not points.is_floating_point():
        raise InputError(f"{name} has dtype {points.dtype}, expected a floating-point tensor.")
    return points


def flame_to_world(points: torch.Tensor, view: str = "front", placement: Any = None) -> torch.Tensor:
    """FLAME-space points [..., 3] -> EG3D world: scale * (p + offset of the view), of `placement` (a generator,
    its config or a Placement; default the official 2.5 * (x, y + 0.01, z))."""
    return Placement.of(placement).to_world(_points("points", points), view)


def world_to_flame(points: torch.Tensor, view: str = "front", placement: Any = None) -> torch.Tensor:
    """EG3D world points [..., 3] -> FLAME space (the inverse of flame_to_world)."""
    return Placement.of(placement).to_flame(_points("points", points), view)


def camera_to_world(cam2world: Any, placement: Any = None) -> Any:
    """Cameras [..., 4, 4] (numpy or torch) posed in FLAME space -> EG3D world: the same rotation, the position
    placed like the mesh (front view)."""
    out = cam2world.clone() if isinstance(cam2world, torch.Tensor) else np.array(cam2world, dtype=np.float64)
    out[..., :3, 3] = Placement.of(placement).to_world(out[..., :3, 3])
    return out


def _batched(name: str, x: torch.Tensor, tail: tuple) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise InputError(f"{name} must be a torch.Tensor, got {type(x).__name__}.")
    if x.ndim == len(tail):
        x = x.unsqueeze(0)
    check_tensor(name, x, [None, *tail])
    return x


def _expand(name: str, x: torch.Tensor, batch: int) -> torch.Tensor:
    if x.shape[0] == batch:
        return x
    if x.shape[0] != 1:
        raise InputError(f"{name} has batch {x.shape[0]} but the other inputs have {batch}; give the same batch "
                         "(or one row to share it).")
    return x.expand(batch, *x.shape[1:])


def _rigid(rot: torch.Tensor, pivot: torch.Tensor) -> torch.Tensor:
    """[B,3,3] rotation about [B,3] pivot -> [B,4,4]: p -> R (p - pivot) + pivot."""
    m = torch.zeros(rot.shape[0], 4, 4, dtype=rot.dtype, device=rot.device)
    m[:, :3, :3] = rot
    m[:, :3, 3] = pivot - (rot @ pivot.unsqueeze(-1)).squeeze(-1)
    m[:, 3, 3] = 1
    return m


def head_pose_transform(global_rot_aa: torch.Tensor, pivot: torch.Tensor, neck_rot_aa: Optional[torch.Tensor] = None,
                        neck_pivot: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The rigid motion [B, 4, 4] (FLAME space) that FLAME's skinning applies to the head.

    global_rot_aa [B, 3] (axis-angle) turns about `pivot` [B, 3], the root joint. With `neck_rot_aa`, the neck's
    rotation about `neck_pivot` (the rest-pose neck joint) comes first, as in FLAME's kinematic chain. Inputs of
    batch 1 (or without a batch dimension) are shared."""
    rots = [_batched("global_rot_aa", global_rot_aa, (3,))]
    pivots = [_batched("pivot", pivot, (3,))]
    if neck_rot_aa is not None:
        if neck_pivot is None:
            raise InputError("Folding the neck rotation needs neck_pivot, the neck joint in FLAME space "
                             "(FlameOutput.joints[:, 1]).")
        rots.append(_batched("neck_rot_aa", neck_rot_aa, (3,)))
        pivots.append(_batched("neck_pivot", neck_pivot, (3,)))
    batch = max(x.shape[0] for x in rots + pivots)
    dtype = rots[0].dtype
    m = None
    for name, rot, piv in zip(("global", "neck"), rots, pivots):
        step = _rigid(axis_angle_to_matrix(_expand(f"{name} rotation", rot.to(dtype), batch)),
                      _expand(f"{name} pivot", piv.to(dtype), batch))
        m = step if m is None else m @ step
    return m


def flame_transform_to_world(m: torch.Tensor, view: str = "front", placement: Any = None) -> torch.Tensor:
    """A FLAME-space rigid transform [B, 4, 4] expressed in EG3D world coordinates (same rotation, scaled shift)."""
    check_tensor("m", m, [None, 4, 4])
    place = Placement.of(placement)
    offset = _like(place.offset(view), m)
    out = m.clone()
    rot = m[:, :3, :3]
    # world(p) = s (p + o): M_w = [R, s (t + o - R o)]
    out[:, :3, 3] = place.scale * (m[:, :3, 3] + offset - (rot @ offset))
    return out


def fold_head_pose_into_camera(cam2world: torch.Tensor, global_rot_aa: torch.Tensor,
                               neck_rot_aa: Optional[torch.Tensor] = None, *, pivot: torch.Tensor,
                               neck_pivot: Optional[torch.Tensor] = None, placement: Any = None) -> torch.Tensor:
    """Move the camera instead of the head.

    Args:
        cam2world: [B, 4, 4] or [4, 4] OpenCV cam2world (EG3D world).
        global_rot_aa: [B, 3] or [3] head rotation, axis-angle radians (FlameParams.global_rotation).
        neck_rot_aa: optional [B, 3] neck rotation to fold as well (then evaluate FLAME with include_neck=False).
        pivot: [B, 3] or [3] FLAME root joint in FLAME space (FlameOutput.joints[:, 0]).
        neck_pivot: [B, 3] or [3] neck joint in FLAME space (FlameOutput.joints[:, 1]); needed with neck_rot_aa.
        placement: the generator (or its config, or a Placement) whose world the camera is in; default official.
    Returns:
        [B, 4, 4] cam2world C' = M^-1 C, so that the unrotated head seen from C' looks exactly like the rotated head
        seen from C.
    """
    cam2world = _batched("cam2world", cam2world, (4, 4))
    m = head_pose_transform(global_rot_aa, pivot, neck_rot_aa, neck_pivot)
    m_world = flame_transform_to_world(m.to(cam2world.dtype), placement=placement)
    rot, shift = m_world[:, :3, :3], m_world[:, :3, 3:]
    inv = torch.zeros_like(m_world)
    inv[:, :3, :3] = rot.transpose(1, 2)
    inv[:, :3, 3:] = -rot.transpose(1, 2) @ shift
    inv[:, 3, 3] = 1
    batch = max(inv.shape[0], cam2world.shape[0])
    return _expand("head pose", inv, batch) @ _expand("cam2world", cam2world, batch)


def fold_head_pose_into_label(label: torch.Tensor, global_rot_aa: torch.Tensor,
                              neck_rot_aa: Optional[torch.Tensor] = None, *, pivot: torch.Tensor,
                              neck_pivot: Optional[torch.Tensor] = None, placement: Any = None) -> torch.Tensor:
    """fold_head_pose_into_camera on generator camera labels [B, 25] (cam2world 16 + intrinsics 9)."""
    label = _batched("label", label, (25,))
    cam = fold_head_pose_into_camera(label[:, :16].reshape(-1, 4, 4), global_rot_aa, neck_rot_aa, pivot=pivot,
                                     neck_pivot=neck_pivot, placement=placement)
    intr = label[:, 16:].expand(cam.shape[0], -1)
    return torch.cat([cam.reshape(-1, 16), intr], dim=1)
