"""FLAME parameters that drive the generator: a validated, batched record plus gaze <-> eye-pose conversions.

Conventions (FLAME's canonical frame): x towards the subject's left, y up, z out of the face (towards a frontal
camera). Rotations are axis-angle vectors in radians (direction = axis, length = angle, right-handed).

Gaze: `yaw` > 0 turns the eye towards the subject's left (+x; image right in a frontal view), `pitch` > 0 turns it
up (+y). An eye at rest looks along +z; the eye pose of (yaw, pitch) is the rotation Ry(yaw) @ Rx(-pitch), which
sends +z to (sin(yaw) cos(pitch), sin(pitch), cos(yaw) cos(pitch)) and has no roll about the line of sight. Eye poses
are relative to the head (FLAME's eye joints hang from the neck joint).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

import numpy as np
import torch

from ..errors import InputError

__all__ = ["FlameParams", "ParamField", "PARAM_FIELDS", "POSE_FIELDS", "gaze_to_eye_pose", "eye_pose_to_gaze",
           "gaze_to_eyes", "eyes_to_gaze", "axis_angle_to_matrix", "matrix_to_axis_angle", "MAX_COEFFICIENT",
           "MAX_ROTATION"]

MAX_COEFFICIENT = 10.0          # |shape| or |expression| coefficient beyond this is not a plausible FLAME face
MAX_ROTATION = math.pi          # longest sensible axis-angle vector (radians)
_ROTATION_TOLERANCE = 1e-4


@dataclass(frozen=True)
class ParamField:
    """One FlameParams field: its size per sample (None = the model's), units and the sanity limit."""

    name: str
    size: Optional[int]
    units: str
    limit: float
    description: str


PARAM_FIELDS = (
    ParamField("shape", None, "coefficients (standard deviations of FLAME's identity space), unitless",
               MAX_COEFFICIENT, "identity: FLAME 2020/2023 have 300 components; DECA/Next3D used the first 100"),
    ParamField("expression", None, "coefficients (standard deviations of FLAME's expression space), unitless",
               MAX_COEFFICIENT, "expression: FLAME 2020/2023 have 100 components; DECA/Next3D used the first 50"),
    ParamField("jaw", 3, "axis-angle, radians", MAX_ROTATION,
               "jaw rotation about the jaw joint; opening the mouth is a positive rotation about +x"),
    ParamField("neck", 3, "axis-angle, radians", MAX_ROTATION,
               "neck rotation about the neck joint (Next3D's training data used a fixed zero neck)"),
    ParamField("global_rotation", 3, "axis-angle, radians", MAX_ROTATION,
               "head rotation about FLAME's root joint; never applied to the generator's mesh, folded into the "
               "camera instead (conversions.fold_head_pose_into_camera)"),
    ParamField("eyes", 6, "axis-angle, radians: left eye (3) then right eye (3)", MAX_ROTATION,
               "eyeball rotations about the eye joints; see gaze_to_eyes for yaw/pitch angles"),
)
POSE_FIELDS = ("global_rotation", "neck", "jaw", "eyes")   # FLAME's pose vector order: joints 0, 1, 2, 3-4
_FIELDS = {f.name: f for f in PARAM_FIELDS}

ArrayLike = Union[torch.Tensor, np.ndarray, Sequence[float], Sequence[Sequence[float]], None]


def _as_tensor(name: str, value: Any) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        t = value
    else:
        try:
            t = torch.as_tensor(np.asarray(value, dtype=np.float32))
        except (TypeError, ValueError):
            raise InputError(f"FlameParams.{name} must be numbers (a tensor, array or list), got "
                             f"{type(value).__name__}.") from None
    if not t.is_floating_point():
        t = t.to(torch.float32)
    if t.ndim == 1:
        t = t.unsqueeze(0)
    if t.ndim != 2:
        raise InputError(f"FlameParams.{name} has shape {list(t.shape)}; give [batch, n] (or [n] for one sample).")
    return t


@dataclass(frozen=True, eq=False)
class FlameParams:
    """Batched FLAME parameters; every field is a float tensor [B, n] (see PARAM_FIELDS for sizes and units).

    Fields left out are zero. A 1-D field is one sample; a batch-1 field is repeated to the batch of the others.
    Construction validates: wrong sizes, NaN/inf and absurd values (|coefficient| > 10, rotations longer than pi)
    raise InputError naming the field. Shape and expression may be shorter than the model's: `padded` (called by
    the model) adds the missing trailing coefficients as zeros.
    """

    shape: ArrayLike = None             # [B, S] identity coefficients
    expression: ArrayLike = None        # [B, E] expression coefficients
    jaw: ArrayLike = None               # [B, 3] axis-angle, radians
    neck: ArrayLike = None              # [B, 3] axis-angle, radians
    global_rotation: ArrayLike = None   # [B, 3] axis-angle, radians (folded into the camera)
    eyes: ArrayLike = None              # [B, 6] axis-angle, radians: left eye then right eye

    def __post_init__(self) -> None:
        given = {f.name: _as_tensor(f.name, getattr(self, f.name)) for f in PARAM_FIELDS
                 if getattr(self, f.name) is not None}
        ref = next(iter(given.values()), None)
        dtype = ref.dtype if ref is not None else torch.float32
        device = ref.device if ref is not None else torch.device("cpu")
        batch = max((t.shape[0] for t in given.values()), default=1)
        if batch < 1:
            raise InputError("FlameParams got fields with 0 rows; give at least one sample.")
        for name, t in given.items():
            if t.device != device:
                raise InputError(f"FlameParams.{name} is on {t.device} but the other fields are on {device}; put "
                                 "them on one device.")
            if t.shape[0] not in (1, batch):
                sizes = {n: int(v.shape[0]) for n, v in given.items()}
                raise InputError(f"FlameParams fields have different batch sizes {sizes}; give every field the same "
                                 "number of rows (or one row to share it).")
        for f in PARAM_FIELDS:
            t = given.get(f.name)
            if t is None:
                t = torch.zeros(batch, f.size or 0, dtype=dtype, device=device)
            else:
                t = t.to(dtype)
                if t.shape[0] != batch:
                    t = t.expand(batch, -1)
            object.__setattr__(self, f.name, t)
        self.validate()

    # -- checks
    def validate(self) -> None:
        """Raise InputError naming the field (and batch entry) with a wrong size, NaN/inf or an absurd value."""
        with torch.no_grad():
            for f in PARAM_FIELDS:
                t = getattr(self, f.name)
                if f.size is not None and t.shape[1] != f.size:
                    raise InputError(f"FlameParams.{f.name} has {t.shape[1]} values per sample; it needs exactly "
                                     f"{f.size} ({f.units}).")
                if t.numel() == 0:
                    continue
                finite = torch.isfinite(t)
                if not bool(finite.all()):
                    b = int((~finite).any(dim=1).nonzero()[0, 0])
                    raise InputError(f"FlameParams.{f.name} contains NaN or infinite values (batch entry {b}); check "
                                     "the values you pass in.")
                if f.size is None:
                    mag = t.abs()
                    if float(mag.max()) > f.limit:
                        b, i = (int(v) for v in (mag == mag.max()).nonzero()[0])
                        raise InputError(
                            f"FlameParams.{f.name}[{i}] is {float(t[b, i]):.4g} (batch entry {b}); FLAME "
                            f"{f.name} coefficients are in standard deviations and stay within +-{f.limit:g}. "
                            "Pass coefficients, not vertex offsets, and check the scaling.")
                else:
                    norms = torch.linalg.vector_norm(t.reshape(t.shape[0], -1, 3), dim=-1)
                    if float(norms.max()) > f.limit + _ROTATION_TOLERANCE:
                        b = int((norms == norms.max()).nonzero()[0, 0])
                        raise InputError(
                            f"FlameParams.{f.name} holds a rotation of {float(norms.max()):.4g} rad (batch entry "
                            f"{b}); axis-angle rotations must be at most pi ({math.pi:.4f}) rad. Give radians, not "
                            "degrees.")

    # -- sizes
    @property
    def batch_size(self) -> int:
        return int(self.jaw.shape[0])

    @property
    def n_shape(self) -> int:
        return int(self.shape.shape[1])

    @property
    def n_expr(self) -> int:
        return int(self.expression.shape[1])

    @property
    def dtype(self) -> torch.dtype:
        return self.jaw.dtype

    @property
    def device(self) -> torch.device:
        return self.jaw.device

    @property
    def left_eye(self) -> torch.Tensor:
        return self.eyes[:, :3]

    @property
    def right_eye(self) -> torch.Tensor:
        return self.eyes[:, 3:]

    def __repr__(self) -> str:
        return (f"FlameParams(batch={self.batch_size}, shape={self.n_shape}, expression={self.n_expr}, "
                f"dtype={self.dtype})")

    # -- construction helpers
    @classmethod
    def zeros(cls, batch: int = 1, n_shape: int = 0, n_expr: int = 0,
              dtype: torch.dtype = torch.float32, device: Union[str, torch.device] = "cpu") -> "FlameParams":
        """All-zero parameters: the FLAME template, mouth closed, eyes and head straight."""
        if batch < 1 or n_shape < 0 or n_expr < 0:
            raise InputError(f"FlameParams.zeros needs batch >= 1 and non-negative sizes, got batch={batch}, "
                             f"n_shape={n_shape}, n_expr={n_expr}.")
        return cls(shape=torch.zeros(batch, n_shape, dtype=dtype, device=device),
                   expression=torch.zeros(batch, n_expr, dtype=dtype, device=device))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "FlameParams":
        """From a mapping of field name -> array (missing fields are zero); unknown names raise InputError."""
        unknown = sorted(set(values) - set(_FIELDS))
        if unknown:
            raise InputError(f"Unknown FLAME parameter(s) {', '.join(map(repr, unknown))}; the fields are "
                             f"{', '.join(_FIELDS)}.")
        return cls(**{k: v for k, v in values.items() if v is not None})

    def to_dict(self) -> dict:
        """Field name -> float32 numpy array [B, n]."""
        return {f.name: getattr(self, f.name).detach().cpu().to(torch.float32).numpy().copy() for f in PARAM_FIELDS}

    def replace(self, **changes: Any) -> "FlameParams":
        """A copy with some fields replaced (validated again)."""
        return replace(self, **changes)

    def padded(self, n_shape: int, n_expr: int) -> "FlameParams":
        """Shape/expression zero-padded to the model's sizes; more coefficients than the model has is an error."""
        for name, have, want in (("shape", self.n_shape, n_shape), ("expression", self.n_expr, n_expr)):
            if have > want:
                raise InputError(f"FlameParams.{name} has {have} coefficients but the FLAME model has only {want}; "
                                 f"drop the extra ones (keep the first {want}).")
        if self.n_shape == n_shape and self.n_expr == n_expr:
            return self
        return replace(self, shape=_pad(self.shape, n_shape), expression=_pad(self.expression, n_expr))

    def __getitem__(self, index: Union[int, slice, torch.Tensor, Sequence[int]]) -> "FlameParams":
        """Select batch entries (an int keeps a batch of one)."""
        if isinstance(index, int):
            if not -self.batch_size <= index < self.batch_size:
                raise InputError(f"Batch entry {index} does not exist; the parameters hold {self.batch_size}.")
            index = slice(index, index + 1 if index != -1 else None)
        return replace(self, **{f.name: getattr(self, f.name)[index] for f in PARAM_FIELDS})

    def __len__(self) -> int:
        return self.batch_size

    @classmethod
    def cat(cls, items: Iterable["FlameParams"]) -> "FlameParams":
        """Concatenate along the batch, zero-padding shape/expression to the longest."""
        items = list(items)
        if not items:
            raise InputError("FlameParams.cat needs at least one FlameParams.")
        n_shape = max(p.n_shape for p in items)
        n_expr = max(p.n_expr for p in items)
        items = [p.padded(n_shape, n_expr) for p in items]
        return cls(**{f.name: torch.cat([getattr(p, f.name) for p in items]) for f in PARAM_FIELDS})

    def to(self, device: Union[str, torch.device, None] = None, dtype: Optional[torch.dtype] = None) -> "FlameParams":
        return replace(self, **{f.name: getattr(self, f.name).to(device=device, dtype=dtype) for f in PARAM_FIELDS})

    def full_pose(self, *, include_global_rotation: bool = True, include_neck: bool = True) -> torch.Tensor:
        """FLAME's pose vector [B, 15]: global, neck, jaw, left eye, right eye (axis-angle)."""
        glob = self.global_rotation if include_global_rotation else torch.zeros_like(self.global_rotation)
        neck = self.neck if include_neck else torch.zeros_like(self.neck)
        return torch.cat([glob, neck, self.jaw, self.eyes], dim=1)

    def with_gaze(self, left_yaw: Any, left_pitch: Any, right_yaw: Any = None,
                  right_pitch: Any = None) -> "FlameParams":
        """A copy with the eyes set from gaze angles in radians (the right eye copies the left when omitted)."""
        eyes = gaze_to_eyes(left_yaw, left_pitch, left_yaw if right_yaw is None else right_yaw,
                            left_pitch if right_pitch is None else right_pitch)
        eyes = eyes.to(self.dtype).to(self.device).reshape(-1, 6)
        return replace(self, eyes=eyes)


def _pad(t: torch.Tensor, n: int) -> torch.Tensor:
    if t.shape[1] == n:
        return t
    return torch.cat([t, t.new_zeros(t.shape[0], n - t.shape[1])], dim=1)


# ----------------------------------------------------------------------------------------------------------------
# Rotations

def axis_angle_to_matrix(aa: torch.Tensor) -> torch.Tensor:
    """Rodrigues: axis-angle [..., 3] -> rotation matrices [..., 3, 3] (exact at zero)."""
    angle = torch.linalg.vector_norm(aa, dim=-1, keepdim=True)[..., None]          # [..., 1, 1]
    k = torch.zeros(*aa.shape[:-1], 3, 3, dtype=aa.dtype, device=aa.device)
    x, y, z = aa.unbind(-1)
    k[..., 0, 1], k[..., 0, 2], k[..., 1, 2] = -z, y, -x
    k[..., 1, 0], k[..., 2, 0], k[..., 2, 1] = z, -y, x
    small = angle < 1e-6
    safe = torch.where(small, torch.ones_like(angle), angle)
    a = torch.where(small, 1 - angle ** 2 / 6, torch.sin(safe) / safe)                 # sin(t)/t
    b = torch.where(small, 0.5 - angle ** 2 / 24, (1 - torch.cos(safe)) / safe ** 2)  # (1-cos t)/t^2
    eye = torch.eye(3, dtype=aa.dtype, device=aa.device).expand_as(k)
    return eye + a * k + b * (k @ k)


def matrix_to_axis_angle(rot: torch.Tensor) -> torch.Tensor:
    """Rotation matrices [..., 3, 3] -> axis-angle [..., 3] with angle in [0, pi].

    Goes through the unit quaternion, taking it from whichever of w, x, y, z is largest so that rotations near
    180 degrees stay accurate."""
    m = rot
    m00, m01, m02 = m[..., 0, 0], m[..., 0, 1], m[..., 0, 2]
    m10, m11, m12 = m[..., 1, 0], m[..., 1, 1], m[..., 1, 2]
    m20, m21, m22 = m[..., 2, 0], m[..., 2, 1], m[..., 2, 2]
    four_sq = torch.stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], -1)
    q_abs = torch.sqrt(torch.clamp(four_sq, min=0))                 # 2|w|, 2|x|, 2|y|, 2|z|
    # Row k is 4 q_k q (components w, x, y, z), from the diagonal and the (anti)symmetric parts of m.
    cand = torch.stack([
        torch.stack([four_sq[..., 0], m21 - m12, m02 - m20, m10 - m01], -1),
        torch.stack([m21 - m12, four_sq[..., 1], m10 + m01, m02 + m20], -1),
        torch.stack([m02 - m20, m10 + m01, four_sq[..., 2], m12 + m21], -1),
        torch.stack([m10 - m01, m20 + m02, m21 + m12, four_sq[..., 3]], -1),
    ], -2) / (2 * torch.clamp(q_abs, min=1e-12))[..., None]
    best = q_abs.argmax(dim=-1)
    q = torch.gather(cand, -2, best[..., None, None].expand(*best.shape, 1, 4)).squeeze(-2)
    q = q * torch.where(q[..., :1] < 0, -1.0, 1.0).to(q.dtype)      # w >= 0: angle in [0, pi]
    w, v = q[..., 0:1], q[..., 1:]
    s = torch.linalg.vector_norm(v, dim=-1, keepdim=True)
    angle = 2 * torch.atan2(s, w)
    small = s < 1e-7
    scale = torch.where(small, 2 / torch.clamp(w, min=1e-12), angle / torch.where(small, torch.ones_like(s), s))
    return v * scale


