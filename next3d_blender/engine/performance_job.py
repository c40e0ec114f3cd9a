"""Performance capture for Blender's "Import Performance" (blender/performance.py). No bpy here.

* The "track" job, run in the worker (or in Blender's process in background mode) like the other jobs (jobs.py):
  a video, a folder of images or a Live Link Face CSV -> the project's FLAME animation file (.npz) and its report
  (NAME.track.json) beside it, by core.capture.track_clip with the head model the rig was built from
  (docs/capture.md). Emits "begin" per stage (finding the face in every frame, then the fit), "frame" per frame
  read, "step" per solver iteration, "warning" for what the report notes, then "done" with the file's path (or
  "cancelled": nothing is written). Blender keys the rig from the file, so a track is never redone to key again.
* The animation's numbers as Blender keys them, with numpy alone (Blender's Python may have no torch):
  `read_animation` reads the .npz or the hand-editable .json (core/flame/animation.py's layouts, the .json through
  core/flame/animation_json.py; checked as core's reader checks them) and `resample` puts it on the scene's frame
  rate.

Importing this module registers TrackJob in job_specs.JOB_TYPES (jobs.py imports it), so a "track" job's wire
form is read back like the others'.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Dict, List, Tuple

import numpy as np

from ..core.errors import InputError
from ..core.flame.animation_json import (DEFAULT_FPS, FIELD_SIZES, SEQUENCE_FORMAT, json_fps,
                                         read_json_animation)
from ..core.io.bounded_read import BoundedReadError, read_npz
from ..core.io.restricted_pickle import short_repr
from .job_specs import JOB_TYPES, EngineJob

# core/flame/animation.py's layout, from its numpy-only half (that module needs torch).
FIELDS = tuple(FIELD_SIZES)
SIZES = {k: size for k, size in FIELD_SIZES.items() if size is not None}
ROTATIONS = ("jaw", "neck", "global_rotation", "eyes")
MAX_FPS = 1000.0
MAX_COEFFICIENT, MAX_ROTATION = 10.0, math.pi     # core.flame.params' limits
LIVE_LINK_SUFFIX = ".csv"


@dataclass(frozen=True, kw_only=True)
class TrackJob(EngineJob):
    """A clip -> an animation file of the job's head (`head`: the model the rig was built from)."""

    kind: ClassVar[str] = "track"

    source_path: str = ""      # a video, a folder of images (or one image), or a Live Link Face .csv
    out_path: str = ""         # the animation .npz written; its report NAME.track.json goes beside it
    face: int = 0              # which face when there are several (1-based, left to right); 0: the largest
    fps: float = 0.0           # images: their frame rate; a video: resample to it; 0: the clip's own (images: 30)
    smoothing: float = 1.0     # strength of the temporal terms (core.capture.fit.FitOptions.smoothing)


JOB_TYPES[TrackJob.kind] = TrackJob


class _Stopped(Exception):
    """Raised from the progress callback when the job is cancelled."""


