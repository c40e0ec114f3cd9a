"""Mesh extraction from the Next3D density field (docs/mesh_extraction.md), coarse to fine.

The official `gen_samples --shapes` evaluates the raw decoder density (pre-softplus) on a dense N^3 lattice over
[-box_warp/2, box_warp/2]^3 (N points per axis, voxel size box_warp/(N-1), corner at -box_warp/2), sets a border of
int(30 N / 256) voxels on all six faces to -1000 and runs marching cubes at level 10. Next3D's `sample()` also
recomputes the whole generator for every 1M-point chunk (135 times at 512^3).

Here the tri-planes of a frame are built once (`Next3DGenerator.build_planes`) and the same lattice is evaluated
coarse to fine:

1. the density at coarse nodes, every `step` lattice points (default 4; the border trim is never evaluated);
2. coarse cells whose corner values straddle the level (optionally dilated by `dilation` cells) are evaluated at
   every lattice point of the cell, faces included; every point not evaluated keeps the value of a coarse node of
   its cell, which lies on the cell's side of the level (a cell that does not straddle has all corners on one side);
3. surface following: an evaluated point on the other side of the level from a not-yet-evaluated cell that contains
   it means the surface leaves through that cell's boundary, so that cell is evaluated next; repeat until no cell
   is added;
4. marching cubes (scikit-image, Lewiner) over the lattice, limited to the cubes of evaluated cells.

Every surface component that passes through a straddling cell is therefore traced completely, and the result equals
the mesh of the dense lattice for it (the same vertices and triangles). Only a component that lies entirely inside
cells whose corners are all on one side of the level can be missed (a speck or a thin needle smaller than a coarse
cell, away from the main surface); a smaller step or `dilation=1` makes that rarer.

For the generator, lattice points are decoded through a separable form of the decoder that is exact up to float
rounding: plane k of the tri-plane depends on two lattice axes only, and the decoder's first layer is affine, so
`layer1(mean of the three plane features)` = the sum of three 2-D tables `layer1(plane_k features) / 3`, gathered per
point; then softplus and the density row of the second layer. Off-lattice points (vertex colours) and decoders of
another structure use `Next3DGenerator.decode_points`.

With `near` (the frame's head points), only the density inside the head's convex hull grown by a margin is kept,
which drops the backdrop a trained model puts beside and behind the head (docs/mesh_extraction.md#head-region).

Output coordinates are FLAME units (the head's own frame: x to the subject's left, y up, z forward, metres), the
inverse of the front-view placement (docs/flame.md#placement-in-the-generator-world):
world = (box_warp/2) * orth_scale * (x + shift_x, y - shift_y, z), i.e. world = 2.5 (x, y + 0.01, z) for the
official settings. The official .ply instead has voxel
units with the axes (z, y, flipped x); this module outputs proper coordinates with no flip.

Memory: the lattice inside the border trim is held as float32 plus two boolean masks (about 300 MB at 512^3), and
the separable decoder keeps three [L^2, 64] tables (about 120 MB at 512^3).
"""

from __future__ import annotations

import math
from typing import Callable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn as nn

from ..errors import InputError
from ..flame.conversions import OFFICIAL_PLACEMENT, Placement
from .extracted import ExtractedMesh

OFFICIAL_LEVEL = 10.0           # gen_samples / shape_utils default iso-level
OFFICIAL_PAD_VALUE = -1000.0    # value written into the trimmed border
OFFICIAL_CHUNK = 1_000_000      # points per G.sample call in gen_samples
DEFAULT_ORTH_SCALE = OFFICIAL_PLACEMENT.orth_scale
DEFAULT_ORTH_SHIFT = OFFICIAL_PLACEMENT.orth_shift

ProgressFn = Callable[[int, int], None]
DensityFn = Callable[[torch.Tensor], Union[torch.Tensor, np.ndarray]]
DEFAULT_COARSE_STEP = 4        # lattice points between coarse nodes (coarse_resolution=None)
DEFAULT_MARGIN = 0.02           # FLAME units (metres) kept around the head (docs/mesh_extraction.md#head-region)
PROGRESS_TOTAL = 1000           # progress(done, PROGRESS_TOTAL): done grows monotonically to PROGRESS_TOTAL


# --------------------------------------------------------------------------------------------- coordinates

def lattice_axis(resolution: int, box_size: float = 1.0) -> np.ndarray:
    """The official lattice coordinates along one axis: -box/2 + i * box/(N-1), i = 0..N-1 (float32)."""
    n = int(resolution)
    return (np.arange(n, dtype=np.float64) * (box_size / (n - 1)) - box_size / 2).astype(np.float32)


def voxels_to_world(points: np.ndarray, resolution: int, box_size: float = 1.0) -> np.ndarray:
    """Lattice index coordinates (fractional) -> EG3D world coordinates (float64)."""
    return np.asarray(points, np.float64) * (box_size / (resolution - 1)) - box_size / 2


def world_to_voxels(points: np.ndarray, resolution: int, box_size: float = 1.0) -> np.ndarray:
    return (np.asarray(points, np.float64) + box_size / 2) * ((resolution - 1) / box_size)


def _placement(box_warp: float, orth_scale: float, orth_shift: Sequence[float]) -> Placement:
    return Placement(float(orth_scale), tuple(float(x) for x in orth_shift), float(box_warp))


