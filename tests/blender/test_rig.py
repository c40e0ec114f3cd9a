"""The rig: built from the head data, its evaluated mesh turned into the engine's input and agreeing with the
engine's FLAME evaluation, and the head found and checked whatever object is active."""

import bpy
import numpy as np
import pytest

from n3d_helpers import make_scene, submodule


def _keys(prefix):
    return submodule("blender.rig").keys_of(bpy.data.objects["FLAME-mesh"], prefix)


def test_add_head_builds_a_flame_rig(addon, tmp_path):
    arm = make_scene(tmp_path)
    mesh = bpy.data.objects["FLAME-mesh"]
    assert arm.type == "ARMATURE" and mesh.parent == arm
    assert [b.name for b in arm.data.bones] == ["root", "neck", "jaw", "left_eye", "right_eye"]
    assert arm.data.bones["jaw"].parent.name == "neck" and arm.data.bones["neck"].parent.name == "root"
    assert len(mesh.data.vertices) == 5023
    names = mesh.data.shape_keys.key_blocks.keys()
    # The built-in head's keys say what they do; its pose correctives are the components it uses, by FLAME index.
    assert names[0] == "Basis" and names[1] == "Shape1_size" and "Exp4_smile_left" in names
    assert [kb.name for kb in _keys("Pose")] == ["Pose6", "Pose8", "Pose15", "Pose17"]
    assert {vg.name for vg in mesh.vertex_groups} == {"root", "neck", "jaw", "left_eye", "right_eye"}
    assert any(m.type == "ARMATURE" and m.object == arm for m in mesh.modifiers)
    assert arm.next3d.is_rig and bpy.context.scene.camera is not None
    assert bpy.context.scene.next3d.head == mesh
    # Bones have an identity rest orientation: a pose rotation is FLAME's axis-angle.
    for bone in arm.data.bones:
        assert np.allclose(np.array(bone.matrix_local)[:3, :3], np.eye(3), atol=1e-6)
    # The pose correctives follow the bones (drivers, no Python needed): Pose8 is R[2, 1] of the neck.
    arm.pose.bones["neck"].rotation_euler = (0.3, 0.0, 0.0)
    bpy.context.view_layer.update()
    assert bpy.data.objects["FLAME-mesh"].data.shape_keys.key_blocks["Pose8"].value == pytest.approx(np.sin(0.3),
                                                                                                     abs=1e-5)
    assert all(fc.driver.is_simple_expression for fc in mesh.data.shape_keys.animation_data.drivers)
    # Adding a second head keeps the existing scene camera.
    cam = bpy.context.scene.camera
    assert bpy.ops.next3d.add_head() == {"FINISHED"}
    assert bpy.context.scene.camera == cam and len([o for o in bpy.data.objects if o.type == "CAMERA"]) == 1


def _set_keys(prefix, values):
    for kb, value in zip(_keys(prefix), values):
        kb.value = float(value)


def _flame(params, global_rotation=False):
    import torch

    from core.flame import FlameModel, FlameModelData
    from next3d_blender.engine.heads import HeadSpec, head_arrays

    model = FlameModel(FlameModelData(**head_arrays(HeadSpec())))
    with torch.no_grad():
        return model, model(params, include_global_rotation=global_rotation)


