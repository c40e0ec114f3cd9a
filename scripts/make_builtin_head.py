#!/usr/bin/env python3
"""Generate the built-in FLAME-format head (addon_assets/builtin_head.npz) procedurally.

The project cannot ship the licensed FLAME model, so it ships its own head, built here from scratch with numpy
and scipy and stored in the converted-FLAME layout (core/flame/model_data.py), so that one code path evaluates
both. Everything is deterministic: running the script twice gives identical arrays.

How the head is made
  * Shape: an implicit surface (a smooth union of ellipsoids, tapered ellipsoids, round cones and tube-like lips:
    cranium, face, jaw, chin, cheekbones, brow, nose, lips, ears, neck; `head_field`), in FLAME's frame: metres,
    y up, the face looking along +z, +x = the subject's left.
  * Surface parametrisation: every skin vertex has a "parameter" direction p on the unit sphere; its position is
    where the ray from O(p) along p leaves the implicit surface (O moves back along -z for forward directions,
    which keeps the rays through the face nearly parallel). The skin is triangulated once, as the convex hull of
    the parameter directions (a spherical Delaunay triangulation), so it is a closed surface by construction.
  * Structured regions: the eyes (almond-shaped loops round each lid opening: the lid margin sits on the eyeball,
    the skin inside the opening is tucked behind it, so the eyeball shows through) and the mouth (loops round a
    slit; the slit's vertices are duplicated into an upper and a lower lip, and the opening leads into a mouth
    bag behind the lips). The rest of the head is filled by farthest-point sampling with a spacing that is finer
    on the face and coarser on the scalp and neck.
  * Two eyeballs (UV spheres, radius 12.5 mm) sit in the sockets and are skinned to the eye joints.
  * A UV layout (face in the middle, seam down the back of the head; eyeballs and mouth bag in a strip at the
    bottom), a UV face/eye mask, LBS weights, a joint regressor, pose correctives, 68 iBUG landmarks, and smooth
    hand-designed shape (identity) and expression blend shapes.

What is in the file (float32 / int64, see core/flame/model_data.py for the layout)
  * 5023 vertices, like FLAME, all on real surfaces: skin, then the mouth bag, the left eyeball (+x), the right
    eyeball. The skin + bag is one closed, consistently oriented surface; each eyeball is a closed sphere.
  * Joints (J_regressor rows are convex vertex weights): 0 root at the neck base, 1 neck, 2 jaw hinge, 3/4 the
    eyeball centres. Parents -1, 0, 1, 1, 1. LBS weights: eyeballs 100 % on their eye joint; the lower lip, chin
    and jaw on the jaw joint, sharp across the middle of the lips, half-way at the mouth corners and fading over
    the cheeks and down the throat; the lower neck on the root; everything else on the neck joint.
  * shapedirs: 26 identity components (names in `shape_names`), orthogonalised, one unit ~ one standard deviation
    (2 = a strong but plausible face). exprdirs: 16 named expressions (`expression_names`), 1 = a clear expression
    (eye_close_* = 1 closes that eye). Eyeballs move rigidly with the shape and not with expressions.
  * posedirs: small correctives for nodding (throat) and jaw opening (cheeks, mouth corners); none for the eyes,
    so an eye rotation moves its eyeball only, as in FLAME.
  * 68 iBUG landmarks embedded on skin faces; the front orthographic mouth crop box of the generator is ~36 px,
    centred at about pixel (128, 104), like FLAME's.
  * UVs: skin from the parameter directions (azimuth/latitude, warped so the face is large and undistorted in the
    middle; seam down the back of the head, from the neck's base to the crown); eyeball discs and the unrolled
    mouth bag in a strip along the bottom. uv_face_mask [256, 256]: 1 on the face skin (forehead to chin, cheek to
    cheek) and the eyeballs, 0 on scalp, ears, neck and the mouth bag, soft-edged.

Needs numpy and scipy; torch and the project's rasteriser for the UV mask (and smplx, imageio for --preview).
Takes ~15 s on two cores.

Usage:  python scripts/make_builtin_head.py [--out addon_assets/builtin_head.npz] [--preview [PNG]]
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
from scipy.optimize import nnls
from scipy.spatial import ConvexHull, cKDTree

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "addon_assets" / "builtin_head.npz"
DEFAULT_PREVIEW = ROOT / "addon_assets" / "builtin_head_preview.png"
NAME = "next3d-builtin-head-v1"

N_VERTICES = 5023
UV_MASK_SIZE = 256

# ----------------------------------------------------------------------------------------------- key positions
# Metres, FLAME frame. Index 0 = left (+x), 1 = right (-x).
EYE_R = 0.0125
EYE_CENTRES = np.array([[0.032, 0.030, 0.034], [-0.032, 0.030, 0.034]])
LID = 0.0016                      # lid thickness over the eyeball
JOINTS = np.array([
    [0.0, -0.160, -0.050],        # 0 global / root, at the neck base
    [0.0, -0.050, -0.045],        # 1 neck (top of the neck)
    [0.0, -0.010, -0.020],        # 2 jaw hinge (in front of the ears, a little below them)
    EYE_CENTRES[0],               # 3 left eye
    EYE_CENTRES[1],               # 4 right eye
])
PARENTS = np.array([-1, 0, 1, 1, 1], dtype=np.int64)

RAY_CENTRE = np.array([0.0, 0.005, -0.035])
RAY_BACK = 0.09                   # O(p) = RAY_CENTRE - (0, 0, RAY_BACK * max(p_z, 0)^2)
T_FAR = 0.33

# ----------------------------------------------------------------------------------------------- implicit shape


def _smin(a, b, k):
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b + (a - b) * h - k * h * (1.0 - h)


def _smax(a, b, k):
    return -_smin(-a, -b, k)


def smoothstep(e0, e1, x):
    t = np.clip((np.asarray(x, dtype=np.float64) - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _rot_x(deg):
    a = math.radians(deg)
    c, s = math.cos(a), math.sin(a)
    return np.array([[1.0, 0, 0], [0, c, -s], [0, s, c]])


def _rot_y(deg):
    a = math.radians(deg)
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0, s], [0, 1.0, 0], [-s, 0, c]])


def _rot_z(deg):
    a = math.radians(deg)
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


def _ell(x, y, z, c, s, R=None):
    """Approximate signed distance to an ellipsoid (centre c, semi-axes s, local axes = columns of R)."""
    qx, qy, qz = x - c[0], y - c[1], z - c[2]
    if R is not None:
        qx, qy, qz = (qx * R[0, 0] + qy * R[1, 0] + qz * R[2, 0], qx * R[0, 1] + qy * R[1, 1] + qz * R[2, 1],
                      qx * R[0, 2] + qy * R[1, 2] + qz * R[2, 2])
    ax, ay, az = qx / s[0], qy / s[1], qz / s[2]
    k0 = np.sqrt(ax * ax + ay * ay + az * az)
    ax, ay, az = ax / s[0], ay / s[1], az / s[2]
    k1 = np.sqrt(ax * ax + ay * ay + az * az)
    return k0 * (k0 - 1.0) / np.maximum(k1, 1e-12)


def _sphere(x, y, z, c, r):
    return np.sqrt((x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2) - r


def _round_cone(x, y, z, a, b, ra, rb, sx=1.0):
    ab = np.subtract(b, a)
    t = np.clip(((x - a[0]) * ab[0] + (y - a[1]) * ab[1] + (z - a[2]) * ab[2]) / (ab @ ab), 0.0, 1.0)
    dx = (x - (a[0] + t * ab[0])) / sx
    dy = y - (a[1] + t * ab[1])
    dz = z - (a[2] + t * ab[2])
    return np.sqrt(dx * dx + dy * dy + dz * dz) - (ra + t * (rb - ra))


def _lip(x, y, z, y0, z0, w, ry, rz, bend, lateral_sag):
    """A tube along a bent horizontal arc (a lip), thinning towards the corners."""
    xc = np.clip(x, -w, w)
    u = xc / w
    taper = np.sqrt(np.clip(1.0 - u ** 2, 0.0, 1.0)) * 0.85 + 0.15
    yc = y0 + lateral_sag * u ** 2
    zc = z0 - bend * xc ** 2
    dy = (y - yc) / (ry * taper)
    dz = (z - zc) / (rz * taper)
    dx = (x - xc) / (0.15 * min(ry, rz))
    k = np.sqrt(dx ** 2 + dy ** 2 + dz ** 2)
    return (k - 1.0) * min(ry, rz) * taper


_R_BROW = _rot_z(-10)
_R_EAR = _rot_y(-15) @ _rot_x(-12)
_R_NOSE = _rot_x(-28)


def head_field(p: np.ndarray) -> np.ndarray:
    """Implicit head: negative inside, ~distance in metres near the surface. p [N, 3]."""
    x, y, z = np.ascontiguousarray(p[:, 0]), np.ascontiguousarray(p[:, 1]), np.ascontiguousarray(p[:, 2])
    ax = np.abs(x)                                        # mirrored, for the paired features
    d = _smin(_ell(x, y, z, (0, 0.020, -0.045), (0.078, 0.104, 0.099)),          # cranium
              _ell(x, y, z, (0, 0.048, -0.055), (0.077, 0.078, 0.088)), 0.02)    # parietal fullness
    d = _smin(d, _ell(x, y, z, (0, -0.005, -0.005), (0.070, 0.058, 0.055)), 0.02)  # midface
    xj = x / (1.0 - 0.40 * smoothstep(-0.04, -0.10, y))                          # mandible, tapering to the chin
    d = _smin(d, _ell(xj, y, z, (0, -0.052, -0.014), (0.064, 0.048, 0.060)), 0.02)
    d = _smin(d, _ell(ax, y, z, (0.050, -0.066, -0.028), (0.012, 0.016, 0.020)), 0.02)   # jaw angles
    d = _smin(d, _ell(x, y, z, (0, -0.042, 0.022), (0.033, 0.032, 0.029)), 0.015)      # muzzle
    d = _smin(d, _ell(x, y, z, (0, -0.083, 0.033), (0.018, 0.0135, 0.016)), 0.02)      # chin
    d = _smin(d, _ell(ax, y, z, (0.050, 0.012, 0.016), (0.020, 0.012, 0.018)), 0.015)  # cheekbones
    d = _smax(d, -_ell(ax, y, z, (0.032, 0.030, 0.054), (0.019, 0.015, 0.018)), 0.010)  # orbits
    d = _smin(d, _ell(ax, y, z, (0.030, 0.047, 0.035), (0.025, 0.009, 0.012), _R_BROW), 0.016)  # brows
    d = _smin(d, _ell(x, y, z, (0, 0.042, 0.043), (0.012, 0.010, 0.009)), 0.01)       # glabella
    d = _smin(d, _sphere(ax, y, z, EYE_CENTRES[0], EYE_R + LID), 0.008)               # lids over the eyeballs
    d = _smin(d, _round_cone(x, y, z, (0, 0.028, 0.041), (0, -0.006, 0.064), 0.0045, 0.0085, sx=0.9), 0.008)
    d = _smin(d, _ell(ax, y, z, (0.0065, -0.006, 0.053), (0.0075, 0.016, 0.008), _R_NOSE), 0.008)  # flanks
    d = _smin(d, _ell(x, y, z, (0, -0.0095, 0.066), (0.009, 0.0085, 0.0095)), 0.005)  # nose tip
    d = _smin(d, _ell(ax, y, z, (0.0135, -0.0175, 0.0505), (0.0065, 0.0075, 0.0085)), 0.004)  # alae
    d = _smin(d, _ell(x, y, z, (0, -0.0205, 0.057), (0.006, 0.004, 0.009)), 0.005)    # columella
    lips = _smin(_lip(x, y, z, -0.0443, 0.0560, 0.024, 0.0042, 0.0055, 22.0, 0.003),          # upper lip
                 _lip(x, y, z, -0.0527, 0.0535, 0.022, 0.0050, 0.0058, 24.0, -0.001), 0.0015)   # lower lip
    d = _smin(d, lips, 0.007)
    d = _smin(d, _ell(ax, y, z, (0.083, 0.005, -0.030), (0.010, 0.031, 0.019), _R_EAR), 0.016)  # ears
    zc = _neck_axis_z(y)                                                              # neck, leaning forward
    neck = (np.sqrt((x / 0.052) ** 2 + ((z - zc) / 0.056) ** 2) - 1.0) * 0.052
    neck = _smax(neck, y, 0.01)
    neck = _smax(neck, -0.196 - y, 0.014)
    return _smin(d, neck, 0.018)


def _neck_axis_z(y):
    """z of the neck's axis at height y (the neck leans forward)."""
    return -0.040 - 0.10 * (-0.05 - y)


