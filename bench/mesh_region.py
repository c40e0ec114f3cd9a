"""The head region of mesh extraction (docs/mesh_extraction.md#head-region) with the bundled model: for each seed
and resolution, the mesh with and without the region. Prints one JSON line per extraction: seconds (wall clock,
vertex colours included), vertices, the mesh's extent (metres, x y z) beside the head's, how far its farthest vertex
lies outside the head's convex hull, and the landmarks' distance to the surface (median and 90th percentile, mm).
Timings are wall clock on a shared machine: noisy. Never asserts.

    .venv/bin/python bench/mesh_region.py [--seeds 0 3 7] [--resolutions 128 256 512] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.spatial import ConvexHull, cKDTree

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.default_model import default_model  # noqa: E402
from core.mesh import DEFAULT_MARGIN, extract_mesh  # noqa: E402
from core.rendering.camera import ffhq_camera  # noqa: E402
from core.sampling import latent_from_seed  # noqa: E402


def landmark_mm(landmarks: np.ndarray, vertices: np.ndarray, faces: np.ndarray) -> tuple:
    tri = vertices[faces].astype(np.float64)
    w = np.random.RandomState(0).dirichlet([1.0, 1.0, 1.0], size=(len(tri), 6))
    pts = np.concatenate([np.einsum("fkj,fjc->fkc", w, tri).reshape(-1, 3), vertices])
    d = cKDTree(pts).query(landmarks)[0] * 1000
    return round(float(np.median(d)), 2), round(float(np.percentile(d, 90)), 2)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 3, 7])
    parser.add_argument("--resolutions", type=int, nargs="+", default=[128, 256, 512])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = default_model()
    generator, head = model.generator, model.mesh_input[0].numpy()
    hull = ConvexHull(head).equations
    for seed in args.seeds:
        with torch.inference_mode():
            ws = generator.mapping(latent_from_seed(seed), ffhq_camera()[None])
            planes = generator.build_planes(generator.make_identity(ws), model.mesh_input)
        for n in args.resolutions:
            for near in (None, head):
                t0 = time.perf_counter()
                mesh = extract_mesh(generator, planes, resolution=n, level=10.0, near=near)
                seconds = time.perf_counter() - t0
                outside = (mesh.vertices @ hull[:, :3].T + hull[:, 3]).max(1)
                print(json.dumps({
                    "bench": "mesh_region", "model": model.description, "seed": seed, "resolution": n,
                    "region": None if near is None else f"head hull + {DEFAULT_MARGIN} m", "seconds": round(seconds, 2),
                    "threads": args.threads, "vertices": mesh.n_vertices, "evaluated_points": mesh.evaluated_points,
                    "extent_m": np.ptp(mesh.vertices, axis=0).round(3).tolist(),
                    "head_extent_m": np.ptp(head, axis=0).round(3).tolist(),
                    "farthest_outside_head_hull_m": round(float(outside.max()), 3),
                    "landmark_distance_mm_median_p90": landmark_mm(head[-68:], mesh.vertices, mesh.faces),
                    "timing_note": "wall clock, shared 2-core machine with other jobs: noisy"}), flush=True)


if __name__ == "__main__":
    main()
