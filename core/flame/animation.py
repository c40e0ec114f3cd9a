"""Animation files: FLAME parameters per frame (.npz, or .json for editing by hand), and the per-frame OBJ +
landmark files of the official reenactment data.

.npz layout (no pickled objects): `format` = 'next3d-flame-sequence', `version` = 1, `fps` (scalar), one float32
array [T, n] per FlameParams field (shape, expression, jaw, neck, global_rotation, eyes), optional `cameras`
[T, 25] generator camera labels.

.json layout:
    {
      "format": "next3d-flame-sequence", "version": 1,
      "fps": 30.0,
      "shape": [ ... ],                  <- optional identity shared by every frame
      "frames": [
        {"expression": [...], "jaw": [...], "neck": [...], "global_rotation": [...], "eyes": [...],
         "shape": [...], "camera": [25 numbers]},
        ...
      ]
    }
Every frame field is optional (missing = zeros; shorter shape/expression lists are zero-padded). Frames are
counted from 0 in error messages (the position in "frames"). Writes are atomic (temporary file + rename).
The .json layout is parsed by animation_json.py with numpy alone, so Blender's Python (no torch) reads it too.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch

from ..errors import InputError
from ..io.atomic import atomic_write, write_bytes_atomic
from ..io.bounded_read import BoundedReadError, read_npz
from ..io.mesh_files import read_mesh_input
from .animation_json import (CAMERA_SIZE, DEFAULT_FPS, SEQUENCE_FORMAT, SEQUENCE_VERSION, json_fps,
                             read_json_animation)
from .params import PARAM_FIELDS, FlameParams

__all__ = ["FlameSequence", "save_sequence", "load_sequence", "read_obj_sequence", "list_obj_sequence",
           "SEQUENCE_FORMAT", "SEQUENCE_VERSION"]

PathLike = Union[str, os.PathLike]

_FIELD_NAMES = tuple(f.name for f in PARAM_FIELDS)
MAX_FPS = 1000.0


@dataclass(frozen=True, eq=False)
class FlameSequence:
    """FLAME parameters for T frames.

    frames: FlameParams with batch T (one row per frame).
    fps: frames per second (> 0).
    cameras: optional [T, 25] generator camera labels (cam2world 16 + normalized intrinsics 9), one per frame.
    """

    frames: FlameParams
    fps: float = DEFAULT_FPS
    cameras: Optional[torch.Tensor] = None

    def __post_init__(self) -> None:
        if not isinstance(self.frames, FlameParams):
            raise InputError(f"FlameSequence.frames must be FlameParams, got {type(self.frames).__name__}.")
        try:
            fps = float(self.fps)
        except (TypeError, ValueError, OverflowError):
            raise InputError(f"FlameSequence.fps must be a number, got {self.fps!r}.") from None
        if not math.isfinite(fps) or fps <= 0 or fps > MAX_FPS:
            raise InputError(f"FlameSequence.fps is {fps:g}; give a positive frame rate of at most {MAX_FPS:g} "
                             "(e.g. 30).")
        object.__setattr__(self, "fps", fps)
        if self.cameras is not None:
            cams = torch.as_tensor(self.cameras, dtype=torch.float32)
            if cams.shape != (self.n_frames, CAMERA_SIZE):
                raise InputError(f"FlameSequence.cameras has shape {list(cams.shape)}; expected "
                                 f"[{self.n_frames}, {CAMERA_SIZE}] (one camera label per frame).")
            if not bool(torch.isfinite(cams).all()):
                raise InputError("FlameSequence.cameras contains NaN or infinite values.")
            object.__setattr__(self, "cameras", cams)

    @property
    def n_frames(self) -> int:
        return self.frames.batch_size

    def __len__(self) -> int:
        return self.n_frames

    @property
    def duration(self) -> float:
        """Seconds."""
        return self.n_frames / self.fps


# ----------------------------------------------------------------------------------------------------------------
# Writing

def _numbers(arr: np.ndarray) -> list:
    # The shortest decimal that reads back as the same float32: exact round trips, readable files.
    return [float(s) for s in np.asarray(arr, dtype=np.float32).astype(str)]


def _json_text(seq: FlameSequence) -> str:
    values = seq.frames.to_dict()
    shape = values["shape"]
    shared = shape.shape[1] > 0 and bool((shape == shape[:1]).all())
    head = {"format": SEQUENCE_FORMAT, "version": SEQUENCE_VERSION, "fps": seq.fps}
    lines = ["{"] + [f"  {json.dumps(k)}: {json.dumps(v)}," for k, v in head.items()]
    if shared:
        lines.append(f'  "shape": {json.dumps(_numbers(shape[0]))},')
    lines.append('  "frames": [')
    cams = seq.cameras.numpy() if seq.cameras is not None else None
    for t in range(seq.n_frames):
        frame = {}
        for name in _FIELD_NAMES:
            if name == "shape" and (shared or shape.shape[1] == 0):
                continue
            frame[name] = _numbers(values[name][t])
        if cams is not None:
            frame["camera"] = _numbers(cams[t])
        sep = "," if t + 1 < seq.n_frames else ""
        lines.append(f"    {json.dumps(frame)}{sep}")
    lines += ["  ]", "}", ""]
    return "\n".join(lines)


def save_sequence(path: PathLike, seq: FlameSequence) -> Path:
    """Write a FlameSequence to .npz or .json (chosen by the suffix), atomically."""
    path = Path(path)
    if not isinstance(seq, FlameSequence):
        raise InputError(f"save_sequence needs a FlameSequence, got {type(seq).__name__}.")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        arrays = dict(seq.frames.to_dict(), format=np.array(SEQUENCE_FORMAT), version=np.array(SEQUENCE_VERSION),
                      fps=np.array(seq.fps, dtype=np.float64))
        if seq.cameras is not None:
            arrays["cameras"] = seq.cameras.numpy().astype(np.float32)
        atomic_write(path, lambda fh: np.savez(fh, **arrays))
    elif suffix == ".json":
        text = _json_text(seq)
        write_bytes_atomic(path, text.encode("utf-8"))
    else:
        raise InputError(f"Cannot write an animation to {path.name}: use a .npz or .json file name.")
    return path


# ----------------------------------------------------------------------------------------------------------------
# Reading

def _frames(values: dict, path: Path) -> FlameParams:
    """Build the batched FlameParams; on a validation error, name the first bad frame (found by bisection, so a
    long animation costs a few batched checks, not one per frame)."""
    def fails(n: int) -> bool:
        try:
            FlameParams(**{k: v[:n] for k, v in values.items()})
        except InputError:
            return True
        return False

    try:
        return FlameParams(**values)
    except InputError as batch_error:
        lo, hi = 0, max((len(v) for v in values.values()), default=0)   # frames [:lo] pass, [:hi] fail
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if fails(mid) else (mid, hi)
        t = hi - 1
        try:
            FlameParams(**{k: v[t:t + 1] for k, v in values.items()})
        except InputError as exc:
            raise InputError(f"{path}, frame {t}: {exc}") from None
        raise InputError(f"{path}: {batch_error}") from None


def _load_npz(path: Path) -> FlameSequence:
    try:
        arrays = read_npz(path)
    except BoundedReadError as exc:
        raise InputError(f"{path} is not an animation .npz written by this project: {exc}.") from None
    except OSError as exc:
        raise InputError(f"{path} is not a readable .npz file ({exc.strerror or exc}).") from None
    fmt = str(arrays.get("format", SEQUENCE_FORMAT))
    if fmt != SEQUENCE_FORMAT:
        raise InputError(f"{path} holds {fmt!r}, not a FLAME animation ({SEQUENCE_FORMAT}).")
    present = [k for k in _FIELD_NAMES if k in arrays]
    if not present:
        raise InputError(f"{path} holds no FLAME parameters (expected arrays named {', '.join(_FIELD_NAMES)}).")
    lengths = {k: (arrays[k].shape[0] if arrays[k].ndim == 2 else None) for k in present}
    if any(v is None for v in lengths.values()) or len(set(lengths.values())) != 1:
        shapes = {k: list(arrays[k].shape) for k in present}
        raise InputError(f"{path}: the parameter arrays must all be [frames, n] with the same number of frames; got "
                         f"{shapes}.")
    frames = _frames({k: arrays[k] for k in present}, path)
    if "fps" in arrays and arrays["fps"].size != 1:
        raise InputError(f"{path}: 'fps' is an array of shape {list(arrays['fps'].shape)}; it must be one number.")
    fps = float(arrays["fps"].reshape(())) if "fps" in arrays else DEFAULT_FPS
    try:
        return FlameSequence(frames, fps, arrays.get("cameras"))
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from None


def _load_json(path: Path) -> FlameSequence:
    doc = read_json_animation(path)   # the layout, with numpy alone (Blender's Python reads it the same way)
    params = _frames(doc.values, path)
    fps = json_fps(doc.fps, str(path))
    try:
        return FlameSequence(params, fps, doc.cameras)
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from None


def load_sequence(path: PathLike) -> FlameSequence:
    """Read an animation written by save_sequence (or by hand, for .json)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"Animation file {str(path)!r} does not exist.")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return _load_npz(path)
    if suffix == ".json":
        return _load_json(path)
    raise InputError(f"Cannot read an animation from {path.name}: use a .npz or .json file.")