def world_to_flame(points, box_warp: float = 1.0, orth_scale: float = DEFAULT_ORTH_SCALE,
                   orth_shift: Sequence[float] = DEFAULT_ORTH_SHIFT) -> np.ndarray:
    """EG3D world -> FLAME units: the inverse of the front-view placement (core.flame.conversions.Placement,
    docs/flame.md). With the official settings, flame = world / 2.5 - (0, 0.01, 0). The front view fixes x and y;
    z has no exact counterpart (the side and top planes are crossed, docs/official_quirks.md#crossed-planes), so it
    uses the same scale with no shift."""
    return _placement(box_warp, orth_scale, orth_shift).to_flame(np.asarray(points, np.float64))


def flame_to_world(points, box_warp: float = 1.0, orth_scale: float = DEFAULT_ORTH_SCALE,
                   orth_shift: Sequence[float] = DEFAULT_ORTH_SHIFT) -> np.ndarray:
    """FLAME units -> EG3D world: 2.5 (x, y + 0.01, z) with the official settings (see `world_to_flame`)."""
    return _placement(box_warp, orth_scale, orth_shift).to_world(np.asarray(points, np.float64))


def _conversion(generator) -> dict:
    """The placement of `generator` (None: the official settings) as the keyword arguments of world_to_flame."""
    place = Placement.of(generator)
    return dict(box_warp=place.box_warp, orth_scale=place.orth_scale, orth_shift=place.orth_shift)


def official_padding(resolution: int) -> int:
    """The border trim of gen_samples: int(30 N / 256) voxels on every face (60 at 512)."""
    return int(30 * resolution / 256)


def _pad_value(level: float) -> float:
    return min(OFFICIAL_PAD_VALUE, level - 1000.0)


# ------------------------------------------------------------------------------------------------ fields

class _Progress:
    """Maps work fractions of the phases onto one monotone counter 0..PROGRESS_TOTAL."""

    def __init__(self, fn: Optional[ProgressFn]):
        self.fn = fn
        self.last = -1

    def report(self, fraction: float) -> None:
        if self.fn is None:
            return
        done = int(round(min(max(fraction, 0.0), 1.0) * PROGRESS_TOTAL))
        if done > self.last:
            self.last = done
            self.fn(done, PROGRESS_TOTAL)


class _LatticeField:
    """Density at lattice points given by index arrays (int64, all the same length) -> float32 numpy."""

    evaluated = 0

    def evaluate(self, ii: np.ndarray, jj: np.ndarray, kk: np.ndarray,
                 on_chunk: Optional[Callable[[int], None]] = None) -> np.ndarray:
        n = len(ii)
        out = np.empty(n, np.float32)
        for s in range(0, n, self.chunk):
            e = min(n, s + self.chunk)
            out[s:e] = self._evaluate(ii[s:e], jj[s:e], kk[s:e])
            if on_chunk is not None:
                on_chunk(e - s)
        self.evaluated += n
        return out

    def _evaluate(self, ii, jj, kk) -> np.ndarray:
        raise NotImplementedError


class _CallableField(_LatticeField):
    """A user density function of world points [M, 3] (torch float32) -> [M]."""

    def __init__(self, density_fn: DensityFn, axis: np.ndarray, chunk: int):
        self.fn = density_fn
        self.axis = axis
        self.chunk = chunk

    def _evaluate(self, ii, jj, kk):
        pts = torch.from_numpy(np.stack([self.axis[ii], self.axis[jj], self.axis[kk]], 1))
        return _as_density(self.fn(pts), len(ii))


def _as_density(values, n: int) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().to("cpu", torch.float32).numpy()
    values = np.asarray(values, dtype=np.float32).reshape(-1)
    if values.shape[0] != n:
        raise InputError(f"The density function returned {values.shape[0]} values for {n} points; it must return "
                         "one density per point ([M] or [M, 1]).")
    return values


class _DecodePointsField(_LatticeField):
    """The generic path: `generator.decode_points` at the lattice points (the official G.sample on cached planes)."""

    def __init__(self, generator, planes: torch.Tensor, axis: np.ndarray, chunk: int):
        self.generator = generator
        self.planes = planes
        self.axis = axis
        self.chunk = chunk

    def _evaluate(self, ii, jj, kk):
        pts = torch.from_numpy(np.stack([self.axis[ii], self.axis[jj], self.axis[kk]], 1))
        _, sigma = self.generator.decode_points(self.planes, pts[None].to(self.planes.device, self.planes.dtype))
        return sigma[0, :, 0].float().cpu().numpy()


def _separable_axes(plane_axes: torch.Tensor) -> Optional[List[Tuple[int, int]]]:
    """For each plane, the world axes its two grid coordinates read, when each reads exactly one; else None."""
    inv = torch.linalg.inv(plane_axes.detach().double().cpu())
    result = []
    for p in range(inv.shape[0]):
        picked = []
        for a in range(2):
            nz = torch.nonzero(inv[p, :, a].abs() > 1e-12).flatten().tolist()
            if len(nz) != 1:
                return None
            picked.append(nz[0])
        if picked[0] == picked[1]:
            return None
        result.append((picked[0], picked[1]))
    return result


