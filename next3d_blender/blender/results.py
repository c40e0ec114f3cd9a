"""What the operators make of the engine's results: the rendered frame as an image shown in the Image Editor,
extracted meshes placed on the head, a photo avatar made the scene's. Called on the main thread (runner.py)."""

from __future__ import annotations

from typing import Dict, List

import bpy
import numpy as np

from . import rig
from .datablocks import image_from_pixels, mesh_from_arrays

RENDER_IMAGE = "Next3D Render"
MESH_COLLECTION = "Next3D Meshes"


# ------------------------------------------------------------------------------------------------ images

def show_image(image) -> None:
    """Show the image in every open Image Editor."""
    wm = bpy.context.window_manager
    for window in getattr(wm, "windows", []):
        for area in window.screen.areas:
            if area.type == "IMAGE_EDITOR":
                area.spaces.active.image = image
                area.tag_redraw()


def store_image(header: dict, arrays: Dict[str, np.ndarray]) -> None:
    """A preview job's "image" reply -> the image 'Next3D Render', shown."""
    image = image_from_pixels(RENDER_IMAGE, arrays["pixels"])
    image["next3d_frame"] = int(header.get("number", 0))
    try:
        image.preview_ensure()
    except (AttributeError, RuntimeError):
        pass
    show_image(image)


# ------------------------------------------------------------------------------------------------ meshes

HEAD_BONES = ("neck", "head")      # the bone an extracted mesh hangs from: the skull follows it (FLAME's neck joint)
RIG_KEY = "next3d_rig"             # custom property: the rig an extracted mesh was made from


def mesh_name(rig_name: str, number: int) -> str:
    """The object and mesh datablock name of the rig's extracted mesh at frame `number`."""
    return f"Next3D Mesh {rig_name} {number:04d}"


class MeshBuilder:
    """Turns extracted meshes (FLAME space) into objects that belong to the scene: parented to the rig (to the bone
    the skull follows, so the mesh follows the head), placed on the head of their frame, shown only on that frame,
    in the collection "Next3D Meshes <rig>". Extracting a frame again replaces that frame's mesh in place (same
    object and names; the old mesh datablock is freed)."""

    def __init__(self, scene, the_rig: rig.Rig, heads: Dict[int, np.ndarray]):
        self.scene_name = scene.name
        self.rig_name = the_rig.name
        self.parent_name = the_rig.root.name
        self.bone = ""
        if the_rig.armature is not None:
            self.bone = next((b for b in HEAD_BONES if b in the_rig.armature.data.bones), "")
        self.heads = heads
        self.objects: List[str] = []
        self.replaced: List[str] = []

    def _collection(self, scene):
        name = f"{MESH_COLLECTION} {self.rig_name}"
        coll = bpy.data.collections.get(name)
        if coll is None:
            coll = bpy.data.collections.new(name)
        if coll.name not in scene.collection.children:
            scene.collection.children.link(coll)
        return coll

    def _existing(self, name: str, number: int):
        """The object of an earlier extraction of this rig's frame, or None."""
        obj = bpy.data.objects.get(name)
        if obj is not None and obj.type == "MESH" and obj.get(RIG_KEY) == self.rig_name \
                and obj.next3d.mesh_frame == number:
            return obj
        return None

    def add(self, header: dict, arrays: Dict[str, np.ndarray]) -> None:
        scene = bpy.data.scenes[self.scene_name]
        number = int(header["number"])
        colors = np.asarray(arrays["colors"], dtype=np.float32) / 255.0
        # Vertex colours are display-referred (sRGB bytes); Blender's float colour attributes are linear.
        linear = np.where(colors <= 0.04045, colors / 12.92, ((colors + 0.055) / 1.055) ** 2.4)
        name = mesh_name(self.rig_name, number)
        mesh = mesh_from_arrays(name, arrays["vertices"], arrays["faces"], linear)
        obj = self._existing(name, number)
        if obj is None:
            obj = bpy.data.objects.new(name, mesh)
            obj[RIG_KEY] = self.rig_name
            obj.next3d.mesh_frame = number
        else:
            replace_mesh(obj, mesh)
            self.replaced.append(obj.name)
        mesh.name = name            # the old datablock is gone, so the name is free again (no ".001")
        coll = self._collection(scene)
        if obj.name not in coll.objects:
            coll.objects.link(obj)
        self._attach(scene, obj, number)
        show_only_on_frame(obj, number, scene.frame_current)
        self.objects.append(obj.name)

    def _attach(self, scene, obj, number: int) -> None:
        """Parent to the rig, keeping the mesh on the head of its frame: matrix_parent_inverse is the inverse of the
        parent's matrix at that frame and the object's own transform the head's, so at that frame it sits exactly
        on the head and at every frame it moves with the rig (Blender's Ctrl+P, Keep Transform, at that frame)."""
        from mathutils import Matrix

        parent = bpy.data.objects[self.parent_name]
        obj.parent = parent
        if self.bone:
            obj.parent_type = "BONE"
            obj.parent_bone = self.bone
        else:
            obj.parent_type = "OBJECT"
        obj.matrix_parent_inverse = parent_matrix(scene, parent, self.bone, number).inverted()
        obj.matrix_basis = Matrix([list(r) for r in self.heads[number]])


