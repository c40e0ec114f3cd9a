"""Portrait preprocessing for one-shot avatars (issue #7): landmarks, the aligned crop, the camera and the FLAME
fit, eyes included. `preprocess_portrait` runs it all; `save_portrait`/`load_portrait` keep the result."""

from .crop import Crop, ffhq_crop, warp_image
from .files import load_portrait, read_camera_file, save_portrait
from .fit import eye_vertex_indices, fit_eye_pose, fit_flame, project_flame_points
from .landmarks import detect_landmarks, read_landmarks_file
from .preprocess import Portrait, preprocess_portrait

__all__ = ["Crop", "Portrait", "detect_landmarks", "eye_vertex_indices", "ffhq_crop", "fit_eye_pose", "fit_flame",
           "load_portrait", "preprocess_portrait", "project_flame_points", "read_camera_file", "read_landmarks_file",
           "save_portrait", "warp_image"]
