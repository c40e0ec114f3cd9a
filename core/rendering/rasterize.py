"""Vectorised triangle rasteriser with the semantics of pytorch3d's `rasterize_meshes` as the official Next3D
`Pytorch3dRasterizer` calls it (docs/architecture.md#orthographic-views): blur_radius=0, faces_per_pixel=1,
perspective_correct=False, cull_backfaces=True, naive CPU path of pytorch3d 0.7.x.

Coordinates are the ones the official wrapper *receives*: x, y in [-1, 1] (x to the right along columns, y down
along rows), z is depth (smaller is nearer). The wrapper negates x and y before pytorch3d; that is a 180 degree
rotation, under which pytorch3d's edge functions, bounding-box tests and pixel centres are bit-for-bit unchanged,
so everything below is computed directly in the wrapper's frame with pytorch3d's float32 operation order.

Instead of looping over pixels and faces, every face is expanded into the (face, pixel) pairs of its pixel
bounding box; the pairs are tested in one batch of tensor ops and a scatter-min z-buffer keeps the nearest face.
"""

from __future__ import annotations

from typing import Sequence, Tuple, Union

import torch

from ..checks import check_tensor
from ..errors import InputError

# pytorch3d's kEpsilon is a C++ `double`; it is added in double precision and the sum rounded back to float32.
_K_EPSILON = 1e-8

# Upper bound on (face, pixel) candidate pairs evaluated at once (about 40 float32 values each), so a face that
# covers a huge part of a large image cannot exhaust memory. The demo head needs ~0.2 M pairs per view.
DEFAULT_MAX_PAIRS = 1 << 21

ImageSize = Union[int, Sequence[int]]


def _parse_image_size(image_size: ImageSize) -> Tuple[int, int]:
    if isinstance(image_size, bool):
        raise InputError(f"image_size must be an int or (height, width), got {image_size!r}.")
    if isinstance(image_size, int):
        h = w = image_size
    else:
        try:
            h, w = (int(s) for s in image_size)
        except (TypeError, ValueError):
            raise InputError(f"image_size must be an int or (height, width), got {image_size!r}.") from None
    if h < 1 or w < 1:
        raise InputError(f"image_size must be positive, got {image_size!r}.")
    return h, w


def _pixel_centres(n: int, device: torch.device) -> torch.Tensor:
    """Pixel-centre coordinates of output indices 0..n-1 along one axis, ascending, float32.

    pytorch3d samples output index k at NDC -1 + (2*(n-1-k) + 1)/n (float32 ops, `PixToNonSquareNdc`) in its
    own frame, whose axes point the other way; negating that value gives the centre in our frame, which equals
    (2k+1)/n - 1 mathematically and bit-for-bit when n is a power of two. (For non-square images pytorch3d
    widens the NDC range of the longer side while the official wrapper rescales the vertices to match; the
    product is this same per-axis mapping, up to float rounding.)
    """
    k = torch.arange(n - 1, -1, -1, dtype=torch.float32, device=device)
    return -((2.0 * k + 1.0) / n - 1.0)


def _check_inputs(vertices, faces, face_attributes):
    check_tensor("vertices", vertices, [None, None, 3])
    check_tensor("faces", faces, [None, 3], floating=False)
    if faces.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8, torch.int8):
        raise InputError(f"faces has dtype {faces.dtype}, expected an integer tensor (e.g. torch.int64).")
    num_v = vertices.shape[1]
    if faces.numel() and (int(faces.min()) < 0 or int(faces.max()) >= num_v):
        raise InputError(f"faces index vertices outside 0..{num_v - 1} (got range {int(faces.min())}.."
                         f"{int(faces.max())}); faces must be 0-based indices into the {num_v} vertices.")
    if faces.device != vertices.device:
        raise InputError(f"faces is on {faces.device} but vertices is on {vertices.device}; put both on one device.")
    if face_attributes is None:
        return
    if not isinstance(face_attributes, torch.Tensor) or face_attributes.ndim not in (3, 4):
        shape = list(face_attributes.shape) if isinstance(face_attributes, torch.Tensor) else None
        raise InputError(f"face_attributes has shape {shape}, expected [F, 3, D] or [B, F, 3, D].")
    want = [faces.shape[0], 3, None] if face_attributes.ndim == 3 else [vertices.shape[0], faces.shape[0], 3, None]
    check_tensor("face_attributes", face_attributes, want)
    if face_attributes.device != vertices.device:
        raise InputError(f"face_attributes is on {face_attributes.device} but vertices is on {vertices.device}; "
                         "put both on one device.")