# ----------------------------------------------------------------------------------------------- ray casting


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


# ----------------------------------------------------------------------------------------------- eye regions
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


def _exit_along(origin, dirs, t0, t1, step=2.5e-4):
    """Where rays from a point inside the head (origin + t * dirs, t from t0) first leave the skin."""
    ts = np.arange(t0, t1, step)
    pts = origin + ts[None, :, None] * dirs[:, None, :]
    f = head_field(pts.reshape(-1, 3)).reshape(len(dirs), len(ts))
    outside = f > 0
    outside[:, -1] = True                       # rays still inside at t1 report t1
    k = np.argmax(outside, axis=1)
    lo, hi = ts[np.maximum(k - 1, 0)], ts[k]
    for _ in range(20):
        mid = 0.5 * (lo + hi)
        ins = head_field(origin + mid[:, None] * dirs) <= 0
        lo, hi = np.where(ins, mid, lo), np.where(ins, hi, mid)
    return origin + (0.5 * (lo + hi))[:, None] * dirs


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


# ----------------------------------------------------------------------------------------------- mouth region
MOUTH_PLANE_Z = 0.056
MOUTH_W = 0.026                   # half width of the slit on the chart plane
MOUTH_Y = -0.0476                 # slit height at the centre
MOUTH_BEND = -3.6                 # slit height changes by MOUTH_BEND * x^2 towards the corners (on the chart plane)
N_SLIT = 25
GROOVE = (0.0008, 0.0002)         # how far the slit and the first lip loop are pushed in (-z)
# (spread a, height above b_up, height below b_lo) in chart metres, innermost first
MOUTH_LOOPS = (
    (0.0014, 0.0016, 0.0018),
    (0.0030, 0.0034, 0.0040),
    (0.0046, 0.0058, 0.0072),     # the vermilion border (outer-lip landmarks)
    (0.0075, 0.0090, 0.0110),
    (0.0110, 0.0128, 0.0160),
)
MOUTH_EXCLUDE = 0.0022


def slit_y(x):
    xc = np.clip(x, -MOUTH_W, MOUTH_W)
    return MOUTH_Y + MOUTH_BEND * xc ** 2


def _loop_height(x, a, b):
    h = np.sqrt(np.clip(1.0 - (np.abs(x) / (MOUTH_W + a)) ** 8, 0.0, 1.0))
    return b * np.where(np.abs(x) <= MOUTH_W, np.maximum(h, 0.5), h)


def mouth_chart_points():
    """Chart (x, y) of the slit and the lip loops, with (loop index, side) records (side: +1 upper, -1 lower,
    0 corner)."""
    xs = np.linspace(-MOUTH_W, MOUTH_W, N_SLIT)
    pts, recs = [], []
    for k, x in enumerate(xs):
        pts.append((x, slit_y(x)))
        recs.append((0, 0 if k in (0, N_SLIT - 1) else 1))
    for li, (a, bu, bl) in enumerate(MOUTH_LOOPS, start=1):
        spread = (MOUTH_W + 0.5 * a) / MOUTH_W
        for x in xs * spread:
            pts.append((x, slit_y(x) + _loop_height(x, a, bu)))
            recs.append((li, 1))
        for x in xs[::-1] * spread:
            pts.append((x, slit_y(x) - _loop_height(x, a, bl)))
            recs.append((li, -1))
        pts.append((-(MOUTH_W + a), slit_y(-MOUTH_W)))
        recs.append((li, 0))
        pts.append((MOUTH_W + a, slit_y(MOUTH_W)))
        recs.append((li, 0))
    return np.array(pts), recs


def mouth_chart_of_rays(origins, dirs):
    t = (MOUTH_PLANE_Z - origins[:, 2]) / np.where(np.abs(dirs[:, 2]) < 1e-9, 1e-9, dirs[:, 2])
    q = origins + t[:, None] * dirs
    ok = (dirs[:, 2] > 0.2) & (t > 0)
    return q[:, :2], ok


def mouth_excluded(origins, dirs):
    xy, ok = mouth_chart_of_rays(origins, dirs)
    a, bu, bl = MOUTH_LOOPS[-1]
    a = a + MOUTH_EXCLUDE
    x, y = xy[:, 0], xy[:, 1]
    dy = y - slit_y(x)
    lim = np.where(dy >= 0, _loop_height(x, a, bu), _loop_height(x, a, bl)) + MOUTH_EXCLUDE
    return ok & (np.abs(x) < MOUTH_W + a) & (np.abs(dy) < lim)


def build_mouth_region():
    chart, recs = mouth_chart_points()
    v = np.column_stack([chart, np.full(len(chart), MOUTH_PLANE_Z)])
    p = param_through(v)
    x = surface_from_param(p)
    for i, (loop, _side) in enumerate(recs):
        if loop < len(GROOVE):
            x[i, 2] -= GROOVE[loop]
    return p, x, chart, recs


# ----------------------------------------------------------------------------------------------- the rest of the skin
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
        zc = _neck_axis_z(y)
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


# ----------------------------------------------------------------------------------------------- eyeballs, mouth bag
EYEBALL_RINGS = 10                 # rings between the poles: EYEBALL_RINGS - 1
EYEBALL_SEGMENTS = 20
N_EYEBALL = EYEBALL_SEGMENTS * (EYEBALL_RINGS - 1) + 2
BAG_LOOPS = 2
BAG_DEPTH = 0.024
BAG_HEIGHT = 0.010


def eyeball_polar_angles():
    s = np.arange(1, EYEBALL_RINGS) / EYEBALL_RINGS
    return math.pi * s ** 1.2


def build_eyeball(e: int):
    """Vertices [N_EYEBALL, 3] (front pole first, rings, back pole last) and local (polar, azimuth) angles."""
    c = EYE_CENTRES[e]
    th = eyeball_polar_angles()
    az = np.arange(EYEBALL_SEGMENTS) * 2 * math.pi / EYEBALL_SEGMENTS
    T, A = np.meshgrid(th, az, indexing="ij")
    dirs = np.stack([np.sin(T) * np.sin(A), np.sin(T) * np.cos(A), np.cos(T)], -1).reshape(-1, 3)
    dirs = np.concatenate([[[0.0, 0.0, 1.0]], dirs, [[0.0, 0.0, -1.0]]])
    polar = np.concatenate([[0.0], T.ravel(), [math.pi]])
    azim = np.concatenate([[0.0], A.ravel(), [0.0]])
    return c + EYE_R * dirs, polar, azim


