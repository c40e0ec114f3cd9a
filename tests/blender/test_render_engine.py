"""The Next3D render engine through Blender's own render pipeline (real bpy, the built zip installed): files at the
scene's output path and format, frame step, Overwrite, the frame cache, split renders, alpha, depth, any camera,
and the live viewport's request path (the drawing itself needs a window, which bpy as a module has not)."""

import os
import shutil
import subprocess
import sys
import time

import bpy
import imageio.v3 as iio
import numpy as np
import pytest
from mathutils import Matrix, Vector

from n3d_helpers import make_scene, submodule

FACTORY_CAMERA = ((7.3589, -6.9258, 4.9583), (1.1093, 0.0, 0.8149))     # Blender's default scene camera


def _engine_scene(out_pattern, size=(64, 48)):
    arm = make_scene(out_pattern.parent, size=size)
    scene = bpy.context.scene
    scene.render.engine = "NEXT3D"
    scene.render.filepath = str(out_pattern)
    scene.view_settings.view_transform = "Standard"
    # Blender writes the date, the render time and the .blend name into every file's metadata: files compared byte
    # for byte leave them out (Output properties > Metadata).
    scene.render.use_stamp_date = scene.render.use_stamp_render_time = scene.render.use_stamp_filename = False
    return arm, scene


def _jaw(arm, frame, value):
    arm.pose.bones["jaw"].rotation_euler = (value, 0.0, 0.0)
    arm.pose.bones["jaw"].keyframe_insert("rotation_euler", frame=frame)


def _stats():
    return dict(submodule("blender.render_engine").STATS)


def _clear_frame_cache():
    """Frames cached by earlier tests (the user folder is the session's) must not count as kept."""
    shutil.rmtree(submodule("blender.render_engine").frame_cache_dir(), ignore_errors=True)


def _landmarks_px(scene, head):
    """The rig's 51 inner landmarks (brows, nose, eyes, mouth) in the output's pixels, projected by Blender's own
    camera projection (bpy_extras.object_utils.world_to_camera_view), and their depths along the camera's axis."""
    from bpy_extras.object_utils import world_to_camera_view

    scene_mod = submodule("blender.scene")
    prefs = bpy.context.preferences.addons[submodule("blender").ADDON_PACKAGE].preferences
    model, _ = scene_mod.mesh_head(scene_mod.head_spec(prefs), scene_mod.cache_dir())
    depsgraph = bpy.context.evaluated_depsgraph_get()
    evaluated = head.evaluated_get(depsgraph)
    mesh = evaluated.to_mesh()
    co = np.array([v.co[:] for v in mesh.vertices])
    evaluated.to_mesh_clear()
    m = np.array(evaluated.matrix_world)
    world = co @ m[:3, :3].T + m[:3, 3]
    tri = world[model.faces[model.lmk_faces_idx]]
    points = np.einsum("kij,ki->kj", tri, model.lmk_bary_coords)[17:]
    w, h = scene.render.resolution_x, scene.render.resolution_y
    out, depth = [], []
    for p in points:
        v = world_to_camera_view(scene, scene.camera, Vector(p))
        out.append((v.x * w, (1.0 - v.y) * h))
        depth.append(v.z)
    return np.array(out), np.array(depth)


def _frame_by_engine(engine, scene, prefs, size):
    """The engine's frame of the current scene state (shots, rgba, depth), computed as render() does."""
    shots, _ = engine.shots_of(bpy.context.evaluated_depsgraph_get(), prefs)
    replies, _ = engine.neural_frames(shots, scene, prefs, lambda: False, in_process=True)
    rgba, depth = engine.frame_image(shots, replies, *size)
    return shots, rgba, depth


def _detail(gray, box):
    """Gradient energy of the image in box over that of the image blurred by a Gaussian of 1/15 of the box: about 1
    for a smooth blob, well above 1 where there are features (eyes, brows, nostrils, lips)."""
    from scipy.ndimage import gaussian_filter

    x0, y0, x1, y1 = box
    sigma = max(1.0, (x1 - x0) / 15.0)
    blurred = gaussian_filter(gray, sigma)

    def energy(img):
        gy, gx = np.gradient(img[y0:y1, x0:x1])
        return float(np.mean(np.hypot(gx, gy)))

    return energy(gray) / max(energy(blurred), 1e-9)