# ----------------------------------------------------------------------------------------------------------------
# Gaze

def _angles(name: str, value: Any, limit: float) -> torch.Tensor:
    t = value if isinstance(value, torch.Tensor) else torch.as_tensor(np.asarray(value, dtype=np.float32))
    if not t.is_floating_point():
        t = t.to(torch.float32)
    if not bool(torch.isfinite(t).all()):
        raise InputError(f"Gaze {name} contains NaN or infinite values.")
    if t.numel() and float(t.abs().max()) > limit + 1e-6:
        raise InputError(f"Gaze {name} of {float(t.abs().max()):.4g} rad is out of range (at most {limit:.4f} rad); "
                         "give radians, not degrees.")
    return t


def gaze_to_eye_pose(yaw: Any, pitch: Any) -> torch.Tensor:
    """Gaze angles (radians, any matching shape [...]) -> one eye's axis-angle pose [..., 3].

    yaw > 0 looks towards the subject's left (+x), pitch > 0 looks up (+y); see the module docstring."""
    yaw = _angles("yaw", yaw, math.pi)
    pitch = _angles("pitch", pitch, math.pi / 2)
    yaw, pitch = torch.broadcast_tensors(yaw, pitch.to(yaw.dtype))
    zero = torch.zeros_like(yaw)
    ry = axis_angle_to_matrix(torch.stack([zero, yaw, zero], dim=-1))
    rx = axis_angle_to_matrix(torch.stack([-pitch, zero, zero], dim=-1))
    return matrix_to_axis_angle(ry @ rx)


