"""Make the README's Blender pictures with the real bpy module (run: .venv/bin/python scripts/make_readme_images.py).

  docs/images/blender_rig.png        Workbench render of the rig that 'Add FLAME Head' builds, at three keyframes
                                     (jaw closed, jaw open, jaw open + gaze to the side).
  docs/images/blender_animation.gif  The neural render of that animation (render_animation, frames 1-24), made with
                                     the bundled default model, side by side with the rig.

Everything goes through the extension's operators in a factory-fresh scene, as a user would click them; the
extension is registered straight from the checkout. Takes a few minutes on a CPU.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "images"
KEYS = ((1, 0.0, 0.0), (12, 0.35, 0.0), (24, 0.35, 0.3))   # (frame, jaw opening, gaze yaw), radians
SIZE = 192


def main() -> None:
    os.environ.setdefault("BLENDER_USER_RESOURCES", tempfile.mkdtemp(prefix="next3d-readme-user-"))
    import bpy
    import imageio.v3 as iio
    import numpy as np

    sys.path.insert(0, str(ROOT))
    import next3d_blender

    bpy.ops.wm.read_factory_settings(use_empty=True)
    next3d_blender.register()
    OUT.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="next3d-readme-"))
    scene = bpy.context.scene
    scene.render.resolution_x = scene.render.resolution_y = SIZE
    scene.render.resolution_percentage = 100
    scene.render.filepath = str(work / "neural") + os.sep
    scene.frame_start, scene.frame_end = KEYS[0][0], KEYS[-1][0]
    assert bpy.ops.next3d.add_head() == {"FINISHED"}
    arm = bpy.data.objects["FLAME"]   # the armature; the head mesh is its child
    bones = arm.pose.bones
    for frame, jaw, gaze in KEYS:
        bones["jaw"].rotation_euler = (jaw, 0.0, 0.0)
        bones["jaw"].keyframe_insert("rotation_euler", frame=frame)
        for eye in ("left_eye", "right_eye"):
            bones[eye].rotation_euler = (0.0, gaze, 0.0)
            bones[eye].keyframe_insert("rotation_euler", frame=frame)

    # The neural render of every frame, through the operator (synchronous in module mode).
    assert bpy.ops.next3d.render_animation(frame_start=KEYS[0][0], frame_end=KEYS[-1][0]) == {"FINISHED"}

    # Workbench renders of the rig at every frame, from the same camera.
    scene.render.engine = "BLENDER_WORKBENCH"
    scene.display.shading.light = "STUDIO"
    scene.display.shading.show_cavity = True
    scene.display.shading.color_type = "SINGLE"
    rig_frames = {}
    for frame in range(KEYS[0][0], KEYS[-1][0] + 1):
        scene.frame_set(frame)
        scene.render.filepath = str(work / f"rig_{frame:05d}.png")
        bpy.ops.render.render(write_still=True)
        rig_frames[frame] = iio.imread(scene.render.filepath)[..., :3]

    still = np.concatenate([rig_frames[f] for f, _, _ in KEYS], axis=1)
    iio.imwrite(OUT / "blender_rig.png", still)
    frames = []
    for frame in range(KEYS[0][0], KEYS[-1][0] + 1):
        neural = iio.imread(work / "neural" / f"frame_{frame:05d}.png")[..., :3]
        frames.append(np.concatenate([rig_frames[frame], neural], axis=1))
    iio.imwrite(OUT / "blender_animation.gif", np.stack(frames), duration=1000 / 12, loop=0)
    print(f"wrote {OUT / 'blender_rig.png'} and {OUT / 'blender_animation.gif'}")


if __name__ == "__main__":
    main()
