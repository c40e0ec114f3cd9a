"""The "Next3D" tab of the 3D viewport's sidebar: Model, Rig, Avatar, Render, Mesh. Panels only lay out."""

import bpy
from bpy.types import Panel, UIList

from . import runner
from .preferences import draw_model_settings, get_preferences
from .rig import EXPR_PREFIX, is_key_of, keys_of

ROTATION_PROPERTY = {"QUATERNION": "rotation_quaternion", "AXIS_ANGLE": "rotation_axis_angle"}   # else Euler
EXPRESSION_ROWS = 16


class _Next3DPanel:
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Next3D"


def _rig_of(context):
    """The rig the editing operators act on (operators.editing_rig), or None."""
    from .operators import editing_rig

    try:
        return editing_rig(context)
    except Exception:  # noqa: BLE001 - drawing must never fail; no rig simply shows less
        return None


def _job_status(layout, kinds=None) -> None:
    task = runner.active_task()
    if task is None or (kinds is not None and task.kind not in kinds):
        return
    box = layout.box()
    if not task.finished:
        row = box.row()
        row.label(text=task.status, icon="RENDER_ANIMATION")
        if task.total:
            box.progress(factor=task.done / max(task.total, 1), text=f"{task.done} / {task.total}")
        box.operator("next3d.cancel_job", icon="CANCEL")
    elif task.error:
        box.label(text=task.error[:120], icon="ERROR")
    else:
        box.label(text=task.status, icon="CHECKMARK")


class NEXT3D_UL_expression_keys(UIList):
    """The rig's expression keys (Exp followed by a digit, whatever their numbering and names), with sliders."""

    def draw_item(self, context, layout, data, item, icon, active_data, active_propname, index):
        layout.prop(item, "value", text=item.name, slider=True)

    def filter_items(self, context, data, propname):
        keys = getattr(data, propname)
        by_name = bpy.types.UI_UL_list.filter_items_by_name(self.filter_name, self.bitflag_filter_item, keys, "name")
        flags = [(by_name[i] if by_name else self.bitflag_filter_item) if is_key_of(kb.name, EXPR_PREFIX) else 0
                 for i, kb in enumerate(keys)]
        return flags, []


class NEXT3D_PT_model(_Next3DPanel, Panel):
    bl_label = "Model"

    def draw(self, context):
        prefs = get_preferences(context)
        if hasattr(prefs, "bl_rna"):
            draw_model_settings(self.layout, prefs)
        else:
            self.layout.label(text="Bundled default model")
        self.layout.operator("next3d.release_worker", icon="X")


class NEXT3D_PT_rig(_Next3DPanel, Panel):
    bl_label = "Rig"

    def draw(self, context):
        layout = self.layout
        layout.operator("next3d.add_head", icon="MONKEY")
        the_rig = _rig_of(context)
        if the_rig is None or the_rig.mesh.data.shape_keys is None:
            layout.label(text="Select a FLAME rig to edit it", icon="INFO")
            return
        layout.label(text=f"Rig: {the_rig.name}", icon="ARMATURE_DATA")
        layout.prop(the_rig.mesh.next3d, "is_head")
        row = layout.row(align=True)
        row.operator("next3d.random_shape", icon="MOD_NOISE")
        row.operator("next3d.reset_shape", text="Reset Shape")
        layout.operator("next3d.reset_expression", icon="LOOP_BACK")
        n_expr = len(keys_of(the_rig.mesh, EXPR_PREFIX))
        layout.label(text=f"Expression ({n_expr})")
        # every key in view up to EXPRESSION_ROWS (the built-in head's 16); longer lists (FLAME's 100) scroll/filter
        rows = max(1, min(n_expr, EXPRESSION_ROWS))
        layout.template_list("NEXT3D_UL_expression_keys", "", the_rig.mesh.data.shape_keys, "key_blocks",
                             the_rig.mesh, "active_shape_key_index", rows=rows, maxrows=rows)
        if the_rig.armature is not None:
            col = layout.column(align=True)
            col.label(text="Pose (keyframe these)")
            for name in ("jaw", "left_eye", "right_eye", "neck"):
                pb = the_rig.armature.pose.bones.get(name)
                if pb is not None:
                    col.prop(pb, ROTATION_PROPERTY.get(pb.rotation_mode, "rotation_euler"), text=name)


class NEXT3D_PT_avatar(_Next3DPanel, Panel):
    bl_label = "Avatar"

    def draw(self, context):
        layout = self.layout
        settings = context.scene.next3d
        col = layout.column()
        col.prop(settings, "avatar_source", expand=True)
        if settings.avatar_source == "PHOTO":
            col.prop(settings, "avatar_folder")
        else:
            col.prop(settings, "seed")
            col.prop(settings, "truncation_psi")
        col.prop(settings, "sample_seed")
        layout.operator("next3d.avatar_from_photo", icon="FILE_IMAGE")
        _job_status(layout, kinds=("invert",))
        layout.operator("next3d.render_frame", text="Preview Current Frame", icon="IMAGE_DATA")
        image = bpy.data.images.get("Next3D Render")
        if image is not None and image.preview is not None:
            layout.template_icon(icon_value=image.preview.icon_id, scale=8.0)


class NEXT3D_PT_render(_Next3DPanel, Panel):
    bl_label = "Render"

    def draw(self, context):
        layout = self.layout
        scene = context.scene
        settings = scene.next3d
        layout.operator("next3d.render_frame", icon="RENDER_STILL")
        col = layout.column()
        col.prop(settings, "head")
        col.prop(settings, "frame_source")
        row = col.row(align=True)
        row.prop(scene, "frame_start")
        row.prop(scene, "frame_end")
        # Blender's own Output properties: the render engine writes through them.
        col.prop(scene.render.image_settings, "file_format")
        row = col.row(align=True)
        row.prop(scene.render, "use_overwrite")
        row.prop(scene.render, "use_placeholder")
        col.label(text=f"{scene.render.resolution_x} x {scene.render.resolution_y} px, "
                       f"{scene.render.fps / (scene.render.fps_base or 1):g} fps")
        col.prop(scene.render, "filepath", text="Output")
        layout.operator("next3d.render_animation", icon="RENDER_ANIMATION")
        _job_status(layout)


class NEXT3D_PT_mesh(_Next3DPanel, Panel):
    bl_label = "Mesh"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        layout = self.layout
        settings = context.scene.next3d
        layout.prop(settings, "mesh_frames")
        layout.prop(settings, "mesh_resolution")
        layout.prop(settings, "mesh_keep_background")       # docs/mesh_extraction.md#head-region
        layout.operator("next3d.extract_mesh", icon="MESH_DATA")


CLASSES = (NEXT3D_UL_expression_keys, NEXT3D_PT_model, NEXT3D_PT_rig, NEXT3D_PT_avatar, NEXT3D_PT_render,
           NEXT3D_PT_mesh)
