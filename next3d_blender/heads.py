"""The head models a rig is built from and evaluated with, as FLAME-layout arrays (core/flame/model_data.py).

No bpy here: the rig builder (Blender's process) and the engine (the worker process) both call `head_arrays`, so
the shape keys a user keyframes and the mesh the generator receives come from the same data.

Sources, by `HeadSpec.kind`:
  * "default": the head of the default model (`DEFAULT_HEAD`): the engine's procedural stand-in
    (core/geometry/ellipsoid_head.py), given a few synthetic shape, expression, jaw and eye deformations here, or
    the built-in FLAME-format head (addon_assets/builtin_head.npz). It must be the head core.default_model builds
    its generator on (the generator rasterizes its own triangles with the vertices it is given): switch
    DEFAULT_HEAD to "builtin" in the same change that moves core.default_model to the built-in head. The engine
    warns when a head's triangles differ from the generator's.
  * "flame": an official FLAME model the user brings (generic_model.pkl / flame2023.pkl + a landmark embedding,
    converted once by core.flame.load_or_convert), or an already converted FLAME-layout .npz.

Only the stand-in path needs torch (it reuses the engine's ellipsoid); the .npz paths need only numpy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np

from .core.errors import InputError

ASSETS = Path(__file__).resolve().parent / "addon_assets"
BUILTIN_HEAD_NPZ = ASSETS / "builtin_head.npz"
DEFAULT_HEAD = "builtin"        # "standin" | "builtin": the head core.default_model's generator is built on
JOINT_NAMES = ("global", "neck", "jaw", "left_eye", "right_eye")
FLAME_PARENTS = (-1, 0, 1, 1, 1)
REQUIRED = ("v_template", "faces", "shapedirs", "exprdirs", "posedirs", "J_regressor", "weights", "parents",
            "lmk_faces_idx", "lmk_bary_coords")
OPTIONAL = ("dynamic_lmk_faces_idx", "dynamic_lmk_bary_coords", "uvs", "uv_faces", "uv_face_mask")

# Stand-in sizes: a handful of components, enough to show the pipeline (FLAME has 300 shape + 100 expression).
STANDIN_SHAPES = 8
STANDIN_EXPRESSIONS = 6
STANDIN_NAME = "stand-in head"
STANDIN_VERTICES = 5023
FLAME_VERTICES = 5023


@dataclass(frozen=True)
class HeadSpec:
    """Which head: kind "default" or "flame" (then model_path, and landmark_path for a .pkl)."""

    kind: str = "default"
    model_path: str = ""
    landmark_path: str = ""

    def to_dict(self) -> dict:
        return {"kind": self.kind, "model_path": self.model_path, "landmark_path": self.landmark_path}

    @classmethod
    def from_dict(cls, d: dict) -> "HeadSpec":
        return cls(str(d.get("kind", "default")), str(d.get("model_path", "")), str(d.get("landmark_path", "")))


def default_head_name() -> str:
    return "built-in head" if DEFAULT_HEAD == "builtin" else STANDIN_NAME


def head_info(spec: HeadSpec) -> Tuple[int, int, int]:
    """(vertices, shape components, expression components) of a head, cheaply (no torch, no conversion): what the
    Blender side needs to check a rig and read its shape keys."""
    if spec.kind == "default":
        if DEFAULT_HEAD == "builtin":
            return _npz_info(BUILTIN_HEAD_NPZ)
        return STANDIN_VERTICES, STANDIN_SHAPES, STANDIN_EXPRESSIONS
    path = Path(spec.model_path) if spec.model_path else None
    if path is not None and path.suffix.lower() == ".npz" and path.is_file():
        return _npz_info(path)
    # An official pickle is converted with n_shape = 300 of its 400 blend shapes (FLAME 2020 / 2023).
    return FLAME_VERTICES, 300, 100


def _npz_info(path: Path) -> Tuple[int, int, int]:
    try:
        with np.load(path, allow_pickle=False, mmap_mode="r") as z:
            shapedirs, exprdirs = z["shapedirs"], z["exprdirs"]
            return int(shapedirs.shape[0]), int(shapedirs.shape[2]), int(exprdirs.shape[2])
    except (OSError, ValueError, KeyError, EOFError) as exc:
        raise InputError(f"{path} is not a readable FLAME-layout .npz ({exc}).") from None


def head_arrays(spec: HeadSpec, cache_dir: Optional[str] = None) -> Dict[str, np.ndarray]:
    """The FLAME-layout arrays of a head (see the module docstring); raises InputError/CheckpointError with a fix."""
    if spec.kind == "default":
        if DEFAULT_HEAD == "builtin":
            return read_npz(BUILTIN_HEAD_NPZ)
        return standin_head_arrays()
    if spec.kind != "flame":
        raise InputError(f"Unknown head kind {spec.kind!r}; use 'default' or 'flame'.")
    path = Path(spec.model_path) if spec.model_path else None
    if path is None or not path.is_file():
        raise InputError(f"The FLAME model file {spec.model_path!r} does not exist. Set it in the add-on "
                         "preferences (Next3D > Model): FLAME 2020 generic_model.pkl from flame.is.tue.mpg.de, or a "
                         "converted .npz.")
    if path.suffix.lower() == ".npz":
        return read_npz(path)
    landmarks = Path(spec.landmark_path) if spec.landmark_path else None
    if landmarks is None or not landmarks.is_file():
        raise InputError(f"The FLAME landmark file {spec.landmark_path!r} does not exist. Set it in the add-on "
                         "preferences: DECA's landmark_embedding.npy (or FLAME's flame_static_embedding.pkl).")
    from .core.flame.official import load_or_convert   # imports torch (core.flame); only for official files
    kwargs = {"deca_embedding": landmarks} if landmarks.suffix.lower() == ".npy" else {"static_embedding": landmarks}
    data = load_or_convert(path, cache_dir=cache_dir, **kwargs)
    return {key: value for key, value in data.to_arrays().items() if key in REQUIRED + OPTIONAL}


def read_npz(path: Path) -> Dict[str, np.ndarray]:
    """A FLAME-layout .npz read with numpy only (no pickled objects allowed)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            # Only the FLAME layout: files may carry extras (the built-in head's shape_names, ...).
            arrays = {k: np.array(z[k]) for k in z.files if k in REQUIRED + OPTIONAL}
    except (OSError, ValueError, EOFError) as exc:
        raise InputError(f"{path} is not a readable FLAME-layout .npz ({exc}).") from None
    missing = [k for k in REQUIRED if k not in arrays]
    if missing:
        raise InputError(f"{path} is not a FLAME-layout head: it lacks {', '.join(missing)}.")
    return arrays


