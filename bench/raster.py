"""Benchmark: the four orthographic rasterisations (+ the blending alphas) of the reference demo mesh.

Prints one JSON line; never asserts. The official pytorch3d CPU path takes 13.9-15.0 s for the four views on a 2-core
CPU (docs/architecture.md#cost-of-the-official-code). Run from the repository root:
`python bench/raster.py [--device cuda] [--runs 7]`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.rendering.orthographic import rasterize_views, view_alphas  # noqa: E402

REF = ROOT.parent / "shared" / "reference" / "next3d_small"


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    result = {"bench": "raster_4views", "device": args.device, "threads": args.threads, "runs": args.runs}
    if not (REF / "case0.npz").exists():
        result["error"] = f"reference data not found in {REF} (it is not part of a plain clone)"
        print(json.dumps(result))
        return
    case = np.load(REF / "case0.npz")
    sd = np.load(REF / "state_dict.npz")
    dev = torch.device(args.device)
    verts = torch.from_numpy(case["v"][:, :5023]).to(dev)
    faces = torch.from_numpy(sd["faces"][0]).to(dev)
    fuv = torch.from_numpy(sd["face_uvcoords"][0]).to(dev)
    mask = torch.from_numpy(sd["uv_face_mask"]).to(dev)

    raster_t, alpha_t, first = [], [], None
    with torch.no_grad():
        for i in range(args.runs + 1):                  # first run is a warm-up (imports, allocator)
            _sync(args.device)
            t0 = time.perf_counter()
            views = rasterize_views(verts, faces, fuv)
            _sync(args.device)
            t1 = time.perf_counter()
            view_alphas(views, mask)
            _sync(args.device)
            t2 = time.perf_counter()
            if i == 0:
                first = (t1 - t0, t2 - t1)
            else:
                raster_t.append(t1 - t0)
                alpha_t.append(t2 - t1)
    total = [a + b for a, b in zip(raster_t, alpha_t)]
    result.update({
        "raster_4views_s_median": round(statistics.median(raster_t), 4),
        "alphas_s_median": round(statistics.median(alpha_t), 4),
        "total_s_median": round(statistics.median(total), 4),
        "total_s_min": round(min(total), 4),
        # The first call in a process also pays for one-off costs, excluded from the medians: the scipy.ndimage
        # import (alphas) and fresh memory pages (glibc mmaps each tensor above 128 KiB until its adaptive
        # threshold grows), which is slow in some sandboxed VMs.
        "first_call_raster_s": round(first[0], 4),
        "first_call_alphas_s": round(first[1], 4),
        "target_s": 0.2,
        "official_pytorch3d_s": "13.9-15.0",
        "torch": torch.__version__,
    })
    print(json.dumps(result))


if __name__ == "__main__":
    main()
