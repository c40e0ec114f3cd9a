"""FLAME for the Next3D generator: official models read without chumpy, the parameters that drive the generator,
their evaluation into its mesh input (5023 vertices + 68 landmarks, FLAME units), conversions to the generator's
world and camera, and animation files."""

from .animation import FlameSequence, list_obj_sequence, load_sequence, read_obj_sequence, save_sequence
from .conversions import (FLAME_TO_WORLD_SCALE, VIEW_OFFSETS, flame_to_world, flame_transform_to_world,
                          fold_head_pose_into_camera, fold_head_pose_into_label, head_pose_transform, world_to_flame)
from .model import FlameModel, FlameOutput
from .model_data import JOINT_NAMES, FlameModelData, load_model_data, save_model_data
from .official import (LandmarkEmbedding, convert_official_flame, default_cache_dir, load_or_convert,
                       read_deca_embedding, read_dynamic_embedding, read_flame_pickle, read_official_flame,
                       read_static_embedding)
from .params import (PARAM_FIELDS, FlameParams, ParamField, axis_angle_to_matrix, eye_pose_to_gaze, eyes_to_gaze,
                     gaze_to_eye_pose, gaze_to_eyes, matrix_to_axis_angle)

__all__ = [
    "FlameModelData", "load_model_data", "save_model_data", "JOINT_NAMES",
    "read_flame_pickle", "read_static_embedding", "read_dynamic_embedding", "read_deca_embedding",
    "LandmarkEmbedding", "read_official_flame", "convert_official_flame", "load_or_convert", "default_cache_dir",
    "FlameModel", "FlameOutput",
    "FlameParams", "ParamField", "PARAM_FIELDS", "gaze_to_eye_pose", "eye_pose_to_gaze", "gaze_to_eyes",
    "eyes_to_gaze", "axis_angle_to_matrix", "matrix_to_axis_angle",
    "FLAME_TO_WORLD_SCALE", "VIEW_OFFSETS", "flame_to_world", "world_to_flame", "head_pose_transform",
    "flame_transform_to_world", "fold_head_pose_into_camera", "fold_head_pose_into_label",
    "FlameSequence", "save_sequence", "load_sequence", "read_obj_sequence", "list_obj_sequence",
]
