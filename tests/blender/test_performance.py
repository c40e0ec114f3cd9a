"""Import Performance (blender/performance.py, engine/performance_job.py): an animation file written by the engine
keys the rig with ordinary F-curve keys at the scene's frame rate from the current frame, the keyed rig shows
FLAME's head for the keyed parameters, existing keys are replaced or kept, the frame range follows; bad files get a
one-line error and leave the rig untouched; a rendered face video is tracked through the worker process and keys
the rig."""

import time

import bpy
import numpy as np
import pytest

from n3d_helpers import flame_addon_rig, make_scene, submodule

FPS = 30.0


def _sequence(n=30, shape_scale=0.0, seed=0, n_shape=26, n_expr=16):
    """A known animation of n frames at 30 fps: smooth curves of every FLAME field (head turns, jaw, gaze)."""
    from core.flame import FlameParams, FlameSequence

    rng = np.random.default_rng(seed)
    t = np.arange(n)[:, None] / FPS
    phase = rng.uniform(0, 2 * np.pi, size=(1, n_expr))
    expression = 0.8 * np.sin(2 * np.pi * 1.3 * t + phase)
    shape = np.tile(rng.normal(size=(1, n_shape)) * shape_scale, (n, 1))
    jaw = np.concatenate([0.15 + 0.12 * np.sin(2 * np.pi * 0.9 * t), 0.02 * np.cos(2 * np.pi * t),
                          np.zeros_like(t)], axis=1)
    neck = np.concatenate([0.05 * np.sin(2 * np.pi * 0.5 * t), 0.1 * np.sin(2 * np.pi * 0.7 * t),
                           np.zeros_like(t)], axis=1)
    rotation = np.concatenate([0.1 * np.sin(2 * np.pi * 0.6 * t), 0.35 * np.sin(2 * np.pi * 0.4 * t),
                               0.08 * np.cos(2 * np.pi * 0.8 * t)], axis=1)
    gaze = np.concatenate([0.1 * np.sin(2 * np.pi * 1.1 * t), 0.2 * np.sin(2 * np.pi * 0.8 * t),
                           np.zeros_like(t)], axis=1)
    params = FlameParams(shape=shape, expression=expression, jaw=jaw, neck=neck, global_rotation=rotation,
                         eyes=np.concatenate([gaze, gaze * 0.9], axis=1))
    return FlameSequence(params, FPS)


def _write(path, seq):
    from core.flame import save_sequence

    return save_sequence(path, seq)


def _curve(id_data, path, index=0):
    for fc in submodule("blender.rig").fcurves_of(id_data):
        if fc.data_path == path and fc.array_index == index:
            return fc
    return None


def _keys(fc):
    return np.array([tuple(kp.co) for kp in fc.keyframe_points])


def _select_only(*objects):
    for obj in bpy.context.view_layer.objects:
        obj.select_set(obj in objects)


def _evaluated(mesh):
    ev = mesh.evaluated_get(bpy.context.evaluated_depsgraph_get())
    data = ev.to_mesh()
    co = np.empty(len(data.vertices) * 3, np.float32)
    data.vertices.foreach_get("co", co)
    ev.to_mesh_clear()
    return co.reshape(-1, 3).astype(np.float64)


def _flame_vertices(arrays, params):
    import torch

    from core.flame import FlameModel, FlameModelData

    model = FlameModel(FlameModelData(**arrays))
    with torch.no_grad():
        return model(params, include_global_rotation=True).vertices[0].double().numpy()


