"""The converted FLAME model layout: plain arrays in one .npz, read without pickle.

Both the official FLAME models (converted once by `official.py`) and the built-in FLAME-format head are stored in
this layout, and `model.FlameModel` evaluates either. Arrays (V vertices, F faces, S shape and E expression
components, J = 5 joints):

    v_template     [V, 3]      float32  template mesh, FLAME units (metres), y up, face towards +z
    faces          [F, 3]      int64    triangles (vertex indices)
    shapedirs      [V, 3, S]   float32  identity blend shapes (one unit = one standard deviation)
    exprdirs       [V, 3, E]   float32  expression blend shapes
    posedirs       [V, 3, P]   float32  pose correctives, P = 9 * (J - 1) = 36 (the FLAME pickle layout)
    J_regressor    [J, V]      float32  joints from the shaped vertices (dense)
    weights        [V, J]      float32  skinning weights (rows sum to 1)
    parents        [J]         int64    kinematic tree: -1, 0, 1, 1, 1 (global, neck, jaw, left eye, right eye)
    lmk_faces_idx  [68]        int64    static 68-point landmark embedding in iBUG order (face indices)
    lmk_bary_coords [68, 3]    float32  its barycentric coordinates
  optional:
    dynamic_lmk_faces_idx   [79, 17]     int64    jaw-contour landmarks (iBUG 0-16) by neck yaw, -39..39 degrees
    dynamic_lmk_bary_coords [79, 17, 3]  float32
    uvs            [U, 2]      float32  texture coordinates
    uv_faces       [F, 3]      int64    per-face indices into `uvs`
    uv_face_mask   [R, R]      float32  face/eye mask in UV space
    name           str                  e.g. 'FLAME2020'
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Optional, Union

import numpy as np

from ..errors import InputError
from ..io.atomic import atomic_write
from ..io.bounded_read import BoundedReadError, read_npz

__all__ = ["FlameModelData", "load_model_data", "save_model_data", "N_JOINTS", "N_LANDMARKS",
           "N_CONTOUR_LANDMARKS", "N_DYNAMIC_YAWS", "JOINT_NAMES", "FLAME_PARENTS"]

PathLike = Union[str, os.PathLike]

N_JOINTS = 5
JOINT_NAMES = ("global", "neck", "jaw", "left_eye", "right_eye")
FLAME_PARENTS = (-1, 0, 1, 1, 1)
N_LANDMARKS = 68            # iBUG 68-point layout
N_CONTOUR_LANDMARKS = 17    # iBUG 0..16, the jaw contour (the dynamic part)
N_DYNAMIC_YAWS = 79         # look-up rows: yaw 0..39 degrees, then -1..-39 (FLAME / DECA / smplx convention)

_FLOAT_KEYS = ("v_template", "shapedirs", "exprdirs", "posedirs", "J_regressor", "weights", "lmk_bary_coords",
               "dynamic_lmk_bary_coords", "uvs", "uv_face_mask")
_INT_KEYS = ("faces", "parents", "lmk_faces_idx", "dynamic_lmk_faces_idx", "uv_faces")
REQUIRED_KEYS = ("v_template", "faces", "shapedirs", "exprdirs", "posedirs", "J_regressor", "weights", "parents",
                 "lmk_faces_idx", "lmk_bary_coords")
OPTIONAL_KEYS = ("dynamic_lmk_faces_idx", "dynamic_lmk_bary_coords", "uvs", "uv_faces", "uv_face_mask")


@dataclass(frozen=True, eq=False)
class FlameModelData:
    """A FLAME-format model as plain numpy arrays (see the module docstring for shapes and units).

    Construction converts dtypes (float32 / int64, contiguous) and validates every array; a malformed model raises
    InputError naming the array. `source` names where it came from, for error messages.
    """

    v_template: np.ndarray
    faces: np.ndarray
    shapedirs: np.ndarray
    exprdirs: np.ndarray
    posedirs: np.ndarray
    J_regressor: np.ndarray
    weights: np.ndarray
    parents: np.ndarray
    lmk_faces_idx: np.ndarray
    lmk_bary_coords: np.ndarray
    dynamic_lmk_faces_idx: Optional[np.ndarray] = None
    dynamic_lmk_bary_coords: Optional[np.ndarray] = None
    uvs: Optional[np.ndarray] = None
    uv_faces: Optional[np.ndarray] = None
    uv_face_mask: Optional[np.ndarray] = None
    name: str = "FLAME"
    source: str = "the FLAME model"

    def __post_init__(self) -> None:
        for key in _FLOAT_KEYS + _INT_KEYS:
            value = getattr(self, key)
            if value is None:
                if key in REQUIRED_KEYS:
                    raise InputError(f"{self.source} has no '{key}' array; every FLAME model needs it. Convert "
                                     "the official model again with core.flame.convert_official_flame.")
                continue
            try:
                arr = np.asarray(value)
            except Exception:  # noqa: BLE001 - anything that is not array-like
                raise InputError(f"{self.source}: '{key}' is not an array ({type(value).__name__}).") from None
            if arr.dtype.kind not in "biuf":
                raise InputError(f"{self.source}: '{key}' has dtype {arr.dtype}; a numeric array is needed.")
            dtype = np.float32 if key in _FLOAT_KEYS else np.int64
            object.__setattr__(self, key, np.ascontiguousarray(arr, dtype=dtype))
        object.__setattr__(self, "name", str(self.name))
        self.validate()

    # -- sizes
    @property
    def n_vertices(self) -> int:
        return int(self.v_template.shape[0])

    @property
    def n_faces(self) -> int:
        return int(self.faces.shape[0])

    @property
    def n_shape(self) -> int:
        return int(self.shapedirs.shape[2])

    @property
    def n_expr(self) -> int:
        return int(self.exprdirs.shape[2])

    @property
    def n_joints(self) -> int:
        return int(self.parents.shape[0])

    @property
    def has_dynamic_contour(self) -> bool:
        return self.dynamic_lmk_faces_idx is not None

    def __repr__(self) -> str:
        return (f"FlameModelData(name={self.name!r}, vertices={self.n_vertices}, faces={self.n_faces}, "
                f"shape={self.n_shape}, expression={self.n_expr}, dynamic_contour={self.has_dynamic_contour})")

    # -- checks
    def _fail(self, key: str, problem: str) -> None:
        raise InputError(f"{self.source}: '{key}' {problem}. The file is not a valid FLAME model; convert the "
                         "official model again with core.flame.convert_official_flame.")

    def _shape(self, key: str, want: tuple) -> None:
        arr = getattr(self, key)
        if arr.ndim != len(want) or any(w is not None and w != s for w, s in zip(want, arr.shape)):
            shown = "[" + ", ".join("*" if w is None else str(w) for w in want) + "]"
            self._fail(key, f"has shape {list(arr.shape)}, expected {shown}")

    def validate(self) -> None:
        """Check shapes, index ranges and finiteness; raise InputError naming the first bad array."""
        self._shape("v_template", (None, 3))
        V = self.n_vertices
        if V < 3:
            self._fail("v_template", f"has only {V} vertices")
        J = self.n_joints
        self._shape("parents", (None,))
        self._shape("faces", (None, 3))
        self._shape("shapedirs", (V, 3, None))
        self._shape("exprdirs", (V, 3, None))
        self._shape("posedirs", (V, 3, 9 * (J - 1)))
        self._shape("J_regressor", (J, V))
        self._shape("weights", (V, J))
        self._shape("lmk_faces_idx", (N_LANDMARKS,))
        self._shape("lmk_bary_coords", (N_LANDMARKS, 3))
        for key in _FLOAT_KEYS:
            arr = getattr(self, key)
            if arr is not None and not np.isfinite(arr).all():
                self._fail(key, "contains NaN or infinite values")
        if J < 1 or self.parents[0] != -1 or any(not 0 <= int(p) < i for i, p in enumerate(self.parents[1:], 1)):
            self._fail("parents", f"is {self.parents.tolist()}; the root must be -1 and every other joint's parent "
                                  "must come before it")
        if self.faces.size and (self.faces.min() < 0 or self.faces.max() >= V):
            self._fail("faces", f"refers to vertex {int(self.faces.max())} but the model has {V} vertices")
        row_sums = self.weights.sum(axis=1)
        if np.abs(row_sums - 1).max() > 1e-3:
            bad = int(np.abs(row_sums - 1).argmax())
            self._fail("weights", f"of vertex {bad} sum to {row_sums[bad]:.4f} instead of 1")
        self._check_embedding("lmk_faces_idx", "lmk_bary_coords")
        if (self.dynamic_lmk_faces_idx is None) != (self.dynamic_lmk_bary_coords is None):
            self._fail("dynamic_lmk_faces_idx", "and 'dynamic_lmk_bary_coords' must be given together")
        if self.dynamic_lmk_faces_idx is not None:
            self._shape("dynamic_lmk_faces_idx", (N_DYNAMIC_YAWS, N_CONTOUR_LANDMARKS))
            self._shape("dynamic_lmk_bary_coords", (N_DYNAMIC_YAWS, N_CONTOUR_LANDMARKS, 3))
            self._check_embedding("dynamic_lmk_faces_idx", "dynamic_lmk_bary_coords")
        if (self.uvs is None) != (self.uv_faces is None):
            self._fail("uvs", "and 'uv_faces' must be given together")
        if self.uvs is not None:
            self._shape("uvs", (None, 2))
            self._shape("uv_faces", (self.n_faces, 3))
            if self.uv_faces.size and (self.uv_faces.min() < 0 or self.uv_faces.max() >= self.uvs.shape[0]):
                self._fail("uv_faces", f"refers to texture coordinate {int(self.uv_faces.max())} but there are "
                                       f"{self.uvs.shape[0]}")
        if self.uv_face_mask is not None:
            self._shape("uv_face_mask", (None, None))

    def _check_embedding(self, idx_key: str, bary_key: str) -> None:
        idx, bary = getattr(self, idx_key), getattr(self, bary_key)
        if idx.size and (idx.min() < 0 or idx.max() >= self.n_faces):
            self._fail(idx_key, f"refers to face {int(idx.max())} but the model has {self.n_faces} faces")
        sums = bary.sum(axis=-1)
        worst = float(sums.flat[np.abs(sums - 1).argmax()])
        if abs(worst - 1) > 1e-3:
            self._fail(bary_key, f"has barycentric coordinates summing to {worst:.4f} instead of 1")

    # -- files
    def to_arrays(self) -> dict:
        """The arrays written to the .npz (optional ones only when present)."""
        out = {key: getattr(self, key) for key in REQUIRED_KEYS}
        for key in OPTIONAL_KEYS:
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        out["name"] = np.array(self.name)
        return out

    def save(self, path: PathLike) -> Path:
        return save_model_data(path, self)

    @classmethod
    def load(cls, path: PathLike) -> "FlameModelData":
        return load_model_data(path)


_FIELD_NAMES = frozenset(f.name for f in fields(FlameModelData))


def save_model_data(path: PathLike, data: FlameModelData) -> Path:
    """Write `data` to `path` (.npz, uncompressed, no pickled objects), atomically (temporary file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda fh: np.savez(fh, **data.to_arrays()))
    return path