def _decoder_parts(decoder: nn.Module):
    """(layer1, activation, density weight [H], density bias) when the decoder is the OSGDecoder structure."""
    from ..networks.next3d import OSGDecoder
    from ..networks.stylegan2 import FullyConnectedLayer
    if type(decoder) is not OSGDecoder:
        return None
    net = decoder.net
    if (len(net) != 3 or not isinstance(net[0], FullyConnectedLayer) or not isinstance(net[2], FullyConnectedLayer)
            or net[0].activation != "linear" or net[2].activation != "linear" or net[0].bias is None
            or net[2].bias is None or not isinstance(net[1], nn.Softplus)):
        return None
    last = net[2]
    w = (last.weight[0].float() * last.weight_gain).contiguous()
    b = float(last.bias[0].float() * last.bias_gain)
    return net[0], net[1], w, b


class _TriplaneField(_LatticeField):
    """Exact separable decoding of lattice points (see the module docstring), over the index range [lo, hi]."""

    def __init__(self, generator, planes: torch.Tensor, axis: np.ndarray, chunk: int, lo: int, hi: int,
                 axes: List[Tuple[int, int]], parts):
        from ..rendering.volume import sample_from_planes
        self.chunk = min(chunk, 1 << 16)     # [chunk, 64] working arrays stay cache-friendly
        self.lo = lo
        self.length = hi - lo + 1
        layer1, self.act, self.w2, self.b2 = parts
        n = self.length
        coords = torch.from_numpy(axis[lo:hi + 1]).to(planes.device, planes.dtype)
        box = float(generator.config.rendering.box_warp)
        self.tables = []
        self.order = []
        for p, (da, db) in enumerate(axes):
            first, second = min(da, db), max(da, db)
            a, b = torch.meshgrid(coords, coords, indexing="ij")   # a along `first`, b along `second`
            pts = torch.zeros(n * n, 3, dtype=planes.dtype, device=planes.device)
            pts[:, first] = a.reshape(-1)
            pts[:, second] = b.reshape(-1)
            rows = []
            for s in range(0, n * n, 1 << 16):
                feats = sample_from_planes(generator.plane_axes[p:p + 1], planes[:, p:p + 1],
                                           pts[None, s:s + (1 << 16)], box)[0, 0]
                rows.append(layer1(feats.float()) / 3)
            self.tables.append(torch.cat(rows).contiguous())        # [n*n, hidden], row = i_first * n + i_second
            self.order.append((first, second))
        self.w2 = self.w2.to(planes.device)

    def _evaluate(self, ii, jj, kk):
        idx = (ii - self.lo, jj - self.lo, kk - self.lo)     # index arithmetic in numpy: cheaper for small arrays
        n = self.length
        h = None
        for table, (first, second) in zip(self.tables, self.order):
            rows = torch.from_numpy(idx[first] * n + idx[second]).to(table.device)
            part = table.index_select(0, rows)
            h = part if h is None else h.add_(part)
        return (self.act(h) @ self.w2 + self.b2).cpu().numpy()

    def layer(self, i: int, rows: int = 64) -> np.ndarray:
        """The density of the whole lattice layer x = i (an index inside [lo, hi]) as [L, L] (y, z), by broadcasting
        the tables instead of gathering them."""
        n = self.length
        out = np.empty((n, n), np.float32)
        x = i - self.lo
        for r0 in range(0, n, rows):
            r1 = min(n, r0 + rows)
            h = None
            for table, (first, second) in zip(self.tables, self.order):
                t = table.view(n, n, -1)
                if (first, second) == (0, 1):
                    part = t[x, r0:r1][:, None, :]
                elif (first, second) == (0, 2):
                    part = t[x][None, :, :]
                else:
                    part = t[r0:r1]
                h = part if h is None else h + part
            h = h.expand(r1 - r0, n, -1)
            out[r0:r1] = (self.act(h) @ self.w2 + self.b2).cpu().numpy()
        self.evaluated += n * n
        return out


def head_region(near, margin: float = DEFAULT_MARGIN, conversion: Optional[dict] = None
                ) -> Tuple[np.ndarray, np.ndarray]:
    """The region kept around the head, in EG3D world coordinates: the convex hull of the points `near` [M, 3]
    (FLAME units: the head's vertices and landmarks of the frame) with its faces moved out by `margin` (FLAME units),
    as half-spaces (unit normals [F, 3], offsets [F]): p is inside when normals @ p <= offsets. `conversion` is the
    placement (keyword arguments of world_to_flame; None: the official one)."""
    from scipy.spatial import ConvexHull, QhullError

    pts = np.asarray(near, np.float64) if near is not None else np.zeros((0, 3))
    if pts.ndim != 2 or pts.shape[1] != 3 or len(pts) < 4 or not np.isfinite(pts).all():
        raise InputError(f"near must be the head's points as a finite [M, 3] array (M >= 4, FLAME units), got shape "
                         f"{list(pts.shape)}; pass the frame's mesh vertices (or None to keep the whole box).")
    if not (isinstance(margin, (int, float, np.floating, np.integer)) and math.isfinite(float(margin))
            and 0 <= float(margin) < 1e3):
        raise InputError(f"margin = {margin!r} must be a non-negative distance in FLAME units (metres), e.g. "
                         f"{DEFAULT_MARGIN}.")
    place = _placement(**(conversion if conversion is not None else _conversion(None)))
    world = place.to_world(pts)
    try:
        hull = ConvexHull(world)
    except QhullError:
        raise InputError("The head's points are flat (they span no volume), so they bound no region; pass the "
                         "frame's mesh vertices (or None to keep the whole box).") from None
    normals = hull.equations[:, :3]            # unit outward normals: normals @ p + d <= 0 inside
    return normals, -hull.equations[:, 3] + float(margin) * place.scale


