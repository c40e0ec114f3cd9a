"""Writing an H.264 video from frame PNGs with the ffmpeg binary that imageio-ffmpeg bundles."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterable, Union

import numpy as np

from ..errors import InputError
from ..io.atomic import new_file_mode

PathLike = Union[str, os.PathLike]
VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov")


def _even(pixels: np.ndarray) -> np.ndarray:
    """yuv420p needs even sides: repeat the last row/column where a side is odd."""
    h, w = pixels.shape[:2]
    if h % 2 or w % 2:
        pixels = np.pad(pixels, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    return pixels


def _rgb(pixels: np.ndarray) -> np.ndarray:
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[..., None], 3, axis=2)
    if pixels.shape[2] == 4:
        pixels = pixels[..., :3]
    if pixels.dtype != np.uint8:
        raise InputError(f"Video frames must be 8-bit images; got {pixels.dtype}.")
    return np.ascontiguousarray(pixels)


def write_video(frame_paths: Iterable[PathLike], out_path: PathLike, fps: float = 30, crf: int = 17) -> Path:
    """Encode the PNGs, in the given order, as libx264 yuv420p (odd sides padded to even) at `fps`.

    The file is written under a temporary name in the same folder and renamed when complete, so an interrupted
    encode never leaves a truncated video under `out_path`. Frames are read one at a time (memory stays flat)."""
    import imageio.v3 as iio
    import imageio_ffmpeg

    paths = [Path(p) for p in frame_paths]
    out_path = Path(out_path)
    if not paths:
        raise InputError("No frames to put in the video; render the sequence first.")
    if not fps or fps <= 0:
        raise InputError(f"The video frame rate must be positive; got {fps}.")
    if out_path.suffix.lower() not in VIDEO_SUFFIXES:
        raise InputError(f"The video name {out_path.name!r} must end in one of {', '.join(VIDEO_SUFFIXES)}.")
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise InputError(f"{len(missing)} frames of the video are missing (first: {missing[0]}); render them "
                         "before writing the video.")
    first = _even(_rgb(iio.imread(paths[0])))
    height, width = first.shape[:2]
    fd, tmp = tempfile.mkstemp(dir=out_path.parent, prefix=f".{out_path.stem}-", suffix=out_path.suffix)
    os.close(fd)
    writer = None
    try:
        writer = imageio_ffmpeg.write_frames(
            tmp, (width, height), fps=fps, codec="libx264", pix_fmt_in="rgb24", pix_fmt_out="yuv420p",
            quality=None, macro_block_size=1, ffmpeg_log_level="error",
            output_params=["-crf", str(int(crf)), "-preset", "medium", "-movflags", "+faststart"])
        writer.send(None)
        for k, path in enumerate(paths):
            pixels = first if k == 0 else _even(_rgb(iio.imread(path)))
            if pixels.shape[:2] != (height, width):
                raise InputError(f"Frame {path.name} is {pixels.shape[1]}x{pixels.shape[0]} but the video is "
                                 f"{width}x{height}; all frames of a video must have the same size.")
            writer.send(pixels)
        writer.close()
        writer = None
        os.chmod(tmp, new_file_mode())
        os.replace(tmp, out_path)
    except BaseException:
        if writer is not None:
            try:
                writer.close()
            except Exception:
                pass
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return out_path
