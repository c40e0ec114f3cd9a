"""The generator's input from a posed mesh of a FLAME-topology head, without its coefficients (numpy only).

A front end that has the mesh itself (Blender's evaluated rig: shape keys of any name, drivers, constrained bones,
sculpted corrections) gives it here instead of FLAME parameters. What the generator was trained on is the head in
its canonical orientation with the head pose carried by the camera (docs/flame.md#head-pose), so:

- the head's rigid motion is a least-squares similarity fit of the skull (`skull_region`: vertices that only the
  head's rigid motion moves) from the same mesh unposed to the posed mesh (`HeadFrame`). Fitting against the
  mesh's own unposed state rather than the model's template keeps the identity shape out of the pose: a shaped
  skull fitted to the average one would tilt and shift the head by whatever the shape changed;
- the mesh's own coordinate frame (a rig may keep its vertices y-up like FLAME or z-up like Blender) is found once
  by fitting its rest skull (the Basis) to the model's template (`MeshHead.data_frame`);
- the 68 landmarks are barycentric points of the canonical mesh (`landmarks`), the 17 jaw-contour points chosen by
  the head's yaw from the dynamic embedding as FLAME does (`contour_row`, smplx's find_dynamic_lmk_idx_and_bcoords).

Scale is part of the fit (a similarity, not only a rotation and translation): a head scaled as a whole (object or
bone scale) stays the same head seen from further away, and the camera folding keeps the image exact. It never
absorbs the identity, because the reference is the same mesh unposed, whose scale is the posed one's.

For a mesh made only by FLAME's own blend shapes and skinning this reproduces FLAME evaluated from the same
coefficients with the head's rigid motion (global and neck rotation) moved into the camera, to float rounding
(tests/core/test_mesh_pose.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Optional

import numpy as np

from ..errors import InputError
from .model_data import N_CONTOUR_LANDMARKS

__all__ = ["Similarity", "fit_similarity", "skull_region", "contour_row", "yaw_degrees", "landmarks", "MeshHead",
           "HeadFrame", "HEAD_JOINT"]

HEAD_JOINT = 1               # FLAME's neck joint: skull, scalp and face hang from it (docs/flame.md#flame-space)
MIN_SKULL_VERTICES = 100     # fewer only when the model has fewer candidates (tiny test models)
SKULL_TOLERANCE = 0.002      # of the model's largest expression / pose-corrective displacement


# ------------------------------------------------------------------------------------------------ similarity

@dataclass(frozen=True)
class Similarity:
    """p -> scale * rotation @ p + translation."""

    scale: float
    rotation: np.ndarray     # [3, 3]
    translation: np.ndarray  # [3]

    @classmethod
    def identity(cls) -> "Similarity":
        return cls(1.0, np.eye(3), np.zeros(3))

    @classmethod
    def from_matrix(cls, m: np.ndarray) -> "Similarity":
        """A 4 x 4 similarity matrix (uniform scale times rotation, translation) as a Similarity."""
        m = np.asarray(m, dtype=np.float64)
        scale = float(np.cbrt(np.linalg.det(m[:3, :3])))
        return cls(scale, m[:3, :3] / scale, m[:3, 3].copy())

    def apply(self, points: np.ndarray) -> np.ndarray:
        p = np.asarray(points, dtype=np.float64)
        return self.scale * p @ self.rotation.T + self.translation

    def inverse(self) -> "Similarity":
        rt = self.rotation.T
        return Similarity(1.0 / self.scale, rt, -(rt @ self.translation) / self.scale)

    def then(self, other: "Similarity") -> "Similarity":
        """`other` applied after this one."""
        return Similarity(other.scale * self.scale, other.rotation @ self.rotation,
                          other.scale * other.rotation @ self.translation + other.translation)

    @property
    def matrix(self) -> np.ndarray:
        m = np.eye(4)
        m[:3, :3] = self.scale * self.rotation
        m[:3, 3] = self.translation
        return m


def fit_similarity(source: np.ndarray, target: np.ndarray, *, scale: bool = True) -> Similarity:
    """The similarity (or, with scale=False, the rigid motion) that maps `source` [N, 3] onto `target` [N, 3] with
    the least squared error (Umeyama 1991), never a reflection; float64 throughout."""
    src = np.asarray(source, dtype=np.float64)
    dst = np.asarray(target, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 3 or len(src) < 3:
        raise InputError(f"A rigid fit needs two matching point sets [N >= 3, 3], got {list(src.shape)} and "
                         f"{list(dst.shape)}.")
    if not (np.isfinite(src).all() and np.isfinite(dst).all()):
        raise InputError("The mesh has non-finite vertex positions; check its shape keys, drivers and modifiers.")
    mu_s, mu_d = src.mean(0), dst.mean(0)
    a, b = src - mu_s, dst - mu_d
    u, sigma, vt = np.linalg.svd(b.T @ a / len(src))
    d = np.ones(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[2] = -1.0
    rotation = u @ np.diag(d) @ vt
    var = float((a * a).sum() / len(src))
    if var <= 0 or sigma[1] <= 1e-12 * max(sigma[0], 1e-300):
        raise InputError("The head's skull region is degenerate on this mesh (its vertices are collapsed onto a "
                         "point or a line); the mesh does not look like the head model.")
    s = float((sigma * d).sum() / var) if scale else 1.0
    if s <= 0:
        raise InputError("The mesh's skull is turned inside out relative to the head model; it cannot be posed.")
    return Similarity(s, rotation, mu_d - s * rotation @ mu_s)


# ------------------------------------------------------------------------------------------------ skull region

def _displacement(dirs: np.ndarray) -> np.ndarray:
    """Largest displacement [V] of each vertex over the components of blend shapes [V, 3, K]."""
    if dirs.size == 0:
        return np.zeros(dirs.shape[0])
    return np.sqrt((np.asarray(dirs, dtype=np.float64) ** 2).sum(axis=1)).max(axis=1)


def skull_region(weights: np.ndarray, exprdirs: np.ndarray, posedirs: np.ndarray, *,
                 tolerance: float = SKULL_TOLERANCE, min_vertices: int = MIN_SKULL_VERTICES) -> np.ndarray:
    """Indices of the vertices that move only with the head's rigid motion: skinned entirely to the neck joint (so
    the root and neck rotations move them as one body) and moved by no expression and no pose corrective beyond
    `tolerance` of the model's largest such displacement. Jaw, eyes, mouth and lower neck are left out.

    When fewer than `min_vertices` pass (a coarse model), the least-moved head vertices make up the number."""
    weights = np.asarray(weights, dtype=np.float64)
    # Weight 1 up to rounding: even 1% on the jaw moves a vertex by 1e-5 of FLAME units when the jaw opens.
    head = weights[:, HEAD_JOINT] >= 1 - 1e-4
    if head.sum() < 3:
        # Not a FLAME-like skinning; take what the root and the neck carry together.
        head = weights[:, :HEAD_JOINT + 1].sum(axis=1) >= 1 - 1e-4
    expr, pose = _displacement(exprdirs), _displacement(posedirs)
    motion = np.maximum(expr / max(expr.max(), 1e-12), pose / max(pose.max(), 1e-12))
    candidates = np.flatnonzero(head)
    if len(candidates) < 3:
        raise InputError("The head model has no skull region (no vertices skinned to the neck joint alone); it "
                         "is not a FLAME-layout model.")
    chosen = candidates[motion[candidates] <= tolerance]
    want = min(min_vertices, len(candidates))
    if len(chosen) < want:
        chosen = np.sort(candidates[np.argsort(motion[candidates], kind="stable")[:want]])
    return chosen.astype(np.int64)


# ------------------------------------------------------------------------------------------------ landmarks

def yaw_degrees(rotation: np.ndarray) -> float:
    """The yaw FLAME's dynamic contour is chosen by, in degrees: smplx's rot_mat_to_euler of the head rotation,
    negated, so a head turned towards its left (about +y, the face towards +x) has a negative yaw."""
    r = np.asarray(rotation, dtype=np.float64)
    sy = math.sqrt(r[0, 0] ** 2 + r[1, 0] ** 2)
    return -math.degrees(math.atan2(-r[2, 0], sy))


def contour_row(rotation: np.ndarray) -> int:
    """The row of the dynamic embedding (79 rows: yaw 0..39 degrees, then -1..-39) for a head rotation, as smplx's
    find_dynamic_lmk_idx_and_bcoords picks it: the yaw rounded to a degree (half to even, like torch.round) and
    clamped to 39; beyond -39 degrees the last row."""
    y = int(np.round(min(yaw_degrees(rotation), 39.0)))
    if y >= 0:
        return y
    return 78 if y < -39 else 39 - y


def landmarks(vertices: np.ndarray, faces: np.ndarray, faces_idx: np.ndarray, bary_coords: np.ndarray,
              dynamic_faces_idx: Optional[np.ndarray] = None, dynamic_bary_coords: Optional[np.ndarray] = None,
              rotation: Optional[np.ndarray] = None) -> np.ndarray:
    """The 68 landmarks [68, 3] of a mesh [V, 3]: barycentric points of its faces (the static 68-point embedding),
    the 17 jaw-contour points taken from the dynamic embedding's row for the head `rotation` when both are given."""
    idx, bary = np.asarray(faces_idx), np.asarray(bary_coords, dtype=np.float64)
    if dynamic_faces_idx is not None and rotation is not None:
        row = contour_row(rotation)
        idx = np.concatenate([np.asarray(dynamic_faces_idx)[row], idx[N_CONTOUR_LANDMARKS:]])
        bary = np.concatenate([np.asarray(dynamic_bary_coords, dtype=np.float64)[row], bary[N_CONTOUR_LANDMARKS:]])
    corners = np.asarray(vertices, dtype=np.float64)[np.asarray(faces)[idx]]      # [68, 3 corners, 3]
    return (corners * bary[:, :, None]).sum(axis=1)


