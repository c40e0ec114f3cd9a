"""Helpers shared by the Blender tests (imported by name: tests/ has no packages)."""

import os
import sys
from pathlib import Path

import bpy

MODULE = "bl_ext.user_default.next3d_blender"


def enable(module: str = MODULE):
    import addon_utils

    if module not in bpy.context.preferences.addons:
        addon_utils.enable(module, default_set=True)
    return sys.modules[module]


def submodule(name: str):
    """A module of the installed extension (imported if no operator has needed it yet)."""
    import importlib

    return importlib.import_module(f"{MODULE}.{name}")


def make_scene(out_dir: Path, size=(64, 64)):
    """Add a FLAME head (with its camera) and set a small render size and the output folder."""
    scene = bpy.context.scene
    scene.render.resolution_x, scene.render.resolution_y = size
    scene.render.resolution_percentage = 100
    scene.render.filepath = str(out_dir) + os.sep
    assert bpy.ops.next3d.add_head() == {"FINISHED"}
    return bpy.data.objects["FLAME"]


def flame_addon_rig(arrays: dict, name: str = "FLAME-generic"):
    """A head laid out as the FLAME Blender add-on builds it (TimoBolkart/FLAME-Blender-Add-on), from FLAME-layout
    arrays: the mesh data in Blender's z-up axes (FLAME (x, y, z) -> (x, -z, y)) under an armature object with no
    rotation; keys Basis, Shape000.., Exp000.. (numbered unlike ours) and Pose1..Pose18 (the neck's and jaw's
    correctives, whose values that add-on sets from the bones when asked); bones root, neck, jaw, left_eye,
    right_eye at the joints, pointing up (+z) with zero roll, so their local axes are FLAME's, in quaternion mode.
    Returns (armature, mesh)."""
    import numpy as np

    to_z_up = np.array([[1.0, 0, 0], [0, 0, -1.0], [0, 1.0, 0]])
    v = np.asarray(arrays["v_template"], np.float64)
    faces = np.asarray(arrays["faces"], np.int32)
    mesh = bpy.data.meshes.new(f"{name}-mesh")
    mesh.from_pydata((v @ to_z_up.T).tolist(), [], faces.tolist())
    mesh_obj = bpy.data.objects.new(f"{name}-mesh", mesh)
    arm_obj = bpy.data.objects.new(name, bpy.data.armatures.new(name))
    for obj in (arm_obj, mesh_obj):
        bpy.context.scene.collection.objects.link(obj)
    mesh_obj.parent = arm_obj

    mesh_obj.shape_key_add(name="Basis", from_mix=False)
    groups = [("Shape%03d", arrays["shapedirs"]), ("Exp%03d", arrays["exprdirs"]),
              ("Pose%d", np.asarray(arrays["posedirs"])[:, :, :18])]
    for pattern, dirs in groups:
        dirs = np.asarray(dirs, np.float64)
        for k in range(dirs.shape[2]):
            key = mesh_obj.shape_key_add(name=pattern % (k + 1 if pattern.startswith("Pose") else k), from_mix=False)
            key.slider_min, key.slider_max, key.value = -10, 10, 0.0
            key.data.foreach_set("co", ((v + dirs[:, :, k]) @ to_z_up.T).astype(np.float32).reshape(-1))

    joints = (np.asarray(arrays["J_regressor"], np.float64) @ v) @ to_z_up.T
    bpy.context.view_layer.objects.active = arm_obj
    bpy.ops.object.mode_set(mode="EDIT")
    bones = arm_obj.data.edit_bones
    for bone_name, parent, joint in zip(("root", "neck", "jaw", "left_eye", "right_eye"),
                                        (None, "root", "neck", "neck", "neck"), joints):
        bone = bones.new(bone_name)
        bone.head = joint.tolist()
        bone.tail = (joint + [0.0, 0.0, 0.01]).tolist()
        bone.roll = 0.0
        if parent:
            bone.parent = bones[parent]
    bpy.ops.object.mode_set(mode="OBJECT")
    for pb in arm_obj.pose.bones:
        pb.rotation_mode = "QUATERNION"
    weights = np.asarray(arrays["weights"], np.float64)
    for j, bone_name in enumerate(("root", "neck", "jaw", "left_eye", "right_eye")):
        group = mesh_obj.vertex_groups.new(name=bone_name)
        for i in np.flatnonzero(weights[:, j] > 0):
            group.add([int(i)], float(weights[i, j]), "REPLACE")
    mesh_obj.modifiers.new("Armature", "ARMATURE").object = arm_obj
    return arm_obj, mesh_obj


def frontal_camera(distance: float = 1.08, z_up: bool = True):
    """The FFHQ camera in front of a FLAME head standing at the world origin (z up: looking along +y)."""
    from mathutils import Matrix

    cam = bpy.data.objects.new("Camera", bpy.data.cameras.new("Camera"))
    cam.data.sensor_width = 36.0
    cam.data.lens = 4.2647 * 36.0
    cam.data.clip_start = 0.01
    bpy.context.scene.collection.objects.link(cam)
    flame = Matrix.Translation((0.0, -0.01, distance))
    cam.matrix_world = (Matrix.Rotation(1.5707963267948966, 4, "X") @ flame) if z_up else flame
    bpy.context.scene.camera = cam
    return cam
