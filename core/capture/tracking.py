"""Per-frame landmarks and irises of one face through a clip: mediapipe's Face Mesh in its tracking mode
(`static_image_mode=False`: each frame starts from the last frame's face, and its detector runs only when the face
is lost), on a square window around the chosen face.

Which face: the full-range detector (core/portrait/faces.py) finds every face in the first frame that has one;
faces are numbered from 1 left to right, the default is the largest. The window, 2.5 face-box sides wide, is where
Face Mesh looks; it follows the face, but moves only when the face has drifted a tenth of the window from its
centre or changed size by a quarter, so that in most frames the tracker sees a still picture around a moving head,
as it would in a plain video. When the face is lost the detector looks again over the whole frame and takes the
face nearest to where it was last seen, of a similar size: another person in the picture is not picked up instead.

A frame has no face when Face Mesh finds none, or when more than a quarter of the inner landmarks fall outside
the picture (a face leaving the frame: Face Mesh then guesses the missing half).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, List, Optional, Tuple

import numpy as np

from ..errors import InputError
from ..portrait.faces import (FaceBox, choose_face, crop_square, describe_faces, detect_faces, mediapipe_solutions,
                              WINDOW_MARGIN)
from ..portrait.landmarks import ibug_and_irises, mesh_points

__all__ = ["LandmarkTrack", "track_landmarks", "frame_ranges"]

_RECENTRE = 0.1            # move the window when the face centre is this far (in window sides) from its centre
_RESIZE = 1.25             # ... or when the face's size changed by this factor
_LANDMARK_MARGIN = 2.0     # window side in landmark-box sides (the box of all 478 points is larger than a face box)
_OUTSIDE = 0.25            # more than this fraction of the inner landmarks outside the picture: no face

Progress = Optional[Callable[[int, int], None]]


@dataclass
class LandmarkTrack:
    """What was found in each frame of a clip (image pixels, x right, y down; NaN where no face was found)."""

    landmarks: np.ndarray                    # [T, 68, 2]
    irises: np.ndarray                       # [T, 2, 5, 2] the image-left iris first, centre then rim
    found: np.ndarray                        # [T] bool
    times: np.ndarray                        # [T] seconds from the first frame
    size: Tuple[int, int]                    # (width, height) of the frames
    fps: float                               # the clip's stated frame rate
    faces: Tuple[FaceBox, ...] = ()          # every face found in frame `faces_frame`
    faces_frame: int = 0
    chosen: Optional[int] = None             # index into faces of the tracked face
    outside: np.ndarray = None               # [T] bool: dropped because the face was leaving the picture
    notes: List[str] = field(default_factory=list)

    @property
    def n_frames(self) -> int:
        return int(self.found.shape[0])

    def describe_faces(self) -> str:
        return describe_faces(self.faces, self.chosen)


def frame_ranges(mask: np.ndarray) -> List[Tuple[int, int]]:
    """The runs of True in a bool array as inclusive (first, last) pairs."""
    runs, start = [], None
    for i, m in enumerate(np.asarray(mask, dtype=bool).tolist() + [False]):
        if m and start is None:
            start = i
        elif not m and start is not None:
            runs.append((start, i - 1))
            start = None
    return runs


def _window_around(points: np.ndarray) -> Tuple[float, float, float]:
    lo, hi = points.min(axis=0), points.max(axis=0)
    return float(lo[0] + hi[0]) / 2, float(lo[1] + hi[1]) / 2, float((hi - lo).max()) * _LANDMARK_MARGIN


class _Follower:
    """The window (x0, y0, side) Face Mesh looks at, and the face it follows."""

    def __init__(self) -> None:
        self.window: Optional[Tuple[int, int, int]] = None
        self.last: Optional[Tuple[float, float, float]] = None     # centre x, y and window side of the last face

    def from_box(self, box: FaceBox) -> None:
        self.window = box.window(WINDOW_MARGIN)
        cx, cy = box.centre
        self.last = (cx, cy, float(self.window[2]))

    def follow(self, points: np.ndarray) -> None:
        cx, cy, side = _window_around(points)
        self.last = (cx, cy, side)
        x0, y0, w = self.window
        wx, wy = x0 + w / 2, y0 + w / 2
        if (max(abs(cx - wx), abs(cy - wy)) > _RECENTRE * w or not 1 / _RESIZE < side / w < _RESIZE):
            s = max(int(round(side)), 32)
            self.window = (int(round(cx - s / 2)), int(round(cy - s / 2)), s)

    def pick(self, faces: List[FaceBox]) -> Optional[FaceBox]:
        """The detected face nearest to the last one seen, of a similar size (None: none is)."""
        cx, cy, side = self.last
        best, best_d = None, None
        for box in faces:
            size = box.window(WINDOW_MARGIN)[2]
            d = np.hypot(box.centre[0] - cx, box.centre[1] - cy) / side
            if d < 0.5 and 0.5 < size / side < 2.0 and (best_d is None or d < best_d):
                best, best_d = box, d
        return best


def track_landmarks(frames, *, face: Optional[int] = None, progress: Progress = None,
                    source: str = "the video") -> LandmarkTrack:
    """Landmarks [T, 68, 2] and irises [T, 2, 5, 2] of face `face` (1-based, left to right; default the largest)
    in every frame of `frames` (core.capture.frames.FrameSource, or any iterable of Frame)."""
    solutions = mediapipe_solutions()
    total = int(getattr(frames, "expected_frames", 0))
    lms, irs, found, outside, times = [], [], [], [], []
    follower = _Follower()
    faces: List[FaceBox] = []
    faces_frame, chosen = 0, None
    size = None
    with solutions.face_mesh.FaceMesh(static_image_mode=False, max_num_faces=1, refine_landmarks=True,
                                      min_detection_confidence=0.5, min_tracking_confidence=0.5) as mesh:
        for frame in frames:
            pixels = frame.pixels
            h, w = pixels.shape[:2]
            size = size or (w, h)
            points, searched = None, False
            for _ in range(2):      # the window of the last frame, then (when lost there) a search of this frame
                if follower.window is None:
                    if searched:
                        break
                    searched = True
                    detected = detect_faces(pixels)
                    if not detected:
                        break
                    if chosen is None:
                        faces, faces_frame = detected, frame.index
                        chosen = choose_face(faces, face, f"{source} (frame {frame.index})")
                        follower.from_box(faces[chosen])
                    else:
                        box = follower.pick(detected)
                        if box is None:
                            break
                        follower.from_box(box)
                x0, y0, side = follower.window
                result = mesh.process(crop_square(pixels, x0, y0, side))
                if result.multi_face_landmarks:
                    points = mesh_points(result.multi_face_landmarks[0], x0, y0, side, side)
                    break
                follower.window = None          # lost: look over the whole frame once more
            is_out = False
            if points is not None:
                landmarks, irises = ibug_and_irises(points)
                inner = landmarks[17:]
                off = ((inner[:, 0] < 0) | (inner[:, 0] > w) | (inner[:, 1] < 0) | (inner[:, 1] > h)).mean()
                if off > _OUTSIDE:
                    points, is_out = None, True
                    follower.window = None
                else:
                    follower.follow(points)
            if points is None:
                landmarks = np.full((68, 2), np.nan, np.float32)
                irises = np.full((2, 5, 2), np.nan, np.float32)
            lms.append(landmarks)
            irs.append(irises)
            found.append(points is not None)
            outside.append(is_out)
            times.append(frame.time)
            if progress is not None:
                progress(len(found), max(total, len(found)))
    if face is not None and chosen is None:
        raise InputError(f"No face was found in any of the {len(found)} frames of {source}, so there is no face "
                         f"{face}; give a video where the face is at least about 40 pixels high.")
    if not found:
        raise InputError(f"{source} has no frames.")
    times = np.asarray(times, dtype=np.float64)
    track = LandmarkTrack(np.stack(lms).astype(np.float32), np.stack(irs).astype(np.float32), np.asarray(found),
                          times - times[0], size, float(getattr(frames, "fps", 30.0)), tuple(faces), faces_frame,
                          chosen, np.asarray(outside))
    track.notes.extend(getattr(frames, "problems", []))
    return track
