"""The render-farm command of the issue, in a subprocess: the scene saved as a .blend, Blender started in
background mode with the user's preferences (extension enabled, model chosen), then what `blender -b scene.blend
-s 1 -e 2 -a` does,

    scene.frame_start, scene.frame_end = 1, 2; bpy.ops.render.render(animation=True)

through the Next3D render engine, chunk by chunk. There is no Blender binary here (bpy is a module), so the
subprocess is Python importing bpy, reading the user preferences and opening the file, as `blender -b scene.blend
--python-expr ... --python-exit-code 1` does."""

import subprocess
import sys

import bpy

from n3d_helpers import make_scene

FARM = ("import bpy, sys; bpy.ops.wm.read_userpref(); bpy.ops.wm.open_mainfile(filepath=sys.argv[1]); "
        "exec(sys.argv[2])")
CHUNK = "s = bpy.context.scene; s.frame_start, s.frame_end = {}, {}; bpy.ops.render.render(animation=True)"


def _blender_b(blend, expr):
    return subprocess.run([sys.executable, "-c", FARM, str(blend), expr], capture_output=True, text=True,
                          timeout=900)


def test_background_command_renders_range_by_range(addon, use_tiny, tmp_path):
    out = tmp_path / "farm"
    arm = make_scene(out)
    arm.pose.bones["jaw"].rotation_euler = (0.3, 0.0, 0.0)
    arm.pose.bones["jaw"].keyframe_insert("rotation_euler", frame=4)
    scene = bpy.context.scene
    scene.render.engine = "NEXT3D"
    scene.render.filepath = str(out / "shot_")          # a prefix, not a folder: Blender adds the frame number
    scene.frame_start, scene.frame_end = 1, 4
    blend = tmp_path / "scene.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend), copy=True)
    bpy.ops.wm.save_userpref()

    first = _blender_b(blend, CHUNK.format(1, 2))
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    assert "shot_0002.png" in first.stdout
    assert sorted(p.name for p in out.iterdir()) == ["shot_0001.png", "shot_0002.png"]

    second = _blender_b(blend, CHUNK.format(3, 4))
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-2000:]
    assert sorted(p.name for p in out.iterdir()) == [f"shot_{n:04d}.png" for n in range(1, 5)]


def test_background_command_fails_cleanly(addon, use_tiny, tmp_path):
    out = tmp_path / "farm"
    make_scene(out)
    scene = bpy.context.scene
    scene.render.engine = "NEXT3D"
    scene.camera.data.type = "ORTHO"
    blend = tmp_path / "scene.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend), copy=True)
    bpy.ops.wm.save_userpref()
    proc = _blender_b(blend, CHUNK.format(1, 2))
    assert proc.returncode != 0
    assert "Next3D: The camera 'Next3D Camera' is ortho; the generator needs a perspective camera" in proc.stderr
    assert not out.exists()
