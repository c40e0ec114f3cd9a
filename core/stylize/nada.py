"""3D-aware text-driven stylization of a Next3D generator with StyleGAN-NADA's directional CLIP loss
(Gal et al. 2022, §3.2; Next3D supplement §1.2).

A frozen copy and a trainable copy of the generator render the same avatars (z, camera, mesh, depth samples); the
trainable copy is pushed so that, in CLIP's image space, the step from the frozen image to its own image points the
same way as the step from the source text to the target text:
    loss = 1 - cos(E_I(trainable) - E_I(frozen), E_T(target) - E_T(source)).
Trained: the synthesis layers of the texture, static and mouth generators, except each one's toRGB layers other than
its last (the supplement's better strategy). Frozen: the mapping networks, neural blending, decoder and
super-resolution, so geometry conditioning, rendering and animation behave as before.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Tuple

import numpy as np
import torch

from ..errors import InputError
from ..networks.next3d import Next3DGenerator
from .clip_model import ClipModel
from .tokenizer import ClipTokenizer

TRAINABLE_NETWORKS = ("texture_backbone", "backbone", "mouth_backbone")
# The issue lists mapping, decoders and super-resolution as frozen and does not name neural_blending. It is frozen
# too: it only fuses the mouth plane into the rasterized texture plane (a geometric job, driven by the frame's
# mesh), and tuning it for style would let the style leak into how expressions are composited.
FROZEN_NETWORKS = ("neural_blending", "decoder", "superresolution")
# FFHQ-like camera spread (radians): the dataset's yaw/pitch standard deviations, cut at two of them.
YAW_STD = 0.3
PITCH_STD = 0.15
_COS_EPS = 1e-5  # smooths |d| at d = 0 (the first step, where both copies render identical images)


@dataclass(frozen=True)
class StylizeResult:
    generator: Next3DGenerator    # the tuned copy, eval mode, requires_grad off; the input generator is unchanged
    history: Tuple[float, ...]    # directional loss of each step taken
    trainable: Tuple[str, ...]    # names of the tuned parameters
    steps: int                    # steps taken
    stopped: bool                 # should_stop() ended it early
    source_text: str
    target_text: str


def last_torgb_prefix(generator: Next3DGenerator, network: str) -> str:
    """Parameter-name prefix of a network's last toRGB layer (the block at its output resolution)."""
    synthesis = getattr(generator, network).synthesis
    return f"{network}.synthesis.b{synthesis.block_resolutions[-1]}.torgb."


def select_trainable(generator: Next3DGenerator) -> Tuple[Tuple[str, ...], Tuple[str, ...]]:
    """(trainable parameter names, frozen parameter names), in the generator's parameter order.

    Trainable: every parameter under texture_backbone.synthesis, backbone.synthesis and mouth_backbone.synthesis
    (the mouth's encoder and fusion convolutions included) except the toRGB layers other than each network's last.
    Everything else is frozen."""
    last = {net: last_torgb_prefix(generator, net) for net in TRAINABLE_NETWORKS}
    trainable, frozen = [], []
    for name, _ in generator.named_parameters():
        network = name.split(".", 1)[0]
        keep = network in TRAINABLE_NETWORKS and name.startswith(f"{network}.synthesis.")
        if keep and ".torgb." in name and not name.startswith(last[network]):
            keep = False
        (trainable if keep else frozen).append(name)
    return tuple(trainable), tuple(frozen)


def text_direction(clip: ClipModel, tokenizer: ClipTokenizer, source_text: str, target_text: str) -> torch.Tensor:
    """Unit vector [embed_dim] from the source text's CLIP embedding to the target text's."""
    for label, text in (("source", source_text), ("target", target_text)):
        if not isinstance(text, str) or not text.strip():
            raise InputError(f"The {label} text is empty; describe the {label} domain, e.g. 'photo' -> "
                             "'pixar character'.")
    device = next(clip.parameters()).device
    with torch.no_grad():
        emb = clip.encode_text(tokenizer([source_text, target_text]).to(device))
    direction = emb[1] - emb[0]
    if float(direction.norm()) < 1e-6:
        raise InputError(f"The source text {source_text!r} and target text {target_text!r} have the same CLIP "
                         "embedding, so there is no direction to follow; give two different descriptions.")
    return direction / direction.norm()


