"""The 68 iBUG landmarks, embedded (face, barycentrics) on the skin faces: jaw line, brows and nose found from
the front, eyes on the lid-margin loop, lips on the vermilion loop and the split slit."""

from __future__ import annotations

import math

import numpy as np

from .mouth import N_SLIT


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
