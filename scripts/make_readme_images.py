"""Make the README's Blender pictures with the real bpy module (run: .venv/bin/python scripts/make_readme_images.py).

  docs/images/blender_rig.png        Workbench render of the rig that 'Add FLAME Head' builds, at three keyframes
                                     (jaw closed, jaw open, jaw open + gaze to the side), from the add-on's camera.
  docs/images/blender_animation.gif  Those Workbench frames 1-24 beside the Next3D render engine's frames of the same
                                     animation (Ctrl+F12: RGBA PNGs written by Blender at the Output path
                                     `neural/frame_#####`, bundled default model), shown over black.
  docs/images/blender_composite.png  A head in an ordinary scene, three panels from one portrait camera (85 mm,
                                     0.9 m from the face, 10 degrees to the side, 6 degrees above, rolled 4 degrees,
                                     lens shift -0.06): Workbench's render of a table, a wall and two boxes (the head
                                     hidden in renders) | the engine's RGBA render of the head alone (F12, over a
                                     checkerboard: alpha 0 outside the head) | the two composited (numpy alpha-over
                                     of the two PNGs in linear light, not Blender's compositor).

Everything goes through the extension as a user would use it, in a factory-fresh scene: Add FLAME Head, keyframes
on the jaw and eye bones, Render Engine = Next3D and bpy.ops.render.render (F12 / Ctrl+F12) with the scene's Output
properties. The extension is registered straight from the checkout; the frame cache is a fresh temporary folder
(NEXT3D_CACHE_DIR), so every neural frame is rendered. Deterministic: the same checkout gives the same pictures.
Takes about a minute on 2 CPU cores (25 neural frames at the generator's 512 px side, about 2 s each).
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "images"
KEYS = ((1, 0.0, 0.0), (12, 0.35, 0.0), (24, 0.35, 0.3))   # (frame, jaw opening, gaze yaw), radians
SIZE = 192
COMPOSITE_SIZE = (384, 480)                                   # a portrait-format frame (4:5)


def srgb_to_linear(c):
    import numpy as np

    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(c):
    import numpy as np

    c = np.clip(c, 0.0, 1.0)
    return np.where(c <= 0.0031308, c * 12.92, 1.055 * np.power(c, 1.0 / 2.4) - 0.055)


def over(rgba, background):
    """Straight-alpha uint8 RGBA over a uint8 RGB background, in linear light; uint8 RGB."""
    import numpy as np

    alpha = rgba[..., 3:4].astype(np.float64) / 255.0
    fg = srgb_to_linear(rgba[..., :3].astype(np.float64) / 255.0)
    bg = srgb_to_linear(background[..., :3].astype(np.float64) / 255.0)
    return np.round(linear_to_srgb(fg * alpha + bg * (1.0 - alpha)) * 255.0).astype(np.uint8)


def checkerboard(height, width, cell=16):
    import numpy as np

    y, x = np.mgrid[:height, :width]
    light = ((y // cell + x // cell) % 2 == 0)[..., None]
    return np.where(light, 200, 150).astype(np.uint8).repeat(3, axis=-1)


def render_still(bpy, path: Path):
    bpy.context.scene.render.filepath = str(path)
    assert bpy.ops.render.render(write_still=True) == {"FINISHED"}
    import imageio.v3 as iio

    return iio.imread(path)


def workbench(scene, color_type: str) -> None:
    scene.render.engine = "BLENDER_WORKBENCH"
    scene.display.shading.light = "STUDIO"
    scene.display.shading.show_cavity = True
    scene.display.shading.color_type = color_type


def add_backdrop(bpy) -> None:
    """A table the head's neck stands on, a wall behind it and two boxes on the table, coloured for Workbench."""
    def box(name, location, scale, color, rotation=0.0):
        bpy.ops.mesh.primitive_cube_add(size=1.0, location=location, rotation=(0.0, 0.0, rotation))
        obj = bpy.context.active_object
        obj.name, obj.scale, obj.color = name, scale, color
        return obj

    table_top = -0.196            # the bottom of the built-in head's neck
    box("Table", (0.0, 0.3, table_top - 0.02), (1.6, 1.4, 0.04), (0.55, 0.38, 0.24, 1.0))
    box("Wall", (0.0, 1.0, 0.4), (3.0, 0.04, 1.6), (0.62, 0.68, 0.72, 1.0))
    box("Blue box", (-0.3, 0.85, table_top + 0.15), (0.18, 0.18, 0.3), (0.18, 0.32, 0.62, 1.0), rotation=0.5)
    box("Red box", (-0.3, 0.3, table_top + 0.06), (0.22, 0.12, 0.12), (0.7, 0.2, 0.16, 1.0), rotation=-0.3)


