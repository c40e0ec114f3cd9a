"""The four orthographic UV renderings of the official Next3D generator (docs/flame.md#orthographic-views), their
blending alphas with the enclosed-hole fill (`fill_mouth`), and the mouth crop box (`gen_mouth_mask`,
docs/flame.md#landmarks-and-the-mouth-box).

Every float32 step follows the official operation order so that coverage matches the reference bit for bit:
the vertex transform uses the same torch ops (including `bmm` against the float32 rotation, whose 90 degree
entries are cos(float32(pi/2)) = -4.4e-8, not 0), and the rasteriser mirrors pytorch3d.
"""

from __future__ import annotations

import math
from typing import Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ..checks import check_tensor
from ..errors import InputError
from .rasterize import DEFAULT_MAX_PAIRS, rasterize

# (x: pitch, y: yaw, z: roll) in degrees: front, the two sides, top (docs/flame.md#orthographic-views).
VIEW_ANGLES: Tuple[Tuple[int, int, int], ...] = ((0, 0, 0), (0, 90, 0), (0, -90, 0), (90, 0, 0))
ORTH_SCALE = 5.0
ORTH_SHIFT = (0.0, -0.01, -0.01)
VIEW_SIZE = 256
# Outer-lip landmarks (iBUG-68 numbering) that set the mouth crop; 48 and 54 are the mouth corners.
_LIP_FIRST, _LIP_END, _CORNER_L, _CORNER_R = 48, 60, 48, 54


def angle2matrix(angles_deg) -> torch.Tensor:
    """Rotation matrices R = Rz·Ry·Rx from (x, y, z) angles in degrees (docs/flame.md), float32, [B, 3, 3].

    Row-vector convention: a point p (row) is rotated as p @ R. `angles_deg` is a [B, 3] tensor or one
    (x, y, z) triple. Integer triples are converted exactly as the official code does (an int64 tensor times
    pi/180 in float32), so 90 degrees gives the same float32 sines and cosines.
    """
    if isinstance(angles_deg, torch.Tensor):
        angles = angles_deg
    else:
        try:
            angles = torch.tensor(angles_deg)
        except (TypeError, ValueError, RuntimeError):
            raise InputError(f"angles_deg must be a [B, 3] tensor or an (x, y, z) triple, got {angles_deg!r}.") \
                from None
    if angles.ndim == 1:
        angles = angles.reshape(1, -1)
    check_tensor("angles_deg", angles, [None, 3], floating=False)
    if angles.is_floating_point() and not bool(torch.isfinite(angles).all()):
        raise InputError("angles_deg contains NaN or infinite values.")
    if angles.dtype == torch.bool or angles.is_complex():
        raise InputError(f"angles_deg has dtype {angles.dtype}, expected integers or floats (degrees).")
    angles = angles * math.pi / 180.0
    if not angles.is_floating_point():
        angles = angles.float()
    s, c = torch.sin(angles), torch.cos(angles)
    cx, cy, cz = c.unbind(1)
    sx, sy, sz = s.unbind(1)
    r = torch.stack([
        cz * cy, cz * sy * sx - sz * cx, cz * sy * cx + sz * sx,
        sz * cy, sz * sy * sx + cz * cx, sz * sy * cx - cz * sx,
        -sy, cy * sx, cy * cx,
    ], dim=1)
    return r.reshape(-1, 3, 3)


def project_view(points: torch.Tensor, angles=VIEW_ANGLES[0], orth_scale: float = ORTH_SCALE,
                 orth_shift: Sequence[float] = ORTH_SHIFT) -> torch.Tensor:
    """Orthographic view transform of the official `rasterize` (docs/flame.md#orthographic-views), [B, N, 3] ->
    [B, N, 3].

    Steps: negate y; p @ R(angles); + orth_shift; * orth_scale; orthographic projection with camera [1, 0, 0]
    (an identity); negate y and z; z += 10. The result is in the rasteriser's frame (x, y in [-1, 1] across
    the 256² view, z depth). For landmarks the front-view 2-D points are `[..., :2]` of this.
    """
    check_tensor("points", points, [None, None, 3])
    device = points.device
    p = points.float().clone()
    p[..., 1] = -p[..., 1]
    rot = angle2matrix(angles)                     # computed on the CPU like the official code, then moved
    if rot.shape[0] != 1:
        raise InputError(f"project_view takes one (x, y, z) angle triple, got {rot.shape[0]}.")
    rot = rot.to(device).expand(p.shape[0], -1, -1)
    shift = torch.tensor([list(orth_shift)], dtype=torch.float32, device=device)    # [[0, -0.01, -0.01]]
    scale = torch.tensor([[float(orth_scale)]], dtype=torch.float32, device=device)
    t = (torch.bmm(p, rot) + shift) * scale
    # batch_orth_proj with camera [1, 0, 0]: xy + 0 then * 1 (kept: it turns -0.0 into +0.0 like the original).
    t = torch.cat([t[:, :, :2] + 0.0, t[:, :, 2:]], dim=2) * 1.0
    t = torch.cat([t[:, :, :1], -t[:, :, 1:]], dim=2)
    t[:, :, 2] = t[:, :, 2] + 10
    return t


