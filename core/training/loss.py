"""EG3D's GAN loss for Next3D, with the deformation-aware discriminator.

Phases (EG3D/StyleGAN2 lazy regularization):
  Gmain  non-saturating logistic loss softplus(-D(G(z, c, v))) for the generator;
  Greg   density regularization (every `g_reg_interval` steps): L1 between the densities at random points of the
         box and at the same points moved by N(0, p_dist), weight `density_reg`;
  Dmain  softplus(D(fake)) + softplus(-D(real));
  Dreg   R1 penalty gamma/2 * |grad D(real)|^2 on the real image and its raw (low-resolution) version
         (every `d_reg_interval` steps).
The regularization phases are scaled by their interval (`gain`), as in EG3D.

What D sees: the final image, the raw neural rendering upsampled to the final size, and (deformation-aware) a
rendering of the FLAME mesh that drove the image: for a real image, the image's own mesh; for a fake, the mesh
given to G. Real raw images are the real image resized down to the neural rendering resolution (EG3D's filtered
'image_raw'). During the first `blur_fade_kimg` thousand images, the final images (real and fake) and the real raw
images are blurred with a Gaussian whose sigma fades linearly from `blur_init_sigma` to 0.

Reconstruction warm-up (this project's addition, off by default): while `recon_weight` > 0, Gmain also pulls G's
image and raw image for each fake's mesh and camera toward the dataset image those came from (L1), with a weight
that fades linearly to 0 over `recon_fade_kimg` (or stays, if that is 0). With a random z the best G can do is the
mean image for that mesh and camera, so it learns geometry, expression and gaze following the mesh quickly, and
the adversarial loss, which is on from the first step, brings back the variety of appearances. With
`recon_appearance` (core.training.appearance_code) the fakes' z carries the target's appearance code instead, so
the target is determined by (z, mesh, camera) and the loss can stay on. It is meant for short runs on a CPU;
the bundled default model was trained with it.

Generator pose conditioning: the camera given to the mapping network is, with probability `swapping_prob`, the
camera of another sample in the batch (torch.roll); the probability fades from 1 to `gpc_reg_prob` over
`gpc_reg_fade_kimg` (EG3D).

Data-parallel steps (core/training/distributed.py): a batch may be one process's shard of a global batch
(`shard`, `c_all`). Every random number is then drawn for the global batch and cut to the shard, and the camera
roll and D's label-noise std see the global batch, so the shards together compute what one process computes.
Without a shard the batch is the whole batch and the draws are the ones the single-process code always made.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F

from ..networks.next3d import GeneratorOutput, Next3DGenerator
from ..rendering.volume import RandomDraws
from .discriminator import DualDiscriminator
from .distributed import BatchShard

__all__ = ["LossOptions", "RealBatch", "FakeBatch", "Next3DLoss", "gaussian_blur", "resize_image"]


@dataclass(frozen=True)
class LossOptions:
    r1_gamma: float = 4.0
    density_reg: float = 0.25
    density_reg_p_dist: float = 0.004
    density_points: int = 1000
    blur_init_sigma: float = 10.0
    blur_fade_kimg: float = 200.0
    gpc_reg_prob: float = 0.5
    gpc_reg_fade_kimg: float = 1000.0
    recon_weight: float = 0.0
    recon_fade_kimg: float = 0.0
    noise_mode: str = "random"


@dataclass
class RealBatch:
    image: torch.Tensor                  # [B, 3, R, R] in [-1, 1]
    c: torch.Tensor                      # [B, 25]
    mesh: Optional[torch.Tensor] = None  # [B, Cm, R, R] mesh rendering for the deformation-aware D
    shard: Optional[BatchShard] = None   # this process's rows of the global batch (None: the whole batch)
    c_all: Optional[torch.Tensor] = None  # [B_global, 25] the global batch's cameras (None: c)


@dataclass
class FakeBatch:
    z: torch.Tensor                      # [B, z_dim]
    c: torch.Tensor                      # [B, 25] camera to render from (and, unless swapped, to condition on)
    v: torch.Tensor                      # [B, V + 68, 3] mesh input of G
    mesh: Optional[torch.Tensor] = None  # [B, Cm, R, R] rendering of v from c
    target: Optional[torch.Tensor] = None  # [B, 3, R, R] the dataset image of v and c (reconstruction warm-up)
    shard: Optional[BatchShard] = None   # this process's rows of the global batch (None: the whole batch)
    c_all: Optional[torch.Tensor] = None  # [B_global, 25] the global batch's cameras (None: c)


def _whole(batch) -> Tuple[BatchShard, torch.Tensor]:
    """(shard, global cameras) of a batch; a batch without a shard is the whole batch."""
    shard = batch.shard if batch.shard is not None else BatchShard.whole(batch.c.shape[0])
    return shard, batch.c if batch.c_all is None else batch.c_all


def resize_image(image: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize with antialiasing (EG3D's 'antialiased' filtered resizing)."""
    if image.shape[-1] == size:
        return image
    return F.interpolate(image, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """EG3D's training blur: a separable kernel exp2(-(k/sigma)^2) over |k| <= floor(3 sigma), normalized, zero
    padding (the borders darken slightly, as in EG3D). sigma < 1/3 is a no-op."""
    radius = int(math.floor(sigma * 3))
    if radius <= 0:
        return image
    k = torch.arange(-radius, radius + 1, device=image.device, dtype=image.dtype).div(sigma).square().neg().exp2()
    k = k / k.sum()
    c = image.shape[1]
    x = F.conv2d(image, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), padding=(0, radius), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), padding=(radius, 0), groups=c)