def _z_intervals(axis: np.ndarray, normals: np.ndarray, offsets: np.ndarray, first: int, last: int
                 ) -> Tuple[np.ndarray, np.ndarray]:
    """For each lattice line (x_i, y_j) along z, i and j in [first, last] (the lines outside are dropped), the
    interval [lo, hi] of z inside the half-spaces normals @ p <= offsets ([N, N] each; lo > hi when the line misses
    the region). Face k bounds z from above when its normal has nz > 0 (z <= (offset - nx x - ny y) / nz), from
    below when nz < 0; a face with nz = 0 keeps or drops the whole line."""
    n = len(axis)
    t_axis = torch.from_numpy(axis[first:last + 1])
    lo = torch.full((n, n), math.inf, dtype=torch.float64)
    hi = torch.full((n, n), -math.inf, dtype=torch.float64)
    lo[first:last + 1, first:last + 1] = -math.inf
    hi[first:last + 1, first:last + 1] = math.inf
    nz = normals[:, 2]
    for faces, upper in ((nz > 1e-12, True), (nz < -1e-12, False)):
        if not faces.any():
            continue
        f = torch.from_numpy(normals[faces])
        o = torch.from_numpy(offsets[faces])
        a = (o[None, :] - f[None, :, 0] * t_axis[:, None]) / f[None, :, 2]     # [x, F]
        b = f[:, 1] / f[:, 2]
        for i in range(len(t_axis)):            # the bound of every face on the lines (x_i, y_j): [y, F]
            z = a[i][None, :] - t_axis[:, None] * b[None, :]
            if upper:
                hi[first + i, first:last + 1] = z.amin(1)
            else:
                lo[first + i, first:last + 1] = z.amax(1)
    for k in np.flatnonzero(np.abs(nz) <= 1e-12):            # rare: faces parallel to z
        miss = normals[k, 0] * axis[:, None] + normals[k, 1] * axis[None, :] > offsets[k]
        lo[torch.from_numpy(miss)] = math.inf
    return lo.numpy(), hi.numpy()


class _RegionField(_LatticeField):
    """Another field inside a convex region; outside it a value below the level, without decoding (so the surface
    closes where it meets the region, as it does at the border trim). A lattice line along z crosses a convex region
    in one interval, so the region is tabulated once as [lo, hi] of z per (x, y) lattice line."""

    def __init__(self, inner: _LatticeField, axis: np.ndarray, normals: np.ndarray, offsets: np.ndarray,
                 outside: float, first: int, last: int):
        self.inner = inner
        self.axis = axis
        self.chunk = inner.chunk
        self.outside = np.float32(outside)
        self.lo, self.hi = _z_intervals(axis.astype(np.float64), normals, offsets, first, last)

    @property
    def evaluated(self) -> int:
        return self.inner.evaluated

    def inside(self, ii: np.ndarray, jj: np.ndarray, kk: np.ndarray) -> np.ndarray:
        z = self.axis[kk]
        return (z >= self.lo[ii, jj]) & (z <= self.hi[ii, jj])

    def evaluate(self, ii, jj, kk, on_chunk=None) -> np.ndarray:
        keep = self.inside(ii, jj, kk)
        out = np.full(len(ii), self.outside, np.float32)
        if on_chunk is not None and len(ii) > int(keep.sum()):
            on_chunk(len(ii) - int(keep.sum()))
        if keep.any():
            out[keep] = self.inner.evaluate(ii[keep], jj[keep], kk[keep], on_chunk)
        return out


def _check_planes(generator, planes) -> torch.Tensor:
    from ..networks.next3d import PLANE_FEATURES, Next3DGenerator
    if not isinstance(generator, Next3DGenerator):
        raise InputError(f"generator must be a Next3DGenerator, got {type(generator).__name__}.")
    if not isinstance(planes, torch.Tensor) or planes.ndim != 5 or planes.shape[1:3] != (3, PLANE_FEATURES):
        got = list(planes.shape) if isinstance(planes, torch.Tensor) else type(planes).__name__
        raise InputError(f"planes must be the [1, 3, {PLANE_FEATURES}, P, P] tensor of one frame from "
                         f"generator.build_planes(identity, v); got {got}.")
    if planes.shape[0] != 1:
        raise InputError(f"planes holds {planes.shape[0]} frames; extract one mesh at a time (planes[i:i+1]).")
    if not planes.is_floating_point() or not bool(torch.isfinite(planes).all()):
        raise InputError("planes contains NaN or infinite values (or is not a float tensor); rebuild it with "
                         "generator.build_planes.")
    return planes


def _make_field(generator, planes, density_fn, axis, chunk, lo, hi, fast: bool = True) -> _LatticeField:
    if density_fn is not None:
        return _CallableField(density_fn, axis, chunk)
    if fast:
        axes = _separable_axes(generator.plane_axes)
        parts = _decoder_parts(generator.decoder)
        if axes is not None and parts is not None:
            return _TriplaneField(generator, planes, axis, chunk, lo, hi, axes, parts)
    return _DecodePointsField(generator, planes, axis, chunk)


