"""The render-farm command of the issue, in a subprocess: the scene saved as a .blend, Blender started in
background mode with the user's preferences (extension enabled, model chosen), then

    bpy.ops.next3d.render_animation(frame_start=1, frame_end=2)

run synchronously, frame range by frame range. There is no Blender binary here (bpy is a module), so the
subprocess is Python importing bpy, reading the user preferences and opening the file, as `blender -b scene.blend
--python-expr ... --python-exit-code 1` does."""

import subprocess
import sys

import bpy

from n3d_helpers import make_scene

FARM = ("import bpy, sys; bpy.ops.wm.read_userpref(); bpy.ops.wm.open_mainfile(filepath=sys.argv[1]); "
        "exec(sys.argv[2])")


def _blender_b(blend, expr):
    return subprocess.run([sys.executable, "-c", FARM, str(blend), expr], capture_output=True, text=True,
                          timeout=900)


def test_background_command_renders_range_by_range(addon, use_tiny, tmp_path):
    out = tmp_path / "farm"
    arm = make_scene(out)
    arm.pose.bones["jaw"].rotation_euler = (0.3, 0.0, 0.0)
    arm.pose.bones["jaw"].keyframe_insert("rotation_euler", frame=4)
    scene = bpy.context.scene
    scene.frame_start, scene.frame_end = 1, 4
    blend = tmp_path / "scene.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend), copy=True)
    bpy.ops.wm.save_userpref()

    first = _blender_b(blend, "bpy.ops.next3d.render_animation(frame_start=1, frame_end=2)")
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    assert "frame 2 (2/2)" in first.stdout
    assert sorted(p.name for p in out.glob("frame_*.png")) == ["frame_00001.png", "frame_00002.png"]
    assert not (out / "video.mp4").exists()

    second = _blender_b(blend, "bpy.ops.next3d.render_animation(frame_start=3, frame_end=4)")
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-2000:]
    assert len(list(out.glob("frame_*.png"))) == 4
    assert (out / "video.mp4").is_file()     # the last range completes the scene's sequence


def test_background_command_fails_cleanly(addon, tmp_path):
    out = tmp_path / "farm"
    make_scene(out)
    bpy.context.scene.camera = None
    blend = tmp_path / "scene.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend), copy=True)
    bpy.ops.wm.save_userpref()
    proc = _blender_b(blend, "bpy.ops.next3d.render_animation(frame_start=1, frame_end=2)")
    assert proc.returncode != 0
    assert "The scene has no camera" in proc.stderr
    assert not out.exists()
