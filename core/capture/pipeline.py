"""Performance capture in one call: a video (or a folder of images) -> per-frame landmarks -> one FLAME fit over
the clip -> the project's FLAME animation and a report. `next3d track` and the Blender side call `track_clip`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Optional, Union

from ..errors import InputError
from ..flame.model import FlameModel
from .fit import FitOptions, fit_clip
from .frames import open_frames
from .output import TrackResult, build_result
from .tracking import track_landmarks

__all__ = ["track_clip"]

# progress(stage, done, total): stage "landmarks" (frames read) or "fit" (solver iterations).
Progress = Optional[Callable[[str, int, int], None]]


def track_clip(path: Union[str, os.PathLike], flame: FlameModel, *, face: Optional[int] = None,
               fps: Optional[float] = None, options: FitOptions = FitOptions(), keep_translation: bool = False,
               progress: Progress = None, on_open: Optional[Callable[[str], None]] = None) -> TrackResult:
    """Track the face in a video, a folder of images or one image and fit FLAME to it.

    face: which face (1-based, left to right in the first frame with a face; default the largest).
    fps: frame rate of images (default 30); for a video, the rate to resample the animation to (default its own).
    keep_translation: write per-frame cameras that carry the head's shift across the frame (docs/capture.md).
    on_open: called with a description of the clip once it is open (before the long part)."""
    source = open_frames(path, fps)
    if on_open is not None:
        on_open(f"{source.description}, {source.expected_frames} frame{'s' if source.expected_frames != 1 else ''}")
    name = Path(path).name

    def stage(which: str):
        return None if progress is None else (lambda done, total: progress(which, done, total))

    track = track_landmarks(source, face=face, progress=stage("landmarks"), source=name)
    if not track.found.any():
        problems = f" ({'; '.join(track.notes)})" if track.notes else ""
        raise InputError(f"No face was found in any of the {track.n_frames} frames of {name}{problems}. Give a clip "
                         "where a face is seen from the front or the side, at least about 40 pixels high.")
    fit = fit_clip(flame, track.landmarks, track.irises, track.found, track.fps, options, progress=stage("fit"))
    return build_result(track, fit, source=str(path), fps=fps if source.kind == "video" else source.fps,
                        keep_translation=keep_translation,
                        options={"smoothing": options.smoothing, "face": face, "steps": options.steps})
