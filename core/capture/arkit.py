"""ARKit face capture as a FLAME animation of the built-in head: the CSV files that Epic's Live Link Face app
records (a Timecode column, BlendShapeCount, the 52 ARKit blend shapes in 0..1, then HeadYaw / HeadPitch /
HeadRoll and each eye's Yaw / Pitch / Roll in radians).

Mapping (docs/capture.md#arkit-live-link-face):
  * the built-in head's 16 named expressions (core/flame/builtin_head.py) from the ARKit shapes that do the same
    thing (`EXPRESSIONS`: a weighted sum, clipped to 0..1); "Left" is the subject's left in both;
  * the jaw opening from jawOpen (1 = `JAW_OPEN` radians), its sideways turn from jawLeft - jawRight;
  * the gaze of each eye from its eyeLook shapes (out / in / up / down, 1 = `EYE_YAW` / `EYE_PITCH` radians),
    whose meaning does not depend on the app's angle conventions;
  * the head pose from HeadYaw, HeadPitch and HeadRoll, in ARKit's face frame, which is FLAME's (x to the subject's
    left, y up, z out of the face): R = Ry(yaw) Rx(-pitch) Rz(roll), a positive pitch lifting the chin.
Only the built-in head has named expressions; an official FLAME model's are unnamed PCA components.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import numpy as np
import torch

from ..errors import InputError
from ..flame.animation import FlameSequence
from ..flame.params import FlameParams, axis_angle_to_matrix, gaze_to_eye_pose, matrix_to_axis_angle

__all__ = ["ARKIT_SHAPES", "ROTATIONS", "EXPRESSIONS", "read_live_link_csv", "arkit_to_sequence",
           "live_link_sequence", "JAW_OPEN", "EYE_YAW", "EYE_PITCH"]

PathLike = Union[str, os.PathLike]
JAW_OPEN = 0.45          # radians of jaw opening at jawOpen = 1
JAW_SIDE = 0.1           # radians of sideways jaw turn at jawLeft = 1
EYE_YAW = 0.5            # radians of gaze at eyeLookOut / eyeLookIn = 1
EYE_PITCH = 0.4          # radians of gaze at eyeLookUp / eyeLookDown = 1
_MAX_BYTES = 256 << 20

# The 52 ARKit blend shapes in Live Link Face's column order.
ARKIT_SHAPES = (
    "eyeBlinkLeft", "eyeLookDownLeft", "eyeLookInLeft", "eyeLookOutLeft", "eyeLookUpLeft", "eyeSquintLeft",
    "eyeWideLeft", "eyeBlinkRight", "eyeLookDownRight", "eyeLookInRight", "eyeLookOutRight", "eyeLookUpRight",
    "eyeSquintRight", "eyeWideRight", "jawForward", "jawRight", "jawLeft", "jawOpen", "mouthClose", "mouthFunnel",
    "mouthPucker", "mouthRight", "mouthLeft", "mouthSmileLeft", "mouthSmileRight", "mouthFrownLeft",
    "mouthFrownRight", "mouthDimpleLeft", "mouthDimpleRight", "mouthStretchLeft", "mouthStretchRight",
    "mouthRollLower", "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper", "mouthPressLeft", "mouthPressRight",
    "mouthLowerDownLeft", "mouthLowerDownRight", "mouthUpperUpLeft", "mouthUpperUpRight", "browDownLeft",
    "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight", "cheekPuff", "cheekSquintLeft",
    "cheekSquintRight", "noseSneerLeft", "noseSneerRight", "tongueOut")
ROTATIONS = ("HeadYaw", "HeadPitch", "HeadRoll", "LeftEyeYaw", "LeftEyePitch", "LeftEyeRoll", "RightEyeYaw",
             "RightEyePitch", "RightEyeRoll")

# Built-in head expression <- {ARKit shape: weight}.
EXPRESSIONS: Dict[str, Dict[str, float]] = {
    "brow_raise_left": {"browOuterUpLeft": 1.0, "browInnerUp": 0.5},
    "brow_raise_right": {"browOuterUpRight": 1.0, "browInnerUp": 0.5},
    "brow_furrow": {"browDownLeft": 0.5, "browDownRight": 0.5},
    "smile_left": {"mouthSmileLeft": 1.0},
    "smile_right": {"mouthSmileRight": 1.0},
    "mouth_corners_down": {"mouthFrownLeft": 0.5, "mouthFrownRight": 0.5},
    "lip_pucker": {"mouthPucker": 1.0, "mouthFunnel": 0.5},
    "lip_press": {"mouthPressLeft": 0.5, "mouthPressRight": 0.5, "mouthRollLower": 0.25, "mouthRollUpper": 0.25},
    "upper_lip_raise": {"mouthUpperUpLeft": 0.5, "mouthUpperUpRight": 0.5},
    "lower_lip_depress": {"mouthLowerDownLeft": 0.5, "mouthLowerDownRight": 0.5},
    "eye_close_left": {"eyeBlinkLeft": 1.0},
    "eye_close_right": {"eyeBlinkRight": 1.0},
    "cheek_puff": {"cheekPuff": 1.0},
    "mouth_stretch": {"mouthStretchLeft": 0.5, "mouthStretchRight": 0.5},
    "lips_part": {"mouthFunnel": 0.5, "mouthShrugUpper": 0.5},
    "nose_wrinkle": {"noseSneerLeft": 0.5, "noseSneerRight": 0.5},
}
_NEEDED = ("jawOpen", "eyeBlinkLeft", "eyeBlinkRight", "mouthSmileLeft", "mouthSmileRight")
_TIMECODE = re.compile(r"^(\d+):(\d+):(\d+)[:;](\d+)(?:\.(\d+))?$")


def read_live_link_csv(path: PathLike) -> Tuple[np.ndarray, Dict[str, np.ndarray], float]:
    """(times [T] in seconds from the first row, {column (lower case): values [T]}, the recording's frame rate
    guessed from the timecodes' frame numbers). Raises InputError for a file that is not such a CSV."""
    path = Path(path)
    fix = "give the CSV that Live Link Face records (Timecode, BlendShapeCount, EyeBlinkLeft, ..., HeadYaw, ...)"
    if not path.is_file():
        raise InputError(f"{str(path)!r} does not exist; {fix}.")
    if path.stat().st_size > _MAX_BYTES:
        raise InputError(f"{path} is {path.stat().st_size >> 20} MB, more than a face recording; {fix}.")
    try:
        rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8-sig"))))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path} is not a CSV text file ({exc}); {fix}.") from None
    if len(rows) < 2:
        raise InputError(f"{path} has no data rows; {fix}.")
    header = [h.strip() for h in rows[0]]
    lower = [h.lower() for h in header]
    missing = [name[0].upper() + name[1:] for name in ("timecode",) + _NEEDED if name.lower() not in lower]
    if missing:
        raise InputError(f"{path} has no column {', '.join(missing)}; {fix}.")
    columns: Dict[str, List[float]] = {h: [] for h in lower if h != "timecode"}
    stamps = []
    for line, row in enumerate(rows[1:], start=2):
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise InputError(f"{path}, line {line}: {len(row)} values for {len(header)} columns; {fix}.")
        cells = dict(zip(lower, row))
        match = _TIMECODE.match(cells["timecode"].strip())
        if not match:
            raise InputError(f"{path}, line {line}: the timecode {cells['timecode']!r} is not HH:MM:SS:FF.fff; {fix}.")
        stamps.append(match.groups())
        for name in columns:
            try:
                value = float(cells[name])
            except ValueError:
                raise InputError(f"{path}, line {line}: {header[lower.index(name)]} is {cells[name]!r}, not a "
                                 f"number; {fix}.") from None
            if not math.isfinite(value) or abs(value) > 100:
                raise InputError(f"{path}, line {line}: {header[lower.index(name)]} is {value}; blend shapes lie in "
                                 f"0..1 and angles in radians; {fix}.")
            columns[name].append(value)
    frames = [int(s[3]) for s in stamps]
    fps = float(max(frames) + 1) if max(frames) >= 23 else 30.0      # frame numbers run 0..fps-1 each second
    times = np.array([(int(h) * 60 + int(m)) * 60 + int(s) + (int(f) + float(f"0.{sub or 0}")) / fps
                      for h, m, s, f, sub in stamps])
    times = times - times[0]
    if np.any(np.diff(times) <= 0):
        bad = int(np.argmax(np.diff(times) <= 0)) + 1
        raise InputError(f"{path}: the timecodes do not increase (row {bad + 1} after row {bad}); {fix}.")
    return times, {k: np.asarray(v) for k, v in columns.items()}, fps


