"""New Blender images and meshes from numpy arrays: renders, extracted meshes and the rig's head mesh."""

from __future__ import annotations

from typing import Optional

import bpy
import numpy as np

from ..engine.convert import pixels_to_blender


def image_from_pixels(name: str, pixels: np.ndarray, image=None):
    """Create or update a Blender image (float pixels, no view transform baked in) from [H, W, 3|4] uint8."""
    h, w = pixels.shape[:2]
    if image is None:
        image = bpy.data.images.get(name)
    if image is not None and (image.size[0] != w or image.size[1] != h):
        image.scale(w, h)
    if image is None:
        image = bpy.data.images.new(name, width=w, height=h, alpha=False)
    image.pixels.foreach_set(pixels_to_blender(pixels))
    image.update()
    return image


def mesh_from_arrays(name: str, vertices: np.ndarray, faces: np.ndarray, colors: Optional[np.ndarray] = None,
                     color_name: str = "Color"):
    """A new bpy mesh from vertices [V, 3] and triangles [F, 3] (and per-vertex colours [V, 3] in 0..1)."""
    vertices = np.ascontiguousarray(vertices, dtype=np.float32).reshape(-1, 3)
    faces = np.ascontiguousarray(faces, dtype=np.int32).reshape(-1, 3)
    mesh = bpy.data.meshes.new(name)
    mesh.vertices.add(len(vertices))
    mesh.vertices.foreach_set("co", vertices.reshape(-1))
    mesh.loops.add(faces.size)
    mesh.loops.foreach_set("vertex_index", faces.reshape(-1))
    mesh.polygons.add(len(faces))
    mesh.polygons.foreach_set("loop_start", np.arange(0, faces.size, 3, dtype=np.int32))
    mesh.polygons.foreach_set("loop_total", np.full(len(faces), 3, dtype=np.int32))
    if colors is not None:
        colors = np.asarray(colors, dtype=np.float32).reshape(-1, 3)
        rgba = np.ones((len(colors), 4), dtype=np.float32)
        rgba[:, :3] = colors
        attr = mesh.color_attributes.new(color_name, "FLOAT_COLOR", "POINT")
        attr.data.foreach_set("color", rgba.reshape(-1))
        mesh.color_attributes.active_color = attr
        mesh.color_attributes.render_color_index = mesh.color_attributes.active_color_index
    mesh.update(calc_edges=True)
    mesh.validate(clean_customdata=False)
    return mesh
