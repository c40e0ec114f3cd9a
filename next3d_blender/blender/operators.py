"""Operators: thin glue. Each reads what a job needs from Blender (scene.py, rig.py), builds the typed job
(engine/job_specs.py), hands it to runner.py (the engine runs it in engine/jobs.py), and writes the results back
(results.py). They catch only Next3DError (report ERROR, return CANCELLED); a job's warnings are reported as
WARNING. torch and the engine are never imported here.

Execution: in background mode (`blender -b`, or bpy as a module) render and mesh operators run synchronously and
print progress; with a UI they start the job in the worker process and return at once (Esc or Cancel stops it).
The hidden `mode` property forces one or the other (tests drive the worker path with mode='ASYNC' and call
runner.drain() themselves, since timers never fire in module mode).
"""

import os
from pathlib import Path
from typing import List, Optional, Tuple

import bpy
import numpy as np
from bpy.props import BoolProperty, EnumProperty, FloatProperty, IntProperty, StringProperty
from bpy.types import Operator

from ..core.errors import InputError, Next3DError
from ..engine.heads import DEFAULT_HEAD_NAME, head_arrays, head_names
from ..engine.job_specs import InvertJob, MeshJob, PreviewJob, RenderJob
from . import rig, runner
from .preferences import get_preferences
from .results import RENDER_IMAGE, MeshBuilder, apply_photo_avatar, store_image
from .scene import (cache_dir, check_writable, default_avatar_folder, find_head, head_spec, model_spec, output_dir,
                    prepare)

MODES = (("AUTO", "Auto", "Synchronous in background mode, in the worker with a UI"),
         ("SYNC", "Synchronous", "Block until done"),
         ("ASYNC", "Worker", "Run in the worker process and return at once"))


# ------------------------------------------------------------------------------------------------ helpers

def synchronous(mode: str) -> bool:
    return mode == "SYNC" or (mode == "AUTO" and bpy.app.background)


def report_task(op: Operator, task: runner.Task, extra_warnings: List[str]) -> None:
    for w in extra_warnings + task.warnings:
        op.report({"WARNING"}, w)


# ------------------------------------------------------------------------------------------------ rig

class NEXT3D_OT_add_head(Operator):
    """Add a head of the chosen model's topology (FLAME, from the FLAME model set in the preferences, or the
    built-in head for the bundled model): a mesh with shape keys (shape, expression, bone-driven pose correctives)
    on an armature with the bones root, neck, jaw, left_eye and right_eye, at the 3D cursor. It becomes the scene's
    rendered head"""

    bl_idname = "next3d.add_head"
    bl_label = "Add FLAME Head"
    bl_options = {"REGISTER", "UNDO"}

    add_camera: BoolProperty(name="Add Camera", description="Add a camera framed like the training data and make "
                             "it the scene camera, when the scene has none", default=True)

    @classmethod
    def poll(cls, context):
        if context.mode != "OBJECT":
            cls.poll_message_set("Switch to Object Mode to add a head")
            return False
        return True

    def execute(self, context):
        try:
            spec = head_spec(get_preferences(context))
            arrays = head_arrays(spec, cache_dir=cache_dir() or None)
            name = DEFAULT_HEAD_NAME if spec.kind == "default" else Path(spec.model_path).stem
            arm = rig.build_rig(context, arrays, name, add_camera=self.add_camera and context.scene.camera is None,
                                names=head_names(spec))
            context.scene.next3d.head = rig.find_rig(arm).mesh
        except Next3DError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        self.report({"INFO"}, f"Added a FLAME head ({name})")
        return {"FINISHED"}


def editing_rig(context) -> rig.Rig:
    """The rig editing operators act on: the selected one (as Blender's own operators), else the scene's head."""
    try:
        return rig.find_rig(context.active_object)
    except Next3DError as exc:
        try:
            return find_head(context)
        except Next3DError:
            raise exc from None


def _rig_or_report(op: Operator, context) -> Optional[rig.Rig]:
    try:
        return editing_rig(context)
    except Next3DError as exc:
        op.report({"ERROR"}, str(exc))
        return None


def _autokey_frame(context) -> Optional[int]:
    return context.scene.frame_current if context.scene.tool_settings.use_keyframe_insert_auto else None


class NEXT3D_OT_reset_expression(Operator):
    """Set every expression key (Exp*) to 0 and the jaw and eyes to rest"""

    bl_idname = "next3d.reset_expression"
    bl_label = "Reset Expression"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        the_rig = _rig_or_report(self, context)
        if the_rig is None:
            return {"CANCELLED"}
        frame = _autokey_frame(context)
        rig.set_key_values(the_rig.mesh, rig.EXPR_PREFIX, None, frame)
        if the_rig.armature is not None:
            rig.reset_bones(the_rig.armature, ("jaw", "left_eye", "right_eye"), frame)
        return {"FINISHED"}