def _check_common(resolution, level, coarse_resolution, chunk, padding_voxels):
    if not isinstance(resolution, (int, np.integer)) or resolution < 8:
        raise InputError(f"resolution = {resolution!r} must be an integer >= 8 (lattice points per axis; the "
                         "official value is 512).")
    if coarse_resolution is not None and (not isinstance(coarse_resolution, (int, np.integer))
                                          or coarse_resolution < 2):
        raise InputError(f"coarse_resolution = {coarse_resolution!r} must be an integer >= 2, or None for a coarse "
                         f"node every {DEFAULT_COARSE_STEP} lattice points.")
    if not isinstance(chunk, (int, np.integer)) or chunk < 1:
        raise InputError(f"chunk = {chunk!r} must be a positive integer (points per decoder call).")
    if not isinstance(level, (int, float, np.floating, np.integer)) or not math.isfinite(float(level)):
        raise InputError(f"level = {level!r} must be a finite number (raw density; the official value is 10).")
    pad = official_padding(resolution) if padding_voxels is None else padding_voxels
    if not isinstance(pad, (int, np.integer)) or pad < 0 or resolution - 1 - 2 * pad < 1:
        raise InputError(f"padding_voxels = {padding_voxels!r} must be an integer from 0 to "
                         f"{(resolution - 2) // 2} for resolution {resolution}.")
    return int(pad)


# ---------------------------------------------------------------------------------------- coarse to fine