def load_model_data(path: PathLike) -> FlameModelData:
    """Read a converted FLAME model (.npz) without unpickling anything; InputError if it is missing or malformed."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"FLAME model file {str(path)!r} does not exist. Convert the official FLAME model with "
                         "core.flame.convert_official_flame, or use the built-in head.")
    try:
        arrays = read_npz(path)   # bounded: a truncated or hostile archive is a BoundedReadError
    except MemoryError:
        raise InputError(f"Not enough memory to read the FLAME model {path}; close other programs.") from None
    except BoundedReadError as exc:
        if "pickle" in str(exc).lower():
            raise InputError(f"{path} holds pickled objects, which a converted FLAME model never does; convert "
                             "the official model again with core.flame.convert_official_flame.") from None
        raise InputError(f"{path} is not a readable .npz file ({exc}); convert the model again.") from None
    except OSError as exc:
        raise InputError(f"{path} is not a readable .npz file ({exc.strerror or exc}); convert the model "
                         "again.") from None
    missing = [key for key in REQUIRED_KEYS if key not in arrays]
    if missing:
        raise InputError(f"{path} is not a converted FLAME model: it lacks {', '.join(missing)}. Convert the "
                         "official model with core.flame.convert_official_flame.")
    kwargs = {key: value for key, value in arrays.items() if key in _FIELD_NAMES and key not in ("name", "source")}
    name = str(arrays["name"]) if "name" in arrays else path.stem
    return FlameModelData(**kwargs, name=name, source=str(path))
