"""The rig: built from the head data, read per frame, and agreeing with the engine's FLAME evaluation."""

import bpy
import numpy as np
import pytest

from n3d_helpers import make_scene, submodule


def _key(obj, frame, **values):
    for name, value in values.items():
        if name in ("jaw", "left_eye", "right_eye", "neck"):
            pb = obj.pose.bones[name]
            pb.rotation_euler = value
            pb.keyframe_insert("rotation_euler", frame=frame)
        else:
            kb = bpy.data.objects["FLAME-mesh"].data.shape_keys.key_blocks[name]
            kb.value = value
            kb.keyframe_insert("value", frame=frame)


def test_add_head_builds_a_flame_rig(addon, tmp_path):
    arm = make_scene(tmp_path)
    mesh = bpy.data.objects["FLAME-mesh"]
    assert arm.type == "ARMATURE" and mesh.parent == arm
    assert [b.name for b in arm.data.bones] == ["root", "neck", "jaw", "left_eye", "right_eye"]
    assert arm.data.bones["jaw"].parent.name == "neck" and arm.data.bones["neck"].parent.name == "root"
    assert len(mesh.data.vertices) == 5023
    names = mesh.data.shape_keys.key_blocks.keys()
    assert names[0] == "Basis" and "Shape1" in names and "Exp1" in names
    assert {vg.name for vg in mesh.vertex_groups} == {"root", "neck", "jaw", "left_eye", "right_eye"}
    assert any(m.type == "ARMATURE" and m.object == arm for m in mesh.modifiers)
    assert arm.next3d.is_rig and bpy.context.scene.camera is not None
    # Bones have an identity rest orientation: a pose rotation is FLAME's axis-angle.
    for bone in arm.data.bones:
        assert np.allclose(np.array(bone.matrix_local)[:3, :3], np.eye(3), atol=1e-6)
    # Adding a second head keeps the existing scene camera.
    cam = bpy.context.scene.camera
    assert bpy.ops.next3d.add_head() == {"FINISHED"}
    assert bpy.context.scene.camera == cam and len([o for o in bpy.data.objects if o.type == "CAMERA"]) == 1


def test_rig_matches_the_engine(addon, tmp_path):
    """Blender's own deformation of the rig (shape keys + skinning) equals core.flame.FlameModel's."""
    import torch

    from core.flame import FlameModel, FlameModelData, FlameParams
    from next3d_blender.engine.heads import HeadSpec, head_arrays, head_info

    arm = make_scene(tmp_path)
    _key(arm, 1, jaw=(0.0, 0.0, 0.0), Exp2=0.0, Shape1=0.0)
    _key(arm, 10, jaw=(0.3, 0.0, 0.0), left_eye=(0.0, 0.25, 0.0), Exp2=1.5, Shape1=-2.0)
    the_rig = submodule("blender.rig").find_rig(arm)
    scene = bpy.context.scene
    scene.frame_set(10)
    deps = bpy.context.evaluated_depsgraph_get()
    _, n_shape, n_expr = head_info(HeadSpec())
    state = submodule("blender.rig").read_frame(the_rig, n_shape, n_expr, deps)
    assert np.allclose(state.jaw, [0.3, 0, 0], atol=1e-6) and np.allclose(state.eyes[:3], [0, 0.25, 0], atol=1e-6)
    assert state.expression[1] == pytest.approx(1.5) and state.shape[0] == pytest.approx(-2.0)
    evaluated = the_rig.mesh.evaluated_get(deps).to_mesh()
    blender_verts = np.array([v.co[:] for v in evaluated.vertices])
    the_rig.mesh.evaluated_get(deps).to_mesh_clear()
    model = FlameModel(FlameModelData(**head_arrays(HeadSpec())))
    out = model(FlameParams(shape=state.shape, expression=state.expression, jaw=state.jaw, eyes=state.eyes))
    # Blender's bones sit at the template joints; the engine regresses them from the shaped mesh, so they agree
    # to the joint shift that the shape change causes: a joint moved by d displaces the vertices it rotates by at
    # most 2 sin(angle / 2) * d <= d.
    rest = model(FlameParams.zeros(1, model.n_shape, model.n_expr)).joints[0]
    shift = float((out.joints[0] - rest).norm(dim=-1).max())
    assert np.abs(out.vertices[0].numpy() - blender_verts).max() <= shift + 1e-5
    assert submodule("blender.rig").keyframe_numbers(the_rig) == [1, 10]
    assert torch.is_tensor(out.landmarks)


