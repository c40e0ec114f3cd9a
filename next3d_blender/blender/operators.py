"""Operators: thin glue. Each reads what a job needs from Blender (scene.py, rig.py), builds the typed job
(engine/job_specs.py), hands it to runner.py (the engine runs it in engine/jobs.py), and writes the results back
(results.py). They catch only Next3DError (report ERROR, return CANCELLED); a job's warnings are reported as
WARNING. torch and the engine are never imported here.

Rendering has one path, Blender's render pipeline with the Next3D engine (render_engine.py): Render Frame and
Render Animation are shortcuts to render.render (F12 / Ctrl+F12, blocking under -b), which set the scene's engine
to Next3D; Frames = Keyframes renders each keyframe of the rig and the camera as a still, without a video.

Execution of the other jobs: in background mode (`blender -b`, or bpy as a module) mesh and photo operators run
synchronously and print progress; with a UI they start the job in the worker process and return at once (Esc or
Cancel stops it). The hidden `mode` property forces one or the other (tests drive the worker path with
mode='ASYNC' and call runner.drain() themselves, since timers never fire in module mode).
"""

import os
from pathlib import Path
from typing import List, Optional

import bpy
import numpy as np
from bpy.props import BoolProperty, EnumProperty, FloatProperty, IntProperty, StringProperty
from bpy.types import Operator

from ..core.errors import InputError, Next3DError
from ..engine.heads import DEFAULT_HEAD_NAME, head_arrays, head_names
from ..engine.job_specs import InvertJob, MeshJob
from . import rig, runner
from .preferences import get_preferences
from .results import MeshBuilder, apply_photo_avatar, store_image
from .scene import (cache_dir, check_writable, default_avatar_folder, find_head, head_spec, model_spec, prepare,
                    scene_camera)

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
            head = rig.find_rig(arm).mesh
            head.next3d.is_head = True
            context.scene.next3d.head = head
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

    def _finish_or_watch(self, context, task, warnings, stopped: str, done):
        """A job that already ended (under -b, or run at once): its reports, CANCELLED with `stopped` when it was
        cancelled, else FINISHED with done() (the message once the result is there). A running one: watched."""
        if not task.finished:
            return self._go_modal(context, task, warnings)
        report_task(self, task, warnings)
        if task.cancelled:
            self.report({"WARNING"}, stopped)
            return {"CANCELLED"}
        self.report({"INFO"}, done())
        return {"FINISHED"}

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


def _use_engine(op: Operator, scene) -> None:
    """The sidebar's render buttons render with the Next3D engine: the scene's engine is set to it."""
    from .render_engine import ENGINE_ID

    if scene.render.engine != ENGINE_ID:
        scene.render.engine = ENGINE_ID
        op.report({"INFO"}, "The scene's render engine is now Next3D (Render properties > Render Engine)")


def _render(op: Operator, synchronous_render: bool, **settings) -> bool:
    """bpy.ops.render.render: as Blender's F12 / Ctrl+F12 with a UI, blocking under -b; one line on failure."""
    try:
        if synchronous_render:
            result = bpy.ops.render.render(**settings)
        else:
            result = bpy.ops.render.render("INVOKE_DEFAULT", **settings)
    except RuntimeError as exc:
        op.report({"ERROR"}, str(exc).replace("Error: ", "", 1).strip())
        return False
    if synchronous_render and "CANCELLED" not in result:
        from .render_engine import STATS

        op.report({"INFO"}, f"Next3D: {STATS['frames']} frame(s), {STATS['rendered']} head image(s) rendered, "
                  f"{STATS['kept']} kept from the cache")
    return "CANCELLED" not in result


def camera_keyframe_numbers(scene) -> List[int]:
    """Frames where the scene camera (its object or its lens data) has keyframes."""
    cam = scene.camera
    frames = set()
    for src in ((cam, cam.data) if cam is not None else ()):
        for fc in rig.fcurves_of(src):
            frames.update(int(round(kp.co[0])) for kp in fc.keyframe_points)
    return sorted(frames)