@torch.no_grad()
def _fragments(vertices: torch.Tensor, faces: torch.Tensor, height: int, width: int, max_pairs: int):
    """Nearest covering face of every pixel: (pix_to_face [B*H*W] long, -1 = background; bary [B*H*W, 3];
    zbuf [B*H*W], +inf = background). Face indices are per mesh (0..F-1)."""
    device = vertices.device
    B, F = vertices.shape[0], faces.shape[0]
    n_pix = B * height * width
    pix_to_face = torch.full((n_pix,), -1, dtype=torch.int64, device=device)
    zbuf = torch.full((n_pix,), float("inf"), dtype=torch.float32, device=device)
    bary = torch.zeros((n_pix, 3), dtype=torch.float32, device=device)
    if F == 0 or B == 0:
        return pix_to_face, bary, zbuf

    fv = vertices.float()[:, faces.long()].reshape(B * F, 3, 3)   # pytorch3d rasterises `verts.float()`
    x0, y0, z0 = fv[:, 0].unbind(-1)
    x1, y1, z1 = fv[:, 1].unbind(-1)
    x2, y2, z2 = fv[:, 2].unbind(-1)

    # Face orientation, EdgeFunctionForward(v0, v1, v2). Negative = back face (culled). In our frame (y down the
    # rows) v0=(0,0), v1=(1,0), v2=(0,1) is clockwise on screen and gives -1, i.e. on-screen counter-clockwise
    # faces are kept. pytorch3d compares with the double 1e-8; float32(1e-8) is just below it and the next float32
    # just above, so `> 1e-8` and `<= 1e-8` give the same answers whether torch compares in float32 or double.
    orient = (x0 - x1) * (y2 - y1) - (y0 - y1) * (x2 - x1)
    # pytorch3d >= 0.7 also drops any face with a vertex behind (or on) the camera plane, z_min < kEpsilon.
    zmin = torch.minimum(z0, torch.minimum(z1, z2))
    keep = (orient >= 0) & (orient.abs() > _K_EPSILON) & (zmin > _K_EPSILON)

    xmin = torch.minimum(x0, torch.minimum(x1, x2))
    xmax = torch.maximum(x0, torch.maximum(x1, x2))
    ymin = torch.minimum(y0, torch.minimum(y1, y2))
    ymax = torch.maximum(y0, torch.maximum(y1, y2))
    cx = _pixel_centres(width, device)
    cy = _pixel_centres(height, device)
    # Exact bounding-box test (inclusive, like pytorch3d's CheckPointOutsideBoundingBox) on the sorted centres.
    j_lo = torch.searchsorted(cx, xmin.contiguous(), right=False)
    j_hi = torch.searchsorted(cx, xmax.contiguous(), right=True)
    i_lo = torch.searchsorted(cy, ymin.contiguous(), right=False)
    i_hi = torch.searchsorted(cy, ymax.contiguous(), right=True)
    nx = (j_hi - j_lo).clamp_min(0)
    ny = (i_hi - i_lo).clamp_min(0)
    counts = torch.where(keep, nx * ny, torch.zeros_like(nx))

    live = torch.nonzero(counts, as_tuple=True)[0]            # global face ids b*F + f, ascending
    if live.numel() == 0:
        return pix_to_face, bary, zbuf
    counts = counts[live]
    ends = torch.cumsum(counts, 0)
    starts = ends - counts
    total = int(ends[-1])

    # Barycentric denominator exactly as pytorch3d: float32 edge + double kEpsilon, rounded to float32.
    area = ((x2 - x0) * (y1 - y0) - (y2 - y0) * (x1 - x0))[live]
    if device.type == "mps":                                    # no float64 there; F values, cheap on the CPU
        area = area.cpu().double().add(_K_EPSILON).float().to(device)
    else:
        area = area.double().add(_K_EPSILON).float()
    # Per-face table gathered once per pair: vertex coords, edge deltas and the denominator.
    table = torch.stack([
        x0, y0, z0, x1, y1, z1, x2, y2, z2,
        y2 - y1, x2 - x1, y0 - y2, x0 - x2, y1 - y0, x1 - x0,
    ], dim=1)[live]
    table = torch.cat([table, area[:, None]], dim=1)
    geo = torch.stack([j_lo[live], nx[live], i_lo[live], live // F, live % F], dim=1)

    for s in range(0, total, max_pairs):
        e = min(total, s + max_pairs)
        pair = torch.arange(s, e, dtype=torch.int64, device=device)
        g = torch.searchsorted(ends, pair, right=True)          # which live face each pair belongs to
        local = pair - starts[g]
        gg = geo[g]
        ncol = gg[:, 1]
        col = gg[:, 0] + local % ncol
        row = gg[:, 2] + torch.div(local, ncol, rounding_mode="floor")
        t = table[g]
        px, py = cx[col], cy[row]
        # BarycentricCoordinatesForward: w0 = edge(p, v1, v2)/area, w1 = edge(p, v2, v0)/area,
        # w2 = edge(p, v0, v1)/area with edge(p, a, b) = (p.x - a.x)*(b.y - a.y) - (p.y - a.y)*(b.x - a.x).
        a = t[:, 15]
        w0 = ((px - t[:, 3]) * t[:, 9] - (py - t[:, 4]) * t[:, 10]) / a
        w1 = ((px - t[:, 6]) * t[:, 11] - (py - t[:, 7]) * t[:, 12]) / a
        w2 = ((px - t[:, 0]) * t[:, 13] - (py - t[:, 1]) * t[:, 14]) / a
        pz = w0 * t[:, 2] + w1 * t[:, 5] + w2 * t[:, 8]
        ok = (w0 > 0) & (w1 > 0) & (w2 > 0) & ~(pz < 0)       # strictly inside; pz < 0 is behind the camera
        idx = torch.nonzero(ok, as_tuple=True)[0]
        if idx.numel() == 0:
            continue
        pz, face = pz[idx], gg[idx, 4]
        key = (gg[idx, 3] * height + row[idx]) * width + col[idx]
        w = torch.stack([w0[idx], w1[idx], w2[idx]], dim=1)
        # z-buffer: nearest depth per pixel, then the lowest face index among exact ties (pytorch3d sorts
        # (z, face, ...) tuples and keeps the first).
        zb = torch.full((n_pix,), float("inf"), dtype=torch.float32, device=device)
        zb.scatter_reduce_(0, key, pz, reduce="amin")
        win = torch.nonzero(pz == zb[key], as_tuple=True)[0]
        key, pz, face, w = key[win], pz[win], face[win], w[win]
        fb = torch.full((n_pix,), F, dtype=torch.int64, device=device)
        fb.scatter_reduce_(0, key, face, reduce="amin")
        win = torch.nonzero(face == fb[key], as_tuple=True)[0]
        key, pz, face, w = key[win], pz[win], face[win], w[win]
        # Merge with earlier chunks. Chunks hold increasing face indices, so an equal depth keeps the old face.
        better = torch.nonzero(pz < zbuf[key], as_tuple=True)[0]
        key = key[better]
        zbuf[key] = pz[better]
        pix_to_face[key] = face[better]
        bary[key] = w[better]
    return pix_to_face, bary, zbuf


def rasterize_fragments(vertices: torch.Tensor, faces: torch.Tensor, image_size: ImageSize, *,
                        max_pairs: int = DEFAULT_MAX_PAIRS):
    """pytorch3d-style fragments (docs/architecture.md): pix_to_face [B,H,W] int64 (-1 = background), bary [B,H,W,3]
    float32 (0 on background) and zbuf [B,H,W] float32 (-1 on background, as pytorch3d).

    vertices [B,V,3] in the frame the official wrapper receives; faces [F,3] 0-based, shared by the batch.
    """
    _check_inputs(vertices, faces, None)
    h, w = _parse_image_size(image_size)
    p2f, bary, zbuf = _fragments(vertices, faces, h, w, int(max_pairs))
    B = vertices.shape[0]
    zbuf = torch.where(p2f < 0, torch.full_like(zbuf, -1.0), zbuf)
    return p2f.view(B, h, w), bary.view(B, h, w, 3), zbuf.view(B, h, w)


def rasterize(vertices: torch.Tensor, faces: torch.Tensor, face_attributes: torch.Tensor, image_size: ImageSize,
              *, max_pairs: int = DEFAULT_MAX_PAIRS) -> Tuple[torch.Tensor, torch.Tensor]:
    """Rasterise a batch of meshes and interpolate per-face-corner attributes (`Pytorch3dRasterizer`).

    Args:
        vertices: [B, V, 3] float. x, y in [-1, 1] map to columns and rows (pixel (i, j) has its centre at
            x = (2j+1)/W - 1, y = (2i+1)/H - 1); z is depth, the smallest non-negative depth wins.
        faces: [F, 3] integer vertex indices, shared by the batch. Faces whose corners run clockwise on screen
            (x right, y down) are back faces and are culled; zero-area faces are skipped.
        face_attributes: [F, 3, D] or [B, F, 3, D], one D-vector per face corner.
        image_size: int or (H, W).
        max_pairs: memory guard, the number of (face, pixel) candidates evaluated at once.

    Returns:
        attributes_image [B, D, H, W] (barycentric sum of the winning face's corner attributes, 0 on background)
        and coverage [B, 1, H, W] (1.0 where a face covers the pixel centre strictly inside, else 0.0).
    """
    _check_inputs(vertices, faces, face_attributes)
    if face_attributes is None:
        raise InputError("face_attributes must be a tensor of shape [F, 3, D] or [B, F, 3, D].")
    h, w = _parse_image_size(image_size)
    B, F = vertices.shape[0], faces.shape[0]
    D = face_attributes.shape[-1]
    p2f, bary, _ = _fragments(vertices, faces, h, w, int(max_pairs))
    pix = torch.nonzero(p2f >= 0, as_tuple=True)[0]
    face = p2f[pix]
    if face_attributes.ndim == 4:
        face = face + torch.div(pix, h * w, rounding_mode="floor") * F
    attrs = face_attributes.reshape(-1, 3, D)[face]                    # [P, 3, D]
    # Same expression as the official wrapper, (bary[..., None] * corner_values).sum(-2).
    vals = (bary[pix][:, :, None] * attrs).sum(dim=1)
    out = torch.zeros((B * h * w, D), dtype=vals.dtype, device=vertices.device)
    out[pix] = vals
    coverage = torch.zeros(B * h * w, dtype=torch.float32, device=vertices.device)
    coverage[pix] = 1.0
    return (out.view(B, h, w, D).permute(0, 3, 1, 2).contiguous(), coverage.view(B, 1, h, w))
