"""Performance capture measured against a known answer (docs/capture.md#accuracy).

Renders a driving video from a known FLAME animation of the built-in head (core/capture/synthetic.py: 2 s still,
then jaw, smile, brows, gaze and head turns, each on its own period), encodes it as H.264, tracks it the way
`next3d track` does, and compares with the animation:
- per curve (jaw, head yaw / pitch / roll, gaze yaw / pitch, in degrees): mean absolute error, mean error (bias),
  correlation;
- landmark reprojection error (51 inner points, frame pixels): fit vs detections, fit vs the true points, and the
  detections vs the true points (the detector's own error, which includes where mediapipe and the head's own
  landmark embedding disagree);
- jitter: the mean frame-to-frame change on the still start (up to a quarter second before the motion starts);
all for the clip fit with its temporal terms and for the same fit with them off (each frame on its own, one shared
shape). Then the seconds per video frame of each stage. Timings depend on the machine's load: the uptime line says
what it was. Never asserts.

    .venv/bin/python bench/track.py [--seconds 10] [--fps 30] [--resolution 256] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.capture.fit import FitOptions, fit_clip  # noqa: E402
from core.capture.frames import open_frames  # noqa: E402
from core.capture.metrics import compare_curves, jitter, motion_curves  # noqa: E402
from core.capture.synthetic import known_performance, render_performance, write_clip_video  # noqa: E402
from core.capture.tracking import track_landmarks  # noqa: E402
from core.flame import FlameModel, load_model_data  # noqa: E402
from core.flame.builtin_head import BUILTIN_HEAD_PATH  # noqa: E402

CURVES = ("jaw", "head_yaw", "head_pitch", "head_roll", "gaze_yaw", "gaze_pitch")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--keep", type=Path, help="Folder to keep the video and the tracked landmarks in.")
    args = parser.parse_args()

    n = int(round(args.seconds * args.fps))
    params, still = known_performance(n, args.fps, still=2.0 / args.seconds)
    torch.set_num_threads(1)       # small rasterizations: a second thread only adds synchronisation on 2 cores
    t0 = time.perf_counter()
    clip = render_performance(params, fps=args.fps, still=still, resolution=args.resolution)
    print(f"rendered {n} frames of {args.resolution} px in {time.perf_counter() - t0:.1f} s (not part of tracking)")
    folder = args.keep or Path(tempfile.mkdtemp(prefix="bench_track_"))
    folder.mkdir(parents=True, exist_ok=True)
    video = write_clip_video(folder / "clip.mp4", clip.frames, args.fps)

    flame = FlameModel(load_model_data(BUILTIN_HEAD_PATH))
    torch.set_num_threads(2)
    load = os.getloadavg()
    t0 = time.perf_counter()
    track = track_landmarks(open_frames(video), source=video.name)
    t_landmarks = time.perf_counter() - t0
    found = int(track.found.sum())
    detector = np.linalg.norm(track.landmarks[:, 17:] - clip.landmarks[:, 17:], axis=-1)[track.found].mean()
    print(f"landmarks: {found} of {n} frames with a face, {t_landmarks:.1f} s "
          f"({t_landmarks / n:.3f} s a frame); detections vs true points {detector:.2f} px")

    truth = motion_curves(params)
    quiet = slice(0, max(still - int(round(0.25 * args.fps)), 2))
    rows = {}
    for label, smoothing in (("clip fit", 1.0), ("each frame", 0.0)):
        t0 = time.perf_counter()
        fit = fit_clip(flame, track.landmarks, track.irises, track.found, track.fps, FitOptions(smoothing=smoothing))
        seconds = time.perf_counter() - t0
        got = motion_curves(fit.params)
        figures = compare_curves(truth, got)
        vs_truth = np.linalg.norm(fit.projected[:, 17:] - clip.landmarks[:, 17:], axis=-1).mean()
        head = np.stack([got[k][quiet] for k in ("head_yaw", "head_pitch", "head_roll")], axis=1)
        gaze = np.stack([got[k][quiet] for k in ("gaze_yaw", "gaze_pitch")], axis=1)
        rows[label] = (figures, seconds, np.nanmean(fit.error_px), vs_truth,
                       {"head (deg)": jitter(head), "jaw (deg)": jitter(got["jaw"][quiet]), "gaze (deg)": jitter(gaze),
                        "expression": jitter(fit.params.expression[quiet].numpy())})

    print(f"\n{'':12s}" + "".join(f"{label:>28s}" for label in rows))
    print(f"{'curve (deg)':12s}" + "".join(f"{'MAE   bias   corr':>28s}" for _ in rows))
    for name in CURVES:
        cells = [f"{f['mae']:6.2f} {f['bias']:+6.2f} {f['corr']:6.3f}" for f in (r[0][name] for r in rows.values())]
        print(f"{name:12s}" + "".join(f"{c:>28s}" for c in cells))
    print(f"{'landmark error (px), fit to detections':40s}" + "".join(f"{r[2]:12.2f}" for r in rows.values()))
    print(f"{'landmark error (px), fit to true points':40s}" + "".join(f"{r[3]:12.2f}" for r in rows.values()))
    print(f"jitter, mean change per frame over frames 0-{quiet.stop - 1} (the truth holds still):")
    for key in next(iter(rows.values()))[4]:
        print(f"  {key:10s}" + "".join(f"{r[4][key]:28.4f}" for r in rows.values()))
    fit_s = rows["clip fit"][1]
    print(f"\nseconds per video frame: landmarks {t_landmarks / n:.3f}, clip fit {fit_s / n:.3f} "
          f"(each-frame fit {rows['each frame'][1] / n:.3f}); a {args.seconds:g} s clip at {args.fps:g} fps tracks "
          f"in {t_landmarks + fit_s:.0f} s")
    print(f"load average at the start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs")
    if args.keep:
        np.savez(folder / "track.npz", landmarks=track.landmarks, irises=track.irises, found=track.found,
                 true_landmarks=clip.landmarks)
        print(f"kept {video} and {folder / 'track.npz'}")


if __name__ == "__main__":
    main()
