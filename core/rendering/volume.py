"""EG3D's ray sampler, tri-plane sampling, stratified + importance sampling and the Mip ray marcher
(docs/architecture.md#rendering).

Randomness: the official renderer draws twice per call (stratified jitter, then the importance-sampling u), also at
inference. Both draws take an optional torch.Generator so a frame can be reproduced exactly, or can be given
explicitly (`RandomDraws`) to replay recorded numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Tuple

import torch
import torch.nn.functional as F

# Next3D's plane axes: plane 0 samples (x, y), plane 1 (x, z), plane 2 (z, y). EG3D's third plane samples (z, x);
# Next3D changed it, and the released weights were trained with these. The official pickle stores them as an
# attribute of the renderer, which the checkpoint loader reads and which overrides this default.
NEXT3D_PLANE_AXES = torch.tensor([[[1, 0, 0], [0, 1, 0], [0, 0, 1]],
                                  [[1, 0, 0], [0, 0, 1], [0, 1, 0]],
                                  [[0, 0, 1], [0, 1, 0], [1, 0, 0]]], dtype=torch.float32)


@dataclass(frozen=True)
class RenderingOptions:
    """Sampling settings along each ray (FFHQ-512 defaults, in EG3D world units)."""

    ray_start: float = 2.25            # near bound of the depth samples
    ray_end: float = 3.3               # far bound
    depth_resolution: int = 48         # stratified (coarse) samples per ray
    depth_resolution_importance: int = 48  # importance (fine) samples per ray
    box_warp: float = 1.0              # side of the cube [-box_warp/2, box_warp/2]^3 that the planes cover
    white_back: bool = False


@dataclass(frozen=True)
class RandomDraws:
    """The renderer's two uniform draws, for replaying a recorded frame: [B, R, S, 1] and [B*R, S_importance]."""

    stratified: torch.Tensor
    importance: torch.Tensor


def sample_rays(cam2world: torch.Tensor, intrinsics: torch.Tensor, resolution: int
                ) -> Tuple[torch.Tensor, torch.Tensor]:
    """One ray per pixel centre of a resolution^2 grid, OpenCV camera (x right, y down, z forward), normalized
    intrinsics. Returns origins and unit directions, [B, resolution^2, 3] in row-major pixel order."""
    n = cam2world.shape[0]
    device = cam2world.device
    cam_pos = cam2world[:, :3, 3]
    fx, fy = intrinsics[:, 0, 0, None], intrinsics[:, 1, 1, None]
    cx, cy = intrinsics[:, 0, 2, None], intrinsics[:, 1, 2, None]
    skew = intrinsics[:, 0, 1, None]
    centres = (torch.arange(resolution, dtype=torch.float32, device=device) * (1.0 / resolution)
               + (0.5 / resolution))
    v_img, u_img = torch.meshgrid(centres, centres, indexing="ij")  # rows, columns
    u_img = u_img.reshape(1, -1).expand(n, -1)
    v_img = v_img.reshape(1, -1).expand(n, -1)
    z = torch.ones_like(u_img)
    x_cam = (u_img - cx + cy * skew / fy - skew * v_img / fy) / fx * z
    y_cam = (v_img - cy) / fy * z
    points = torch.stack((x_cam, y_cam, z, torch.ones_like(z)), dim=-1)
    world = torch.bmm(cam2world, points.permute(0, 2, 1)).permute(0, 2, 1)[:, :, :3]
    directions = F.normalize(world - cam_pos[:, None, :], dim=2)
    origins = cam_pos.unsqueeze(1).repeat(1, directions.shape[1], 1)
    return origins, directions


