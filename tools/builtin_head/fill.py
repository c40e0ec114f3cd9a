"""The skin outside the eye and mouth regions: the poles and the UV seam down the back of the head, two rings
round the neck's base, and farthest-point sampling of the rest, finer on the face than on the scalp and neck."""

from __future__ import annotations

import math

import numpy as np
from scipy.spatial import cKDTree

from .field import neck_axis_z, smoothstep
from .rays import param_through, surface_from_param

SEAM_SPACING = 0.0078
N_CANDIDATES = 60000


def fibonacci_sphere(n: int) -> np.ndarray:
    i = np.arange(n) + 0.5
    y = 1.0 - 2.0 * i / n
    r = np.sqrt(1.0 - y * y)
    phi = i * math.pi * (3.0 - math.sqrt(5.0))
    return np.column_stack([r * np.sin(phi), y, r * np.cos(phi)])


def build_seam():
    """Parameters of the two poles and of the UV seam down the back of the head (x = 0, z < 0)."""
    lam = np.linspace(-math.pi / 2, math.pi / 2, 2001)[1:-1]
    p = np.column_stack([np.zeros_like(lam), np.sin(lam), -np.cos(lam)])
    x = surface_from_param(p)
    seg = np.linalg.norm(np.diff(x, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    n = int(round(s[-1] / SEAM_SPACING))
    targets = np.linspace(0.0, s[-1], n + 1)[1:-1]
    idx = np.searchsorted(s, targets)
    seam = p[idx]
    poles = np.array([[0.0, -1.0, 0.0], [0.0, 1.0, 0.0]])
    return poles, seam


NECK_RIM = ((-0.178, 1.06, 56), (-0.196, 0.78, 44))   # (height, radius factor, points): rings at the neck's base


def build_neck_rim():
    """Parameters of two rings of vertices round the rounded bottom edge of the neck (a clean silhouette)."""
    out = []
    for y, f, n in NECK_RIM:
        psi = (np.arange(n) + 0.5) * 2 * math.pi / n
        zc = neck_axis_z(y)
        pts = np.column_stack([0.052 * f * np.sin(psi), np.full(n, y), zc + 0.056 * f * np.cos(psi)])
        pts = pts[~((np.abs(pts[:, 0]) < 0.006) & (pts[:, 2] < zc))]      # keep clear of the UV seam
        out.append(param_through(pts))
    return np.concatenate(out)


def spacing(x: np.ndarray) -> np.ndarray:
    """Relative target vertex spacing over the head: finest round the eyes, nose and mouth."""
    core = ((x[:, 0] / 0.052) ** 2 + ((x[:, 1] + 0.008) / 0.066) ** 2 + ((x[:, 2] - 0.045) / 0.055) ** 2)
    core = 1.0 - smoothstep(0.8, 1.3, core)
    face = smoothstep(-0.035, -0.005, x[:, 2]) * (1.0 - smoothstep(0.075, 0.1, x[:, 1])) \
        * smoothstep(-0.125, -0.1, x[:, 1])
    ear = 1.0 - smoothstep(0.6, 1.2, ((np.abs(x[:, 0]) - 0.078) / 0.02) ** 2 + ((x[:, 1] - 0.005) / 0.035) ** 2
                           + ((x[:, 2] + 0.03) / 0.025) ** 2)
    nose = ((x[:, 0] / 0.022) ** 2 + ((x[:, 1] + 0.004) / 0.03) ** 2 + ((x[:, 2] - 0.06) / 0.025) ** 2)
    nose = 1.0 - smoothstep(0.7, 1.2, nose)
    h = 3.0 - 1.7 * np.maximum(face, 0.85 * ear) - 0.3 * core - 0.2 * nose
    return h + 0.5 * (1.0 - smoothstep(-0.17, -0.12, x[:, 1])) - 0.9 * smoothstep(-0.175, -0.19, x[:, 1])


def farthest_points(cand: np.ndarray, fixed: np.ndarray, n: int, h: np.ndarray) -> np.ndarray:
    """Indices of n candidates chosen greedily by the largest (distance to chosen and fixed points) / h."""
    inv_h2 = 1.0 / (h * h)
    d = cKDTree(fixed).query(cand)[0] ** 2 * inv_h2
    cx, cy, cz = (np.ascontiguousarray(cand[:, k]) for k in range(3))
    chosen = np.empty(n, dtype=np.int64)
    for k in range(n):
        i = int(np.argmax(d))
        chosen[k] = i
        dd = ((cx - cx[i]) ** 2 + (cy - cy[i]) ** 2 + (cz - cz[i]) ** 2) * inv_h2
        np.minimum(d, dd, out=d)
    return chosen
