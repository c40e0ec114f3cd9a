"""Mesh extraction cost at the official 512^3 lattice (docs/mesh_extraction.md), random weights, planes built once.

Prints one JSON line per model (the small random generator, and with --full the FFHQ-512-size one) with:
  (a) our coarse-to-fine extraction (median of --runs, vertex colours included);
  (b) dense sampling of the 512^3 lattice on the cached planes with `decode_points` in 1M-point chunks (the official
      G.sample without the per-chunk recomputation): --dense-chunks chunks are timed and the median extrapolated to
      N^3 points, unless --dense-full;
  (c) the official per-chunk recomputation: Next3D's sample() reruns mapping, neural texture, static planes and
      build_planes for every 1M-point chunk; --official-chunks chunks are timed (each: mapping + make_identity +
      build_planes + decoding 1M points) and extrapolated to the 135 chunks of 512^3;
  ratios (c)/(a) and (b)/(a), and the surface distance between our mesh and the marching-cubes mesh of the dense
  lattice (computed with the exact separable lattice decoder; its agreement with decode_points is reported).
Timings are wall-clock on a shared machine: medians, noisy. Never asserts.

    .venv/bin/python bench/mesh.py [--full] [--threads 2] [--resolution 512] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.default_model import SMALL_CONFIG, random_generator  # noqa: E402
from core.geometry.ellipsoid_head import N_FACES, N_UVS, ellipsoid_head  # noqa: E402
from core.mesh import extract as E  # noqa: E402
from core.mesh import dense_sigma, extract_mesh, mesh_from_grid  # noqa: E402
from core.networks.next3d import Next3DConfig  # noqa: E402
from core.rendering.camera import ffhq_camera  # noqa: E402
from core.sampling import latent_from_seed  # noqa: E402

OFFICIAL_CHUNK = 1_000_000


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def chamfer_voxels(a: np.ndarray, b: np.ndarray, voxel: float) -> dict:
    """Vertex-to-nearest-vertex distances both ways, in voxels (an upper bound of the surface distance)."""
    from scipy.spatial import cKDTree
    ab = cKDTree(b).query(a)[0] / voxel
    ba = cKDTree(a).query(b)[0] / voxel
    return {"chamfer_voxels": round(0.5 * (float(ab.mean()) + float(ba.mean())), 4),
            "max_voxels": round(max(float(ab.max()), float(ba.max())), 3),
            "vertices_farther_than_half_voxel": int((ab > 0.5).sum() + (ba > 0.5).sum())}


def pick_level(generator, planes) -> tuple:
    """The official level 10 when it gives a surface, else the 0.9 quantile of the density (random weights)."""
    grid = dense_sigma(generator, planes, 64, 2 ** 16, fast=True)
    pad = E.official_padding(64)
    inner = grid[pad:64 - pad, pad:64 - pad, pad:64 - pad]
    if inner.min() < E.OFFICIAL_LEVEL < inner.max():
        return E.OFFICIAL_LEVEL, "official level 10"
    q = float(np.quantile(inner, 0.9))
    return q, (f"0.9 quantile of the density (level 10 gives no surface: the density ranges from "
               f"{float(inner.min()):.3g} to {float(inner.max()):.3g})")


def bench_model(name: str, generator, head, args) -> dict:
    n = args.resolution
    v = head.mesh_input()
    z = latent_from_seed(0, generator.config.z_dim)
    c = ffhq_camera()[None]
    with torch.inference_mode():
        ws = generator.mapping(z, c)
        identity, identity_s = timed(lambda: generator.make_identity(ws))
        planes, planes_s = timed(lambda: generator.build_planes(identity, v))
    level, level_how = pick_level(generator, planes)

    # (a), (b) and (c) interleaved, round by round, so that they see the same machine load
    total = n ** 3
    n_chunks = -(-total // OFFICIAL_CHUNK)
    axis = E.lattice_axis(n, float(generator.config.rendering.box_warp))
    rng = np.random.RandomState(0)

    def lattice_chunk(start):
        idx = np.arange(start, min(total, start + OFFICIAL_CHUNK), dtype=np.int64)
        return idx // (n * n), (idx // n) % n, idx % n

    ours, chunk_times, pipeline, official_chunks = [], [], [], []
    mesh = None
    rounds = max(args.runs, 0 if args.dense_full else args.dense_chunks, args.official_chunks)
    for r in range(rounds):
        if r < args.runs:       # (a) ours, vertex colours included
            mesh, dt = timed(lambda: extract_mesh(generator, planes, resolution=n, level=level,
                                                  coarse_resolution=args.coarse, dilation=args.dilation))
            ours.append(dt)
        with torch.inference_mode():
            if r < args.dense_chunks and not args.dense_full:   # (b) one 1M-point chunk on the cached planes
                pts = lattice_chunk(int(rng.randint(0, n_chunks - 1)) * OFFICIAL_CHUNK)
                field = E._DecodePointsField(generator, planes, axis, OFFICIAL_CHUNK)
                _, dt = timed(lambda: field.evaluate(*pts))
                chunk_times.append(dt)
            if r < args.official_chunks:    # (c) one official chunk: the whole pipeline, then 1M points
                pts = lattice_chunk(int(rng.randint(0, n_chunks - 1)) * OFFICIAL_CHUNK)
                t0 = time.perf_counter()
                ws_k = generator.mapping(z, c)
                ident_k = generator.make_identity(ws_k)
                planes_k = generator.build_planes(ident_k, v)
                t1 = time.perf_counter()
                E._DecodePointsField(generator, planes_k, axis, OFFICIAL_CHUNK).evaluate(*pts)
                t2 = time.perf_counter()
                pipeline.append(t1 - t0)
                official_chunks.append(t2 - t0)
    if args.dense_full:
        with torch.inference_mode():
            field = E._DecodePointsField(generator, planes, axis, OFFICIAL_CHUNK)
            for k in range(n_chunks):
                pts = lattice_chunk(k * OFFICIAL_CHUNK)
                _, dt = timed(lambda: field.evaluate(*pts))
                chunk_times.append(dt)
    ours_s = statistics.median(ours)
    decode_1m_s = statistics.median(chunk_times)
    dense_s = sum(chunk_times) if args.dense_full else decode_1m_s * total / OFFICIAL_CHUNK
    pipeline_s = statistics.median(pipeline)
    official_s = n_chunks * pipeline_s + decode_1m_s * total / OFFICIAL_CHUNK

    # surface distance to the dense lattice (exact separable decoder), and that decoder against decode_points
    grid, dense_fast_s = timed(lambda: dense_sigma(generator, planes, n, 2 ** 16, fast=True))
    with torch.inference_mode():
        rng = np.random.RandomState(1)
        sample = rng.randint(0, n, (200_000, 3))
        slow = E._DecodePointsField(generator, planes, axis, 2 ** 16).evaluate(sample[:, 0], sample[:, 1],
                                                                                 sample[:, 2])
    lattice_diff = float(np.abs(grid[sample[:, 0], sample[:, 1], sample[:, 2]] - slow).max())
    t0 = time.perf_counter()
    dense_mesh = mesh_from_grid(grid, level=level, conversion=E._conversion(generator))
    mc_s = time.perf_counter() - t0
    del grid
    voxel = float(generator.config.rendering.box_warp) / (n - 1) / (0.5 * generator.config.orth_scale
                                                                   * generator.config.rendering.box_warp)
    distance = chamfer_voxels(mesh.vertices, dense_mesh.vertices, voxel)

    return {
        "bench": "mesh", "model": name, "random_weights": True, "mesh": "stand-in ellipsoid head", "device": "cpu",
        "torch": torch.__version__, "threads": torch.get_num_threads(), "resolution": n,
        "coarse_step": E.coarse_step(n, args.coarse), "dilation": args.dilation, "level": round(level, 5),
        "level_choice": level_how, "runs": args.runs, "timing_note": "wall clock, medians; (a), (b), (c) "
        "interleaved round by round; shared 2-core machine with other jobs running: noisy",
        "identity_s": round(identity_s, 3), "build_planes_s": round(planes_s, 3),
        "a_ours_s": round(ours_s, 3), "a_ours_all_s": [round(t, 3) for t in ours],
        "a_evaluated_points": mesh.evaluated_points, "a_evaluated_fraction": round(mesh.evaluated_points / total, 4),
        "a_vertices": mesh.n_vertices, "a_faces": mesh.n_faces,
        "b_dense_cached_planes_s": round(dense_s, 1),
        "b_chunk_s": [round(t, 3) for t in chunk_times] if not args.dense_full else None, "b_extrapolated": not args.dense_full,
        "b_note": (f"decode_points on cached planes, 1M-point chunks: {len(chunk_times)} chunks timed (median "
                   f"{decode_1m_s:.3f} s) and scaled to {total} points" if not args.dense_full else
                   "all chunks timed"),
        "c_official_per_chunk_s": round(official_s, 1), "c_extrapolated": True,
        "c_note": (f"{len(pipeline)} chunk(s) timed: mapping + make_identity + build_planes median "
                   f"{pipeline_s:.3f} s per chunk (x{n_chunks} chunks) + decoding {total} points at the (b) rate; "
                   f"whole chunks measured {[round(t, 3) for t in official_chunks]} s"),
        "speedup_vs_official": round(official_s / ours_s, 1), "speedup_vs_dense": round(dense_s / ours_s, 1),
        "targets": {"vs_official": ">= 50x", "vs_dense": ">= 5x", "chamfer_voxels": "<= 0.5"},
        "dense_reference": {"lattice_decoder_s": round(dense_fast_s, 1), "marching_cubes_s": round(mc_s, 1),
                            "vertices": dense_mesh.n_vertices, "faces": dense_mesh.n_faces,
                            "lattice_vs_decode_points_max_abs_diff": lattice_diff, **distance},
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--coarse", type=int, default=None,
                        help="coarse_resolution of extract_mesh (default: its own, a node every 4 lattice points)")
    parser.add_argument("--dilation", type=int, default=0, help="dilation of extract_mesh (coarse cells)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dense-chunks", type=int, default=3, help="1M-point chunks timed for (b)")
    parser.add_argument("--dense-full", action="store_true", help="time (b) over the whole lattice")
    parser.add_argument("--official-chunks", type=int, default=2, help="chunks timed for (c)")
    parser.add_argument("--full", action="store_true", help="also the FFHQ-512-size random generator")
    parser.add_argument("--only-full", action="store_true", help="only the FFHQ-512-size random generator")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    head = ellipsoid_head()
    models = []
    if not args.only_full:
        models.append(("small (2048/32)", lambda: random_generator(SMALL_CONFIG, seed=0, head=head)))
    if args.full or args.only_full:
        models.append(("FFHQ-512 (32768/512)",
                       lambda: random_generator(Next3DConfig(n_faces=N_FACES, n_uvcoords=N_UVS), seed=0, head=head)))
    for name, make in models:
        print(json.dumps(bench_model(name, make(), head, args)), flush=True)


if __name__ == "__main__":
    main()
