"""Alpha and depth compositing for heads rendered into a scene (docs/camera.md#the-matte).

The generator draws a whole FFHQ-like picture (background included) and its density gives no usable cut-out: an
EG3D volume renders the background inside the same volume. So the matte is first geometric: the rig's silhouette in
the scene camera (its triangles rasterized), widened by a fraction of the projected head's size to take in the hair,
and feathered over another fraction. Inside it, the generator's depth keys out its backdrop (`backdrop_key`: the
background lies behind the head). numpy only (Blender's Python runs it).
"""

from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np

from ..core.errors import InputError

WIDEN = 0.05      # fraction of the head's projected size (the larger side of its bounding box) added around it
FEATHER = 0.06    # fraction of that size over which alpha falls from 1 to 0
WORK_SIZE = 192   # the matte is computed with the head this many cells across, then resampled (it is smooth)
KEY_RAMP = 0.25   # the backdrop key falls from 1 to 0 over this fraction of the gap between head and backdrop depth


def _otsu(values: np.ndarray, bins: int = 64) -> float:
    """The threshold that best splits values into two groups (Otsu: the largest between-group variance)."""
    hist, edges = np.histogram(values, bins=bins)
    centres = 0.5 * (edges[:-1] + edges[1:])
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    s0 = np.cumsum(hist * centres)
    m0 = s0 / np.maximum(w0, 1)
    m1 = (s0[-1] - s0) / np.maximum(w1, 1)
    between = w0 * w1 * (m0 - m1) ** 2
    return float(edges[int(np.argmax(between[:-1])) + 1])


def backdrop_key(z: np.ndarray, centre_depth: float) -> np.ndarray:
    """[R, R] in [0, 1]: 0 where the generator drew its backdrop, 1 where it drew the head, from its depth image z
    (along the virtual camera's axis, world units). An EG3D volume renders the background too, but behind the head:
    the depths fall in two groups (Otsu's split). The far group is taken for a backdrop only when it lies, on
    average, behind the head's centre (centre_depth), so a close-up whose square holds only face and hair keeps all
    of it; and the split never falls in front of that centre, so the face, ears and hair in front of it stay."""
    z = np.asarray(z, dtype=np.float64)
    finite = z[np.isfinite(z)]
    ones = np.ones(z.shape, dtype=np.float32)
    if finite.size < 4 or float(finite.max() - finite.min()) <= 0:
        return ones
    split = _otsu(finite)
    near, far = finite[finite < split], finite[finite >= split]
    if not near.size or not far.size or float(far.mean()) <= centre_depth:
        return ones
    split = max(split, float(centre_depth))      # never into the head's front half
    ramp = max(KEY_RAMP * float(far.mean() - near.mean()), 1e-6)
    key = np.where(np.isfinite(z), np.clip((split + 0.5 * ramp - z) / ramp, 0.0, 1.0), 0.0)
    # A 3 x 3 average: the depth image is coarse (the neural rendering's resolution), its key's steps would show.
    padded = np.pad(key, 1, mode="edge")
    key = sum(padded[i:i + key.shape[0], j:j + key.shape[1]] for i in range(3) for j in range(3)) / 9.0
    return key.astype(np.float32)


def _rasterize(tri: np.ndarray, nx: int, ny: int) -> np.ndarray:
    """Coverage [ny, nx] bool of triangles [F, 3, 2] in grid units (cell (i, j) spans [j, j+1) x [i, i+1)): each
    triangle is sampled on a barycentric lattice finer than half a cell, so no covered cell is missed."""
    mask = np.zeros((ny, nx), dtype=bool)
    edges = np.stack([tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 1], tri[:, 0] - tri[:, 2]], axis=1)
    longest = np.linalg.norm(edges, axis=2).max(axis=1)
    steps = np.maximum(np.ceil(longest * 2.0).astype(np.int64), 1)
    for n in np.unique(steps):
        group = tri[steps == n]
        i, j = np.meshgrid(np.arange(n + 1), np.arange(n + 1), indexing="ij")
        keep = i + j <= n
        a, b = (i[keep] / n)[None, :, None], (j[keep] / n)[None, :, None]
        origin, e1, e2 = group[:, None, 0], group[:, None, 1] - group[:, None, 0], group[:, None, 2] - group[:, None, 0]
        pts = (origin + a * e1 + b * e2).reshape(-1, 2)
        cx, cy = np.floor(pts[:, 0]).astype(np.int64), np.floor(pts[:, 1]).astype(np.int64)
        ok = (cx >= 0) & (cx < nx) & (cy >= 0) & (cy < ny)
        mask[cy[ok], cx[ok]] = True
    return mask