def track_job(job: TrackJob, arrays: Dict[str, np.ndarray], emit, should_stop) -> dict:
    from ..core.flame.animation import save_sequence

    if not job.source_path:
        raise InputError("No clip is given; choose a video, a folder of images or a Live Link Face .csv.")
    out = Path(job.out_path)
    if not job.out_path or out.suffix.lower() != ".npz":
        raise InputError(f"The animation file {job.out_path or '(none)'!r} must be a .npz file name.")
    source = Path(job.source_path)
    if not source.exists():
        raise InputError(f"{job.source_path!r} does not exist; choose a video, a folder of images or a Live Link "
                         "Face .csv.")
    if source.suffix.lower() == LIVE_LINK_SUFFIX:
        from ..core.capture.arkit import live_link_sequence

        if job.head.kind != "default":
            raise InputError("A Live Link Face recording is mapped onto the built-in head's named expressions; set "
                             "the model to Bundled Default (Next3D > Model) and animate a built-in head.")
        emit("begin", {"total": 0, "description": f"reading the ARKit curves of {source.name}"}, None)
        seq = live_link_sequence(source, job.fps or None)
        out.parent.mkdir(parents=True, exist_ok=True)
        save_sequence(out, seq)
        summary = {"out_path": str(out), "report": "", "frames": seq.n_frames, "fps": seq.fps, "faces": "",
                   "error_px": None}
        emit("done", summary, None)
        return summary

    from ..core.capture.fit import FitOptions
    from ..core.capture.output import report_path, write_result
    from ..core.capture.pipeline import track_clip
    from .jobs import load_head_model       # not at module level: jobs.py imports this module

    flame = load_head_model(job.head, job.cache_dir)
    stage = {"name": ""}

    def progress(name: str, done: int, total: int) -> None:
        if should_stop():
            raise _Stopped()
        if name != stage["name"]:
            stage["name"] = name
            what = "finding the face in every frame" if name == "landmarks" else "fitting FLAME to the whole clip"
            emit("begin", {"total": total, "description": what}, None)
        if name == "landmarks":
            emit("frame", {"number": done, "done": done, "total": total}, None)
        else:
            emit("step", {"done": done, "total": total}, None)

    try:
        result = track_clip(source, flame, face=job.face or None, fps=job.fps or None,
                            options=FitOptions(smoothing=job.smoothing), progress=progress,
                            on_open=lambda text: emit("begin", {"total": 0, "description": text}, None))
    except _Stopped:
        summary = {"out_path": "", "missing": []}
        emit("cancelled", summary, None)
        return summary
    for message in result.messages:
        emit("warning", {"message": message}, None)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_result(out, result)
    seq, report = result.sequence, result.report
    summary = {"out_path": str(out), "report": str(report_path(out)), "frames": seq.n_frames, "fps": seq.fps,
               "faces": result.faces_note, "error_px": report["landmark_error_px"]["mean"]}
    emit("done", summary, None)
    return summary


# ------------------------------------------------------------------------------------------------ the file

@dataclass(frozen=True)
class Animation:
    """An animation file's per-frame values: each field [T, n] float64 (missing fields are zero)."""

    values: Dict[str, np.ndarray]
    fps: float
    path: str = ""

    @property
    def n_frames(self) -> int:
        return int(self.values["jaw"].shape[0])


def read_animation(path) -> Animation:
    """The project's FLAME animation file (core/flame/animation.py's .npz, or its hand-editable .json through
    core/flame/animation_json.py), read and checked with numpy alone; InputError in one line naming what is wrong
    and what to give instead."""
    path = Path(path)
    name = path.name
    if not path.is_file():
        raise InputError(f"The animation file {str(path)!r} does not exist.")
    suffix = path.suffix.lower()
    if suffix == ".json":
        doc = read_json_animation(path, label=name)
        values = _checked_values(name, doc.values, doc.values["jaw"].shape[0])
        return Animation(values, _checked_fps(name, json_fps(doc.fps, name)), str(path))
    if suffix != ".npz":
        raise InputError(f"{name} is not an animation file: give a .npz (the format `next3d track --out anim.npz` "
                         "writes) or a .json animation.")
    try:
        arrays = read_npz(path)
    except BoundedReadError as exc:
        raise InputError(f"{name} is not an animation .npz written by Next3D: {exc}.") from None
    except OSError as exc:
        raise InputError(f"{name} cannot be read ({exc.strerror or exc}).") from None
    fmt = arrays.get("format")
    if fmt is not None and str(fmt.reshape(()) if fmt.size == 1 else fmt) != SEQUENCE_FORMAT:
        raise InputError(f"{name} holds {str(fmt)!r}, not a FLAME animation ({SEQUENCE_FORMAT}).")
    present = [k for k in FIELDS if k in arrays]
    if not present:
        raise InputError(f"{name} is not a FLAME animation: it has no arrays named {', '.join(FIELDS)} (it holds "
                         f"{', '.join(sorted(arrays)) or 'nothing'}).")
    bad = {k: list(arrays[k].shape) for k in present if arrays[k].ndim != 2 or arrays[k].dtype.kind not in "iuf"}
    lengths = {arrays[k].shape[0] for k in present if k not in bad}
    if bad or len(lengths) != 1:
        shapes = {k: list(arrays[k].shape) for k in present}
        raise InputError(f"{name}: the parameter arrays must all be numbers [frames, n] with the same number of "
                         f"frames; got {shapes}.")
    n = lengths.pop()
    if n == 0:
        raise InputError(f"{name} has no frames.")
    values = _checked_values(name, {k: arrays[k] for k in present}, n)
    fps = arrays.get("fps")
    if fps is not None and fps.size != 1:
        raise InputError(f"{name}: 'fps' is an array of shape {list(fps.shape)}; it must be one number.")
    return Animation(values, _checked_fps(name, fps.reshape(()).item() if fps is not None else DEFAULT_FPS),
                     str(path))