def parent_matrix(scene, parent, bone: str, number: int):
    """The world matrix a child parented to `parent` (and `bone`, if any) hangs from at frame `number` (a bone
    parent is its tail, as Blender's BONE parenting uses), read from the evaluated scene at that frame."""
    from mathutils import Matrix

    current = (scene.frame_current, scene.frame_subframe)
    try:
        if current[0] != number or current[1]:
            scene.frame_set(number)
        # results arrive in a timer too, whose context may show another scene: this scene's view layer
        view_layer = getattr(bpy.context, "view_layer", None)
        if view_layer is None or view_layer not in scene.view_layers.values():
            view_layer = scene.view_layers[0]
        view_layer.update()
        evaluated = parent.evaluated_get(view_layer.depsgraph)
        matrix = evaluated.matrix_world.copy()
        if bone:
            pb = evaluated.pose.bones[bone]
            matrix = matrix @ pb.matrix @ Matrix.Translation((0.0, pb.bone.length, 0.0))
        return matrix
    finally:
        if (scene.frame_current, scene.frame_subframe) != current:
            scene.frame_set(current[0], subframe=current[1])


def replace_mesh(obj, mesh) -> None:
    """Give `obj` the new mesh datablock (keeping its materials) and free the old one unless something else uses it."""
    old = obj.data
    for material in old.materials:
        mesh.materials.append(material)
    obj.data = mesh
    if old.users == 0:
        bpy.data.meshes.remove(old)


def show_only_on_frame(obj, number: int, current: int) -> None:
    """Keyframe the object's viewport and render visibility (constant) so that it shows on frame `number` only, and
    set them for the `current` frame; its F-curves are rewritten, so extracting again leaves no stale keys."""
    for fc in rig.fcurves_of(obj):
        if fc.data_path in ("hide_viewport", "hide_render"):
            for kp in reversed(list(fc.keyframe_points)):
                fc.keyframe_points.remove(kp)
    for frame, hidden in ((number - 1, True), (number, False), (number + 1, True)):
        obj.hide_viewport = hidden
        obj.hide_render = hidden
        obj.keyframe_insert("hide_viewport", frame=frame)
        obj.keyframe_insert("hide_render", frame=frame)
    for fc in rig.fcurves_of(obj):
        if fc.data_path in ("hide_viewport", "hide_render"):
            for kp in fc.keyframe_points:
                kp.interpolation = "CONSTANT"
    obj.hide_viewport = obj.hide_render = current != number


# ------------------------------------------------------------------------------------------------ photo avatars

def apply_photo_avatar(scene, summary: dict, mesh_obj) -> None:
    """Point the scene's avatar at the new folder; give the rig (if any) the fitted face shape."""
    if scene is not None:
        scene.next3d.avatar_folder = summary["out_dir"]
        scene.next3d.avatar_source = "PHOTO"
    if mesh_obj is not None and summary.get("shape"):
        rig.set_key_values(mesh_obj, rig.SHAPE_PREFIX, np.asarray(summary["shape"], dtype=np.float32))
