"""Seconds per frame and accuracy of the generator's precisions (core/networks/precision.py) against float32
(docs/architecture.md#cost-of-our-code).

Prints JSON lines, never asserts:
- "timing": the official FFHQ-512 size (random weights, the official demo mesh when ../shared/reference is here),
  uncached frames (identity + frame) and cached animation frames, every precision in turn within each round, after
  a warm-up round; min and median wall seconds, min CPU seconds (all threads), the cached frame's stages, the
  ratio to fp32 of the minima, and the minor page faults of a cached frame (the kernel zeroing fresh pages for new
  tensors). Wall time is what a user waits for, but only on a quiet machine: the load average is printed before and
  after. On a shared machine, time with --threads 1: its CPU seconds are then steady to a few per cent (with 2
  threads under load, each thread spins at OpenMP barriers while the other waits for a core, and CPU time is as
  noisy as wall time). THP_MEM_ALLOC_ENABLE=1 (torch's huge-page allocations) is reported when set.
- "reference": the narrow reference weights (../shared/reference/next3d_small) with the recorded random draws: max
  and mean absolute difference to fp32 and to the official numbers, of image, image_raw and image_depth.
- "bundled": the bundled model's renders over seeds and poses: PSNR against fp32 (images clamped to [-1, 1]).

    .venv/bin/python bench/precision.py [--threads 2] [--runs 3] [--precisions fp32,fp32-fast,bf16]
        [--compile] [--skip-timing] [--skip-accuracy]
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from frame import REFERENCE, StageTimer, mesh_and_topology  # noqa: E402

from core.networks.next3d import Next3DConfig, Next3DGenerator  # noqa: E402
from core.networks.precision import PRECISIONS  # noqa: E402
from core.rendering.camera import ffhq_camera  # noqa: E402
from core.rendering.volume import RandomDraws  # noqa: E402
from core.sampling import latent_from_seed  # noqa: E402

# The networks that run for every frame (the texture and static backbones run once per avatar).
FRAME_NETWORKS = ("mouth_backbone", "neural_blending", "superresolution")


def minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def load() -> str:
    return "load average %.2f %.2f %.2f" % os.getloadavg()


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR of images in [-1, 1] (peak-to-peak 2), as 8-bit images would give it."""
    mse = (a.clamp(-1, 1) - b.clamp(-1, 1)).double().square().mean().item()
    return math.inf if mse == 0 else 10 * math.log10(4 / mse)


def compiled(generator: Next3DGenerator) -> Next3DGenerator:
    """A copy whose per-frame networks run through torch.compile (inductor's C++ backend on the CPU)."""
    generator = copy.deepcopy(generator)
    generator.mouth_backbone.synthesis.compile()
    generator.neural_blending.synthesis.compile()
    generator.superresolution.compile()
    return generator


