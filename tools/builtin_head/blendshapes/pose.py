"""The pose correctives (posedirs): small ones for nodding (throat) and jaw opening (cheeks, mouth corners); none
for the eyes, so an eye rotation moves its eyeball only, as in FLAME."""

from __future__ import annotations

import numpy as np

from .fields import Parts, bump, pair_bump


def pose_correctives(parts: Parts) -> np.ndarray:
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
    put(1, 0.004 * bump(P, (0, -0.11, 0.01), (0.04, 0.03, 0.03))[:, None] * np.array([0, 0, 1.0]))
    # Jaw: opening fills out the lower cheeks and pulls the mouth corners in.
    cheeks = 0.003 * pair_bump(P, (0.045, -0.05, 0.02), (0.015, 0.02, 0.03))[:, None] * N
    corners = pair_bump(P, (0.025, -0.048, 0.045), (0.008, 0.008, 0.03))
    put(2, cheeks + np.column_stack([-0.002 * np.sign(P[:, 0]) * corners, 0 * corners, 0 * corners]))
    # Eyes: none. As in FLAME, an eye rotation moves its eyeball only; lids are driven by the expressions.
    out[parts.eyeball] = 0.0
    return out
