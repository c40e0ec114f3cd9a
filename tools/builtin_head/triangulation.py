"""Triangulating the skin: a spherical Delaunay triangulation of the parameter directions (so the skin is closed
by construction), Laplacian relaxation back onto the implicit surface, and the closed-and-oriented check."""

from __future__ import annotations

import numpy as np
from scipy.spatial import ConvexHull

from .rays import param_through, surface_from_param


def directed_edge_problems(faces: np.ndarray):
    """(number of directed edges used more than once, number of edges without their reverse)."""
    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    key = e[:, 0] * (1 << 32) + e[:, 1]
    uniq, counts = np.unique(key, return_counts=True)
    rev = e[:, 1] * (1 << 32) + e[:, 0]
    missing = ~np.isin(rev, uniq)
    return int((counts > 1).sum()), int(missing.sum())


def triangulate(params: np.ndarray) -> np.ndarray:
    """Spherical Delaunay triangulation of unit vectors, counter-clockwise seen from outside.

    The structured loops have many cocircular points (ties in the Delaunay criterion); a fixed tiny jitter breaks
    the ties the same way on every machine instead of leaving them to rounding."""
    jitter = np.random.default_rng(20240611).standard_normal(params.shape) * 1e-7
    faces = ConvexHull(params + jitter).simplices.astype(np.int64)
    a, b, c = params[faces[:, 0]], params[faces[:, 1]], params[faces[:, 2]]
    flip = (np.cross(b - a, c - a) * (a + b + c)).sum(1) < 0
    faces[flip] = faces[flip][:, [0, 2, 1]]
    if len(faces) != 2 * len(params) - 4:
        raise RuntimeError("the parameter hull is not a triangulation of all points")
    return faces


def relax(params, pos, faces, free, step=0.5):
    """One round of Laplacian smoothing of the free vertices, projected back onto the implicit surface."""
    from scipy.sparse import coo_matrix
    n = len(params)
    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    adj = coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(n, n)).tocsr()
    adj = ((adj + adj.T) > 0).astype(np.float64)
    centroid = (adj @ pos) / np.asarray(adj.sum(1))
    target = pos[free] + step * (centroid[free] - pos[free])
    p = param_through(target)
    params, pos = params.copy(), pos.copy()
    params[free] = p
    pos[free] = surface_from_param(p)
    return params, pos
