"""GPU figures for bench/gpu_check.sh: frame time at 512 px for the FFHQ-512 size (random weights) and for the bundled
model, peak GPU memory, mesh extraction time, and training step time (float32, and whether torch.autocast with
bfloat16 runs the step). Prints one JSON line per figure. Never asserts.

    .venv/bin/python bench/gpu_figures.py [--device cuda] [--runs 5] [--mesh-resolution 512]
    .venv/bin/python bench/gpu_figures.py --dry-run      # on the CPU with tiny sizes: checks this script

Times are medians of --runs after one warm-up run, with the device synchronized; TF32 is left as PyTorch sets it
(cuDNN convolutions in TF32), as a user's render would run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.default_model import default_model, random_generator, tiny_builtin_generator  # noqa: E402
from core.geometry.ellipsoid_head import N_FACES, N_UVS, ellipsoid_head  # noqa: E402
from core.networks.next3d import Next3DConfig  # noqa: E402
from core.rendering.camera import ffhq_camera  # noqa: E402
from core.sampling import latent_from_seed  # noqa: E402


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_runs(fn, device: torch.device, runs: int) -> list:
    fn()                                   # warm-up: kernel selection, allocator
    times = []
    for _ in range(runs):
        synchronize(device)
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - t0)
    return times


def peak_memory_mb(device: torch.device):
    return round(torch.cuda.max_memory_allocated(device) / 2 ** 20, 1) if device.type == "cuda" else None


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def frame_figures(name: str, generator, v: torch.Tensor, device: torch.device, runs: int) -> dict:
    generator = generator.to(device)
    v = v.to(device)
    c = ffhq_camera(0.4, -0.2)[None].to(device)
    z = latent_from_seed(0, generator.config.z_dim).to(device)
    rng = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        ws = generator.mapping(z, ffhq_camera()[None].to(device))
        reset_peak(device)
        uncached = timed_runs(lambda: generator.synthesis(ws, c, v, generator=rng), device, runs)
        peak = peak_memory_mb(device)
        identity = generator.make_identity(ws)
        cached = timed_runs(lambda: generator.render_frame(identity, v, c, generator=rng), device, runs)
    return {"figure": "frame", "model": name, "device": str(device),
            "resolution": generator.config.image_resolution, "runs": runs,
            "uncached_frame_s": round(statistics.median(uncached), 4),
            "cached_frame_s": round(statistics.median(cached), 4), "peak_memory_mb": peak}


def mesh_figures(name: str, generator, v: torch.Tensor, device: torch.device, resolution: int) -> dict:
    from core.mesh import extract_mesh, surface_level

    generator = generator.to(device)
    v = v.to(device)
    z = latent_from_seed(0, generator.config.z_dim).to(device)
    with torch.no_grad():
        ws = generator.mapping(z, ffhq_camera()[None].to(device))
        planes = generator.build_planes(generator.make_identity(ws), v)
    level = surface_level(generator, planes)
    reset_peak(device)
    synchronize(device)
    t0 = time.perf_counter()
    mesh = extract_mesh(generator, planes, resolution=resolution, level=level)
    synchronize(device)
    return {"figure": "mesh", "model": name, "device": str(device), "resolution": resolution,
            "level": round(level, 4), "seconds": round(time.perf_counter() - t0, 3), "vertices": mesh.n_vertices,
            "faces": mesh.n_faces, "peak_memory_mb": peak_memory_mb(device)}


def training_figures(device: torch.device, cfg: str, resolution: int, batch: int, steps: int) -> list:
    from core.training.loop import Trainer, TrainingOptions
    from core.training.synthetic import builtin_head_sampler, generate_dataset

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        data = generate_dataset(Path(tmp) / "data", count=max(8, batch), resolution=resolution, seed=0,
                                sampler=builtin_head_sampler())
        for precision in ("float32", "autocast-bfloat16"):
            options = TrainingOptions(data=str(data), outdir=str(Path(tmp) / precision), cfg=cfg, batch_size=batch,
                                      device=str(device), sample_grid=(0, 0), progress=False, resume=None)
            trainer = Trainer(options)
            trainer.build()
            record = {"figure": "training step", "cfg": cfg, "resolution": resolution, "batch": batch,
                      "device": str(device), "precision": precision, "steps": steps}
            reset_peak(device)
            try:
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision != "float32"):
                    times = timed_runs(trainer.train_step, device, steps)
                    stats = trainer.train_step()
                record.update(seconds_per_step=round(statistics.median(times), 4),
                              losses={k: round(v, 4) for k, v in stats.items() if k.startswith("loss")},
                              peak_memory_mb=peak_memory_mb(device))
            except Exception as exc:  # noqa: BLE001 - reported, not raised: this is a measurement
                record["failed"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            if precision != "float32":
                record["note"] = ("training has no mixed-precision option; this measures a plain torch.autocast "
                                  "around the step (on the CPU it fails at the antialiased resize of the mouth patch)")
            results.append(record)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--mesh-resolution", type=int, default=512)
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes: checks the script, not the GPU")
    args = parser.parse_args()
    device = torch.device("cpu" if args.dry_run else args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit(f"gpu_figures: PyTorch {torch.__version__} sees no CUDA GPU; use --dry-run on the CPU.")
    runs = 1 if args.dry_run else args.runs
    header = {"figure": "setup", "torch": torch.__version__, "cuda": torch.version.cuda, "device": str(device),
              "dry_run": args.dry_run, "cudnn_tf32": torch.backends.cudnn.allow_tf32}
    if device.type == "cuda":
        header["gpu"] = torch.cuda.get_device_name(device)
    print(json.dumps(header), flush=True)

    head = ellipsoid_head()
    if args.dry_run:
        big_name, big = "tiny built-in-head generator, 64 px (dry run)", tiny_builtin_generator(64)
        from core.default_model import builtin_head_mesh_input
        big_v = builtin_head_mesh_input()
    else:
        big_name = "FFHQ-512 size (32768/512), random weights, stand-in head"
        big = random_generator(Next3DConfig(n_faces=N_FACES, n_uvcoords=N_UVS), seed=0, head=head)
        big_v = head.mesh_input()
    print(json.dumps(frame_figures(big_name, big, big_v, device, runs)), flush=True)
    bundled = default_model()
    print(json.dumps(frame_figures(bundled.description, bundled.generator, bundled.mesh_input, device, runs)),
          flush=True)
    print(json.dumps(mesh_figures(big_name, big, big_v, device, 64 if args.dry_run else args.mesh_resolution)),
          flush=True)
    steps = 1 if args.dry_run else 3
    for record in (training_figures(device, "tiny", 32, 2, steps) if args.dry_run else
                   training_figures(device, "lite", 64, 8, steps)):
        print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
