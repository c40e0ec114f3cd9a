"""Sequence throughput of the Next3D generator (random weights, stand-in head topology) on this machine.

Renders an animated sequence (a deforming stand-in head, the official orbit camera) to PNGs twice:
- cached: the avatar identity (neural texture + static planes) built once, then `render_sequence` (the product path);
- uncached: the official path, `synthesis(ws, c, v)` per frame, which rebuilds the identity every frame;
and reports frames per second of both, the identity cost, the video encode time, the CPU seconds per frame (less
sensitive to other jobs than wall time), and the resident memory sampled after every frame (after frame 10 and at
the end, with the growth in %: it must stay flat). One JSON line; never asserts. The full size takes several
seconds a frame on a 2-core CPU: use --frames 12 for a quick look.

    .venv/bin/python bench/sequence.py [--frames 100] [--small] [--threads 2] [--no-uncached]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.default_model import random_generator  # noqa: E402
from core.geometry.ellipsoid_head import N_FACES, N_UVS, ellipsoid_head  # noqa: E402
from core.io.images import to_uint8, write_png  # noqa: E402
from core.networks.next3d import Next3DConfig  # noqa: E402
from core.sampling import latent_from_seed  # noqa: E402
from core.sequence import (OrbitCamera, VertexArraySource, frame_name, frame_seed, render_sequence,  # noqa: E402
                           video_conditioning_label, write_video)

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mb() -> float:
    """Current resident set size (not the peak)."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * PAGE / 2 ** 20


class RssTrace:
    def __init__(self):
        self.samples = []

    def __call__(self, *_):
        self.samples.append(rss_mb())

    def summary(self) -> dict:
        if not self.samples:
            return {}
        k = min(10, len(self.samples)) - 1
        after, end = self.samples[k], self.samples[-1]
        return {f"after_frame_{k + 1}_mb": round(after, 1), "end_mb": round(end, 1),
                "growth_pct": round(100 * (end - after) / after, 2), "max_sampled_mb": round(max(self.samples), 1)}


def cpu_s() -> float:
    """CPU seconds of this process (user + system): less sensitive than wall time to other jobs on the machine."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--small", action="store_true", help="the narrow reference width instead of FFHQ-512")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-uncached", action="store_true", help="skip the (slower) official per-frame path")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    n = args.frames
    sizes = dict(n_faces=N_FACES, n_uvcoords=N_UVS)
    config = Next3DConfig(channel_base=2048, channel_max=32, **sizes) if args.small else Next3DConfig(**sizes)
    head = ellipsoid_head()
    t0 = time.perf_counter()
    generator = random_generator(config, seed=0, head=head)
    build_s = time.perf_counter() - t0
    base = head.mesh_input()[0].numpy()
    # A deforming head: vertical stretch and a sideways sway, so every frame's mesh differs.
    frames = np.stack([base * np.array([1.0, 1 + 0.04 * math.sin(k / 5), 1.0], np.float32)
                       + np.array([0.005 * math.sin(k / 7), 0, 0], np.float32) for k in range(n)]).astype(np.float32)
    source = VertexArraySource(frames, OrbitCamera(n))
    seed = 0
    result = {"bench": "sequence", "config": "small (2048/32)" if args.small else "FFHQ-512 (32768/512)",
              "image": config.image_resolution, "frames": n, "device": "cpu", "torch": torch.__version__,
              "threads": torch.get_num_threads(), "build_s": round(build_s, 2)}
    with tempfile.TemporaryDirectory(prefix="next3d-bench-") as tmp, torch.no_grad():
        tmp = Path(tmp)
        ws = generator.mapping(latent_from_seed(4), video_conditioning_label()[None], truncation_psi=0.7,
                               truncation_cutoff=14)
        t0 = time.perf_counter()
        identity = generator.make_identity(ws)
        result["identity_s"] = round(time.perf_counter() - t0, 3)

        trace = RssTrace()
        c0, t0 = cpu_s(), time.perf_counter()
        seq = render_sequence(generator, identity, source, tmp / "cached", seed=seed, progress=False,
                              write_video=False, on_frame=trace)
        cached_s = time.perf_counter() - t0
        cached_cpu = cpu_s() - c0
        result["cached"] = {"seconds": round(cached_s, 2), "cpu_s_per_frame": round(cached_cpu / n, 3), "frames_per_s": round(n / cached_s, 4),
                            "s_per_frame": round(cached_s / n, 3), "rss": trace.summary()}
        t0 = time.perf_counter()
        write_video(seq.frame_paths, tmp / "cached" / "video.mp4", fps=30)
        result["video_encode_s"] = round(time.perf_counter() - t0, 2)
        del identity

        if not args.no_uncached:
            trace = RssTrace()
            (tmp / "uncached").mkdir()
            c0, t0 = cpu_s(), time.perf_counter()
            for i in range(n):
                number = source.index_to_number(i)
                out = generator.synthesis(ws, source.camera(i)[None], source.mesh(i)[None],
                                          generator=torch.Generator().manual_seed(frame_seed(seed, number)))
                write_png(tmp / "uncached" / frame_name(number), to_uint8(out.image[0]))
                del out
                trace()
            uncached_s = time.perf_counter() - t0
            uncached_cpu = cpu_s() - c0
            result["uncached"] = {"seconds": round(uncached_s, 2), "cpu_s_per_frame": round(uncached_cpu / n, 3), "frames_per_s": round(n / uncached_s, 4),
                                  "s_per_frame": round(uncached_s / n, 3), "rss": trace.summary()}
            result["cached_speedup"] = round(uncached_s / cached_s, 2)
            result["cached_speedup_cpu"] = round(uncached_cpu / cached_cpu, 2)
            same = sum((tmp / "cached" / frame_name(k)).read_bytes() == (tmp / "uncached" / frame_name(k)).read_bytes()
                       for k in range(1, n + 1))
            result["identical_frames_cached_vs_uncached"] = f"{same}/{n}"
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