def eyeball_faces(offset: int):
    """Faces of an eyeball whose vertices start at `offset`, counter-clockwise seen from outside, and per-corner
    (ring, segment) ids for the UV layout: ring 0 = front pole, EYEBALL_RINGS = back pole."""
    S, R = EYEBALL_SEGMENTS, EYEBALL_RINGS

    def vid(r, s):
        if r == 0:
            return offset
        if r == R:
            return offset + 1 + S * (R - 1)
        return offset + 1 + (r - 1) * S + (s % S)

    faces, corners = [], []
    for s in range(S):
        for r in range(R):
            a, b = (r, s), (r, s + 1)
            c, d = (r + 1, s + 1), (r + 1, s)
            if r == 0:
                tri = [(a, c, d)]
            elif r == R - 1:
                tri = [(a, b, d)]
            else:
                tri = [(a, b, c), (a, c, d)]
            for t in tri:
                faces.append([vid(*q) for q in t])
                corners.append(t)
    return np.array(faces, dtype=np.int64), corners


def bag_positions(ring_pos: np.ndarray, ring_side: np.ndarray):
    """Vertices of the mouth bag's loops behind the slit ring [L, 3]: [BAG_LOOPS, L, 3]."""
    w = np.abs(ring_pos[:, 0]).max()
    loops = []
    for j in range(1, BAG_LOOPS + 1):
        f = j / BAG_LOOPS
        x = ring_pos[:, 0] * (1.0 - 0.25 * f)
        open_ = math.sin(0.5 * math.pi * min(1.0, 1.6 * f))
        y = ring_pos[:, 1] + ring_side * BAG_HEIGHT * np.sqrt(np.clip(1.0 - (ring_pos[:, 0] / w) ** 2, 0, 1)) * open_
        z = ring_pos[:, 2] - BAG_DEPTH * f
        loops.append(np.column_stack([x, y, z]))
    return np.stack(loops)


def bag_faces(rings: list):
    """Triangles between consecutive rings (lists of vertex ids) and a zip closing the last ring."""
    faces = []
    L = len(rings[0])
    for r0, r1 in zip(rings[:-1], rings[1:]):
        for i in range(L):
            i1 = (i + 1) % L
            faces.append([r0[i], r0[i1], r1[i1]])
            faces.append([r0[i], r1[i1], r1[i]])
    last = rings[-1]
    n = L // 2 + 1                     # points per side including both corners

    def low(i):
        return (L - i) % L

    for i in range(n - 1):
        a, b, c, d = last[i], last[i + 1], last[low(i + 1)], last[low(i)]
        for t in ((a, b, c), (a, c, d)):
            if len(set(t)) == 3:
                faces.append(list(t))
    return faces


def directed_edge_problems(faces: np.ndarray):
    """(number of directed edges used more than once, number of edges without their reverse)."""
    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    key = e[:, 0] * (1 << 32) + e[:, 1]
    uniq, counts = np.unique(key, return_counts=True)
    rev = e[:, 1] * (1 << 32) + e[:, 0]
    missing = ~np.isin(rev, uniq)
    return int((counts > 1).sum()), int(missing.sum())


RELAX_ITERS = 4


def _triangulate(params: np.ndarray) -> np.ndarray:
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


def _relax(params, pos, faces, free, step=0.5):
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


def build_mesh():
    """All vertices, faces and the bookkeeping the later stages need."""
    eye_regions = [build_eye_region(0), build_eye_region(1)]
    m_param, m_pos, m_chart, m_recs = build_mouth_region()
    poles, seam = build_seam()
    seam_pos = surface_from_param(seam)
    pole_pos = surface_from_param(poles)
    rim = build_neck_rim()
    rim_pos = surface_from_param(rim)

    n_eye = sum(len(r[0]) for r in eye_regions)
    n_struct = n_eye + len(m_param) + 2 + len(seam) + len(rim)
    n_lower = N_SLIT - 2
    n_ring = 2 * N_SLIT - 2
    n_bag = BAG_LOOPS * n_ring
    n_fill = N_VERTICES - n_struct - n_lower - n_bag - 2 * N_EYEBALL
    if n_fill <= 0:
        raise RuntimeError("no vertices left for the fill")

    cand = fibonacci_sphere(N_CANDIDATES)
    cand_pos = surface_from_param(cand)
    origins = ray_origins(cand)
    keep = ~mouth_excluded(origins, cand)
    for e in (0, 1):
        keep &= eye_level_of_rays(e, origins, cand) > EYE_EXCLUDE_M
    keep &= ~((np.abs(cand[:, 0]) * 0.12 < 0.45 * SEAM_SPACING) & (cand[:, 2] < 0))
    keep &= np.abs(cand[:, 1]) < 0.9995
    cand, cand_pos = cand[keep], cand_pos[keep]
    fixed = np.concatenate([eye_regions[0][1], eye_regions[1][1], m_pos, pole_pos, seam_pos, rim_pos])
    chosen = farthest_points(cand_pos, fixed, n_fill, spacing(cand_pos))
    fill, fill_pos = cand[chosen], cand_pos[chosen]

    # Skin vertex order: left eye region, right eye region, mouth (slit first), bottom pole, top pole, seam,
    # neck rim, fill.
    params = np.concatenate([eye_regions[0][0], eye_regions[1][0], m_param, poles, seam, rim, fill])
    pos = np.concatenate([eye_regions[0][1], eye_regions[1][1], m_pos, pole_pos, seam_pos, rim_pos, fill_pos])
    n_skin = len(params)
    eye_start = [0, len(eye_regions[0][0])]
    mouth_start = n_eye
    pole_ids = (mouth_start + len(m_param), mouth_start + len(m_param) + 1)
    seam_ids = np.arange(pole_ids[1] + 1, pole_ids[1] + 1 + len(seam))

    faces = _triangulate(params)
    free = np.zeros(n_skin, dtype=bool)
    free[seam_ids[-1] + 1 + len(rim):] = True
    free &= ~((np.abs(pos[:, 0]) < 1.5 * SEAM_SPACING) & (pos[:, 2] < -0.02))
    for _ in range(RELAX_ITERS):
        params, pos = _relax(params, pos, faces, free)
        faces = _triangulate(params)
    edges = set(map(tuple, np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), 1)))
    slit = mouth_start + np.arange(N_SLIT)
    for k in range(N_SLIT - 1):
        if (min(slit[k], slit[k + 1]), max(slit[k], slit[k + 1])) not in edges:
            raise RuntimeError(f"slit edge {k} is missing from the triangulation")
    chain = np.concatenate([[pole_ids[0]], seam_ids, [pole_ids[1]]])
    for k in range(len(chain) - 1):
        if (min(chain[k], chain[k + 1]), max(chain[k], chain[k + 1])) not in edges:
            raise RuntimeError(f"seam edge {k} is missing from the triangulation")

    # Split the slit: faces below it take lower-lip copies of the interior slit vertices.
    chart, _ = mouth_chart_of_rays(ray_origins(params), params)
    below = chart[:, 1] - slit_y(chart[:, 0]) < 0
    interior = set(slit[1:-1].tolist())
    lower_of = {int(s): n_skin + k for k, s in enumerate(slit[1:-1])}
    slit_set = set(slit.tolist())
    for fi, f in enumerate(faces):
        if not interior.intersection(f.tolist()):
            continue
        others = [v for v in f if v not in slit_set]
        if not others:
            raise RuntimeError("a face lies entirely on the slit")
        votes = [bool(below[v]) for v in others]
        if all(votes) != any(votes):
            raise RuntimeError("a face straddles the slit")
        if votes[0]:
            faces[fi] = [lower_of.get(int(v), int(v)) for v in f]
    lower_ids = np.array([lower_of[int(s)] for s in slit[1:-1]])
    pos = np.concatenate([pos, pos[slit[1:-1]]])
    params_all = np.concatenate([params, params[slit[1:-1]]])

    # Mouth bag behind the slit.
    ring = np.concatenate([[slit[0]], slit[1:-1], [slit[-1]], lower_ids[::-1]])
    ring_side = np.concatenate([[0.0], np.ones(N_SLIT - 2), [0.0], -np.ones(N_SLIT - 2)])
    bag = bag_positions(pos[ring], ring_side)
    bag_start = len(pos)
    rings = [ring.tolist()] + [list(range(bag_start + j * n_ring, bag_start + (j + 1) * n_ring))
                               for j in range(BAG_LOOPS)]
    pos = np.concatenate([pos, bag.reshape(-1, 3)])
    bfaces = np.array(bag_faces(rings), dtype=np.int64)
    trial = np.concatenate([faces, bfaces])
    if directed_edge_problems(trial) != (0, 0):
        bfaces = bfaces[:, [0, 2, 1]]

    # Eyeballs.
    eyeball_start = [len(pos), len(pos) + N_EYEBALL]
    eyeball_info = []
    all_faces = [faces, bfaces]
    for e in (0, 1):
        v, polar, azim = build_eyeball(e)
        pos = np.concatenate([pos, v])
        ef, corners = eyeball_faces(eyeball_start[e])
        all_faces.append(ef)
        eyeball_info.append((polar, azim, corners))
    all_faces = np.concatenate(all_faces)
    if len(pos) != N_VERTICES:
        raise RuntimeError(f"{len(pos)} vertices instead of {N_VERTICES}")
    problems = directed_edge_problems(all_faces)
    if problems != (0, 0):
        raise RuntimeError(f"the mesh is not a consistently oriented closed surface: {problems}")

    return dict(
        pos=pos, faces=all_faces, n_skin_faces=len(faces), n_bag_faces=len(bfaces), params=params_all,
        n_skin=n_skin, n_skin_all=n_skin + n_lower, eye_regions=eye_regions, eye_start=eye_start,
        mouth_start=mouth_start, mouth_chart=m_chart, mouth_recs=m_recs, slit=slit, lower_ids=lower_ids,
        pole_ids=pole_ids, seam_ids=seam_ids, ring=ring, ring_side=ring_side, bag_start=bag_start,
        n_ring=n_ring, eyeball_start=eyeball_start, eyeball_info=eyeball_info,
    )