class NEXT3D_OT_render_frame(Operator):
    """Render the current frame with the Next3D render engine into Render Result (F12: the scene's engine is set to
    Next3D) and, under -b, into the image 'Next3D Render' (the sidebar's preview)"""

    bl_idname = "next3d.render_frame"
    bl_label = "Render Frame"
    bl_options = {"REGISTER"}

    mode: EnumProperty(items=MODES, default="AUTO", options={"HIDDEN", "SKIP_SAVE"})

    def execute(self, context):
        try:
            scene_camera(context.scene)         # Blender's own message would not say how to fix it
        except Next3DError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        _use_engine(self, context.scene)
        sync = synchronous(self.mode)
        if not _render(self, sync):
            return {"CANCELLED"}
        if sync:
            # Render Result's pixels are not readable from Python: the engine's frame becomes 'Next3D Render', the
            # sidebar's preview.
            from .render_engine import LAST_FRAME, preview_pixels

            if LAST_FRAME.get("number") == context.scene.frame_current:
                store_image({"number": LAST_FRAME["number"]}, {"pixels": preview_pixels(LAST_FRAME["rgba"])})
        return {"FINISHED"}


class NEXT3D_OT_render_animation(Operator):
    """Render the animation with the Next3D render engine and the scene's Output properties (Ctrl+F12: path,
    file format, frame range and step, Overwrite, Placeholders); with Frames = Keyframes, only the frames where the
    rig or the camera has keyframes, as still images"""

    bl_idname = "next3d.render_animation"
    bl_label = "Render Animation"
    bl_options = {"REGISTER"}

    mode: EnumProperty(items=MODES, default="AUTO", options={"HIDDEN", "SKIP_SAVE"})
    frame_start: IntProperty(name="Start", description="First frame (-1: the scene's start)", default=-1, min=-1)
    frame_end: IntProperty(name="End", description="Last frame (-1: the scene's end)", default=-1, min=-1)
    frame_source: EnumProperty(name="Frames", items=(("SCENE", "Scene Setting", "As set in the Render panel"),
                                                     ("RANGE", "Frame Range", "Every frame of the range"),
                                                     ("KEYFRAMES", "Keyframes", "Frames with keyframes on the rig "
                                                      "or the camera, as still images (no video)")),
                               default="SCENE", options={"SKIP_SAVE"})

    def execute(self, context):
        scene = context.scene
        first = self.frame_start if self.frame_start >= 0 else scene.frame_start
        last = self.frame_end if self.frame_end >= 0 else scene.frame_end
        try:
            if first > last:
                raise InputError(f"The frame range {first}-{last} is empty; the start must not be after the end.")
            source = scene.next3d.frame_source if self.frame_source == "SCENE" else self.frame_source
            if source == "KEYFRAMES":
                return self._keyframes(context, first, last)
        except Next3DError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        try:
            scene_camera(scene)
            check_writable(Path(scene.render.frame_path(frame=first)).parent)
        except Next3DError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        _use_engine(self, scene)
        sync = synchronous(self.mode)
        if not sync or (self.frame_start < 0 and self.frame_end < 0):
            return {"FINISHED"} if _render(self, sync, animation=True) else {"CANCELLED"}
        before = scene.frame_start, scene.frame_end
        try:
            scene.frame_start, scene.frame_end = first, last
            ok = _render(self, True, animation=True)
        finally:
            scene.frame_start, scene.frame_end = before
        return {"FINISHED"} if ok else {"CANCELLED"}

    def _keyframes(self, context, first: int, last: int):
        """Every keyframe of the rig or the camera in first..last as a still at Blender's path for its frame
        (Overwrite honoured). No video: a handful of keyframes would flash by in a fraction of a second."""
        scene = context.scene
        the_rig = find_head(context)
        numbers = rig.frames_in_range(sorted(set(rig.keyframe_numbers(the_rig))
                                             | set(camera_keyframe_numbers(scene))), first, last)
        if not numbers:
            raise InputError(f"The rig {the_rig.name!r} and the camera have no keyframes in frames {first}-{last}; "
                             "keyframe them or render the frame range instead.")
        if scene.render.is_movie_format:
            raise InputError("Frames = Keyframes writes still images, not a video; choose an image file format "
                             "(Output properties > File Format), or render the frame range.")
        check_writable(Path(scene.render.frame_path(frame=numbers[0])).parent)
        _use_engine(self, scene)
        raw_path, original = scene.render.filepath, scene.frame_current
        written = kept = 0
        try:
            for number in numbers:
                path = scene.render.frame_path(frame=number)
                if not scene.render.use_overwrite and os.path.exists(path):
                    kept += 1
                    continue
                scene.frame_set(number)
                scene.render.filepath = path
                if not _render(self, True, write_still=True):
                    return {"CANCELLED"}
                scene.render.filepath = raw_path
                written += 1
        finally:
            scene.render.filepath = raw_path
            scene.frame_set(original)
        self.report({"INFO"}, f"Rendered {written} keyframe(s)" + (f"; {kept} already on disk (Overwrite is off)"
                                                                   if kept else ""))
        return {"FINISHED"}


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

    filepath: StringProperty(name="Portrait", description="A photo (PNG or JPEG) with the face to turn into an avatar",
                             subtype="FILE_PATH")
    filter_image: BoolProperty(default=True, options={"HIDDEN", "SKIP_SAVE"})
    filter_folder: BoolProperty(default=True, options={"HIDDEN", "SKIP_SAVE"})
    directory_out: StringProperty(name="Avatar Folder", description="Where the avatar is written (empty: beside "
                                  "the .blend in next3d_avatars/, or the extension's user folder)",
                                  subtype="DIR_PATH", options={"SKIP_SAVE"})
    latent_steps: IntProperty(name="Latent Steps", description="Steps optimising the latent (the paper: 450)",
                              default=450, min=0, max=5000)
    tune_steps: IntProperty(name="Tuning Steps", description="Steps fine-tuning the model (the paper: 500)",
                            default=500, min=0, max=5000)
    face: IntProperty(name="Face", description="Which face of a photo with several, numbered from 1 left to right "
                      "(0: the largest)", default=0, min=0, max=999)
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
                            face=int(self.face), latent_steps=int(self.latent_steps), tune_steps=int(self.tune_steps),
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
        return self._finish_or_watch(context, task, [], "Avatar from photo: stopped; nothing was written",
                                     lambda: f"Avatar written to {task.summary.get('out_dir')} "
                                             f"(PSNR {task.summary.get('psnr', 0.0):.1f} dB)")