def front_landmarks_2d(landmarks: torch.Tensor) -> torch.Tensor:
    """Front-view 2-D landmarks [B, K, 2] from FLAME-space landmarks [B, K, 3] (`lm2d`, docs/flame.md)."""
    return project_view(landmarks, VIEW_ANGLES[0])[:, :, :2]


def rasterize_views(vertices: torch.Tensor, faces: torch.Tensor, face_uvcoords: torch.Tensor, *,
                    image_size: int = VIEW_SIZE, angles=VIEW_ANGLES, orth_scale: float = ORTH_SCALE,
                    orth_shift: Sequence[float] = ORTH_SHIFT,
                    max_pairs: int = DEFAULT_MAX_PAIRS) -> list:
    """Raw rasteriser output of each orthographic view (docs/flame.md), like `raster_view0..3` of the reference.

    Args:
        vertices: [B, V, 3] FLAME vertices (without the landmarks).
        faces: [F, 3] template triangles (the state dict's `faces[0]`).
        face_uvcoords: [F, 3, 3] per-corner (u, v, 1) attributes (the state dict's `face_uvcoords[0]`).

    Returns a list with one [B, 4, H, W] tensor per view: channels (u, v, w≈1, coverage); u, v in [-1, 1] are
    the texture-lookup grid, background pixels are 0.
    """
    check_tensor("vertices", vertices, [None, None, 3])
    check_tensor("faces", faces, [None, 3], floating=False)
    check_tensor("face_uvcoords", face_uvcoords, [faces.shape[0], 3, 3])
    # The official code swaps corners 1 and 2 of every triangle (and of its UV attributes) before rasterising,
    # which flips the winding so the template's front faces survive back-face culling.
    faces_r = faces[:, [0, 2, 1]]
    attrs_r = face_uvcoords[:, [0, 2, 1]].to(vertices.device)
    views = []
    for ang in angles:
        verts = project_view(vertices, ang, orth_scale, orth_shift)
        attr_img, coverage = rasterize(verts, faces_r.to(vertices.device), attrs_r, image_size,
                                       max_pairs=max_pairs)
        views.append(torch.cat([attr_img, coverage], dim=1))
    return views


def fill_enclosed_holes(alpha: torch.Tensor) -> torch.Tensor:
    """The official `fill_mouth` (docs/flame.md#orthographic-views): keep alpha where a 4-connected flood fill from
    pixel (0, 0) reaches, set every other pixel to exactly 1.

    OpenCV floodFill with FLOODFILL_FIXED_RANGE, loDiff=0, upDiff=254 on alpha*255 (float32) passes a pixel
    when d = float32(v - seed) satisfies 0 <= d <= 254 (`DiffC1<float>`). The official arithmetic on unreached
    pixels, clip(alpha + (1 - (alpha*255/127.5 - 1)), 0, 1), evaluates to exactly 1.0 for every float32 alpha in
    [0, 1] (checked exhaustively), so it is written as 1. Labelling runs in scipy on the CPU; the result goes
    back to the input's device.
    """
    from scipy import ndimage

    check_tensor("alpha", alpha, [None, 1, None, None])
    a = alpha.detach().to("cpu", torch.float32).numpy()
    out = np.empty_like(a)
    four = ndimage.generate_binary_structure(2, 1)      # 4-connectivity, as OpenCV's default
    for b in range(a.shape[0]):
        v = a[b, 0] * np.float32(255.0)
        d = v - v[0, 0]
        passable = (d >= 0) & (d <= np.float32(254.0))
        labels, _ = ndimage.label(passable, structure=four)
        reached = labels == labels[0, 0]
        out[b, 0] = np.where(reached, a[b, 0], np.float32(1.0))
    return torch.from_numpy(out).to(device=alpha.device, dtype=alpha.dtype)


