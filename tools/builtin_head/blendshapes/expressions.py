"""The expression blend shapes (exprdirs): 16 named expressions, 1 = a clear expression (eye_close_* = 1 closes
that eye). Eyeballs do not move with expressions; the mouth bag follows the lips."""

from __future__ import annotations

import numpy as np

from ..anatomy import EYE_CENTRES, EYE_R, LID
from ..eyes import EYE_CREASE_M, EYE_GH, EYE_GV, EYE_HL, EYE_HU, EYE_TH0, EYE_TV0, EYE_W, eye_angles, eye_dir
from ..field import smoothstep
from .fields import Parts, bump, pair_bump

EXPRESSION_NAMES = ("brow_raise_left", "brow_raise_right", "brow_furrow", "smile_left", "smile_right",
                    "mouth_corners_down", "lip_pucker", "lip_press", "upper_lip_raise", "lower_lip_depress",
                    "eye_close_left", "eye_close_right", "cheek_puff", "mouth_stretch", "lips_part", "nose_wrinkle")


def blink_field(parts: Parts, e: int):
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


def expression_fields(parts: Parts):
    """Expression blend shapes; coefficient 1 = a clear expression, 2 = a strong one."""
    P = parts.P
    low = parts.lower
    up = 1.0 - low
    x, y = P[:, 0], P[:, 1]
    sx = np.sign(x)
    dy_slit = y - parts.slit_y(x)
    not_eye = smoothstep(0.036, 0.043, y)          # keeps the lids and eyeballs still for brow motion
    mouth = bump(P, (0, -0.049, 0.05), (0.028, 0.014, 0.04))

    def vec(w, d):
        return w[:, None] * np.asarray(d, dtype=np.float64)

    def side(w, s):
        return w * smoothstep(-0.004, 0.004, s * x)

    comps = {}
    for name, s in (("brow_raise_left", 1.0), ("brow_raise_right", -1.0)):
        w = bump(P, (s * 0.03, 0.05, 0.04), (0.024, 0.022, 0.05)) * not_eye
        comps[name] = vec(w, (0.0, 0.005, 0.0005))
    w = pair_bump(P, (0.014, 0.046, 0.05), (0.012, 0.012, 0.05)) * not_eye
    comps["brow_furrow"] = np.column_stack([-0.003 * sx * w, -0.003 * w, 0.001 * w])
    for name, s in (("smile_left", 1.0), ("smile_right", -1.0)):
        c = bump(P, (s * 0.025, -0.047, 0.045), (0.013, 0.012, 0.04))
        ch = bump(P, (s * 0.036, -0.018, 0.04), (0.016, 0.016, 0.04)) * (1.0 - not_eye * 0)
        comps[name] = vec(c, (s * 0.004, 0.005, -0.003)) + vec(ch, (0.0, 0.0025, 0.0015))
    c = pair_bump(P, (0.025, -0.048, 0.045), (0.012, 0.012, 0.04))
    comps["mouth_corners_down"] = np.column_stack([-0.0005 * sx * c, -0.004 * c, -0.0005 * c])
    comps["lip_pucker"] = np.column_stack([-0.25 * x * mouth, 0.0 * x, 0.005 * mouth * (1 - 0.4 * np.abs(x) / 0.03)])
    lips = bump(P, (0, -0.049, 0.05), (0.026, 0.008, 0.03))
    comps["lip_press"] = np.column_stack([0 * x, -0.3 * dy_slit * lips, -0.0015 * lips])
    wu = bump(P, (0, -0.045, 0.05), (0.02, 0.008, 0.03)) * up
    comps["upper_lip_raise"] = vec(wu, (0.0, 0.003, 0.0008))
    wl = bump(P, (0, -0.055, 0.05), (0.02, 0.01, 0.03)) * low
    comps["lower_lip_depress"] = vec(wl, (0.0, -0.003, 0.001))
    comps["eye_close_left"] = blink_field(parts, 0)
    comps["eye_close_right"] = blink_field(parts, 1)
    cp = pair_bump(P, (0.045, -0.035, 0.02), (0.017, 0.02, 0.03))
    comps["cheek_puff"] = 0.005 * cp[:, None] * parts.normals
    c = pair_bump(P, (0.024, -0.048, 0.045), (0.012, 0.011, 0.04))
    comps["mouth_stretch"] = np.column_stack([0.004 * sx * c, 0 * x, -0.002 * c])
    wu = bump(P, (0, -0.047, 0.05), (0.022, 0.006, 0.03)) * up
    wl = bump(P, (0, -0.051, 0.05), (0.022, 0.008, 0.03)) * low
    comps["lips_part"] = vec(wu, (0.0, 0.001, 0.0)) + vec(wl, (0.0, -0.002, 0.0))
    wn = pair_bump(P, (0.013, -0.014, 0.05), (0.01, 0.01, 0.02))
    comps["nose_wrinkle"] = vec(wn, (0.0, 0.002, 0.0))
    names = list(comps)
    out = []
    for n_ in names:
        D = comps[n_].copy()
        D[parts.eyeball] = 0.0
        D[parts.bag] = D[parts.bag_src[parts.bag]] * parts.bag_fac[parts.bag, None]
        out.append(D)
    return names, out