def _cell_lookup(nodes: np.ndarray, idx: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """For fine indices: the cell that has the index in [node[c], node[c+1]) (the last cell also takes its upper
    node), and the other cell sharing the index when it sits on an inner node (else the same cell)."""
    ncell = len(nodes) - 1
    lower = np.clip(np.searchsorted(nodes, idx, side="right") - 1, 0, ncell - 1)
    other = np.where((idx == nodes[lower]) & (lower > 0), lower - 1, lower)
    return lower, other


def coarse_step(resolution: int, coarse_resolution: Optional[int]) -> int:
    """Lattice points between coarse nodes: (N-1)/(coarse_resolution-1) rounded, or 4 for None."""
    if coarse_resolution is None:
        return DEFAULT_COARSE_STEP
    return max(1, int(round((resolution - 1) / (coarse_resolution - 1))))


def _coarse_to_fine(field: _LatticeField, resolution: int, level: float, coarse_resolution: Optional[int], pad: int,
                    dilation: int, progress: _Progress):
    """-> (vertices in lattice index units [V, 3] float64, faces [F, 3] int64)."""
    from scipy import ndimage
    from skimage import measure
    n = resolution
    pad_value = np.float32(_pad_value(level))
    first, last = pad, n - 1 - pad                       # the evaluated interior, inclusive
    step = coarse_step(n, coarse_resolution)
    interior = np.append(np.arange(first, last, step, dtype=np.int64), last)
    if pad > 0:     # an outer node layer in the trimmed border, fixed at the pad value
        nodes = np.concatenate([[first - 1], interior, [last + 1]]).astype(np.int64)
    else:
        nodes = interior
    n_nodes = len(nodes)
    n_cells = n_nodes - 1
    base = int(nodes[0])                                 # the fine volume covers nodes[0] .. nodes[-1]
    size = int(nodes[-1]) - base + 1

    # 1. coarse lattice
    coarse = np.full((n_nodes,) * 3, pad_value, np.float32)
    sel = np.arange(1, n_nodes - 1) if pad > 0 else np.arange(n_nodes)
    gi, gj, gk = np.meshgrid(nodes[sel], nodes[sel], nodes[sel], indexing="ij")
    n_coarse = gi.size
    done_points = [0]

    def coarse_tick(m):
        done_points[0] += m
        progress.report(0.1 * done_points[0] / n_coarse)
    values = field.evaluate(gi.ravel(), gj.ravel(), gk.ravel(), coarse_tick)
    del gi, gj, gk
    coarse[np.ix_(sel, sel, sel)] = values.reshape((len(sel),) * 3)

    # 2. cells whose corners straddle the level (optionally dilated) start the search
    corners = [coarse[a:n_cells + a, b:n_cells + b, c:n_cells + c] for a in (0, 1) for b in (0, 1) for c in (0, 1)]
    straddle = (np.minimum.reduce(corners) <= level) & (np.maximum.reduce(corners) >= level)
    cell_inside = corners[0] > level        # the side of a cell that does not straddle (all corners agree)
    del corners
    if not straddle.any():
        raise InputError(f"There is no surface at level {level:g}: the density inside the box ranges from "
                         f"{float(values.min()):.3g} to {float(values.max()):.3g}. Choose a level inside that range "
                         "(the official level 10 suits trained models; random weights need a lower one).")
    frontier = straddle
    if dilation > 0:
        frontier = ndimage.binary_dilation(straddle, structure=np.ones((3, 3, 3), bool), iterations=dilation)
    done = np.zeros_like(straddle)

    # 3. the fine volume: every point takes the value of the lower coarse node of its cell until evaluated
    fine_idx = np.arange(base, base + size, dtype=np.int64)
    lower, other = _cell_lookup(nodes, fine_idx)
    reps = np.bincount(lower, minlength=n_nodes)        # lower is non-decreasing: repeat instead of gathering
    volume = np.repeat(np.repeat(np.repeat(coarse, reps, 0), reps, 1), reps, 2)
    free = (fine_idx >= first) & (fine_idx <= last)      # not in the trimmed border
    if pad > 0:
        volume[[0, -1]] = pad_value
        volume[:, [0, -1]] = pad_value
        volume[:, :, [0, -1]] = pad_value
    evaluated = np.zeros(volume.shape, bool)
    cell_lo = nodes[:-1] - base
    cell_len = np.diff(nodes) + 1                        # closed extent in points
    offsets = np.arange(int(cell_len.max()))
    estimate = 1.6 * float(straddle.sum()) * step ** 3 if dilation == 0 else \
        float(frontier.sum()) * step ** 3
    fine_points = [0]

    def fine_tick(m):
        fine_points[0] += m
        progress.report(0.1 + 0.8 * min(1.0, fine_points[0] / max(estimate, 1.0)))

    # 4. follow the surface: evaluate the frontier cells (closed: their faces too); any evaluated point on the other
    # side of the level from a not-yet-evaluated cell it belongs to adds that cell to the next frontier
    batch = max(1, (1 << 22) // len(offsets) ** 3)      # cells per batch: about 4M candidate points
    while frontier.any():
        cells_all = np.argwhere(frontier)
        done |= frontier
        nxt = np.zeros_like(done)
        for b0 in range(0, len(cells_all), batch):
            cells = cells_all[b0:b0 + batch]
            flat = []
            for axis in range(3):
                lo = cell_lo[cells[:, axis]][:, None] + offsets[None, :]
                ok = offsets[None, :] < cell_len[cells[:, axis]][:, None]
                flat.append(np.where(ok, lo, lo[:, :1]))        # short cells repeat their first index
            # every point of these cells once, in lattice (C) order, minus those already known
            points = np.unique(((flat[0][:, :, None, None] * size + flat[1][:, None, :, None]) * size
                                + flat[2][:, None, None, :]).reshape(-1))
            del flat
            pi, pj, pk = np.unravel_index(points, volume.shape)
            keep = ~evaluated[pi, pj, pk] & free[pi] & free[pj] & free[pk]
            pi, pj, pk = pi[keep], pj[keep], pk[keep]
            del points, keep
            if len(pi) == 0:
                continue
            vals = field.evaluate(pi + base, pj + base, pk + base, fine_tick)
            volume[pi, pj, pk] = vals
            evaluated[pi, pj, pk] = True
            side = vals > level
            for cx in (lower[pi], other[pi]):
                for cy in (lower[pj], other[pj]):
                    for cz in (lower[pk], other[pk]):
                        flip = ~done[cx, cy, cz] & (cell_inside[cx, cy, cz] != side)
                        nxt[cx[flip], cy[flip], cz[flip]] = True
            del pi, pj, pk, vals, side
        frontier = nxt & ~done
    progress.report(0.92)

    # 5. marching cubes, restricted to cubes whose lower corner was evaluated (or lies in the trimmed border): every
    # cube with a crossing belongs to an evaluated cell
    mask = evaluated
    if pad > 0:
        mask[[0, -1]] = True
        mask[:, [0, -1]] = True
        mask[:, :, [0, -1]] = True
    if not (volume.min() < level < volume.max()):
        raise InputError(f"There is no surface at level {level:g} in the lattice; choose another level.")
    # "ascent": the density grows inwards; this gives counter-clockwise faces seen from outside.
    verts, faces, _, _ = measure.marching_cubes(volume, level=level, gradient_direction="ascent", mask=mask)
    return verts.astype(np.float64) + base, faces.astype(np.int64)


def _mesh_from_voxels(vertices_idx: np.ndarray, faces: np.ndarray, resolution: int, level: float, units: str,
                      conversion: dict, colors: Optional[np.ndarray] = None, evaluated: int = 0) -> ExtractedMesh:
    world = voxels_to_world(vertices_idx, resolution, conversion["box_warp"])
    if units == "flame":
        out = world_to_flame(world, **conversion)
    else:
        out = world
    return ExtractedMesh(vertices=np.ascontiguousarray(out, np.float32),
                         faces=np.ascontiguousarray(faces, np.int64), colors=colors, level=float(level),
                         resolution=int(resolution), units=units, evaluated_points=int(evaluated))


def _check_units(units: str) -> str:
    if units not in ("flame", "world"):
        raise InputError(f"units = {units!r} must be 'flame' (the head's frame, lined up with the rig) or 'world' "
                         "(EG3D world units).")
    return units


def features_to_colors(rgb: torch.Tensor) -> np.ndarray:
    """Decoder features [M, >=3] (sigmoid range, about [0, 1]) -> uint8 [M, 3], mapped like the raw image:
    (2 rgb - 1) * 127.5 + 128, clamped."""
    x = (rgb[:, :3].float() * 2 - 1) * 127.5 + 128
    return x.clamp(0, 255).to(torch.uint8).cpu().numpy()


def _vertex_colors(generator, planes, color_fn, world: np.ndarray, chunk: int) -> Optional[np.ndarray]:
    pts = torch.from_numpy(np.ascontiguousarray(world, np.float32))
    out = []
    for s in range(0, len(pts), chunk):
        p = pts[s:s + chunk]
        if color_fn is not None:
            rgb = color_fn(p)
            rgb = rgb if isinstance(rgb, torch.Tensor) else torch.as_tensor(np.asarray(rgb))
            rgb = rgb.reshape(len(p), -1)
        else:
            feats, _ = generator.decode_points(planes, p[None].to(planes.device, planes.dtype))
            rgb = feats[0]
        out.append(features_to_colors(rgb))
    return np.concatenate(out) if out else np.zeros((0, 3), np.uint8)


# -------------------------------------------------------------------------------------------------- API

def extract_mesh(generator=None, planes: Optional[torch.Tensor] = None, *, resolution: int = 256,
                 level: float = OFFICIAL_LEVEL, coarse_resolution: Optional[int] = None, chunk: int = 2 ** 18,
                 with_colors: bool = True, padding_voxels: Optional[int] = None,
                 progress: Optional[ProgressFn] = None, density_fn: Optional[DensityFn] = None,
                 color_fn: Optional[Callable[[torch.Tensor], torch.Tensor]] = None, box_size: Optional[float] = None,
                 units: str = "flame", dilation: int = 0, near: Optional[np.ndarray] = None,
                 margin: float = DEFAULT_MARGIN) -> ExtractedMesh:
    """The level set of the raw density of one frame's tri-planes, coarse to fine (see the module docstring).

    generator, planes: a Next3DGenerator and the [1, 3, 32, P, P] planes of one frame (`build_planes`), built once.
    Or, instead of them, `density_fn(points [M, 3] world, float32) -> [M]` (e.g. an analytic field) over the box
    [-box_size/2, box_size/2]^3 (box_size defaults to 1, the official box_warp), with optional `color_fn(points) ->
    [M, 3]` in [0, 1].

    resolution: lattice points per axis (the official 512 lattice, voxel size box/(N-1)). level: raw density iso-level
    (official 10). coarse_resolution: about how many coarse nodes per axis over the whole box; None (default) puts a
    node every 4 lattice points (64 at resolution 256, 128 at 512). dilation: coarse cells added around the
    straddling ones before the surface following (0 by default: the following already traces every component that
    reaches a straddling cell; 1 also catches specks near the surface, at about twice the cost). chunk: points per
    decoder call (bounds memory). padding_voxels: border trim (default the official int(30 N / 256); 0 disables it,
    leaving the surface open where it meets the box). progress(done, total): called as the work advances with a
    fixed total; an exception raised by it aborts the extraction. units: "flame" (default: the head's frame, lined
    up with the rig) or "world" (EG3D world). with_colors: decode a rough vertex colour (see ExtractedMesh).
    near: the head's points of this frame [M, 3] in FLAME units (vertices, landmarks): only the density within
    `margin` (FLAME units) of their bounding polytope is kept (`head_region`), which drops the background the
    model puts beside and behind the head (docs/mesh_extraction.md#head-region); None keeps the whole box.

    Raises InputError when the level gives no surface (the message says the density range)."""
    pad = _check_common(resolution, level, coarse_resolution, chunk, padding_voxels)
    units = _check_units(units)
    level = float(level)
    if not isinstance(dilation, (int, np.integer)) or dilation < 0:
        raise InputError(f"dilation = {dilation!r} must be a non-negative integer (coarse cells).")
    if (generator is None) == (density_fn is None):
        raise InputError("Give either a generator with its planes or a density_fn, not both and not neither.")
    if density_fn is not None:
        conversion = _conversion(None)
        if box_size is not None:
            if not (isinstance(box_size, (int, float)) and box_size > 0 and math.isfinite(box_size)):
                raise InputError(f"box_size = {box_size!r} must be a positive number (world units).")
            conversion["box_warp"] = float(box_size)
    else:
        planes = _check_planes(generator, planes)
        conversion = _conversion(generator)
        if box_size is not None and float(box_size) != conversion["box_warp"]:
            raise InputError("box_size is fixed by the generator (config.rendering.box_warp); leave it out.")
    axis = lattice_axis(resolution, conversion["box_warp"])
    tracker = _Progress(progress)
    tracker.report(0.0)
    with torch.inference_mode():
        field = _make_field(generator, planes, density_fn, axis, int(chunk), pad, resolution - 1 - pad)
        if near is not None:
            field = _RegionField(field, axis, *head_region(near, margin, conversion), _pad_value(level), pad,
                                 resolution - 1 - pad)
        vertices_idx, faces = _coarse_to_fine(field, resolution, level, coarse_resolution, pad, int(dilation),
                                              tracker)
        colors = None
        if with_colors and (generator is not None or color_fn is not None):
            world = voxels_to_world(vertices_idx, resolution, conversion["box_warp"])
            colors = _vertex_colors(generator, planes, color_fn, world, int(chunk))
    mesh = _mesh_from_voxels(vertices_idx, faces, resolution, level, units, conversion, colors, field.evaluated)
    tracker.report(1.0)
    return mesh


def dense_sigma(generator=None, planes: Optional[torch.Tensor] = None, resolution: int = 256,
                chunk: int = OFFICIAL_CHUNK, *, fast: bool = False, density_fn: Optional[DensityFn] = None,
                box_size: float = 1.0, progress: Optional[ProgressFn] = None) -> np.ndarray:
    """The official-style dense evaluation: raw density on the whole N^3 lattice, [N, N, N] float32 indexed
    [x, y, z] (no flip; the official code flips x before saving).

    fast=False decodes points with `generator.decode_points` in chunks (the official G.sample on cached planes);
    fast=True uses the exact separable lattice decoder of `extract_mesh` (same values up to float rounding)."""
    _check_common(resolution, 0.0, 2, chunk, 0)
    if (generator is None) == (density_fn is None):
        raise InputError("Give either a generator with its planes or a density_fn, not both and not neither.")
    if density_fn is None:
        planes = _check_planes(generator, planes)
        box_size = float(generator.config.rendering.box_warp)
    n = int(resolution)
    axis = lattice_axis(n, box_size)
    tracker = _Progress(progress)
    out = np.empty((n, n, n), np.float32)
    with torch.inference_mode():
        field = _make_field(generator, planes, density_fn, axis, int(chunk), 0, n - 1, fast=fast)
        if isinstance(field, _TriplaneField):
            for i in range(n):
                out[i] = field.layer(i)
                tracker.report((i + 1) / n)
            return out
        flat = out.reshape(-1)
        total = n ** 3
        for s in range(0, total, int(chunk)):
            idx = np.arange(s, min(total, s + int(chunk)), dtype=np.int64)
            flat[s:s + len(idx)] = field.evaluate(idx // (n * n), (idx // n) % n, idx % n)
            tracker.report((s + len(idx)) / total)
    return out


def mesh_from_grid(sigma: np.ndarray, *, level: float = OFFICIAL_LEVEL, padding_voxels: Optional[int] = None,
                   box_size: float = 1.0, units: str = "flame", conversion: Optional[dict] = None) -> ExtractedMesh:
    """Marching cubes of a dense [N, N, N] lattice indexed [x, y, z] (e.g. from `dense_sigma`), with the official
    border trim, in the same coordinates as `extract_mesh` (no colours). `conversion` overrides the FLAME placement
    (keys box_warp, orth_scale, orth_shift); box_size is the box_warp otherwise."""
    from skimage import measure
    sigma = np.asarray(sigma)
    if sigma.ndim != 3 or len(set(sigma.shape)) != 1:
        raise InputError(f"sigma must be a cubic [N, N, N] lattice, got shape {list(sigma.shape)}.")
    n = sigma.shape[0]
    pad = _check_common(n, level, 2, 1, padding_voxels)
    units = _check_units(units)
    conv = dict(_conversion(None), box_warp=float(box_size)) if conversion is None else dict(conversion)
    volume = np.array(sigma, np.float32, copy=True)
    if pad > 0:
        value = _pad_value(float(level))
        volume[:pad] = value
        volume[-pad:] = value
        volume[:, :pad] = value
        volume[:, -pad:] = value
        volume[:, :, :pad] = value
        volume[:, :, -pad:] = value
    if not (volume.min() < level < volume.max()):
        raise InputError(f"There is no surface at level {level:g}: the density ranges from {float(volume.min()):.3g} "
                         f"to {float(volume.max()):.3g}.")
    verts, faces, _, _ = measure.marching_cubes(volume, level=float(level), gradient_direction="ascent")
    return _mesh_from_voxels(verts.astype(np.float64), faces.astype(np.int64), n, level, units, conv,
                             evaluated=n ** 3)


def _inner_sigma(generator, planes, resolution: int, padding_voxels: Optional[int], density_fn, box_size: float
                 ) -> np.ndarray:
    """The raw density on a coarse lattice over the box, inside the border trim (official by default)."""
    grid = dense_sigma(generator, planes, resolution, 2 ** 16, fast=True, density_fn=density_fn, box_size=box_size)
    pad = official_padding(resolution) if padding_voxels is None else int(padding_voxels)
    return grid[pad:resolution - pad, pad:resolution - pad, pad:resolution - pad]


def _check_quantile(quantile: float) -> float:
    if not (0.0 < float(quantile) < 1.0):
        raise InputError(f"quantile = {quantile!r} must be between 0 and 1.")
    return float(quantile)


def sigma_quantile(generator=None, planes: Optional[torch.Tensor] = None, quantile: float = 0.9, *,
                   resolution: int = 64, padding_voxels: Optional[int] = None,
                   density_fn: Optional[DensityFn] = None, box_size: float = 1.0) -> float:
    """A quantile of the raw density over the trimmed box on a coarse lattice: a usable level for models whose
    density is not on the trained scale (random weights), where the official level 10 gives no surface."""
    quantile = _check_quantile(quantile)
    return float(np.quantile(_inner_sigma(generator, planes, resolution, padding_voxels, density_fn, box_size),
                             quantile))


def surface_level(generator=None, planes: Optional[torch.Tensor] = None, quantile: float = 0.9, *,
                  resolution: int = 64, density_fn: Optional[DensityFn] = None, box_size: float = 1.0) -> float:
    """The iso-level to use when the user names none: the official 10 when the density inside the box reaches it
    (trained models, the bundled default included), else the `quantile` of the density (random weights, whose
    density is not on the trained scale)."""
    quantile = _check_quantile(quantile)
    inner = _inner_sigma(generator, planes, resolution, None, density_fn, box_size)
    if float(inner.max()) > OFFICIAL_LEVEL:
        return OFFICIAL_LEVEL
    return float(np.quantile(inner, quantile))
