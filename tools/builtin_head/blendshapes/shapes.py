"""The identity blend shapes (shapedirs): 26 named components, orthogonalised, one unit ~ one standard deviation
(2 = a strong but plausible face). Eyeballs move rigidly with the shape."""

from __future__ import annotations

import numpy as np

from ..field import neck_axis_z, smoothstep
from .fields import Parts, bump, pair_bump

SHAPE_NAMES = ("size", "head_width", "crown_height", "head_depth", "lower_face_length", "jaw_width", "chin_forward",
               "chin_length", "nose_size", "nose_length", "nose_width", "nose_bridge", "cheek_fullness",
               "cheekbones", "brow_ridge", "eye_spacing", "eye_height", "forehead_slope", "lip_fullness",
               "mouth_width", "ear_size", "ear_protrusion", "neck_thickness", "midface_depth", "jaw_angle",
               "temple_width")


def shape_fields(parts: Parts):
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
        lambda P, N: (0.006 * sx(P) * smoothstep(0.015, 0.055, np.abs(P[:, 0])) * bump(P[:, 1:2], [-0.06], [0.03])
                      * smoothstep(-0.07, -0.03, P[:, 2]))[:, None] * np.array([1.0, 0.0, 0.0]),
        # chin forward
        lambda P, N: 0.004 * bump(P, (0, -0.085, 0.04), (0.018, 0.016, 0.03))[:, None] * np.array([0, 0, 1.0]),
        # chin length
        lambda P, N: 0.004 * bump(P, (0, -0.095, 0.03), (0.02, 0.012, 0.03))[:, None] * np.array([0, -1.0, 0]),
        # nose size
        lambda P, N: 0.12 * bump(P, (0, -0.004, 0.06), (0.016, 0.026, 0.02))[:, None]
        * (P - np.array([0.0, 0.0, 0.045])),
        # nose length / projection
        lambda P, N: bump(P, (0, -0.01, 0.068), (0.01, 0.012, 0.012))[:, None] * np.array([0, -0.0015, 0.003]),
        # nose width
        lambda P, N: (0.0025 * sx(P) * pair_bump(P, (0.013, -0.016, 0.05), (0.009, 0.01, 0.012)))[:, None]
        * np.array([1.0, 0, 0]),
        # nose bridge height
        lambda P, N: 0.002 * bump(P, (0, 0.015, 0.055), (0.008, 0.015, 0.015))[:, None] * np.array([0, 0, 1.0]),
        # cheek fullness
        lambda P, N: 0.003 * pair_bump(P, (0.045, -0.03, 0.02), (0.018, 0.022, 0.03))[:, None] * N,
        # cheekbones
        lambda P, N: 0.0025 * pair_bump(P, (0.052, 0.01, 0.015), (0.014, 0.012, 0.02))[:, None] * N,
        # brow ridge
        lambda P, N: (0.0025 * pair_bump(P, (0.03, 0.047, 0.04), (0.025, 0.009, 0.02))
                      * smoothstep(0.036, 0.042, P[:, 1]))[:, None] * np.array([0, 0, 1.0]),
        # eye spacing
        lambda P, N: (0.0018 * sx(P) * pair_bump(P, (0.032, 0.03, 0.03), (0.02, 0.016, 0.03)))[:, None]
        * np.array([1.0, 0, 0]),
        # eye height
        lambda P, N: 0.002 * pair_bump(P, (0.032, 0.03, 0.03), (0.022, 0.016, 0.03))[:, None] * np.array([0, 1.0, 0]),
        # forehead slope
        lambda P, N: (0.005 * smoothstep(0.045, 0.11, P[:, 1]) * smoothstep(-0.03, 0.02, P[:, 2]))[:, None]
        * np.array([0, 0, 1.0]),
        # lip fullness
        lambda P, N: bump(P, (0, -0.049, 0.055), (0.022, 0.009, 0.015))[:, None]
        * np.column_stack([0 * P[:, 0], 0.12 * (P[:, 1] - parts.slit_y(P[:, 0])), 0.0018 + 0 * P[:, 0]]),
        # mouth width
        lambda P, N: (0.08 * P[:, 0] * bump(P, (0, -0.049, 0.05), (0.03, 0.014, 0.03)))[:, None]
        * np.array([1.0, 0, 0]),
        # ear size
        lambda P, N: 0.12 * pair_bump(P, (0.083, 0.005, -0.03), (0.014, 0.03, 0.02))[:, None]
        * (P - np.column_stack([0.072 * sx(P), 0.005 + 0 * P[:, 0], -0.03 + 0 * P[:, 0]])),
        # ear protrusion
        lambda P, N: (0.003 * sx(P) * pair_bump(P, (0.085, 0.005, -0.035), (0.012, 0.03, 0.02)))[:, None]
        * np.array([1.0, 0, 0]),
        # neck thickness
        lambda P, N: (0.05 * (1.0 - smoothstep(-0.11, -0.08, P[:, 1])))[:, None]
        * np.column_stack([P[:, 0], 0 * P[:, 0], P[:, 2] - neck_axis_z(P[:, 1])]),
        # midface depth
        lambda P, N: (0.003 * smoothstep(0.0, 0.04, P[:, 2]) * bump(P[:, 1:2], [-0.015], [0.05]))[:, None]
        * np.array([0, 0, 1.0]),
        # jaw angle height
        lambda P, N: 0.003 * pair_bump(P, (0.05, -0.068, -0.02), (0.02, 0.02, 0.025))[:, None]
        * np.array([0, -1.0, 0]),
        # temple / upper face width
        lambda P, N: (0.003 * sx(P) * smoothstep(0.04, 0.07, np.abs(P[:, 0])) * bump(P[:, 1:2], [0.03], [0.04])
                      * smoothstep(-0.08, -0.02, P[:, 2]))[:, None] * np.array([1.0, 0, 0]),
    ]
    return [parts.field(fn) for fn in comps]


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