def test_reset_and_random_operators(addon, tmp_path):
    make_scene(tmp_path)
    keys = bpy.data.objects["FLAME-mesh"].data.shape_keys.key_blocks
    assert bpy.ops.next3d.random_shape(seed=3) == {"FINISHED"}
    assert any(abs(kb.value) > 0.1 for kb in keys if kb.name.startswith("Shape"))
    keys["Exp1"].value = 2.0
    bpy.data.objects["FLAME"].pose.bones["jaw"].rotation_euler = (0.2, 0, 0)
    assert bpy.ops.next3d.reset_expression() == {"FINISHED"}
    assert keys["Exp1"].value == 0.0
    assert tuple(bpy.data.objects["FLAME"].pose.bones["jaw"].rotation_euler) == (0.0, 0.0, 0.0)
    assert bpy.ops.next3d.reset_shape() == {"FINISHED"}
    assert all(kb.value == 0.0 for kb in keys if kb.name.startswith("Shape"))


# ------------------------------------------------------------------------------------------------ bad input

def _state(tmp_path):
    return (sorted(o.name for o in bpy.data.objects), bpy.context.scene.frame_current,
            sorted(p.name for p in tmp_path.rglob("*")), len(bpy.data.images))


def _fails(tmp_path, match, **kwargs):
    before = _state(tmp_path)
    with pytest.raises(RuntimeError, match=match):
        bpy.ops.next3d.render_animation(frame_start=1, frame_end=2, **kwargs)
    with pytest.raises(RuntimeError, match=match):
        bpy.ops.next3d.render_frame()
    assert _state(tmp_path) == before


def test_bad_input_is_reported_and_changes_nothing(addon, prefs, tmp_path):
    out = tmp_path / "out"
    arm = make_scene(out)
    scene = bpy.context.scene
    scene.frame_set(5)
    view_layer = bpy.context.view_layer

    view_layer.objects.active = None
    _fails(tmp_path, "No FLAME rig is selected")

    bpy.ops.mesh.primitive_cube_add()
    _fails(tmp_path, "has 8 vertices, but the head model has 5023")

    mesh = bpy.data.objects["FLAME-mesh"]
    view_layer.objects.active = mesh
    keys = mesh.data.shape_keys.key_blocks
    keys["Exp3"].name = "Smile"
    _fails(tmp_path, "lacks the shape keys Exp3")
    keys["Smile"].name = "Exp3"

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


def test_rig_from_the_builtin_head(addon, prefs, tmp_path):
    """A rig built from a FLAME-layout .npz (here the built-in head) has its keys, correctives and skinning, and
    Blender's deformation equals the engine's for shape and expression."""
    from pathlib import Path

    import torch

    from core.flame import FlameModel, FlameParams
    from core.flame.model_data import load_model_data
    from next3d_blender.engine.heads import BUILTIN_HEAD_NPZ

    npz = Path(BUILTIN_HEAD_NPZ)
    if not npz.is_file():
        pytest.skip(f"{npz} is not generated yet (scripts/make_builtin_head.py)")
    data = load_model_data(npz)
    prefs.model_source = "PROJECT"
    prefs.flame_model_path = str(npz)
    arm = make_scene(tmp_path)
    mesh = bpy.data.objects["FLAME-mesh"]
    counts = submodule("blender.rig").key_counts(mesh)
    assert counts == {"Shape": data.n_shape, "Exp": data.n_expr, "Pose": 36 if np.any(data.posedirs) else 0}
    keys = mesh.data.shape_keys.key_blocks
    keys["Shape2"].value, keys["Exp3"].value = 1.5, 0.8
    deps = bpy.context.evaluated_depsgraph_get()
    rig = submodule("blender.rig")
    state = rig.read_frame(rig.find_rig(arm), counts["Shape"], counts["Exp"], deps)
    evaluated = mesh.evaluated_get(deps).to_mesh()
    blender_verts = np.array([v.co[:] for v in evaluated.vertices])
    mesh.evaluated_get(deps).to_mesh_clear()
    out = FlameModel(data)(FlameParams(shape=state.shape, expression=state.expression))
    assert np.abs(out.vertices[0].numpy() - blender_verts).max() < 1e-5
    assert torch.is_tensor(out.vertices)
