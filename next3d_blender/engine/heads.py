"""The head models a rig is built from and evaluated with, as FLAME-layout arrays (core/flame/model_data.py).

No bpy and no torch here: the rig builder (Blender's process) and the engine (the worker process) both call
`head_arrays`, so the shape keys a user keyframes and the mesh the generator receives come from the same data.

Sources, by `HeadSpec.kind`:
  * "default": the built-in FLAME-format head (addon_assets/builtin_head.npz), the head core.default_model builds
    its generator on (the generator rasterizes its own triangles with the vertices it is given; the engine warns
    when a head's triangles differ from the generator's).
  * "flame": an official FLAME model the user brings (generic_model.pkl / flame2023.pkl + a landmark embedding,
    converted once by core.flame.official.load_or_convert), or an already converted FLAME-layout .npz.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np

from ..core.errors import InputError
from ..core.flame.model_data import OPTIONAL_KEYS, REQUIRED_KEYS, load_model_data

ASSETS = Path(__file__).resolve().parents[1] / "addon_assets"
BUILTIN_HEAD_NPZ = ASSETS / "builtin_head.npz"
DEFAULT_HEAD_NAME = "built-in head"
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


def head_info(spec: HeadSpec) -> Tuple[int, int, int]:
    """(vertices, shape components, expression components) of a head, cheaply (no conversion, arrays mapped not
    read): what the Blender side needs to check a rig and read its shape keys."""
    if spec.kind == "default":
        return _npz_info(BUILTIN_HEAD_NPZ)
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
        return _layout(load_model_data(BUILTIN_HEAD_NPZ))
    if spec.kind != "flame":
        raise InputError(f"Unknown head kind {spec.kind!r}; use 'default' or 'flame'.")
    path = Path(spec.model_path) if spec.model_path else None
    if path is None or not path.is_file():
        raise InputError(f"The FLAME model file {spec.model_path!r} does not exist. Set it in the add-on "
                         "preferences (Next3D > Model): FLAME 2020 generic_model.pkl from flame.is.tue.mpg.de, or a "
                         "converted .npz.")
    if path.suffix.lower() == ".npz":
        return _layout(load_model_data(path))
    landmarks = Path(spec.landmark_path) if spec.landmark_path else None
    if landmarks is None or not landmarks.is_file():
        raise InputError(f"The FLAME landmark file {spec.landmark_path!r} does not exist. Set it in the add-on "
                         "preferences: DECA's landmark_embedding.npy (or FLAME's flame_static_embedding.pkl).")
    from ..core.flame.official import load_or_convert

    kwargs = {"deca_embedding": landmarks} if landmarks.suffix.lower() == ".npy" else {"static_embedding": landmarks}
    return _layout(load_or_convert(path, cache_dir=cache_dir, **kwargs))


def _layout(data) -> Dict[str, np.ndarray]:
    """Only the FLAME layout's arrays (files may carry extras: the model's name, the built-in head's shape_names)."""
    return {key: value for key, value in data.to_arrays().items() if key in REQUIRED_KEYS + OPTIONAL_KEYS}


__all__ = ["HeadSpec", "head_arrays", "head_info", "BUILTIN_HEAD_NPZ", "DEFAULT_HEAD_NAME"]
