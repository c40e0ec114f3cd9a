"""End to end in Blender: a keyframed FLAME rig rendered to PNGs + MP4, cancelled halfway and resumed; the current
frame into an image; a mesh extracted onto the head."""

import math
import time

import bpy
import numpy as np

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


def _read_png(path):
    import imageio.v3 as iio

    return iio.imread(path).astype(np.float64)


def _drain_until(runner, condition, timeout=600):
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < timeout, "the worker did not answer in time"
        if runner.drain() is None and not condition():
            break
        time.sleep(0.02)


def test_render_cancel_resume(addon, use_tiny, tmp_path):
    out = tmp_path / "render"
    arm = make_scene(out)
    _animate(arm)
    scene = bpy.context.scene
    scene.frame_start, scene.frame_end = 1, 20
    scene.frame_set(3)
    runner = submodule("blender.runner")

    # Worker path (as with a UI): start, let about half the frames through, cancel.
    assert bpy.ops.next3d.render_animation(frame_start=1, frame_end=20, mode="ASYNC") == {"FINISHED"}
    task = runner.active_task()
    assert not task.finished and bpy.app.timers.is_registered(runner.drain)
    _drain_until(runner, lambda: task.done >= 10 or task.finished)
    assert runner.cancel()
    _drain_until(runner, lambda: task.finished)
    assert task.cancelled and task.error is None, task.error
    first_pass = sorted(out.glob("frame_*.png"))
    assert 10 <= len(first_pass) < 20
    assert not (out / "video.mp4").exists()
    assert not list(out.glob(".*.png"))
    mtimes = {p.name: p.stat().st_mtime_ns for p in first_pass}
    assert scene.frame_current == 3

    # Resume synchronously (background mode): only the missing frames are rendered, then the video.
    assert bpy.ops.next3d.render_animation(frame_start=1, frame_end=20) == {"FINISHED"}
    frames = sorted(out.glob("frame_*.png"))
    assert [p.name for p in frames] == [f"frame_{n:05d}.png" for n in range(1, 21)]
    assert all(p.stat().st_mtime_ns == mtimes[p.name] for p in first_pass)
    assert (out / "video.mp4").stat().st_size > 0
    assert scene.frame_current == 3

    # The mouth opens between frames 1 and 10: the lower middle of the image changes, well beyond the change
    # between neighbouring frames (each frame has its own depth-sample noise) and beyond the change at the top.
    f1, f2, f10 = (_read_png(out / f"frame_{n:05d}.png") for n in (1, 2, 10))
    assert f1.shape == (64, 64, 3)
    mouth, top = (slice(36, 56), slice(20, 44)), (slice(4, 20), slice(20, 44))
    opened = np.abs(f10[mouth] - f1[mouth]).mean()
    assert opened > 3 * np.abs(f2[mouth] - f1[mouth]).mean()
    assert opened > 1.5 * np.abs(f10[top] - f1[top]).mean()


def test_keyframes_only(addon, use_tiny, tmp_path):
    out = tmp_path / "keys"
    arm = make_scene(out)
    _animate(arm)
    scene = bpy.context.scene
    scene.next3d.frame_source = "KEYFRAMES"
    assert bpy.ops.next3d.render_animation() == {"FINISHED"}
    assert sorted(p.name for p in out.glob("frame_*.png")) == ["frame_00001.png", "frame_00010.png",
                                                                "frame_00020.png"]
    assert (out / "video.mp4").is_file()


def test_render_frame_into_image(addon, use_tiny, tmp_path):
    arm = make_scene(tmp_path, size=(48, 32))
    _animate(arm)
    bpy.context.scene.frame_set(10)
    assert bpy.ops.next3d.render_frame() == {"FINISHED"}
    image = bpy.data.images["Next3D Render"]
    assert tuple(image.size) == (48, 32) and image["next3d_frame"] == 10
    px = np.empty(48 * 32 * 4, np.float32)
    image.pixels.foreach_get(px)
    assert px.reshape(32, 48, 4)[..., :3].std() > 0.01
    assert not list(tmp_path.glob("*.png"))


def test_camera_warning(addon, use_tiny, tmp_path):
    make_scene(tmp_path)
    cam = bpy.context.scene.camera
    cam.location.y -= 3.0           # far behind the training distance
    cam.data.lens = 20.0            # and a wide lens
    warnings = []
    ops = submodule("blender.operators")
    original = ops.report_task
    ops.report_task = lambda op, task, extra: warnings.extend(extra + task.warnings)
    try:
        assert bpy.ops.next3d.render_frame() == {"FINISHED"}
    finally:
        ops.report_task = original
    text = " ".join(warnings)
    assert "training distance" in text and "field of view" in text


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
