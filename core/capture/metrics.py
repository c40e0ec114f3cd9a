"""How well a tracked animation matches a known one: head yaw, pitch and roll, gaze, jaw; errors, correlations and
jitter (bench/track.py prints them; tests/core/test_track.py bounds them)."""

from __future__ import annotations

import math
from typing import Dict

import numpy as np
import torch

from ..flame.params import FlameParams, axis_angle_to_matrix, eyes_to_gaze

__all__ = ["head_angles", "motion_curves", "compare_curves", "jitter"]


def head_angles(global_rotation: torch.Tensor) -> np.ndarray:
    """[T, 3] (yaw, pitch, roll) in radians of head poses [T, 3] (axis-angle), as R = Ry(yaw) Rx(pitch) Rz(roll):
    yaw turns towards the subject's left, pitch about x, roll about the line of sight."""
    r = axis_angle_to_matrix(global_rotation.double()).numpy()
    yaw = np.arctan2(r[:, 0, 2], r[:, 2, 2])
    pitch = np.arcsin(np.clip(-r[:, 1, 2], -1, 1))
    roll = np.arctan2(r[:, 1, 0], r[:, 1, 1])
    return np.stack([yaw, pitch, roll], axis=1)


def motion_curves(params: FlameParams) -> Dict[str, np.ndarray]:
    """The curves compared, in degrees: jaw opening, head yaw / pitch / roll, gaze yaw / pitch (both eyes'
    mean)."""
    angles = head_angles(params.global_rotation.detach())
    ly, lp, ry, rp = (g.detach().double().numpy() for g in eyes_to_gaze(params.eyes.detach()))
    deg = 180 / math.pi
    return {"jaw": params.jaw[:, 0].detach().double().numpy() * deg,
            "head_yaw": angles[:, 0] * deg, "head_pitch": angles[:, 1] * deg, "head_roll": angles[:, 2] * deg,
            "gaze_yaw": (ly + ry) / 2 * deg, "gaze_pitch": (lp + rp) / 2 * deg}


def compare_curves(truth: Dict[str, np.ndarray], estimate: Dict[str, np.ndarray]) -> Dict[str, Dict[str, float]]:
    """Per curve: mean absolute error, mean error (bias), and Pearson correlation."""
    out = {}
    for name, want in truth.items():
        got = estimate[name]
        corr = float(np.corrcoef(want, got)[0, 1]) if np.std(want) > 0 and np.std(got) > 0 else float("nan")
        out[name] = {"mae": float(np.abs(got - want).mean()), "bias": float((got - want).mean()), "corr": corr}
    return out


def jitter(curve: np.ndarray) -> float:
    """Mean absolute frame-to-frame change of a curve [T] or [T, n] (vector length per frame)."""
    c = np.asarray(curve, dtype=np.float64).reshape(len(curve), -1)
    return float(np.linalg.norm(np.diff(c, axis=0), axis=1).mean()) if len(c) > 1 else 0.0