def _checked_values(name: str, arrays: Dict[str, np.ndarray], n: int) -> Dict[str, np.ndarray]:
    """Every field as float64 [n, k] (missing ones zero), finite and within FLAME's limits (core.flame.params)."""
    values = {}
    for k in FIELDS:
        a = np.asarray(arrays[k], np.float64) if k in arrays else np.zeros((n, SIZES.get(k, 0)))
        if k in SIZES and a.shape[1] != SIZES[k]:
            raise InputError(f"{name}: {k!r} has {a.shape[1]} numbers per frame; it needs {SIZES[k]}.")
        if not np.isfinite(a).all():
            raise InputError(f"{name}: {k!r} holds NaN or infinite values.")
        limit = MAX_ROTATION + 1e-4 if k in ROTATIONS else MAX_COEFFICIENT
        norms = np.linalg.norm(a.reshape(n, -1, 3), axis=2) if k in ROTATIONS else np.abs(a)
        if norms.size and norms.max() > limit:
            raise InputError(f"{name}: {k!r} reaches {norms.max():.3g}, beyond {limit:.3g}; it is not a FLAME "
                             "animation.")
        values[k] = a
    return values


def _checked_fps(name: str, value) -> float:
    try:
        rate = float(value)
    except (TypeError, ValueError, OverflowError):      # e.g. text, or a JSON integer of 400 digits
        raise InputError(f"{name}: its frame rate {short_repr(value, 40)} is not a number; give one of at most "
                         f"{MAX_FPS:g} (e.g. 30).") from None
    if not math.isfinite(rate) or not 0 < rate <= MAX_FPS:
        raise InputError(f"{name}: its frame rate is {rate:g}; it must be positive and at most {MAX_FPS:g}.")
    return rate


def resample(animation: Animation, fps: float) -> Tuple[np.ndarray, Dict[str, np.ndarray]]:
    """The animation at `fps` (the scene's): (frame offsets 0..K-1, each field [K, n]) for the times k / fps
    that lie within it, by linear interpolation between its frames (per component for the axis-angles, as
    core/capture/output.py resamples: fine between neighbouring frames). The same rate keeps every frame as is."""
    n = animation.n_frames
    if not 0 < fps <= MAX_FPS:
        raise InputError(f"The scene's frame rate {fps:g} is not usable; set Output properties > Frame Rate.")
    count = int(math.floor((n - 1) * fps / animation.fps + 1e-6)) + 1
    position = np.arange(count) * (animation.fps / fps)
    if abs(fps - animation.fps) < 1e-9:
        return np.arange(count), {k: v.copy() for k, v in animation.values.items()}
    lo = np.minimum(np.floor(position + 1e-9).astype(np.int64), n - 1)
    hi = np.minimum(lo + 1, n - 1)
    w = (position - lo)[:, None]
    return np.arange(count), {k: v[lo] * (1 - w) + v[hi] * w for k, v in animation.values.items()}


def coefficient_notes(animation: Animation, shape_keys: int, expression_keys: int, with_shape: bool) -> List[str]:
    """Warnings when the animation's coefficients and the rig's Shape/Exp keys differ in number."""
    notes = []
    pairs = [("expression", expression_keys, "Exp")] + ([("shape", shape_keys, "Shape")] if with_shape else [])
    for field, keys, prefix in pairs:
        values = animation.values[field]
        width = values.shape[1]
        if width > keys and np.abs(values[:, keys:]).max() > 1e-6:
            notes.append(f"The animation has {width} {field} coefficients but the rig only {keys} {prefix} keys; "
                         f"the last {width - keys} are left out (was it tracked with another head model?).")
        elif width and width < keys:
            notes.append(f"The animation has {width} {field} coefficients for the rig's {keys} {prefix} keys; the "
                         f"other keys are keyed at 0 (was it tracked with another head model?).")
    return notes


__all__ = ["TrackJob", "track_job", "Animation", "read_animation", "resample", "coefficient_notes"]
