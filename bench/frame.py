"""Per-frame cost of the Next3D generator at the official FFHQ-512 size (random weights), by stage
(docs/architecture.md#cost-of-the-official-code).

Prints one JSON line: per-stage seconds of an uncached frame, the median time of an uncached frame (identity +
frame) and of a cached animation frame (identity computed once), and the peak RSS. Never asserts. One uncached
frame is run first and not counted: the first frame of a process is a cold start. bench/precision.py compares the
precisions side by side.

    .venv/bin/python bench/frame.py [--threads 2] [--runs 3] [--small] [--precision fp32]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.networks import next3d  # noqa: E402
from core.networks.next3d import Next3DConfig, Next3DGenerator, Topology  # noqa: E402
from core.rendering import orthographic  # noqa: E402
from core.rendering.camera import ffhq_camera  # noqa: E402

REFERENCE = ROOT.parent / "shared" / "reference" / "next3d_small"
# The official code on the same 2 CPU threads, same mesh and size (docs/architecture.md#cost-of-the-official-code).
OFFICIAL_2_THREADS_S = {"frame": 13.0, "rasterization": 7.0}


def mesh_and_topology():
    """The official demo mesh and FLAME topology when the reference numbers are at hand, else the stand-in head."""
    if (REFERENCE / "case0.npz").is_file():
        sd = np.load(REFERENCE / "state_dict.npz")
        uvs = torch.from_numpy(sd["raw_uvcoords"][0])
        topo = Topology(faces=torch.from_numpy(sd["faces"][0]), uv_faces=torch.from_numpy(sd["uvfaces"][0]),
                        uvs=uvs, uv_face_mask=torch.from_numpy(sd["uv_face_mask"][0, 0]))
        v = torch.from_numpy(np.load(REFERENCE / "case0.npz")["v"])
        return "official demo FLAME mesh", v, topo, {}
    from core.geometry.ellipsoid_head import N_FACES, N_UVS, ellipsoid_head
    head = ellipsoid_head()
    return "stand-in ellipsoid head", head.mesh_input(), head.topology, dict(n_faces=N_FACES, n_uvcoords=N_UVS)


class StageTimer:
    """Accumulates wall time of the sub-networks (forward hooks) and of the rasterization and volume rendering
    functions (wrapped where the generator looks them up)."""

    def __init__(self, generator: Next3DGenerator):
        self.times = defaultdict(float)
        self._start = {}
        for name in ("texture_backbone", "backbone", "mouth_backbone", "neural_blending", "superresolution"):
            module = getattr(generator, name)
            module = getattr(module, "synthesis", module)
            module.register_forward_pre_hook(lambda m, a, n=name: self._start.__setitem__(n, time.perf_counter()))
            module.register_forward_hook(lambda m, a, o, n=name: self._stop(n))
        for owner, fn, label in ((orthographic, "rasterize_views", "rasterization (4 views + alphas)"),
                                 (orthographic, "view_alphas", "rasterization (4 views + alphas)"),
                                 (next3d, "render_planes", "volume rendering (incl. decoder)")):
            original = getattr(owner, fn)

            def wrapped(*args, _f=original, _label=label, **kwargs):
                t0 = time.perf_counter()
                try:
                    return _f(*args, **kwargs)
                finally:
                    self.times[_label] += time.perf_counter() - t0
            setattr(owner, fn, wrapped)

    def _stop(self, name):
        self.times[name] += time.perf_counter() - self._start[name]

    def reset(self):
        self.times.clear()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--small", action="store_true", help="the narrow reference width instead of FFHQ-512")
    parser.add_argument("--precision", default="fp32", help="Next3DGenerator.set_precision: fp32, fp32-fast, bf16")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    mesh_name, v, topology, sizes = mesh_and_topology()
    config = Next3DConfig(channel_base=2048, channel_max=32, **sizes) if args.small else Next3DConfig(**sizes)
    t0 = time.perf_counter()
    torch.manual_seed(0)
    generator = Next3DGenerator(config, topology).eval().requires_grad_(False).set_precision(args.precision)
    build_s = time.perf_counter() - t0
    timer = StageTimer(generator)
    c = ffhq_camera(0.4, -0.2)[None]
    z = torch.from_numpy(np.random.RandomState(0).randn(1, config.z_dim)).float()
    uncached, cached, stages = [], [], []
    with torch.no_grad():
        ws = generator.mapping(z, ffhq_camera()[None])
        t0 = time.perf_counter()
        warm_identity = generator.make_identity(ws)
        generator.render_frame(warm_identity, v, c, generator=torch.Generator().manual_seed(0))
        warmup_s = time.perf_counter() - t0
        del warm_identity
        for run in range(args.runs):
            timer.reset()
            rng = torch.Generator().manual_seed(run)
            t0 = time.perf_counter()
            generator.synthesis(ws, c, v, generator=rng)
            uncached.append(time.perf_counter() - t0)
            stages.append(dict(timer.times))
        identity = generator.make_identity(ws)
        for run in range(args.runs):
            rng = torch.Generator().manual_seed(run)
            t0 = time.perf_counter()
            generator.render_frame(identity, v, c, generator=rng)
            cached.append(time.perf_counter() - t0)
    median_stages = {k: round(statistics.median(s[k] for s in stages), 3) for k in stages[0]}
    median_stages["everything else"] = round(statistics.median(uncached) - sum(median_stages.values()), 3)
    result = {
        "bench": "frame", "config": "small (2048/32)" if args.small else "FFHQ-512 (32768/512)", "mesh": mesh_name,
        "device": "cpu", "torch": torch.__version__, "threads": torch.get_num_threads(), "runs": args.runs,
        "precision": args.precision, "load_average": [round(x, 2) for x in os.getloadavg()],
        "build_s": round(build_s, 2), "warmup_uncached_frame_s": round(warmup_s, 3),
        "uncached_frame_s": round(statistics.median(uncached), 3),
        "cached_animation_frame_s": round(statistics.median(cached), 3),
        "stages_uncached_s": median_stages,
        "official_2_threads_s": OFFICIAL_2_THREADS_S,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
