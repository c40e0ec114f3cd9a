"""The UV layout: the skin from its parameter directions (azimuth and latitude, warped so the face is large and
undistorted in the middle; seam down the back of the head), the eyeball discs and the unrolled mouth bag in a
strip along the bottom."""

from __future__ import annotations

import math

import numpy as np

from .eyeballs import EYEBALL_RINGS, EYEBALL_SEGMENTS
from .mouth_bag import BAG_LOOPS

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
