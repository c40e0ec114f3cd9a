"""The FLAME rig in Blender: building it from head arrays, finding it, editing its keys.

Rendering reads the rig's evaluated mesh (scene.py), not its key values or bone angles, so a rig made here, one
made by the FLAME Blender add-on, or any mesh of the model's topology renders as the viewport shows it. The layout
built here keeps the FLAME add-on's names:

* an armature object (the rig root) with bones root, neck, jaw, left_eye, right_eye at FLAME's joints; jaw and
  eyes hang from neck, neck from root. Bones point along +Y with zero roll, so their rest orientation is the
  identity and a pose rotation *is* FLAME's axis-angle pose of that joint. Pose bones use XYZ Euler.
* a mesh object parented to it (Armature modifier, one vertex group per bone from FLAME's skinning weights) whose
  data lives in FLAME space (metres, y up, face towards +z); the armature object carries a +90 degree X rotation so
  the head stands upright in Blender's z-up world.
* shape keys Basis, Shape1..ShapeS and Exp1..ExpE (slider range -10..10; suffixed with what they do where the
  head's file says, e.g. Exp4_smile_left), and the pose correctives Pose1..Pose36: FLAME's 4 posed joints x 9,
  key 9 j + 3 a + b + 1 being element (a, b) of R - I for joint j (neck, jaw, left eye, right eye), as in FLAME's
  pose feature and the FLAME add-on's Pose1..Pose18 (neck and jaw). Here they are driven by the bones' evaluated
  rotations (constraints included) with simple expressions, which Blender evaluates without Python (so they work
  with script auto-run off), and the viewport shows FLAME's correctives; components the head does not use are
  left out.

Editing operators find keys by prefix (Shape or Exp followed by a digit) in the order the rig has them, never by
their numbers, which differ between rigs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

from ..core.errors import InputError

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
POSED_JOINTS = ("neck", "jaw", "left_eye", "right_eye")       # FLAME's pose feature: joints 1..4, 9 values each
# Element (a, b) of R - I for the unit quaternion (w, x, y, z) of a bone's rotation.
_R_MINUS_I = (("-2*(y*y+z*z)", "2*(x*y-w*z)", "2*(x*z+w*y)"),
              ("2*(x*y+w*z)", "-2*(x*x+z*z)", "2*(y*z-w*x)"),
              ("2*(x*z-w*y)", "2*(y*z+w*x)", "-2*(x*x+y*y)"))


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
              name: str = RIG_NAME, names: Optional[Mapping[str, Sequence[str]]] = None):
    """Create the armature + mesh + shape keys in the active collection at the 3D cursor; returns the armature.
    `names` ({"shape": ..., "expression": ...}) suffix the Shape and Exp keys with what they do."""
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

    pose_keys = _add_shape_keys(mesh_obj, v, arrays, names or {})
    _add_bones(context, arm_obj, joints)
    _add_skinning(mesh_obj, arm_obj, np.asarray(arrays["weights"], np.float32))
    _drive_pose_keys(mesh_obj, arm_obj, pose_keys)
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


def _key_name(prefix: str, k: int, names: Sequence[str]) -> str:
    return f"{prefix}{k + 1}_{names[k]}" if k < len(names) and names[k] else f"{prefix}{k + 1}"


def _add_shape_keys(mesh_obj, v: np.ndarray, arrays: Dict[str, np.ndarray],
                    names: Mapping[str, Sequence[str]]) -> Dict[int, str]:
    """Basis, the Shape and Exp keys, and the pose correctives the head uses; returns {pose component: key name}."""
    basis = mesh_obj.shape_key_add(name="Basis", from_mix=False)
    basis.interpolation = "KEY_LINEAR"
    posedirs = np.asarray(arrays["posedirs"], np.float32)
    groups = [(SHAPE_PREFIX, np.asarray(arrays["shapedirs"], np.float32), names.get("shape", ())),
              (EXPR_PREFIX, np.asarray(arrays["exprdirs"], np.float32), names.get("expression", ()))]
    pose_keys: Dict[int, str] = {}
    for prefix, dirs, labels in groups:
        for k in range(dirs.shape[2]):
            _new_key(mesh_obj, _key_name(prefix, k, labels), v + dirs[:, :, k])
    for k in np.flatnonzero(np.abs(posedirs).reshape(-1, posedirs.shape[2]).max(axis=0) > 0):
        pose_keys[int(k)] = _new_key(mesh_obj, f"{POSE_PREFIX}{k + 1}", v + posedirs[:, :, k]).name
    mesh_obj.data.shape_keys.name = f"{mesh_obj.name}-keys"
    return pose_keys


def _new_key(mesh_obj, name: str, co: np.ndarray):
    key = mesh_obj.shape_key_add(name=name, from_mix=False)
    key.slider_min, key.slider_max = -SLIDER_RANGE, SLIDER_RANGE
    key.data.foreach_set("co", np.ascontiguousarray(co, dtype=np.float32).reshape(-1))
    key.value = 0.0
    return key


def _drive_pose_keys(mesh_obj, arm_obj, pose_keys: Dict[int, str]) -> None:
    """Each pose corrective follows its element of R - I of its bone's evaluated local rotation (LOCAL_SPACE:
    constraints included, parent and rest pose not; the rest orientation is the identity, so that is FLAME's
    joint rotation)."""
    blocks = mesh_obj.data.shape_keys.key_blocks
    for k, key_name in sorted(pose_keys.items()):
        bone = POSED_JOINTS[k // 9]
        expression = _R_MINUS_I[(k % 9) // 3][k % 3]
        driver = blocks[key_name].driver_add("value").driver
        driver.type = "SCRIPTED"
        for channel in "wxyz":
            if channel not in expression:
                continue
            var = driver.variables.new()
            var.name, var.type = channel, "TRANSFORMS"
            target = var.targets[0]
            target.id = arm_obj
            target.bone_target = bone
            target.transform_type = f"ROT_{channel.upper()}"
            target.rotation_mode = "QUATERNION"
            target.transform_space = "LOCAL_SPACE"
        driver.expression = expression


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

def is_key_of(name: str, prefix: str) -> bool:
    """A Shape/Exp/Pose key: the prefix followed by a digit (Exp1, Exp000, Exp4_smile_left; not 'Expanded')."""
    return name.startswith(prefix) and name[len(prefix):len(prefix) + 1].isdigit()


def _has_flame_keys(obj) -> bool:
    keys = getattr(getattr(obj, "data", None), "shape_keys", None)
    return keys is not None and any(is_key_of(k.name, p) for k in keys.key_blocks for p in (SHAPE_PREFIX, EXPR_PREFIX))


def deforming_armatures(mesh_obj) -> list:
    """The armatures whose Armature modifiers deform the mesh in the viewport."""
    out = []
    for mod in mesh_obj.modifiers:
        if mod.type == "ARMATURE" and mod.object is not None and mod.show_viewport and mod.object not in out:
            out.append(mod.object)
    return out


def rig_of_mesh(obj) -> Rig:
    arm = obj.parent if obj.parent is not None and obj.parent.type == "ARMATURE" else None
    if arm is None:
        armatures = deforming_armatures(obj)
        arm = armatures[0] if armatures else None
    return Rig(mesh=obj, armature=arm)


def find_rig(obj) -> Rig:
    """The FLAME rig that `obj` (the selection, for editing operators) belongs to: the armature or its head mesh."""
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
        return rig_of_mesh(obj)
    raise InputError(f"The active object {obj.name!r} is a {obj.type.lower()}, not a FLAME rig. Select the FLAME "
                     "armature or its head mesh.")


def looks_like_head(obj) -> bool:
    """A mesh that is a head to render: built by Add FLAME Head, or with FLAME-style Shape/Exp keys, or deformed by
    an armature with a jaw bone (the FLAME add-on's layout). Extracted meshes are not."""
    if obj is None or obj.type != "MESH" or obj.next3d.mesh_frame:
        return False
    if obj.next3d.is_rig or _has_flame_keys(obj):
        return True
    return any("jaw" in arm.data.bones for arm in deforming_armatures(obj))


def scene_heads(scene, view_layer) -> List[object]:
    """The head meshes of the scene that the view layer shows."""
    visible = set(view_layer.objects)
    return [obj for obj in scene.objects if obj in visible and obj.visible_get(view_layer=view_layer)
            and looks_like_head(obj)]


# ------------------------------------------------------------------------------------------------ keys

def keys_of(mesh_obj, prefix: str) -> list:
    """The Shape, Exp or Pose keys of a mesh in the rig's order (for FLAME's, component order)."""
    keys = mesh_obj.data.shape_keys
    return [kb for kb in keys.key_blocks if is_key_of(kb.name, prefix)] if keys is not None else []


def key_counts(mesh_obj) -> Dict[str, int]:
    """How many Shape, Exp and Pose keys the mesh has."""
    return {prefix: len(keys_of(mesh_obj, prefix)) for prefix in (SHAPE_PREFIX, EXPR_PREFIX, POSE_PREFIX)}


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
    """Set the Shape or Exp keys in order to `values` (None: all zero; keys beyond them: zero); returns how many
    were set. Keyframes them when asked."""
    keys = keys_of(mesh_obj, prefix)
    for k, kb in enumerate(keys):
        kb.value = float(values[k]) if values is not None and k < len(values) else 0.0
        if keyframe_frame is not None:
            kb.keyframe_insert("value", frame=keyframe_frame)
    return len(keys)


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