def timing(args, modes) -> None:
    mesh_name, v, topology, sizes = mesh_and_topology()
    torch.manual_seed(0)
    base = Next3DGenerator(Next3DConfig(**sizes), topology).eval().requires_grad_(False)
    generators = {}
    for mode in modes:
        name, _, compile_it = mode.partition("+")
        generators[mode] = (compiled(base) if compile_it else base, name)
    timer = StageTimer(base)
    c = ffhq_camera(0.4, -0.2)[None]
    uncached = {m: [] for m in modes}
    cached = {m: [] for m in modes}
    stages = {m: [] for m in modes}
    faults = {m: [] for m in modes}
    cpu_uncached = {m: [] for m in modes}
    cpu_cached = {m: [] for m in modes}
    warmup = {}
    load_before = load()
    with torch.no_grad():
        ws = base.mapping(latent_from_seed(0), ffhq_camera()[None])
        for round_ in range(args.runs + 1):  # round 0 is the warm-up (cold start, compilation)
            for mode in modes:
                g, name = generators[mode]
                g.set_precision(name)
                rng = torch.Generator().manual_seed(round_)
                c0, t0 = cpu_seconds(), time.perf_counter()
                identity = g.make_identity(ws)
                g.render_frame(identity, v, c, generator=rng)
                t_uncached, c_uncached = time.perf_counter() - t0, cpu_seconds() - c0
                timer.reset()
                f0, c0, t0 = minor_faults(), cpu_seconds(), time.perf_counter()
                g.render_frame(identity, v, c, generator=rng)
                t_cached, c_cached = time.perf_counter() - t0, cpu_seconds() - c0
                faults[mode].append(minor_faults() - f0)
                print(f"round {round_} {mode}: uncached {t_uncached:.2f} s ({c_uncached:.2f} CPU s), cached "
                      f"{t_cached:.2f} s ({c_cached:.2f} CPU s)", file=sys.stderr, flush=True)
                if round_ == 0:
                    warmup[mode] = [round(t_uncached, 2), round(t_cached, 2)]
                    continue
                uncached[mode].append(t_uncached)
                cached[mode].append(t_cached)
                cpu_uncached[mode].append(c_uncached)
                cpu_cached[mode].append(c_cached)
                if g is base:
                    stages[mode].append(dict(timer.times))
    base.set_precision("fp32")
    result = {"bench": "precision/timing", "config": "FFHQ-512 (32768/512)", "mesh": mesh_name,
              "torch": torch.__version__, "threads": torch.get_num_threads(), "runs": args.runs,
              "THP_MEM_ALLOC_ENABLE": os.environ.get("THP_MEM_ALLOC_ENABLE", ""),
              "load_before": load_before, "load_after": load(),
              "warmup_s (uncached, cached)": warmup, "modes": {}}
    spread = lambda xs: {"min": round(min(xs), 3), "median": round(statistics.median(xs), 3)}  # noqa: E731
    for mode in modes:
        entry = {"uncached_s": spread(uncached[mode]), "cached_s": spread(cached[mode]),
                 "cpu_s_min": {"uncached": round(min(cpu_uncached[mode]), 2),
                               "cached": round(min(cpu_cached[mode]), 2)},
                 "speed-up vs fp32 (min wall)": {"uncached": round(min(uncached["fp32"]) / min(uncached[mode]), 2),
                                                 "cached": round(min(cached["fp32"]) / min(cached[mode]), 2)},
                 "speed-up vs fp32 (min CPU)": {
                     "uncached": round(min(cpu_uncached["fp32"]) / min(cpu_uncached[mode]), 2),
                     "cached": round(min(cpu_cached["fp32"]) / min(cpu_cached[mode]), 2)},
                 "cached_minor_page_faults": min(faults[mode])}
        if stages[mode]:
            entry["cached_stages_min_s"] = {k: round(min(s.get(k, 0.0) for s in stages[mode]), 3)
                                            for k in stages[mode][0]}
        result["modes"][mode] = entry
    print(json.dumps(result), flush=True)


def reference_accuracy(modes) -> None:
    if not (REFERENCE / "state_dict.npz").is_file():
        print(json.dumps({"bench": "precision/reference", "skipped": f"no {REFERENCE}"}), flush=True)
        return
    weights = np.load(REFERENCE / "state_dict.npz")
    g = Next3DGenerator(Next3DConfig(channel_base=2048, channel_max=32)).eval().requires_grad_(False)
    g.load_state_dict({k: torch.from_numpy(weights[k]) for k in weights.files if k != "uv_face_mask"}, strict=True)
    g.uv_face_mask.copy_(torch.from_numpy(weights["uv_face_mask"]))
    result = {"bench": "precision/reference", "weights": "next3d_small (narrow, official code's random init)"}
    for case in ("case0", "case1"):
        d = np.load(REFERENCE / f"{case}.npz")
        t = lambda k: torch.from_numpy(d[k])  # noqa: E731
        cutoff = int(d["truncation_cutoff"])
        outputs = {}
        for mode in modes:
            with torch.no_grad():
                g.set_precision(mode.partition("+")[0])
                ws = g.mapping(t("z"), t("c_cond"), truncation_psi=float(d["truncation_psi"]),
                               truncation_cutoff=None if cutoff < 0 else cutoff)
                outputs[mode] = g.synthesis(ws, t("c"), t("v"), draws=RandomDraws(t("rand_stratified"), t("rand_pdf")))
        for mode in modes:
            row = {}
            for key in ("image", "image_raw", "image_depth"):
                ours = getattr(outputs[mode], key)
                diff = (ours - getattr(outputs["fp32"], key)).abs()
                official = (ours - torch.from_numpy(d[key])).abs().max().item()
                row[key] = {"max_vs_fp32": float(f"{diff.max().item():.3g}"),
                            "mean_vs_fp32": float(f"{diff.mean().item():.3g}"),
                            "max_vs_official": float(f"{official:.3g}")}
            row["image_psnr_vs_fp32_db"] = round(psnr(outputs[mode].image, outputs["fp32"].image), 1)
            result[f"{case}/{mode}"] = row
    g.set_precision("fp32")
    print(json.dumps(result), flush=True)


