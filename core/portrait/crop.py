"""The square crop of a portrait: an oriented square in the photo (FFHQ's alignment from eyes and mouth), mapped
to R x R pixels. The FLAME fit then moves and scales the square so that the head sits where the generator's
training faces sat (see fit.py)."""

from __future__ import annotations

import numpy as np

__all__ = ["Crop", "ffhq_crop", "warp_image"]


class Crop:
    """An oriented square in source pixels: centre c [2], half-axes x and y [2] (y = x turned 90 degrees).

    Output pixel coordinates (u, v) in [0, R] map to source c + (2u/R - 1) x + (2v/R - 1) y."""

    def __init__(self, centre: np.ndarray, x_axis: np.ndarray) -> None:
        self.centre = np.asarray(centre, dtype=np.float64)
        self.x_axis = np.asarray(x_axis, dtype=np.float64)
        self.y_axis = np.array([-self.x_axis[1], self.x_axis[0]])   # x turned 90 degrees towards image down

    @property
    def side(self) -> float:
        return 2.0 * float(np.hypot(*self.x_axis))

    def quad(self) -> np.ndarray:
        """Corners [4, 2] in source pixels: top-left, top-right, bottom-right, bottom-left."""
        c, x, y = self.centre, self.x_axis, self.y_axis
        return np.stack([c - x - y, c + x - y, c + x + y, c - x + y]).astype(np.float32)

    def to_crop(self, points: np.ndarray, resolution: int) -> np.ndarray:
        """Source pixels [..., 2] -> crop pixels [..., 2] of an R x R crop."""
        d = np.asarray(points, dtype=np.float64) - self.centre
        n2 = float(self.x_axis @ self.x_axis)
        a = d @ self.x_axis / n2
        b = d @ self.y_axis / n2
        return ((np.stack([a, b], axis=-1) + 1) * resolution / 2).astype(np.float32)

    def from_crop(self, points: np.ndarray, resolution: int) -> np.ndarray:
        """Crop pixels [..., 2] -> source pixels [..., 2]."""
        ab = np.asarray(points, dtype=np.float64) * 2 / resolution - 1
        return (self.centre + ab[..., :1] * self.x_axis + ab[..., 1:] * self.y_axis).astype(np.float32)

    def moved(self, centre_crop: np.ndarray, scale: float, resolution: int) -> "Crop":
        """The square centred on crop pixel `centre_crop`, `scale` times as large, same orientation."""
        return Crop(self.from_crop(np.asarray(centre_crop), resolution).astype(np.float64), self.x_axis * scale)

    def to_dict(self) -> dict:
        return {"centre": self.centre.tolist(), "x_axis": self.x_axis.tolist(), "quad": self.quad().tolist()}


def ffhq_crop(landmarks: np.ndarray) -> Crop:
    """FFHQ's alignment square from 68 iBUG landmarks [68, 2]: eyes level, side from the eye distance and the
    eye-to-mouth distance, centred a little below the eyes."""
    lm = np.asarray(landmarks, dtype=np.float64)
    eye_left, eye_right = lm[36:42].mean(axis=0), lm[42:48].mean(axis=0)
    eye_avg = (eye_left + eye_right) / 2
    eye_to_eye = eye_right - eye_left
    mouth_avg = (lm[48] + lm[54]) / 2
    eye_to_mouth = mouth_avg - eye_avg
    x = eye_to_eye - np.array([-eye_to_mouth[1], eye_to_mouth[0]])
    x /= np.hypot(*x)
    x *= max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    return Crop(eye_avg + eye_to_mouth * 0.1, x)


def warp_image(image: np.ndarray, crop: Crop, resolution: int) -> np.ndarray:
    """The crop of an RGB image [H, W, 3] uint8 as [R, R, 3] uint8 (bilinear, box-filtered first when the crop is
    much larger than R; outside the photo the border pixels are repeated)."""
    import torch
    import torch.nn.functional as F

    img = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
    shrink = max(1, int(crop.side / resolution / 2))      # keep bilinear sampling from aliasing
    if shrink > 1:
        img = F.avg_pool2d(img, shrink, ceil_mode=True)
    r = resolution
    centres = (torch.arange(r, dtype=torch.float64) + 0.5)
    v, u = torch.meshgrid(centres, centres, indexing="ij")
    src = crop.from_crop(torch.stack([u, v], dim=-1).numpy(), r).astype(np.float64) / shrink
    hs, ws = img.shape[-2:]
    grid = torch.from_numpy(np.stack([src[..., 0] / ws * 2 - 1, src[..., 1] / hs * 2 - 1], axis=-1)).float()
    out = F.grid_sample(img, grid[None], mode="bilinear", padding_mode="border", align_corners=False)
    return out[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()
