"""Pivotal tuning on the bundled default model: invert one of its own renders and report how close it gets.

Renders a random avatar of the bundled default (truncation 0.7, as `next3d render` draws them) from a turned
camera, inverts that image with `core.inversion.pti.invert` (MSE + SSIM, no perceptual weights), and prints one
JSON line: PSNR at the start (average w), after the latent steps and after tuning, seconds per step of each phase,
and the peak resident memory. Never asserts. The paper's 450 + 500 steps take hours on a 2-core CPU at 512 px;
the defaults here are a short run.

    .venv/bin/python bench/inversion.py [--latent-steps 30] [--tune-steps 30] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.default_model import default_model  # noqa: E402
from core.inversion.pti import invert  # noqa: E402
from core.rendering.camera import ffhq_camera  # noqa: E402
from core.sampling import latent_from_seed  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latent-steps", type=int, default=30)
    parser.add_argument("--tune-steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--avatar-seed", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model = default_model()
    generator, mesh = model.generator, model.mesh_input
    camera = ffhq_camera(0.2, -0.1)[None]
    with torch.no_grad():
        ws = generator.mapping(latent_from_seed(args.avatar_seed, generator.config.z_dim), camera,
                               truncation_psi=0.7, truncation_cutoff=14)
        target = generator.synthesis(ws, camera, mesh, generator=torch.Generator().manual_seed(0)).image

    times = {"latent": [], "tune": []}
    last = [time.perf_counter()]

    def on_step(step) -> None:
        now = time.perf_counter()
        times[step.phase].append(now - last[0])
        last[0] = now

    result = invert(generator, target, camera, mesh, latent_steps=args.latent_steps, tune_steps=args.tune_steps,
                    seed=0, on_step=on_step)
    mean = {k: (sum(v) / len(v) if v else None) for k, v in times.items()}
    print(json.dumps({
        "model": model.description, "trained": model.trained,
        "image_resolution": generator.config.image_resolution,
        "latent_steps": args.latent_steps, "tune_steps": args.tune_steps, "threads": args.threads,
        "psnr_start": round(result.psnr_start, 2), "psnr_latent": round(result.psnr_latent, 2),
        "psnr_tuned": round(result.psnr_tuned, 2),
        "s_per_latent_step": round(mean["latent"], 2) if mean["latent"] else None,
        "s_per_tune_step": round(mean["tune"], 2) if mean["tune"] else None,
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20, 2),
    }))


if __name__ == "__main__":
    main()
