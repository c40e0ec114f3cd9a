"""The UV face mask [256, 256]: 1 on the face skin (forehead to chin, cheek to cheek) and the eyeballs, 0 on the
scalp, ears, neck and mouth bag, soft-edged; rasterised over the UV square with the project's rasteriser."""

from __future__ import annotations

import numpy as np

from .field import smoothstep
from core.geometry.normals import vertex_normals

UV_MASK_SIZE = 256


def faceness(pos: np.ndarray, normals: np.ndarray) -> np.ndarray:
    """Soft 0..1 indicator of the face skin (forehead to chin, cheek to cheek, not ears, scalp or neck)."""
    x, y, z = pos[:, 0], pos[:, 1], pos[:, 2]
    oval = 1.0 - smoothstep(0.9, 1.0, (x / 0.066) ** 2 + ((y + 0.010) / 0.088) ** 2)
    facing = smoothstep(-0.35, -0.05, normals[:, 2])
    front = smoothstep(-0.02, -0.005, z)
    return oval * facing * front


def rasterize_uv_attribute(uvs, uv_faces, values_per_corner, size=UV_MASK_SIZE):
    """Rasterise a per-face-corner scalar over the UV square: [size, size], row 0 at v = 1."""
    import torch

    from core.rendering.rasterize import rasterize

    verts = np.column_stack([2 * uvs[:, 0] - 1, 1 - 2 * uvs[:, 1], np.ones(len(uvs))])
    both = np.concatenate([uv_faces, uv_faces[:, [0, 2, 1]]])
    vals = np.concatenate([values_per_corner, values_per_corner])
    img, cov = rasterize(torch.tensor(verts, dtype=torch.float32)[None], torch.tensor(both),
                         torch.tensor(vals[:, :, None], dtype=torch.float32), size)
    return img[0, 0].numpy().astype(np.float64), cov[0, 0].numpy().astype(np.float64)


def build_uv_mask(M: dict, uvs: np.ndarray, uv_faces: np.ndarray) -> np.ndarray:
    """[256, 256] float mask: 1 on the face skin and the eyeballs, 0 on scalp, ears, neck and mouth bag."""
    pos, faces = M["pos"], M["faces"]
    skin_faces = faces[:M["n_skin_faces"]]
    normals = vertex_normals(pos, skin_faces, np.float64)
    f = faceness(pos, normals)
    # The lid openings and the lips' inner edge face every way; judge them by position alone.
    structured = np.zeros(len(pos), dtype=bool)
    for e in (0, 1):
        recs = M["eye_regions"][e][2]
        ids = M["eye_start"][e] + np.arange(len(recs))
        structured[ids[[r[0] <= 1.07 for r in recs]]] = True
    structured[M["slit"]] = True
    structured[M["lower_ids"]] = True
    f_pos = faceness(pos, np.tile([0.0, 0.0, 1.0], (len(pos), 1)))
    f = np.where(structured, f_pos, f)
    f[M["bag_start"]:M["eyeball_start"][0]] = 0.0
    f[M["eyeball_start"][0]:] = 1.0
    per_corner = f[faces]
    per_corner[M["n_skin_faces"]:M["n_skin_faces"] + M["n_bag_faces"]] = 0.0
    img, _ = rasterize_uv_attribute(uvs, uv_faces, per_corner)
    return np.clip(img, 0.0, 1.0)
