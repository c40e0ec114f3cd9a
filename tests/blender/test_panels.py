"""The sidebar tab: every panel registers in the "Next3D" tab of the 3D viewport and draws without errors, with and
without a rig and while a job runs (a recording stand-in for UILayout, since module mode has no UI to draw)."""

import types
from pathlib import Path

import bpy
import numpy as np

from n3d_helpers import flame_addon_rig, make_scene, submodule

BUILTIN_HEAD = Path(__file__).resolve().parents[2] / "addon_assets" / "builtin_head.npz"


class Layout:
    def __init__(self, calls):
        self.calls = calls

    def __getattr__(self, name):
        def record(*args, **kwargs):
            self.calls.append((name, args, kwargs))
            return Layout(self.calls)
        return record


def _draw_all():
    panels = submodule("blender.panels")
    calls = []
    for cls in (c for c in panels.CLASSES if issubclass(c, bpy.types.Panel)):
        assert cls.bl_space_type == "VIEW_3D" and cls.bl_region_type == "UI" and cls.bl_category == "Next3D"
        assert bpy.types.Panel.bl_rna_get_subclass_py(cls.__name__) is not None
        cls.draw(types.SimpleNamespace(layout=Layout(calls)), bpy.context)
    return calls


def _operators(calls):
    return {args[0] for name, args, _ in calls if name == "operator"}


def test_panels_draw(addon, tmp_path):
    assert {"next3d.add_head"} <= _operators(_draw_all())
    make_scene(tmp_path)
    ops = _operators(_draw_all())
    assert {"next3d.add_head", "next3d.random_shape", "next3d.reset_shape", "next3d.reset_expression",
            "next3d.render_frame", "next3d.render_animation", "next3d.extract_mesh"} <= ops
    runner = submodule("blender.runner")
    task = runner.Task(None, {}, "Render animation")
    task.total, task.done, task.status = 20, 5, "frame 5"
    runner._state["task"] = task
    try:
        calls = _draw_all()
        assert "next3d.cancel_job" in _operators(calls)
        assert any(name == "progress" for name, _, _ in calls)
    finally:
        runner._state["task"] = None


def test_rig_panel_shows_the_rigs_own_keys_and_any_bone_rotation(addon, tmp_path):
    """Expression keys are listed by their names whatever their numbering; bone rotations in any rotation mode."""
    arm = make_scene(tmp_path)
    mesh = bpy.data.objects["FLAME-mesh"]
    keys = mesh.data.shape_keys.key_blocks
    next(k for k in keys if k.name.startswith("Exp")).name = "Exp000"
    arm.pose.bones["jaw"].rotation_mode = "QUATERNION"
    arm.pose.bones["left_eye"].rotation_mode = "AXIS_ANGLE"
    calls = _draw_all()
    lists = [args for name, args, _ in calls if name == "template_list"]
    assert lists and lists[0][0] == "NEXT3D_UL_expression_keys" and lists[0][3] == "key_blocks"
    shown = [(args[1], kwargs.get("text")) for name, args, kwargs in calls if name == "prop" and len(args) > 1
             and args[1].startswith("rotation_")]
    assert shown == [("rotation_quaternion", "jaw"), ("rotation_axis_angle", "left_eye"),
                     ("rotation_euler", "right_eye"), ("rotation_euler", "neck")]
    ul = submodule("blender.panels").NEXT3D_UL_expression_keys
    flags, order = ul.filter_items(types.SimpleNamespace(filter_name="", bitflag_filter_item=1 << 30), bpy.context,
                                   mesh.data.shape_keys, "key_blocks")
    listed = [kb.name for kb, f in zip(keys, flags) if f]
    assert listed[0] == "Exp000" and len(listed) == 16 and all(n.startswith("Exp") for n in listed)
    assert order == []


def _expression_rows(mesh):
    """The expression list as the panel draws it: its template_list, and each row the UI list shows (its filter),
    drawn by the list's draw_item into the recording layout: (row count, [(key name, slider text)])."""
    calls = _draw_all()
    lists = [(args, kwargs) for name, args, kwargs in calls if name == "template_list"]
    assert len(lists) == 1 and lists[0][0][0] == "NEXT3D_UL_expression_keys"
    ul = submodule("blender.panels").NEXT3D_UL_expression_keys
    keys = mesh.data.shape_keys.key_blocks
    flags, _ = ul.filter_items(types.SimpleNamespace(filter_name="", bitflag_filter_item=1 << 30), bpy.context,
                               mesh.data.shape_keys, "key_blocks")
    rows = []
    for kb, flag in zip(keys, flags):
        if flag:
            drawn = []
            ul.draw_item(None, bpy.context, Layout(drawn), mesh.data.shape_keys, kb, 0, mesh, "active_shape_key_index",
                         0)
            assert [(name, args[1], kwargs.get("slider")) for name, args, kwargs in drawn] == [("prop", "value", True)]
            rows.append((kb.name, drawn[0][2]["text"]))
    return lists[0][1]["rows"], rows


def test_expression_list_shows_every_named_expression_of_the_builtin_head(addon, tmp_path):
    """All 16 expressions of the built-in head, each slider labelled with what it does, all in view."""
    make_scene(tmp_path)
    with np.load(BUILTIN_HEAD) as z:
        names = [str(n) for n in z["expression_names"]]
    assert len(names) == 16
    n_rows, rows = _expression_rows(bpy.data.objects["FLAME-mesh"])
    assert [key for key, _ in rows] == [f"Exp{k + 1}_{n}" for k, n in enumerate(names)]
    assert all(name in text for (_, text), name in zip(rows, names))      # e.g. "Exp4_smile_left"
    assert n_rows == 16


def test_official_layout_rig_shows_its_exp_keys_and_quaternion_bones(addon):
    """A rig laid out as the FLAME add-on builds it (keys Exp000.., bones in quaternion mode, Blender's default for
    new bones): every Exp key is listed and each bone shows its quaternion."""
    with np.load(BUILTIN_HEAD) as z:
        arrays = {k: z[k] for k in ("v_template", "faces", "shapedirs", "exprdirs", "posedirs", "J_regressor",
                                    "weights")}
    arm, mesh = flame_addon_rig(arrays)
    bpy.context.view_layer.objects.active = arm
    n_rows, rows = _expression_rows(mesh)
    assert [key for key, _ in rows] == [f"Exp{k:03d}" for k in range(arrays["exprdirs"].shape[2])]
    assert all(key == text for key, text in rows) and n_rows == len(rows)
    shown = [(args[0], args[1], kwargs.get("text")) for name, args, kwargs in _draw_all()
             if name == "prop" and len(args) > 1 and args[1].startswith("rotation_")]
    assert shown == [(arm.pose.bones[b], "rotation_quaternion", b) for b in ("jaw", "left_eye", "right_eye", "neck")]