class NEXT3D_OT_reset_shape(Operator):
    """Set every identity key (Shape*) to 0: the average head"""

    bl_idname = "next3d.reset_shape"
    bl_label = "Reset Shape"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        the_rig = _rig_or_report(self, context)
        if the_rig is None:
            return {"CANCELLED"}
        rig.set_key_values(the_rig.mesh, rig.SHAPE_PREFIX, None, _autokey_frame(context))
        return {"FINISHED"}


class NEXT3D_OT_random_shape(Operator):
    """Draw a random identity: every Shape* key from a normal distribution"""

    bl_idname = "next3d.random_shape"
    bl_label = "Random Shape"
    bl_options = {"REGISTER", "UNDO"}

    seed: IntProperty(name="Seed", default=0, min=0)
    scale: FloatProperty(name="Spread", description="Standard deviation of the coefficients", default=1.0, min=0.0,
                         max=3.0)

    def execute(self, context):
        the_rig = _rig_or_report(self, context)
        if the_rig is None:
            return {"CANCELLED"}
        n = rig.key_counts(the_rig.mesh)[rig.SHAPE_PREFIX]
        values = np.random.default_rng(self.seed).normal(0.0, self.scale, n)
        rig.set_key_values(the_rig.mesh, rig.SHAPE_PREFIX, values, _autokey_frame(context))
        return {"FINISHED"}


# ------------------------------------------------------------------------------------------------ rendering

class _JobOperator:
    mode: EnumProperty(items=MODES, default="AUTO", options={"HIDDEN", "SKIP_SAVE"})

    @classmethod
    def poll(cls, context):
        if runner.is_busy():
            cls.poll_message_set("A Next3D job is running; wait for it or cancel it")
            return False
        if context.scene is None:
            return False
        return True

    _timer = None
    _task = None
    _warnings = ()

    # With a UI: watch for Esc and report the job's outcome when it ends.
    def _go_modal(self, context, task, warnings):
        self._task, self._warnings = task, warnings
        wm = context.window_manager
        if context.window is None or bpy.app.background:
            return {"FINISHED"}
        self._timer = wm.event_timer_add(0.25, window=context.window)
        wm.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        task = self._task
        if event.type == "ESC" and event.value == "PRESS":
            runner.cancel()
            return {"RUNNING_MODAL"}
        if task is None or not task.finished:
            return {"PASS_THROUGH"}
        context.window_manager.event_timer_remove(self._timer)
        report_task(self, task, self._warnings)
        if task.error:
            self.report({"ERROR"}, task.error)
            return {"CANCELLED"}
        self.report({"INFO"}, task.status)
        return {"FINISHED"}


class NEXT3D_OT_render_frame(_JobOperator, Operator):
    """Render the avatar at the current frame into the image 'Next3D Render' (shown in the Image Editor)"""

    bl_idname = "next3d.render_frame"
    bl_label = "Render Frame"
    bl_options = {"REGISTER"}

    def execute(self, context):
        try:
            frames = prepare(context)
            task = runner.Task(frames.job(PreviewJob), frames.arrays, "Render frame", on_image=store_image)
            runner.start(task, frames.prefs, synchronous(self.mode))
        except Next3DError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        if task.finished:
            report_task(self, task, frames.warnings)
            self.report({"INFO"}, f"Rendered frame {context.scene.frame_current} into '{RENDER_IMAGE}'")
            return {"FINISHED"}
        return self._go_modal(context, task, frames.warnings)


