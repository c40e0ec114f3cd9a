"""One rendering session, shared by the `next3d` command line and the Blender extension: which model, which avatar,
which head, and what a render records so that two renders never mix.

- `load_model`: the bundled default or a model file (official pickle or .safetensors), with a description and the
  neutral head it was built on;
- `Avatar`: a seed with its truncation, or the ws an inversion saved; `avatar_identity` maps it once;
- `load_head`: the FLAME model that turns parameters into meshes (the built-in head, or official files with their
  landmark embedding, core.flame.files), and `check_head`, which compares a head's topology with the model's;
- `render_record`: the settings a render folder records (core.sequence.render compares them before resuming),
  with one key name per setting for both front ends, and a digest of every file the frames depend on.
The placement of FLAME meshes in a model's world is `core.flame.conversions.Placement.of(generator)`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import numpy as np

from .errors import InputError

__all__ = ["LoadedModel", "load_model", "Avatar", "avatar_ws", "avatar_identity", "file_digest", "model_record",
           "render_record", "Head", "load_head", "topology_name", "topology_problem", "check_head",
           "model_is_builtin_head", "read_obj_faces"]

PathLike = Union[str, os.PathLike]


# ------------------------------------------------------------------------------------------------ the model

@dataclass
class LoadedModel:
    """A generator and what a front end says about it. `path` None is the bundled default; `default_mesh()` is the
    mesh input [1, 5091, 3] of the neutral head the generator was built on (an InputError for the official model,
    whose head is the user's FLAME model)."""

    generator: object
    description: str
    path: Optional[Path]
    default_mesh: Callable


def load_model(path: Optional[PathLike], device: str = "cpu") -> LoadedModel:
    """The bundled default model (path None), or an official network pickle / .safetensors model (restricted
    reader: nothing in the file runs)."""
    from .default_model import default_mesh_input, default_model
    from .io.generator_io import load_generator

    if path is None:
        default = default_model()
        return LoadedModel(default.generator.to(device), default.description, None, lambda: default.mesh_input)
    generator = load_generator(path, device)
    return LoadedModel(generator, Path(path).name, Path(path), lambda: default_mesh_input(generator))


# ------------------------------------------------------------------------------------------------ the avatar

@dataclass(frozen=True)
class Avatar:
    """Which avatar: ws mapped from the z of `seed` and truncated, or the ws in `latent` (an .npy `next3d invert`
    wrote, then seed and truncation are unused)."""

    seed: int = 0
    truncation_psi: float = 0.7
    truncation_cutoff: Optional[int] = 14
    latent: Optional[str] = None

    def record(self) -> dict:
        if self.latent:
            return {"latent": str(Path(self.latent).resolve()), "latent_digest": file_digest(self.latent)}
        return {"seed": int(self.seed), "truncation_psi": round(float(self.truncation_psi), 6),
                "truncation_cutoff": None if self.truncation_cutoff is None else int(self.truncation_cutoff)}


def avatar_ws(generator, avatar: Avatar, cond=None):
    """ws [1, num_ws, w_dim] of the avatar: the latent file's, or the seed's z mapped at the camera label `cond`
    (default the frontal FFHQ camera, as the official scripts condition)."""
    import torch

    from .rendering.camera import ffhq_camera
    from .sampling import latent_from_seed

    device = next(generator.parameters()).device
    if avatar.latent:
        from .inversion.avatar_files import load_latent

        return load_latent(avatar.latent, generator).to(device)
    cond = ffhq_camera() if cond is None else cond
    with torch.no_grad():
        z = latent_from_seed(int(avatar.seed), generator.config.z_dim).to(device)
        cutoff = avatar.truncation_cutoff
        return generator.mapping(z, cond[None].to(device), truncation_psi=float(avatar.truncation_psi),
                                 truncation_cutoff=int(cutoff) if cutoff else None)


def avatar_identity(generator, avatar: Avatar, cond=None):
    """(ws, identity): the avatar's ws and what the generator builds from them once (textures, static planes)."""
    import torch

    ws = avatar_ws(generator, avatar, cond)
    with torch.no_grad():
        return ws, generator.make_identity(ws)


# ------------------------------------------------------------------------------------------------ records

def file_digest(path: Optional[PathLike]) -> str:
    """The content digest of a file frames depend on (weights, FLAME model, latent); None: the bundled default
    weights'; '' when there is no such file."""
    from .default_model import weights_digest

    return weights_digest(None if path is None else Path(path))


def model_record(path: Optional[PathLike]) -> dict:
    """{'model': the model file (resolved path, or 'default'), 'weights': its digest}: weights retrained or replaced
    in place change the digest, so their frames never mix with the old ones."""
    return {"model": "default" if path is None else str(Path(path).resolve()), "weights": file_digest(path)}


def render_record(model: Optional[PathLike], avatar: Avatar, flame: Optional["Head"] = None, **settings) -> dict:
    """The settings a render folder records: the model and its digest, the avatar, the FLAME files and their
    digests (when a FLAME model makes the meshes: `flame`, a Head), then the front end's own settings (camera,
    sample seed, ...)."""
    out = {**model_record(model), **avatar.record()}
    if flame is not None:
        out.update(flame.record())
    out.update(settings)
    return out


# ------------------------------------------------------------------------------------------------ the head

@dataclass
class Head:
    """A FLAME model that turns parameters into meshes (core.flame.FlameModel), with where it came from."""

    flame: object
    path: Optional[Path]                 # None: the built-in head
    landmark_files: tuple = ()           # the embedding used (found beside the model or given)
    notes: tuple = ()                    # what the user should know (e.g. FLAME 2023)

    @property
    def description(self) -> str:
        return "the built-in head" if self.path is None else self.path.name

    @property
    def faces(self) -> np.ndarray:
        return self.flame.faces.cpu().numpy()

    @property
    def n_vertices(self) -> int:
        return int(self.flame.n_vertices)

    def record(self) -> dict:
        if self.path is None:
            return {"flame_model": "builtin", "flame_digest": file_digest(_builtin_path())}
        return {"flame_model": str(self.path.resolve()), "flame_digest": file_digest(self.path),
                "flame_landmarks": [f"{Path(p).resolve()} ({file_digest(p)})" for p in self.landmark_files]}

    def neutral_mesh(self):
        """The mesh input [1, V + 68, 3] of the head at zero parameters."""
        import torch

        from .flame.params import FlameParams

        with torch.no_grad():
            return self.flame.mesh_input(FlameParams.zeros(1, self.flame.n_shape, self.flame.n_expr)).cpu()


def _builtin_path() -> Path:
    from .flame.builtin_head import BUILTIN_HEAD_PATH

    return BUILTIN_HEAD_PATH


def load_head(flame_model: Optional[PathLike] = None, landmarks: Sequence[PathLike] = (), *,
              cache_dir: Optional[PathLike] = None, option: str = "--flame-landmarks FILE") -> Head:
    """The built-in head (flame_model None), or a FLAME model file: a converted .npz, or the official FLAME 2020 /
    2023 pickle with its landmark embedding (`landmarks`, else found beside it; core.flame.files). `option` says in
    messages how the user gives the embedding."""
    from .flame import FlameModel
    from .flame.files import load_flame_files, model_notes
    from .flame.model_data import load_model_data

    if flame_model is None:
        if landmarks:
            raise InputError(f"{option.split()[0]} goes with an official FLAME model; give --flame-model too, or "
                             "drop it (the built-in head has its own landmarks).")
        return Head(FlameModel(load_model_data(_builtin_path())), None)
    path = Path(flame_model)
    data, files = load_flame_files(path, landmarks, cache_dir=cache_dir, option=option)
    return Head(FlameModel(data), path, tuple(files.paths), tuple(model_notes(data)))


def _model_faces(generator) -> np.ndarray:
    return generator.faces[0].detach().cpu().numpy()


def _known_topologies() -> dict:
    from .flame.builtin_head import load_builtin_head_data

    try:
        data = load_builtin_head_data()
    except InputError:
        return {}
    return {"the built-in head": (int(data["v_template"].shape[0]), data["faces"])}


def topology_name(faces: np.ndarray, n_vertices: int) -> str:
    """'the built-in head', "FLAME's topology" or 'a mesh of V vertices and F triangles' (core.flame.topology)."""
    from .flame.topology import topology_name as name

    return name(n_vertices, faces, _known_topologies())


def topology_problem(generator, faces: Optional[np.ndarray], n_vertices: int, head: str) -> Optional[str]:
    """None when a head (its faces, or None when only its vertex count is known) fits the generator's topology;
    else what is wrong, naming both ("this model expects FLAME's topology (5023 vertices, 9976 triangles); the
    head generic_model.pkl is the built-in head (...)")."""
    from .flame.topology import covers_triangles

    model_faces = _model_faces(generator)
    model_vertices = int(generator.config.n_vertices)
    if n_vertices == model_vertices and (faces is None or (len(faces) == len(model_faces)
                                                           and covers_triangles(faces, model_faces))):
        return None
    expected = topology_name(model_faces, model_vertices)
    expected = f"{expected} ({model_vertices} vertices, {len(model_faces)} triangles)"
    if faces is None:
        return f"this model expects {expected}; {head} has {n_vertices} vertices"
    got = topology_name(faces, n_vertices)
    if got == expected.split(" (")[0]:
        got = "a mesh with as many vertices and triangles but other ones"
    counts = f"({n_vertices} vertices, {len(faces)} triangles)"
    if got == head:
        return f"this model expects {expected}, not {got} {counts}"
    return f"this model expects {expected}; {head} is {got} {counts}"


def check_head(generator, faces: Optional[np.ndarray], n_vertices: int, head: str, fix: str) -> None:
    """Raise an InputError 'problem: fix' when the head does not fit the generator (topology_problem)."""
    problem = topology_problem(generator, faces, n_vertices, head)
    if problem:
        raise InputError(f"{problem[0].upper()}{problem[1:]}: {fix}")


def model_is_builtin_head(generator) -> bool:
    """Whether the generator was trained on the built-in head (the bundled default and models trained here)."""
    known = _known_topologies().get("the built-in head")
    if known is None:
        return False
    from .flame.topology import covers_triangles

    faces = _model_faces(generator)
    return len(faces) == len(known[1]) and covers_triangles(faces, known[1])


def read_obj_faces(path: PathLike) -> Optional[np.ndarray]:
    """The triangles of an OBJ file [F, 3] (0-based; 'f a/b/c' corners read up to the first slash), or None when
    it has none. A polygon of more than three corners is an InputError: the generator's meshes are triangles."""
    faces = []
    with open(path, "r", encoding="utf-8", errors="replace") as fh:
        for number, line in enumerate(fh, 1):
            if not line.startswith("f "):
                continue
            try:
                idx = [int(c.split("/")[0]) for c in line.split()[1:]]
            except ValueError:
                raise InputError(f"{path}, line {number}: a face corner is not a vertex number "
                                 f"({line.strip()[:60]!r}).") from None
            if len(idx) != 3:
                raise InputError(f"{path}, line {number}: a face with {len(idx)} corners; the generator's meshes are "
                                 "triangles. Export the mesh triangulated.")
            faces.append(idx)
    if not faces:
        return None
    f = np.asarray(faces, dtype=np.int64)
    return np.where(f > 0, f - 1, f)   # OBJ counts from 1
