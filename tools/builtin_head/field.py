"""The head's shape as an implicit surface: a smooth union of ellipsoids, tapered ellipsoids, round cones and
tube-like lips (cranium, face, jaw, chin, cheekbones, brow, nose, lips, ears, neck). Negative inside, about the
distance in metres near the surface. Also `smoothstep`, the soft step every later stage uses."""

from __future__ import annotations

import math

import numpy as np

from .anatomy import EYE_CENTRES, EYE_R, LID


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
    zc = neck_axis_z(y)                                                              # neck, leaning forward
    neck = (np.sqrt((x / 0.052) ** 2 + ((z - zc) / 0.056) ** 2) - 1.0) * 0.052
    neck = _smax(neck, y, 0.01)
    neck = _smax(neck, -0.196 - y, 0.014)
    return _smin(d, neck, 0.018)


def neck_axis_z(y):
    """z of the neck's axis at height y (the neck leans forward)."""
    return -0.040 - 0.10 * (-0.05 - y)