# ------------------------------------------------------------------------------------------------ files

def test_write_still_rgba_png_at_the_output_path_with_alpha(addon, use_tiny, tmp_path):
    _, scene = _engine_scene(tmp_path / "out" / "still_", size=(96, 48))
    scene.camera.data.lens *= 0.4           # the add-on's camera, zoomed out: room around the head
    scene.render.image_settings.file_format = "PNG"
    scene.render.image_settings.color_mode = "RGBA"
    scene.render.image_settings.color_depth = "16"
    assert bpy.ops.render.render(write_still=True) == {"FINISHED"}
    png = (tmp_path / "out" / "still_.png").read_bytes()
    assert png[24:26] == bytes([16, 6])              # IHDR: 16 bits per channel, RGBA
    img = iio.imread(tmp_path / "out" / "still_.png")
    assert img.shape == (48, 96, 4)
    alpha = img[..., 3].astype(np.float64) / np.iinfo(img.dtype).max
    assert alpha[:, :24].max() == 0 and alpha[:, -24:].max() == 0     # far from the head: transparent
    assert alpha[22:26, 46:50].min() == 1.0          # the face, in the middle of the add-on's own camera
    assert img[20:28, 44:52, :3].std() > 0

    scene.render.image_settings.file_format = "JPEG"
    scene.render.image_settings.color_mode = "RGB"
    scene.render.filepath = str(tmp_path / "out" / "still_####")
    scene.frame_start = scene.frame_end = 7           # `blender -b scene.blend -f 7`
    assert bpy.ops.render.render(animation=True) == {"FINISHED"}
    jpg = iio.imread(tmp_path / "out" / "still_0007.jpg")
    assert jpg.shape == (48, 96, 3)


def test_animation_honours_step_and_overwrite(addon, use_tiny, tmp_path):
    _, scene = _engine_scene(tmp_path / "anim" / "f_####")
    scene.frame_start, scene.frame_end, scene.frame_step = 1, 5, 2
    (tmp_path / "anim").mkdir()
    marker = tmp_path / "anim" / "f_0003.png"
    marker.write_bytes(b"kept")
    scene.render.use_overwrite = False
    assert bpy.ops.render.render(animation=True) == {"FINISHED"}
    assert sorted(p.name for p in (tmp_path / "anim").iterdir()) == ["f_0001.png", "f_0003.png", "f_0005.png"]
    assert marker.read_bytes() == b"kept"
    assert _stats()["frames"] == 2
    scene.render.use_overwrite = True
    assert bpy.ops.render.render(animation=True) == {"FINISHED"}
    assert iio.imread(marker).shape[:2] == (48, 64)
    # The shortcut: Render Animation with a range override renders through the same pipeline.
    assert bpy.ops.next3d.render_animation(frame_start=2, frame_end=2) == {"FINISHED"}
    assert (tmp_path / "anim" / "f_0002.png").is_file()
    assert (scene.frame_start, scene.frame_end) == (1, 5)


def test_depth_pass_is_the_distance_along_the_camera_axis(addon, use_tiny, tmp_path):
    _, scene = _engine_scene(tmp_path / "d_", size=(64, 64))
    engine = submodule("blender.render_engine")
    depsgraph = bpy.context.evaluated_depsgraph_get()
    prefs = bpy.context.preferences.addons[submodule("blender").ADDON_PACKAGE].preferences
    shots, _ = engine.shots_of(depsgraph, prefs)
    replies, counts = engine.neural_frames(shots, scene, prefs, lambda: False, in_process=True)
    rgba, depth = engine.frame_image(shots, replies, 64, 64)
    assert len(shots) == 1 and counts["rendered"] + counts["kept"] == 1
    # The camera stands 1.08 m from the head's pivot and the generator's rendering box spans about -0.18..+0.24 m
    # about it (a random tiny model puts its density anywhere in the box; the bundled model's face: see below).
    centre = depth[28:36, 28:36]
    assert 0.85 < float(centre.min()) and float(centre.max()) < 1.35, (centre.min(), centre.max())
    assert depth[0, 0] == pytest.approx(1e10) and rgba[0, 0, 3] == 0


