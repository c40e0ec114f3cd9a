"""Per-frame cameras of a sequence: a fixed camera, the official orbit of gen_videos, or labels from a file.

A camera track gives the 25-value EG3D label (cam2world 4x4 + normalized intrinsics 3x3, docs/camera.md#labels)
of the frame at each 0-based position of a sequence.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ..errors import InputError
from ..io.bounded_read import READ_ERRORS, json_loads, load_npy, read_error_text
from ..rendering.camera import (FFHQ_FOV_DEG, FFHQ_PIVOT, FFHQ_RADIUS, camera_label, ffhq_camera,
                                look_at_cam2world)

PathLike = Union[str, os.PathLike]

# The official gen_videos orbit (docs/camera.md#the-official-orbit): the script writes pi as 3.14 and hard-codes
# the dataset focal length.
OFFICIAL_PI = 3.14
VIDEO_FOCAL = 4.2647
ORBIT_YAW_RANGE = 0.35
ORBIT_PITCH_RANGE = 0.25
ORBIT_PITCH_OFFSET = -0.05


def video_intrinsics(focal: float = VIDEO_FOCAL) -> torch.Tensor:
    return torch.tensor([[focal, 0.0, 0.5], [0.0, focal, 0.5], [0.0, 0.0, 1.0]], dtype=torch.float32)


def _label_at(h: float, v: float, focal: float, radius: float, pivot: Sequence[float]) -> torch.Tensor:
    """Label of a LookAtPoseSampler camera at absolute angles h (yaw) and v (pitch), radians."""
    return camera_label(look_at_cam2world(h - math.pi / 2, v - math.pi / 2, radius, pivot), video_intrinsics(focal))


def video_conditioning_label(focal: float = VIDEO_FOCAL, radius: float = FFHQ_RADIUS,
                             pivot: Sequence[float] = FFHQ_PIVOT) -> torch.Tensor:
    """The frontal camera gen_videos conditions the mapping network on (angles 3.14/2, focal 4.2647): [25]."""
    return _label_at(OFFICIAL_PI / 2, OFFICIAL_PI / 2, focal, radius, pivot)


def official_orbit_period(n_frames: int) -> int:
    """gen_videos renders keyframes*w_frames frames but uses half of that as the orbit period (two orbits per
    video); at least 1."""
    return max(1, int(n_frames) // 2)


def orbit_angles(frame: int, period: int, yaw_range: float = ORBIT_YAW_RANGE,
                 pitch_range: float = ORBIT_PITCH_RANGE) -> Tuple[float, float]:
    """Absolute (h, v) LookAtPoseSampler angles of orbit frame `frame` (0-based):
    h = 3.14/2 + 0.35 sin(2*3.14 f/T), v = 3.14/2 - 0.05 + 0.25 cos(2*3.14 f/T)."""
    t = 2 * OFFICIAL_PI * frame / period
    return (OFFICIAL_PI / 2 + yaw_range * math.sin(t),
            OFFICIAL_PI / 2 + ORBIT_PITCH_OFFSET + pitch_range * math.cos(t))


class CameraTrack:
    """Base class: `label(i)` -> [25] for the frame at 0-based position i. `n_frames` is None when the track fits a
    sequence of any length."""

    n_frames: Optional[int] = None
    description: str = "camera"

    def label(self, i: int) -> torch.Tensor:
        raise NotImplementedError

    def check_length(self, n_frames: int) -> None:
        if self.n_frames is not None and self.n_frames != n_frames:
            raise InputError(f"The {self.description} has {self.n_frames} frames but the sequence has {n_frames}; "
                             "give one camera label per frame, in frame order.")


class FixedCamera(CameraTrack):
    """The same camera for every frame (default: the frontal FFHQ camera)."""

    def __init__(self, label: Optional[torch.Tensor] = None):
        label = ffhq_camera() if label is None else torch.as_tensor(label, dtype=torch.float32).reshape(-1)
        if label.numel() < 25:
            raise InputError(f"A camera label has 25 values (cam2world 4x4 + intrinsics 3x3); got {label.numel()}.")
        self._label = label[:25].clone()
        self.description = "fixed camera"

    def label(self, i: int) -> torch.Tensor:
        return self._label.clone()


class OrbitCamera(CameraTrack):
    """The official gen_videos orbit over a sequence of `n_frames` (period: half the length, as Next3D does)."""

    def __init__(self, n_frames: int, period: Optional[int] = None, yaw_range: float = ORBIT_YAW_RANGE,
                 pitch_range: float = ORBIT_PITCH_RANGE, focal: float = VIDEO_FOCAL, radius: float = FFHQ_RADIUS,
                 pivot: Sequence[float] = FFHQ_PIVOT):
        if n_frames < 1:
            raise InputError(f"An orbit needs at least one frame; got {n_frames}.")
        self.period = official_orbit_period(n_frames) if period is None else int(period)
        if self.period < 1:
            raise InputError(f"The orbit period must be at least one frame; got {period}.")
        self.yaw_range, self.pitch_range = yaw_range, pitch_range
        self.focal, self.radius, self.pivot = focal, radius, tuple(pivot)
        self.description = f"orbit camera (period {self.period} frames)"

    def label(self, i: int) -> torch.Tensor:
        h, v = orbit_angles(i, self.period, self.yaw_range, self.pitch_range)
        return _label_at(h, v, self.focal, self.radius, self.pivot)


class LabelCamera(CameraTrack):
    """One label per frame, e.g. the driving video's dataset.json. `smooth` averages each label with its neighbours
    (k-1, k, k+1; the ends repeat), as the official reenactment script does."""

    def __init__(self, labels: torch.Tensor, smooth: bool = False, source: str = "camera file"):
        labels = torch.as_tensor(labels, dtype=torch.float32)
        if labels.ndim != 2 or labels.shape[1] < 25 or labels.shape[0] < 1:
            raise InputError(f"The {source} must hold camera labels of shape [frames, 25]; got "
                             f"{list(labels.shape)}.")
        if not torch.isfinite(labels[:, :25]).all():
            bad = int((~torch.isfinite(labels[:, :25])).any(1).nonzero()[0])
            raise InputError(f"The {source} has NaN or infinite values in label {bad} (0-based); fix or drop it.")
        labels = labels[:, :25].clone()
        if smooth and len(labels) > 1:
            padded = torch.cat([labels[:1], labels, labels[-1:]])
            labels = (padded[:-2] + padded[1:-1] + padded[2:]) / 3
        self.labels = labels
        self.n_frames = len(labels)
        self.description = source

    def label(self, i: int) -> torch.Tensor:
        return self.labels[i].clone()


def load_camera_labels(path: PathLike) -> torch.Tensor:
    """Camera labels [T, 25] from an .npy array [T, >=25] or an EG3D/Next3D dataset.json
    ({"labels": [[name, [25 floats]], ...]}, used by list position as the official reenactment does)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"Camera file {str(path)!r} does not exist. Give an .npy array of shape [frames, 25] or a "
                         "dataset.json with {\"labels\": [[name, [25 floats]], ...]}, or use --camera fixed/orbit.")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            data = load_npy(path)
        except READ_ERRORS as exc:
            raise InputError(f"{path.name} is not a plain numeric .npy array ({read_error_text(exc)}).") from None
        if data.ndim != 2 or data.shape[1] < 25:
            raise InputError(f"{path.name} holds an array of shape {data.shape}; camera labels must be "
                             "[frames, 25] (cam2world 4x4 then intrinsics 3x3, row-major).")
        return torch.from_numpy(np.asarray(data, dtype=np.float32)[:, :25].copy())
    if suffix == ".json":
        try:
            with open(path, "rb") as fh:
                data = json_loads(fh.read())
        except READ_ERRORS as exc:
            raise InputError(f"{path.name} is not valid JSON ({read_error_text(exc)}).") from None
        labels = data.get("labels") if isinstance(data, dict) else None
        if not isinstance(labels, list) or not labels:
            raise InputError(f"{path.name} has no \"labels\" list; the official dataset.json layout is "
                             "{\"labels\": [[\"img00000000.png\", [25 floats]], ...]}.")
        rows = []
        for k, entry in enumerate(labels):
            value = entry[1] if isinstance(entry, (list, tuple)) and len(entry) == 2 else None
            if not isinstance(value, (list, tuple)) or len(value) < 25:
                raise InputError(f"{path.name}: label {k} is {str(entry)[:80]}; each entry must be "
                                 "[name, [25 floats]].")
            try:
                rows.append([float(x) for x in value[:25]])
            except (TypeError, ValueError):
                raise InputError(f"{path.name}: label {k} has non-numeric values.") from None
        return torch.tensor(rows, dtype=torch.float32)
    raise InputError(f"Camera file {path.name} must be an .npy array [frames, 25] or a dataset.json.")


def camera_track(spec: Union[str, os.PathLike, None], n_frames: int, *, yaw: float = 0.0, pitch: float = 0.0,
                 fov_deg: float = FFHQ_FOV_DEG, smooth: bool = False, radius: float = FFHQ_RADIUS,
                 pivot: Sequence[float] = FFHQ_PIVOT) -> CameraTrack:
    """'fixed' (the FFHQ camera at yaw/pitch offsets), 'orbit' (gen_videos) or the path of a label file."""
    if spec is None or str(spec) == "fixed":
        return FixedCamera(ffhq_camera(yaw, pitch, fov_deg))
    if str(spec) == "orbit":
        return OrbitCamera(n_frames, radius=radius, pivot=pivot)
    path = Path(spec)
    return LabelCamera(load_camera_labels(path), smooth=smooth, source=f"camera file {path.name}")
