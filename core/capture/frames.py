"""The frames of a performance: a video file (decoded by OpenCV's FFmpeg backend, which mediapipe's wheel brings as
opencv-contrib-python), a folder of images, or one image.

Each frame comes with its time in seconds: a video's presentation timestamps, or frame / fps for images. Frames are
read one at a time and never kept (a 10-second 1080p clip would be 1.8 GB), and a video that stops decoding early
(truncated, damaged) ends the clip there with a note in `problems`, so what was read is still tracked.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, List, Optional, Tuple, Union

import numpy as np

from ..errors import InputError

__all__ = ["Frame", "FrameSource", "open_frames", "IMAGE_SUFFIXES", "DEFAULT_FOLDER_FPS"]

PathLike = Union[str, os.PathLike]
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
DEFAULT_FOLDER_FPS = 30.0
_VIDEO_HELP = ("Give a video file (.mp4, .mov, .avi, .mkv, .webm, ...), a folder of images (frame_0001.png, ...) "
               "or one image.")


@dataclass(frozen=True)
class Frame:
    index: int            # position in the clip, from 0
    time: float           # seconds from the first frame
    pixels: np.ndarray    # [H, W, 3] uint8 RGB


def _natural_key(name: str) -> list:
    return [int(tok) if tok.isdigit() else tok for tok in re.split(r"(\d+)", name)]


@dataclass
class FrameSource:
    """An open clip. Iterate it once for its frames; `problems` then says whether it ended early."""

    path: Path
    kind: str                            # "video", "images" or "image"
    fps: float                           # the container's frame rate, or the one given for images
    expected_frames: int                 # what the container or the folder says (0: unknown)
    size: Tuple[int, int]                # (width, height)
    problems: List[str] = field(default_factory=list)
    _images: Optional[List[Path]] = None
    _capture: object = None
    _first: Optional[np.ndarray] = None
    _time: float = 0.0

    @property
    def description(self) -> str:
        what = {"video": "video", "images": "image folder", "image": "image"}[self.kind]
        return f"{what} {self.path.name} ({self.size[0]}x{self.size[1]}, {self.fps:g} fps)"

    def __iter__(self) -> Iterator[Frame]:
        if self._images is not None:
            yield from self._iter_images()
        else:
            yield from self._iter_video()

    def _iter_images(self) -> Iterator[Frame]:
        from ..io.images import read_image

        for i, path in enumerate(self._images):
            try:
                pixels = read_image(path)
            except Exception as exc:   # noqa: BLE001 - any unreadable frame ends the clip, with its reason
                self.problems.append(f"{path.name} (frame {i}) cannot be read ({exc}); the clip ends before it.")
                return
            if (pixels.shape[1], pixels.shape[0]) != self.size:
                self.problems.append(f"{path.name} (frame {i}) is {pixels.shape[1]}x{pixels.shape[0]} pixels while "
                                     f"the first frame is {self.size[0]}x{self.size[1]}; the clip ends before it. "
                                     "Give frames of one size.")
                return
            yield Frame(i, i / self.fps, pixels)

    def _iter_video(self) -> Iterator[Frame]:
        import cv2

        cap = self._capture
        try:
            i, pixels = 0, self._first
            while pixels is not None:
                yield Frame(i, self._time, pixels)
                i += 1
                ok, bgr = cap.read()
                pixels = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB) if ok else None
                self._time = cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0 if ok else self._time
            if self.expected_frames and i < self.expected_frames - 1:
                self.problems.append(f"the video stopped decoding after {i} of the {self.expected_frames} frames "
                                     "its header announces (a truncated or damaged file?); what was read was "
                                     "tracked.")
        finally:
            cap.release()


def _open_images(path: Path, images: List[Path], fps: float) -> FrameSource:
    from PIL import Image

    sizes = []
    for p in images:
        try:
            with Image.open(p) as im:
                sizes.append(im.size)
        except Exception as exc:   # noqa: BLE001 - the reader's reason goes into the message
            raise InputError(f"{p} cannot be read as an image ({exc}). {_VIDEO_HELP}") from None
    return FrameSource(path, "images" if path.is_dir() else "image", fps, len(images), sizes[0], _images=images)


def open_frames(path: PathLike, fps: Optional[float] = None) -> FrameSource:
    """Open a video, a folder of images or one image (frames at `fps`, default 30, for images). Raises InputError
    for what is none of these, naming what was found and what to give."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{str(path)!r} does not exist. {_VIDEO_HELP}")
    image_fps = DEFAULT_FOLDER_FPS if fps is None else float(fps)
    if path.is_dir():
        images = sorted((p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
                        key=lambda p: _natural_key(p.name))
        if not images:
            raise InputError(f"The folder {path} holds no images ({', '.join(IMAGE_SUFFIXES)}). {_VIDEO_HELP}")
        return _open_images(path, images, image_fps)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return _open_images(path, [path], image_fps)
    return _open_video(path)


def _open_video(path: Path) -> FrameSource:
    import cv2

    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    if not cap.isOpened():
        raise InputError(f"{path} cannot be read as a video (FFmpeg does not recognise it). {_VIDEO_HELP}")
    ok, bgr = cap.read()
    if not ok:
        cap.release()
        raise InputError(f"{path} holds no video frame that can be decoded. {_VIDEO_HELP}")
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    count = int(max(cap.get(cv2.CAP_PROP_FRAME_COUNT), 0))
    source = FrameSource(path, "video", fps if 0 < fps <= 1000 else DEFAULT_FOLDER_FPS, count,
                         (bgr.shape[1], bgr.shape[0]), _capture=cap, _first=cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    source._time = cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
    if not 0 < fps <= 1000:
        source.problems.append(f"the video does not state a usable frame rate ({fps:g}); its timestamps are used, "
                               f"and the animation is written at {DEFAULT_FOLDER_FPS:g} fps.")
    return source