class Next3DLoss:
    def __init__(self, G: Next3DGenerator, D: DualDiscriminator, options: LossOptions):
        self.G = G
        self.D = D
        self.options = options
        # D's label noise is scaled by the batch's std: the loss adds it, with the global batch's std, so that the
        # shards of a data-parallel step see the noise one process would (same draws, same formula as D's).
        self.label_noise, D.disc_c_noise = D.disc_c_noise, 0.0

    # -------------------------------------------------------------------------------------------- schedules

    def blur_sigma(self, cur_nimg: int) -> float:
        o = self.options
        if o.blur_fade_kimg <= 0:
            return 0.0
        return max(1 - cur_nimg / (o.blur_fade_kimg * 1e3), 0) * o.blur_init_sigma

    def recon_weight(self, cur_nimg: int) -> float:
        o = self.options
        if o.recon_weight <= 0:
            return 0.0
        if o.recon_fade_kimg <= 0:
            return o.recon_weight
        return max(1 - cur_nimg / (o.recon_fade_kimg * 1e3), 0) * o.recon_weight

    def swapping_prob(self, cur_nimg: int) -> float:
        o = self.options
        alpha = min(cur_nimg / (o.gpc_reg_fade_kimg * 1e3), 1) if o.gpc_reg_fade_kimg > 0 else 1
        return (1 - alpha) * 1 + alpha * o.gpc_reg_prob

    # -------------------------------------------------------------------------------------------- G and D

    def conditioning(self, fake: FakeBatch, swapping_prob: float) -> torch.Tensor:
        shard, c_all = _whole(fake)
        swapped = shard.take(torch.roll(c_all, 1, 0))
        return torch.where(shard.draw(torch.rand, (1,), fake.c.device) < swapping_prob, swapped, fake.c)

    def render_draws(self, shard: BatchShard, device: torch.device) -> RandomDraws:
        """The renderer's two uniform draws, as it would draw them for the whole batch, cut to the shard."""
        cfg = self.G.config
        rays, r = cfg.neural_rendering_resolution ** 2, cfg.rendering
        stratified = shard.draw(torch.rand, (rays, r.depth_resolution, 1), device)
        importance = (shard.draw(torch.rand, (r.depth_resolution_importance,), device, per_sample=rays)
                      if r.depth_resolution_importance > 0 else None)
        return RandomDraws(stratified=stratified, importance=importance)

    def run_G(self, fake: FakeBatch, swapping_prob: float, update_emas: bool = False) -> GeneratorOutput:
        G = self.G
        shard, _ = _whole(fake)
        ws = G.mapping(fake.z, self.conditioning(fake, swapping_prob), update_emas=update_emas)
        with shard.random():
            identity = G.make_identity(ws, noise_mode=self.options.noise_mode)
            planes = G.build_planes(identity, fake.v, noise_mode=self.options.noise_mode)
        draws = self.render_draws(shard, fake.c.device)
        with shard.random():
            return G.render_planes(planes, identity.eg3d_ws, fake.c, draws=draws)

    def run_D(self, image: torch.Tensor, image_raw: torch.Tensor, batch: "RealBatch | FakeBatch",
              mesh: Optional[torch.Tensor], blur_sigma: float) -> torch.Tensor:
        image = gaussian_blur(image, blur_sigma)
        c = batch.c
        shard, c_all = _whole(batch)
        if self.label_noise > 0 and self.D.training and c_all.shape[0] > 1:
            c = c + shard.draw(torch.randn, c.shape[1:], c.device) * c_all.std(0) * self.label_noise
        return self.D(image, image_raw, c, mesh if self.D.mesh_channels else None)

    def real_raw(self, image: torch.Tensor, blur_sigma: float) -> torch.Tensor:
        raw = resize_image(image, self.G.config.neural_rendering_resolution)
        return gaussian_blur(raw, blur_sigma)

    # -------------------------------------------------------------------------------------------- phases

    def accumulate_gradients(self, phase: str, real: RealBatch, fake: FakeBatch, gain: float,
                             cur_nimg: int) -> Dict[str, float]:
        """Forward and backward of one phase ('Gmain', 'Greg', 'Dmain', 'Dreg'); returns its statistics."""
        o = self.options
        blur_sigma = self.blur_sigma(cur_nimg)
        swapping_prob = self.swapping_prob(cur_nimg)
        stats: Dict[str, float] = {}
        if phase == "Gmain":
            out = self.run_G(fake, swapping_prob)
            logits = self.run_D(out.image, out.image_raw, fake, fake.mesh, blur_sigma)
            loss = F.softplus(-logits)
            total = loss.mean()
            stats.update(loss_G=float(loss.detach().mean()), score_fake_G=float(logits.detach().mean()))
            recon_weight = self.recon_weight(cur_nimg)
            if recon_weight > 0:
                if fake.target is None:
                    raise ValueError("the reconstruction warm-up needs FakeBatch.target")
                recon = (F.l1_loss(out.image, fake.target) +
                         F.l1_loss(out.image_raw, resize_image(fake.target, out.image_raw.shape[-1])))
                total = total + recon * recon_weight
                stats.update(loss_recon=float(recon.detach()), recon_weight=recon_weight)
            total.mul(gain).backward()
        elif phase == "Greg":
            if o.density_reg <= 0:
                return stats
            G = self.G
            shard, c_all = _whole(fake)
            c_cond = torch.where(torch.rand([], device=fake.c.device) < swapping_prob,
                                 shard.take(torch.roll(c_all, 1, 0)), fake.c)
            ws = G.mapping(fake.z, c_cond)
            with shard.random():
                identity = G.make_identity(ws, noise_mode=o.noise_mode)
                planes = G.build_planes(identity, fake.v, noise_mode=o.noise_mode)
            initial = shard.draw(torch.rand, (o.density_points, 3), ws.device) * 2 - 1
            perturbed = initial + shard.draw(torch.randn, (o.density_points, 3), ws.device) * o.density_reg_p_dist
            _, sigma = G.decode_points(planes, torch.cat([initial, perturbed], dim=1))
            n = o.density_points
            loss = F.l1_loss(sigma[:, :n], sigma[:, n:]) * o.density_reg
            loss.mul(gain).backward()
            stats.update(loss_density=float(loss.detach()))
        elif phase == "Dmain":
            with torch.no_grad():
                out = self.run_G(fake, swapping_prob, update_emas=True)
            logits_fake = self.run_D(out.image, out.image_raw, fake, fake.mesh, blur_sigma)
            loss_fake = F.softplus(logits_fake)
            loss_fake.mean().mul(gain).backward()
            logits_real = self.run_D(real.image, self.real_raw(real.image, blur_sigma), real, real.mesh,
                                     blur_sigma)
            loss_real = F.softplus(-logits_real)
            loss_real.mean().mul(gain).backward()
            stats.update(loss_D_fake=float(loss_fake.detach().mean()), loss_D_real=float(loss_real.detach().mean()),
                         score_fake=float(logits_fake.detach().mean()), score_real=float(logits_real.detach().mean()))
        elif phase == "Dreg":
            if o.r1_gamma <= 0:
                return stats
            image = real.image.detach().requires_grad_(True)
            raw = self.real_raw(real.image, blur_sigma).detach().requires_grad_(True)
            logits = self.run_D(image, raw, real, real.mesh, blur_sigma)
            grads = torch.autograd.grad(outputs=[logits.sum()], inputs=[image, raw], create_graph=True,
                                        only_inputs=True)
            penalty = grads[0].square().sum([1, 2, 3]) + grads[1].square().sum([1, 2, 3])
            loss = penalty * (o.r1_gamma / 2)
            loss.mean().mul(gain).backward()
            stats.update(r1_penalty=float(penalty.detach().mean()))
        else:
            raise ValueError(f"unknown phase {phase!r}")
        return stats
