"""Reading the generator's mesh input from files: an OBJ with the FLAME vertices plus a landmark text file (the
official demo data: demo.obj + demo_kpt2d.txt), or one array of vertices followed by landmarks (.npy / .txt)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch

from ..errors import InputError
from .bounded_read import BoundedReadError, read_npy, read_text_array, text_numbers

PathLike = Union[str, os.PathLike]


def read_obj_vertices(path: PathLike) -> np.ndarray:
    """The `v x y z` lines of an OBJ file, [V, 3] float32 (a malformed line is an InputError naming it)."""
    verts = []
    with open(path, "r", encoding="utf-8", errors="replace") as fh:
        for number, line in enumerate(fh, 1):
            if line.startswith("v "):
                try:
                    verts.append(text_numbers(line, number, skip=1, count=3))
                except BoundedReadError as exc:
                    raise InputError(f"{path}, {exc}.") from None
    if not verts:
        raise InputError(f"{path} has no vertices ('v x y z' lines); is it an OBJ file?")
    return np.asarray(verts, dtype=np.float32)


def _read_array(path: Path) -> np.ndarray:
    try:
        if path.suffix != ".npy":
            return read_text_array(path)
        with open(path, "rb") as fh:
            data = read_npy(fh)
    except BoundedReadError as exc:
        raise InputError(f"{path}: {exc}.") from None
    if data.ndim != 2 or data.dtype.kind not in "biuf":
        raise InputError(f"{path} holds an array of {data.dtype} {list(data.shape)}; give rows of x y z numbers.")
    return data.astype(np.float32)


def read_mesh_input(mesh: PathLike, landmarks: Optional[PathLike] = None, n_vertices: int = 5023,
                    n_landmarks: int = 68) -> torch.Tensor:
    """-> [1, n_vertices + n_landmarks, 3] in FLAME units, with clear errors for missing files or wrong counts."""
    mesh = Path(mesh)
    if not mesh.is_file():
        raise InputError(f"Mesh file {str(mesh)!r} does not exist.")
    if mesh.suffix.lower() == ".obj":
        verts = read_obj_vertices(mesh)
        if landmarks is None:
            guess = mesh.with_name(mesh.stem + "_kpt2d.txt")
            if not guess.is_file():
                raise InputError(f"{mesh.name} holds only vertices; give its 68 3-D landmarks with --landmarks "
                                 f"(the official demo data names them {guess.name}).")
            landmarks = guess
        if not Path(landmarks).is_file():
            raise InputError(f"Landmark file {str(landmarks)!r} does not exist.")
        lms = _read_array(Path(landmarks))
        if lms.shape[1] < 3:
            raise InputError(f"{landmarks} has {lms.shape[1]} numbers per line; a landmark is x y z.")
        lms = lms[:, :3]
        if verts.shape[0] != n_vertices:
            raise InputError(f"{mesh.name} has {verts.shape[0]} vertices; the generator needs a FLAME mesh with "
                             f"{n_vertices}.")
        if lms.shape[0] != n_landmarks:
            raise InputError(f"{landmarks} has {lms.shape[0]} landmarks; expected {n_landmarks} (x y z per line).")
        data = np.concatenate([verts, lms])
    else:
        data = _read_array(mesh)
        if data.shape != (n_vertices + n_landmarks, 3):
            raise InputError(f"{mesh.name} holds an array of shape {data.shape}; expected "
                             f"({n_vertices + n_landmarks}, 3): {n_vertices} vertices then {n_landmarks} landmarks.")
    if not np.isfinite(data).all():
        raise InputError(f"{mesh.name} contains NaN or infinite coordinates.")
    return torch.from_numpy(data)[None]
