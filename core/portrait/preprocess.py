"""A portrait photo -> what the generator needs to reproduce it: the aligned crop, its camera label and the FLAME
mesh of the face (shape, expression, jaw and eyes fitted to its landmarks).

Steps: landmarks (detected, or from a file) -> FFHQ's alignment square -> FLAME + camera fit -> the square moved
and scaled so that the head sits at the FFHQ cameras' distance and centre -> fit again (twice) -> eyes fitted to the
irises -> the crop. With a camera given, the photo is taken as already aligned: it is only resized, and only
FLAME is fitted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, List, Optional

import numpy as np
import torch

from ..errors import InputError
from ..flame.model import FlameModel
from ..flame.params import FlameParams
from ..rendering.camera import FFHQ_PIVOT, look_at_cam2world
from .crop import Crop, ffhq_crop, warp_image
from .fit import fit_eye_pose, fit_flame, head_pivot_in_crop, order_iris
from .landmarks import check_image, check_landmarks, detect_face_landmarks

__all__ = ["Portrait", "preprocess_portrait"]

# Distance from the FFHQ cameras to the pivot they look at (2.5): the crop is scaled so the fitted head is there.
_PIVOT_DISTANCE = float(torch.linalg.norm(look_at_cam2world(0.0, 0.0)[:3, 3] - torch.tensor(FFHQ_PIVOT)))


@dataclass
class Portrait:
    """A preprocessed portrait. Pixel coordinates are in the crop (x right, y down)."""

    image: np.ndarray                     # [R, R, 3] uint8 aligned crop
    landmarks: np.ndarray                 # [68, 2] iBUG landmarks in crop pixels
    eye_landmarks: Optional[np.ndarray]   # [2, 5, 2] irises (image-left eye first; centre, right, left, top, bottom)
    camera: torch.Tensor                  # [25] camera label of the crop
    flame: FlameParams                    # [1] fitted parameters, global rotation zero (it is in the camera)
    mesh_input: torch.Tensor              # [1, V + 68, 3] the generator's mesh input
    fit_error_px: float                   # mean landmark error after the fit, crop pixels
    eye_error_px: Optional[float] = None  # mean iris error after the eye fit, crop pixels
    crop: Optional[Crop] = None           # the square in the source photo (None when the photo was already aligned)
    warnings: List[str] = field(default_factory=list)
    faces_note: Optional[str] = None      # how many faces the detector found, where, and which one was used


def preprocess_portrait(image: np.ndarray, flame: FlameModel, *, resolution: int,
                        landmarks: Optional[np.ndarray] = None, camera: Optional[torch.Tensor] = None,
                        fit_eyes: bool = True, steps: int = 300,
                        progress: Optional[Callable[[str, int, int], None]] = None,
                        source: str = "the portrait", face: Optional[int] = None) -> Portrait:
    """Preprocess a portrait [H, W, 3] uint8 for a generator of `resolution` pixels.

    landmarks: 68 iBUG points [68, 2] in the photo's pixels, instead of detecting them (then the irises are
        unknown and the eyes look straight ahead, with a warning).
    camera: the crop's camera label [25]; the photo is then taken as aligned (square), resized, and only FLAME
        is fitted.
    progress: called as progress(stage, done, total) with stage "flame" or "eyes".
    face: which face of a photo with several (1-based, left to right; default the largest), see
        core/portrait/faces.py.
    """
    image = check_image(image, source)
    warnings: List[str] = []
    irises, faces_note = None, None
    if landmarks is None:
        found = detect_face_landmarks(image, face=face, source=source)
        landmarks, irises, faces_note = found.landmarks, found.irises, found.describe()
    elif face is not None:
        raise InputError(f"A face number ({face}) chooses among the faces detected in {source}; with its landmarks "
                         "given in a file there is nothing to choose. Drop one of them.")
    landmarks = np.asarray(landmarks, dtype=np.float32)
    if landmarks.shape != (68, 2) or not np.isfinite(landmarks).all():
        raise InputError(f"The landmarks of {source} must be 68 finite (x, y) pixel positions, got an array of shape "
                         f"{list(landmarks.shape)}.")
    check_landmarks(landmarks, image.shape[:2], source)

    def stage(name: str):
        return None if progress is None else (lambda done, total: progress(name, done, total))

    if camera is not None:
        h, w = image.shape[:2]
        if abs(h - w) > 0.01 * max(h, w):
            raise InputError(f"{source} is {w}x{h} pixels; with a camera given it must be an aligned square crop. "
                             "Leave out the camera to let preprocessing crop the photo.")
        crop = Crop(np.array([w / 2, h / 2]), np.array([w / 2, 0.0]))
        cam = torch.as_tensor(np.asarray(camera, dtype=np.float32)).reshape(-1)
        if cam.numel() != 25 or not bool(torch.isfinite(cam).all()):
            raise InputError(f"The camera of {source} must be a label of 25 finite numbers, got {cam.numel()}.")
        fit = fit_flame(flame, crop.to_crop(landmarks, resolution), resolution, camera=cam, steps=steps,
                        progress=stage("flame"))
        aligned_crop = None
    else:
        crop = ffhq_crop(landmarks)
        fit = fit_flame(flame, crop.to_crop(landmarks, resolution), resolution, steps=steps, progress=stage("flame"))
        # Move the square so the head's pivot is in its centre at the FFHQ cameras' distance, and refit. Twice:
        # distance and face size trade against each other, so one round can land 0.2 units off.
        for _ in range(2):
            centre, depth = head_pivot_in_crop(fit, resolution)
            crop = crop.moved(np.array(centre), depth_scale(depth), resolution)
            fit = fit_flame(flame, crop.to_crop(landmarks, resolution), resolution, init=fit,
                            steps=max(steps // 2, 1), progress=stage("flame"))
        aligned_crop = crop
    crop_landmarks = crop.to_crop(landmarks, resolution)

    eyes = torch.zeros(1, 6)
    eye_landmarks, eye_error = None, None
    if irises is not None and fit_eyes:
        eye_landmarks = np.stack([order_iris(crop.to_crop(iris, resolution)) for iris in irises])
        eyes, eye_error = fit_eye_pose(flame, fit.params, fit.camera, eye_landmarks, resolution,
                                       progress=stage("eyes"))
    elif fit_eyes:
        warnings.append("The irises are unknown (landmarks came from a file), so the eyes look straight ahead.")
    params = fit.params.replace(eyes=eyes)
    with torch.no_grad():
        mesh_input = flame.mesh_input(params)
    image_out = warp_image(image, crop, resolution)
    if fit.error_px > 0.04 * resolution:
        warnings.append(f"The FLAME fit is poor (mean landmark error {fit.error_px:.1f} px of {resolution}); the "
                        "avatar may not match the photo. Check the landmarks, or give them in a file.")
    return Portrait(image=image_out, landmarks=crop_landmarks, eye_landmarks=eye_landmarks, camera=fit.camera,
                    flame=params, mesh_input=mesh_input, fit_error_px=fit.error_px, eye_error_px=eye_error,
                    crop=aligned_crop, warnings=warnings, faces_note=faces_note)


def depth_scale(depth: float) -> float:
    """How much larger the square must be for a head at `depth` to look as it would at the FFHQ distance."""
    return _PIVOT_DISTANCE / depth