def eye_pose_to_gaze(eye_pose: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One eye's axis-angle pose [..., 3] -> (yaw, pitch) in radians of its line of sight (roll is dropped)."""
    if not isinstance(eye_pose, torch.Tensor) or eye_pose.shape[-1:] != (3,):
        raise InputError("eye_pose_to_gaze needs a tensor of axis-angle eye poses [..., 3].")
    d = axis_angle_to_matrix(eye_pose)[..., :, 2]     # where the eye's +z axis points
    return torch.atan2(d[..., 0], d[..., 2]), torch.asin(torch.clamp(d[..., 1], -1, 1))


def gaze_to_eyes(left_yaw: Any, left_pitch: Any, right_yaw: Any, right_pitch: Any) -> torch.Tensor:
    """Gaze angles of both eyes -> FlameParams.eyes [..., 6] (left eye pose then right eye pose)."""
    return torch.cat([gaze_to_eye_pose(left_yaw, left_pitch), gaze_to_eye_pose(right_yaw, right_pitch)], dim=-1)


def eyes_to_gaze(eyes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """FlameParams.eyes [..., 6] -> (left_yaw, left_pitch, right_yaw, right_pitch) in radians."""
    if not isinstance(eyes, torch.Tensor) or eyes.shape[-1:] != (6,):
        raise InputError("eyes_to_gaze needs a tensor of eye poses [..., 6] (left eye then right eye).")
    return (*eye_pose_to_gaze(eyes[..., :3]), *eye_pose_to_gaze(eyes[..., 3:]))
