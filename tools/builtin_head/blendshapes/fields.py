"""What the blend-shape designs share: smooth bumps and the per-vertex bookkeeping (eyeballs, mouth bag, lip
side, skin normals) with the conventions every displacement field follows."""

from __future__ import annotations

import numpy as np

from ..anatomy import EYE_CENTRES
from ..eyeballs import N_EYEBALL
from ..field import smoothstep
from ..mouth_bag import BAG_LOOPS
from core.geometry.normals import vertex_normals
from ..skinning import jaw_side


def bump(P, c, s):
    """Gaussian bump (centre c, widths s), cut off smoothly to exactly 0 beyond 3 widths."""
    q2 = (((P - np.asarray(c)) / np.asarray(s)) ** 2).sum(1)
    return np.exp(-0.5 * q2) * (1.0 - smoothstep(6.25, 9.0, q2))


def pair_bump(P, c, s):
    """The same bump on both sides (x mirrored)."""
    Pm = P.copy()
    Pm[:, 0] = np.abs(Pm[:, 0])
    return bump(Pm, c, s)


class Parts:
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
        self.normals = vertex_normals(self.P, M["faces"][:M["n_skin_faces"]], np.float64)
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
