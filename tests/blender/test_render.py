"""End to end in Blender: the sidebar's render buttons as shortcuts to the render pipeline (the engine itself:
test_render_engine.py), Esc, the camera warning; a mesh extracted onto the head."""

import math
import shutil

import bpy
import numpy as np
from mathutils import Matrix

from n3d_helpers import make_scene, submodule


def _animate(arm):
    """Jaw opens from frame 1 to 10; the gaze turns between frames 10 and 20."""
    bones = arm.pose.bones
    for frame, jaw, gaze in ((1, 0.0, 0.0), (10, 0.35, 0.0), (20, 0.35, 0.3)):
        bones["jaw"].rotation_euler = (jaw, 0.0, 0.0)
        bones["jaw"].keyframe_insert("rotation_euler", frame=frame)
        for eye in ("left_eye", "right_eye"):
            bones[eye].rotation_euler = (0.0, gaze, 0.0)
            bones[eye].keyframe_insert("rotation_euler", frame=frame)


def _prefs():
    return bpy.context.preferences.addons[submodule("blender").ADDON_PACKAGE].preferences


def test_render_frame_is_a_shortcut_to_the_render_pipeline(addon, use_tiny, tmp_path):
    """Render Frame renders the current frame with the Next3D engine (F12), synchronously under -b."""
    arm = make_scene(tmp_path, size=(48, 32))
    _animate(arm)
    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    scene.frame_set(10)
    engine = submodule("blender.render_engine")
    assert bpy.ops.next3d.render_frame() == {"FINISHED"}
    assert scene.render.engine == "NEXT3D"
    assert engine.STATS["frames"] == 1 and engine.STATS["rendered"] + engine.STATS["kept"] == 1
    assert not list(tmp_path.glob("*.png"))           # F12 writes nothing


def test_render_animation_shortcut_writes_the_scenes_output(addon, use_tiny, tmp_path):
    arm = make_scene(tmp_path / "out", size=(32, 32))
    _animate(arm)
    scene = bpy.context.scene
    scene.render.filepath = str(tmp_path / "out" / "shot_")
    scene.frame_start, scene.frame_end, scene.frame_step = 1, 20, 10
    assert bpy.ops.next3d.render_animation() == {"FINISHED"}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["shot_0001.png", "shot_0011.png"]


def test_esc_stops_the_worker_job(addon, use_tiny, tmp_path):
    """Esc during a render (RenderEngine.test_break) cancels the worker's job: nothing is placed."""
    make_scene(tmp_path)
    engine = submodule("blender.render_engine")
    scene = bpy.context.scene
    shots, _ = engine.shots_of(bpy.context.evaluated_depsgraph_get(), _prefs())
    shutil.rmtree(engine.frame_cache_dir(), ignore_errors=True)
    replies, counts = engine.neural_frames(shots, scene, _prefs(), lambda: True, in_process=False)
    assert counts["cancelled"] and replies == [] and counts["rendered"] == 0
    replies, counts = engine.neural_frames(shots, scene, _prefs(), lambda: False, in_process=False)
    assert not counts["cancelled"] and counts["rendered"] == 1 and replies[0]["rgb"].shape == (512, 512, 3)


def test_camera_warning(addon, use_tiny, tmp_path, capfd):
    """The engine warns about the viewing direction only (the side of the head), not about lens or distance."""
    make_scene(tmp_path)
    scene = bpy.context.scene
    scene.render.engine = "NEXT3D"
    cam = scene.camera
    cam.data.lens = 20.0                                  # a wide lens, far away: no warning for these
    cam.location.y -= 3.0
    assert bpy.ops.render.render() == {"FINISHED"}
    assert "expect artefacts" not in capfd.readouterr().err
    cam.matrix_world = Matrix.Rotation(math.radians(60), 4, "Z") @ cam.matrix_world     # from the side
    assert bpy.ops.render.render() == {"FINISHED"}
    err = capfd.readouterr().err
    assert "from the side" in err and "expect artefacts" in err


def test_extract_mesh_at_frame_10(addon, use_tiny, tmp_path):
    arm = make_scene(tmp_path)
    _animate(arm)
    scene = bpy.context.scene
    scene.frame_set(10)
    scene.next3d.mesh_resolution = 48
    before = set(bpy.data.objects.keys())
    assert bpy.ops.next3d.extract_mesh() == {"FINISHED"}
    new = [bpy.data.objects[n] for n in set(bpy.data.objects.keys()) - before]
    assert len(new) == 1
    obj = new[0]
    assert obj.type == "MESH" and obj.next3d.mesh_frame == 10 and len(obj.data.polygons) > 100
    assert obj.data.color_attributes.get("Color") is not None
    # Placed on the head: in world space it overlaps the rig's head.
    head = bpy.data.objects["FLAME-mesh"]
    bpy.context.view_layer.update()

    def world_bounds(o):
        m = np.array(o.matrix_world)
        co = np.array([v.co[:] for v in o.data.vertices])
        w = co @ m[:3, :3].T + m[:3, 3]
        return w.min(0), w.max(0)

    lo, hi = world_bounds(obj)
    hlo, hhi = world_bounds(head)
    centre, head_centre = (lo + hi) / 2, (hlo + hhi) / 2
    assert np.linalg.norm(centre - head_centre) < 0.25
    assert np.allclose(np.array(obj.matrix_world), np.array(arm.matrix_world @ arm.pose.bones["neck"].matrix
                                                            @ arm.data.bones["neck"].matrix_local.inverted()),
                       atol=1e-5)


def test_extract_mesh_per_keyframe(addon, use_tiny, tmp_path):
    arm = make_scene(tmp_path)
    _animate(arm)
    scene = bpy.context.scene
    scene.next3d.mesh_frames = "KEYFRAMES"
    scene.next3d.mesh_resolution = 32
    assert bpy.ops.next3d.extract_mesh() == {"FINISHED"}
    coll = bpy.data.collections["Next3D Meshes FLAME"]
    objs = sorted(coll.objects, key=lambda o: o.next3d.mesh_frame)
    assert [o.next3d.mesh_frame for o in objs] == [1, 10, 20]
    scene.frame_set(10)
    assert [o.hide_viewport for o in objs] == [True, False, True]
    assert [o.hide_render for o in objs] == [True, False, True]
    scene.frame_set(1)
    assert [o.hide_viewport for o in objs] == [False, True, True]
    assert math.isfinite(objs[0].location.x)