class NEXT3D_OT_render_animation(_JobOperator, Operator):
    """Render the avatar for every frame of the range (or every keyframe of the rig) into the scene's output
    folder as PNGs plus an MP4; frames already on disk are kept, so a stopped render resumes"""

    bl_idname = "next3d.render_animation"
    bl_label = "Render Animation"
    bl_options = {"REGISTER"}

    frame_start: IntProperty(name="Start", description="First frame (-1: the scene's start)", default=-1, min=-1)
    frame_end: IntProperty(name="End", description="Last frame (-1: the scene's end)", default=-1, min=-1)
    frame_source: EnumProperty(name="Frames", items=(("SCENE", "Scene Setting", "As set in the Render panel"),
                                                     ("RANGE", "Frame Range", "Every frame of the range"),
                                                     ("KEYFRAMES", "Keyframes", "Frames with keyframes on the rig")),
                               default="SCENE", options={"SKIP_SAVE"})

    def _numbers(self, context, the_rig) -> Tuple[List[int], int, int, bool]:
        scene = context.scene
        first = self.frame_start if self.frame_start >= 0 else scene.frame_start
        last = self.frame_end if self.frame_end >= 0 else scene.frame_end
        if first > last:
            raise InputError(f"The frame range {first}-{last} is empty; the start must not be after the end.")
        source = scene.next3d.frame_source if self.frame_source == "SCENE" else self.frame_source
        if source == "KEYFRAMES":
            keys = rig.keyframe_numbers(the_rig)
            numbers = rig.frames_in_range(keys, first, last)
            if not numbers:
                raise InputError(f"The rig {the_rig.name!r} has no keyframes in frames {first}-{last}; keyframe it "
                                 "or render the frame range instead.")
            return numbers, numbers[0], numbers[-1], True
        return list(range(first, last + 1)), scene.frame_start if self.frame_start < 0 else first, \
            scene.frame_end if self.frame_end < 0 else last, False

    def execute(self, context):
        scene = context.scene
        try:
            the_rig = find_head(context)
            numbers, seq_first, seq_last, keyframes_only = self._numbers(context, the_rig)
            # The whole scene range is the sequence a video covers, so split renders (render farms) assemble it.
            if not keyframes_only:
                seq_first, seq_last = min(scene.frame_start, numbers[0]), max(scene.frame_end, numbers[-1])
            folder = output_dir(scene)
            check_writable(folder)
            frames = prepare(context, numbers, the_rig)
            fps = scene.render.fps / (scene.render.fps_base or 1.0)
            job = frames.job(RenderJob, out_dir=str(folder), overwrite=bool(scene.next3d.overwrite),
                             write_video=bool(scene.next3d.write_video), fps=fps, sequence_first=seq_first,
                             sequence_last=seq_last, keyframes_only=keyframes_only)
            task = runner.Task(job, frames.arrays, "Render animation")
            runner.start(task, frames.prefs, synchronous(self.mode))
        except Next3DError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        if task.finished:
            report_task(self, task, frames.warnings)
            if task.cancelled:
                self.report({"WARNING"}, task.status)
                return {"CANCELLED"}
            s = task.summary
            self.report({"INFO"}, f"Wrote {len(s.get('written', []))} frame(s) to {s.get('out_dir')}"
                        + (f" and {Path(s['video']).name}" if s.get("video") else ""))
            return {"FINISHED"}
        return self._go_modal(context, task, frames.warnings)


class NEXT3D_OT_cancel_job(Operator):
    """Stop the running Next3D job after the current frame (frames on disk are kept; render again to resume)"""

    bl_idname = "next3d.cancel_job"
    bl_label = "Cancel"
    bl_options = {"REGISTER"}

    @classmethod
    def poll(cls, context):
        if not runner.is_busy():
            cls.poll_message_set("No Next3D job is running")
            return False
        return True

    def execute(self, context):
        runner.cancel()
        self.report({"INFO"}, "Stopping after the current frame")
        return {"FINISHED"}


class NEXT3D_OT_release_worker(Operator):
    """Stop the engine's worker process (frees its memory; the next job starts a new one)"""

    bl_idname = "next3d.release_worker"
    bl_label = "Release Worker"
    bl_options = {"REGISTER"}

    @classmethod
    def poll(cls, context):
        if runner.is_busy():
            cls.poll_message_set("A Next3D job is running")
            return False
        return True

    def execute(self, context):
        runner.shutdown()
        return {"FINISHED"}


# ------------------------------------------------------------------------------------------------ photo

