"""The hand-editable .json animation layout (described in core/flame/animation.py), parsed and checked with numpy
alone: Blender's own Python, which has no torch, reads it through here (engine/performance_job.py), and
core/flame/animation.py wraps the result into a FlameSequence. What needs the FLAME parameter checks (finite values,
ranges) and the frame rate's range is left to the caller, which names them in its own words.

FIELD_SIZES mirrors core/flame/params.PARAM_FIELDS (that module needs torch; tests/core/test_flame.py compares them).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Union

import numpy as np

from ..errors import InputError
from ..io.bounded_read import BoundedReadError, json_loads
from ..io.restricted_pickle import short_repr

__all__ = ["JsonAnimation", "read_json_animation", "json_fps", "number_list", "SEQUENCE_FORMAT", "SEQUENCE_VERSION",
           "DEFAULT_FPS", "FIELD_SIZES", "CAMERA_SIZE"]

PathLike = Union[str, os.PathLike]

SEQUENCE_FORMAT = "next3d-flame-sequence"
SEQUENCE_VERSION = 1
DEFAULT_FPS = 30.0
# Numbers per frame of each FlameParams field, in its order; None: the model's (any length, zero-padded).
FIELD_SIZES: Dict[str, Optional[int]] = {"shape": None, "expression": None, "jaw": 3, "neck": 3,
                                         "global_rotation": 3, "eyes": 6}
CAMERA_SIZE = 25
_MIN_JSON_NUMBERS = 1 << 20   # a .json animation may ask for as many numbers as it has bytes, or this many
_MAX_NUMBER = 1e30            # larger JSON numbers would overflow float32 (and ints may have any length)


@dataclass(frozen=True)
class JsonAnimation:
    """A .json animation's numbers, unchecked beyond the layout.

    values: one float32 array [T, n] per field of FIELD_SIZES (missing fields zero, short rows zero-padded).
    fps: the "fps" entry as written (DEFAULT_FPS when absent); json_fps checks it.
    cameras: [T, 25] float32 generator camera labels, or None.
    """

    values: Dict[str, np.ndarray]
    fps: Any
    cameras: Optional[np.ndarray]


def number_list(value: Any, where: str) -> list:
    if not isinstance(value, list) or not all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                              for x in value):
        raise InputError(f"{where} must be a list of numbers, got {short_repr(value, 60)}.")
    if any(_MAX_NUMBER < abs(x) < math.inf for x in value):   # NaN and infinity are named by the caller's checks
        raise InputError(f"{where} holds a number beyond +-1e30; FLAME parameters are small numbers.")
    return value


def json_fps(value: Any, label: str) -> Union[int, float]:
    """The "fps" entry, checked to be a JSON number (an int may be too large for a float: its range is the
    caller's check)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f'{label}: "fps" must be a number, got {short_repr(value, 60)}.')
    return value


def read_json_animation(path: PathLike, label: Optional[str] = None) -> JsonAnimation:
    """Read a .json animation; InputError in one line (starting with `label`, default the path) naming what is wrong.

    Missing fields become zeros and shorter rows are padded, so what that asks for is checked against the file's
    size before it is built: a small file cannot ask for gigabytes."""
    path = Path(path)
    label = str(path) if label is None else label
    try:
        text = path.read_text(encoding="utf-8")
        doc = json_loads(text, max_depth=None)   # the fields are checked one by one below
    except json.JSONDecodeError as exc:
        raise InputError(f"{label} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}.") from None
    except BoundedReadError as exc:
        raise InputError(f"{label} is not an animation: {exc}.") from None
    except UnicodeDecodeError:
        raise InputError(f"{label} is not a UTF-8 text file; write the animation as JSON text.") from None
    except ValueError as exc:   # e.g. an integer with more digits than Python converts
        raise InputError(f"{label} is not valid JSON ({' '.join(str(exc).split())[:120]}).") from None
    except OSError as exc:
        raise InputError(f"{label} cannot be read ({exc.strerror or exc}).") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("frames"), list):
        raise InputError(f'{label} must hold a JSON object with a "frames" list (see core/flame/animation.py).')
    fmt = doc.get("format", SEQUENCE_FORMAT)
    if fmt != SEQUENCE_FORMAT:
        raise InputError(f"{label} says format {short_repr(fmt)}, not {SEQUENCE_FORMAT!r}.")
    unknown = sorted(set(doc) - {"format", "version", "fps", "shape", "frames"})
    if unknown:
        raise InputError(f"{label} has unknown top-level key(s) {short_repr(unknown, 120)[1:-1]}; the keys are "
                         "format, version, fps, shape and frames.")
    frames = doc["frames"]
    if not frames:
        raise InputError(f'{label} has an empty "frames" list; give at least one frame.')
    shared_shape = number_list(doc["shape"], f'{label}: "shape"') if "shape" in doc else []
    names = tuple(FIELD_SIZES)
    budget = max(len(text), _MIN_JSON_NUMBERS)
    fixed = sum(size for size in FIELD_SIZES.values() if size is not None)
    if len(frames) * (fixed + len(shared_shape)) > budget:
        raise InputError(f'{label}: {len(frames):,} frames of {fixed + len(shared_shape)} numbers each are more '
                         f"than a file of {len(text):,} characters may ask for; split the animation.")
    columns: Dict[str, list] = {name: [] for name in names}
    cameras: list = []
    for t, frame in enumerate(frames):
        where = f"{label}, frame {t}"
        if not isinstance(frame, dict):
            raise InputError(f"{where} is a {type(frame).__name__}; each frame must be a JSON object.")
        unknown = sorted(set(frame) - set(names) - {"camera"})
        if unknown:
            raise InputError(f"{where} has unknown key(s) {short_repr(unknown, 120)[1:-1]}; the keys are "
                             f"{', '.join(names)} and camera.")
        for name, size in FIELD_SIZES.items():
            default = shared_shape if name == "shape" else [0.0] * (size or 0)
            value = number_list(frame[name], f'{where}: "{name}"') if name in frame else default
            if size is not None and len(value) != size:
                raise InputError(f'{where}: "{name}" has {len(value)} numbers; it needs exactly {size}.')
            columns[name].append(value)
        if t == 0:
            with_cameras = "camera" in frame
        elif ("camera" in frame) != with_cameras:
            raise InputError(f'{where}: either every frame has a "camera" or none does (frame 0 '
                             f'{"has" if with_cameras else "has not"}).')
        if "camera" in frame:
            cam = number_list(frame["camera"], f'{where}: "camera"')
            if len(cam) != CAMERA_SIZE:
                raise InputError(f'{where}: "camera" has {len(cam)} numbers; a camera label has {CAMERA_SIZE}.')
            cameras.append(cam)
    widths = {name: max(len(r) for r in rows) for name, rows in columns.items()}
    if len(frames) * (sum(widths.values()) + (CAMERA_SIZE if cameras else 0)) > budget:
        longest = ", ".join(f"{name} {width}" for name, width in widths.items() if width)
        raise InputError(f"{label}: padding every frame to its longest rows ({longest} numbers) asks for more "
                         f"numbers than a file of {len(text):,} characters may; give every frame rows of the same "
                         "length.")
    values = {}
    for name, rows in columns.items():
        values[name] = np.zeros((len(rows), widths[name]), dtype=np.float32)
        for t, row in enumerate(rows):
            values[name][t, :len(row)] = row
    return JsonAnimation(values, doc.get("fps", DEFAULT_FPS),
                         np.asarray(cameras, dtype=np.float32) if cameras else None)
