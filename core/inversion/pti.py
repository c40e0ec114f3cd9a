"""One-shot avatars by pivotal tuning inversion (PTI; Roich et al., ACM TOG 2022), as Next3D applies it.

Phase 1 (latent): all 28 ws of the generator (the 14 tri-plane ws and the 14 neural-texture ws, independently)
start at the mapping network's average w and are optimized with Adam against the portrait, the generator frozen;
as in the StyleGAN2 projector, a small Gaussian noise on ws decays to zero over the first 75 % of the steps and the
learning rate ramps down (cosine) over the last 25 %.
Phase 2 (pivotal tuning): ws fixed at the pivot, every synthesis weight of a copy of the generator (all but the
mapping networks, which an avatar never uses) is fine-tuned with Adam.

Loss of both phases: mean squared error of the final image plus the LPIPS-style perceptual distance when a VGG16 is
given, else plus 1 - SSIM (pixel and structural losses only; the result says so in `warnings`). The renderer's
random depth samples use the same seed at every step, so the objective is deterministic and the saved
reconstruction is exactly what `next3d render --sample-seed SEED` shows.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Callable, Optional, Tuple

import torch
import torch.nn.functional as F

from ..checks import check_tensor
from ..errors import InputError
from ..networks.next3d import Next3DGenerator
from .perceptual import LpipsDistance, ssim

__all__ = ["InversionStep", "InversionResult", "invert", "average_w", "psnr", "image_loss", "tunable_parameters",
           "NO_PERCEPTUAL_WARNING"]

NO_PERCEPTUAL_WARNING = ("No perceptual-loss weights were given (--vgg16): the inversion used the pixel (MSE) and "
                         "structural (SSIM) losses only, which give blurrier details. Give a torchvision VGG16 "
                         "state dict (and optionally the LPIPS vgg weights) for the LPIPS loss.")
W_AVG_SAMPLES = 1000     # z samples for the mean w when the mapping's running average was never updated
NOISE_FACTOR = 0.05      # initial std of the ws noise, in units of the ws' std (StyleGAN2 projector)
NOISE_RAMP = 0.75        # fraction of the latent steps over which that noise decays to zero
LR_RAMPDOWN = 0.25       # fraction of the latent steps over which the learning rate ramps down at the end


@dataclass(frozen=True)
class InversionStep:
    """One optimization step, measured before its update."""

    phase: str   # "latent" or "tune"
    step: int    # within the phase, from 0
    loss: float
    psnr: float  # dB, of the image that step rendered against the target


@dataclass(frozen=True)
class InversionResult:
    ws: torch.Tensor                # [1, num_ws, w_dim] the pivot
    generator: Next3DGenerator      # a tuned copy, frozen, eval mode; the input generator is untouched
    image: torch.Tensor             # [1, 3, R, R] final render of `generator` at `ws` (sample seed `seed`)
    target: torch.Tensor            # [1, 3, R, R] in [-1, 1]
    camera: torch.Tensor            # [1, 25]
    mesh_input: torch.Tensor        # [1, V + 68, 3]
    psnr_start: float               # the first step's render (the starting ws, with step 0's small noise)
    psnr_latent: float              # after phase 1 (input generator)
    psnr_tuned: float               # after phase 2 (final)
    loss_final: float
    latent_steps: int               # steps done (fewer than asked when stopped)
    tune_steps: int
    history: Tuple[InversionStep, ...]
    perceptual: bool                # whether the LPIPS-style loss was used
    warnings: Tuple[str, ...]
    stopped: bool                   # should_stop() ended it early
    seed: int


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of images in [-1, 1] (clamped; peak-to-peak 2), over the whole batch."""
    mse = float((a.detach().clamp(-1, 1) - b.detach().clamp(-1, 1)).square().mean())
    return float("inf") if mse == 0 else 10 * math.log10(4.0 / mse)


