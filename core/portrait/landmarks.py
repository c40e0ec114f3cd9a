"""Face landmarks of a portrait: detection with mediapipe's Face Mesh (offline, its models ship in the wheel), on
the face the full-range detector chose (core/portrait/faces.py), and the landmark files a user can give instead.

Face Mesh gives 478 points (468 on the face, then 5 per iris: centre first, then four on the rim). The 68 iBUG
points the FLAME fit uses are picked from them by IBUG68_FROM_MEDIAPIPE: the nearest Face Mesh point to each
iBUG definition (jaw contour, brows, nose, eye corners and lids, outer and inner lips).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple, Union

import numpy as np

from ..errors import InputError
from ..io.bounded_read import json_loads, read_npy, read_text_array
from .faces import FaceBox, choose_face, crop_square, describe_faces, detect_faces, mediapipe_solutions

__all__ = ["IBUG68_FROM_MEDIAPIPE", "FaceLandmarks", "detect_face_landmarks", "detect_landmarks", "ibug_and_irises",
           "mesh_points", "read_landmarks_file", "check_image", "check_landmarks"]

# iBUG 68 in its usual order, as Face Mesh indices. The subject's right side comes first in iBUG (image left).
IBUG68_FROM_MEDIAPIPE = np.array([
    # 0-16 jaw contour, from the subject's right ear round the chin to the left ear
    127, 234, 93, 132, 58, 172, 136, 150, 152, 379, 365, 397, 288, 361, 323, 454, 356,
    # 17-21 right brow, 22-26 left brow
    70, 63, 105, 66, 107, 336, 296, 334, 293, 300,
    # 27-30 nose bridge, 31-35 nostrils
    168, 197, 5, 4, 75, 97, 2, 326, 305,
    # 36-41 right eye, 42-47 left eye (outer corner, upper lid, inner corner, lower lid)
    33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380,
    # 48-59 outer lips, 60-67 inner lips
    61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181, 78, 82, 13, 312, 308, 317, 14, 87,
], dtype=np.int64)

_IRIS_FIRST = 468   # 468-472 and 473-477: centre, then four rim points


def check_image(image: np.ndarray, source: str) -> np.ndarray:
    """A portrait must be RGB uint8 [H, W, 3] and not tiny; returns it contiguous."""
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        desc = f"{image.dtype} {list(image.shape)}" if isinstance(image, np.ndarray) else type(image).__name__
        raise InputError(f"{source}: a portrait must be an RGB image [H, W, 3] uint8, got {desc}.")
    if min(image.shape[:2]) < 64:
        raise InputError(f"{source} is only {image.shape[1]}x{image.shape[0]} pixels; give a portrait of at least "
                         "256x256 pixels with the face filling a good part of it.")
    return np.ascontiguousarray(image)


@dataclass(frozen=True)
class FaceLandmarks:
    """The landmarks of one face of a photo, and every face the detector found there (core.portrait.faces)."""

    landmarks: np.ndarray            # [68, 2] image pixels
    irises: np.ndarray               # [2, 5, 2] image pixels, the image-left iris first
    faces: Tuple[FaceBox, ...]       # every face found, numbered left to right (empty: only Face Mesh saw one)
    chosen: Optional[int]            # index into faces of the face these landmarks belong to

    def describe(self) -> str:
        """How many faces were found, where, and which one was used."""
        if not self.faces:
            return "The face detector found no face; Face Mesh found one in the whole picture."
        return describe_faces(self.faces, self.chosen)


def mesh_points(face_landmarks, x0: float, y0: float, w: int, h: int) -> np.ndarray:
    """Face Mesh's normalized points of one face, found in a w x h picture at (x0, y0) -> [478, 2] pixels."""
    return np.array([(x0 + p.x * w, y0 + p.y * h) for p in face_landmarks.landmark], dtype=np.float32)


