"""The FLAME rig in Blender: building it from head arrays, finding it from the selection, reading it per frame.

Layout (names compatible with the FLAME Blender add-on, so rigs made with it are read the same way):

* an armature object (the rig root) with bones root, neck, jaw, left_eye, right_eye at FLAME's joints; jaw and
  eyes hang from neck, neck from root. Bones point along +Y with zero roll, so their rest orientation is the
  identity and a pose rotation *is* FLAME's axis-angle pose of that joint. Pose bones use XYZ Euler.
* a mesh object parented to it (Armature modifier, one vertex group per bone from FLAME's skinning weights) whose
  data lives in FLAME space (metres, y up, face towards +z); the armature object carries a +90 degree X rotation so
  the head stands upright in Blender's z-up world.
* shape keys Basis, Shape1..ShapeS, Exp1..ExpE (1-based, slider range -10..10) and Pose1..Pose36 correctives when
  the head has non-zero pose directions.

Per frame (`read_frame`): shape-key values -> shape and expression coefficients, jaw and eye bone rotations ->
FLAME jaw and eye poses; the head's rigid motion in the world (object transform, root and neck bones) is returned as
a matrix and folded into the camera (engine/convert.py's camera_in_head_space), as the generator wants a head
with zero global pose.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np

from ..core.errors import InputError
from ..engine.convert import bone_rotation_in_parent_axes, matrix_to_axis_angle, matrix_to_numpy

BONES = ("root", "neck", "jaw", "left_eye", "right_eye")     # FLAME joints 0..4
BONE_PARENTS = (None, "root", "neck", "neck", "neck")
SHAPE_PREFIX, EXPR_PREFIX, POSE_PREFIX = "Shape", "Exp", "Pose"
BONE_LENGTH = 0.02               # metres; only for display
SLIDER_RANGE = 10.0
RIG_NAME = "FLAME"
MESH_NAME = "FLAME-mesh"
# The FFHQ camera (radius 2.7 about the EG3D origin, normalized focal 4.2647) in FLAME space, for "Add camera".
FFHQ_CAMERA_FLAME_POSITION = (0.0, -0.01, 1.08)
FFHQ_FOCAL = 4.2647
_KEY_RE = re.compile(r"^(Shape|Exp|Pose)(\d+)$")


@dataclass
class Rig:
    """A FLAME rig found in the scene: the mesh with the shape keys and (optionally) its armature."""

    mesh: object                       # bpy Object (MESH)
    armature: Optional[object] = None  # bpy Object (ARMATURE) or None: then the object transform is the head pose

    @property
    def root(self):
        return self.armature if self.armature is not None else self.mesh

    @property
    def name(self) -> str:
        return self.root.name


# ------------------------------------------------------------------------------------------------ building

def build_rig(context, arrays: Dict[str, np.ndarray], head_name: str, *, add_camera: bool = False,
              name: str = RIG_NAME):
    """Create the armature + mesh + shape keys in the active collection at the 3D cursor; returns the armature."""
    import bpy

    from .datablocks import mesh_from_arrays

    scene = context.scene
    collection = context.collection or scene.collection
    v = np.asarray(arrays["v_template"], dtype=np.float32)
    faces = np.asarray(arrays["faces"], dtype=np.int64)
    joints = (np.asarray(arrays["J_regressor"], np.float64) @ v.astype(np.float64)).astype(np.float32)

    mesh = mesh_from_arrays(MESH_NAME, v, faces)
    if "uvs" in arrays and "uv_faces" in arrays:
        uv_layer = mesh.uv_layers.new(name="UVMap")
        uvs = np.asarray(arrays["uvs"], np.float32)[np.asarray(arrays["uv_faces"]).reshape(-1)]
        uv_layer.data.foreach_set("uv", uvs.reshape(-1))
    for poly in mesh.polygons:
        poly.use_smooth = True
    mesh_obj = bpy.data.objects.new(MESH_NAME, mesh)

    arm_data = bpy.data.armatures.new(name)
    arm_data.display_type = "STICK"
    arm_obj = bpy.data.objects.new(name, arm_data)
    arm_obj.show_in_front = True
    collection.objects.link(arm_obj)
    collection.objects.link(mesh_obj)
    arm_obj.location = scene.cursor.location
    arm_obj.rotation_euler = (math.pi / 2, 0.0, 0.0)
    mesh_obj.parent = arm_obj

    _add_shape_keys(mesh_obj, v, arrays)
    _add_bones(context, arm_obj, joints)
    _add_skinning(mesh_obj, arm_obj, np.asarray(arrays["weights"], np.float32))
    for pb in arm_obj.pose.bones:
        pb.rotation_mode = "XYZ"
    arm_obj.next3d.is_rig = True
    arm_obj.next3d.head_name = head_name
    mesh_obj.next3d.is_rig = True
    mesh_obj.next3d.head_name = head_name

    for obj in context.view_layer.objects:
        obj.select_set(False)
    arm_obj.select_set(True)
    mesh_obj.select_set(True)
    context.view_layer.objects.active = arm_obj

    if add_camera:
        add_ffhq_camera(context, arm_obj)
    return arm_obj


def _add_shape_keys(mesh_obj, v: np.ndarray, arrays: Dict[str, np.ndarray]) -> None:
    basis = mesh_obj.shape_key_add(name="Basis", from_mix=False)
    basis.interpolation = "KEY_LINEAR"
    groups = [(SHAPE_PREFIX, np.asarray(arrays["shapedirs"], np.float32)),
              (EXPR_PREFIX, np.asarray(arrays["exprdirs"], np.float32))]
    posedirs = np.asarray(arrays["posedirs"], np.float32)
    if np.any(posedirs):
        groups.append((POSE_PREFIX, posedirs))
    for prefix, dirs in groups:
        for k in range(dirs.shape[2]):
            key = mesh_obj.shape_key_add(name=f"{prefix}{k + 1}", from_mix=False)
            key.slider_min, key.slider_max = -SLIDER_RANGE, SLIDER_RANGE
            key.data.foreach_set("co", (v + dirs[:, :, k]).reshape(-1))
            key.value = 0.0
    mesh_obj.data.shape_keys.name = f"{mesh_obj.name}-keys"


def _add_bones(context, arm_obj, joints: np.ndarray) -> None:
    import bpy

    view_layer = context.view_layer
    previous_active = view_layer.objects.active
    view_layer.objects.active = arm_obj
    bpy.ops.object.mode_set(mode="EDIT")
    try:
        edit_bones = arm_obj.data.edit_bones
        for name, parent, joint in zip(BONES, BONE_PARENTS, joints):
            eb = edit_bones.new(name)
            eb.head = tuple(float(x) for x in joint)
            eb.tail = (float(joint[0]), float(joint[1]) + BONE_LENGTH, float(joint[2]))
            eb.roll = 0.0
            eb.use_deform = True
            if parent is not None:
                eb.parent = edit_bones[parent]
                eb.use_connect = False
    finally:
        bpy.ops.object.mode_set(mode="OBJECT")
        view_layer.objects.active = previous_active


def _add_skinning(mesh_obj, arm_obj, weights: np.ndarray) -> None:
    for j, name in enumerate(BONES):
        group = mesh_obj.vertex_groups.new(name=name)
        column = weights[:, j]
        nonzero = np.flatnonzero(column > 1e-6)
        # One call per distinct weight keeps this fast for FLAME-sized meshes.
        values, inverse = np.unique(np.round(column[nonzero], 5), return_inverse=True)
        for k, w in enumerate(values):
            group.add(nonzero[inverse == k].tolist(), float(w), "REPLACE")
    mod = mesh_obj.modifiers.new("Armature", "ARMATURE")
    mod.object = arm_obj


def add_ffhq_camera(context, rig_obj):
    """A camera where the FFHQ training cameras sit relative to the head (frontal, 1.08 m, focal 4.2647), made the
    scene camera. Not parented to the rig: head motion must show as motion relative to the camera."""
    import bpy
    from mathutils import Matrix

    cam_data = bpy.data.cameras.new("Next3D Camera")
    cam_data.sensor_fit = "AUTO"
    cam_data.sensor_width = 36.0
    cam_data.lens = FFHQ_FOCAL * cam_data.sensor_width
    cam_data.clip_start = 0.01
    cam_obj = bpy.data.objects.new("Next3D Camera", cam_data)
    (context.collection or context.scene.collection).objects.link(cam_obj)
    context.view_layer.update()
    cam_obj.matrix_world = rig_obj.matrix_world.normalized() @ Matrix.Translation(FFHQ_CAMERA_FLAME_POSITION)
    context.scene.camera = cam_obj
    return cam_obj


# ------------------------------------------------------------------------------------------------ finding

def _has_flame_keys(obj) -> bool:
    keys = getattr(getattr(obj, "data", None), "shape_keys", None)
    return keys is not None and any(_KEY_RE.match(k.name) for k in keys.key_blocks)


def find_rig(obj) -> Rig:
    """The FLAME rig that `obj` (the active object) belongs to: the armature or its head mesh."""
    if obj is None:
        raise InputError("No FLAME rig is selected. Select the FLAME armature or its head mesh (or add one with "
                         "Next3D > Rig > Add FLAME Head).")
    if obj.type == "ARMATURE":
        meshes = [c for c in obj.children if c.type == "MESH" and _has_flame_keys(c)]
        if not meshes:
            meshes = [c for c in obj.children if c.type == "MESH"]
        if not meshes:
            raise InputError(f"The armature {obj.name!r} has no head mesh as a child; it is not a FLAME rig.")
        return Rig(mesh=meshes[0], armature=obj)
    if obj.type == "MESH":
        arm = obj.parent if obj.parent is not None and obj.parent.type == "ARMATURE" else None
        if arm is None:
            for mod in obj.modifiers:
                if mod.type == "ARMATURE" and mod.object is not None:
                    arm = mod.object
                    break
        return Rig(mesh=obj, armature=arm)
    raise InputError(f"The active object {obj.name!r} is a {obj.type.lower()}, not a FLAME rig. Select the FLAME "
                     "armature or its head mesh.")


def key_counts(mesh_obj) -> Dict[str, int]:
    """Highest index of the Shape/Exp/Pose keys present."""
    counts = {SHAPE_PREFIX: 0, EXPR_PREFIX: 0, POSE_PREFIX: 0}
    keys = mesh_obj.data.shape_keys
    if keys is not None:
        for kb in keys.key_blocks:
            m = _KEY_RE.match(kb.name)
            if m:
                counts[m.group(1)] = max(counts[m.group(1)], int(m.group(2)))
    return counts


def check_rig(rig: Rig, n_vertices: int, n_shape: int, n_expr: int) -> List[str]:
    """Raise InputError for a rig the head model cannot drive; return warnings for what is ignored."""
    mesh = rig.mesh.data
    if len(mesh.vertices) != n_vertices:
        raise InputError(f"The mesh {rig.mesh.name!r} has {len(mesh.vertices)} vertices, but the head model has "
                         f"{n_vertices}. Use a rig made by 'Add FLAME Head' (or the FLAME add-on) for this model, "
                         "without adding or deleting vertices.")
    keys = mesh.shape_keys
    if keys is None:
        raise InputError(f"The mesh {rig.mesh.name!r} has no shape keys; a FLAME rig has Shape1.., Exp1.. keys. "
                         "Add the head with 'Add FLAME Head'.")
    names = set(keys.key_blocks.keys())
    for prefix, count in ((SHAPE_PREFIX, n_shape), (EXPR_PREFIX, n_expr)):
        missing = [f"{prefix}{k}" for k in range(1, count + 1) if f"{prefix}{k}" not in names]
        if missing:
            more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
            raise InputError(f"The mesh {rig.mesh.name!r} lacks the shape keys {', '.join(missing[:3])}{more}; the "
                             f"head model needs {prefix}1..{prefix}{count}. Re-create the head with "
                             "'Add FLAME Head'.")
    warnings = []
    counts = key_counts(rig.mesh)
    if counts[SHAPE_PREFIX] > n_shape or counts[EXPR_PREFIX] > n_expr:
        warnings.append(f"The rig has {counts[SHAPE_PREFIX]} shape and {counts[EXPR_PREFIX]} expression keys; the "
                        f"head model uses the first {n_shape} and {n_expr}, the others are ignored.")
    if rig.armature is not None:
        absent = [b for b in ("neck", "jaw", "left_eye", "right_eye") if b not in rig.armature.pose.bones]
        if absent:
            warnings.append(f"The armature {rig.armature.name!r} has no bone(s) {', '.join(absent)}; those "
                            "rotations are taken as zero.")
    return warnings


# ------------------------------------------------------------------------------------------------ per frame

@dataclass
class RigFrame:
    """The rig at one frame, as the engine needs it."""

    shape: np.ndarray          # [S] coefficients
    expression: np.ndarray     # [E]
    jaw: np.ndarray            # [3] axis-angle, FLAME axes
    eyes: np.ndarray           # [6] left eye then right eye
    head_to_world: np.ndarray  # [4, 4] FLAME space -> Blender world (the head's rigid motion, incl. scale)


def _key_values(mesh_obj, prefix: str, count: int) -> np.ndarray:
    blocks = mesh_obj.data.shape_keys.key_blocks
    out = np.zeros(count, dtype=np.float32)
    for k in range(count):
        kb = blocks.get(f"{prefix}{k + 1}")
        if kb is not None and not kb.mute:
            out[k] = kb.value
    return out


def _local_rotation(armature, bone_name: str) -> np.ndarray:
    pb = armature.pose.bones.get(bone_name)
    if pb is None:
        return np.zeros(3, dtype=np.float32)
    rot = bone_rotation_in_parent_axes(matrix_to_numpy(pb.bone.matrix_local), matrix_to_numpy(pb.matrix_basis))
    return matrix_to_axis_angle(rot).astype(np.float32)


def head_to_world(rig: Rig, depsgraph=None) -> np.ndarray:
    """FLAME space -> world for the head: the armature's world matrix times the neck bone's deformation (which
    includes the root bone), or the mesh's world matrix without an armature."""
    if rig.armature is None:
        obj = rig.mesh.evaluated_get(depsgraph) if depsgraph is not None else rig.mesh
        return matrix_to_numpy(obj.matrix_world)
    arm = rig.armature.evaluated_get(depsgraph) if depsgraph is not None else rig.armature
    world = matrix_to_numpy(arm.matrix_world)
    for name in ("neck", "root"):
        pb = arm.pose.bones.get(name)
        if pb is not None:
            deform = matrix_to_numpy(pb.matrix) @ np.linalg.inv(matrix_to_numpy(pb.bone.matrix_local))
            return world @ deform
    return world