# ------------------------------------------------------------------------------------------------ the stand-in

def _smoothstep(edge0: float, edge1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _embed_points(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray):
    """Nearest face (by centroid) and clamped barycentric coordinates of each point's projection on it."""
    tri = vertices[faces]                                     # [F, 3, 3]
    centroids = tri.mean(1)
    idx = np.argmin(((points[:, None, :] - centroids[None]) ** 2).sum(-1), axis=1)
    bary = np.zeros((len(points), 3), np.float64)
    for k, (p, f) in enumerate(zip(points, idx)):
        a, b, c = tri[f]
        v0, v1, v2 = b - a, c - a, p - a
        d00, d01, d11 = v0 @ v0, v0 @ v1, v1 @ v1
        d20, d21 = v2 @ v0, v2 @ v1
        den = d00 * d11 - d01 * d01
        v = (d11 * d20 - d01 * d21) / den
        w = (d00 * d21 - d01 * d20) / den
        lam = np.clip(np.array([1 - v - w, v, w]), 0.0, None)
        bary[k] = lam / lam.sum()
    return idx.astype(np.int64), bary.astype(np.float32)


def standin_head_arrays() -> Dict[str, np.ndarray]:
    """The engine's ellipsoid stand-in as a FLAME-layout head with synthetic deformations.

    Shapes 1..8: width, height, depth, jaw width, forehead, chin, cheeks, nose (about 5 mm per unit). Expressions
    1..6: lips apart, smile, brows up, brows together, lips pushed out, cheeks in. Joints: global (base of the
    head), neck, jaw (behind the mouth, so a positive rotation about +x opens it), and the two eyes (behind the
    eye landmarks, with a patch of skin around each that follows the gaze)."""
    from .core.geometry.ellipsoid_head import CENTRE, N_USED, SEMI_AXES, ellipsoid_head

    head = ellipsoid_head()
    v = head.vertices.double().numpy()
    faces = head.topology.faces.numpy().astype(np.int64)
    lmk = head.landmarks.double().numpy()
    n = len(v)
    c = np.asarray(CENTRE)
    a, b, depth = SEMI_AXES
    rel = v - c
    u = rel / np.asarray(SEMI_AXES)                         # unit-sphere coordinates
    front = _smoothstep(0.0, 0.6, u[:, 2])                  # 0 at the back, 1 on the face
    mm = 0.005

    def gauss(centre: np.ndarray, sigma: float) -> np.ndarray:
        return np.exp(-((v - centre) ** 2).sum(-1) / (2 * sigma ** 2))

    mouth = lmk[48:60].mean(0)
    lower_lip = lmk[[55, 56, 57, 58, 59]].mean(0)
    brows = lmk[17:27].mean(0)
    nose = lmk[30]
    left_eye, right_eye = lmk[42:48].mean(0), lmk[36:42].mean(0)   # iBUG 42-47 is the subject's left eye
    chin = lmk[8]
    shapes = np.zeros((n, 3, STANDIN_SHAPES))
    shapes[:, 0, 0] = u[:, 0] * mm                                              # width
    shapes[:, 1, 1] = u[:, 1] * mm                                              # height
    shapes[:, 2, 2] = u[:, 2] * mm                                              # depth
    shapes[:, 0, 3] = u[:, 0] * _smoothstep(0.0, -0.8, u[:, 1]) * mm            # jaw width
    shapes[:, 2, 4] = gauss(brows + [0, 0.03, 0], 0.03) * mm                    # forehead
    shapes[:, 1, 5] = -gauss(chin, 0.025) * mm                                  # chin length
    for side in (-1, 1):                                                        # cheeks
        shapes[:, 0, 6] += side * gauss(np.array([side * 0.055, -0.04, 0.03]) + [0, 0, c[2]], 0.02) * mm
    shapes[:, 2, 7] = gauss(nose, 0.012) * 2 * mm                               # nose
    expr = np.zeros((n, 3, STANDIN_EXPRESSIONS))
    expr[:, 1, 0] = -gauss(lower_lip, 0.012) * mm                               # lips apart
    for side, corner in ((-1, lmk[48]), (1, lmk[54])):                          # smile
        g = gauss(corner, 0.012)
        expr[:, 0, 1] += side * g * 0.6 * mm
        expr[:, 1, 1] += g * mm
    expr[:, 1, 2] = gauss(brows, 0.02) * mm                                     # brows up
    for side, brow in ((-1, lmk[17:22].mean(0)), (1, lmk[22:27].mean(0))):      # brows together
        expr[:, 0, 3] += -side * gauss(brow, 0.015) * 0.6 * mm
    expr[:, 2, 4] = gauss(mouth, 0.015) * mm                                    # lips pushed out
    for side in (-1, 1):                                                        # cheeks in
        expr[:, 0, 5] += -side * gauss(np.array([side * 0.06, -0.05, 0.03 + c[2]]), 0.02) * mm
    shapes *= front[:, None, None] ** 0.5
    expr *= front[:, None, None] ** 0.5

    # Joints as fixed mixtures of vertices, so shape changes move them as FLAME's regressor does.
    eye_depth = 0.012
    targets = np.stack([
        c + [0.0, -b * 0.95, 0.0],                       # global: base of the head
        c + [0.0, -b * 0.75, 0.0],                       # neck
        np.array([0.0, mouth[1] + 0.02, c[2]]),          # jaw: behind and above the mouth
        left_eye - [0.0, 0.0, eye_depth],
        right_eye - [0.0, 0.0, eye_depth],
    ])
    regressor = np.zeros((5, n))
    for j, t in enumerate(targets):
        d = ((v[:N_USED] - t) ** 2).sum(-1)
        near = np.argsort(d)[:8]
        w = 1.0 / (np.sqrt(d[near]) + 1e-4)
        # Solve for weights reproducing the target exactly: least-norm correction of the inverse-distance mix.
        base = w / w.sum()
        pts = v[near]
        err = t - base @ pts
        coeff, *_ = np.linalg.lstsq(np.vstack([pts.T, np.ones((1, len(near)))]),
                                    np.concatenate([err, [0.0]]), rcond=None)
        regressor[j, near] = base + coeff

    # Skinning: everything on the neck, the lower face on the jaw, the eye patches on the eyes, the base on global.
    weights = np.zeros((n, 5))
    jaw_w = _smoothstep(-0.004, 0.012, (mouth[1] - 0.002) - v[:, 1]) * _smoothstep(0.1, 0.5, u[:, 2])
    eye_w = [np.clip(1.5 * gauss(e, 0.007), 0, 1) for e in (left_eye, right_eye)]
    base_w = _smoothstep(-0.85, -0.98, u[:, 1])
    weights[:, 2] = jaw_w
    weights[:, 3] = eye_w[0] * (1 - jaw_w)
    weights[:, 4] = eye_w[1] * (1 - jaw_w)
    weights[:, 0] = base_w * (1 - weights[:, 2:].sum(1))
    weights[:, 1] = 1 - weights.sum(1)
    weights[N_USED:] = 0
    weights[N_USED:, 1] = 1

    lmk_idx, lmk_bary = _embed_points(lmk, v, faces)
    return {
        "v_template": v.astype(np.float32), "faces": faces, "shapedirs": shapes.astype(np.float32),
        "exprdirs": expr.astype(np.float32), "posedirs": np.zeros((n, 3, 36), np.float32),
        "J_regressor": regressor.astype(np.float32), "weights": weights.astype(np.float32),
        "parents": np.asarray(FLAME_PARENTS, np.int64), "lmk_faces_idx": lmk_idx, "lmk_bary_coords": lmk_bary,
        "uvs": head.topology.uvs.numpy().astype(np.float32),
        "uv_faces": head.topology.uv_faces.numpy().astype(np.int64),
        "uv_face_mask": head.topology.uv_face_mask.numpy().astype(np.float32),
    }


def rest_joints(arrays: Dict[str, np.ndarray]) -> np.ndarray:
    """[5, 3] joints of the template (FLAME space)."""
    return (arrays["J_regressor"].astype(np.float64) @ arrays["v_template"].astype(np.float64)).astype(np.float32)


__all__ = ["HeadSpec", "head_arrays", "head_info", "standin_head_arrays", "read_npz", "rest_joints",
           "default_head_name", "JOINT_NAMES", "FLAME_PARENTS", "BUILTIN_HEAD_NPZ", "STANDIN_NAME"]