def image_loss(image: torch.Tensor, target: torch.Tensor, perceptual: Optional[LpipsDistance]) -> torch.Tensor:
    """The inversion loss (scalar): MSE + LPIPS distance, or MSE + (1 - SSIM) without a perceptual network."""
    loss = F.mse_loss(image, target)
    if perceptual is not None:
        return loss + perceptual(image, target).mean()
    return loss + (1 - ssim(image, target)).mean()


@torch.no_grad()
def average_w(generator: Next3DGenerator, camera: torch.Tensor, samples: int = W_AVG_SAMPLES,
              seed: int = 0) -> Tuple[torch.Tensor, torch.Tensor]:
    """(mean w [w_dim], std of w over samples, a scalar tensor).

    The mean is the mapping's running average (`backbone.mapping.w_avg`) when training updated it; a generator whose
    average is still all zeros (random weights) gets the mean over `samples` mapped z. The std is always estimated
    from samples (it only scales the projector noise)."""
    mapping = generator.backbone.mapping
    g = torch.Generator(device="cpu").manual_seed(seed)
    z = torch.randn(samples, generator.config.z_dim, generator=g).to(camera.device)
    w = generator.mapping(z, camera.expand(samples, -1))[:, 0]
    w_avg = getattr(mapping, "w_avg", None)
    if w_avg is None or not bool(w_avg.any()):
        w_avg = w.mean(0)
    std = (w - w_avg).square().sum(1).mean().sqrt()
    return w_avg.detach().clone(), std


def tunable_parameters(generator: Next3DGenerator):
    """(name, parameter) of everything PTI fine-tunes: all weights but the mapping networks'."""
    return [(n, p) for n, p in generator.named_parameters() if ".mapping." not in f".{n}"]


def _render(generator: Next3DGenerator, ws: torch.Tensor, camera: torch.Tensor, mesh_input: torch.Tensor,
            seed: int) -> torch.Tensor:
    rng = torch.Generator(device=ws.device).manual_seed(seed)
    return generator.synthesis(ws, camera, mesh_input, generator=rng).image


def _check_steps(name: str, value: int) -> int:
    if not isinstance(value, int) or value < 0:
        raise InputError(f"{name} must be a whole number >= 0, got {value!r}.")
    return value