def ibug_and_irises(points: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Face Mesh points [478, 2] -> (68 iBUG landmarks [68, 2], irises [2, 5, 2] with the image-left one first)."""
    landmarks = points[IBUG68_FROM_MEDIAPIPE]
    irises = np.stack([points[_IRIS_FIRST:_IRIS_FIRST + 5], points[_IRIS_FIRST + 5:_IRIS_FIRST + 10]])
    if irises[0, 0, 0] > irises[1, 0, 0]:
        irises = irises[::-1].copy()
    return landmarks, irises


def _face_mesh_points(mesh, picture: np.ndarray, x0: int, y0: int) -> Optional[np.ndarray]:
    found = mesh.process(picture)
    if not found.multi_face_landmarks:
        return None
    h, w = picture.shape[:2]
    return mesh_points(found.multi_face_landmarks[0], x0, y0, w, h)


def detect_face_landmarks(image: np.ndarray, *, face: Optional[int] = None, source: str = "the portrait"
                          ) -> FaceLandmarks:
    """Landmarks of one face of an RGB image [H, W, 3] uint8: the largest, or face number `face` (1-based, left to
    right; core.portrait.faces).

    Every face is found first with the full-range detector. A picture with one face (or none the detector sees) goes
    to Face Mesh whole, as a portrait always did; otherwise, or when that finds nothing, Face Mesh runs on a square
    around the chosen face, so that small faces in group photos and wide shots work. Raises InputError when no
    face is found or `face` does not exist, naming the faces that do and the way round (a landmark file)."""
    image = check_image(image, source)
    solutions = mediapipe_solutions()
    faces = detect_faces(image)
    if face is not None and not faces:
        raise InputError(f"No face was found in {source}, so there is no face {face}; give a photo where the "
                         "faces are at least about 40 pixels high, or give the 68 landmarks in a file (--landmarks).")
    chosen = choose_face(faces, face, source) if faces else None
    points = None
    with solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1, refine_landmarks=True,
                                      min_detection_confidence=0.5) as mesh:
        if len(faces) <= 1:
            points = _face_mesh_points(mesh, image, 0, 0)
        if points is None and chosen is not None:
            x0, y0, side = faces[chosen].window()
            points = _face_mesh_points(mesh, crop_square(image, x0, y0, side), x0, y0)
    if points is None:
        where = (f" The detector saw a face at {faces[chosen].describe()}, but Face Mesh could not place its "
                 "landmarks (too small, blurred or turned away?)." if chosen is not None else "")
        raise InputError(f"No face was found in {source}.{where} Give a photo with a face seen from the front or the "
                         "side, at least about 40 pixels high, or give its 68 landmarks in a file (--landmarks, "
                         ".npy/.txt/.json [68, 2] in pixels).")
    landmarks, irises = ibug_and_irises(points)
    return FaceLandmarks(landmarks, irises, tuple(faces), chosen)


def detect_landmarks(image: np.ndarray, *, face: Optional[int] = None, source: str = "the portrait"
                     ) -> Tuple[np.ndarray, np.ndarray]:
    """The largest face of an RGB image [H, W, 3] uint8, or face number `face` (see detect_face_landmarks).

    Returns (landmarks [68, 2], irises [2, 5, 2]) in image pixels (x right, y down; a pixel's centre is at +0.5).
    The irises are in image order (the one further left first), each its centre then four rim points.
    Raises InputError when no face is found, naming the way round it (a landmark file)."""
    found = detect_face_landmarks(image, face=face, source=source)
    return found.landmarks, found.irises


def read_landmarks_file(path: Union[str, Path]) -> np.ndarray:
    """68 landmarks [68, 2] in image pixels from .npy ([68, 2] or [68, 3]), .txt (68 rows of x y [z]) or .json
    (a list of 68 pairs, or {"landmarks": [...]})."""
    p = Path(path)
    fix = "give 68 iBUG landmarks in image pixels as .npy [68, 2], .txt (one 'x y' per line) or .json [[x, y], ...]"
    if not p.is_file():
        raise InputError(f"The landmark file {str(p)!r} does not exist; {fix}.")
    try:
        suffix = p.suffix.lower()
        if suffix == ".npy":
            with open(p, "rb") as fh:
                data = read_npy(fh)
        elif suffix == ".json":
            data = json_loads(p.read_text(encoding="utf-8"))
            data = data.get("landmarks") if isinstance(data, dict) else data
        else:
            data = read_text_array(p)
        with np.errstate(over="ignore", invalid="ignore"):   # out-of-range numbers become inf, named below
            points = np.asarray(data, dtype=np.float32)
    except (OSError, ValueError, TypeError, OverflowError) as exc:   # BoundedReadError is a ValueError
        reason = " ".join(str(exc).split())[:200]
        raise InputError(f"The landmark file {p} cannot be read ({reason}); {fix}.") from None
    if points.ndim != 2 or points.shape[0] != 68 or points.shape[1] not in (2, 3):
        raise InputError(f"The landmark file {p} holds an array of shape {list(points.shape)}; {fix}.")
    if not np.isfinite(points).all():
        raise InputError(f"The landmark file {p} contains NaN or infinite values; {fix}.")
    return np.ascontiguousarray(points[:, :2])


def check_landmarks(landmarks: np.ndarray, image_size: Tuple[int, int], source: str) -> None:
    """Landmarks must lie roughly on the image (a file for another image, or in normalized units, would not)."""
    h, w = image_size
    lo, hi = landmarks.min(axis=0), landmarks.max(axis=0)
    if lo[0] < -0.5 * w or lo[1] < -0.5 * h or hi[0] > 1.5 * w or hi[1] > 1.5 * h or np.ptp(landmarks[:, 0]) < 8:
        raise InputError(f"The landmarks of {source} span x {lo[0]:.1f}..{hi[0]:.1f}, y {lo[1]:.1f}..{hi[1]:.1f} on "
                         f"a {w}x{h} image; landmarks are image pixels of this photo (not normalized units).")