# ------------------------------------------------------------------------------------------------ meshes

class NEXT3D_OT_extract_mesh(_JobOperator, Operator):
    """Extract the avatar's surface near the head as a mesh with vertex colours, parented to the rig and shown on its
    frame only (the current frame, or one per keyframe); extracting a frame again replaces its mesh"""

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
            job = frames.job(MeshJob, resolution=int(scene.next3d.mesh_resolution),
                             keep_background=bool(scene.next3d.mesh_keep_background))
            builder = MeshBuilder(scene, frames.rig, frames.heads)
            task = runner.Task(job, frames.arrays, "Extract mesh", on_mesh=builder.add)
            runner.start(task, frames.prefs, synchronous(self.mode))
        except Next3DError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        return self._finish_or_watch(context, task, frames.warnings, "Extract mesh: stopped",
                                     lambda: f"Extracted {len(builder.objects)} mesh(es), {len(builder.replaced)} "
                                             "replacing earlier ones")


CLASSES = (NEXT3D_OT_add_head, NEXT3D_OT_reset_expression, NEXT3D_OT_reset_shape, NEXT3D_OT_random_shape,
           NEXT3D_OT_render_frame, NEXT3D_OT_render_animation, NEXT3D_OT_cancel_job, NEXT3D_OT_release_worker,
           NEXT3D_OT_extract_mesh, NEXT3D_OT_avatar_from_photo)
