"""The demo animation of `make demo`: the built-in head opens its jaw, smiles, looks left and right and turns."""

from __future__ import annotations

import math

import numpy as np
import torch

from .flame.animation import FlameSequence
from .flame.params import FlameParams, gaze_to_eyes


def _bump(t: np.ndarray, start: float, end: float) -> np.ndarray:
    """0 outside [start, end], rising smoothly to 1 in the middle (a raised-cosine bump)."""
    u = np.clip((t - start) / (end - start), 0.0, 1.0)
    return 0.5 - 0.5 * np.cos(2 * math.pi * u)


def demo_animation(n_shape: int, n_expr: int, expression_names, n_frames: int = 16, fps: float = 8.0
                   ) -> FlameSequence:
    """Jaw open, smile, gaze left then right, head turn, one after another over `n_frames`."""
    t = np.linspace(0.0, 1.0, n_frames)
    names = [str(n) for n in expression_names]
    expression = np.zeros((n_frames, n_expr), dtype=np.float32)
    for name in ("smile_left", "smile_right"):
        if name in names:
            expression[:, names.index(name)] = _bump(t, 0.2, 0.5)
    jaw = np.zeros((n_frames, 3), dtype=np.float32)
    jaw[:, 0] = 0.3 * _bump(t, 0.0, 0.35)                    # jaw opening: rotation about x, radians
    gaze_yaw = 0.35 * np.sin(2 * math.pi * np.clip((t - 0.45) / 0.35, 0.0, 1.0))
    yaw = torch.from_numpy(gaze_yaw.astype(np.float32))
    zero = torch.zeros_like(yaw)
    eyes = gaze_to_eyes(yaw, zero, yaw, zero)
    head = np.zeros((n_frames, 3), dtype=np.float32)
    head[:, 1] = 0.35 * _bump(t, 0.7, 1.0)                   # head turn: global yaw, folded into the camera
    params = FlameParams(shape=torch.zeros(n_frames, n_shape), expression=torch.from_numpy(expression),
                         jaw=torch.from_numpy(jaw), neck=torch.zeros(n_frames, 3),
                         global_rotation=torch.from_numpy(head), eyes=eyes.to(torch.float32))
    return FlameSequence(frames=params, fps=fps)
