"""A procedural stand-in head: an ellipsoid with FLAME's vertex count (5023), 68 landmarks in iBUG order on its
front, a UV layout and a UV face mask. It lets the engine, its tests and its benchmarks run without the licensed
FLAME topology; it has no mouth or eyes of its own (the built-in FLAME-format head replaces it for real use).

Units and axes are FLAME's: metres, y up, the face looking along +z.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..networks.next3d import Topology

N_VERTICES = 5023
SEGMENTS = 72   # around the vertical axis
RINGS = 70      # from the top pole to the bottom pole
N_USED = SEGMENTS * (RINGS - 1) + 2       # 4970 surface vertices; the rest are unreferenced padding
N_FACES = 2 * SEGMENTS * (RINGS - 1)      # 9936
N_UVS = (SEGMENTS + 1) * (RINGS + 1)      # 5183
CENTRE = (0.0, -0.03, -0.04)
SEMI_AXES = (0.09, 0.13, 0.11)

# iBUG 68-point layout on the unit face square (x right of the image = subject's left, y up), eyeballed from the
# mean face: jaw line, brows, nose, eyes, outer and inner lips.

def _landmark_layout() -> torch.Tensor:
    pts = []
    for i in range(17):  # jaw, from the subject's right ear round the chin to the left ear
        t = math.pi * (1.0 + i / 16.0)
        pts.append((0.85 * math.cos(t), 0.15 + 0.85 * math.sin(t)))
    for i in range(5):   # right brow (image left)
        pts.append((-0.7 + 0.13 * i, 0.45 + 0.05 * math.sin(math.pi * i / 4)))
    for i in range(5):   # left brow
        pts.append((0.18 + 0.13 * i, 0.45 + 0.05 * math.sin(math.pi * i / 4)))
    for i in range(4):   # nose bridge
        pts.append((0.0, 0.3 - 0.12 * i))
    for i in range(5):   # nostrils
        pts.append((-0.16 + 0.08 * i, -0.12 - 0.03 * (1 - abs(i - 2) / 2)))
    for cx in (-0.38, 0.38):  # eyes: 6 points each, corner to corner round the lids
        for k in range(6):
            a = math.pi * k / 3.0
            pts.append((cx - 0.14 * math.cos(a), 0.28 + 0.05 * math.sin(a)))
    for k in range(12):  # outer lip, from the right corner (48) via the upper lip to the left corner (54) and back
        a = math.pi * k / 6.0
        pts.append((-0.3 * math.cos(a), -0.45 + 0.11 * math.sin(a)))
    for k in range(8):   # inner lip
        a = math.pi * k / 4.0
        pts.append((-0.22 * math.cos(a), -0.45 + 0.04 * math.sin(a)))
    return torch.tensor(pts, dtype=torch.float32)


@dataclass(frozen=True)
class EllipsoidHead:
    vertices: torch.Tensor   # [5023, 3]
    landmarks: torch.Tensor  # [68, 3]
    topology: Topology

    def mesh_input(self) -> torch.Tensor:
        """[1, 5091, 3]: vertices then landmarks, the generator's `v`."""
        return torch.cat([self.vertices, self.landmarks])[None]


def _surface(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Points on the front of the ellipsoid above the face-square coordinates (x, y) in [-1, 1]."""
    a, b, c = SEMI_AXES
    px, py = 0.8 * a * x, 0.8 * b * y
    pz = c * torch.sqrt(torch.clamp(1 - (px / a) ** 2 - (py / b) ** 2, min=0.0))
    return torch.stack([px + CENTRE[0], py + CENTRE[1], pz + CENTRE[2]], -1)


def ellipsoid_head() -> EllipsoidHead:
    a, b, c = SEMI_AXES
    theta = torch.arange(1, RINGS, dtype=torch.float64) * math.pi / RINGS          # polar angle of each ring
    # Azimuth from -pi (the back, where the UV seam lies) round to the front (0, facing +z).
    phi = torch.arange(SEGMENTS, dtype=torch.float64) * 2 * math.pi / SEGMENTS - math.pi
    t, p = torch.meshgrid(theta, phi, indexing="ij")
    ring = torch.stack([a * torch.sin(t) * torch.sin(p), b * torch.cos(t), c * torch.sin(t) * torch.cos(p)], -1)
    verts = torch.cat([torch.tensor([[0.0, b, 0.0]], dtype=torch.float64), ring.reshape(-1, 3),
                       torch.tensor([[0.0, -b, 0.0]], dtype=torch.float64)])
    verts = verts + torch.tensor(CENTRE, dtype=torch.float64)
    padding = verts[:1].repeat(N_VERTICES - N_USED, 1) * 0.5  # inside the head, never referenced by a face
    verts = torch.cat([verts, padding]).float()

    def vid(r, s):  # ring r in 0..RINGS-2, segment s (wraps)
        return 1 + r * SEGMENTS + (s % SEGMENTS)

    def uid(r, s):  # UV grid: row r in 0..RINGS, column s in 0..SEGMENTS (the seam is duplicated)
        return r * (SEGMENTS + 1) + s

    faces, uv_faces = [], []
    for s in range(SEGMENTS):
        # Counter-clockwise seen from outside, so the front faces survive back-face culling.
        faces.append((0, vid(0, s), vid(0, s + 1)))
        uv_faces.append((uid(0, s), uid(1, s), uid(1, s + 1)))
        last = RINGS - 2
        faces.append((N_USED - 1, vid(last, s + 1), vid(last, s)))
        uv_faces.append((uid(RINGS, s), uid(RINGS - 1, s + 1), uid(RINGS - 1, s)))
        for r in range(RINGS - 2):
            faces.append((vid(r, s), vid(r + 1, s), vid(r + 1, s + 1)))
            uv_faces.append((uid(r + 1, s), uid(r + 2, s), uid(r + 2, s + 1)))
            faces.append((vid(r, s), vid(r + 1, s + 1), vid(r, s + 1)))
            uv_faces.append((uid(r + 1, s), uid(r + 2, s + 1), uid(r + 1, s + 1)))
    us = torch.arange(SEGMENTS + 1, dtype=torch.float32) / SEGMENTS
    vs = 1.0 - torch.arange(RINGS + 1, dtype=torch.float32) / RINGS
    vv, uu = torch.meshgrid(vs, us, indexing="ij")
    uvs = torch.stack([uu, vv], -1).reshape(-1, 2)
    # The face region of the texture: the front quarter of the azimuth and the middle rings.
    grid = torch.linspace(0, 1, 256)
    gv, gu = torch.meshgrid(grid, grid, indexing="ij")
    mask = (((gu - 0.5).abs() < 0.22) & ((gv - 0.5).abs() < 0.3)).float()
    landmarks = _surface(*_landmark_layout().unbind(-1))
    topology = Topology(faces=torch.tensor(faces, dtype=torch.long), uv_faces=torch.tensor(uv_faces,
                        dtype=torch.long), uvs=uvs, uv_face_mask=mask)
    return EllipsoidHead(vertices=verts, landmarks=landmarks, topology=topology)