# ----------------------------------------------------------------------------------------------- UV layout
UV_HEAD_V0 = 0.165                # the head's UV band is v in [UV_HEAD_V0, 1]; eyeballs and mouth bag below
# Warps of azimuth and latitude (scaled to [-1, 1]): slope k up to s0, easing to a constant slope from s1 on.
UV_WARP_U = (3.0, 0.2, 0.35)
UV_WARP_V = (1.8, 0.3, 0.55)
UV_LAT_CENTRE = math.radians(-3.0)
EYE_ISLANDS = ((0.245, 0.0815), (0.085, 0.0815))    # (u, v) centres: left eye, right eye
EYE_ISLAND_R = 0.075
BAG_ISLAND = (0.35, 0.985, 0.008, 0.155)            # u0, u1, v0, v1


def _warp(s, spec):
    """Odd monotone map of [-1, 1] onto itself: slope k near 0 (the face, undistorted), a smaller constant slope
    towards +-1 (the back of the head), joined by a smoothstep in the slope."""
    k, s0, s1 = spec
    g_min = (1.0 - k * (s0 + s1) / 2) / (1.0 - (s0 + s1) / 2)
    a = np.abs(s)
    t = np.clip((a - s0) / (s1 - s0), 0.0, 1.0)
    ramp = np.where(a < s0, 0.0, (s1 - s0) * (t ** 3 - 0.5 * t ** 4)) + np.clip(a - s1, 0.0, None)
    return np.sign(s) * (g_min * a + (k - g_min) * (a - ramp))


def head_uv(params: np.ndarray, phi_override=None) -> np.ndarray:
    """(u, v) of skin parameter directions; phi_override replaces the azimuth (for seam vertices)."""
    phi = np.arctan2(params[:, 0], params[:, 2]) if phi_override is None else phi_override
    lam = np.arcsin(np.clip(params[:, 1], -1, 1))
    u = 0.5 + 0.5 * _warp(phi / math.pi, UV_WARP_U)
    c = UV_LAT_CENTRE
    s = np.where(lam >= c, (lam - c) / (math.pi / 2 - c), (lam - c) / (math.pi / 2 + c))
    v = UV_HEAD_V0 + (1.0 - UV_HEAD_V0) * (0.5 + 0.5 * _warp(s, UV_WARP_V))
    return np.column_stack([u, v])


def _eye_island_radius(polar):
    k = math.radians(75.0)
    return EYE_ISLAND_R * np.where(polar <= k, 0.8 * polar / k, 0.8 + 0.2 * (polar - k) / (math.pi - k))


def build_uvs(M: dict):
    """UV coordinates [U, 2] and per-face UV indices [F, 3] for every part of the mesh."""
    faces = M["faces"]
    params = M["params"]
    n_sf, n_bf = M["n_skin_faces"], M["n_bag_faces"]
    seam = set(M["seam_ids"].tolist())
    poles = {M["pole_ids"][0]: UV_HEAD_V0, M["pole_ids"][1]: 1.0}
    uv_plain = head_uv(params)
    phi = np.arctan2(params[:, 0], params[:, 2])
    table, uvs = {}, []

    def uv_index(key, uv):
        if key not in table:
            table[key] = len(uvs)
            uvs.append((float(uv[0]), float(uv[1])))
        return table[key]

    uv_faces = np.zeros_like(faces)
    # Skin.
    for fi in range(n_sf):
        f = faces[fi]
        others = [v for v in f if v not in seam and v not in poles]
        side = 1.0 if not others or np.mean(np.sign(phi[others])) >= 0 else -1.0
        corner_uv = {}
        for v in f:
            if v in seam:
                corner_uv[v] = head_uv(params[[v]], np.array([side * math.pi]))[0]
            elif v not in poles:
                uv = uv_plain[v].copy()
                if others and (np.sign(phi[v]) != side) and abs(phi[v]) > math.pi / 2:
                    raise RuntimeError("a face crosses the UV seam")
                corner_uv[v] = uv
        for v in f:
            if v in poles:
                us = [corner_uv[w][0] for w in f if w not in poles]
                corner_uv[v] = np.array([np.mean(us), poles[v]])
        for k, v in enumerate(f):
            uv = corner_uv[v]
            key = ("skin", int(v), round(float(uv[0]), 9)) if (v in seam or v in poles) else ("skin", int(v))
            uv_faces[fi, k] = uv_index(key, uv)
    # Mouth bag: unrolled from the slit (upper lip at the top edge, lower lip at the bottom edge).
    ring, ring_side = M["ring"], M["ring_side"]
    n_ring = M["n_ring"]
    pos = M["pos"]
    w = np.abs(pos[ring, 0]).max()
    u0, u1, v0, v1 = BAG_ISLAND
    vid_info = {}
    for i, v in enumerate(ring):
        vid_info[int(v)] = (i, 0)
    for j in range(BAG_LOOPS):
        for i in range(n_ring):
            vid_info[M["bag_start"] + j * n_ring + i] = (i, j + 1)
    for fi in range(n_sf, n_sf + n_bf):
        for k, v in enumerate(faces[fi]):
            i, j = vid_info[int(v)]
            x = pos[ring[i], 0] / w
            s = ring_side[i]
            u = u0 + (u1 - u0) * 0.5 * (x + 1.0)
            vv = 0.5 * (v0 + v1) + s * 0.5 * (v1 - v0) * (1.0 - j / (BAG_LOOPS + 0.5))
            uv_faces[fi, k] = uv_index(("bag", int(v)), (u, vv))
    # Eyeballs: azimuthal layout round the pupil (the front pole); the back pole gets one UV per face.
    for e in (0, 1):
        polar, azim, corners = M["eyeball_info"][e]
        start = M["eyeball_start"][e]
        cu, cv = EYE_ISLANDS[e]
        f0 = n_sf + n_bf + e * len(corners)
        for k, tri in enumerate(corners):
            fi = f0 + k
            segs = [q[1] for q in tri if 0 < q[0] < EYEBALL_RINGS]
            for c, (r, sgm) in enumerate(tri):
                v = int(faces[fi, c])
                local = v - start
                if r == EYEBALL_RINGS:
                    a = (np.mean(segs) + 0.0) * 2 * math.pi / EYEBALL_SEGMENTS
                    rho = EYE_ISLAND_R
                    key = ("eye", v, round(a, 9))
                else:
                    a = azim[local]
                    rho = _eye_island_radius(polar[local])
                    key = ("eye", v)
                uv_faces[fi, c] = uv_index(key, (cu + rho * math.sin(a), cv + rho * math.cos(a)))
    return np.array(uvs), uv_faces


# ----------------------------------------------------------------------------------------------- UV face mask


def vertex_normals(pos: np.ndarray, faces: np.ndarray) -> np.ndarray:
    fn = np.cross(pos[faces[:, 1]] - pos[faces[:, 0]], pos[faces[:, 2]] - pos[faces[:, 0]])
    vn = np.zeros_like(pos)
    for k in range(3):
        np.add.at(vn, faces[:, k], fn)
    return vn / np.maximum(np.linalg.norm(vn, axis=1, keepdims=True), 1e-15)


def faceness(pos: np.ndarray, normals: np.ndarray) -> np.ndarray:
    """Soft 0..1 indicator of the face skin (forehead to chin, cheek to cheek, not ears, scalp or neck)."""
    x, y, z = pos[:, 0], pos[:, 1], pos[:, 2]
    oval = 1.0 - smoothstep(0.9, 1.0, (x / 0.066) ** 2 + ((y + 0.010) / 0.088) ** 2)
    facing = smoothstep(-0.35, -0.05, normals[:, 2])
    front = smoothstep(-0.02, -0.005, z)
    return oval * facing * front


def rasterize_uv_attribute(uvs, uv_faces, values_per_corner, size=UV_MASK_SIZE):
    """Rasterise a per-face-corner scalar over the UV square: [size, size], row 0 at v = 1."""
    import torch
    sys.path.insert(0, str(ROOT))
    from core.rendering.rasterize import rasterize

    verts = np.column_stack([2 * uvs[:, 0] - 1, 1 - 2 * uvs[:, 1], np.ones(len(uvs))])
    both = np.concatenate([uv_faces, uv_faces[:, [0, 2, 1]]])
    vals = np.concatenate([values_per_corner, values_per_corner])
    img, cov = rasterize(torch.tensor(verts, dtype=torch.float32)[None], torch.tensor(both),
                         torch.tensor(vals[:, :, None], dtype=torch.float32), size)
    return img[0, 0].numpy().astype(np.float64), cov[0, 0].numpy().astype(np.float64)


