"""The sidebar tab: every panel registers in the "Next3D" tab of the 3D viewport and draws without errors, with and
without a rig and while a job runs (a recording stand-in for UILayout, since module mode has no UI to draw)."""

import types

import bpy

from n3d_helpers import make_scene, submodule


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
    for cls in panels.CLASSES:
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
