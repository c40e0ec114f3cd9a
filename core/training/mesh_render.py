"""Perspective rendering of FLAME meshes with EG3D camera labels, on the project's own rasterizer.

Two users: the synthetic dataset generator (colours, lighting) and the deformation-aware discriminator, which sees
a rendering of the mesh that drove each image (`render_mesh_condition`).

Coordinates: FLAME vertices (metres, y up, face towards +z) are placed in the EG3D world the way the generator's
orthographic front view places them (docs/flame.md#placement-in-the-generator-world):
world = (orth_scale * box_warp / 2) * (x + sx, y - sy, z), i.e. 2.5 * (x, y + 0.01, z) with the official settings.
A camera label c [25] = OpenCV cam2world 4x4 + normalized intrinsics; a world point projects to normalized image
coordinates (u, v) in [0, 1] (u along columns, v down the rows), which the rasterizer takes as x = 2u - 1,
y = 2v - 1 with the camera-space depth as z.

Holes: a FLAME mesh has an open mouth (and the stand-in head none). Back faces are culled by the rasterizer, so
looking into the mouth would show the background. Every rendering here therefore runs a second pass with the
winding reversed, which finds the inner surface; where that inner surface is the first thing the ray meets, the
pixel is 'interior' (the mouth cavity) and is drawn dark.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from ..checks import check_tensor
from ..errors import InputError
from ..flame.conversions import Placement
from ..rendering.rasterize import rasterize

__all__ = ["flame_to_world", "project_points", "vertex_normals", "MeshFragments", "rasterize_mesh",
           "render_mesh_condition", "MESH_CONDITION_CHANNELS"]

MESH_CONDITION_CHANNELS = 3


def flame_to_world(points: torch.Tensor, orth_scale: float = 5.0,
                   orth_shift: Sequence[float] = (0.0, -0.01, -0.01), box_warp: float = 1.0) -> torch.Tensor:
    """FLAME-space points [..., 3] -> EG3D world, as the generator's front view maps them
    (core.flame.conversions.Placement)."""
    return Placement(float(orth_scale), tuple(float(x) for x in orth_shift), float(box_warp)).to_world(points)


def _camera(c: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    check_tensor("c (camera label)", c, [None, None])
    if c.shape[1] < 25:
        raise InputError(f"c has {c.shape[1]} values per camera, expected 25 (cam2world 4x4 + intrinsics 3x3).")
    cam2world = c[:, :16].reshape(-1, 4, 4).float()
    return cam2world[:, :3, :3], cam2world[:, :3, 3], c[:, 16:25].reshape(-1, 3, 3).float()


def project_points(world: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """World points [B, N, 3] seen by cameras c [B, 25] -> [B, N, 3] = (u, v, depth): normalized image
    coordinates (pixel (i, j) of an R x R image has its centre at u = (j + 0.5) / R, v = (i + 0.5) / R) and the
    camera-space depth along the optical axis."""
    rot, origin, k = _camera(c)
    cam = torch.bmm(world.float() - origin[:, None], rot)           # rows: R^T (p - t)
    z = cam[..., 2:3]
    safe = torch.where(z.abs() < 1e-6, torch.full_like(z, 1e-6), z)
    xy = cam[..., :2] / safe
    u = k[:, None, 0, 0:1] * xy[..., 0:1] + k[:, None, 0, 1:2] * xy[..., 1:2] + k[:, None, 0, 2:3]
    v = k[:, None, 1, 1:2] * xy[..., 1:2] + k[:, None, 1, 2:3]
    return torch.cat([u, v, z], dim=-1)


def vertex_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Area-weighted unit vertex normals [B, V, 3] of meshes [B, V, 3] with faces [F, 3] (counter-clockwise seen
    from outside)."""
    f = faces.long()
    v0, v1, v2 = vertices[:, f[:, 0]], vertices[:, f[:, 1]], vertices[:, f[:, 2]]
    fn = torch.linalg.cross(v1 - v0, v2 - v0, dim=-1)
    normals = torch.zeros_like(vertices)
    for k in range(3):
        normals.index_add_(1, f[:, k], fn)
    return F.normalize(normals, dim=-1, eps=1e-12)


@dataclass(frozen=True)
class MeshFragments:
    """Per-pixel result of `rasterize_mesh` at the render size."""

    attributes: torch.Tensor  # [B, D, H, W] interpolated per-vertex attributes of the nearest outer surface
    coverage: torch.Tensor    # [B, 1, H, W] 1 where an outward-facing face is the first surface hit
    interior: torch.Tensor    # [B, 1, H, W] 1 where the ray first meets the mesh's inner surface (mouth cavity)
    depth: torch.Tensor       # [B, 1, H, W] camera depth of the first surface hit (0 where nothing is hit)