def test_an_animation_keys_the_rig_at_the_scene_rate(addon, tmp_path):
    """A 30 fps animation of 30 frames on a 24 fps scene from frame 11: keys at frames 11..34 on every expression
    key, bone rotation and (as two end keys) the identity, whose values are the animation at k / 24 s; at a keyed
    frame the rig's evaluated mesh is FLAME's head for those parameters (head pose included) to a micrometre."""
    from next3d_blender.engine.heads import HeadSpec, head_arrays

    seq = _sequence()
    anim = _write(tmp_path / "anim.npz", seq)
    arm = make_scene(tmp_path)
    mesh = bpy.data.objects["FLAME-mesh"]
    scene = bpy.context.scene
    scene.render.fps, scene.render.fps_base = 24, 1.0
    scene.frame_set(11)
    _select_only(arm)
    assert bpy.ops.next3d.import_performance(filepath=str(anim)) == {"FINISHED"}

    frames = np.arange(11, 35)
    assert (scene.frame_start, scene.frame_end) == (11, 34)
    keys = mesh.data.shape_keys
    rig = submodule("blender.rig")
    times = (frames - 11) / 24.0 * FPS                     # positions in the animation's frames
    values = seq.frames.to_dict()
    for k, kb in enumerate(rig.keys_of(mesh, "Exp")):
        co = _keys(_curve(keys, f'key_blocks["{kb.name}"].value'))
        assert np.array_equal(co[:, 0], frames)
        want = np.interp(times, np.arange(seq.n_frames), values["expression"][:, k])
        assert np.abs(co[:, 1] - want).max() < 1e-5
    jaw_x = _keys(_curve(arm, 'pose.bones["jaw"].rotation_euler', 0))
    assert np.array_equal(jaw_x[:, 0], frames)
    assert np.abs(jaw_x[:, 1] - np.interp(times, np.arange(seq.n_frames), values["jaw"][:, 0])).max() < 1e-3
    for bone in ("root", "neck", "left_eye", "right_eye"):
        assert len(_curve(arm, f'pose.bones["{bone}"].rotation_euler', 1).keyframe_points) == len(frames)
    # The identity is constant: one key at each end. Driven pose correctives get no keys.
    shape_keys = rig.keys_of(mesh, "Shape")
    assert _keys(_curve(keys, f'key_blocks["{shape_keys[0].name}"].value'))[:, 0].tolist() == [11, 34]
    assert _curve(keys, 'key_blocks["Pose6"].value') is None

    # Frame 15 is the animation's frame 5 exactly (4 / 24 s): the rig shows FLAME's head for its parameters.
    scene.frame_set(15)
    got = _evaluated(mesh)
    want = _flame_vertices(head_arrays(HeadSpec()), seq.frames[5])
    assert np.abs(got - want).max() < 1e-5
    # A frame between two animation frames is their interpolation: close to FLAME's head there too (mm).
    scene.frame_set(12)
    from core.capture.output import resample
    import torch

    between, _, _ = resample(seq.frames, torch.zeros(seq.n_frames, 3), np.arange(seq.n_frames) / FPS, 24.0)
    assert np.abs(_evaluated(mesh) - _flame_vertices(head_arrays(HeadSpec()), between[1])).max() < 1e-3


def test_replace_or_keep_existing_keys_and_the_frame_range(addon, tmp_path):
    """Replace deletes the rig's keys in the frames the performance covers (any channel), keeps those outside;
    Keep leaves them and keys the performance over them. Without Set Frame Range the scene's range stays."""
    anim = _write(tmp_path / "anim.npz", _sequence(n=10))
    arm = make_scene(tmp_path)
    mesh = bpy.data.objects["FLAME-mesh"]
    scene = bpy.context.scene
    scene.render.fps, scene.render.fps_base = 30, 1.0
    scene.frame_start, scene.frame_end = 1, 250
    exp1 = submodule("blender.rig").keys_of(mesh, "Exp")[0]
    path = f'key_blocks["{exp1.name}"].value'

    def animate():
        for frame, z in ((5, 0.1), (23, 0.2), (40, 0.3)):
            arm.location.z = z
            arm.keyframe_insert("location", index=2, frame=frame)
        exp1.value = 7.0
        exp1.keyframe_insert("value", frame=23)

    animate()
    scene.frame_set(20)
    _select_only(mesh)
    assert bpy.ops.next3d.import_performance(filepath=str(anim), replace=True, set_frame_range=False) == \
        {"FINISHED"}
    assert (scene.frame_start, scene.frame_end) == (1, 250)
    assert _keys(_curve(arm, "location", 2))[:, 0].tolist() == [5, 40]
    co = _keys(_curve(mesh.data.shape_keys, path))
    assert co[:, 0].tolist() == list(range(20, 30)) and 7.0 not in co[:, 1]

    # Keep: the object's key at 23 stays; the expression key at 23 is the performance's (keyed over it).
    arm.animation_data_clear()
    mesh.data.shape_keys.animation_data.action = None
    animate()
    assert bpy.ops.next3d.import_performance(filepath=str(anim), replace=False) == {"FINISHED"}
    assert (scene.frame_start, scene.frame_end) == (20, 29)
    assert _keys(_curve(arm, "location", 2))[:, 0].tolist() == [5, 23, 40]
    co = _keys(_curve(mesh.data.shape_keys, path))
    assert co[:, 0].tolist() == list(range(20, 30))
    assert co[3, 1] == pytest.approx(_sequence(n=10).frames.expression[3, 0].item(), abs=1e-5)


