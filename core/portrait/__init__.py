"""Portrait preprocessing for one-shot avatars: landmarks, the aligned crop, the camera and the FLAME fit, eyes
included. `preprocess_portrait` runs it all; `save_portrait`/`load_portrait` keep the result. Names are imported
from their module on first use."""

from ..lazy_exports import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "crop": ["Crop", "ffhq_crop", "warp_image"],
    "files": ["load_portrait", "read_camera_file", "save_portrait"],
    "fit": ["eye_vertex_indices", "fit_eye_pose", "fit_flame", "project_flame_points"],
    "landmarks": ["detect_landmarks", "read_landmarks_file"],
    "preprocess": ["Portrait", "preprocess_portrait"],
})
