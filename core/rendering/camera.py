"""EG3D camera labels: OpenCV cam2world (x right, y down, z forward) in a y-up world, and intrinsics normalized by
the image size (docs/camera.md). A label is the 25-vector [cam2world 4x4 row-major, intrinsics 3x3 row-major]."""

from __future__ import annotations

import math
from typing import Sequence

import torch

# EG3D's scripts approximate pi and sqrt(2) with these constants; we keep them so that a given field of view gives
# the same focal length as the official scripts.
_PI_EG3D = 3.14159
_SQRT2_EG3D = 1.414

FFHQ_PIVOT = (0.0, 0.0, 0.2)   # the point the dataset cameras look at
FFHQ_RADIUS = 2.7              # camera distance from the world origin
FFHQ_FOV_DEG = 18.837          # gives the normalized focal length 4.2634 of the FFHQ cameras


def fov_to_intrinsics(fov_deg: float) -> torch.Tensor:
    """Normalized 3x3 intrinsics for a field of view (EG3D's FOV_to_intrinsics, with its constants)."""
    focal = 1.0 / (math.tan(fov_deg * _PI_EG3D / 360) * _SQRT2_EG3D)
    return torch.tensor([[focal, 0.0, 0.5], [0.0, focal, 0.5], [0.0, 0.0, 1.0]], dtype=torch.float32)


def look_at_cam2world(yaw: float, pitch: float, radius: float = FFHQ_RADIUS,
                      pivot: Sequence[float] = FFHQ_PIVOT) -> torch.Tensor:
    """OpenCV cam2world [4, 4] of a camera on a sphere about the world origin looking at `pivot`.

    yaw and pitch are offsets in radians from the frontal camera (EG3D's LookAtPoseSampler at pi/2 + yaw,
    pi/2 + pitch): yaw > 0 moves the camera towards +x, pitch > 0 moves it down."""
    h = math.pi / 2 + yaw
    v = min(max(math.pi / 2 + pitch, 1e-5), math.pi - 1e-5) / math.pi
    phi = math.acos(1 - 2 * v)
    origin = torch.tensor([radius * math.sin(phi) * math.cos(math.pi - h), radius * math.cos(phi),
                           radius * math.sin(phi) * math.sin(math.pi - h)], dtype=torch.float32)
    forward = torch.as_tensor(pivot, dtype=torch.float32) - origin
    forward = forward / torch.linalg.norm(forward)
    up = torch.tensor([0.0, 1.0, 0.0])
    right = -torch.linalg.cross(up, forward)
    right = right / torch.linalg.norm(right)
    up = torch.linalg.cross(forward, right)
    up = up / torch.linalg.norm(up)
    cam2world = torch.eye(4)
    cam2world[:3, :3] = torch.stack((right, up, forward), dim=-1)
    cam2world[:3, 3] = origin
    return cam2world


def camera_label(cam2world: torch.Tensor, intrinsics: torch.Tensor) -> torch.Tensor:
    """[..., 4, 4] and [..., 3, 3] -> the [..., 25] label the generator takes."""
    return torch.cat([cam2world.reshape(*cam2world.shape[:-2], 16), intrinsics.reshape(*intrinsics.shape[:-2], 9)],
                     dim=-1)


def ffhq_camera(yaw: float = 0.0, pitch: float = 0.0, fov_deg: float = FFHQ_FOV_DEG) -> torch.Tensor:
    """The label [25] of an FFHQ-like camera at the given yaw/pitch offsets (radians)."""
    return camera_label(look_at_cam2world(yaw, pitch), fov_to_intrinsics(fov_deg))
