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

class MeshBuilder:
    """Turns extracted meshes (FLAME space) into objects placed on the head in world space."""

    def __init__(self, scene, the_rig: rig.Rig, heads: Dict[int, np.ndarray], sequence: bool):
        self.scene_name = scene.name
        self.rig_name = the_rig.name
        self.heads = heads
        self.sequence = sequence
        self.objects: List[str] = []

    def _collection(self, scene):
        if not self.sequence:
            return scene.collection
        name = f"{MESH_COLLECTION} {self.rig_name}"
        coll = bpy.data.collections.get(name)
        if coll is None:
            coll = bpy.data.collections.new(name)
        if coll.name not in scene.collection.children:
            scene.collection.children.link(coll)
        return coll

    def add(self, header: dict, arrays: Dict[str, np.ndarray]) -> None:
        from mathutils import Matrix

        scene = bpy.data.scenes[self.scene_name]
        number = int(header["number"])
        colors = np.asarray(arrays["colors"], dtype=np.float32) / 255.0
        # Vertex colours are display-referred (sRGB bytes); Blender's float colour attributes are linear.
        linear = np.where(colors <= 0.04045, colors / 12.92, ((colors + 0.055) / 1.055) ** 2.4)
        name = f"Next3D Mesh {self.rig_name} {number:04d}"
        mesh = mesh_from_arrays(name, arrays["vertices"], arrays["faces"], linear)
        obj = bpy.data.objects.new(name, mesh)
        obj.matrix_world = Matrix([list(r) for r in self.heads[number]])
        obj.next3d.mesh_frame = number
        self._collection(scene).objects.link(obj)
        if self.sequence:
            _show_only_on_frame(obj, number)
        self.objects.append(obj.name)


def _show_only_on_frame(obj, number: int) -> None:
    for frame, hidden in ((number - 1, True), (number, False), (number + 1, True)):
        obj.hide_viewport = hidden
        obj.hide_render = hidden
        obj.keyframe_insert("hide_viewport", frame=frame)
        obj.keyframe_insert("hide_render", frame=frame)
    for fc in rig.fcurves_of(obj):
        for kp in fc.keyframe_points:
            kp.interpolation = "CONSTANT"
    obj.hide_viewport = False
    obj.hide_render = False


# ------------------------------------------------------------------------------------------------ photo avatars

def apply_photo_avatar(scene, summary: dict, mesh_obj) -> None:
    """Point the scene's avatar at the new folder; give the rig (if any) the fitted face shape."""
    if scene is not None:
        scene.next3d.avatar_folder = summary["out_dir"]
        scene.next3d.avatar_source = "PHOTO"
    if mesh_obj is not None and summary.get("shape"):
        rig.set_key_values(mesh_obj, rig.SHAPE_PREFIX, np.asarray(summary["shape"], dtype=np.float32))