def invert(generator: Next3DGenerator, target: torch.Tensor, camera: torch.Tensor, mesh_input: torch.Tensor, *,
           latent_steps: int = 450, tune_steps: int = 500, latent_lr: float = 0.01, tune_lr: float = 3e-4,
           perceptual: Optional[LpipsDistance] = None, seed: int = 0,
           progress: Optional[Callable[[int, int], None]] = None,
           should_stop: Optional[Callable[[], bool]] = None,
           on_step: Optional[Callable[[InversionStep], None]] = None,
           start_ws: Optional[torch.Tensor] = None) -> InversionResult:
    """Pivotal tuning inversion of one aligned portrait.

    generator: the model (never modified; a deep copy is tuned). target [1, 3, R, R] in [-1, 1] with R the
    generator's image size; camera [1, 25] EG3D label; mesh_input [1, V + 68, 3] FLAME vertices + landmarks.
    perceptual: an LpipsDistance, or None for MSE + SSIM. seed: the renderer's depth samples and the ws noise.
    progress(done, total) and on_step(InversionStep) are called after each step; should_stop() is polled before
    each step and ends the run with what was reached (`stopped` set). start_ws [1, num_ws, w_dim] replaces the
    average w as the starting point (e.g. to continue an earlier run)."""
    cfg = generator.config
    res = cfg.image_resolution
    check_tensor("target", target, [1, 3, res, res])
    check_tensor("camera", camera, [1, 25])
    generator.split_mesh(mesh_input)
    if mesh_input.shape[0] != 1:
        raise InputError(f"mesh_input must hold one mesh [1, V + 68, 3]; got batch {mesh_input.shape[0]}.")
    _check_steps("latent_steps", latent_steps)
    _check_steps("tune_steps", tune_steps)
    device = next(generator.parameters()).device
    target, camera, mesh_input = target.to(device), camera.to(device), mesh_input.to(device)

    # All work happens on a copy, so neither the input's weights nor its .grad fields are touched.
    tuned = copy.deepcopy(generator).eval().requires_grad_(False)
    warnings = () if perceptual is not None else (NO_PERCEPTUAL_WARNING,)
    if perceptual is not None:
        perceptual = perceptual.to(device)
    history = []
    total = latent_steps + tune_steps
    stopped = False

    def record(phase: str, step: int, loss: torch.Tensor, image: torch.Tensor) -> None:
        entry = InversionStep(phase, step, float(loss.detach()), psnr(image, target))
        history.append(entry)
        if on_step is not None:
            on_step(entry)
        if progress is not None:
            progress(len(history), total)

    # ------------------------------------------------------------------------------------ phase 1: latent
    w_avg, w_std = average_w(tuned, camera, seed=seed)
    if start_ws is not None:
        check_tensor("start_ws", start_ws, [1, generator.num_ws, cfg.w_dim])
        ws = start_ws.detach().to(device).clone()
    else:
        ws = w_avg.view(1, 1, -1).repeat(1, generator.num_ws, 1)
    ws.requires_grad_(True)
    optimizer = torch.optim.Adam([ws], lr=latent_lr, betas=(0.9, 0.999))
    noise_rng = torch.Generator(device="cpu").manual_seed(seed)
    done_latent = 0
    for step in range(latent_steps):
        if should_stop is not None and should_stop():
            stopped = True
            break
        t = step / latent_steps
        noise_scale = float(w_std) * NOISE_FACTOR * max(0.0, 1 - t / NOISE_RAMP) ** 2
        lr_ramp = min(1.0, (1 - t) / LR_RAMPDOWN)
        for group in optimizer.param_groups:
            group["lr"] = latent_lr * (0.5 - 0.5 * math.cos(lr_ramp * math.pi))
        noise = torch.randn(ws.shape, generator=noise_rng).to(device) * noise_scale
        image = _render(tuned, ws + noise, camera, mesh_input, seed)
        loss = image_loss(image, target, perceptual)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        done_latent += 1
        record("latent", step, loss, image)
    ws = ws.detach()

    # ------------------------------------------------------------------------------- phase 2: pivotal tuning
    done_tune = 0
    psnr_latent = None
    if not stopped and tune_steps > 0:
        params = [p for _, p in tunable_parameters(tuned)]
        for p in params:
            p.requires_grad_(True)
        optimizer = torch.optim.Adam(params, lr=tune_lr, betas=(0.9, 0.999))
        for step in range(tune_steps):
            if should_stop is not None and should_stop():
                stopped = True
                break
            image = _render(tuned, ws, camera, mesh_input, seed)
            loss = image_loss(image, target, perceptual)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            done_tune += 1
            if step == 0:  # the untuned generator at the pivot: phase 1's result
                psnr_latent = psnr(image, target)
            record("tune", step, loss, image)
        tuned.requires_grad_(False)
        for p in params:
            p.grad = None

    with torch.no_grad():
        image = _render(tuned, ws, camera, mesh_input, seed)
        loss_final = float(image_loss(image, target, perceptual))
    final_psnr = psnr(image, target)
    if psnr_latent is None:  # no tuning step ran: the final render is phase 1's result
        psnr_latent = final_psnr
    psnr_start = history[0].psnr if history else final_psnr
    return InversionResult(ws=ws.clone(), generator=tuned, image=image.detach(), target=target.detach(),
                           camera=camera.detach(), mesh_input=mesh_input.detach(), psnr_start=psnr_start,
                           psnr_latent=psnr_latent, psnr_tuned=final_psnr, loss_final=loss_final,
                           latent_steps=done_latent, tune_steps=done_tune, history=tuple(history),
                           perceptual=perceptual is not None, warnings=warnings, stopped=stopped, seed=seed)
