"""Face landmarks of a portrait: detection with mediapipe's Face Mesh (offline, its models ship in the wheel) and
the landmark files a user can give instead.

Face Mesh gives 478 points (468 on the face, then 5 per iris: centre first, then four on the rim). The 68 iBUG
points the FLAME fit uses are picked from them by IBUG68_FROM_MEDIAPIPE: the nearest Face Mesh point to each
iBUG definition (jaw contour, brows, nose, eye corners and lids, outer and inner lips).
"""

from __future__ import annotations

from pathlib import Path
from typing import Tuple, Union

import numpy as np

from ..errors import InputError, Next3DError
from ..io.bounded_read import json_loads, read_npy, read_text_array

__all__ = ["IBUG68_FROM_MEDIAPIPE", "detect_landmarks", "read_landmarks_file", "check_image", "check_landmarks"]

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


def detect_landmarks(image: np.ndarray, *, source: str = "the portrait"
                     ) -> Tuple[np.ndarray, np.ndarray]:
    """The most prominent face of an RGB image [H, W, 3] uint8.

    Returns (landmarks [68, 2], irises [2, 5, 2]) in image pixels (x right, y down; a pixel's centre is at +0.5).
    The irises are in image order (the one further left first), each its centre then four rim points.
    Raises InputError when no face is found, naming the way round it (a landmark file)."""
    image = check_image(image, source)
    try:
        from mediapipe.python.solutions import face_mesh
    except ImportError as exc:
        raise Next3DError(f"Face detection needs mediapipe, which cannot be imported ({exc}); install the project's "
                          "requirements (pip install mediapipe==0.10.14), or give the 68 landmarks in a file "
                          "(--landmarks).") from None
    with face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1, refine_landmarks=True,
                            min_detection_confidence=0.5) as mesh:
        found = mesh.process(image)
    if not found.multi_face_landmarks:
        raise InputError(f"No face was found in {source}. Give a photo with one face, seen from the front or the "
                         "side and not much smaller than the image, or give its 68 landmarks in a file "
                         "(--landmarks, .npy/.txt/.json [68, 2] in pixels).")
    h, w = image.shape[:2]
    pts = np.array([(p.x * w, p.y * h) for p in found.multi_face_landmarks[0].landmark], dtype=np.float32)
    landmarks = pts[IBUG68_FROM_MEDIAPIPE]
    irises = np.stack([pts[_IRIS_FIRST:_IRIS_FIRST + 5], pts[_IRIS_FIRST + 5:_IRIS_FIRST + 10]])
    if irises[0, 0, 0] > irises[1, 0, 0]:
        irises = irises[::-1].copy()
    return landmarks, irises


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
