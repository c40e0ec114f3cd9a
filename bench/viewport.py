"""The Next3D live viewport's speed (next3d_blender/blender/viewport.py), without Blender: the same pieces it runs
(a virtual camera per head, engine/compose.py; the neural job in a worker process, engine/jobs.py; the frame
cache, engine/frame_cache.py; placing, matting and compositing at the viewport's size) on the bundled model.

Prints one JSON line: time to first pixel (cold: the worker starts, loads the model and renders the first frame,
which is then placed), the seconds per new frame and frames per second while the view orbits (every frame new to
the cache), the frames per second of frames read back from the cache (scrubbing over frames seen before), and the
cost of placing one picture at the viewport's size. Never asserts.

    .venv/bin/python bench/viewport.py [--size 960x540] [--frames 6] [--threads 0] [--precision fp32]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.flame.mesh_pose import MeshHead  # noqa: E402
from next3d_blender.engine import compose, convert, framing  # noqa: E402
from next3d_blender.engine.heads import HeadSpec, head_arrays  # noqa: E402
from next3d_blender.engine.job_specs import ModelSpec, NeuralJob  # noqa: E402
from next3d_blender.engine.worker import WorkerClient, iter_until_finished  # noqa: E402


def head_frame():
    """The built-in head at rest: one-frame arrays without the camera rows."""
    arrays = head_arrays(HeadSpec("default"))
    model = MeshHead.from_arrays(arrays)
    v = np.asarray(arrays["v_template"], np.float64)
    frame = model.frame(v, v)
    return {"numbers": np.array([1], np.int64), "vertices": frame.vertices[None], "landmarks": frame.landmarks[None],
            "faces": np.ascontiguousarray(arrays["faces"], np.int32)}


def shot(base, width: int, height: int, yaw_deg: float):
    """A 50 mm viewport camera 0.9 m from the face, `yaw_deg` round it."""
    a = math.radians(yaw_deg)
    target = np.array([0.0, 0.0, 0.0])
    position = target + 0.9 * np.array([math.sin(a), 0.0, math.cos(a)])
    c2w = framing.look_at(position, target)
    params = convert.CameraParams(lens=50.0, sensor_width=36.0, sensor_height=24.0, sensor_fit="AUTO", shift_x=0.0,
                                  shift_y=0.0, width=width, height=height)
    k = convert.square_framing(convert.intrinsics_pixels(params), width, height).intrinsics
    arrays = dict(base, cam2world=c2w[None].astype(np.float32), intrinsics=k[None].astype(np.float32))
    return compose.plan_head("head", arrays, params)


def run(client, job, the_shot):
    """Submit one neural job and wait for its picture: (seconds, rgba)."""
    start = time.perf_counter()
    client.submit(job.to_dict(), the_shot.job_arrays)
    got = {}
    for header, arrays in iter_until_finished(client, 900):
        if header["type"] == "image":
            got = arrays
        elif header["type"] == "error":
            raise SystemExit(f"the worker failed: {header.get('message')}")
    rgba, _ = compose.composite([compose.place(the_shot, got["rgb"], got["depth"])], the_shot.width,
                                the_shot.height)
    return time.perf_counter() - start, rgba


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="960x540", help="viewport size WxH in pixels")
    ap.add_argument("--frames", type=int, default=6, help="new frames to time while orbiting")
    ap.add_argument("--threads", type=int, default=0, help="torch threads in the worker (0: torch's default)")
    ap.add_argument("--precision", default="fp32", choices=("fp32", "fp32-fast", "bf16"),
                    help="Preferences > Precision")
    args = ap.parse_args()
    width, height = (int(x) for x in args.size.lower().split("x"))
    base = head_frame()
    cache = tempfile.mkdtemp(prefix="next3d-viewport-bench-")
    job = NeuralJob(model=ModelSpec(precision=args.precision), side=framing.DEFAULT_SIDE, frame_cache=cache,
                    threads=args.threads)
    client = WorkerClient(sys.executable)
    try:
        first_shot = shot(base, width, height, 0.0)
        first, _ = run(client, job, first_shot)                 # cold: worker, model, identity, first frame
        new = [run(client, job, shot(base, width, height, 2.0 * (k + 1)))[0] for k in range(args.frames)]
        cached = [run(client, job, shot(base, width, height, 2.0 * (k + 1)))[0] for k in range(args.frames)]
        place = []
        for _ in range(3):
            t = time.perf_counter()
            compose.place(first_shot, np.zeros((512, 512, 3), np.float32), np.ones((128, 128), np.float32))
            place.append(time.perf_counter() - t)
    finally:
        client.stop()
    print(json.dumps({
        "viewport": f"{width}x{height}", "side": framing.DEFAULT_SIDE, "precision": args.precision,
        "cpus": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "time_to_first_pixel_s": round(first, 2),
        "new_frame_s": round(statistics.median(new), 3), "new_frames_per_s": round(1.0 / statistics.median(new), 2),
        "cached_frames_per_s": round(1.0 / statistics.median(cached), 2),
        "place_s": round(statistics.median(place), 3)}))


if __name__ == "__main__":
    main()