# ----------------------------------------------------------------------------------------------------------------
# Official reenactment data: <id>.obj + <id>_kpt2d.txt per frame

def _natural_key(name: str) -> list:
    return [int(tok) if tok.isdigit() else tok for tok in re.split(r"(\d+)", name)]


def list_obj_sequence(folder: PathLike) -> list[tuple[Path, Path]]:
    """The (obj, landmarks) file pairs of a reenactment folder, sorted by name (numbers compared as numbers).

    Every `<id>.obj` needs its `<id>_kpt2d.txt` (68 lines of x y z, FLAME units)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"Mesh sequence folder {str(folder)!r} does not exist.")
    objs = sorted((p for p in folder.iterdir() if p.suffix.lower() == ".obj" and p.is_file()),
                  key=lambda p: _natural_key(p.name))
    if not objs:
        raise InputError(f"{folder} holds no .obj meshes; a reenactment folder has <id>.obj + <id>_kpt2d.txt per "
                         "frame.")
    pairs = []
    for t, obj in enumerate(objs):
        kpt = obj.with_name(obj.stem + "_kpt2d.txt")
        if not kpt.is_file():
            raise InputError(f"Frame {t} ({obj.name}) in {folder} has no landmark file {kpt.name}; every <id>.obj "
                             "needs its <id>_kpt2d.txt (68 lines of x y z).")
        pairs.append((obj, kpt))
    return pairs


def read_obj_sequence(folder: PathLike, *, n_vertices: int = 5023, n_landmarks: int = 68,
                      with_names: bool = False) -> Union[torch.Tensor, tuple[torch.Tensor, list[str]]]:
    """Read a reenactment folder into the generator's mesh inputs [T, n_vertices + n_landmarks, 3] (FLAME units).

    With `with_names`, also return the frame ids (the OBJ stems) in order."""
    pairs = list_obj_sequence(folder)
    meshes = []
    for t, (obj, kpt) in enumerate(pairs):
        try:
            meshes.append(read_mesh_input(obj, kpt, n_vertices=n_vertices, n_landmarks=n_landmarks))
        except InputError as exc:
            raise InputError(f"Frame {t} ({obj.name}) of {folder}: {exc}") from None
    out = torch.cat(meshes, dim=0)
    if with_names:
        return out, [obj.stem for obj, _ in pairs]
    return out
