"""A driving video with a known answer: a FLAME animation of the built-in head (jaw, expressions, gaze, head turns
after a still start), rendered by the training data's renderer (core/training/synthetic.py: shaded, painted skin,
hair, brows, lips, irises and pupils). bench/track.py and tests/core/test_track.py track it and compare with the
animation.

The camera is the frontal FFHQ camera with a wider field of view (`zoom` < 1 makes the head smaller), so the head
turns inside the frame; the head pose is folded into it per frame (core.flame.conversions), as the generator's
renders do. One appearance (colours, light, skin noise) for the whole clip.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch

from ..flame.conversions import fold_head_pose_into_label
from ..flame.params import FlameParams, gaze_to_eyes
from ..portrait.fit import eye_vertex_indices, project_flame_points
from ..rendering.camera import FFHQ_FOV_DEG, camera_label, fov_to_intrinsics, look_at_cam2world

__all__ = ["SyntheticClip", "known_performance", "render_performance", "expression_index", "clip_camera",
           "true_points", "write_clip_video"]


@dataclass
class SyntheticClip:
    params: FlameParams          # [T] the truth: head pose in global_rotation
    frames: np.ndarray           # [T, R, R, 3] uint8
    landmarks: np.ndarray        # [T, 68, 2] true landmarks in frame pixels (the head's own embedding)
    irises: np.ndarray           # [T, 2, 5, 2] true iris centre and rim points, the image-left eye first
    fps: float
    still: int                   # frames [0, still) hold still (for the jitter figure)


def expression_index(name: str) -> int:
    """Index of one of the built-in head's named expressions (core/flame/builtin_head.py)."""
    from ..flame.builtin_head import load_builtin_head_data

    names = [str(n) for n in load_builtin_head_data()["expression_names"]]
    return names.index(name)


def known_performance(n_frames: int, fps: float = 30.0, *, still: float = 0.2, tempo: float = 1.0,
                      seed: int = 0) -> tuple:
    """(FlameParams [T], number of still frames): a still start, then the jaw, a smile and raised brows, the gaze
    and the head's yaw, pitch and roll, each a smooth curve of its own frequency, so that all of them vary and none
    is a copy of another. `tempo` > 1 plays it faster (a short clip then still shows every motion)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_frames) / fps
    n_still = int(round(still * n_frames))
    t0 = n_still / fps
    ramp = np.clip((t - t0) * tempo / 0.5, 0, 1)    # half a second (at tempo 1) to start moving
    ramp = ramp * ramp * (3 - 2 * ramp)
    tau = np.maximum(t - t0, 0) * tempo

    def wave(period: float, phase: float = 0.0) -> np.ndarray:
        return np.sin(2 * math.pi * tau / period + phase) * ramp

    jaw = 0.3 * np.clip(wave(1.7, -math.pi / 2) * 0.5 + 0.5 * ramp, 0, 1) ** 1.5
    yaw, pitch, roll = 0.35 * wave(3.1), 0.2 * wave(2.6, 1.0), 0.12 * wave(3.9, 2.0)
    gaze_yaw, gaze_pitch = 0.35 * wave(2.3, 0.5), 0.25 * wave(3.3, 2.5)
    expr = np.zeros((n_frames, 16), np.float32)
    smile = np.clip(wave(2.9, -1.0), 0, 1)
    expr[:, expression_index("smile_left")] = smile
    expr[:, expression_index("smile_right")] = smile
    brows = np.clip(wave(2.1, 0.3), 0, 1)
    expr[:, expression_index("brow_raise_left")] = brows
    expr[:, expression_index("brow_raise_right")] = brows
    rotation = torch.from_numpy(_euler_to_axis_angle(yaw, pitch, roll))
    params = FlameParams(shape=torch.from_numpy(rng.normal(0, 0.6, (1, 26)).astype(np.float32)).expand(n_frames, -1),
                         expression=torch.from_numpy(expr),
                         jaw=torch.from_numpy(np.stack([jaw, 0 * jaw, 0 * jaw], 1).astype(np.float32)),
                         global_rotation=rotation.float(),
                         eyes=gaze_to_eyes(torch.from_numpy(gaze_yaw), torch.from_numpy(gaze_pitch),
                                           torch.from_numpy(gaze_yaw), torch.from_numpy(gaze_pitch)).float())
    return params, n_still


def _euler_to_axis_angle(yaw: np.ndarray, pitch: np.ndarray, roll: np.ndarray) -> np.ndarray:
    """Axis-angle [T, 3] of Ry(yaw) Rx(pitch) Rz(roll) (core.capture.metrics.head_angles is the inverse)."""
    from ..flame.params import axis_angle_to_matrix, matrix_to_axis_angle

    def about(axis: int, angle: np.ndarray) -> torch.Tensor:
        aa = np.zeros((len(angle), 3))
        aa[:, axis] = angle
        return axis_angle_to_matrix(torch.from_numpy(aa))

    return matrix_to_axis_angle(about(1, yaw) @ about(0, pitch) @ about(2, roll)).numpy()


def clip_camera(zoom: float = 0.7) -> torch.Tensor:
    """The synthetic clip's camera label [25]: frontal, FFHQ's distance, `zoom` times FFHQ's focal length."""
    fov = 2 * math.degrees(math.atan(math.tan(math.radians(FFHQ_FOV_DEG) / 2) / zoom))
    return camera_label(look_at_cam2world(0.0, 0.0), fov_to_intrinsics(fov))