def test_mesh_path_reproduces_the_coefficient_path(addon, tmp_path):
    """For a rig driven only by its keys and bones, the vertices and landmarks sent to the engine are FLAME's for
    the same coefficients, with the head's rigid motion (object, root and neck bones) moved into the camera."""
    import torch

    from core.flame import FlameParams, head_pose_transform
    from core.flame.mesh_pose import Similarity

    arm = make_scene(tmp_path)
    bones = arm.pose.bones
    scene = bpy.context.scene
    rng = np.random.default_rng(0)
    shape, expression = rng.normal(size=26) * 0.8, rng.normal(size=16) * 0.5
    # Frame 1: identity and expression, the head turned by the object and the root bone.
    _set_keys("Shape", shape)
    _set_keys("Exp", expression)
    arm.location = (0.3, -0.2, 0.1)
    arm.rotation_euler = (1.4, 0.2, -0.3)
    bones["root"].rotation_euler = (0.1, 0.4, 0.0)
    for kb in _keys("Shape") + _keys("Exp"):
        kb.keyframe_insert("value", frame=1)
    for target in (arm, bones["root"]):
        target.keyframe_insert("rotation_euler", frame=1)
    # Frame 2: jaw, eyes and neck, identity and expression at zero (the bones sit at the template's joints).
    for kb in _keys("Shape") + _keys("Exp"):
        kb.value = 0.0
        kb.keyframe_insert("value", frame=2)
    pose = {"jaw": (0.3, 0.05, 0.0), "left_eye": (0.1, 0.25, 0.0), "right_eye": (-0.05, 0.3, 0.0),
            "neck": (0.15, -0.3, 0.05)}
    for name, value in pose.items():
        bones[name].rotation_euler = value
        bones[name].keyframe_insert("rotation_euler", frame=2)
        bones[name].rotation_euler = (0.0, 0.0, 0.0)
        bones[name].keyframe_insert("rotation_euler", frame=1)
    frames = submodule("blender.scene").prepare(bpy.context, [1, 2])
    assert frames.warnings == []
    a = frames.arrays
    assert a["vertices"].shape == (2, 5023, 3) and a["landmarks"].shape == (2, 68, 3) and a["faces"].shape[1] == 3

    model, want = _flame(FlameParams(shape=shape, expression=expression))
    assert np.abs(a["vertices"][0] - want.vertices[0].numpy()).max() < 2e-5
    assert np.abs(a["landmarks"][0] - want.landmarks[0].numpy()).max() < 2e-5

    # Blender's Euler XYZ rotations as FLAME axis-angle vectors.
    def aa(euler):
        from mathutils import Euler

        axis, angle = Euler(euler, "XYZ").to_quaternion().to_axis_angle()
        return torch.tensor([list(axis)], dtype=torch.float32) * angle

    params = FlameParams(jaw=aa(pose["jaw"]), neck=aa(pose["neck"]),
                         eyes=torch.cat([aa(pose["left_eye"]), aa(pose["right_eye"])], 1))
    model, posed = _flame(params)
    zero = model(FlameParams.zeros(1, model.n_shape, model.n_expr)).joints[0].double()
    undo = Similarity.from_matrix(np.linalg.inv(head_pose_transform(
        torch.zeros(1, 3, dtype=torch.float64), zero[0], params.neck.double(), zero[1])[0].numpy()))
    assert np.abs(a["vertices"][1] - undo.apply(posed.vertices[0].double().numpy())).max() < 2e-5
    assert np.abs(a["landmarks"][1] - undo.apply(posed.landmarks[0].double().numpy())).max() < 2e-5
    # The head's world placement: FLAME's canonical head -> where Blender shows it.
    deps = bpy.context.evaluated_depsgraph_get()
    scene.frame_set(1)
    world = np.array(bpy.data.objects["FLAME-mesh"].evaluated_get(deps).matrix_world)
    evaluated = bpy.data.objects["FLAME-mesh"].evaluated_get(deps).to_mesh()
    shown = np.array([world[:3, :3] @ v.co[:] + world[:3, 3] for v in evaluated.vertices])
    bpy.data.objects["FLAME-mesh"].evaluated_get(deps).to_mesh_clear()
    placed = Similarity.from_matrix(frames.heads[1]).apply(a["vertices"][0])
    assert np.abs(placed - shown).max() < 1e-4
    assert scene.frame_current == 1


def test_reset_and_random_operators(addon, tmp_path):
    make_scene(tmp_path)
    keys = bpy.data.objects["FLAME-mesh"].data.shape_keys.key_blocks
    assert bpy.ops.next3d.random_shape(seed=3) == {"FINISHED"}
    assert any(abs(kb.value) > 0.1 for kb in keys if kb.name.startswith("Shape"))
    _keys("Exp")[0].value = 2.0
    _keys("Exp")[0].name = "Exp000"          # keys are found by prefix, not by number
    bpy.data.objects["FLAME"].pose.bones["jaw"].rotation_euler = (0.2, 0, 0)
    bpy.context.view_layer.objects.active = None      # nothing selected: the scene's head
    assert bpy.ops.next3d.reset_expression() == {"FINISHED"}
    assert keys["Exp000"].value == 0.0
    assert tuple(bpy.data.objects["FLAME"].pose.bones["jaw"].rotation_euler) == (0.0, 0.0, 0.0)
    assert bpy.ops.next3d.reset_shape() == {"FINISHED"}
    assert all(kb.value == 0.0 for kb in keys if kb.name.startswith("Shape"))


# ------------------------------------------------------------------------------------------------ bad input

def _state(tmp_path):
    return (sorted(o.name for o in bpy.data.objects), bpy.context.scene.frame_current,
            sorted(p.name for p in tmp_path.rglob("*")),
            len([i for i in bpy.data.images if i.type != "RENDER_RESULT"]))     # Blender's own Render Result


def _fails(tmp_path, match, **kwargs):
    before = _state(tmp_path)
    with pytest.raises(RuntimeError, match=match):
        bpy.ops.next3d.render_animation(frame_start=1, frame_end=2, **kwargs)
    with pytest.raises(RuntimeError, match=match):
        bpy.ops.next3d.render_frame()
    assert _state(tmp_path) == before


def _mesh_object(name, vertices, faces):
    obj = bpy.data.objects.new(name, submodule("blender.datablocks").mesh_from_arrays(name, vertices, faces))
    bpy.context.scene.collection.objects.link(obj)
    return obj


