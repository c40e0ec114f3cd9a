"""FLAME for the Next3D generator: official models read without chumpy, the parameters that drive the generator,
their evaluation into its mesh input (5023 vertices + 68 landmarks, FLAME units), conversions to the generator's
world and camera, and animation files. Names are imported from their module on first use (`model_data` and
`official` need numpy only; `model` needs torch)."""

from ..lazy_exports import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "animation": ["FlameSequence", "list_obj_sequence", "load_sequence", "read_obj_sequence", "save_sequence"],
    "conversions": ["FLAME_TO_WORLD_SCALE", "VIEW_OFFSETS", "Placement", "camera_to_world", "flame_to_world",
                    "flame_transform_to_world", "fold_head_pose_into_camera", "fold_head_pose_into_label",
                    "head_pose_transform", "world_to_flame"],
    "model": ["FlameModel", "FlameOutput"],
    "model_data": ["JOINT_NAMES", "FlameModelData", "load_model_data", "save_model_data"],
    "official": ["LandmarkEmbedding", "convert_official_flame", "default_cache_dir", "load_or_convert",
                 "read_deca_embedding", "read_dynamic_embedding", "read_flame_pickle", "read_official_flame",
                 "read_static_embedding"],
    "params": ["PARAM_FIELDS", "FlameParams", "ParamField", "axis_angle_to_matrix", "eye_pose_to_gaze",
               "eyes_to_gaze", "gaze_to_eye_pose", "gaze_to_eyes", "matrix_to_axis_angle"],
})