def arkit_to_sequence(times: np.ndarray, values: Dict[str, np.ndarray], expression_names, fps: float
                      ) -> FlameSequence:
    """ARKit curves (lower-case column names) at `times` -> a FlameSequence of the built-in head at an even `fps`
    (linear interpolation)."""
    names = [str(n) for n in expression_names]
    n = len(times)

    def get(name: str) -> np.ndarray:
        return values.get(name.lower(), np.zeros(n))

    expr = np.zeros((n, len(names)), np.float32)
    for target, sources in EXPRESSIONS.items():
        if target in names:
            expr[:, names.index(target)] = np.clip(sum(w * get(s) for s, w in sources.items()), 0, 1)
    jaw = np.stack([np.clip(get("jawOpen"), 0, 1) * JAW_OPEN, (get("jawLeft") - get("jawRight")) * JAW_SIDE,
                    np.zeros(n)], axis=1)

    def gaze(side: str, outward: float) -> torch.Tensor:
        yaw = outward * (get(f"eyeLookOut{side}") - get(f"eyeLookIn{side}")) * EYE_YAW
        pitch = (get(f"eyeLookUp{side}") - get(f"eyeLookDown{side}")) * EYE_PITCH
        return gaze_to_eye_pose(torch.from_numpy(np.clip(yaw, -1.5, 1.5)), torch.from_numpy(np.clip(pitch, -1.5, 1.5)))

    eyes = torch.cat([gaze("Left", 1.0), gaze("Right", -1.0)], dim=1)     # out is +x for the left eye

    def about(axis: int, angle: np.ndarray) -> torch.Tensor:
        aa = np.zeros((n, 3))
        aa[:, axis] = angle
        return axis_angle_to_matrix(torch.from_numpy(aa))

    rotation = matrix_to_axis_angle(about(1, get("HeadYaw")) @ about(0, -get("HeadPitch")) @ about(2, get("HeadRoll")))
    grid = np.arange(int(math.floor(times[-1] * fps + 1e-6)) + 1) / fps

    def even(x) -> torch.Tensor:
        x = np.asarray(x, dtype=np.float64).reshape(n, -1)
        return torch.from_numpy(np.stack([np.interp(grid, times, x[:, j]) for j in range(x.shape[1])], 1)).float()

    params = FlameParams(expression=even(expr), jaw=even(jaw), global_rotation=even(rotation.numpy()),
                         eyes=even(eyes.numpy()))
    return FlameSequence(params, fps)


def live_link_sequence(path: PathLike, fps: Optional[float] = None) -> FlameSequence:
    """A Live Link Face CSV as an animation of the built-in head, at `fps` (default: the recording's rate, from
    its timecodes)."""
    from ..flame.builtin_head import load_builtin_head_data

    times, values, recorded = read_live_link_csv(path)
    return arkit_to_sequence(times, values, load_builtin_head_data()["expression_names"], float(fps or recorded))