def test_the_rig_is_the_target_or_the_one_selected(addon, tmp_path):
    """Two selected rigs and no target: a one-line error naming them; the target picks one; none selected: the
    scene's Head."""
    anim = _write(tmp_path / "anim.npz", _sequence(n=3))
    first = make_scene(tmp_path)
    assert bpy.ops.next3d.add_head() == {"FINISHED"}
    second = bpy.context.view_layer.objects.active
    assert second != first
    _select_only(first, second)
    with pytest.raises(RuntimeError, match=r"^Error: 2 FLAME rigs are selected \('FLAME', 'FLAME.001'\); select "
                                           r"only the one to animate\.\n$"):
        bpy.ops.next3d.import_performance(filepath=str(anim))
    assert first.animation_data is None and second.animation_data is None
    assert bpy.ops.next3d.import_performance(filepath=str(anim), target=first.name) == {"FINISHED"}
    assert first.animation_data is not None and second.animation_data is None
    _select_only()
    assert bpy.context.scene.next3d.head.parent == second      # Add FLAME Head made the second the scene's Head
    assert bpy.ops.next3d.import_performance(filepath=str(anim)) == {"FINISHED"}
    assert second.animation_data is not None


@pytest.mark.parametrize("content, message", [
    (b"not a zip at all", r"notes\.npz is not an animation \.npz written by Next3D: it is not a readable \.npz "),
    ("other", r"notes\.npz is not a FLAME animation: it has no arrays named shape, expression, jaw"),
])
def test_a_file_that_is_not_an_animation_is_refused(addon, tmp_path, content, message):
    path = tmp_path / "notes.npz"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        np.savez(path, weights=np.ones((3, 4)))
    arm = make_scene(tmp_path)
    _select_only(arm)
    with pytest.raises(RuntimeError, match=message) as info:
        bpy.ops.next3d.import_performance(filepath=str(path))
    assert str(info.value).count("\n") == 1
    assert arm.animation_data is None and bpy.data.objects["FLAME-mesh"].data.shape_keys.animation_data is None \
        or not submodule("blender.rig").fcurves_of(bpy.data.objects["FLAME-mesh"].data.shape_keys)


def _all_keys(*id_datas):
    rig = submodule("blender.rig")
    return {(id_data.name, fc.data_path, fc.array_index): _keys(fc)
            for id_data in id_datas for fc in rig.fcurves_of(id_data)}


def test_a_json_animation_keys_the_rig_as_its_npz(addon, tmp_path):
    """The hand-editable .json layout (`make demo`'s demo_animation.json), read with numpy alone, keys the built-in
    rig with exactly the keys its .npz twin gives: the same channels, frames and values (8 fps -> a 24 fps scene)."""
    from core.demo import demo_animation
    from core.flame.builtin_head import load_builtin_head_data
    from next3d_blender.engine.heads import HeadSpec, head_info

    _, n_shape, n_expr = head_info(HeadSpec())
    seq = demo_animation(n_shape, n_expr, load_builtin_head_data()["expression_names"])
    arm = make_scene(tmp_path)
    shape_keys = bpy.data.objects["FLAME-mesh"].data.shape_keys
    scene = bpy.context.scene
    scene.render.fps, scene.render.fps_base = 24, 1.0
    keyed = {}
    for suffix in (".npz", ".json"):
        anim = _write(tmp_path / f"demo_animation{suffix}", seq)
        arm.animation_data_clear()
        shape_keys.animation_data_clear()
        scene.frame_set(5)
        _select_only(arm)
        assert bpy.ops.next3d.import_performance(filepath=str(anim)) == {"FINISHED"}
        assert (scene.frame_start, scene.frame_end) == (5, 5 + (seq.n_frames - 1) * 3)
        keyed[suffix] = _all_keys(arm, shape_keys)
    assert sorted(keyed[".json"]) == sorted(keyed[".npz"])
    for channel, co in keyed[".npz"].items():
        assert np.array_equal(keyed[".json"][channel], co), channel
    # The demo's jaw opening and head turn are there (every 3rd scene frame is one of the animation's).
    jaw = keyed[".json"][("FLAME", 'pose.bones["jaw"].rotation_euler', 0)]
    root = keyed[".json"][("FLAME", 'pose.bones["root"].rotation_euler', 1)]
    assert np.abs(jaw[::3, 1] - seq.frames.jaw[:, 0].numpy()).max() < 1e-6 and jaw[:, 1].max() > 0.2
    assert np.abs(root[::3, 1] - seq.frames.global_rotation[:, 1].numpy()).max() < 1e-6 and root[:, 1].max() > 0.2


