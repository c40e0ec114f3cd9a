"""The head models a rig is built from and evaluated with, as FLAME-layout arrays (core/flame/model_data.py).

No bpy and no torch here: Blender's process builds rigs from `head_arrays` and poses their evaluated meshes with
the same arrays (skull region, landmark embedding: core/flame/mesh_pose.py); the worker fits portraits with them.

Sources, by `HeadSpec.kind`:
  * "default": the built-in FLAME-format head (addon_assets/builtin_head.npz), the head core.default_model builds
    its generator on (a generator rasterizes its own triangles with the vertices it is given, so a rig must have
    the generator's topology; the engine refuses one that does not).
  * "flame": an official FLAME model the user brings (generic_model.pkl / flame2023.pkl) with its landmark
    embedding (DECA's landmark_embedding.npy, or FLAME's flame_static_embedding.pkl + flame_dynamic_embedding.npy),
    found beside the model or given in the preferences, converted once (core.flame.files.load_flame_data); or an
    already converted FLAME-layout .npz.

`topology_name` says what a mesh or a model's topology is ("the built-in head", "FLAME's topology"), for the
messages that name both when they differ (core/flame/topology.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np

from ..core.errors import InputError
from ..core.flame import topology
from ..core.flame.model_data import OPTIONAL_KEYS, REQUIRED_KEYS, load_model_data

ASSETS = Path(__file__).resolve().parents[1] / "addon_assets"
BUILTIN_HEAD_NPZ = ASSETS / "builtin_head.npz"
DEFAULT_HEAD_NAME = "built-in head"
FLAME_VERTICES = topology.FLAME_VERTICES
# How the preferences name the landmark files in messages (core.flame.files uses the first word alone too).
LANDMARK_OPTION = "'Landmarks' (Next3D add-on preferences)"


@dataclass(frozen=True)
class HeadSpec:
    """Which head: kind "default" or "flame" (then model_path, and for a .pkl the landmark files the user gave:
    DECA's one in landmark_path, or FLAME's two in landmark_path and dynamic_path; none: found beside the model)."""

    kind: str = "default"
    model_path: str = ""
    landmark_path: str = ""
    dynamic_path: str = ""

    def to_dict(self) -> dict:
        return {"kind": self.kind, "model_path": self.model_path, "landmark_path": self.landmark_path,
                "dynamic_path": self.dynamic_path}

    @classmethod
    def from_dict(cls, d: dict) -> "HeadSpec":
        return cls(str(d.get("kind", "default")), str(d.get("model_path", "")), str(d.get("landmark_path", "")),
                   str(d.get("dynamic_path", "")))

    @property
    def landmark_files(self) -> Tuple[str, ...]:
        return tuple(p for p in (self.landmark_path, self.dynamic_path) if p)


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
    from ..core.flame.files import load_flame_data

    return _layout(load_flame_data(path, spec.landmark_files, cache_dir=cache_dir, option=LANDMARK_OPTION))


def head_names(spec: HeadSpec) -> Dict[str, Tuple[str, ...]]:
    """What the head's blend shapes do, where its file says ({"shape": names, "expression": names}; the built-in
    head's file does, FLAME's does not): Add FLAME Head names its shape keys after them."""
    path = BUILTIN_HEAD_NPZ if spec.kind == "default" else Path(spec.model_path)
    if path.suffix.lower() != ".npz" or not path.is_file():
        return {}
    try:
        with np.load(path, allow_pickle=False) as z:
            return {kind: tuple(str(n) for n in z[f"{kind}_names"]) for kind in ("shape", "expression")
                    if f"{kind}_names" in z.files}
    except (OSError, ValueError, EOFError):
        return {}


def builtin_topology() -> Tuple[int, np.ndarray]:
    """(vertex count, faces) of the built-in head, which the bundled default model is built on."""
    with np.load(BUILTIN_HEAD_NPZ, allow_pickle=False) as z:
        return int(z["v_template"].shape[0]), np.asarray(z["faces"], dtype=np.int64)


def topology_name(n_vertices: int, faces: np.ndarray) -> str:
    """What a mesh or a model's topology is, in words: "the built-in head", "FLAME's topology", or its sizes."""
    try:
        known = {"the built-in head": builtin_topology()}
    except (OSError, ValueError, KeyError, EOFError):
        known = {}
    return topology.topology_name(n_vertices, faces, known)


def topology_mismatch(model: str, model_topology: Tuple[int, np.ndarray], mesh: str,
                      mesh_topology: Tuple[int, np.ndarray]) -> Optional[str]:
    """None when the mesh has the model's topology (its vertex count and every one of its triangles), else the
    one-line message naming both and what to choose. `model` and `mesh` name them ("The bundled default model",
    "the mesh 'FLAME-mesh'")."""
    (mv, mf), (v, f) = model_topology, mesh_topology
    if v == mv and topology.covers_triangles(f, mf):
        return None
    want, have = topology_name(mv, mf), topology_name(v, f)

    def sized(name: str, n_vertices: int, faces: np.ndarray) -> str:
        return name if name.startswith("a mesh") else f"{name} ({n_vertices} vertices, {len(faces)} triangles)"

    if want == "FLAME's topology":
        fix = ("set the FLAME model in the add-on preferences (Next3D > Model) and add a FLAME head with 'Add FLAME "
               "Head', or switch the model to Bundled Default")
    elif want == "the built-in head":
        fix = ("choose Official Next3D with the FLAME model in the add-on preferences for a FLAME rig, or add a head "
               "for this model with 'Add FLAME Head' while it is chosen")
    else:
        fix = "render a head of the topology this model was built on"
    if v == mv and (want == have or have.startswith("a mesh")):
        what = (f"has its {v} vertices but other triangles ({len(f)}; its faces were edited, or it is another "
                "head of that size)")
    else:
        what = f"is {sized(have, v, f)}"
    return f"{model} expects {sized(want, mv, mf)}; {mesh} {what}: {fix}."


def _layout(data) -> Dict[str, np.ndarray]:
    """Only the FLAME layout's arrays (files may carry extras: the model's name, the built-in head's shape_names)."""
    return {key: value for key, value in data.to_arrays().items() if key in REQUIRED_KEYS + OPTIONAL_KEYS}


__all__ = ["HeadSpec", "head_arrays", "head_info", "head_names", "builtin_topology", "topology_name",
           "topology_mismatch", "BUILTIN_HEAD_NPZ", "DEFAULT_HEAD_NAME"]