def rasterize_mesh(vertices: torch.Tensor, faces: torch.Tensor, c: torch.Tensor, resolution: int,
                   attributes: Optional[torch.Tensor] = None, *, inner_pass: bool = True, orth_scale: float = 5.0,
                   orth_shift: Sequence[float] = (0.0, -0.01, -0.01), box_warp: float = 1.0) -> MeshFragments:
    """Rasterize FLAME meshes [B, V, 3] (faces [F, 3], counter-clockwise seen from outside) from cameras c [B, 25]
    at resolution x resolution, interpolating per-vertex attributes [B, V, D] (screen-space linear).

    `inner_pass=False` skips the inner-surface pass (half the cost) for closed meshes, which have no cavity."""
    check_tensor("vertices", vertices, [None, None, 3])
    b, nv = vertices.shape[:2]
    if attributes is None:
        attributes = torch.zeros(b, nv, 0, device=vertices.device)
    check_tensor("attributes", attributes, [b, nv, None])
    world = flame_to_world(vertices.float(), orth_scale, orth_shift, box_warp)
    uvz = project_points(world, c)
    screen = torch.cat([uvz[..., :2] * 2 - 1, uvz[..., 2:]], dim=-1)
    f = faces.long().to(vertices.device)
    # The OpenCV camera (y down) mirrors the screen once more than the y-up world, so faces that are
    # counter-clockwise from outside come out as the rasterizer's front faces unchanged; swapping two corners
    # draws the inner surface instead.
    outer_faces = f
    inner_faces = f[:, [0, 2, 1]]
    values = torch.cat([attributes.float(), uvz[..., 2:]], dim=-1)               # depth rides along
    d = values.shape[-1]
    outer_attr = values[:, outer_faces.reshape(-1)].reshape(b, -1, 3, d)
    out_img, out_cov = rasterize(screen, outer_faces, outer_attr, resolution)
    out_depth = out_img[:, -1:]
    if not inner_pass:
        return MeshFragments(attributes=out_img[:, :-1], coverage=out_cov, interior=torch.zeros_like(out_cov),
                             depth=out_depth * out_cov)
    depth_only = uvz[..., 2:][:, inner_faces.reshape(-1)].reshape(b, -1, 3, 1)
    in_img, in_cov = rasterize(screen, inner_faces, depth_only, resolution)
    in_depth = in_img[:, -1:]
    interior = (in_cov > 0) & ((out_cov == 0) | (in_depth < out_depth - 1e-4))
    coverage = (out_cov > 0) & ~interior
    depth = torch.where(coverage, out_depth, torch.where(interior, in_depth, torch.zeros_like(out_depth)))
    return MeshFragments(attributes=out_img[:, :-1], coverage=coverage.float(), interior=interior.float(),
                         depth=depth)


def render_mesh_condition(v: torch.Tensor, faces: torch.Tensor, c: torch.Tensor, resolution: int, *,
                          n_vertices: Optional[int] = None, inner_pass: bool = True, orth_scale: float = 5.0,
                          orth_shift: Sequence[float] = (0.0, -0.01, -0.01), box_warp: float = 1.0) -> torch.Tensor:
    """The deformation-aware discriminator's view of a mesh: [B, 3, R, R] camera-space unit normals with z pointing
    towards the camera (a surface facing the camera is (0, 0, 1)), the mouth cavity (0, 0, -1), background 0.

    `v` is the generator's mesh input [B, V (+ 68 landmarks), 3]; the first `n_vertices` rows (default: all) are
    the mesh that `faces` indexes; the landmark rows are ignored."""
    check_tensor("v", v, [None, None, 3])
    if n_vertices is None:
        n_vertices = v.shape[1]
    vertices = v[:, :n_vertices].float()
    rot, _, _ = _camera(c)
    normals = vertex_normals(vertices, faces.to(vertices.device))
    cam_normals = torch.bmm(normals, rot)                           # world -> camera (OpenCV: z forward)
    cam_normals = cam_normals * torch.tensor([1.0, 1.0, -1.0], device=v.device)  # z towards the camera
    frags = rasterize_mesh(vertices, faces, c, resolution, cam_normals, inner_pass=inner_pass, orth_scale=orth_scale,
                           orth_shift=orth_shift, box_warp=box_warp)
    image = F.normalize(frags.attributes, dim=1, eps=1e-6) * frags.coverage
    cavity = torch.tensor([0.0, 0.0, -1.0], device=v.device).view(1, 3, 1, 1)
    return image + cavity * frags.interior