def test_bad_input_is_reported_and_changes_nothing(addon, prefs, tmp_path):
    from next3d_blender.engine.heads import HeadSpec, head_arrays

    out = tmp_path / "out"
    arm = make_scene(out)
    scene = bpy.context.scene
    scene.frame_set(5)
    view_layer = bpy.context.view_layer
    head = bpy.data.objects["FLAME-mesh"]
    settings = scene.next3d

    # The active object does not choose the head: a selected cube changes nothing, the scene's head is rendered.
    bpy.ops.mesh.primitive_cube_add()
    cube = bpy.data.objects["Cube"]
    assert submodule("blender.scene").find_head(bpy.context).mesh == head
    settings.head = cube
    _fails(tmp_path, r"The bundled default model expects the built-in head \(5023 vertices, 10034 triangles\); "
                     r"the mesh 'Cube' is a mesh of 8 vertices and 12 triangles: choose Official Next3D")
    # Same vertex count, other triangles.
    arrays = head_arrays(HeadSpec())
    faces = arrays["faces"].copy()
    faces[0] = (faces[0, 0], faces[0, 1], (faces[0, 2] + 7) % 5023)
    settings.head = _mesh_object("Edited", arrays["v_template"], faces)
    _fails(tmp_path, "the mesh 'Edited' has its 5023 vertices but other triangles")
    # A modifier that adds vertices.
    settings.head = head
    subsurf = head.modifiers.new("Subdivision", "SUBSURF")
    _fails(tmp_path, r"The modifiers of the mesh 'FLAME-mesh' change its vertex count \(5023 -> ")
    head.modifiers.remove(subsurf)
    # Without a chosen head: the only one in the view layer, or a question when there are several.
    settings.head = None
    bpy.data.objects.remove(bpy.data.objects["Edited"])
    assert submodule("blender.scene").find_head(bpy.context).mesh == head
    assert bpy.ops.next3d.add_head() == {"FINISHED"}
    settings.head = None
    for name in ("FLAME-mesh", "FLAME-mesh.001"):      # unmarked (a file made before the mark): which one?
        bpy.data.objects[name].next3d.is_head = False
    _fails(tmp_path, "The scene has 2 heads \\('FLAME-mesh', 'FLAME-mesh.001'\\); choose the one to render")
    for name in ("FLAME.001", "FLAME-mesh.001"):
        bpy.data.objects.remove(bpy.data.objects[name])
    view_layer.objects.active = arm

    cam = scene.camera
    scene.camera = None
    _fails(tmp_path, "The scene has no camera")
    scene.camera = cam

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    scene.render.filepath = str(blocker / "frames") + "/"
    with pytest.raises(RuntimeError, match="Cannot write to the output folder"):
        bpy.ops.next3d.render_animation(frame_start=1, frame_end=2)
    scene.render.filepath = str(out) + "/"

    prefs.model_source = "PROJECT"
    prefs.project_path = str(tmp_path / "missing.safetensors")
    _fails(tmp_path, "missing.safetensors' does not exist")
    prefs.model_source = "DEFAULT"

    with pytest.raises(RuntimeError, match="no keyframes"):
        bpy.ops.next3d.render_animation(frame_start=1, frame_end=2, frame_source="KEYFRAMES")
    assert scene.frame_current == 5
    assert not out.exists()


def test_rig_from_a_flame_layout_npz(addon, prefs, tmp_path):
    """A rig built from a FLAME-layout .npz (here the built-in head's file) has its keys, correctives and skinning,
    and Blender's deformation equals the engine's for shape and expression."""
    from pathlib import Path

    from core.flame import FlameModel, FlameParams
    from core.flame.model_data import load_model_data
    from next3d_blender.engine.heads import BUILTIN_HEAD_NPZ

    npz = Path(BUILTIN_HEAD_NPZ)
    data = load_model_data(npz)
    prefs.model_source = "PROJECT"
    prefs.flame_model_path = str(npz)
    make_scene(tmp_path)
    mesh = bpy.data.objects["FLAME-mesh"]
    counts = submodule("blender.rig").key_counts(mesh)
    used = int((np.abs(data.posedirs).reshape(-1, 36).max(0) > 0).sum())
    assert counts == {"Shape": data.n_shape, "Exp": data.n_expr, "Pose": used}
    shape, expression = np.zeros(data.n_shape), np.zeros(data.n_expr)
    shape[1], expression[2] = 1.5, 0.8
    _set_keys("Shape", shape)
    _set_keys("Exp", expression)
    deps = bpy.context.evaluated_depsgraph_get()
    evaluated = mesh.evaluated_get(deps).to_mesh()
    blender_verts = np.array([v.co[:] for v in evaluated.vertices])
    mesh.evaluated_get(deps).to_mesh_clear()
    out = FlameModel(data)(FlameParams(shape=shape, expression=expression))
    assert np.abs(out.vertices[0].detach().numpy() - blender_verts).max() < 1e-5
