"""The structured skin round each eye: almond-shaped loops round the lid opening. The lid margin sits on the
eyeball, the skin inside the opening is tucked behind it (so the eyeball shows through), and the loops' levels
let the fill keep clear of the region and the blink shape slide the upper lid."""

from __future__ import annotations

import math

import numpy as np

from .anatomy import EYE_CENTRES, EYE_R, LID
from .rays import param_through, surface_from_param

# Eye-local angles (degrees): theta_h > 0 towards the ear (lateral), theta_v > 0 up. The lid opening is an almond
# round (EYE_TH0, EYE_TV0); loop level m = 1 is the lid margin, m < 1 lies inside the opening, m > 1 on the lids.
EYE_YAW = 5.0
EYE_TH0, EYE_TV0 = 6.0, 1.0
EYE_W, EYE_HU, EYE_HL = 62.0, 20.0, 15.0
EYE_GH, EYE_GV = 45.0, 36.0
EYE_PLANE_R = EYE_R + LID
EYE_S_KNEE = math.radians(65.0)
# (level m, points, kind, radial offset from the eyeball surface for the explicit kinds)
EYE_LOOPS = (
    (0.0, 1, "recess", -0.0025),
    (0.5, 16, "recess", -0.0025),
    (0.8, 32, "recess", -0.0022),
    (0.93, 36, "wall", -0.0008),
    (1.0, 36, "margin", 0.0003),
    (1.07, 36, "rim", 0.0013),
    (1.22, 36, "surface", 0.0),
    (1.45, 38, "surface", 0.0),
    (1.75, 40, "surface", 0.0),
    (2.05, 44, "surface", 0.0),
)
EYE_CREASE_M = 2.05
EYE_EXCLUDE_M = 2.22


def eye_frame(e: int):
    """(centre, lateral, up, forward) unit axes of eye e (0 = left, +x; 1 = right)."""
    sgn = 1.0 if e == 0 else -1.0
    yaw = math.radians(EYE_YAW)
    fwd = np.array([sgn * math.sin(yaw), 0.0, math.cos(yaw)])
    lat = np.array([sgn * math.cos(yaw), 0.0, -math.sin(yaw)])
    return EYE_CENTRES[e], lat, np.array([0.0, 1.0, 0.0]), fwd


def eye_dir(e: int, th_deg, tv_deg):
    _, lat, up, fwd = eye_frame(e)
    th, tv = np.radians(th_deg), np.radians(tv_deg)
    return ((np.sin(th) * np.cos(tv))[:, None] * lat + np.sin(tv)[:, None] * up
            + (np.cos(th) * np.cos(tv))[:, None] * fwd)


def eye_angles(e: int, points: np.ndarray):
    """Eye-local (theta_h, theta_v) in degrees and radius of points [N, 3]."""
    c, lat, up, fwd = eye_frame(e)
    d = points - c
    r = np.linalg.norm(d, axis=1)
    a, b, f = d @ lat, d @ up, d @ fwd
    tv = np.degrees(np.arcsin(np.clip(b / r, -1, 1)))
    th = np.degrees(np.arctan2(a, f))
    return th, tv, r


def almond(m, tau):
    """Eye angles of loop level m at loop parameter tau (radians)."""
    m = np.asarray(m, dtype=np.float64)
    h = np.where(np.sin(tau) >= 0, EYE_HU, EYE_HL)
    grow = np.clip(m - 1.0, 0.0, None)
    scale = np.minimum(m, 1.0)
    dh = (EYE_W * scale + grow * EYE_GH) * np.cos(tau)
    dv = (h * scale + grow * EYE_GV) * np.sin(tau)
    return EYE_TH0 + dh, EYE_TV0 + dv


def _s_warp(theta_rad):
    a = np.abs(theta_rad)
    k = EYE_S_KNEE
    return np.sign(theta_rad) * np.where(a <= k, np.sin(a), math.sin(k) + math.cos(k) * (a - k))


def _s_warp_inv(s):
    a = np.abs(s)
    k = EYE_S_KNEE
    return np.sign(s) * np.where(a <= math.sin(k), np.arcsin(np.clip(a, 0, 1)), k + (a - math.sin(k)) / math.cos(k))


def eye_virtual_points(e: int, th_deg, tv_deg):
    """Points on the plane in front of the eye whose rays give the structured eye vertices their parameters."""
    c, lat, up, fwd = eye_frame(e)
    tv = np.radians(tv_deg)
    cv = np.maximum(np.cos(tv), math.cos(EYE_S_KNEE))
    X = EYE_PLANE_R * _s_warp(np.radians(th_deg)) * cv
    Y = EYE_PLANE_R * _s_warp(tv)
    return c + EYE_PLANE_R * fwd + X[:, None] * lat + Y[:, None] * up


def eye_level_of_rays(e: int, origins, dirs):
    """Loop level m where rays cross the eye's virtual plane (inf where they do not reach it)."""
    c, lat, up, fwd = eye_frame(e)
    plane = c + EYE_PLANE_R * fwd
    denom = dirs @ fwd
    t = ((plane - origins) @ fwd) / np.where(np.abs(denom) < 1e-9, 1e-9, denom)
    q = origins + t[:, None] * dirs - plane
    X, Y = q @ lat, q @ up
    tv = _s_warp_inv(Y / EYE_PLANE_R)
    cv = np.maximum(np.cos(tv), math.cos(EYE_S_KNEE))
    th = _s_warp_inv(X / (EYE_PLANE_R * cv))
    dh = np.degrees(th) - EYE_TH0
    dv = np.degrees(tv) - EYE_TV0
    h = np.where(dv >= 0, EYE_HU, EYE_HL)
    lo, hi = np.zeros_like(dh), np.full_like(dh, 6.0)
    for _ in range(50):
        m = 0.5 * (lo + hi)
        th_m, tv_m = almond(m, 0.0)
        grow = np.clip(m - 1.0, 0.0, None)
        sc = np.minimum(m, 1.0)
        a = EYE_W * sc + grow * EYE_GH
        b = h * sc + grow * EYE_GV
        inside = (dh / np.maximum(a, 1e-9)) ** 2 + (dv / np.maximum(b, 1e-9)) ** 2 <= 1.0
        hi = np.where(inside, m, hi)
        lo = np.where(inside, lo, m)
    m = 0.5 * (lo + hi)
    return np.where((denom > 0.2) & (t > 0), m, np.inf)


def build_eye_region(e: int):
    """Structured eye vertices: params, positions and per-vertex records (level m, tau, theta_h, theta_v, kind)."""
    c = EYE_CENTRES[e]
    params, pos, recs = [], [], []
    for m, n, kind, off in EYE_LOOPS:
        tau = np.arange(n) * 2 * math.pi / n + (math.pi / n if n % 4 else 0.0)
        th, tv = almond(np.full(n, m), tau)
        if m == 0.0:
            th, tv, tau = np.array([EYE_TH0]), np.array([EYE_TV0]), np.array([0.0])
        v = eye_virtual_points(e, th, tv)
        p = param_through(v)
        if kind == "surface":
            x = surface_from_param(p)
        else:
            x = c + (EYE_R + off) * eye_dir(e, th, tv)
        params.append(p)
        pos.append(x)
        for k in range(len(th)):
            recs.append((m, tau[k], th[k], tv[k], kind))
    return np.concatenate(params), np.concatenate(pos), recs
