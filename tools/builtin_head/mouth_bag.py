"""The mouth bag: loops of vertices behind the split slit, shrinking inwards, closed by a zip at the back, so
the skin and the bag are one closed surface."""

from __future__ import annotations

import math

import numpy as np

BAG_LOOPS = 2
BAG_DEPTH = 0.024
BAG_HEIGHT = 0.010


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
