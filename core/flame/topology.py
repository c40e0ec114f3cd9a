"""Comparing a mesh's topology with a model's (numpy only): which triangles it has, and a name for it in messages.

A generator carries the topology it was trained on (docs/flame.md#generator-input): the official weights FLAME's
5023 vertices and 9976 triangles, the bundled default the built-in head's 5023 vertices and 10034 triangles. The
vertex count alone cannot tell them apart, so meshes are compared triangle by triangle, as vertex sets: another
order of the faces, another starting corner or the other winding still fit.
"""

from __future__ import annotations

from typing import Mapping, Tuple

import numpy as np

__all__ = ["FLAME_VERTICES", "FLAME_TRIANGLES", "covers_triangles", "same_triangles", "topology_name"]

FLAME_VERTICES, FLAME_TRIANGLES = 5023, 9976


def _keys(faces: np.ndarray, base: int) -> np.ndarray:
    f = np.sort(np.asarray(faces, dtype=np.int64).reshape(-1, 3), axis=1)
    return (f[:, 0] * base + f[:, 1]) * base + f[:, 2]


def _base(*faces: np.ndarray) -> int:
    return int(max((np.asarray(f).max(initial=0) for f in faces), default=0)) + 1


def covers_triangles(mesh_faces: np.ndarray, model_faces: np.ndarray) -> bool:
    """Whether every triangle of `model_faces` is among `mesh_faces` (extra mesh faces, e.g. a closed mouth, are
    allowed)."""
    mesh_faces, model_faces = np.asarray(mesh_faces), np.asarray(model_faces)
    if model_faces.size == 0:
        return True
    if mesh_faces.size == 0 or min(mesh_faces.min(), model_faces.min()) < 0:
        return False
    base = _base(mesh_faces, model_faces)
    return bool(np.isin(_keys(model_faces, base), _keys(mesh_faces, base)).all())


def same_triangles(a: np.ndarray, b: np.ndarray) -> bool:
    """The same set of triangles, in any order, corner or winding."""
    a, b = np.asarray(a).reshape(-1, 3), np.asarray(b).reshape(-1, 3)
    return len(a) == len(b) and covers_triangles(a, b) and covers_triangles(b, a)


def topology_name(n_vertices: int, faces: np.ndarray, known: Mapping[str, Tuple[int, np.ndarray]]) -> str:
    """A name for a mesh's topology in messages: the first of `known` ({name: (vertex count, faces)}) it matches,
    else "FLAME's topology" for FLAME's counts, else "a mesh of V vertices and F triangles"."""
    faces = np.asarray(faces).reshape(-1, 3)
    for name, (count, known_faces) in known.items():
        if int(count) == int(n_vertices) and same_triangles(faces, known_faces):
            return name
    if (int(n_vertices), len(faces)) == (FLAME_VERTICES, FLAME_TRIANGLES):
        return "FLAME's topology"
    return f"a mesh of {int(n_vertices)} vertices and {len(faces)} triangles"
