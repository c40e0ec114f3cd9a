"""Every face in a photo or video frame, and the square around one of them that Face Mesh is run on.

Face Mesh's own detector is mediapipe's short-range model (faces within about 2 m of a phone camera): in a group
photo or a wide shot, where a face is a tenth of the picture, it finds nothing. So faces are found first with the
full-range detector (`FaceDetection(model_selection=1)`, whose model ships in the 0.10.14 wheel like Face Mesh's),
on the whole picture and, for large pictures, on overlapping half-size tiles as well (a face of 45 px in a
1280 px photo is 7 px in the detector's 192 px input; in a tile it is twice that). Face Mesh then runs on a square
around the chosen face, with margin (`FaceBox.window`), where the face is large enough for it.

Numbering: faces are numbered from 1, left to right by the centre of their box, the way one counts people in a
photo; the default is the largest box.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ..errors import InputError, Next3DError

__all__ = ["FaceBox", "detect_faces", "choose_face", "describe_faces", "crop_square", "mediapipe_solutions",
           "WINDOW_MARGIN"]

WINDOW_MARGIN = 2.5       # side of the square given to Face Mesh, in face-box sides
_MIN_SCORE = 0.5
_TILE_MIN = 384           # pictures whose longer side is at least twice this are also searched in tiles
_SAME_FACE_IOU = 0.3


@dataclass(frozen=True)
class FaceBox:
    """A detected face: its box in image pixels (x right, y down) and the detector's score."""

    x0: float
    y0: float
    x1: float
    y1: float
    score: float

    @property
    def centre(self) -> Tuple[float, float]:
        return (self.x0 + self.x1) / 2, (self.y0 + self.y1) / 2

    @property
    def side(self) -> float:
        return max(self.x1 - self.x0, self.y1 - self.y0)

    @property
    def area(self) -> float:
        return max(self.x1 - self.x0, 0.0) * max(self.y1 - self.y0, 0.0)

    def window(self, margin: float = WINDOW_MARGIN) -> Tuple[int, int, int]:
        """The square (x0, y0, side) in whole pixels centred on the face, `margin` box sides wide."""
        side = max(int(round(self.side * margin)), 32)
        cx, cy = self.centre
        return int(round(cx - side / 2)), int(round(cy - side / 2)), side

    def iou(self, other: "FaceBox") -> float:
        w = min(self.x1, other.x1) - max(self.x0, other.x0)
        h = min(self.y1, other.y1) - max(self.y0, other.y0)
        inter = max(w, 0.0) * max(h, 0.0)
        union = self.area + other.area - inter
        return inter / union if union > 0 else 0.0

    def describe(self) -> str:
        return (f"{self.x1 - self.x0:.0f}x{self.y1 - self.y0:.0f} px at x {self.x0:.0f}..{self.x1:.0f}, "
                f"y {self.y0:.0f}..{self.y1:.0f}")

    def to_dict(self) -> dict:
        return {"box": [round(v, 1) for v in (self.x0, self.y0, self.x1, self.y1)], "score": round(self.score, 3)}


def mediapipe_solutions():
    """mediapipe's solutions package (face_mesh, face_detection), or a one-line error saying how to get it."""
    try:
        from mediapipe.python import solutions
    except ImportError as exc:
        raise Next3DError(f"Face detection needs mediapipe, which cannot be imported ({exc}); install the project's "
                          "requirements (pip install mediapipe==0.10.14), or give the 68 landmarks in a file "
                          "(--landmarks).") from None
    return solutions


def _detect(detector, image: np.ndarray, x0: int, y0: int) -> List[FaceBox]:
    h, w = image.shape[:2]
    found = detector.process(image)
    boxes = []
    for det in found.detections or []:
        b = det.location_data.relative_bounding_box
        boxes.append(FaceBox(x0 + b.xmin * w, y0 + b.ymin * h, x0 + (b.xmin + b.width) * w,
                             y0 + (b.ymin + b.height) * h, float(det.score[0])))
    return boxes


def _starts(n: int, side: int) -> List[int]:
    if n <= side:
        return [0]
    return list(range(0, n - side, side // 2)) + [n - side]


def _tiles(h: int, w: int) -> List[Tuple[int, int, int]]:
    """Overlapping squares (x0, y0, side) of half the longer side, half a tile apart."""
    side = max(h, w) // 2
    if side < _TILE_MIN:
        return []
    return [(x, y, side) for y in _starts(h, side) for x in _starts(w, side)]


def detect_faces(image: np.ndarray, *, min_score: float = _MIN_SCORE) -> List[FaceBox]:
    """Every face in an RGB image [H, W, 3] uint8, numbered left to right (see the module docstring)."""
    solutions = mediapipe_solutions()
    h, w = image.shape[:2]
    boxes: List[FaceBox] = []
    with solutions.face_detection.FaceDetection(model_selection=1, min_detection_confidence=min_score) as detector:
        boxes += _detect(detector, image, 0, 0)
        for x, y, side in _tiles(h, w):
            boxes += _detect(detector, np.ascontiguousarray(image[y:y + side, x:x + side]), x, y)
    kept: List[FaceBox] = []
    for box in sorted(boxes, key=lambda b: -b.score):      # one box per face: the most confident
        if all(box.iou(k) < _SAME_FACE_IOU for k in kept):
            kept.append(box)
    return sorted(kept, key=lambda b: b.centre[0])


def choose_face(faces: Sequence[FaceBox], face: Optional[int], source: str) -> int:
    """The index (0-based) into `faces` of face number `face` (1-based, left to right), or of the largest."""
    if not faces:
        raise InputError(f"No face was found in {source}.")
    if face is None:
        return int(np.argmax([b.area for b in faces]))
    if not 1 <= face <= len(faces):
        raise InputError(f"There is no face {face} in {source}: {describe_faces(faces, None)} Choose --face 1 to "
                         f"{len(faces)}.")
    return face - 1


def describe_faces(faces: Sequence[FaceBox], chosen: Optional[int]) -> str:
    """'3 faces found (numbered left to right): 1: ..., 2: ..., 3: ...; using face 2, the largest.'"""
    if not faces:
        return "no face found."
    listed = "; ".join(f"{i + 1}: {b.describe()}" for i, b in enumerate(faces))
    head = "1 face found" if len(faces) == 1 else f"{len(faces)} faces found (numbered left to right)"
    text = f"{head}: {listed}."
    if chosen is not None and len(faces) > 1:
        largest = int(np.argmax([b.area for b in faces]))
        text += f" Using face {chosen + 1}{', the largest' if chosen == largest else ''}; --face N picks another."
    return text


def crop_square(image: np.ndarray, x0: int, y0: int, side: int) -> np.ndarray:
    """The square [side, side, 3] of `image` at (x0, y0); outside the image it is black."""
    h, w = image.shape[:2]
    out = np.zeros((side, side, 3), dtype=image.dtype)
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x0 + side, w), min(y0 + side, h)
    if sx1 > sx0 and sy1 > sy0:
        out[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = image[sy0:sy1, sx0:sx1]
    return out