@pytest.mark.parametrize("doc, message", [
    ({"frames": [{}, {"jaw": [0, 0]}]}, r'^Error: bad\.json, frame 1: "jaw" has 2 numbers; it needs exactly 3\.\n$'),
    ({"frames": [{}, {"jaw": [0, 5.0, 0]}]}, r"^Error: bad\.json: 'jaw' reaches 5, beyond 3\.14; it is not a FLAME "),
    ({"fps": "fast", "frames": [{}]}, r'^Error: bad\.json: "fps" must be a number, got \'fast\'\.\n$'),
])
def test_a_bad_json_animation_is_refused_in_one_line(addon, tmp_path, doc, message):
    import json

    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    arm = make_scene(tmp_path)
    _select_only(arm)
    with pytest.raises(RuntimeError, match=message):
        bpy.ops.next3d.import_performance(filepath=str(path))
    assert arm.animation_data is None


def test_json_animations_are_read_without_torch(tmp_path):
    """Blender's Python has no torch: read_animation reads a .json animation with torch and bpy blocked."""
    import subprocess
    import sys
    from pathlib import Path

    anim = _write(tmp_path / "anim.json", _sequence(n=5))
    code = ("import sys\nsys.modules['torch'] = None\nsys.modules['bpy'] = None\n"
            "from next3d_blender.engine.performance_job import read_animation\n"
            f"a = read_animation({str(anim)!r})\nprint(a.n_frames, a.fps, a.values['expression'].shape)")
    result = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[2],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["5", "30.0", "(5,", "16)"]


def test_an_official_flame_rig_is_keyed_as_flame(addon, official_standins, tmp_path):
    """The FLAME add-on's layout (keys numbered from 000, quaternion bones, plain Pose keys): 100 expression
    coefficients on its Exp keys (their 0..1 sliders widened for signed values), the bones as quaternions and its
    Pose1..18 keyed with FLAME's correctives, so its evaluated mesh is FLAME's head (z-up data) for the keyed
    parameters."""
    from core.flame.files import load_flame_data

    data = load_flame_data(official_standins["generic_model.pkl"], cache_dir=tmp_path / "cache")
    arrays = {k: v for k, v in data.to_arrays().items() if k != "name"}
    seq = _sequence(n=4, shape_scale=0.0, n_shape=300, n_expr=100)
    anim = _write(tmp_path / "anim.npz", seq)
    arm, mesh = flame_addon_rig(arrays)
    for kb in mesh.data.shape_keys.key_blocks[1:]:
        kb.slider_min, kb.slider_max = 0.0, 1.0         # Blender's range for new keys: signed values need more
    scene = bpy.context.scene
    scene.render.fps, scene.render.fps_base = 30, 1.0
    scene.frame_set(1)
    assert bpy.ops.next3d.import_performance(filepath=str(anim), target=arm.name, with_shape=False) == {"FINISHED"}
    assert len(_curve(arm, 'pose.bones["jaw"].rotation_quaternion', 0).keyframe_points) == 4
    assert len(_curve(mesh.data.shape_keys, 'key_blocks["Pose18"].value').keyframe_points) == 4
    scene.frame_set(3)
    to_z_up = np.array([[1.0, 0, 0], [0, 0, -1.0], [0, 1.0, 0]])
    want = _flame_vertices(arrays, seq.frames[2]) @ to_z_up.T
    # FLAME turns each joint about where the expression moved it; the bones sit at the template's joints (as both
    # add-ons place them), which bounds the difference: sum over joints of 2 sin(angle / 2) x the joint's shift.
    import torch

    from core.flame import FlameModel, FlameModelData, FlameParams

    model = FlameModel(FlameModelData(**arrays))
    with torch.no_grad():
        shift = (model(seq.frames[2]).joints[0] - model(FlameParams.zeros(1, 300, 100)).joints[0]).norm(dim=1)
    p = seq.frames[2]
    angles = torch.cat([p.global_rotation, p.neck, p.jaw, p.eyes[:, :3], p.eyes[:, 3:]]).norm(dim=1)
    bound = float((2 * torch.sin(angles / 2) * shift[:5]).sum())
    diff = np.abs(_evaluated(mesh) - want).max(axis=1)
    assert diff.max() < min(bound + 2e-5, 1e-3), (diff.max(), bound)      # within a millimetre
    assert np.median(diff) < 1e-4