# ------------------------------------------------------------------------------------------------ no stale frames

def test_changing_one_keyframe_renders_exactly_the_frames_it_affects(addon, use_tiny, tmp_path):
    _clear_frame_cache()
    arm, scene = _engine_scene(tmp_path / "k" / "f_####")
    for frame in (1, 3, 5):
        _jaw(arm, frame, 0.0)
    for fc in submodule("blender.rig").fcurves_of(arm):
        for kp in fc.keyframe_points:
            kp.interpolation = "LINEAR"
    scene.frame_start, scene.frame_end = 1, 5
    scene.render.use_overwrite = True
    assert bpy.ops.render.render(animation=True) == {"FINISHED"}
    first = _stats()
    before = {n: (tmp_path / "k" / f"f_{n:04d}.png").read_bytes() for n in range(1, 6)}
    _jaw(arm, 5, 0.3)               # frames 4 and 5 change (linear from the key at 3); 1-3 do not
    assert bpy.ops.render.render(animation=True) == {"FINISHED"}
    second = _stats()
    after = {n: (tmp_path / "k" / f"f_{n:04d}.png").read_bytes() for n in range(1, 6)}
    assert first == {"rendered": 5, "kept": 0, "frames": 5}
    assert second["rendered"] == 2 and second["kept"] == 3, (first, second)
    # The kept frames come back from the cache as they were made, byte for byte; the changed ones are new pictures.
    assert [before[n] == after[n] for n in range(1, 6)] == [True, True, True, False, False]


def test_precision_preference_renders_frames_of_its_own(addon, use_tiny, prefs, tmp_path):
    """Preferences > Precision reaches the generator: bf16 gives another, close picture, and the frame cache never
    serves a frame of one precision for the other."""
    _clear_frame_cache()
    _, scene = _engine_scene(tmp_path / "p_", size=(64, 64))
    engine = submodule("blender.render_engine")
    runs = []
    try:
        for name in ("FP32", "BF16", "FP32"):
            prefs.precision = name
            shots, _ = engine.shots_of(bpy.context.evaluated_depsgraph_get(), prefs)
            replies, counts = engine.neural_frames(shots, scene, prefs, lambda: False, in_process=True)
            runs.append((engine.frame_image(shots, replies, 64, 64)[0], counts["rendered"], counts["kept"]))
    finally:
        prefs.precision = "FP32"
    (fp32, *counts_fp32), (bf16, *counts_bf16), (again, *counts_again) = runs
    assert counts_fp32 == [1, 0] and counts_bf16 == [1, 0] and counts_again == [0, 1]
    difference = np.abs(fp32 - bf16)
    assert 0 < difference.mean() < 0.02, difference.mean()
    assert np.array_equal(again, fp32)


