"""The surface parametrisation: every skin vertex has a parameter direction p on the unit sphere, and sits where
the ray from O(p) along p leaves the implicit surface. O moves back along -z for forward directions, which keeps
the rays through the face nearly parallel."""

from __future__ import annotations

import numpy as np

from .field import head_field

RAY_CENTRE = np.array([0.0, 0.005, -0.035])
RAY_BACK = 0.09                   # O(p) = RAY_CENTRE - (0, 0, RAY_BACK * max(p_z, 0)^2)
T_FAR = 0.33


def ray_origins(p: np.ndarray) -> np.ndarray:
    o = np.tile(RAY_CENTRE, (len(p), 1))
    o[:, 2] -= RAY_BACK * np.clip(p[:, 2], 0.0, None) ** 2
    return o


def march_in(origins: np.ndarray, dirs: np.ndarray, t_far: float, field=head_field, t_near: float = 0.0):
    """Outermost crossing of the implicit surface along origins + t * dirs, searching from t_far inwards.

    Returns t [N] (nan where the ray misses). Sphere tracing from outside, then bisection."""
    n = len(origins)
    t = np.full(n, float(t_far))
    t_out = t.copy()
    hit = np.zeros(n, dtype=bool)
    alive = np.ones(n, dtype=bool)
    for _ in range(400):
        idx = np.nonzero(alive)[0]
        if idx.size == 0:
            break
        f = field(origins[idx] + t[idx, None] * dirs[idx])
        inside = f <= 0.0
        hit[idx[inside]] = True
        alive[idx[inside]] = False
        out = idx[~inside]
        t_out[out] = t[out]
        t[out] = t[out] - np.maximum(0.6 * f[~inside], 1.5e-4)
        gone = out[t[out] < t_near]
        alive[gone] = False
    lo, hi = t.copy(), t_out.copy()        # lo inside, hi outside
    idx = np.nonzero(hit)[0]
    for _ in range(18):
        mid = 0.5 * (lo[idx] + hi[idx])
        f = field(origins[idx] + mid[:, None] * dirs[idx])
        ins = f <= 0.0
        lo[idx[ins]] = mid[ins]
        hi[idx[~ins]] = mid[~ins]
    res = np.full(n, np.nan)
    res[idx] = 0.5 * (lo[idx] + hi[idx])
    return res


def surface_from_param(p: np.ndarray) -> np.ndarray:
    """The skin point of parameter directions p [N, 3] (unit vectors)."""
    o = ray_origins(p)
    t = march_in(o, p, T_FAR)
    if np.isnan(t).any():
        raise RuntimeError("a parameter ray missed the head surface")
    return o + t[:, None] * p


def param_through(points: np.ndarray) -> np.ndarray:
    """Parameter directions p whose rays from O(p) pass through `points` [N, 3] (fixed-point iteration)."""
    p = points - RAY_CENTRE
    p /= np.linalg.norm(p, axis=1, keepdims=True)
    for _ in range(60):
        q = points - ray_origins(p)
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        if np.abs(q - p).max() < 1e-13:
            p = q
            break
        p = q
    return p