def view_alphas(raster_views: Sequence[torch.Tensor], uv_face_mask: torch.Tensor) -> torch.Tensor:
    """Blending alphas [B, 3, H, W] = [front, side, top] from the four raw views (`alpha_views`, docs/flame.md).

    Per view: coverage * grid_sample(uv_face_mask, uv) (bilinear, zeros padding, align_corners=False), then
    `fill_enclosed_holes`.
    """
    if not isinstance(raster_views, (list, tuple)) or len(raster_views) != 4:
        raise InputError("raster_views must be the list of 4 views returned by rasterize_views.")
    first = check_tensor("raster_views[0]", raster_views[0], [None, 4, None, None])
    for i, r in enumerate(raster_views[1:], start=1):
        check_tensor(f"raster_views[{i}]", r, list(first.shape))
    check_tensor("uv_face_mask", uv_face_mask, [1, 1, None, None])
    B = first.shape[0]
    mask = uv_face_mask.to(device=first.device, dtype=first.dtype).expand(B, -1, -1, -1)
    alphas = []
    for r in raster_views:
        grid = r[:, :-1].permute(0, 2, 3, 1)[:, :, :, :2]
        face_eye = F.grid_sample(mask, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        alphas.append(fill_enclosed_holes(face_eye * r[:, -1:]))
    # Official quirk, reproduced on purpose: the side alpha ORs the +90 degree view's alpha with *itself*
    # (`alpha_images[1].bool() | alpha_images[1].bool()`), so the -90 degree alpha is never used and the side
    # alpha is binary.
    side = ((alphas[1] != 0) | (alphas[1] != 0)).to(first.dtype)
    return torch.cat([alphas[0], side, alphas[3]], dim=1)


def mouth_box(front_landmarks_2d: torch.Tensor, image_size: int = VIEW_SIZE) -> torch.Tensor:
    """Mouth crop box in the 256² front view (`gen_mouth_mask`, docs/flame.md): LongTensor [B, 4] of
    (row_start, row_end, col_start, col_end), ends excluded; the box is square with side 2*(r//2).

    Raises InputError when the box leaves the image: the official code would silently crop a smaller or
    empty patch there; we refuse instead.
    """
    check_tensor("front_landmarks_2d", front_landmarks_2d, [None, 68, 2])
    lm = front_landmarks_2d.detach().to("cpu", torch.float32).numpy()
    half_size = np.float32(image_size / 2)                           # 128 for the official 256² view
    lm = lm * half_size + half_size                                  # float32, as numpy does it officially
    lip = lm[:, _LIP_FIRST:_LIP_END]
    centre = (lip[:, _CORNER_L - _LIP_FIRST] + lip[:, _CORNER_R - _LIP_FIRST]) * np.float32(0.5)
    span = np.maximum(lip[..., 0].max(1) - lip[..., 0].min(1), lip[..., 1].max(1) - lip[..., 1].min(1))
    r = (span * np.float32(1.2)).astype(np.int64)                    # truncation toward zero
    half = r // 2
    # Officially float32 centre minus an int64 array, which numpy evaluates in float64, then truncated.
    cx, cy = centre[:, 0].astype(np.float64), centre[:, 1].astype(np.float64)
    box = np.stack([(cy - half).astype(np.int64), (cy + half).astype(np.int64),
                    (cx - half).astype(np.int64), (cx + half).astype(np.int64)], axis=1)
    for b, (r0, r1, c0, c1) in enumerate(box):
        if r0 < 0 or c0 < 0 or r1 > image_size or c1 > image_size or r1 <= r0 or c1 <= c0:
            raise InputError(
                f"the landmarks put the mouth outside the front view (sample {b}: rows {r0}..{r1}, columns "
                f"{c0}..{c1} of a {image_size}x{image_size} image); the mesh must be a FLAME head in its "
                "canonical pose and scale (metres, facing +z), with the 68 landmarks in the same space.")
    return torch.from_numpy(box).to(front_landmarks_2d.device)