def bundled_accuracy(modes, seeds) -> None:
    from core.default_model import default_model

    model = default_model()
    if not model.trained:
        print(json.dumps({"bench": "precision/bundled", "skipped": "no bundled weights"}), flush=True)
        return
    g, v = model.generator, model.mesh_input
    poses = [(0.0, 0.0), (0.4, 0.0), (-0.4, 0.15), (0.2, -0.2)]
    psnrs = {mode: [] for mode in modes}
    raw_psnrs = {mode: [] for mode in modes}
    with torch.no_grad():
        for seed in seeds:
            ws = g.mapping(latent_from_seed(seed), ffhq_camera()[None], truncation_psi=0.7, truncation_cutoff=14)
            for yaw, pitch in poses:
                frames = {}
                for mode in modes:
                    g.set_precision(mode.partition("+")[0])
                    frames[mode] = g.synthesis(ws, ffhq_camera(yaw, pitch)[None], v,
                                               generator=torch.Generator().manual_seed(seed))
                for mode in modes:
                    psnrs[mode].append(psnr(frames[mode].image, frames["fp32"].image))
                    raw_psnrs[mode].append(psnr(frames[mode].image_raw, frames["fp32"].image_raw))
    g.set_precision("fp32")
    result = {"bench": "precision/bundled", "model": model.description, "seeds": list(seeds), "poses": poses,
              "image_resolution": g.config.image_resolution}
    for mode in modes:
        if mode == "fp32":
            continue
        result[mode] = {"image_psnr_vs_fp32_db": {"min": round(min(psnrs[mode]), 1),
                                                  "mean": round(statistics.mean(psnrs[mode]), 1)},
                        "image_raw_psnr_vs_fp32_db": {"min": round(min(raw_psnrs[mode]), 1),
                                                      "mean": round(statistics.mean(raw_psnrs[mode]), 1)}}
    print(json.dumps(result), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3, help="timed rounds after the warm-up round")
    parser.add_argument("--precisions", default=",".join(PRECISIONS))
    parser.add_argument("--compile", action="store_true",
                        help="also time the fast precisions with the per-frame networks under torch.compile")
    parser.add_argument("--seeds", type=int, default=4, help="seeds of the bundled model's renders")
    parser.add_argument("--skip-timing", action="store_true")
    parser.add_argument("--skip-accuracy", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    modes = args.precisions.split(",")
    for mode in modes:
        if mode not in PRECISIONS:
            parser.error(f"unknown precision {mode!r}; choose from {', '.join(PRECISIONS)}")
    if "fp32" not in modes:
        modes.insert(0, "fp32")
    if not args.skip_accuracy:
        reference_accuracy(modes)
        bundled_accuracy(modes, range(args.seeds))
    if not args.skip_timing:
        timed = modes + [f"{m}+compile" for m in modes if args.compile and m != "fp32"]
        timing(args, timed)


if __name__ == "__main__":
    main()
