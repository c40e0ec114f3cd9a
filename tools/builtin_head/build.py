"""Assembling the built-in head: every stage run in order, the arrays in the converted-FLAME layout
(core/flame/model_data.py; float32 and int64), and the atomic .npz write."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from core.io.atomic import atomic_write

from .anatomy import PARENTS
from .blendshapes.expressions import EXPRESSION_NAMES, expression_fields
from .blendshapes.fields import Parts
from .blendshapes.pose import pose_correctives
from .blendshapes.shapes import SHAPE_NAMES, orthogonalise, shape_fields
from .landmarks import build_landmarks
from .mesh import build_mesh
from .skinning import build_joint_regressor, build_weights
from .uv import build_uvs
from .uv_mask import build_uv_mask

NAME = "next3d-builtin-head-v1"


def build() -> dict:
    """All arrays of the built-in head, in the converted-FLAME layout."""
    M = build_mesh()
    uvs, uv_faces = build_uvs(M)
    mask = build_uv_mask(M, uvs, uv_faces)
    weights = build_weights(M)
    regressor = build_joint_regressor(M)
    lmk_faces, lmk_bary = build_landmarks(M)
    parts = Parts(M)
    shapes = orthogonalise(shape_fields(parts))
    names, exprs = expression_fields(parts)
    assert tuple(names) == EXPRESSION_NAMES
    posedirs = pose_correctives(parts)
    f32 = np.float32
    return {
        "v_template": M["pos"].astype(f32),
        "faces": M["faces"].astype(np.int64),
        "shapedirs": np.stack(shapes, -1).astype(f32),
        "exprdirs": np.stack(exprs, -1).astype(f32),
        "posedirs": posedirs.astype(f32),
        "J_regressor": regressor.astype(f32),
        "weights": weights.astype(f32),
        "parents": PARENTS.copy(),
        "lmk_faces_idx": lmk_faces.astype(np.int64),
        "lmk_bary_coords": lmk_bary.astype(f32),
        "uvs": uvs.astype(f32),
        "uv_faces": uv_faces.astype(np.int64),
        "uv_face_mask": mask.astype(f32),
        "name": np.array(NAME),
        # Documentation arrays (ignored by the FLAME loader).
        "shape_names": np.array(SHAPE_NAMES),
        "expression_names": np.array(EXPRESSION_NAMES),
    }


def write(arrays: dict, path: Path) -> Path:
    """Write the arrays as a compressed .npz, atomically (a crash never leaves a half-written asset)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # np.savez_compressed given a name appends ".npz" when it is missing; given a file handle it does not.
    target = path if path.name.endswith(".npz") else path.with_name(path.name + ".npz")
    atomic_write(target, lambda fh: np.savez_compressed(fh, **arrays))
    return path