def sample_from_planes(plane_axes: torch.Tensor, planes: torch.Tensor, coordinates: torch.Tensor,
                       box_warp: float) -> torch.Tensor:
    """Bilinear features of `coordinates` [B, M, 3] on planes [B, P, C, H, W] -> [B, P, M, C].

    A point's plane coordinates are (2/box_warp * p) @ inv(axes), first two components; zeros outside."""
    n, n_planes, c, h, w = planes.shape
    m = coordinates.shape[1]
    coords = (2 / box_warp) * coordinates
    inv_axes = torch.linalg.inv(plane_axes.to(coords.device, coords.dtype))
    coords = coords.unsqueeze(1).expand(-1, n_planes, -1, -1).reshape(n * n_planes, m, 3)
    inv_axes = inv_axes.unsqueeze(0).expand(n, -1, -1, -1).reshape(n * n_planes, 3, 3)
    projected = torch.bmm(coords, inv_axes)[..., :2].unsqueeze(1)
    out = F.grid_sample(planes.reshape(n * n_planes, c, h, w), projected.float(), mode="bilinear",
                        padding_mode="zeros", align_corners=False)
    return out.permute(0, 3, 2, 1).reshape(n, n_planes, m, c)


def ray_march(colors: torch.Tensor, densities: torch.Tensor, depths: torch.Tensor, white_back: bool = False
              ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """EG3D's MipRayMarcher2: midpoint values, density = softplus(sigma - 1), alpha compositing.

    Inputs [B, R, S, C]; returns rgb in [-1, 1] (unnormalized sum, *2-1), depth clamped to the sample range,
    and the per-interval weights [B, R, S-1, 1]."""
    deltas = depths[:, :, 1:] - depths[:, :, :-1]
    colors_mid = (colors[:, :, :-1] + colors[:, :, 1:]) / 2
    densities_mid = (densities[:, :, :-1] + densities[:, :, 1:]) / 2
    depths_mid = (depths[:, :, :-1] + depths[:, :, 1:]) / 2
    densities_mid = F.softplus(densities_mid - 1)  # the -1 bias makes the initial density small
    alpha = 1 - torch.exp(-densities_mid * deltas)
    alpha_shifted = torch.cat([torch.ones_like(alpha[:, :, :1]), 1 - alpha + 1e-10], -2)
    weights = alpha * torch.cumprod(alpha_shifted, -2)[:, :, :-1]
    rgb = torch.sum(weights * colors_mid, -2)
    weight_total = weights.sum(2)
    depth = torch.sum(weights * depths_mid, -2) / weight_total
    depth = torch.nan_to_num(depth, float("inf"))
    depth = torch.clamp(depth, torch.min(depths), torch.max(depths))  # over the whole batch, as EG3D does
    if white_back:
        rgb = rgb + 1 - weight_total
    return rgb * 2 - 1, depth, weights


def sample_stratified(n: int, rays: int, options: RenderingOptions, device: torch.device,
                      generator: Optional[torch.Generator] = None, u: Optional[torch.Tensor] = None
                      ) -> torch.Tensor:
    """Evenly spaced depths with uniform jitter of one step: [B, R, S, 1]."""
    s = options.depth_resolution
    depths = torch.linspace(options.ray_start, options.ray_end, s, device=device).reshape(1, 1, s, 1)
    depths = depths.repeat(n, rays, 1, 1)
    delta = (options.ray_end - options.ray_start) / (s - 1)
    if u is None:
        u = torch.rand(depths.shape, generator=generator, device=device)
    return depths + u * delta


def sample_pdf(bins: torch.Tensor, weights: torch.Tensor, n_samples: int, u: torch.Tensor,
               eps: float = 1e-5) -> torch.Tensor:
    """Inverse-transform sampling of `n_samples` depths per ray from the piecewise-constant pdf `weights` over
    `bins` (NeRF's sample_pdf, with EG3D's use of bins and weights of different lengths)."""
    n_rays, n_bins = weights.shape
    weights = weights + eps
    pdf = weights / torch.sum(weights, -1, keepdim=True)
    cdf = torch.cumsum(pdf, -1)
    cdf = torch.cat([torch.zeros_like(cdf[:, :1]), cdf], -1)
    u = u.contiguous()
    inds = torch.searchsorted(cdf, u, right=True)
    below = torch.clamp_min(inds - 1, 0)
    above = torch.clamp_max(inds, n_bins)
    inds_sampled = torch.stack([below, above], -1).view(n_rays, 2 * n_samples)
    cdf_g = torch.gather(cdf, 1, inds_sampled).view(n_rays, n_samples, 2)
    bins_g = torch.gather(bins, 1, inds_sampled).view(n_rays, n_samples, 2)
    denom = cdf_g[..., 1] - cdf_g[..., 0]
    denom = torch.where(denom < eps, torch.ones_like(denom), denom)
    return bins_g[..., 0] + (u - cdf_g[..., 0]) / denom * (bins_g[..., 1] - bins_g[..., 0])


def sample_importance(depths: torch.Tensor, weights: torch.Tensor, n_samples: int,
                      generator: Optional[torch.Generator] = None, u: Optional[torch.Tensor] = None
                      ) -> torch.Tensor:
    """Fine depths drawn where the coarse pass found weight: weights smoothed by max-pool then avg-pool, + 0.01."""
    with torch.no_grad():
        n, rays, s, _ = depths.shape
        z = depths.reshape(n * rays, s)
        w = weights.reshape(n * rays, -1)
        w = F.max_pool1d(w.unsqueeze(1).float(), 2, 1, padding=1)
        w = F.avg_pool1d(w, 2, 1).squeeze(1) + 0.01
        z_mid = 0.5 * (z[:, :-1] + z[:, 1:])
        if u is None:
            u = torch.rand(n * rays, n_samples, generator=generator, device=depths.device)
        fine = sample_pdf(z_mid, w[:, 1:-1], n_samples, u)
        return fine.detach().reshape(n, rays, n_samples, 1)


Decoder = Callable[[torch.Tensor], Tuple[torch.Tensor, torch.Tensor]]


def render_planes(planes: torch.Tensor, decoder: Decoder, plane_axes: torch.Tensor, origins: torch.Tensor,
                  directions: torch.Tensor, options: RenderingOptions, generator: Optional[torch.Generator] = None,
                  draws: Optional[RandomDraws] = None) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Volume-render tri-planes along rays: coarse pass, importance pass, composite of all sorted samples.

    `decoder(features [B, P, M, C]) -> (rgb [B, M, C'], sigma [B, M, 1])`. Returns features [B, R, C'],
    depth [B, R, 1] and the total weight per ray [B, R, 1]."""
    n, rays, _ = origins.shape

    def run(depths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        s = depths.shape[2]
        points = (origins.unsqueeze(-2) + depths * directions.unsqueeze(-2)).reshape(n, -1, 3)
        rgb, sigma = decoder(sample_from_planes(plane_axes, planes, points, options.box_warp))
        return rgb.reshape(n, rays, s, rgb.shape[-1]), sigma.reshape(n, rays, s, 1)

    depths_coarse = sample_stratified(n, rays, options, origins.device, generator,
                                      draws.stratified if draws is not None else None)
    colors_coarse, densities_coarse = run(depths_coarse)
    if options.depth_resolution_importance <= 0:
        rgb, depth, weights = ray_march(colors_coarse, densities_coarse, depths_coarse, options.white_back)
        return rgb, depth, weights.sum(2)
    _, _, weights = ray_march(colors_coarse, densities_coarse, depths_coarse, options.white_back)
    depths_fine = sample_importance(depths_coarse, weights, options.depth_resolution_importance, generator,
                                    draws.importance if draws is not None else None)
    colors_fine, densities_fine = run(depths_fine)
    depths_all = torch.cat([depths_coarse, depths_fine], dim=-2)
    colors_all = torch.cat([colors_coarse, colors_fine], dim=-2)
    densities_all = torch.cat([densities_coarse, densities_fine], dim=-2)
    _, order = torch.sort(depths_all, dim=-2)
    depths_all = torch.gather(depths_all, -2, order)
    colors_all = torch.gather(colors_all, -2, order.expand(-1, -1, -1, colors_all.shape[-1]))
    densities_all = torch.gather(densities_all, -2, order)
    rgb, depth, weights = ray_march(colors_all, densities_all, depths_all, options.white_back)
    return rgb, depth, weights.sum(2)