def read_frame(rig: Rig, n_shape: int, n_expr: int, depsgraph=None) -> RigFrame:
    """The rig's state at the scene's current frame (call scene.frame_set first)."""
    if rig.armature is not None:
        jaw = _local_rotation(rig.armature, "jaw")
        eyes = np.concatenate([_local_rotation(rig.armature, "left_eye"),
                               _local_rotation(rig.armature, "right_eye")])
    else:
        jaw, eyes = np.zeros(3, np.float32), np.zeros(6, np.float32)
    return RigFrame(shape=_key_values(rig.mesh, SHAPE_PREFIX, n_shape),
                    expression=_key_values(rig.mesh, EXPR_PREFIX, n_expr), jaw=jaw, eyes=eyes,
                    head_to_world=head_to_world(rig, depsgraph))


# ------------------------------------------------------------------------------------------------ animation

def fcurves_of(id_data) -> list:
    """The F-curves animating a datablock (Blender 4.4+ slotted actions, and the older Action.fcurves)."""
    ad = getattr(id_data, "animation_data", None)
    if ad is None or ad.action is None:
        return []
    action = ad.action
    slot = getattr(ad, "action_slot", None)
    if slot is not None:
        try:
            from bpy_extras.anim_utils import action_get_channelbag_for_slot
        except ImportError:
            action_get_channelbag_for_slot = None
        if action_get_channelbag_for_slot is not None:
            bag = action_get_channelbag_for_slot(action, slot)
            return list(bag.fcurves) if bag is not None else []
    return list(getattr(action, "fcurves", []))


