"""Vertex normals of a triangle mesh, in numpy: mesh export and the built-in head's generator (tools/builtin_head)
share this one implementation."""

from __future__ import annotations

import numpy as np


def vertex_normals(vertices: np.ndarray, faces: np.ndarray, dtype=np.float32) -> np.ndarray:
    """Area-weighted unit vertex normals [N, 3] (outward for counter-clockwise faces); (0, 0, 1) for a vertex no
    face uses. Summed in float64 corner by corner: the shipped built-in head was generated with this order."""
    v = np.asarray(vertices, np.float64)
    f = np.asarray(faces, np.int64)
    fn = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    n = np.zeros_like(v)
    for corner in range(3):
        np.add.at(n, f[:, corner], fn)
    length = np.linalg.norm(n, axis=1, keepdims=True)
    n = np.where(length > 0, n / np.maximum(length, 1e-300), np.array([0.0, 0.0, 1.0]))
    return n.astype(dtype)