# ------------------------------------------------------------------------------------------------ tracking

@pytest.fixture(scope="module")
def face_video(tmp_path_factory):
    """A short rendered driving video of the built-in head (core/capture/synthetic.py): 12 frames at 30 fps."""
    import torch

    from core.capture.synthetic import known_performance, render_performance, write_clip_video

    params, still = known_performance(12, FPS, still=0.2, tempo=3.0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        clip = render_performance(params, fps=FPS, still=still, resolution=256, supersample=1)
    finally:
        torch.set_num_threads(threads)
    return write_clip_video(tmp_path_factory.mktemp("video") / "take.mp4", clip.frames, FPS), params


def _drain_until_finished(runner, task, timeout=600):
    start = time.monotonic()
    while not task.finished:
        assert time.monotonic() - start < timeout, "the worker did not answer in time"
        runner.drain()
        time.sleep(0.05)


def test_a_video_is_tracked_in_the_worker_and_keys_the_rig(addon, prefs, face_video, tmp_path):
    """The worker process tracks the video (the "track" job over the wire), writes the animation and its report
    where asked, and the rig is keyed from it when the job ends: 12 video frames at 30 fps -> frames 1..9 at 24
    fps, the jaw following the video's."""
    import sys

    video, truth = face_video
    arm = make_scene(tmp_path)
    scene = bpy.context.scene
    scene.render.fps, scene.render.fps_base = 24, 1.0
    scene.frame_set(1)
    prefs.python_path = sys.executable
    _select_only(arm)
    out = tmp_path / "tracked" / "take.npz"
    runner = submodule("blender.runner")
    assert bpy.ops.next3d.import_performance(filepath=str(video), animation_path=str(out), mode="ASYNC") == \
        {"FINISHED"}
    task = runner.active_task()
    assert task.kind == "track"
    _drain_until_finished(runner, task)
    assert task.error is None and not task.cancelled, task.error
    assert out.is_file() and (out.parent / "take.track.json").is_file()
    assert task.status.startswith("Keyed 9 frame(s) (1-9, 24 fps) on 'FLAME' from take.npz (12 frame(s) at 30 fps)")
    jaw = _keys(_curve(arm, 'pose.bones["jaw"].rotation_euler', 0))
    assert jaw[:, 0].tolist() == list(range(1, 10))
    # The keys are the written animation's, resampled; the jaw follows the video's (the tracker's accuracy is
    # tests/core/test_track.py's).
    positions = np.arange(9) * FPS / 24
    written = np.load(out)
    mesh = bpy.data.objects["FLAME-mesh"]
    for k, kb in enumerate(submodule("blender.rig").keys_of(mesh, "Exp")):
        co = _keys(_curve(mesh.data.shape_keys, f'key_blocks["{kb.name}"].value'))
        assert np.abs(co[:, 1] - np.interp(positions, np.arange(12), written["expression"][:, k])).max() < 1e-5
    assert np.corrcoef(jaw[:, 1], np.interp(positions, np.arange(12), truth.jaw[:, 0].numpy()))[0, 1] > 0.9
    assert (scene.frame_start, scene.frame_end) == (1, 9)


def test_a_face_that_is_not_there_is_named(addon, face_video, tmp_path):
    """Face 2 of a clip with one face: the tracker's one-line error (in Blender's process under -b), nothing
    written or keyed."""
    video, _ = face_video
    arm = make_scene(tmp_path)
    _select_only(arm)
    out = tmp_path / "tracked" / "take.npz"
    with pytest.raises(RuntimeError, match=r"face 2"):
        bpy.ops.next3d.import_performance(filepath=str(video), animation_path=str(out), face=2)
    assert not out.exists() and arm.animation_data is None


def test_a_live_link_face_recording_keys_the_named_expressions(addon, tmp_path):
    """A Live Link Face CSV (60 fps timecodes) on a 30 fps scene: every other recorded frame, the smile on the
    rig's smile_left key from the frame the recording smiles, the jaw opening with JawOpen."""
    from core.capture.arkit import ARKIT_SHAPES, JAW_OPEN, ROTATIONS

    n = 30
    header = ["Timecode", "BlendShapeCount", *(s[0].upper() + s[1:] for s in ARKIT_SHAPES), *ROTATIONS]
    lines = [",".join(header)]
    for i in range(n):
        row = dict.fromkeys(header[2:], 0.0)
        row["JawOpen"] = i / (n - 1)
        row["MouthSmileLeft"] = 1.0 if i >= 20 else 0.0
        stamp = f"17:27:{34 + (40 + i) // 60:02d}:{(40 + i) % 60:02d}.000"     # frame numbers 0..59: 60 fps
        lines.append(",".join([stamp, "61", *(f"{row[h]:.4f}" for h in header[2:])]))
    (tmp_path / "take.csv").write_text("\n".join(lines) + "\n")
    arm = make_scene(tmp_path)
    scene = bpy.context.scene
    scene.render.fps, scene.render.fps_base = 30, 1.0
    scene.frame_set(1)
    _select_only(arm)
    out = tmp_path / "take.npz"
    assert bpy.ops.next3d.import_performance(filepath=str(tmp_path / "take.csv"), animation_path=str(out)) == \
        {"FINISHED"}
    assert out.is_file() and (scene.frame_start, scene.frame_end) == (1, 15)
    smile = next(kb for kb in submodule("blender.rig").keys_of(bpy.data.objects["FLAME-mesh"], "Exp")
                 if kb.name.endswith("smile_left"))
    co = _keys(_curve(bpy.data.objects["FLAME-mesh"].data.shape_keys, f'key_blocks["{smile.name}"].value'))
    assert co[:, 0].tolist() == list(range(1, 16)) and co[:10, 1].max() == 0 and co[10:, 1].min() == 1
    jaw = _keys(_curve(arm, 'pose.bones["jaw"].rotation_euler', 0))[:, 1]
    np.testing.assert_allclose(jaw, np.arange(15) * 2 / (n - 1) * JAW_OPEN, atol=1e-3)


def test_the_track_job_stops_when_asked(face_video, tmp_path):
    """The worker's job function: stopped during the landmarks, it says "cancelled" and writes nothing."""
    from next3d_blender.engine.performance_job import TrackJob, track_job

    video, _ = face_video
    out = tmp_path / "take.npz"
    replies, calls = [], []

    def should_stop():
        calls.append(1)
        return len(calls) > 3

    track_job(TrackJob(source_path=str(video), out_path=str(out)), {},
              lambda kind, payload, arrays: replies.append((kind, payload)), should_stop)
    kinds = [kind for kind, _ in replies]
    assert kinds[-1] == "cancelled" and kinds.count("frame") == 3 and "done" not in kinds
    assert not out.exists() and not list(tmp_path.iterdir())


def test_the_performance_panel(addon):
    """The panel in the Next3D tab: the import button; while a track runs, its status and Cancel; after a failed
    one, the error (a recording stand-in for UILayout, as tests/blender/test_panels.py draws)."""
    import types

    performance, runner = submodule("blender.performance"), submodule("blender.runner")
    panel = performance.NEXT3D_PT_performance
    assert (panel.bl_space_type, panel.bl_region_type, panel.bl_category) == ("VIEW_3D", "UI", "Next3D")
    assert bpy.types.Panel.bl_rna_get_subclass_py(panel.__name__) is not None

    def draw():
        calls = []

        class Layout:
            def __getattr__(self, name):
                return lambda *args, **kwargs: calls.append((name, args, kwargs)) or Layout()

        panel.draw(types.SimpleNamespace(layout=Layout()), bpy.context)
        return calls

    assert [args[0] for name, args, _ in draw() if name == "operator"] == ["next3d.import_performance"]
    task = runner.Task(performance.TrackJob(source_path="take.mp4", out_path="take.npz"), {}, "Track performance")
    task.status = "Track performance: frame 5 (5/12)"
    runner._state["task"] = task
    try:
        calls = draw()
        assert "next3d.cancel_job" in [args[0] for name, args, _ in calls if name == "operator"]
        assert any(kwargs.get("text") == task.status for name, _, kwargs in calls if name == "label")
        task.finished, task.error = True, "No face was found in any of the 12 frames of take.mp4."
        assert any(kwargs.get("text") == task.error for name, _, kwargs in draw() if name == "label")
    finally:
        runner._state["task"] = None
