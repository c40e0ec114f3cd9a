"""Closest points on a triangle mesh, as (face index, barycentric coordinates): how a landmark embedding is made."""

from __future__ import annotations

import numpy as np


def _closest_on_segment(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ab = b - a
    t = np.clip(((p - a) * ab).sum(-1) / np.maximum((ab * ab).sum(-1), 1e-30), 0, 1)
    return a + t[..., None] * ab, t


def closest_points(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray,
                   candidates: np.ndarray | None = None, near: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """For each point [P, 3], the nearest surface point over `candidates` (face indices; default all faces),
    searched among the `near` faces whose centroids are closest (the points lie on or near the surface).

    Returns (face index [P] int64, barycentric coordinates [P, 3] float64, summing to 1, all >= 0)."""
    candidates = np.arange(len(faces)) if candidates is None else np.asarray(candidates)
    corners = vertices[faces[candidates]].astype(np.float64)          # [C, 3, 3]
    centroids = corners.mean(1)
    p = np.asarray(points, dtype=np.float64)
    d = ((p[:, None, :] - centroids[None]) ** 2).sum(-1)              # [P, C]
    near = min(near, len(candidates))
    pick = np.argpartition(d, near - 1, axis=1)[:, :near]              # [P, K]
    tri = corners[pick]                                                # [P, K, 3, 3]
    a, b, c = tri[..., 0, :], tri[..., 1, :], tri[..., 2, :]
    p = p[:, None, :]
    # The projection onto each triangle's plane, in barycentric coordinates (Cramer's rule).
    v0, v1, v2 = b - a, c - a, p - a
    d00, d01, d11 = (v0 * v0).sum(-1), (v0 * v1).sum(-1), (v1 * v1).sum(-1)
    d20, d21 = (v2 * v0).sum(-1), (v2 * v1).sum(-1)
    denom = np.maximum(d00 * d11 - d01 * d01, 1e-30)
    w1 = (d11 * d20 - d01 * d21) / denom
    w2 = (d00 * d21 - d01 * d20) / denom
    w0 = 1 - w1 - w2
    inside = (w0 >= 0) & (w1 >= 0) & (w2 >= 0)
    bary = np.stack([w0, w1, w2], -1)
    best = np.where(inside[..., None], a + w1[..., None] * v0 + w2[..., None] * v1, np.inf)
    # Outside: the nearest point on one of the three edges.
    for (i, j), (x, y) in (((0, 1), (a, b)), ((1, 2), (b, c)), ((2, 0), (c, a))):
        q, t = _closest_on_segment(p, x, y)
        edge_bary = np.zeros(bary.shape)
        edge_bary[..., i], edge_bary[..., j] = 1 - t, t
        better = ~inside & (((q - p) ** 2).sum(-1) < ((best - p) ** 2).sum(-1))
        best = np.where(better[..., None], q, best)
        bary = np.where(better[..., None], edge_bary, bary)
    # Ties (a point on a shared edge) go to the lower face index, whatever order argpartition gave.
    dist = ((best - p) ** 2).sum(-1)
    k = np.lexsort((candidates[pick], dist))[:, 0]     # per row: nearest, then lowest face index
    rows = np.arange(len(k))
    out_bary = np.clip(bary[rows, k], 0, None)
    return candidates[pick[rows, k]].astype(np.int64), out_bary / out_bary.sum(1, keepdims=True)


def evaluate(vertices: np.ndarray, faces: np.ndarray, face_idx: np.ndarray, bary: np.ndarray) -> np.ndarray:
    """The points an embedding names: sum_k bary[..., k] * vertices[faces[face_idx, k]]."""
    return (bary[..., None] * vertices[faces[face_idx]]).sum(-2)