def _distance_outside(mask: np.ndarray) -> np.ndarray:
    """Euclidean distance [ny, nx] (cells) from each cell to the nearest covered cell; 0 on it, inf if none."""
    ny, nx = mask.shape
    if not mask.any():
        return np.full(mask.shape, np.inf)
    rows = np.arange(ny, dtype=np.float64)[:, None]
    above = np.where(mask, rows, -np.inf)
    above = np.maximum.accumulate(above, axis=0)
    below = np.where(mask, rows, np.inf)
    below = np.minimum.accumulate(below[::-1], axis=0)[::-1]
    g = np.minimum(rows - above, below - rows)           # vertical distance in each column, inf where none
    g2 = g * g
    cols = np.arange(nx, dtype=np.float64)
    dx2 = (cols[:, None] - cols[None, :]) ** 2           # [x, x']
    out = np.empty((ny, nx))
    chunk = max(1, 4_000_000 // max(nx * nx, 1))
    for y0 in range(0, ny, chunk):
        out[y0:y0 + chunk] = np.min(dx2[None] + g2[y0:y0 + chunk, None, :], axis=2)
    return np.sqrt(out)


def _resample(grid: np.ndarray, origin: Tuple[float, float], step: float, x_lo: int, x_hi: int, y_lo: int,
              y_hi: int) -> np.ndarray:
    """Bilinear samples of a grid (cell centres at origin + (j + 0.5) step) at the scene pixel centres of a box,
    clamped at the grid's edge."""
    ny, nx = grid.shape
    gx = (np.arange(x_lo, x_hi) + 0.5 - origin[0]) / step - 0.5
    gy = (np.arange(y_lo, y_hi) + 0.5 - origin[1]) / step - 0.5
    gx, gy = np.clip(gx, 0, nx - 1), np.clip(gy, 0, ny - 1)
    x0, y0 = np.minimum(np.floor(gx).astype(int), nx - 2 if nx > 1 else 0), \
        np.minimum(np.floor(gy).astype(int), ny - 2 if ny > 1 else 0)
    x1, y1 = np.minimum(x0 + 1, nx - 1), np.minimum(y0 + 1, ny - 1)
    wx, wy = (gx - x0)[None, :], (gy - y0)[:, None]
    top = grid[y0][:, x0] * (1 - wx) + grid[y0][:, x1] * wx
    bottom = grid[y1][:, x0] * (1 - wx) + grid[y1][:, x1] * wx
    return top * (1 - wy) + bottom * wy


def head_matte(pixels: np.ndarray, faces: np.ndarray, width: int, height: int, widen: float = WIDEN,
               feather: float = FEATHER) -> np.ndarray:
    """Alpha [height, width] float32 in [0, 1] for a head whose vertices project to `pixels` [N, 2] (scene render
    pixels, x right, y down: convert.project_points) with triangles `faces` [F, 3]: 1 on the silhouette and within
    `widen` x the head's projected size of it, falling smoothly to 0 over `feather` x that size beyond."""
    px = np.asarray(pixels, dtype=np.float64)
    tris = np.asarray(faces)
    width, height = int(width), int(height)
    if px.ndim != 2 or px.shape[1] != 2:
        raise InputError(f"The head's projected vertices must be [N, 2]; got {list(px.shape)}.")
    if tris.ndim != 2 or tris.shape[1] != 3 or tris.dtype.kind not in "iu":
        raise InputError(f"The head's faces must be [F, 3] integers; got {list(tris.shape)} ({tris.dtype}).")
    if len(tris) and (tris.min() < 0 or tris.max() >= len(px)):
        raise InputError(f"The head's faces index vertices outside 0..{len(px) - 1}; the faces are of another mesh.")
    if width <= 0 or height <= 0:
        raise InputError(f"The scene render must have a positive size; got {width} x {height}.")
    if widen < 0 or feather < 0:
        raise InputError(f"The matte's widen and feather must be >= 0; got {widen}, {feather}.")
    alpha = np.zeros((height, width), dtype=np.float32)
    used = px[np.unique(tris)] if len(tris) else px[:0]
    if len(used) == 0:
        return alpha
    if not np.isfinite(used).all():
        raise InputError("The head's projected vertices are not finite (part of the head is behind the camera).")
    lo, hi = used.min(axis=0), used.max(axis=0)
    size = float(max(hi - lo))
    margin = (widen + feather) * size + 2.0
    x_lo, y_lo = np.floor(lo - margin).astype(int)
    x_hi, y_hi = np.ceil(hi + margin).astype(int)
    x_lo, y_lo, x_hi, y_hi = max(x_lo, 0), max(y_lo, 0), min(x_hi, width), min(y_hi, height)
    if x_lo >= x_hi or y_lo >= y_hi or size <= 0:
        return alpha
    # The work grid covers the head and its margin even where that leaves the frame: the distance to a silhouette
    # outside the frame still counts.
    step = max(size / WORK_SIZE, 1.0)
    origin = (float(np.floor(lo[0] - margin)), float(np.floor(lo[1] - margin)))
    nx = int(np.ceil((hi[0] + margin - origin[0]) / step)) + 1
    ny = int(np.ceil((hi[1] + margin - origin[1]) / step)) + 1
    grid_tris = (px[tris] - np.asarray(origin)) / step
    covered = _rasterize(grid_tris, nx, ny)
    dist = _distance_outside(covered) * step                        # scene pixels
    t = np.clip((dist - widen * size) / max(feather * size, 1e-9), 0.0, 1.0)
    grid_alpha = 1.0 - t * t * (3.0 - 2.0 * t)                      # smoothstep from 1 down to 0
    alpha[y_lo:y_hi, x_lo:x_hi] = _resample(grid_alpha, origin, step, x_lo, x_hi, y_lo, y_hi)
    return np.clip(alpha, 0.0, 1.0)


def composite_by_depth(layers: Sequence[Tuple[np.ndarray, np.ndarray]]) -> Tuple[np.ndarray, np.ndarray]:
    """Several heads' renders over one another, nearest first at each pixel.

    layers: [(rgba [H, W, 4] float32 premultiplied, depth [H, W] float32, inf where the layer is empty)].
    Returns (rgba [H, W, 4] premultiplied, depth [H, W]: the nearest depth of a layer with alpha > 0, inf where
    none): the "over" operator applied in per-pixel depth order."""
    if not layers:
        raise InputError("There is nothing to composite: no head was rendered.")
    rgba = [np.asarray(c, dtype=np.float32) for c, _ in layers]
    depth = [np.asarray(d, dtype=np.float32) for _, d in layers]
    shape = rgba[0].shape
    if len(shape) != 3 or shape[2] != 4:
        raise InputError(f"A layer's colour must be [H, W, 4] RGBA; got {list(shape)}.")
    for c, d in zip(rgba, depth):
        if c.shape != shape or d.shape != shape[:2]:
            raise InputError(f"The layers differ in size: {list(c.shape)} colour and {list(d.shape)} depth against "
                             f"{list(shape)}; render every head at the scene's resolution.")
    colour = np.stack(rgba)                                   # [L, H, W, 4]
    alpha = colour[..., 3]
    z = np.where(alpha > 0, np.stack(depth), np.inf)          # an empty pixel never hides another layer
    z = np.where(np.isnan(z), np.inf, z)
    order = np.argsort(z, axis=0, kind="stable")
    colour = np.take_along_axis(colour, order[..., None], axis=0)
    out = np.zeros(shape, dtype=np.float32)
    through = np.ones(shape[:2], dtype=np.float32)            # what still shows through the layers in front
    for layer in colour:
        out += through[..., None] * layer
        through *= 1.0 - np.clip(layer[..., 3], 0.0, 1.0)
    return out, z.min(axis=0).astype(np.float32)
