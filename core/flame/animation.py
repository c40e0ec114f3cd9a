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
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch

from ..errors import InputError
from ..io.atomic import atomic_write, write_bytes_atomic
from ..io.bounded_read import BoundedReadError, json_loads, read_npz
from ..io.mesh_files import read_mesh_input
from ..io.restricted_pickle import short_repr
from .params import PARAM_FIELDS, FlameParams

__all__ = ["FlameSequence", "save_sequence", "load_sequence", "read_obj_sequence", "list_obj_sequence",
           "SEQUENCE_FORMAT", "SEQUENCE_VERSION"]

PathLike = Union[str, os.PathLike]

SEQUENCE_FORMAT = "next3d-flame-sequence"
SEQUENCE_VERSION = 1
DEFAULT_FPS = 30.0
_FIELD_NAMES = tuple(f.name for f in PARAM_FIELDS)
_CAMERA_SIZE = 25
_MIN_JSON_NUMBERS = 1 << 20   # a .json animation may ask for as many numbers as it has bytes, or this many
_MAX_NUMBER = 1e30            # larger JSON numbers would overflow float32 (and ints may have any length)
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
            if cams.shape != (self.n_frames, _CAMERA_SIZE):
                raise InputError(f"FlameSequence.cameras has shape {list(cams.shape)}; expected "
                                 f"[{self.n_frames}, {_CAMERA_SIZE}] (one camera label per frame).")
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


def _number_list(value: Any, where: str) -> list:
    if not isinstance(value, list) or not all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                              for x in value):
        raise InputError(f"{where} must be a list of numbers, got {short_repr(value, 60)}.")
    if any(_MAX_NUMBER < abs(x) < math.inf for x in value):   # NaN and infinity are named by FlameParams
        raise InputError(f"{where} holds a number beyond +-1e30; FLAME parameters are small numbers.")
    return value


def _load_json(path: Path) -> FlameSequence:
    try:
        text = path.read_text(encoding="utf-8")
        doc = json_loads(text, max_depth=None)   # the fields are checked one by one below
    except json.JSONDecodeError as exc:
        raise InputError(f"{path} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}.") from None
    except BoundedReadError as exc:
        raise InputError(f"{path} is not an animation: {exc}.") from None
    except UnicodeDecodeError:
        raise InputError(f"{path} is not a UTF-8 text file; write the animation as JSON text.") from None
    except ValueError as exc:   # e.g. an integer with more digits than Python converts
        raise InputError(f"{path} is not valid JSON ({' '.join(str(exc).split())[:120]}).") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("frames"), list):
        raise InputError(f'{path} must hold a JSON object with a "frames" list (see core/flame/animation.py).')
    fmt = doc.get("format", SEQUENCE_FORMAT)
    if fmt != SEQUENCE_FORMAT:
        raise InputError(f"{path} says format {short_repr(fmt)}, not {SEQUENCE_FORMAT!r}.")
    unknown = sorted(set(doc) - {"format", "version", "fps", "shape", "frames"})
    if unknown:
        raise InputError(f"{path} has unknown top-level key(s) {short_repr(unknown, 120)[1:-1]}; the keys are "
                         "format, version, fps, shape and frames.")
    frames = doc["frames"]
    if not frames:
        raise InputError(f'{path} has an empty "frames" list; give at least one frame.')
    shared_shape = _number_list(doc["shape"], f'{path}: "shape"') if "shape" in doc else []
    sizes = {f.name: f.size for f in PARAM_FIELDS}
    # Missing fields become zeros and shorter rows are padded: check what that asks for before building it.
    budget = max(len(text), _MIN_JSON_NUMBERS)
    fixed = sum(size for size in sizes.values() if size is not None)
    if len(frames) * (fixed + len(shared_shape)) > budget:
        raise InputError(f'{path}: {len(frames):,} frames of {fixed + len(shared_shape)} numbers each are more than '
                         f"a file of {len(text):,} characters may ask for; split the animation.")
    columns: dict[str, list] = {name: [] for name in _FIELD_NAMES}
    cameras: list = []
    for t, frame in enumerate(frames):
        where = f"{path}, frame {t}"
        if not isinstance(frame, dict):
            raise InputError(f"{where} is a {type(frame).__name__}; each frame must be a JSON object.")
        unknown = sorted(set(frame) - set(_FIELD_NAMES) - {"camera"})
        if unknown:
            raise InputError(f"{where} has unknown key(s) {short_repr(unknown, 120)[1:-1]}; the keys are "
                             f"{', '.join(_FIELD_NAMES)} and camera.")
        for name in _FIELD_NAMES:
            default = shared_shape if name == "shape" else [0.0] * (sizes[name] or 0)
            value = _number_list(frame[name], f'{where}: "{name}"') if name in frame else default
            if sizes[name] is not None and len(value) != sizes[name]:
                raise InputError(f'{where}: "{name}" has {len(value)} numbers; it needs exactly {sizes[name]}.')
            columns[name].append(value)
        if t == 0:
            with_cameras = "camera" in frame
        elif ("camera" in frame) != with_cameras:
            raise InputError(f'{where}: either every frame has a "camera" or none does (frame 0 '
                             f'{"has" if with_cameras else "has not"}).')
        if "camera" in frame:
            cam = _number_list(frame["camera"], f'{where}: "camera"')
            if len(cam) != _CAMERA_SIZE:
                raise InputError(f'{where}: "camera" has {len(cam)} numbers; a camera label has {_CAMERA_SIZE}.')
            cameras.append(cam)
    widths = {name: max(len(r) for r in rows) for name, rows in columns.items()}
    if len(frames) * (sum(widths.values()) + (_CAMERA_SIZE if cameras else 0)) > budget:
        longest = ", ".join(f"{name} {width}" for name, width in widths.items() if width)
        raise InputError(f"{path}: padding every frame to its longest rows ({longest} numbers) asks for more numbers "
                         f"than a file of {len(text):,} characters may; give every frame rows of the same length.")
    values = {}
    for name, rows in columns.items():
        width = widths[name]
        values[name] = np.zeros((len(rows), width), dtype=np.float32)
        for t, row in enumerate(rows):
            values[name][t, :len(row)] = row
    params = _frames(values, path)
    fps = doc.get("fps", DEFAULT_FPS)
    if isinstance(fps, bool) or not isinstance(fps, (int, float)):
        raise InputError(f'{path}: "fps" must be a number, got {short_repr(fps, 60)}.')
    try:
        return FlameSequence(params, fps, np.asarray(cameras, dtype=np.float32) if cameras else None)
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