def build_uv_mask(M: dict, uvs: np.ndarray, uv_faces: np.ndarray) -> np.ndarray:
    """[256, 256] float mask: 1 on the face skin and the eyeballs, 0 on scalp, ears, neck and mouth bag."""
    pos, faces = M["pos"], M["faces"]
    skin_faces = faces[:M["n_skin_faces"]]
    normals = vertex_normals(pos, skin_faces)
    f = faceness(pos, normals)
    # The lid openings and the lips' inner edge face every way; judge them by position alone.
    structured = np.zeros(len(pos), dtype=bool)
    for e in (0, 1):
        recs = M["eye_regions"][e][2]
        ids = M["eye_start"][e] + np.arange(len(recs))
        structured[ids[[r[0] <= 1.07 for r in recs]]] = True
    structured[M["slit"]] = True
    structured[M["lower_ids"]] = True
    f_pos = faceness(pos, np.tile([0.0, 0.0, 1.0], (len(pos), 1)))
    f = np.where(structured, f_pos, f)
    f[M["bag_start"]:M["eyeball_start"][0]] = 0.0
    f[M["eyeball_start"][0]:] = 1.0
    per_corner = f[faces]
    per_corner[M["n_skin_faces"]:M["n_skin_faces"] + M["n_bag_faces"]] = 0.0
    img, _ = rasterize_uv_attribute(uvs, uv_faces, per_corner)
    return np.clip(img, 0.0, 1.0)


# ----------------------------------------------------------------------------------------------- skinning, joints


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


# ----------------------------------------------------------------------------------------------- landmarks


class _Embedder:
    """Barycentric landmark embedding on the skin faces of the template."""

    def __init__(self, pos: np.ndarray, skin_faces: np.ndarray):
        self.pos, self.faces = pos, skin_faces
        self.tri = pos[skin_faces]

    def front_hit(self, x: float, y: float):
        """(face, bary) of the front-most skin point at (x, y) seen along -z, or None."""
        a, b, c = self.tri[:, 0], self.tri[:, 1], self.tri[:, 2]
        # 2-D barycentrics in the xy plane.
        d = (b[:, 1] - c[:, 1]) * (a[:, 0] - c[:, 0]) + (c[:, 0] - b[:, 0]) * (a[:, 1] - c[:, 1])
        ok = np.abs(d) > 1e-14
        d = np.where(ok, d, 1.0)
        l0 = ((b[:, 1] - c[:, 1]) * (x - c[:, 0]) + (c[:, 0] - b[:, 0]) * (y - c[:, 1])) / d
        l1 = ((c[:, 1] - a[:, 1]) * (x - c[:, 0]) + (a[:, 0] - c[:, 0]) * (y - c[:, 1])) / d
        l2 = 1.0 - l0 - l1
        inside = ok & (l0 >= 0) & (l1 >= 0) & (l2 >= 0)
        if not inside.any():
            return None
        zz = l0 * a[:, 2] + l1 * b[:, 2] + l2 * c[:, 2]
        zz = np.where(inside, zz, -np.inf)
        f = int(np.argmax(zz))
        return f, np.array([l0[f], l1[f], l2[f]])

    def at_vertex(self, v: int):
        f = int(np.nonzero((self.faces == v).any(1))[0][0])
        bary = (self.faces[f] == v).astype(np.float64)
        return f, bary

    def on_edge(self, a: int, b: int, t: float):
        hits = np.nonzero((self.faces == a).any(1) & (self.faces == b).any(1))[0]
        f = int(hits[0])
        bary = (self.faces[f] == a) * (1.0 - t) + (self.faces[f] == b) * t
        return f, bary.astype(np.float64)

    def point(self, f, bary):
        return bary @ self.pos[self.faces[f]]