def keyframe_numbers(rig: Rig) -> List[int]:
    """Sorted frame numbers of every keyframe on the rig: armature (object and bones), mesh object, shape keys."""
    sources = [rig.mesh, rig.mesh.data.shape_keys]
    if rig.armature is not None:
        sources.insert(0, rig.armature)
    frames = set()
    for src in sources:
        if src is None:
            continue
        for fc in fcurves_of(src):
            for kp in fc.keyframe_points:
                frames.add(int(round(kp.co[0])))
    return sorted(frames)


def frames_in_range(frames: Sequence[int], first: int, last: int) -> List[int]:
    return [f for f in frames if first <= f <= last]


# ------------------------------------------------------------------------------------------------ editing

def set_key_values(mesh_obj, prefix: str, values: Optional[np.ndarray], keyframe_frame: Optional[int] = None) -> int:
    """Set Shape*/Exp* keys (values None: all zero); returns how many were set. Keyframes them when asked."""
    keys = mesh_obj.data.shape_keys
    if keys is None:
        return 0
    n = 0
    for kb in keys.key_blocks:
        m = _KEY_RE.match(kb.name)
        if m and m.group(1) == prefix:
            k = int(m.group(2)) - 1
            kb.value = float(values[k]) if values is not None and k < len(values) else 0.0
            if keyframe_frame is not None:
                kb.keyframe_insert("value", frame=keyframe_frame)
            n += 1
    return n


def reset_bones(armature, names: Sequence[str], keyframe_frame: Optional[int] = None) -> None:
    for name in names:
        pb = armature.pose.bones.get(name)
        if pb is None:
            continue
        pb.rotation_euler = (0.0, 0.0, 0.0)
        pb.rotation_quaternion = (1.0, 0.0, 0.0, 0.0)
        pb.rotation_axis_angle = (0.0, 0.0, 1.0, 0.0)
        if keyframe_frame is not None:
            path = {"QUATERNION": "rotation_quaternion", "AXIS_ANGLE": "rotation_axis_angle"}.get(
                pb.rotation_mode, "rotation_euler")
            pb.keyframe_insert(path, frame=keyframe_frame)
