"""The preview PNG (--preview): the neutral head from five sides, then expressions, poses and shapes, and the
landmarks with the generator's mouth crop box on the front view. Evaluates the head with smplx's LBS, as the
engine does, and renders with the project's rasteriser."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .blendshapes.expressions import EXPRESSION_NAMES
from core.geometry.normals import vertex_normals


def evaluate(arrays: dict, shape=None, expression=None, pose=None):
    """FLAME evaluation (smplx's LBS) of one head: returns (vertices [V, 3], landmarks [68, 3]) as numpy.

    pose: 15 axis-angle values, joints global, neck, jaw, left eye, right eye."""
    import torch
    from smplx.lbs import lbs, vertices2landmarks

    S, E = arrays["shapedirs"].shape[2], arrays["exprdirs"].shape[2]
    betas = torch.zeros(1, S + E)
    if shape is not None:
        betas[0, :len(shape)] = torch.as_tensor(np.asarray(shape, dtype=np.float32))
    if expression is not None:
        betas[0, S:S + len(expression)] = torch.as_tensor(np.asarray(expression, dtype=np.float32))
    full_pose = torch.zeros(1, 15)
    if pose is not None:
        full_pose[0] = torch.as_tensor(np.asarray(pose, dtype=np.float32))
    V = arrays["v_template"].shape[0]
    dirs = torch.as_tensor(np.concatenate([arrays["shapedirs"], arrays["exprdirs"]], 2))
    posedirs = torch.as_tensor(arrays["posedirs"]).reshape(V * 3, -1).t()
    verts, _ = lbs(betas, full_pose, torch.as_tensor(arrays["v_template"])[None].expand(1, -1, -1).contiguous()[0],
                   dirs, posedirs, torch.as_tensor(arrays["J_regressor"]), torch.as_tensor(arrays["parents"]),
                   torch.as_tensor(arrays["weights"]))
    faces = torch.as_tensor(arrays["faces"])
    lmk = vertices2landmarks(verts, faces, torch.as_tensor(arrays["lmk_faces_idx"])[None],
                             torch.as_tensor(arrays["lmk_bary_coords"])[None])
    return verts[0].numpy(), lmk[0].numpy()


def shaded_views(vertices: np.ndarray, faces: np.ndarray, angles, size=320, scale=5.0) -> list:
    """Grey-shaded orthographic renders with the project's rasteriser (the generator's view transform)."""
    import torch

    from core.rendering.orthographic import project_view, rasterize_views

    vn = vertex_normals(vertices, faces, np.float64)
    attrs = torch.tensor(vn[faces], dtype=torch.float32)
    views = rasterize_views(torch.tensor(vertices, dtype=torch.float32)[None], torch.tensor(faces), attrs,
                            image_size=size, angles=angles, orth_scale=scale)
    out = []
    for ang, r in zip(angles, views):
        pts = torch.tensor([[[0.0, 0, 0], [1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]]])
        t = project_view(pts, ang, orth_scale=scale)[0]
        g = (t[1:, 2] - t[0, 2]).numpy().astype(np.float64)
        to_cam = -g / np.linalg.norm(g)
        side = np.cross([0.0, 1.0, 0.0], to_cam)
        side = side / np.linalg.norm(side) if np.linalg.norm(side) > 1e-6 else np.array([1.0, 0, 0])
        light = to_cam + 0.7 * np.array([0.0, 1.0, 0.0]) - 0.5 * side
        light /= np.linalg.norm(light)
        n = r[0, :3].numpy()
        n = n / np.maximum(np.linalg.norm(n, axis=0, keepdims=True), 1e-9)
        shade = 0.2 + 0.8 * np.clip(np.einsum("chw,c->hw", n, light), 0, 1)
        img = np.where(r[0, 3].numpy() > 0, shade, 0.0)[::-1]        # row 0 = top of the head
        out.append(np.repeat(img[:, :, None], 3, 2))
    return out


def _front_pixels(points, size, scale=5.0):
    """Pixel (row, col) of FLAME points in a front view rendered by shaded_views (rows flipped, y up)."""
    col = (scale * points[:, 0] + 1.0) * size / 2 - 0.5
    row = size - 1 - ((scale * (points[:, 1] + 0.01) + 1.0) * size / 2 - 0.5)
    return row, col


def _draw_points(img, rows, cols, color, radius=2):
    h, w = img.shape[:2]
    for r, c in zip(rows, cols):
        r0, c0 = int(round(r)), int(round(c))
        img[max(r0 - radius, 0):min(r0 + radius + 1, h), max(c0 - radius, 0):min(c0 + radius + 1, w)] = color


def _draw_box(img, r0, r1, c0, c1, color):
    img[r0, c0:c1] = color
    img[r1 - 1, c0:c1] = color
    img[r0:r1, c0] = color
    img[r0:r1, c1 - 1] = color


def render_preview(arrays: dict, path: Path, size: int = 320) -> Path:
    """Neutral head from five sides, then expressions, poses and the landmarks (front view, with the mouth crop
    box the generator uses)."""
    import imageio.v2 as imageio
    import torch

    from core.rendering.orthographic import front_landmarks_2d, mouth_box

    faces = arrays["faces"]
    v0, l0 = evaluate(arrays)
    row1 = shaded_views(v0, faces, ((0, 0, 0), (0, 35, 0), (0, 90, 0), (0, 180, 0), (90, 0, 0)), size, 5.0)
    E = list(EXPRESSION_NAMES)
    variants = []
    ex = np.zeros(len(E))
    ex[E.index("smile_left")] = ex[E.index("smile_right")] = 1.0
    ex[E.index("eye_close_left")] = 1.0
    variants.append(dict(expression=ex, pose=np.r_[np.zeros(6), 0.25, 0, 0, np.zeros(6)]))
    ex = np.zeros(len(E))
    ex[E.index("brow_raise_left")] = ex[E.index("brow_raise_right")] = 1.5
    ex[E.index("lip_pucker")] = 1.0
    variants.append(dict(expression=ex, pose=np.r_[np.zeros(9), 0.25, 0.3, 0, 0.25, 0.3, 0]))
    sh = np.zeros(arrays["shapedirs"].shape[2])
    sh[:8] = [2, -2, 1.5, 2, 2, 2, 2, 0]
    variants.append(dict(shape=sh))
    sh = -sh
    sh[8:12] = 2
    variants.append(dict(shape=sh, expression=np.eye(len(E))[E.index("mouth_corners_down")] * 1.5))
    row2 = []
    for kw in variants:
        v, _ = evaluate(arrays, **kw)
        row2.append(shaded_views(v, faces, ((0, 20, 0),), size, 6.0)[0])
    # Landmarks and the mouth box on the neutral front view.
    img = row1[0].copy()
    r, c = _front_pixels(l0.astype(np.float64), size)
    _draw_points(img, r, c, (1.0, 0.1, 0.1), 1)
    lm2d = front_landmarks_2d(torch.tensor(l0, dtype=torch.float32)[None])
    r0, r1, c0, c1 = mouth_box(lm2d)[0].tolist()
    k = size / 256.0
    # mouth_box rows count upwards from the bottom of our flipped image.
    _draw_box(img, int(size - r1 * k), int(size - r0 * k), int(c0 * k), int(c1 * k), (0.1, 0.8, 0.1))
    row2.append(img)
    grid = np.concatenate([np.concatenate(row1, 1), np.concatenate(row2, 1)], 0)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    imageio.imwrite(path, (np.clip(grid, 0, 1) * 255).astype(np.uint8))
    return path