def true_points(flame, params: FlameParams, camera: torch.Tensor, resolution: int) -> tuple:
    """Where the camera sees the head of `params` (head pose folded into the camera per frame): (per-frame camera
    labels [T, 25], landmarks [T, 68, 2], irises [T, 2, 5, 2] in pixels of R x R frames, the image-left eye first,
    each its centre then four rim points)."""
    rims = torch.from_numpy(eye_vertex_indices(flame)).reshape(-1)
    n = params.batch_size
    with torch.no_grad():
        out = flame(params.replace(global_rotation=torch.zeros(n, 3)))
        cams = fold_head_pose_into_label(camera[None].expand(n, -1), params.global_rotation, pivot=out.joints[:, 0])
        landmarks = np.stack([project_flame_points(out.landmarks[i], cams[i], resolution).numpy() for i in range(n)])
        rim = np.stack([project_flame_points(out.vertices[i, rims], cams[i], resolution).numpy()
                        for i in range(n)]).reshape(n, 2, 4, 2)
    irises = np.concatenate([rim.mean(axis=2, keepdims=True), rim], axis=2)
    return cams, landmarks.astype(np.float32), irises.astype(np.float32)


def render_performance(params: FlameParams, *, fps: float = 30.0, still: int = 0, resolution: int = 256,
                       zoom: float = 0.7, seed: int = 0, supersample: int = 2,
                       progress: Optional[Callable[[int, int], None]] = None) -> SyntheticClip:
    """Render the built-in head playing `params` (head pose in global_rotation) as a clip of R x R frames."""
    from ..training.synthetic import builtin_head_sampler, render_head, sample_appearance

    sampler = builtin_head_sampler()
    light = np.array([0.25, 0.35, 0.9])
    look = dataclasses.replace(sample_appearance(np.random.default_rng(seed)), ambient=0.55, diffuse=0.55,
                               specular=0.04, light_dir=light / np.linalg.norm(light))
    cams, landmarks, irises = true_points(sampler.model, params, clip_camera(zoom), resolution)
    n = params.batch_size
    frames = np.zeros((n, resolution, resolution, 3), np.uint8)
    for i in range(n):
        p = params[i]
        values = {"shape": p.shape[0].numpy(), "expression": p.expression[0].numpy(), "jaw": p.jaw[0].numpy(),
                  "eyes": p.eyes[0].numpy()}
        head = sampler.sample(np.random.default_rng(seed), values)
        frames[i] = render_head(head, sampler, cams[i], look, resolution, np.random.default_rng(seed), supersample)
        if progress is not None:
            progress(i + 1, n)
    return SyntheticClip(params=params, frames=frames, landmarks=landmarks, irises=irises, fps=fps, still=still)


def write_clip_video(path, frames: np.ndarray, fps: float = 30.0, *output_options: str):
    """An H.264 file (CRF 17) of RGB frames [T, H, W, 3] uint8, with the ffmpeg that imageio-ffmpeg bundles;
    `output_options` go before the codec (e.g. "-vf", "setpts=..." for uneven timestamps). Returns the path."""
    import subprocess

    import imageio_ffmpeg

    h, w = frames.shape[1:3]
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s",
           f"{w}x{h}", "-r", str(fps), "-i", "-", *output_options, "-c:v", "libx264", "-crf", "17", "-pix_fmt",
           "yuv420p", str(path)]
    subprocess.run(cmd, input=np.ascontiguousarray(frames).tobytes(), check=True, timeout=600)
    return path