def test_interleaved_chunks_in_two_processes_are_byte_identical(addon, use_tiny, tmp_path):
    arm, scene = _engine_scene(tmp_path / "one" / "f_####", size=(48, 48))
    _jaw(arm, 1, 0.0)
    _jaw(arm, 4, 0.3)
    scene.frame_start, scene.frame_end = 1, 4
    assert bpy.ops.render.render(animation=True) == {"FINISHED"}
    scene.render.filepath = str(tmp_path / "split" / "f_####")
    blend = tmp_path / "scene.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend), copy=True)
    bpy.ops.wm.save_userpref()
    _clear_frame_cache()            # the two processes share no frames with this one
    # `blender -b scene.blend -s 1 -e 4 -j 2 -a` and `-s 2 -e 4 -j 2 -a`, at the same time.
    farm = ("import bpy, sys; bpy.ops.wm.read_userpref(); bpy.ops.wm.open_mainfile(filepath=sys.argv[1]); "
            "s = bpy.context.scene; s.frame_start = int(sys.argv[2]); s.frame_step = 2; "
            "bpy.ops.render.render(animation=True)")
    procs = [subprocess.Popen([sys.executable, "-c", farm, str(blend), str(start)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for start in (1, 2)]
    for p in procs:
        out, err = p.communicate(timeout=900)
        assert p.returncode == 0, out[-2000:] + err[-2000:]
    one = sorted(p.name for p in (tmp_path / "one").iterdir())
    assert one == [f"f_{n:04d}.png" for n in range(1, 5)]
    assert sorted(p.name for p in (tmp_path / "split").iterdir()) == one
    for name in one:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "split" / name).read_bytes(), name


# ------------------------------------------------------------------------------------------------ any camera

@pytest.mark.parametrize("camera", ["portrait_85mm", "factory"])
def test_any_camera_puts_the_face_where_blender_projects_the_rig(addon, prefs, tmp_path, camera):
    """The bundled model at 512: the rig's landmarks projected by Blender's camera fall where the engine places
    the generator's face (within 3 px), alpha is 1 on the face and 0 far from it, and for the portrait the face
    region has detail (gradient energy at least 1.3x that of the same image blurred by 1/15 of the face)."""
    size = (512, 512) if camera == "portrait_85mm" else (960, 540)
    arm, scene = _engine_scene(tmp_path / f"{camera}_", size=size)
    cam = scene.camera
    if camera == "portrait_85mm":
        cam.data.lens, cam.data.sensor_width = 85.0, 36.0
        cam.matrix_world = arm.matrix_world.normalized() @ Matrix.Translation((0.0, 0.0, 0.86))
    else:
        cam.data.lens, cam.data.sensor_width, cam.data.shift_x, cam.data.shift_y = 50.0, 36.0, 0.0, 0.0
        cam.location, cam.rotation_euler = FACTORY_CAMERA
    scene.render.image_settings.color_mode = "RGBA"
    bpy.context.view_layer.update()
    head = bpy.data.objects["FLAME-mesh"]
    expected, expected_depth = _landmarks_px(scene, head)

    engine = submodule("blender.render_engine")
    depsgraph = bpy.context.evaluated_depsgraph_get()
    shots, _ = engine.shots_of(depsgraph, prefs)
    view = shots[0].view
    model, _ = submodule("blender.scene").mesh_head(submodule("blender.scene").head_spec(prefs), "")
    lmk = shots[0].job_arrays["landmarks"][0][17:]
    convert = submodule("engine.convert")
    placed = view.generator_to_scene(convert.project_points(lmk, view.cam2world.astype(np.float64),
                                                            view.pixel_intrinsics))
    err = np.linalg.norm(placed - expected, axis=1)
    assert err.max() < 3.0, err.max()

    t0 = time.perf_counter()
    assert bpy.ops.render.render(write_still=True) == {"FINISHED"}
    print(f"{camera}: {time.perf_counter() - t0:.1f} s for one frame ({size[0]}x{size[1]}, side 512)")
    img = iio.imread(tmp_path / f"{camera}_.png").astype(np.float64) / 255.0
    alpha = img[..., 3]
    lo, hi = expected.min(0), expected.max(0)
    assert alpha[int(expected[:, 1].mean()), int(expected[:, 0].mean())] == 1.0
    assert alpha[:5].max() == 0 and alpha[:, :5].max() == 0
    nose_to_chin = float(np.linalg.norm(expected[16] - expected[-1]))    # nose tip (lmk 33) .. lower lip
    if camera == "portrait_85mm":
        assert hi[0] - lo[0] > 120                      # a face filling the frame, not a small head
        gray = img[..., :3].mean(-1)
        box = (int(lo[0]), int(lo[1]), int(hi[0]), int(hi[1]))
        detail = _detail(gray, box)
        assert detail > 1.3, detail
        # The eyes (landmarks 36-47) are darker than the cheeks below them, as on a face.
        eyes = expected[36 - 17:48 - 17]
        cheeks = eyes + np.array([0.0, 1.2 * nose_to_chin])
        lum = lambda pts: float(np.mean([gray[int(y), int(x)] for x, y in pts]))   # noqa: E731
        assert lum(eyes) < lum(cheeks), (lum(eyes), lum(cheeks))
        # The Depth pass at the nose tip (landmark 30) is the nose's distance along the camera axis, within 3 cm (the
        # volume's expected depth along the ray, which rounds off the tip, not the rig's surface); the frame comes
        # back from the cache the render filled.
        _, _, depth = _frame_by_engine(engine, scene, prefs, size)
        nose = expected[30 - 17]
        assert abs(float(depth[int(nose[1]), int(nose[0])]) - expected_depth[30 - 17]) < 0.03
        print(f"detail {detail:.2f}, eyes {lum(eyes):.3f} < cheeks {lum(cheeks):.3f}, nose depth "
              f"{float(depth[int(nose[1]), int(nose[0])]):.3f} vs {expected_depth[30 - 17]:.3f} m")
    else:
        assert 5 < hi[0] - lo[0] < 60                   # a small head far away


# ------------------------------------------------------------------------------------------------ viewport

def test_viewport_camera_is_blenders_projection(addon, use_tiny, tmp_path):
    """The viewport's view (view and projection matrices, as region_data gives them) as a camera projects points as
    Blender's camera does; checked with the scene camera's own matrices, shifted and non-square."""
    _, scene = _engine_scene(tmp_path / "v_", size=(320, 200))
    cam = scene.camera
    cam.data.shift_x, cam.data.shift_y, cam.data.lens = 0.1, -0.05, 70.0
    bpy.context.view_layer.update()
    depsgraph = bpy.context.evaluated_depsgraph_get()
    view_matrix = cam.matrix_world.normalized().inverted()
    window = cam.calc_matrix_camera(depsgraph, x=320, y=200)
    viewport = submodule("blender.viewport")
    convert = submodule("engine.convert")
    c2w, params = viewport.viewport_camera(view_matrix, window, 320, 200)
    head = bpy.data.objects["FLAME-mesh"]
    points = np.array([(head.matrix_world @ head.data.vertices[i].co)[:] for i in range(0, 5023, 500)])
    px = convert.project_points(points, c2w, convert.intrinsics_pixels(params))
    from bpy_extras.object_utils import world_to_camera_view
    from mathutils import Vector

    ref = np.array([[v.x * 320, (1 - v.y) * 200] for v in (world_to_camera_view(scene, cam, Vector(p))
                                                          for p in points)])
    assert np.abs(px - ref).max() < 0.05


def test_viewport_renders_asynchronously_and_caches_by_digest(addon, use_tiny, tmp_path):
    arm, scene = _engine_scene(tmp_path / "v_", size=(40, 40))
    _jaw(arm, 1, 0.0)
    _jaw(arm, 2, 0.3)
    viewport = submodule("blender.viewport")
    prefs = bpy.context.preferences.addons[submodule("blender").ADDON_PACKAGE].preferences
    live = viewport.LiveRender()

    class Region:
        width, height = 40, 40

    class RegionData:
        view_matrix = scene.camera.matrix_world.normalized().inverted()
        window_matrix = scene.camera.calc_matrix_camera(bpy.context.evaluated_depsgraph_get(), x=40, y=40)

    def ask():
        depsgraph = bpy.context.evaluated_depsgraph_get()
        shots, jobs = viewport.viewport_shots(depsgraph, Region, RegionData, prefs)
        return live.request(shots, jobs, sys.executable)

    def wait():
        start = time.monotonic()
        while not live.poll():
            assert not live.error, live.error
            assert time.monotonic() - start < 300
            time.sleep(0.02)

    try:
        scene.frame_set(1)
        assert ask() is None and live.pending is not None      # asked, not waited for
        wait()
        assert live.shown[1].shape == (40, 40, 4) and live.shown[1][..., 3].max() == 1.0
        sent = live.jobs_sent
        assert ask() is not None and live.jobs_sent == sent     # same digest: drawn at once, nothing sent
        scene.frame_set(2)                                      # the jaw moves: a new picture
        assert ask() is None
        wait()
        assert live.jobs_sent == sent + 1 and len(live.pictures) == 2
        scene.frame_set(1)
        assert ask() is not None and live.jobs_sent == sent + 1
        assert live.first_pixel_s is not None
    finally:
        live.stop()


# ------------------------------------------------------------------------------------------------ errors

def test_engine_errors_are_one_line_and_write_nothing(addon, use_tiny, tmp_path):
    _, scene = _engine_scene(tmp_path / "e" / "x_")
    scene.camera.data.type = "ORTHO"
    with pytest.raises(RuntimeError) as info:
        bpy.ops.render.render(write_still=True)
    message = str(info.value)
    assert "perspective camera" in message and "Traceback" not in message
    assert len(message.strip().splitlines()) == 1
    assert not (tmp_path / "e").exists()


def test_keyframes_only_renders_rig_and_camera_keyframes_as_stills(addon, use_tiny, tmp_path):
    arm, scene = _engine_scene(tmp_path / "keys" / "k_")
    _jaw(arm, 1, 0.0)
    _jaw(arm, 4, 0.2)
    scene.camera.keyframe_insert("location", frame=6)
    scene.frame_start, scene.frame_end = 1, 10
    scene.next3d.frame_source = "KEYFRAMES"
    assert bpy.ops.next3d.render_animation() == {"FINISHED"}
    assert sorted(os.listdir(tmp_path / "keys")) == ["k_0001.png", "k_0004.png", "k_0006.png"]
    if hasattr(scene.render.image_settings, "media_type"):     # Blender 5: images and videos are media types
        scene.render.image_settings.media_type = "VIDEO"
    scene.render.image_settings.file_format = "FFMPEG"
    with pytest.raises(RuntimeError, match="writes still images, not a video"):
        bpy.ops.next3d.render_animation()


# ------------------------------------------------------------------------------------------------ formats and heads

def test_multilayer_exr_holds_the_combined_and_depth_passes(addon, use_tiny, tmp_path):
    _, scene = _engine_scene(tmp_path / "exr" / "x_####", size=(64, 48))
    bpy.context.view_layer.use_pass_z = True
    settings = scene.render.image_settings
    if hasattr(settings, "media_type"):          # Blender 5: a multilayer file is a media type of its own
        settings.media_type = "MULTI_LAYER_IMAGE"
    settings.file_format = "OPEN_EXR_MULTILAYER"
    scene.frame_start = scene.frame_end = 3
    assert bpy.ops.render.render(animation=True) == {"FINISHED"}
    data = (tmp_path / "exr" / "x_0003.exr").read_bytes()
    assert data[:4] == b"\x76\x2f\x31\x01"                          # OpenEXR magic
    header = data[:4096]
    # The channel list of a multilayer file names view layer, pass and channel.
    for channel in (b".Combined.A", b".Combined.R", b".Depth.Z"):
        assert channel in header, (channel, header[:400])


def test_every_marked_head_renders_whichever_object_is_active(addon, use_tiny, tmp_path):
    """Two heads marked Next3D Head side by side, the camera pulled back: both are rendered (one generator image
    each) and each has its opaque face, whatever is active or selected."""
    from bpy_extras.object_utils import world_to_camera_view

    _clear_frame_cache()
    arm, scene = _engine_scene(tmp_path / "two_", size=(128, 64))
    assert bpy.ops.next3d.add_head() == {"FINISHED"}
    heads = [o for o in scene.objects if o.type == "MESH" and o.next3d.is_head]
    assert len(heads) == 2
    second_arm = heads[1].parent or heads[1]
    second_arm.location.x += 0.25
    # The camera between the two heads, moved back along its own view axis.
    back = scene.camera.matrix_world.to_3x3() @ Vector((0.0, 0.0, 1.0))
    scene.camera.location = scene.camera.location + Vector((0.125, 0.0, 0.0)) + back * 1.2
    for obj in scene.objects:
        obj.select_set(False)
    bpy.context.view_layer.objects.active = scene.camera
    bpy.context.view_layer.update()
    centres = []
    for head in heads:
        bpy.context.view_layer.update()
        world = head.matrix_world @ Vector(np.mean([v.co[:] for v in head.data.vertices], axis=0))
        v = world_to_camera_view(scene, scene.camera, world)
        centres.append((int(v.x * 128), int((1 - v.y) * 64)))
    scene.render.image_settings.color_mode = "RGBA"
    assert bpy.ops.render.render(write_still=True) == {"FINISHED"}
    stats = _stats()
    assert stats["rendered"] + stats["kept"] == 2, stats
    img = iio.imread(tmp_path / "two_.png")
    alpha = img[..., 3].astype(np.float64) / np.iinfo(img.dtype).max
    for x, y in centres:
        assert alpha[y - 1:y + 2, x - 1:x + 2].min() > 0.99, (x, y, alpha[y - 3:y + 4, x - 3:x + 4])
    assert alpha[:, :4].max() == 0 and alpha[:, -4:].max() == 0
