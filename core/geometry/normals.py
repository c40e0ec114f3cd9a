"""Vertex normals of a triangle mesh, in numpy (mesh export and the built-in head's generator share it)."""

from __future__ import annotations

import numpy as np


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals [N, 3] float32 (outward for counter-clockwise faces)."""
    v = np.asarray(vertices, np.float64)
    f = np.asarray(faces, np.int64)
    fn = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    n = np.zeros_like(v)
    for axis in range(3):
        for corner in range(3):
            n[:, axis] += np.bincount(f[:, corner], weights=fn[:, axis], minlength=len(v))
    length = np.linalg.norm(n, axis=1, keepdims=True)
    n = np.where(length > 0, n / np.maximum(length, 1e-300), np.array([0.0, 0.0, 1.0]))
    return n.astype(np.float32)
