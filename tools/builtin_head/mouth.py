"""The structured skin round the mouth: a slit and loops round it on a chart plane in front of the lips. The slit
is later split into an upper and a lower lip (mesh.py), and its vertex records place the lip landmarks."""

from __future__ import annotations

import numpy as np

from .rays import param_through, surface_from_param

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
