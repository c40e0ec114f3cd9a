"""LBS weights and the joint regressor: eyeballs on their eye joints; the lower lip, chin and jaw on the jaw
(sharp across the middle of the lips, half-way at the corners, fading over the cheeks and down the throat); the
lower neck on the root, the rest on the neck. Joint regressor rows are convex vertex weights."""

from __future__ import annotations

import numpy as np
from scipy.optimize import nnls

from .anatomy import JOINTS
from .eyeballs import N_EYEBALL
from .field import smoothstep
from .mouth_bag import BAG_LOOPS


def jaw_side(M: dict) -> np.ndarray:
    """0..1 per vertex: how much a point near the mouth belongs to the lower lip / jaw side of the mouth line."""
    pos = M["pos"]
    x, y = pos[:, 0], pos[:, 1]
    slit = M["slit"]
    sp = pos[slit]
    w_real = np.abs(sp[[0, -1], 0]).mean()
    order = np.argsort(sp[:, 0])
    ax = np.abs(x)
    # Jaw side of the mouth: sharp across the middle of the lips, softer towards the corners, where the lips
    # follow the jaw half-way, and a broad blend over the cheeks towards the ear.
    h = np.sqrt(np.clip(1.0 - (ax / w_real) ** 2, 0.0, 1.0))
    y_corner = sp[[0, -1], 1].mean()
    y_line = np.where(ax <= w_real, np.interp(x, sp[order, 0], sp[order, 1]),
                      y_corner + 0.5 * (ax - w_real))
    t = np.where(ax <= w_real, 0.0006 + 0.008 * (1.0 - h), 0.0086 + 0.6 * (ax - w_real))
    below = 1.0 - smoothstep(-t, t, y - y_line)
    below[slit[1:-1]] = 0.5 - 0.5 * h[slit[1:-1]]
    below[M["lower_ids"]] = 0.5 + 0.5 * h[M["lower_ids"]]
    below[slit[[0, -1]]] = 0.5
    for j in range(BAG_LOOPS):
        ids = M["bag_start"] + j * M["n_ring"] + np.arange(M["n_ring"])
        below[ids] = below[M["ring"]]
    return below


def build_weights(M: dict) -> np.ndarray:
    """LBS weights [V, 5]: eyeballs on their eye joints, the jaw side of the mouth on the jaw (fading over the
    cheeks, behind the jaw angle and down the throat), the head on the neck joint, the lower neck on the root."""
    pos = M["pos"]
    V = len(pos)
    y, z = pos[:, 1], pos[:, 2]
    below = jaw_side(M)
    g_back = smoothstep(-0.05, -0.01, z)
    g_throat = 1.0 - smoothstep(-0.085, -0.125, y) * (1.0 - smoothstep(-0.02, 0.03, z))
    jaw = below * g_back * g_throat
    root = 1.0 - smoothstep(-0.175, -0.11, y)
    W = np.zeros((V, 5))
    W[:, 0] = root
    W[:, 1] = (1.0 - root) * (1.0 - jaw)
    W[:, 2] = (1.0 - root) * jaw
    for e in (0, 1):
        s0 = M["eyeball_start"][e]
        W[s0:s0 + N_EYEBALL] = 0.0
        W[s0:s0 + N_EYEBALL, 3 + e] = 1.0
    W[W < 1e-6] = 0.0
    return W / W.sum(1, keepdims=True)


def convex_weights(points: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Non-negative weights summing to 1 whose weighted mean of points is target (least squares, spread out)."""
    n = len(points)
    A = np.vstack([points.T, 30.0 * np.ones((1, n)), 1e-3 * np.eye(n)])
    b = np.concatenate([target, [30.0], np.zeros(n)])
    w, _ = nnls(A, b, maxiter=50 * n)
    w /= w.sum()
    err = np.abs(points.T @ w - target).max()
    if err > 2e-4:
        raise RuntimeError(f"joint {target} is not inside its vertices' hull (error {err:.5f} m)")
    return w


def build_joint_regressor(M: dict) -> np.ndarray:
    pos = M["pos"]
    n_skin = M["n_skin"]
    x, y, z = pos[:n_skin, 0], pos[:n_skin, 1], pos[:n_skin, 2]
    R = np.zeros((5, len(pos)))
    sets = [
        (y > -0.172) & (y < -0.148),
        (y > -0.075) & (y < -0.025) & (z < -0.005),
        (np.abs(x) > 0.05) & (y > -0.035) & (y < 0.015) & (z > -0.045) & (z < 0.005),
    ]
    for j, sel in enumerate(sets):
        ids = np.nonzero(sel)[0]
        R[j, ids] = convex_weights(pos[ids], JOINTS[j])
    for e in (0, 1):
        s0 = M["eyeball_start"][e]
        R[3 + e, s0:s0 + N_EYEBALL] = convex_weights(pos[s0:s0 + N_EYEBALL], JOINTS[3 + e])
    return R