def portrait_camera(bpy, scene):
    """85 mm, 0.9 m from the face, 10 degrees to the side, 6 degrees above, rolled 4 degrees, the head a little
    off-centre (lens shift)."""
    from mathutils import Matrix, Vector

    target = Vector((0.0, -0.04, 0.0))             # about the middle of the face (the head looks along -y)
    yaw, pitch, roll, distance = math.radians(10.0), math.radians(6.0), math.radians(4.0), 0.9
    direction = Vector((math.sin(yaw) * math.cos(pitch), -math.cos(yaw) * math.cos(pitch), math.sin(pitch)))
    cam = bpy.data.objects.new("Portrait Camera", bpy.data.cameras.new("Portrait Camera"))
    cam.data.lens, cam.data.sensor_width, cam.data.clip_start = 85.0, 36.0, 0.05
    cam.data.shift_x = -0.06
    scene.collection.objects.link(cam)
    look = (-direction).to_track_quat("-Z", "Y").to_matrix().to_4x4()
    cam.matrix_world = Matrix.Translation(target + distance * direction) @ look @ Matrix.Rotation(roll, 4, "Z")
    scene.camera = cam
    return cam


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="next3d-readme-"))     # the user folder, the frame cache, the frames
    try:
        make(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def make(tmp: Path) -> None:
    for sub in ("user", "cache", "work"):
        (tmp / sub).mkdir()
    os.environ.setdefault("BLENDER_USER_RESOURCES", str(tmp / "user"))
    os.environ["NEXT3D_CACHE_DIR"] = str(tmp / "cache")       # a fresh frame cache: every frame is rendered
    import bpy
    import imageio.v3 as iio
    import numpy as np

    sys.path.insert(0, str(ROOT))
    import next3d_blender

    started = time.perf_counter()
    bpy.ops.wm.read_factory_settings(use_empty=True)
    next3d_blender.register()
    OUT.mkdir(parents=True, exist_ok=True)
    work = tmp / "work"
    scene = bpy.context.scene
    scene.render.resolution_x = scene.render.resolution_y = SIZE
    scene.render.resolution_percentage = 100
    scene.frame_start, scene.frame_end = KEYS[0][0], KEYS[-1][0]
    assert bpy.ops.next3d.add_head() == {"FINISHED"}
    arm = bpy.data.objects["FLAME"]   # the armature; the head mesh is its child
    head = bpy.data.objects["FLAME-mesh"]
    bones = arm.pose.bones
    for frame, jaw, gaze in KEYS:
        bones["jaw"].rotation_euler = (jaw, 0.0, 0.0)
        bones["jaw"].keyframe_insert("rotation_euler", frame=frame)
        for eye in ("left_eye", "right_eye"):
            bones[eye].rotation_euler = (0.0, gaze, 0.0)
            bones[eye].keyframe_insert("rotation_euler", frame=frame)

    # Workbench renders of the rig at every frame, from the add-on's camera (Blender's default view transform).
    workbench(scene, "SINGLE")
    rig_frames = {}
    for frame in range(KEYS[0][0], KEYS[-1][0] + 1):
        scene.frame_set(frame)
        rig_frames[frame] = render_still(bpy, work / f"rig_{frame:05d}.png")[..., :3]
    print(f"rig: {time.perf_counter() - started:.0f} s", flush=True)

    # The neural render of every frame: the Next3D engine and Ctrl+F12 with the scene's Output properties.
    scene.render.engine = "NEXT3D"
    scene.view_settings.view_transform = "Standard"          # the generator's own colours
    scene.render.image_settings.file_format = "PNG"
    scene.render.image_settings.color_mode = "RGBA"
    scene.render.filepath = str(work / "neural" / "frame_#####")
    assert bpy.ops.render.render(animation=True) == {"FINISHED"}
    print(f"animation: {time.perf_counter() - started:.0f} s", flush=True)

    still = np.concatenate([rig_frames[f] for f, _, _ in KEYS], axis=1)
    iio.imwrite(OUT / "blender_rig.png", still)
    frames = []
    for frame in range(KEYS[0][0], KEYS[-1][0] + 1):
        neural = iio.imread(work / "neural" / f"frame_{frame:05d}.png")
        frames.append(np.concatenate([rig_frames[frame], over(neural, np.zeros_like(neural))], axis=1))
    iio.imwrite(OUT / "blender_animation.gif", np.stack(frames), duration=1000 / 12, loop=0)

    # The head in an ordinary scene: Workbench renders the rest (the head hidden), the engine the head alone.
    scene.frame_set(KEYS[0][0])
    add_backdrop(bpy)
    portrait_camera(bpy, scene)
    scene.render.resolution_x, scene.render.resolution_y = COMPOSITE_SIZE
    workbench(scene, "OBJECT")
    scene.display.shading.show_shadows = True
    scene.display.shading.shadow_intensity = 0.4
    scene.display.light_direction = (0.5, -0.4, 0.75)
    head.hide_render = True
    backdrop = render_still(bpy, work / "backdrop.png")[..., :3]
    head.hide_render = False
    scene.render.engine = "NEXT3D"
    layer = render_still(bpy, work / "head.png")
    assert layer.shape[-1] == 4 and layer.dtype == np.uint8
    panels = (backdrop, over(layer, checkerboard(*layer.shape[:2])), over(layer, backdrop))
    gap = np.full((COMPOSITE_SIZE[1], 8, 3), 255, np.uint8)
    iio.imwrite(OUT / "blender_composite.png", np.concatenate([panels[0], gap, panels[1], gap, panels[2]], axis=1))
    print(f"wrote {OUT / 'blender_rig.png'}, {OUT / 'blender_animation.gif'} and {OUT / 'blender_composite.png'} "
          f"in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
