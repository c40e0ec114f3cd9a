"""A tracked clip as the project's FLAME animation (core/flame/animation.py) plus a report beside it.

The animation holds per frame the FLAME parameters (the shared shape repeated, expression, jaw, zero neck, the head
pose as global_rotation, eyes), and per-frame cameras only when asked to keep the head's translation
(docs/capture.md#head-motion). Its frames are evenly spaced at `fps`: a clip with a variable frame rate (phones
record so) is resampled onto even times by linear interpolation, so that the animation keeps the clip's timing, at
the clip's usual rate (one over the median frame interval) unless told another.

The report, `<animation stem>.track.json`, says what was tracked: the source, frames and frame rate, the faces
found and which one was followed, the frames without a face (filled by interpolation), the landmark errors per
frame, the head's translation per frame, and notes about the input (a truncated video, a variable frame rate).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

import numpy as np
import torch

from ..flame.animation import MAX_FPS, FlameSequence, save_sequence
from ..flame.params import PARAM_FIELDS, FlameParams
from ..io.atomic import write_bytes_atomic
from .fit import ClipFit, cameras_from_translation
from .tracking import LandmarkTrack, frame_ranges

__all__ = ["TrackResult", "frame_rate_problem", "resample", "build_result", "write_result", "report_path",
           "describe_ranges"]

_VFR_TOLERANCE = 0.25     # frame intervals further than this fraction from the median make a variable frame rate


@dataclass
class TrackResult:
    sequence: FlameSequence
    report: dict
    messages: List[str] = field(default_factory=list)    # what the user should read (missing frames, notes)
    faces_note: str = ""                                 # how many faces were found, where, which one was tracked


def frame_rate_problem(times: np.ndarray) -> Optional[str]:
    """A sentence when the frames are not evenly spaced (a variable frame rate), else None."""
    if len(times) < 3:
        return None
    dt = np.diff(times)
    med = float(np.median(dt))
    if med <= 0 or np.all(np.abs(dt - med) <= _VFR_TOLERANCE * med):
        return None
    return (f"the clip has a variable frame rate (frame intervals from {dt.min() * 1000:.1f} to "
            f"{dt.max() * 1000:.1f} ms)")


def resample(params: FlameParams, translation: torch.Tensor, times: np.ndarray, fps: float) -> tuple:
    """Per-frame values at `times` (seconds) -> the same at evenly spaced times k / fps over the clip's duration
    (linear interpolation; an axis-angle is interpolated per component, fine between nearby frames)."""
    n = max(int(math.floor(float(times[-1]) * fps + 1e-6)) + 1, 1)
    grid = np.arange(n) / fps

    def interp(values: torch.Tensor) -> torch.Tensor:
        flat = values.detach().double().reshape(values.shape[0], -1).numpy()
        out = np.stack([np.interp(grid, times, flat[:, j]) for j in range(flat.shape[1])], axis=1)
        return torch.from_numpy(out).to(values.dtype).reshape(n, *values.shape[1:])

    fields = {f.name: interp(getattr(params, f.name)) for f in PARAM_FIELDS if getattr(params, f.name).shape[1]}
    return FlameParams(**fields), interp(translation), grid


def describe_ranges(ranges) -> str:
    return ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in ranges)


def build_result(track: LandmarkTrack, fit: ClipFit, *, source: str, fps: Optional[float] = None,
                 keep_translation: bool = False, options: Optional[dict] = None) -> TrackResult:
    """The animation and report of a tracked and fitted clip. `fps`: the animation's frame rate (default: the
    clip's); the frames are resampled when it differs or the clip's frame rate varies."""
    messages: List[str] = list(track.notes)
    times = track.times
    rate = float(fps or track.fps)
    if not 0 < rate <= MAX_FPS:
        rate = 30.0
    vfr = frame_rate_problem(times)
    if vfr and not fps:             # the usual rate (the container's is an average over dropped or held frames)
        rate = round(1.0 / float(np.median(np.diff(times))), 3)
    params, translation = fit.params, fit.translation
    even = np.allclose(times, np.arange(len(times)) / rate, atol=0.25 / rate)
    if vfr or not even:
        params, translation, _ = resample(params, translation, times, rate)
        if vfr:
            messages.append(f"{vfr}; the animation is resampled to an even {rate:g} fps so it keeps the clip's "
                            f"timing ({len(times)} video frames -> {params.batch_size} animation frames). To keep "
                            "frames one to one, convert the video first: ffmpeg -i IN -vf fps=30 OUT.mp4")
    cameras = None
    if keep_translation:
        cameras = cameras_from_translation(ClipFit(params, translation, fit.camera, fit.crop, fit.error_px,
                                                   fit.iris_error_px, fit.projected, fit.filled))
    sequence = FlameSequence(params, rate, cameras)

    missing = frame_ranges(~track.found)
    leaving = frame_ranges(track.outside) if track.outside is not None else []
    if missing:
        count = int((~track.found).sum())
        what = f"No face in video frame{'s' if count > 1 else ''} {describe_ranges(missing)} ({count} of " \
               f"{track.n_frames}"
        if leaving:
            what += f"; leaving the picture in {describe_ranges(leaving)}"
        messages.append(what + "): filled by interpolating between the nearest tracked frames (held at the "
                        "start and end).")
    finite = np.isfinite(fit.error_px)
    report = {
        "format": "next3d-track-report", "version": 1, "source": source,
        "video_frames": track.n_frames, "video_fps": track.fps, "size": list(track.size),
        "variable_frame_rate": bool(vfr), "animation_frames": sequence.n_frames, "fps": rate,
        "faces": [b.to_dict() for b in track.faces], "faces_frame": track.faces_frame,
        "face": None if track.chosen is None else track.chosen + 1,
        "frames_without_face": [list(r) for r in missing], "frames_leaving_picture": [list(r) for r in leaving],
        "landmark_error_px": {"mean": float(fit.error_px[finite].mean()) if finite.any() else None,
                              "per_frame": [None if not math.isfinite(e) else round(float(e), 3)
                                            for e in fit.error_px]},
        "iris_error_px": [None if not math.isfinite(e) else round(float(e), 3) for e in fit.iris_error_px],
        "times": [round(float(t), 6) for t in times],
        "head_translation": np.round(fit.translation.numpy(), 5).tolist(),
        "clip_square": fit.crop.to_dict(), "head_translation_in_cameras": bool(keep_translation),
        "notes": messages, "options": options or {},
    }
    note = track.describe_faces() if track.faces else ""
    if note and track.faces_frame:
        note = f"(frame {track.faces_frame}) {note}"
    return TrackResult(sequence, report, messages, note)


def report_path(out: Path) -> Path:
    return Path(out).with_name(Path(out).stem + ".track.json")


def write_result(out, result: TrackResult) -> Path:
    """Write the animation (atomically, by core.flame.animation) and its report beside it."""
    out = Path(out)
    save_sequence(out, result.sequence)
    text = "{\n" + ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in result.report.items()) + "\n}\n"
    write_bytes_atomic(report_path(out), text.encode("utf-8"))
    return out
