"""The two eyeballs: UV spheres in the sockets (front pole first), with the faces' (ring, segment) corners the
UV layout unrolls round the pupil."""

from __future__ import annotations

import math

import numpy as np

from .anatomy import EYE_CENTRES, EYE_R

EYEBALL_RINGS = 10                 # rings between the poles: EYEBALL_RINGS - 1
EYEBALL_SEGMENTS = 20
N_EYEBALL = EYEBALL_SEGMENTS * (EYEBALL_RINGS - 1) + 2


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
