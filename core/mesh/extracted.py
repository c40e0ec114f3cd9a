"""The result of mesh extraction, a plain numpy record, apart from the extractor (torch) so that the writers in
export.py need numpy only."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np


@dataclass(frozen=True, eq=False)
class ExtractedMesh:
    """A triangle mesh of the density's level set.

    vertices: [N, 3] float32, in `units` ("flame": the head's own frame in metres, lined up with the FLAME rig;
        "world": EG3D world units). faces: [M, 3] int64, counter-clockwise seen from outside (outward normals).
    colors: [N, 3] uint8 or None. They are the first three neural features of the decoder at each vertex, mapped
        like the raw volume-rendered image; the network was not trained to make them a surface colour, so they are
        only a rough colour (the super-resolved image is the real appearance).
    level: the iso-level in raw density units. resolution: lattice points per axis.
    evaluated_points: how many lattice points were decoded (coarse + fine), for statistics."""

    vertices: np.ndarray
    faces: np.ndarray
    colors: Optional[np.ndarray]
    level: float
    resolution: int
    units: str = "flame"
    evaluated_points: int = 0

    @property
    def n_vertices(self) -> int:
        return int(self.vertices.shape[0])

    @property
    def n_faces(self) -> int:
        return int(self.faces.shape[0])