class NEXT3D_OT_avatar_from_photo(_JobOperator, Operator):
    """Make a one-shot avatar from a portrait photo: detect the face, fit FLAME and the camera, then tune the model
    to the photo (pivotal tuning). The scene's avatar becomes the result; with a rig selected, its shape keys take
    the fitted face shape"""

    bl_idname = "next3d.avatar_from_photo"
    bl_label = "Avatar from Photo"
    bl_options = {"REGISTER", "UNDO"}

    filepath: StringProperty(name="Portrait", description="A photo with one face (PNG or JPEG)", subtype="FILE_PATH")
    filter_image: BoolProperty(default=True, options={"HIDDEN", "SKIP_SAVE"})
    filter_folder: BoolProperty(default=True, options={"HIDDEN", "SKIP_SAVE"})
    directory_out: StringProperty(name="Avatar Folder", description="Where the avatar is written (empty: beside "
                                  "the .blend in next3d_avatars/, or the extension's user folder)",
                                  subtype="DIR_PATH", options={"SKIP_SAVE"})
    latent_steps: IntProperty(name="Latent Steps", description="Steps optimising the latent (the paper: 450)",
                              default=450, min=0, max=5000)
    tune_steps: IntProperty(name="Tuning Steps", description="Steps fine-tuning the model (the paper: 500)",
                            default=500, min=0, max=5000)
    apply_shape: BoolProperty(name="Apply Face Shape", description="Set the selected rig's shape keys to the "
                              "fitted FLAME shape", default=True)
    overwrite: BoolProperty(name="Overwrite", description="Replace an avatar already in the folder", default=False,
                            options={"SKIP_SAVE"})

    def invoke(self, context, event):
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context):
        scene = context.scene
        try:
            image_path = bpy.path.abspath(self.filepath)
            if not image_path or not os.path.isfile(image_path):
                raise InputError(f"The portrait {image_path or '(none)'!r} does not exist; choose a photo file.")
            folder = Path(bpy.path.abspath(self.directory_out)) if self.directory_out else \
                default_avatar_folder(image_path)
            check_writable(folder)
            prefs = get_preferences(context)
            spec = head_spec(prefs)
            model = model_spec(prefs)
            job = InvertJob(model=model, head=spec, cache_dir=cache_dir(), image_path=image_path, out_dir=str(folder),
                            latent_steps=int(self.latent_steps), tune_steps=int(self.tune_steps),
                            seed=int(scene.next3d.seed), overwrite=bool(self.overwrite),
                            vgg16_path=bpy.path.abspath(prefs.vgg16_path) if prefs.vgg16_path else "",
                            lpips_path=bpy.path.abspath(prefs.lpips_path) if prefs.lpips_path else "",
                            threads=int(prefs.threads))
            target_rig = None
            if self.apply_shape:
                try:
                    target_rig = editing_rig(context)
                except Next3DError:
                    target_rig = None
            rig_name = target_rig.mesh.name if target_rig is not None else ""
            scene_name = scene.name

            def on_done(task: runner.Task) -> None:
                # Runs on the main thread when the job ends (at once under -b, from the timer with a UI).
                if task.error or task.cancelled or not task.summary.get("out_dir"):
                    return
                apply_photo_avatar(bpy.data.scenes.get(scene_name), task.summary, bpy.data.objects.get(rig_name))

            task = runner.Task(job, {}, "Avatar from photo", on_done=on_done)
            runner.start(task, prefs, synchronous(self.mode))
        except Next3DError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        if task.finished:
            report_task(self, task, [])
            if task.cancelled:
                self.report({"WARNING"}, "Avatar from photo: stopped; nothing was written")
                return {"CANCELLED"}
            self.report({"INFO"}, f"Avatar written to {task.summary.get('out_dir')} "
                        f"(PSNR {task.summary.get('psnr', 0.0):.1f} dB)")
            return {"FINISHED"}
        return self._go_modal(context, task, [])


# ------------------------------------------------------------------------------------------------ meshes

class NEXT3D_OT_extract_mesh(_JobOperator, Operator):
    """Extract the avatar's surface as a mesh with vertex colours, placed on the head (current frame, or one per
    keyframe in a collection whose objects show only on their frame)"""

    bl_idname = "next3d.extract_mesh"
    bl_label = "Extract Mesh"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        scene = context.scene
        try:
            the_rig = find_head(context)
            if scene.next3d.mesh_frames == "KEYFRAMES":
                numbers = rig.keyframe_numbers(the_rig)
                if not numbers:
                    raise InputError(f"The rig {the_rig.name!r} has no keyframes; keyframe it or extract at the "
                                     "current frame.")
            else:
                numbers = [scene.frame_current]
            frames = prepare(context, numbers, the_rig)
            job = frames.job(MeshJob, resolution=int(scene.next3d.mesh_resolution))
            builder = MeshBuilder(scene, frames.rig, frames.heads, sequence=len(numbers) > 1)
            task = runner.Task(job, frames.arrays, "Extract mesh", on_mesh=builder.add)
            runner.start(task, frames.prefs, synchronous(self.mode))
        except Next3DError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        if task.finished:
            report_task(self, task, frames.warnings)
            self.report({"INFO"}, f"Extracted {len(builder.objects)} mesh(es)")
            return {"FINISHED"}
        return self._go_modal(context, task, frames.warnings)


CLASSES = (NEXT3D_OT_add_head, NEXT3D_OT_reset_expression, NEXT3D_OT_reset_shape, NEXT3D_OT_random_shape,
           NEXT3D_OT_render_frame, NEXT3D_OT_render_animation, NEXT3D_OT_cancel_job, NEXT3D_OT_release_worker,
           NEXT3D_OT_extract_mesh, NEXT3D_OT_avatar_from_photo)