def build_landmarks(M: dict):
    pos = M["pos"]
    skin_faces = M["faces"][:M["n_skin_faces"]]
    emb = _Embedder(pos, skin_faces)
    lm = [None] * 68

    def front(x, y):
        for shrink in np.linspace(1.0, 0.5, 26):
            hit = emb.front_hit(x * shrink, y)
            if hit is not None:
                return hit
        raise RuntimeError(f"no skin at ({x}, {y})")

    # 0-16 jaw line, from the subject's right (-x) round the chin to the left.
    for i, beta in enumerate(np.linspace(-math.pi / 2, math.pi / 2, 17)):
        x = 0.066 * math.sin(beta)
        y = 0.012 - 0.110 * math.cos(beta)
        lm[i] = front(0.96 * x, y)
    # 17-26 brows, each from its outer end to the inner end for the right brow and inner to outer for the left.
    xs = np.array([-0.050, -0.040, -0.030, -0.020, -0.011, 0.011, 0.020, 0.030, 0.040, 0.050])
    for i, x in enumerate(xs):
        t = (abs(x) - 0.011) / 0.039
        lm[17 + i] = front(x, 0.0455 + 0.006 * math.sin(math.pi * (0.25 + 0.75 * (1 - t))) - 0.004 * t)
    # 27-30 nose bridge to the tip (30 = the front-most point of the nose).
    for i, y in enumerate((0.031, 0.018, 0.005)):
        lm[27 + i] = front(0.0, y)
    ys = np.linspace(-0.02, 0.005, 101)
    zs = [emb.point(*front(0.0, yy))[2] for yy in ys]
    lm[30] = front(0.0, float(ys[int(np.argmax(zs))]))
    # 31-35 lower edge of the nose, right to left.
    for i, (x, y) in enumerate(((-0.012, -0.0185), (-0.006, -0.0205), (0.0, -0.0215), (0.006, -0.0205),
                                (0.012, -0.0185))):
        lm[31 + i] = front(x, y)
    # 36-47 eyes: on the lid margin loop (level 1.0), tau = 0 at the outer corner, pi/2 at the top.
    for e, first, taus in ((1, 36, (0, 60, 120, 180, 240, 300)), (0, 42, (180, 120, 60, 0, 300, 240))):
        recs = M["eye_regions"][e][2]
        for k, tau_deg in enumerate(taus):
            idx = [i for i, r in enumerate(recs) if r[4] == "margin" and abs(math.degrees(r[1]) - tau_deg) < 1e-6]
            lm[first + k] = emb.at_vertex(M["eye_start"][e] + idx[0])
    # 48-59 outer lips: the mouth corners, then the vermilion border (lip loop 3) over the upper lip from the
    # right corner to the left and back under the lower lip.
    slit = M["slit"]
    recs = M["mouth_recs"]
    chart = M["mouth_chart"]
    ms = M["mouth_start"]

    def on_loop(loop, side, x):
        ids = [i for i, r in enumerate(recs) if r == (loop, side)]
        ids = sorted(ids, key=lambda i: chart[i, 0])
        xs_ = chart[ids, 0]
        k = int(np.clip(np.searchsorted(xs_, x) - 1, 0, len(ids) - 2))
        t = (x - xs_[k]) / (xs_[k + 1] - xs_[k])
        return emb.on_edge(ms + ids[k], ms + ids[k + 1], float(t))

    lm[48] = emb.at_vertex(int(slit[0]))
    lm[54] = emb.at_vertex(int(slit[-1]))
    for i, x in enumerate((-0.016, -0.0072, 0.0, 0.0072, 0.016)):
        lm[49 + i] = on_loop(3, 1, x)
    for i, x in enumerate((0.016, 0.0072, 0.0, -0.0072, -0.016)):
        lm[55 + i] = on_loop(3, -1, x)
    # 60-67 inner lips on the slit: the upper lip's copies for 60-64, the lower lip's for 65-67.
    lower = {int(s): int(l) for s, l in zip(slit[1:-1], M["lower_ids"])}
    n = N_SLIT
    lm[60] = emb.on_edge(int(slit[0]), int(slit[1]), 0.5)
    lm[64] = emb.on_edge(int(slit[-1]), int(slit[-2]), 0.5)
    q = [n // 2 - n // 4 + 1, n // 2, n // 2 + n // 4 - 1]
    for i, k in enumerate(q):
        lm[61 + i] = emb.at_vertex(int(slit[k]))
    for i, k in enumerate(q[::-1]):
        lm[65 + i] = emb.at_vertex(lower[int(slit[k])])
    faces_idx = np.array([f for f, _ in lm], dtype=np.int64)
    bary = np.array([b for _, b in lm])
    return faces_idx, bary


# ----------------------------------------------------------------------------------------------- blend shapes


def _bump(P, c, s):
    """Gaussian bump (centre c, widths s), cut off smoothly to exactly 0 beyond 3 widths."""
    q2 = (((P - np.asarray(c)) / np.asarray(s)) ** 2).sum(1)
    return np.exp(-0.5 * q2) * (1.0 - smoothstep(6.25, 9.0, q2))


def _pair_bump(P, c, s):
    """The same bump on both sides (x mirrored)."""
    Pm = P.copy()
    Pm[:, 0] = np.abs(Pm[:, 0])
    return _bump(Pm, c, s)


class _Parts:
    """Per-vertex bookkeeping shared by the blend-shape designs."""

    def __init__(self, M: dict):
        self.M = M
        self.P = M["pos"]
        V = len(self.P)
        self.eyeball = np.zeros(V, dtype=bool)
        self.eyeball_of = np.full(V, -1)
        for e in (0, 1):
            s0 = M["eyeball_start"][e]
            self.eyeball[s0:s0 + N_EYEBALL] = True
            self.eyeball_of[s0:s0 + N_EYEBALL] = e
        self.bag = np.zeros(V, dtype=bool)
        self.bag[M["bag_start"]:M["eyeball_start"][0]] = True
        self.normals = vertex_normals(self.P, M["faces"][:M["n_skin_faces"]])
        self.normals[~(~self.eyeball & ~self.bag)] = 0.0
        # Lip side: 1 on the lower lip (and below the mouth line), 0 on the upper lip, 1/2 at the corners.
        self.lower = jaw_side(M)
        slit = M["slit"]
        sp = self.P[slit]
        order = np.argsort(sp[:, 0])
        self._slit_x, self._slit_yv = sp[order, 0], sp[order, 1]
        self.mouth_w = float(np.abs(sp[[0, -1], 0]).mean())
        # Bag vertices follow their ring vertex, less and less towards the back.
        self.bag_src = np.arange(V)
        self.bag_fac = np.ones(V)
        for j in range(BAG_LOOPS):
            ids = M["bag_start"] + j * M["n_ring"] + np.arange(M["n_ring"])
            self.bag_src[ids] = M["ring"]
            self.bag_fac[ids] = 1.0 - 0.7 * (j + 1) / BAG_LOOPS

    def slit_y(self, x):
        """Height of the mouth slit above x (template)."""
        return np.interp(x, self._slit_x, self._slit_yv)

    def finish(self, D, rigid_eyes=True, keep_bag=False):
        """Apply the conventions every field follows: eyeballs move rigidly with the field at their centres
        (or not at all), skin near an eye keeps its distance to the eyeball, the mouth bag follows its lips."""
        D = D.copy()
        if not keep_bag:
            D[self.bag] = D[self.bag_src[self.bag]] * self.bag_fac[self.bag, None]
        for e in (0, 1):
            c = EYE_CENTRES[e]
            d_c = self._field_at_eye[e] if rigid_eyes else np.zeros(3)
            D[self.eyeball_of == e] = d_c
            dist = np.linalg.norm(self.P - c, axis=1)
            w = (1.0 - smoothstep(0.016, 0.026, dist)) * (~self.eyeball)
            D += w[:, None] * (d_c - D)
        return D

    def field(self, fn, rigid_eyes=True, keep_bag=False):
        """Evaluate fn(points) -> displacements on every vertex and at the eye centres, then `finish`."""
        D = fn(self.P, self.normals)
        self._field_at_eye = fn(EYE_CENTRES, np.zeros((2, 3))) if rigid_eyes else np.zeros((2, 3))
        D[self.eyeball] = 0.0
        return self.finish(D, rigid_eyes, keep_bag)


def shape_fields(parts: _Parts):
    """Identity blend shapes, each about one standard deviation (coefficient 2 = a strong but plausible face)."""
    def sx(P):
        return np.sign(P[:, 0])

    comps = [
        # overall size
        lambda P, N: 0.03 * (P - np.array([0.0, -0.02, -0.03])),
        # head width
        lambda P, N: np.column_stack([0.035 * P[:, 0], 0 * P[:, 0], 0 * P[:, 0]]),
        # crown height
        lambda P, N: np.column_stack([0 * P[:, 0], 0.006 * smoothstep(0.0, 0.12, P[:, 1]), 0 * P[:, 0]]),
        # back-of-head depth
        lambda P, N: np.column_stack([0 * P[:, 0], 0 * P[:, 0], -0.008 * smoothstep(-0.02, -0.14, P[:, 2])]),
        # lower face length
        lambda P, N: (-0.006 * smoothstep(-0.02, -0.10, P[:, 1]) * smoothstep(-0.05, 0.0, P[:, 2])
                      * (1.0 - smoothstep(-0.11, -0.16, P[:, 1])))[:, None] * np.array([0.0, 1.0, 0.0]),
        # jaw width
        lambda P, N: (0.006 * sx(P) * smoothstep(0.015, 0.055, np.abs(P[:, 0])) * _bump(P[:, 1:2], [-0.06], [0.03])
                      * smoothstep(-0.07, -0.03, P[:, 2]))[:, None] * np.array([1.0, 0.0, 0.0]),
        # chin forward
        lambda P, N: 0.004 * _bump(P, (0, -0.085, 0.04), (0.018, 0.016, 0.03))[:, None] * np.array([0, 0, 1.0]),
        # chin length
        lambda P, N: 0.004 * _bump(P, (0, -0.095, 0.03), (0.02, 0.012, 0.03))[:, None] * np.array([0, -1.0, 0]),
        # nose size
        lambda P, N: 0.12 * _bump(P, (0, -0.004, 0.06), (0.016, 0.026, 0.02))[:, None]
        * (P - np.array([0.0, 0.0, 0.045])),
        # nose length / projection
        lambda P, N: _bump(P, (0, -0.01, 0.068), (0.01, 0.012, 0.012))[:, None] * np.array([0, -0.0015, 0.003]),
        # nose width
        lambda P, N: (0.0025 * sx(P) * _pair_bump(P, (0.013, -0.016, 0.05), (0.009, 0.01, 0.012)))[:, None]
        * np.array([1.0, 0, 0]),
        # nose bridge height
        lambda P, N: 0.002 * _bump(P, (0, 0.015, 0.055), (0.008, 0.015, 0.015))[:, None] * np.array([0, 0, 1.0]),
        # cheek fullness
        lambda P, N: 0.003 * _pair_bump(P, (0.045, -0.03, 0.02), (0.018, 0.022, 0.03))[:, None] * N,
        # cheekbones
        lambda P, N: 0.0025 * _pair_bump(P, (0.052, 0.01, 0.015), (0.014, 0.012, 0.02))[:, None] * N,
        # brow ridge
        lambda P, N: (0.0025 * _pair_bump(P, (0.03, 0.047, 0.04), (0.025, 0.009, 0.02))
                      * smoothstep(0.036, 0.042, P[:, 1]))[:, None] * np.array([0, 0, 1.0]),
        # eye spacing
        lambda P, N: (0.0018 * sx(P) * _pair_bump(P, (0.032, 0.03, 0.03), (0.02, 0.016, 0.03)))[:, None]
        * np.array([1.0, 0, 0]),
        # eye height
        lambda P, N: 0.002 * _pair_bump(P, (0.032, 0.03, 0.03), (0.022, 0.016, 0.03))[:, None] * np.array([0, 1.0, 0]),
        # forehead slope
        lambda P, N: (0.005 * smoothstep(0.045, 0.11, P[:, 1]) * smoothstep(-0.03, 0.02, P[:, 2]))[:, None]
        * np.array([0, 0, 1.0]),
        # lip fullness
        lambda P, N: _bump(P, (0, -0.049, 0.055), (0.022, 0.009, 0.015))[:, None]
        * np.column_stack([0 * P[:, 0], 0.12 * (P[:, 1] - parts.slit_y(P[:, 0])), 0.0018 + 0 * P[:, 0]]),
        # mouth width
        lambda P, N: (0.08 * P[:, 0] * _bump(P, (0, -0.049, 0.05), (0.03, 0.014, 0.03)))[:, None]
        * np.array([1.0, 0, 0]),
        # ear size
        lambda P, N: 0.12 * _pair_bump(P, (0.083, 0.005, -0.03), (0.014, 0.03, 0.02))[:, None]
        * (P - np.column_stack([0.072 * sx(P), 0.005 + 0 * P[:, 0], -0.03 + 0 * P[:, 0]])),
        # ear protrusion
        lambda P, N: (0.003 * sx(P) * _pair_bump(P, (0.085, 0.005, -0.035), (0.012, 0.03, 0.02)))[:, None]
        * np.array([1.0, 0, 0]),
        # neck thickness
        lambda P, N: (0.05 * (1.0 - smoothstep(-0.11, -0.08, P[:, 1])))[:, None]
        * np.column_stack([P[:, 0], 0 * P[:, 0], P[:, 2] - _neck_axis_z(P[:, 1])]),
        # midface depth
        lambda P, N: (0.003 * smoothstep(0.0, 0.04, P[:, 2]) * _bump(P[:, 1:2], [-0.015], [0.05]))[:, None]
        * np.array([0, 0, 1.0]),
        # jaw angle height
        lambda P, N: 0.003 * _pair_bump(P, (0.05, -0.068, -0.02), (0.02, 0.02, 0.025))[:, None]
        * np.array([0, -1.0, 0]),
        # temple / upper face width
        lambda P, N: (0.003 * sx(P) * smoothstep(0.04, 0.07, np.abs(P[:, 0])) * _bump(P[:, 1:2], [0.03], [0.04])
                      * smoothstep(-0.08, -0.02, P[:, 2]))[:, None] * np.array([1.0, 0, 0]),
    ]
    return [parts.field(fn) for fn in comps]


def blink_field(parts: _Parts, e: int):
    """Eye closing for eye e: the upper lid slides down over the eyeball onto the lower lid (coefficient 1 =
    closed)."""
    M = parts.M
    P = parts.P
    D = np.zeros_like(P)
    recs = M["eye_regions"][e][2]
    ids = M["eye_start"][e] + np.arange(len(recs))
    m = np.array([r[0] for r in recs])
    tau = np.array([r[1] for r in recs])
    tv = np.array([r[3] for r in recs])
    dh = np.array([r[2] for r in recs]) - EYE_TH0
    col = np.sqrt(np.clip(1.0 - (dh / EYE_W) ** 2, 0.0, 1.0))
    th_up = EYE_TV0 + EYE_HU * col
    th_lo = EYE_TV0 - EYE_HL * col
    g = EYE_CREASE_M - 1.0
    th_cr = EYE_TV0 + (EYE_HU + g * EYE_GV) * np.sqrt(np.clip(1.0 - (dh / (EYE_W + g * EYE_GH)) ** 2, 0.0, 1.0))
    eps = 2.5 * col
    inner = m < 1.0
    upper = (m >= 1.0) & (np.sin(tau) > 1e-9)
    target = np.where(inner, th_lo + 0.8 * eps * np.clip((tv - th_lo) / np.maximum(th_up - th_lo, 1e-9), 0, 1),
                      th_lo + eps + (tv - th_up) * (th_cr - th_lo - eps) / np.maximum(th_cr - th_up, 1e-9))
    move = inner | upper
    dtheta = np.where(move, target - tv, 0.0)
    dtheta = np.where(upper & (tv > th_cr), 0.0, dtheta)
    th_a, tv_a, r = eye_angles(e, P[ids])
    # The closed lid hugs the eyeball near the lid line and keeps its open height towards the crease.
    frac = np.clip((target - th_lo) / np.maximum(th_cr - th_lo, 1e-9), 0.0, 1.0)
    r_lid = EYE_R + LID + (np.maximum(r, EYE_R + LID) - EYE_R - LID) * frac ** 2
    r_new = np.where(inner, EYE_R + 0.0006, np.where(upper, r_lid, r))
    new = EYE_CENTRES[e] + r_new[:, None] * eye_dir(e, th_a, tv_a + dtheta)
    D[ids] = np.where(move[:, None], new - P[ids], 0.0)
    return D


def expression_fields(parts: _Parts):
    """Expression blend shapes; coefficient 1 = a clear expression, 2 = a strong one."""
    P = parts.P
    low = parts.lower
    up = 1.0 - low
    x, y = P[:, 0], P[:, 1]
    sx = np.sign(x)
    dy_slit = y - parts.slit_y(x)
    not_eye = smoothstep(0.036, 0.043, y)          # keeps the lids and eyeballs still for brow motion
    mouth = _bump(P, (0, -0.049, 0.05), (0.028, 0.014, 0.04))

    def vec(w, d):
        return w[:, None] * np.asarray(d, dtype=np.float64)

    def side(w, s):
        return w * smoothstep(-0.004, 0.004, s * x)

    comps = {}
    for name, s in (("brow_raise_left", 1.0), ("brow_raise_right", -1.0)):
        w = _bump(P, (s * 0.03, 0.05, 0.04), (0.024, 0.022, 0.05)) * not_eye
        comps[name] = vec(w, (0.0, 0.005, 0.0005))
    w = _pair_bump(P, (0.014, 0.046, 0.05), (0.012, 0.012, 0.05)) * not_eye
    comps["brow_furrow"] = np.column_stack([-0.003 * sx * w, -0.003 * w, 0.001 * w])
    for name, s in (("smile_left", 1.0), ("smile_right", -1.0)):
        c = _bump(P, (s * 0.025, -0.047, 0.045), (0.013, 0.012, 0.04))
        ch = _bump(P, (s * 0.036, -0.018, 0.04), (0.016, 0.016, 0.04)) * (1.0 - not_eye * 0)
        comps[name] = vec(c, (s * 0.004, 0.005, -0.003)) + vec(ch, (0.0, 0.0025, 0.0015))
    c = _pair_bump(P, (0.025, -0.048, 0.045), (0.012, 0.012, 0.04))
    comps["mouth_corners_down"] = np.column_stack([-0.0005 * sx * c, -0.004 * c, -0.0005 * c])
    comps["lip_pucker"] = np.column_stack([-0.25 * x * mouth, 0.0 * x, 0.005 * mouth * (1 - 0.4 * np.abs(x) / 0.03)])
    lips = _bump(P, (0, -0.049, 0.05), (0.026, 0.008, 0.03))
    comps["lip_press"] = np.column_stack([0 * x, -0.3 * dy_slit * lips, -0.0015 * lips])
    wu = _bump(P, (0, -0.045, 0.05), (0.02, 0.008, 0.03)) * up
    comps["upper_lip_raise"] = vec(wu, (0.0, 0.003, 0.0008))
    wl = _bump(P, (0, -0.055, 0.05), (0.02, 0.01, 0.03)) * low
    comps["lower_lip_depress"] = vec(wl, (0.0, -0.003, 0.001))
    comps["eye_close_left"] = blink_field(parts, 0)
    comps["eye_close_right"] = blink_field(parts, 1)
    cp = _pair_bump(P, (0.045, -0.035, 0.02), (0.017, 0.02, 0.03))
    comps["cheek_puff"] = 0.005 * cp[:, None] * parts.normals
    c = _pair_bump(P, (0.024, -0.048, 0.045), (0.012, 0.011, 0.04))
    comps["mouth_stretch"] = np.column_stack([0.004 * sx * c, 0 * x, -0.002 * c])
    wu = _bump(P, (0, -0.047, 0.05), (0.022, 0.006, 0.03)) * up
    wl = _bump(P, (0, -0.051, 0.05), (0.022, 0.008, 0.03)) * low
    comps["lips_part"] = vec(wu, (0.0, 0.001, 0.0)) + vec(wl, (0.0, -0.002, 0.0))
    wn = _pair_bump(P, (0.013, -0.014, 0.05), (0.01, 0.01, 0.02))
    comps["nose_wrinkle"] = vec(wn, (0.0, 0.002, 0.0))
    names = list(comps)
    out = []
    for n_ in names:
        D = comps[n_].copy()
        D[parts.eyeball] = 0.0
        D[parts.bag] = D[parts.bag_src[parts.bag]] * parts.bag_fac[parts.bag, None]
        out.append(D)
    return names, out


EXPRESSION_NAMES = ("brow_raise_left", "brow_raise_right", "brow_furrow", "smile_left", "smile_right",
                    "mouth_corners_down", "lip_pucker", "lip_press", "upper_lip_raise", "lower_lip_depress",
                    "eye_close_left", "eye_close_right", "cheek_puff", "mouth_stretch", "lips_part", "nose_wrinkle")
SHAPE_NAMES = ("size", "head_width", "crown_height", "head_depth", "lower_face_length", "jaw_width", "chin_forward",
               "chin_length", "nose_size", "nose_length", "nose_width", "nose_bridge", "cheek_fullness",
               "cheekbones", "brow_ridge", "eye_spacing", "eye_height", "forehead_slope", "lip_fullness",
               "mouth_width", "ear_size", "ear_protrusion", "neck_thickness", "midface_depth", "jaw_angle",
               "temple_width")


def orthogonalise(fields):
    """Symmetric (Loewdin) orthogonalisation of the flattened fields, each rescaled to its original norm."""
    X = np.stack([f.ravel() for f in fields], 1)
    norms = np.linalg.norm(X, axis=0)
    Xn = X / norms
    G = Xn.T @ Xn
    w, U = np.linalg.eigh(G)
    Xo = Xn @ (U @ np.diag(w ** -0.5) @ U.T)
    Xo *= norms / np.linalg.norm(Xo, axis=0)
    return [Xo[:, k].reshape(fields[0].shape) for k in range(len(fields))]


def pose_correctives(parts: _Parts) -> np.ndarray:
    """posedirs [V, 3, 36]: feature (j - 1) * 9 + 3 * r + c multiplies (R_j - I)[r, c]. Only the neck's and the
    jaw's rotations about x get correctives: D * sin(angle), split over the (2, 1) and (1, 2) entries."""
    P, N = parts.P, parts.normals
    V = len(P)
    out = np.zeros((V, 3, 36))

    def put(joint, D):
        base = 9 * (joint - 1)
        out[:, :, base + 3 * 2 + 1] += 0.5 * D
        out[:, :, base + 3 * 1 + 2] -= 0.5 * D

    # Neck: nodding bunches the throat skin forward.
    put(1, 0.004 * _bump(P, (0, -0.11, 0.01), (0.04, 0.03, 0.03))[:, None] * np.array([0, 0, 1.0]))
    # Jaw: opening fills out the lower cheeks and pulls the mouth corners in.
    cheeks = 0.003 * _pair_bump(P, (0.045, -0.05, 0.02), (0.015, 0.02, 0.03))[:, None] * N
    corners = _pair_bump(P, (0.025, -0.048, 0.045), (0.008, 0.008, 0.03))
    put(2, cheeks + np.column_stack([-0.002 * np.sign(P[:, 0]) * corners, 0 * corners, 0 * corners]))
    # Eyes: none. As in FLAME, an eye rotation moves its eyeball only; lids are driven by the expressions.
    out[parts.eyeball] = 0.0
    return out


# ----------------------------------------------------------------------------------------------- assembly


def build() -> dict:
    """All arrays of the built-in head, in the converted-FLAME layout."""
    M = build_mesh()
    uvs, uv_faces = build_uvs(M)
    mask = build_uv_mask(M, uvs, uv_faces)
    weights = build_weights(M)
    regressor = build_joint_regressor(M)
    lmk_faces, lmk_bary = build_landmarks(M)
    parts = _Parts(M)
    shapes = orthogonalise(shape_fields(parts))
    names, exprs = expression_fields(parts)
    assert tuple(names) == EXPRESSION_NAMES
    posedirs = pose_correctives(parts)
    f32 = np.float32
    return {
        "v_template": M["pos"].astype(f32),
        "faces": M["faces"].astype(np.int64),
        "shapedirs": np.stack(shapes, -1).astype(f32),
        "exprdirs": np.stack(exprs, -1).astype(f32),
        "posedirs": posedirs.astype(f32),
        "J_regressor": regressor.astype(f32),
        "weights": weights.astype(f32),
        "parents": PARENTS.copy(),
        "lmk_faces_idx": lmk_faces.astype(np.int64),
        "lmk_bary_coords": lmk_bary.astype(f32),
        "uvs": uvs.astype(f32),
        "uv_faces": uv_faces.astype(np.int64),
        "uv_face_mask": mask.astype(f32),
        "name": np.array(NAME),
        # Documentation arrays (ignored by the FLAME loader).
        "shape_names": np.array(SHAPE_NAMES),
        "expression_names": np.array(EXPRESSION_NAMES),
    }


def write(arrays: dict, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)
    return path


# ----------------------------------------------------------------------------------------------- evaluation, preview


def evaluate(arrays: dict, shape=None, expression=None, pose=None):
    """FLAME evaluation (smplx's LBS) of one head: returns (vertices [V, 3], landmarks [68, 3]) as numpy.

    pose: 15 axis-angle values, joints global, neck, jaw, left eye, right eye."""
    import torch
    from smplx.lbs import lbs, vertices2landmarks

    S, E = arrays["shapedirs"].shape[2], arrays["exprdirs"].shape[2]
    betas = torch.zeros(1, S + E)
    if shape is not None:
        betas[0, :len(shape)] = torch.as_tensor(np.asarray(shape, dtype=np.float32))
    if expression is not None:
        betas[0, S:S + len(expression)] = torch.as_tensor(np.asarray(expression, dtype=np.float32))
    full_pose = torch.zeros(1, 15)
    if pose is not None:
        full_pose[0] = torch.as_tensor(np.asarray(pose, dtype=np.float32))
    V = arrays["v_template"].shape[0]
    dirs = torch.as_tensor(np.concatenate([arrays["shapedirs"], arrays["exprdirs"]], 2))
    posedirs = torch.as_tensor(arrays["posedirs"]).reshape(V * 3, -1).t()
    verts, _ = lbs(betas, full_pose, torch.as_tensor(arrays["v_template"])[None].expand(1, -1, -1).contiguous()[0],
                   dirs, posedirs, torch.as_tensor(arrays["J_regressor"]), torch.as_tensor(arrays["parents"]),
                   torch.as_tensor(arrays["weights"]))
    faces = torch.as_tensor(arrays["faces"])
    lmk = vertices2landmarks(verts, faces, torch.as_tensor(arrays["lmk_faces_idx"])[None],
                             torch.as_tensor(arrays["lmk_bary_coords"])[None])
    return verts[0].numpy(), lmk[0].numpy()


def shaded_views(vertices: np.ndarray, faces: np.ndarray, angles, size=320, scale=5.0) -> list:
    """Grey-shaded orthographic renders with the project's rasteriser (the generator's view transform)."""
    import torch
    sys.path.insert(0, str(ROOT))
    from core.rendering.orthographic import project_view, rasterize_views

    vn = vertex_normals(vertices.astype(np.float64), faces)
    attrs = torch.tensor(vn[faces], dtype=torch.float32)
    views = rasterize_views(torch.tensor(vertices, dtype=torch.float32)[None], torch.tensor(faces), attrs,
                            image_size=size, angles=angles, orth_scale=scale)
    out = []
    for ang, r in zip(angles, views):
        pts = torch.tensor([[[0.0, 0, 0], [1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]]])
        t = project_view(pts, ang, orth_scale=scale)[0]
        g = (t[1:, 2] - t[0, 2]).numpy().astype(np.float64)
        to_cam = -g / np.linalg.norm(g)
        side = np.cross([0.0, 1.0, 0.0], to_cam)
        side = side / np.linalg.norm(side) if np.linalg.norm(side) > 1e-6 else np.array([1.0, 0, 0])
        light = to_cam + 0.7 * np.array([0.0, 1.0, 0.0]) - 0.5 * side
        light /= np.linalg.norm(light)
        n = r[0, :3].numpy()
        n = n / np.maximum(np.linalg.norm(n, axis=0, keepdims=True), 1e-9)
        shade = 0.2 + 0.8 * np.clip(np.einsum("chw,c->hw", n, light), 0, 1)
        img = np.where(r[0, 3].numpy() > 0, shade, 0.0)[::-1]        # row 0 = top of the head
        out.append(np.repeat(img[:, :, None], 3, 2))
    return out


def _front_pixels(points, size, scale=5.0):
    """Pixel (row, col) of FLAME points in a front view rendered by shaded_views (rows flipped, y up)."""
    col = (scale * points[:, 0] + 1.0) * size / 2 - 0.5
    row = size - 1 - ((scale * (points[:, 1] + 0.01) + 1.0) * size / 2 - 0.5)
    return row, col


def _draw_points(img, rows, cols, color, radius=2):
    h, w = img.shape[:2]
    for r, c in zip(rows, cols):
        r0, c0 = int(round(r)), int(round(c))
        img[max(r0 - radius, 0):min(r0 + radius + 1, h), max(c0 - radius, 0):min(c0 + radius + 1, w)] = color


def _draw_box(img, r0, r1, c0, c1, color):
    img[r0, c0:c1] = color
    img[r1 - 1, c0:c1] = color
    img[r0:r1, c0] = color
    img[r0:r1, c1 - 1] = color


def render_preview(arrays: dict, path: Path, size: int = 320) -> Path:
    """Neutral head from five sides, then expressions, poses and the landmarks (front view, with the mouth crop
    box the generator uses)."""
    import imageio.v2 as imageio
    import torch
    from core.rendering.orthographic import front_landmarks_2d, mouth_box

    faces = arrays["faces"]
    v0, l0 = evaluate(arrays)
    row1 = shaded_views(v0, faces, ((0, 0, 0), (0, 35, 0), (0, 90, 0), (0, 180, 0), (90, 0, 0)), size, 5.0)
    E = list(EXPRESSION_NAMES)
    variants = []
    ex = np.zeros(len(E))
    ex[E.index("smile_left")] = ex[E.index("smile_right")] = 1.0
    ex[E.index("eye_close_left")] = 1.0
    variants.append(dict(expression=ex, pose=np.r_[np.zeros(6), 0.25, 0, 0, np.zeros(6)]))
    ex = np.zeros(len(E))
    ex[E.index("brow_raise_left")] = ex[E.index("brow_raise_right")] = 1.5
    ex[E.index("lip_pucker")] = 1.0
    variants.append(dict(expression=ex, pose=np.r_[np.zeros(9), 0.25, 0.3, 0, 0.25, 0.3, 0]))
    sh = np.zeros(arrays["shapedirs"].shape[2])
    sh[:8] = [2, -2, 1.5, 2, 2, 2, 2, 0]
    variants.append(dict(shape=sh))
    sh = -sh
    sh[8:12] = 2
    variants.append(dict(shape=sh, expression=np.eye(len(E))[E.index("mouth_corners_down")] * 1.5))
    row2 = []
    for kw in variants:
        v, _ = evaluate(arrays, **kw)
        row2.append(shaded_views(v, faces, ((0, 20, 0),), size, 6.0)[0])
    # Landmarks and the mouth box on the neutral front view.
    img = row1[0].copy()
    r, c = _front_pixels(l0.astype(np.float64), size)
    _draw_points(img, r, c, (1.0, 0.1, 0.1), 1)
    lm2d = front_landmarks_2d(torch.tensor(l0, dtype=torch.float32)[None])
    r0, r1, c0, c1 = mouth_box(lm2d)[0].tolist()
    k = size / 256.0
    # mouth_box rows count upwards from the bottom of our flipped image.
    _draw_box(img, int(size - r1 * k), int(size - r0 * k), int(c0 * k), int(c1 * k), (0.1, 0.8, 0.1))
    row2.append(img)
    grid = np.concatenate([np.concatenate(row1, 1), np.concatenate(row2, 1)], 0)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    imageio.imwrite(path, (np.clip(grid, 0, 1) * 255).astype(np.uint8))
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output .npz (default: %(default)s)")
    ap.add_argument("--preview", type=Path, nargs="?", const=DEFAULT_PREVIEW, default=None,
                    help="also write a preview PNG (default path: %(const)s)")
    args = ap.parse_args(argv)
    arrays = build()
    print(f"wrote {write(arrays, args.out)}: {arrays['v_template'].shape[0]} vertices, "
          f"{arrays['faces'].shape[0]} faces, {arrays['shapedirs'].shape[2]} shape and "
          f"{arrays['exprdirs'].shape[2]} expression components")
    if args.preview is not None:
        print(f"wrote {render_preview(arrays, args.preview)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