# ------------------------------------------------------------------------------------------------ per head

@dataclass(frozen=True)
class HeadFrame:
    """One posed mesh turned into the generator's input: `vertices` and `landmarks` in FLAME space with the head's
    rigid motion removed, and `head_to_mesh`, the motion that puts that canonical head where the mesh is (FLAME
    space -> the mesh's own coordinates), for folding into the camera."""

    vertices: np.ndarray      # [V, 3] float32
    landmarks: np.ndarray     # [68, 3] float32
    head_to_mesh: np.ndarray  # [4, 4] float64 similarity
    rotation: np.ndarray      # [3, 3] the head's rotation in FLAME axes (what chose the jaw contour)
    residual: float           # RMS distance of the fitted skull to the posed one, in FLAME units

    @property
    def mesh_input(self) -> np.ndarray:
        """[V + 68, 3] float32: the generator's mesh input."""
        return np.concatenate([self.vertices, self.landmarks]).astype(np.float32)


@dataclass(frozen=True)
class MeshHead:
    """What posing a mesh needs from a FLAME-layout head model: its template, faces, skull region and landmark
    embedding (`from_arrays` takes them from model_data's layout)."""

    template: np.ndarray       # [V, 3]
    faces: np.ndarray          # [F, 3]
    skull: np.ndarray          # [K] vertex indices
    lmk_faces_idx: np.ndarray  # [68]
    lmk_bary_coords: np.ndarray  # [68, 3]
    dynamic_lmk_faces_idx: Optional[np.ndarray] = None     # [79, 17]
    dynamic_lmk_bary_coords: Optional[np.ndarray] = None   # [79, 17, 3]

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> "MeshHead":
        a = arrays
        return cls(template=np.asarray(a["v_template"], np.float64), faces=np.asarray(a["faces"], np.int64),
                   skull=skull_region(a["weights"], a["exprdirs"], a["posedirs"]),
                   lmk_faces_idx=np.asarray(a["lmk_faces_idx"], np.int64),
                   lmk_bary_coords=np.asarray(a["lmk_bary_coords"], np.float64),
                   dynamic_lmk_faces_idx=a.get("dynamic_lmk_faces_idx"),
                   dynamic_lmk_bary_coords=a.get("dynamic_lmk_bary_coords"))

    @property
    def n_vertices(self) -> int:
        return int(self.template.shape[0])

    def _check(self, name: str, points: np.ndarray) -> np.ndarray:
        p = np.asarray(points, dtype=np.float64)
        if p.shape != (self.n_vertices, 3):
            raise InputError(f"The {name} has {list(p.shape)} points; the head model has {self.n_vertices} "
                             "vertices [V, 3].")
        return p

    def data_frame(self, basis: np.ndarray) -> Similarity:
        """The mesh's coordinates -> FLAME space, from its rest shape (a rig's Basis): the similarity that lays its
        skull onto the template's. Identity for a mesh kept in FLAME's frame and units."""
        return fit_similarity(self._check("rest mesh", basis)[self.skull], self.template[self.skull])

    def frame(self, posed: np.ndarray, rest: np.ndarray, to_flame: Similarity = Similarity.identity()) -> HeadFrame:
        """The generator's input for a posed mesh [V, 3] given the same mesh unposed [V, 3] (shape keys applied,
        no skeleton), both in the mesh's coordinates, and `to_flame` from `data_frame`."""
        posed, rest = self._check("posed mesh", posed), self._check("unposed mesh", rest)
        motion = fit_similarity(rest[self.skull], posed[self.skull])          # rest -> posed, mesh coordinates
        canonical = motion.inverse().then(to_flame)                           # posed -> canonical FLAME
        vertices = canonical.apply(posed)
        rotation = to_flame.rotation @ motion.rotation @ to_flame.rotation.T
        lmk = landmarks(vertices, self.faces, self.lmk_faces_idx, self.lmk_bary_coords,
                        self.dynamic_lmk_faces_idx, self.dynamic_lmk_bary_coords, rotation)
        fitted = motion.apply(rest[self.skull])
        residual = float(np.sqrt(((fitted - posed[self.skull]) ** 2).sum(1).mean())) * canonical.scale
        return HeadFrame(vertices=vertices.astype(np.float32), landmarks=lmk.astype(np.float32),
                         head_to_mesh=canonical.inverse().matrix, rotation=rotation, residual=residual)