def directional_loss(tuned: torch.Tensor, frozen: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    """1 - cos(tuned - frozen, direction) per sample [B] for embeddings [B, D] and a unit direction [D].

    |d| is smoothed so the loss is differentiable at d = 0: there its gradient points d along the text direction."""
    d = tuned - frozen
    norm = torch.sqrt(d.square().sum(-1) + _COS_EPS ** 2)
    return 1 - (d * direction.to(d.dtype)).sum(-1) / norm


def sample_cameras(batch: int, rng: torch.Generator) -> torch.Tensor:
    """[batch, 25] FFHQ-like camera labels: yaw and pitch drawn from normals cut at two standard deviations."""
    from ..rendering.camera import ffhq_camera

    yaw = (torch.randn(batch, generator=rng) * YAW_STD).clamp(-2 * YAW_STD, 2 * YAW_STD)
    pitch = (torch.randn(batch, generator=rng) * PITCH_STD).clamp(-2 * PITCH_STD, 2 * PITCH_STD)
    return torch.stack([ffhq_camera(float(y), float(p)) for y, p in zip(yaw, pitch)])


def _mesh_batch(generator: Next3DGenerator, mesh_input: torch.Tensor, batch: int) -> torch.Tensor:
    v = mesh_input if mesh_input.ndim == 3 else mesh_input[None]
    generator.split_mesh(v)  # names the expected shape on a wrong mesh
    if v.shape[0] == 1:
        return v.expand(batch, -1, -1)
    if v.shape[0] != batch:
        raise InputError(f"mesh_input has {v.shape[0]} meshes but the batch is {batch}; give one mesh (batch 1) or "
                         "one per batch entry.")
    return v


def _render_rng(device: torch.device, seed: int, step: int) -> torch.Generator:
    # Both copies get the same depth draws at a step, and a rerun with the same seed the same draws.
    return torch.Generator(device=device).manual_seed(seed * 1_000_003 + step)


def stylize(generator: Next3DGenerator, clip: ClipModel, tokenizer: ClipTokenizer, source_text: str,
            target_text: str, *, steps: int = 300, batch: int = 2, lr: float = 0.002, seed: int = 0,
            mesh_input: Optional[torch.Tensor] = None, truncation_psi: float = 0.7,
            progress: Optional[Callable[[int, int], None]] = None,
            should_stop: Optional[Callable[[], bool]] = None) -> StylizeResult:
    """Tune a copy of `generator` from the source text's domain to the target text's (StyleGAN-NADA).

    mesh_input: [1 or batch, 5091, 3] FLAME vertices + landmarks of the head the generator was built on (default:
    its rest mesh). Each step draws `batch` latents (truncated with psi towards w_avg, mapped with the frontal
    camera as the official scripts do) and FFHQ-like cameras from `seed`. progress(done, total) is called after
    each step; should_stop() is polled before each and ends the run early with the steps taken so far."""
    from ..default_model import default_mesh_input
    from ..rendering.camera import ffhq_camera

    if steps < 0 or batch < 1 or not (lr > 0 and math.isfinite(lr)):
        raise InputError(f"stylize needs steps >= 0, batch >= 1 and a positive learning rate; got steps={steps}, "
                         f"batch={batch}, lr={lr}.")
    if not 0 <= truncation_psi <= 1:
        raise InputError(f"truncation_psi must be in [0, 1], got {truncation_psi}.")
    device = generator.faces.device
    clip_device = next(clip.parameters()).device
    direction = text_direction(clip, tokenizer, source_text, target_text)
    v = _mesh_batch(generator, (mesh_input if mesh_input is not None else default_mesh_input(generator))
                    .to(device, torch.float32), batch)

    trainable, _ = select_trainable(generator)
    tuned = copy.deepcopy(generator).eval().requires_grad_(False)
    params = dict(tuned.named_parameters())
    for name in trainable:
        params[name].requires_grad_(True)
    # StyleGAN-NADA's optimizer settings: Adam without momentum, beta2 0.99.
    optimizer = torch.optim.Adam([params[n] for n in trainable], lr=lr, betas=(0.0, 0.99))
    cond = ffhq_camera()[None].expand(batch, -1).to(device)
    cutoff = generator.num_ws // 2  # the static backbone's ws, as the official scripts' cutoff 14 at 256
    rng = torch.Generator(device="cpu").manual_seed(seed)
    history = []
    stopped = False
    for step in range(steps):
        if should_stop is not None and should_stop():
            stopped = True
            break
        z = torch.randn(batch, generator.config.z_dim, generator=rng).to(device)
        cams = sample_cameras(batch, rng).to(device)
        with torch.no_grad():
            ws = generator.mapping(z, cond, truncation_psi=truncation_psi, truncation_cutoff=cutoff)
            frozen_image = generator.synthesis(ws, cams, v, generator=_render_rng(device, seed, step)).image
            frozen_emb = clip.encode_image(frozen_image.to(clip_device))
        image = tuned.synthesis(ws, cams, v, generator=_render_rng(device, seed, step)).image
        loss = directional_loss(clip.encode_image(image.to(clip_device)), frozen_emb, direction).mean()
        if not torch.isfinite(loss):
            raise InputError(f"The stylization loss became {float(loss.detach())} at step {step + 1}; lower the "
                             f"learning rate (now {lr}).")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        history.append(float(loss.detach()))
        if progress is not None:
            progress(len(history), steps)
    optimizer.zero_grad(set_to_none=True)  # the returned copy carries no gradients
    tuned.requires_grad_(False)
    return StylizeResult(generator=tuned, history=tuple(history), trainable=trainable, steps=len(history),
                         stopped=stopped, source_text=source_text, target_text=target_text)


def preview_grid(original: Next3DGenerator, stylized: Next3DGenerator, mesh_input: torch.Tensor,
                 seeds: Sequence[int] = (0, 1, 2), yaws: Sequence[float] = (-0.35, 0.0, 0.35),
                 truncation_psi: float = 0.7, sample_seed: int = 0) -> np.ndarray:
    """[2H, N*W, 3] uint8: the avatars of `seeds` (column k seen from yaws[k % len(yaws)]) before (top row) and
    after (bottom row) stylization, with the same depth samples."""
    from ..io.images import to_uint8
    from ..rendering.camera import ffhq_camera
    from ..sampling import latent_from_seed

    device = original.faces.device
    v = _mesh_batch(original, mesh_input.to(device, torch.float32), 1)
    rows = []
    with torch.no_grad():
        for g in (original, stylized):
            tiles = []
            for k, s in enumerate(seeds):
                z = latent_from_seed(int(s), original.config.z_dim).to(device)
                ws = original.mapping(z, ffhq_camera()[None].to(device), truncation_psi=truncation_psi,
                                      truncation_cutoff=original.num_ws // 2)
                cam = ffhq_camera(float(yaws[k % len(yaws)]))[None].to(device)
                image = g.synthesis(ws, cam, v, generator=_render_rng(device, sample_seed, k)).image
                tiles.append(to_uint8(image[0]))
            rows.append(np.concatenate(tiles, axis=1))
    return np.concatenate(rows, axis=0)
