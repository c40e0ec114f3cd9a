"""Quality figures of a trained generator on held-out synthetic heads (drawn with a seed the training data did not
use), meant to be reported as measured, with their sample counts.

* 3-D consistency: render one avatar from two cameras `yaw_delta` apart, lift view A's depth to 3-D points, project
  them into view B, and compare. `depth_error` is the mean |distance to camera B - B's depth at that pixel| over
  pixels that land inside B (world units; 1 unit = 40 cm of head); `raw_l1` and `image_l1` are mean absolute colour
  differences (in [0, 1] units) between A and B at the points B sees too (depth agreement within
  `visibility_tol`), for the raw neural rendering and for the final super-resolved image.
* Control: the same avatar and camera with the jaw closed and open: mean absolute change inside the mouth region
  (projected lip landmarks, enlarged) against the change elsewhere (`mouth_change_ratio`), the same for the gaze
  turned left and right in the eye regions (`gaze_change_ratio`), and the Pearson correlation between the jaw
  parameter and how much the mouth region darkens (`jaw_opening_correlation`), with the same measure on the
  synthetic renderer's own images as the reference (`..._reference`).
* Fréchet distance between features of held-out synthetic images and generated images of the same meshes and
  cameras, with a feature network the user gives (a TorchScript file: input [N, 3, S, S] float RGB in 0..255,
  output [N, D]). Nothing is downloaded: without a network the figure is reported as not computed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError
from ..io.images import from_uint8
from ..networks.next3d import Next3DGenerator
from ..rendering.camera import ffhq_camera
from ..rendering.volume import sample_rays
from .mesh_render import flame_to_world, project_points
from .synthetic import (CameraDistribution, HeadSampler, gaze_axis_angle, render_head, sample_appearance)

__all__ = ["MetricOptions", "evaluate_generator", "consistency_metrics", "control_metrics", "frechet_distance",
           "HELDOUT_SEED", "FRECHET_NOT_COMPUTED"]

HELDOUT_SEED = 1_000_003
FRECHET_NOT_COMPUTED = ("not computed: no feature network was given. Pass --feature-net PATH, a TorchScript file "
                        "that maps [N, 3, S, S] RGB images (float, 0..255) to [N, D] features (for example an "
                        "Inception network you exported yourself); no weights are downloaded.")


@dataclass(frozen=True)
class MetricOptions:
    count: int = 16                # held-out heads
    seed: int = HELDOUT_SEED       # held-out seed (the synthetic training set used another)
    yaw_delta: float = 0.35        # radians between the two views of the consistency test
    visibility_tol: float = 0.03   # world units: a point counts as seen by B when the depths agree this well
    jaw_open: float = 0.3          # radians
    jaw_steps: int = 5
    gaze: float = 0.3              # radians left and right
    psi: float = 1.0
    feature_size: int = 299


def _check_sampler(G: Next3DGenerator, sampler: HeadSampler) -> None:
    faces = sampler.faces
    if sampler.n_vertices != G.config.n_vertices or faces.shape[0] != G.faces.shape[1] or \
            not torch.equal(faces.long(), G.faces[0].cpu()):
        raise InputError(f"The head {sampler.name} ({sampler.n_vertices} vertices, {faces.shape[0]} faces) is not "
                         f"the mesh this generator was made for ({G.config.n_vertices} vertices, {G.faces.shape[1]} "
                         "faces); evaluate with the head it was trained on (--head).")


class _Avatar:
    """One held-out avatar: z, ws and identity, rendered with a fixed renderer seed."""

    def __init__(self, G: Next3DGenerator, index: int, options: MetricOptions, device: torch.device):
        self.G = G
        g = torch.Generator().manual_seed(options.seed * 7919 + index)
        z = torch.randn(1, G.config.z_dim, generator=g).to(device)
        cond = ffhq_camera()[None].to(device)
        self.ws = G.mapping(z, cond, truncation_psi=options.psi, truncation_cutoff=G.num_ws // 2)
        self.identity = G.make_identity(self.ws)
        self.device = device
        self.index = index

    def render(self, v: torch.Tensor, c: torch.Tensor):
        rng = torch.Generator(device=self.device).manual_seed(self.index)
        return self.G.render_frame(self.identity, v.to(self.device)[None], c.to(self.device)[None], generator=rng)


def _region_mask(landmarks: List[torch.Tensor], c: torch.Tensor, size: int, margin: float, G: Next3DGenerator
                 ) -> torch.Tensor:
    """[size, size] bool: the bounding box of the projected landmarks (union over the given sets), enlarged."""
    cfg = G.config
    boxes = []
    for lm in landmarks:
        uv = project_points(flame_to_world(lm[None].float(), cfg.orth_scale, cfg.orth_shift,
                                           cfg.rendering.box_warp), c[None].float())[0, :, :2]
        boxes.append(torch.cat([uv.min(0).values, uv.max(0).values]))
    b = torch.stack(boxes)
    lo, hi = b[:, :2].min(0).values, b[:, 2:].max(0).values
    pad = (hi - lo) * margin
    lo, hi = lo - pad, hi + pad
    centres = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    cols = (centres >= lo[0]) & (centres <= hi[0])
    rows = (centres >= lo[1]) & (centres <= hi[1])
    return rows[:, None] & cols[None, :]


def _mean_abs(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> float:
    diff = (a - b).abs().mean(0) / 2          # images in [-1, 1] -> [0, 1] units
    m = mask.to(diff.device)
    return float(diff[m].mean()) if bool(m.any()) else float("nan")


def _luminance(image: torch.Tensor) -> torch.Tensor:
    w = torch.tensor([0.299, 0.587, 0.114], device=image.device).view(3, 1, 1)
    return (image * w).sum(0)


def _pearson(x: List[float], y: List[float]) -> float:
    a, b = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if len(a) < 3 or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


@torch.no_grad()
def consistency_metrics(G: Next3DGenerator, sampler: HeadSampler, options: MetricOptions = MetricOptions(),
                        cameras: CameraDistribution = CameraDistribution(), device="cpu",
                        progress: Optional[Callable[[str], None]] = None) -> Dict[str, float]:
    device = torch.device(device)
    _check_sampler(G, sampler)
    cfg = G.config
    depth_err, raw_l1, img_l1, visible = [], [], [], []
    for i in range(options.count):
        rng = np.random.default_rng([options.seed, i])
        head = sampler.sample(rng)
        yaw, pitch = cameras.sample(rng)
        yaw = float(np.clip(yaw, -cameras.yaw_max + options.yaw_delta / 2, cameras.yaw_max - options.yaw_delta / 2))
        ca, cb = cameras.label(yaw - options.yaw_delta / 2, pitch), cameras.label(yaw + options.yaw_delta / 2, pitch)
        avatar = _Avatar(G, i, options, device)
        v = head.mesh_input()
        out_a, out_b = avatar.render(v, ca), avatar.render(v, cb)
        for res, img_a, img_b in ((cfg.neural_rendering_resolution, out_a.image_raw, out_b.image_raw),
                                  (cfg.image_resolution, out_a.image, out_b.image)):
            da = F.interpolate(out_a.image_depth, size=(res, res), mode="bilinear", align_corners=False)
            db = F.interpolate(out_b.image_depth, size=(res, res), mode="bilinear", align_corners=False)
            o, d = sample_rays(ca[:16].reshape(1, 4, 4).to(device), ca[16:25].reshape(1, 3, 3).to(device), res)
            points = o + d * da.reshape(1, -1, 1)
            foreground = da.reshape(-1) < cfg.rendering.ray_end * 0.99
            uvz = project_points(points, cb[None].to(device))[0]
            grid = (uvz[:, :2] * 2 - 1).view(1, res, res, 2)
            inside = (grid.abs() <= 1).all(-1).reshape(-1) & foreground & (uvz[:, 2] > 0)
            dist_b = (points[0] - cb[:16].reshape(4, 4)[:3, 3].to(device)).norm(dim=-1)
            depth_b = F.grid_sample(db, grid, mode="bilinear", align_corners=False).reshape(-1)
            err = (dist_b - depth_b).abs()
            seen = inside & (err < options.visibility_tol)
            colour_b = F.grid_sample(img_b, grid, mode="bilinear", align_corners=False)[0].reshape(3, -1)
            colour_a = img_a[0].reshape(3, -1)
            l1 = float(((colour_a - colour_b).abs().mean(0) / 2)[seen].mean()) if bool(seen.any()) else float("nan")
            if res == cfg.neural_rendering_resolution:
                depth_err.append(float(err[inside].mean()) if bool(inside.any()) else float("nan"))
                visible.append(float(seen.float().sum() / inside.float().sum().clamp_min(1)))
                raw_l1.append(l1)
            else:
                img_l1.append(l1)
        if progress is not None:
            progress(f"consistency {i + 1}/{options.count}")
    return {"consistency_depth_error": float(np.nanmean(depth_err)), "consistency_raw_l1": float(np.nanmean(raw_l1)),
            "consistency_image_l1": float(np.nanmean(img_l1)), "consistency_visible_fraction":
            float(np.nanmean(visible)), "consistency_pairs": options.count}


@torch.no_grad()
def control_metrics(G: Next3DGenerator, sampler: HeadSampler, options: MetricOptions = MetricOptions(),
                    cameras: CameraDistribution = CameraDistribution(), device="cpu",
                    progress: Optional[Callable[[str], None]] = None) -> Dict[str, float]:
    device = torch.device(device)
    _check_sampler(G, sampler)
    res = G.config.image_resolution
    mouth_in, mouth_out, eye_in, eye_out = [], [], [], []
    jaws, opening, opening_ref = [], [], []
    for i in range(options.count):
        rng = np.random.default_rng([options.seed + 1, i])
        appearance = sample_appearance(rng)
        params = sampler.random_params(rng)
        c = cameras.label(0.0, 0.0)
        avatar = _Avatar(G, i, options, device)

        def with_jaw(angle):
            p = {k: np.array(v, copy=True) for k, v in params.items()}
            p["jaw"][0] = angle
            return p

        def with_gaze(yaw):
            p = {k: np.array(v, copy=True) for k, v in params.items()}
            p["eyes"] = np.concatenate([gaze_axis_angle(yaw, 0.0)] * 2).astype(np.float32)
            return p

        closed, opened = sampler.sample(rng, with_jaw(0.0)), sampler.sample(rng, with_jaw(options.jaw_open))
        mouth = _region_mask([closed.landmarks[48:68], opened.landmarks[48:68]], c, res, 0.3, G)
        eyes = _region_mask([closed.landmarks[36:48]], c, res, 0.25, G)
        img_closed = avatar.render(closed.mesh_input(), c).image[0]
        img_open = avatar.render(opened.mesh_input(), c).image[0]
        mouth_in.append(_mean_abs(img_open, img_closed, mouth))
        mouth_out.append(_mean_abs(img_open, img_closed, ~(mouth | eyes)))
        left, right = sampler.sample(rng, with_gaze(-options.gaze)), sampler.sample(rng, with_gaze(options.gaze))
        img_left = avatar.render(left.mesh_input(), c).image[0]
        img_right = avatar.render(right.mesh_input(), c).image[0]
        eye_in.append(_mean_abs(img_left, img_right, eyes))
        eye_out.append(_mean_abs(img_left, img_right, ~(mouth | eyes)))
        # Mouth opening: darkening of the mouth region against the closed mouth, for G and for the reference.
        m = mouth.to(device)
        ref_rng = np.random.default_rng([options.seed + 2, i])
        ref_closed = _reference(closed, sampler, c, appearance, res, ref_rng)
        lum_closed, lum_ref_closed = _luminance(img_closed)[m].mean(), _luminance(ref_closed)[mouth].mean()
        for angle in np.linspace(0.0, options.jaw_open, options.jaw_steps)[1:]:
            head = sampler.sample(rng, with_jaw(float(angle)))
            img = avatar.render(head.mesh_input(), c).image[0]
            ref = _reference(head, sampler, c, appearance, res, np.random.default_rng([options.seed + 2, i]))
            jaws.append(float(angle))
            opening.append(float(lum_closed - _luminance(img)[m].mean()))
            opening_ref.append(float(lum_ref_closed - _luminance(ref)[mouth].mean()))
        if progress is not None:
            progress(f"control {i + 1}/{options.count}")
    mi, mo, ei, eo = (float(np.nanmean(x)) for x in (mouth_in, mouth_out, eye_in, eye_out))
    return {"mouth_change": mi, "mouth_other_change": mo, "mouth_change_ratio": mi / max(mo, 1e-8),
            "gaze_change": ei, "gaze_other_change": eo, "gaze_change_ratio": ei / max(eo, 1e-8),
            "jaw_opening_correlation": _pearson(jaws, opening),
            "jaw_opening_correlation_reference": _pearson(jaws, opening_ref), "control_heads": options.count}


def _reference(head, sampler, c, appearance, res, rng) -> torch.Tensor:
    return from_uint8(render_head(head, sampler, c, appearance, res, rng))


def _load_feature_net(path: Path, device: torch.device):
    if not path.is_file():
        raise InputError(f"The feature network {path} does not exist; give a TorchScript file (torch.jit.save).")
    try:
        return torch.jit.load(str(path), map_location=device).eval()
    except Exception as exc:  # TorchScript raises several error types
        raise InputError(f"{path} is not a TorchScript model ({exc}); export your feature network with "
                         "torch.jit.trace/torch.jit.script and torch.jit.save. Pickled networks are not loaded, "
                         "because loading a pickle can run arbitrary code.") from None


def _frechet(mu1, s1, mu2, s2) -> float:
    from scipy import linalg

    diff = mu1 - mu2
    covmean, _ = linalg.sqrtm(s1 @ s2, disp=False)
    if not np.isfinite(covmean).all():
        eps = np.eye(s1.shape[0]) * 1e-6
        covmean = linalg.sqrtm((s1 + eps) @ (s2 + eps))
    covmean = np.real(covmean)
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


@torch.no_grad()
def frechet_distance(G: Next3DGenerator, sampler: HeadSampler, feature_net: Optional[str],
                     options: MetricOptions = MetricOptions(), cameras: CameraDistribution = CameraDistribution(),
                     device="cpu", progress: Optional[Callable[[str], None]] = None) -> Dict[str, object]:
    if not feature_net:
        return {"frechet_distance": None, "frechet_note": FRECHET_NOT_COMPUTED}
    device = torch.device(device)
    _check_sampler(G, sampler)
    net = _load_feature_net(Path(feature_net), device)
    res = G.config.image_resolution
    real, fake = [], []

    def features(image: torch.Tensor) -> np.ndarray:
        x = ((image.clamp(-1, 1) + 1) * 127.5)[None].to(device)
        x = F.interpolate(x, size=(options.feature_size, options.feature_size), mode="bilinear",
                          align_corners=False, antialias=True)
        out = net(x)
        if isinstance(out, (tuple, list)):
            out = out[0]
        return out.reshape(1, -1).double().cpu().numpy()

    for i in range(options.count):
        rng = np.random.default_rng([options.seed + 3, i])
        appearance = sample_appearance(rng)
        yaw, pitch = cameras.sample(rng)
        head = sampler.sample(rng)
        c = cameras.label(yaw, pitch)
        real.append(features(_reference(head, sampler, c, appearance, res, rng)))
        avatar = _Avatar(G, options.count + i, options, device)
        fake.append(features(avatar.render(head.mesh_input(), c).image[0]))
        if progress is not None:
            progress(f"frechet {i + 1}/{options.count}")
    r, f = np.concatenate(real), np.concatenate(fake)
    value = _frechet(r.mean(0), np.cov(r, rowvar=False), f.mean(0), np.cov(f, rowvar=False))
    return {"frechet_distance": value, "frechet_images": options.count,
            "frechet_note": f"FD over {options.count} held-out synthetic vs generated images with {feature_net}; "
                            "small sample counts bias FD upwards and are not comparable with FID50k."}


def evaluate_generator(G: Next3DGenerator, sampler: HeadSampler, *, options: MetricOptions = MetricOptions(),
                       feature_net: Optional[str] = None, device="cpu",
                       progress: Optional[Callable[[str], None]] = None) -> Dict[str, object]:
    """All figures in one dict (see the module docstring)."""
    G = G.to(device).eval()
    results: Dict[str, object] = {"heldout_seed": options.seed, "head": sampler.name}
    results.update(consistency_metrics(G, sampler, options, device=device, progress=progress))
    results.update(control_metrics(G, sampler, options, device=device, progress=progress))
    results.update(frechet_distance(G, sampler, feature_net, options, device=device, progress=progress))
    return results
