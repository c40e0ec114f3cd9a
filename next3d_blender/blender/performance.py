"""Import Performance: a face video, a folder of images, a Live Link Face CSV or an animation file keyframes a FLAME
rig (docs/capture.md#in-blender).

A clip is tracked by the engine (engine/performance_job.py's "track" job: core.capture.track_clip, in the worker
with a UI) into an animation .npz kept on disk; an animation .npz or .json is read here directly (numpy only:
engine/performance_job.read_animation). Either way the animation is then keyed onto the rig as an animator would
key it by hand: ordinary F-curve keys on the shape key values and the pose bones' rotations, one per scene frame
from the current frame, the animation resampled from its frame rate to the scene's.

FLAME parameters -> the rig's channels, for both kinds of rig the add-on renders (rig.py's built-in layout and the
FLAME Blender add-on's, see tests/blender/test_official_rig.py):
* expression coefficients -> the Exp keys in the rig's order, the shared shape -> the Shape keys (optional);
* global rotation -> the root bone, neck, jaw, left and right eye -> the bones of those names. In both layouts a
  bone's rest axes are FLAME's axes (rig.py's bones point along +y with zero roll in FLAME-space data; the FLAME
  add-on's along +z in z-up data), so a pose rotation is FLAME's axis-angle of that joint, written in the bone's
  own rotation mode (Euler kept continuous, quaternions kept on one side);
* pose correctives (Pose keys, FLAME's R - I of neck, jaw and eyes) are keyed only where no driver sets them: the
  FLAME add-on's rigs have plain Pose keys, rig.py's drive theirs from the bones.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import bpy
import numpy as np
from bpy.props import BoolProperty, FloatProperty, IntProperty, StringProperty
from bpy.types import Operator, Panel

from ..core.errors import InputError, Next3DError
from ..engine.heads import head_info
from ..engine.performance_job import LIVE_LINK_SUFFIX, Animation, TrackJob, coefficient_notes, read_animation, resample
from . import ADDON_PACKAGE, rig, runner
from .operators import _JobOperator, synchronous
from .preferences import get_preferences
from .scene import cache_dir, check_writable, head_spec

ROTATION_PATHS = {"QUATERNION": "rotation_quaternion", "AXIS_ANGLE": "rotation_axis_angle"}    # else Euler
# (bone, FLAME field, first column): FLAME's joints as the bones of both rig layouts name them.
BONE_FIELDS = (("root", "global_rotation", 0), ("neck", "neck", 0), ("jaw", "jaw", 0), ("left_eye", "eyes", 0),
               ("right_eye", "eyes", 3))
# The pose feature's joints (rig.POSED_JOINTS) as (FLAME field, first column).
POSED_FIELDS = (("neck", 0), ("jaw", 0), ("eyes", 0), ("eyes", 3))
ANIMATION_SUFFIX = ".npz"
FILE_FILTER = "*.npz;*.json;*.csv;*.mp4;*.mov;*.m4v;*.avi;*.mkv;*.webm;*.png;*.jpg;*.jpeg"


# ------------------------------------------------------------------------------------------------ the rig

def selected_rigs(context) -> List[rig.Rig]:
    """The FLAME rigs among the selected objects (an armature and its head mesh count once)."""
    found: Dict[str, rig.Rig] = {}
    for obj in context.view_layer.objects:
        if not obj.select_get():
            continue
        if obj.type == "MESH" and rig.looks_like_head(obj):
            the_rig = rig.rig_of_mesh(obj)
        elif obj.type == "ARMATURE":
            try:
                the_rig = rig.find_rig(obj)
            except InputError:
                continue
            if not rig.looks_like_head(the_rig.mesh):
                continue
        else:
            continue
        found[the_rig.mesh.name] = the_rig
    return list(found.values())


def performance_rig(context, target: str = "") -> rig.Rig:
    """The rig to key: the object named `target`, else the one selected rig, else the scene's Head (Next3D >
    Render > Head); InputError in one line when none is, or several are, selected."""
    if target:
        obj = bpy.data.objects.get(target)
        if obj is None:
            raise InputError(f"There is no object {target!r} to animate; give the name of a FLAME rig's armature or "
                             "head mesh.")
        return rig.find_rig(obj)
    rigs = selected_rigs(context)
    if len(rigs) > 1:
        names = ", ".join(repr(r.name) for r in rigs[:4]) + (" ..." if len(rigs) > 4 else "")
        raise InputError(f"{len(rigs)} FLAME rigs are selected ({names}); select only the one to animate.")
    if rigs:
        return rigs[0]
    head = context.scene.next3d.head
    if head is not None and head.type == "MESH":
        return rig.rig_of_mesh(head)
    raise InputError("No FLAME rig is selected. Select the rig to animate (its armature or head mesh), or add one "
                     "with Next3D > Rig > Add FLAME Head.")


# ------------------------------------------------------------------------------------------------ rotations

def _quaternions(rotvecs: np.ndarray) -> list:
    """Axis-angle rows -> mathutils Quaternions, each on the side of the previous one (no flips)."""
    from mathutils import Quaternion, Vector

    out = []
    for row in rotvecs:
        v = Vector(tuple(float(x) for x in row))
        q = Quaternion(v.normalized(), v.length) if v.length > 1e-12 else Quaternion()
        if out and out[-1].dot(q) < 0:
            q.negate()
        out.append(q)
    return out


def rotation_channels(mode: str, rotvecs: np.ndarray) -> np.ndarray:
    """A pose bone's rotation property values [K, 3 or 4] for FLAME axis-angles [K, 3], in the bone's rotation
    mode; Euler angles follow on from the previous frame's (compatible Euler), so curves do not jump by 2 pi."""
    quats = _quaternions(rotvecs)
    if mode == "QUATERNION":
        return np.array([tuple(q) for q in quats])
    if mode == "AXIS_ANGLE":
        rows = []
        for q in quats:
            axis, angle = q.to_axis_angle()
            rows.append((angle, *axis))
        return np.array(rows)
    rows, previous = [], None
    for q in quats:
        e = q.to_euler(mode, previous) if previous is not None else q.to_euler(mode)
        rows.append(tuple(e))
        previous = e
    return np.array(rows)


def rotation_matrices(rotvecs: np.ndarray) -> np.ndarray:
    """Rodrigues: axis-angle [K, 3] -> rotation matrices [K, 3, 3]."""
    angle = np.linalg.norm(rotvecs, axis=1)
    axis = rotvecs / np.maximum(angle, 1e-12)[:, None]
    x, y, z = axis.T
    zero = np.zeros_like(x)
    k = np.stack([np.stack([zero, -z, y], 1), np.stack([z, zero, -x], 1), np.stack([-y, x, zero], 1)], 1)
    s, c = np.sin(angle)[:, None, None], np.cos(angle)[:, None, None]
    return np.eye(3)[None] + s * k + (1 - c) * (k @ k)


# ------------------------------------------------------------------------------------------------ keying

def _driven_paths(id_data) -> set:
    ad = getattr(id_data, "animation_data", None)
    return {fc.data_path for fc in ad.drivers} if ad is not None else set()


def _fcurve_map(id_data) -> dict:
    return {(fc.data_path, fc.array_index): fc for fc in rig.fcurves_of(id_data)}


class _Keyer:
    """Keys properties at the given frames: keyframe_insert at the first frame (which makes the F-curves in the
    datablock's action and slot, grouped as Blender groups them), then the other frames on those F-curves."""

    def __init__(self, frames: Sequence[int]):
        self.frames = [int(f) for f in frames]
        self.curves = 0

    def key(self, owner, prop: str, values: np.ndarray, frames: Optional[Sequence[int]] = None) -> None:
        """`values` [K] or [K, m] for `frames` (default: all): owner.prop at each frame."""
        frames = self.frames if frames is None else [int(f) for f in frames]
        values = np.asarray(values, np.float64).reshape(len(frames), -1)
        scalar = values.shape[1] == 1 and not hasattr(getattr(owner, prop), "__len__")
        setattr(owner, prop, float(values[0, 0]) if scalar else tuple(values[0]))
        owner.keyframe_insert(prop, frame=frames[0])
        path = owner.path_from_id(prop)
        curves = _fcurve_map(owner.id_data)
        for index in range(values.shape[1]):
            fc = curves.get((path, index))
            if fc is None:
                raise InputError(f"Blender did not key {path!r} (is the property locked or driven?).")
            points = fc.keyframe_points
            for frame, value in zip(frames[1:], values[1:, index]):
                points.insert(frame, float(value), options={"FAST"})
            fc.update()
            self.curves += 1


def widen_slider(kb, values: np.ndarray) -> None:
    """Blender clamps a shape key's value to its slider range (new keys: 0..1, and FLAME coefficients are signed):
    widen it to rig.py's -10..10 where the values need it."""
    if values.size and (values.min() < kb.slider_min or values.max() > kb.slider_max):
        kb.slider_min = min(kb.slider_min, -rig.SLIDER_RANGE)
        kb.slider_max = max(kb.slider_max, rig.SLIDER_RANGE)


def remove_keys(the_rig: rig.Rig, first: int, last: int) -> int:
    """Delete every key of the rig (armature and bones, mesh object, shape keys) in frames first..last."""
    removed = 0
    owners = [the_rig.armature, the_rig.mesh, the_rig.mesh.data.shape_keys]
    for owner in owners:
        if owner is None:
            continue
        for fc in rig.fcurves_of(owner):
            points = fc.keyframe_points
            for i in range(len(points) - 1, -1, -1):
                if first - 1e-6 <= points[i].co[0] <= last + 1e-6:
                    points.remove(points[i], fast=True)
                    removed += 1
            fc.update()
    return removed


@dataclass
class KeyedPerformance:
    first: int
    last: int
    fps: float
    curves: int
    warnings: List[str] = field(default_factory=list)

    @property
    def frames(self) -> int:
        return self.last - self.first + 1


def key_performance(scene, the_rig: rig.Rig, animation: Animation, *, start: int, replace: bool = True,
                    set_range: bool = True, with_shape: bool = True) -> KeyedPerformance:
    """Key `animation` onto the rig from frame `start` at the scene's frame rate (see the module's docstring).
    replace: first delete the rig's keys in the frames the performance covers (else they stay, and the
    performance's channels are keyed over them); set_range: make the scene's frame range the performance's."""
    fps = scene.render.fps / (scene.render.fps_base or 1.0)
    offsets, values = resample(animation, fps)
    frames = [int(start + k) for k in offsets]
    first, last = frames[0], frames[-1]
    mesh = the_rig.mesh
    warnings: List[str] = []
    if mesh.data.shape_keys is None:
        raise InputError(f"The mesh {mesh.name!r} has no shape keys; it is not a FLAME rig (add one with Next3D > "
                         "Rig > Add FLAME Head).")
    shape_keys, expr_keys = rig.keys_of(mesh, rig.SHAPE_PREFIX), rig.keys_of(mesh, rig.EXPR_PREFIX)
    warnings += coefficient_notes(animation, len(shape_keys), len(expr_keys), with_shape)
    if replace:
        remove_keys(the_rig, first, last)
    keyer = _Keyer(frames)
    driven = _driven_paths(mesh.data.shape_keys)

    skipped = []

    def coefficients(keys, table: np.ndarray, constant_ok: bool) -> None:
        for k, kb in enumerate(keys):
            if kb.path_from_id("value") in driven:
                skipped.append(kb.name)
                continue
            column = table[:, k] if k < table.shape[1] else np.zeros(len(frames))
            widen_slider(kb, column)
            if constant_ok and np.all(column == column[0]):
                # The identity is one value for the clip: a key at each end holds it over the range.
                ends = [first, last] if last > first else [first]
                keyer.key(kb, "value", np.full(len(ends), column[0]), ends)
            else:
                keyer.key(kb, "value", column)

    coefficients(expr_keys, values["expression"], False)
    if with_shape:
        coefficients(shape_keys, values["shape"], True)
    if skipped:
        warnings.append(f"{len(skipped)} shape key(s) ({', '.join(skipped[:3])}{' ...' if len(skipped) > 3 else ''}) "
                        "are set by drivers, so they are not keyed; remove the drivers to key them.")

    arm = the_rig.armature
    if arm is None:
        warnings.append(f"The rig {the_rig.name!r} has no armature, so only its shape keys are keyed (not the head "
                        "pose, jaw or eyes).")
    else:
        missing = []
        for bone, name, col in BONE_FIELDS:
            pb = arm.pose.bones.get(bone)
            if pb is None:
                missing.append(bone)
                continue
            rotvecs = values[name][:, col:col + 3]
            keyer.key(pb, ROTATION_PATHS.get(pb.rotation_mode, "rotation_euler"),
                      rotation_channels(pb.rotation_mode, rotvecs))
        if missing:
            warnings.append(f"The armature {arm.name!r} has no bone named {', '.join(missing)}; those rotations "
                            "are not keyed.")
    # Pose correctives without drivers (the FLAME add-on's): FLAME's R - I of the posed joints.
    corrective = np.concatenate([(rotation_matrices(values[name][:, col:col + 3]) - np.eye(3)).reshape(-1, 9)
                                 for name, col in POSED_FIELDS], axis=1)
    for kb in rig.keys_of(mesh, rig.POSE_PREFIX):
        match = re.match(rf"{rig.POSE_PREFIX}(\d+)", kb.name)
        index = int(match.group(1)) - 1 if match else -1
        if 0 <= index < corrective.shape[1] and kb.path_from_id("value") not in driven:
            widen_slider(kb, corrective[:, index])
            keyer.key(kb, "value", corrective[:, index])

    if set_range:
        scene.frame_start, scene.frame_end = first, last
    scene.frame_set(scene.frame_current)
    return KeyedPerformance(first, last, fps, keyer.curves, warnings)


# ------------------------------------------------------------------------------------------------ files

def default_animation_path(source: Path) -> Path:
    """Where a tracked clip's animation is kept: beside the .blend (//next3d_performances/<clip>.npz) when it is
    saved, else in the extension's user folder."""
    stem = (source.stem if source.is_file() else source.name) or "performance"
    if bpy.data.filepath:
        return Path(bpy.path.abspath("//next3d_performances")) / f"{stem}{ANIMATION_SUFFIX}"
    try:
        folder = Path(bpy.utils.extension_path_user(ADDON_PACKAGE, path="performances", create=True))
    except (ValueError, RuntimeError, TypeError, AttributeError):
        import tempfile

        folder = Path(tempfile.gettempdir()) / "next3d_performances"
    return folder / f"{stem}{ANIMATION_SUFFIX}"


def check_head_matches(the_rig: rig.Rig, spec) -> None:
    """Tracking fits the preferences' head model; its coefficients must be the rig's keys."""
    want = head_info(spec)[1:]
    counts = rig.key_counts(the_rig.mesh)
    have = (counts[rig.SHAPE_PREFIX], counts[rig.EXPR_PREFIX])
    if have != want:
        label = "the built-in head" if spec.kind == "default" else f"the FLAME model {Path(spec.model_path).name}"
        raise InputError(f"The rig {the_rig.name!r} has {have[0]} Shape and {have[1]} Exp keys but {label} (Next3D "
                         f"> Model) has {want[0]} and {want[1]}; tracking fits that model, so choose the model the "
                         "rig was built from, or add a head of it.")


# ------------------------------------------------------------------------------------------------ operator

class NEXT3D_OT_import_performance(_JobOperator, Operator):
    """Keyframe a FLAME rig from a performance: a face video, a folder of images or a Live Link Face CSV (tracked
    by the engine) or a FLAME animation .npz or .json. Keys start at the current frame, at the scene's frame rate"""

    bl_idname = "next3d.import_performance"
    bl_label = "Import Performance"
    bl_options = {"REGISTER", "UNDO"}

    filepath: StringProperty(name="File", description="A video, a folder of images, a Live Link Face .csv or a "
                             "FLAME animation (.npz or .json)", subtype="FILE_PATH")
    filter_glob: StringProperty(default=FILE_FILTER, options={"HIDDEN", "SKIP_SAVE"})
    filter_folder: BoolProperty(default=True, options={"HIDDEN", "SKIP_SAVE"})
    filter_movie: BoolProperty(default=True, options={"HIDDEN", "SKIP_SAVE"})
    filter_image: BoolProperty(default=True, options={"HIDDEN", "SKIP_SAVE"})
    target: StringProperty(name="Rig", description="The rig to key (its armature or head mesh); empty: the "
                           "selected rig, else the scene's Head", options={"SKIP_SAVE"})
    face: IntProperty(name="Face", description="Which face to track when there are several, numbered from 1 left "
                      "to right in the first frame with a face; 0: the largest", default=0, min=0)
    replace: BoolProperty(name="Replace Keys", description="Delete the rig's keys in the frames the performance "
                          "covers first (otherwise they stay and the performance is keyed over them)", default=True)
    set_frame_range: BoolProperty(name="Set Frame Range", description="Make the scene's frame range the "
                                  "performance's", default=True)
    with_shape: BoolProperty(name="Face Shape", description="Also key the Shape keys to the performer's tracked "
                             "face shape (off: the rig keeps its own identity)", default=True)
    smoothing: FloatProperty(name="Smoothing", description="Strength of the tracker's temporal terms against "
                             "jitter; 0 fits every frame on its own", default=1.0, min=0.0, max=100.0)
    animation_path: StringProperty(name="Animation File", description="Where a tracked clip's animation (.npz) "
                                   "and its report are written (empty: next3d_performances/ beside the .blend, or "
                                   "the extension's user folder)", subtype="FILE_PATH", options={"SKIP_SAVE"})

    def invoke(self, context, event):
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def draw(self, context):
        layout = self.layout
        layout.prop_search(self, "target", bpy.data, "objects")
        for name in ("face", "smoothing", "with_shape", "replace", "set_frame_range", "animation_path"):
            layout.prop(self, name)

    def _options(self, start: int) -> dict:
        return {"start": start, "replace": bool(self.replace), "set_range": bool(self.set_frame_range),
                "with_shape": bool(self.with_shape)}

    def _message(self, keyed: KeyedPerformance, the_rig: rig.Rig, name: str, animation: Animation) -> str:
        return (f"Keyed {keyed.frames} frame(s) ({keyed.first}-{keyed.last}, {keyed.fps:g} fps) on {the_rig.name!r} "
                f"from {name} ({animation.n_frames} frame(s) at {animation.fps:g} fps)")

    def execute(self, context):
        scene = context.scene
        try:
            raw = bpy.path.abspath(self.filepath) if self.filepath else ""
            path = Path(raw) if raw else None
            if path is None or not path.exists():
                raise InputError(f"{raw or '(no file)'!r} does not exist; choose a video, a folder of images, a Live "
                                 "Link Face .csv or a FLAME animation (.npz or .json).")
            the_rig = performance_rig(context, self.target)
            options = self._options(scene.frame_current)
            if path.is_file() and path.suffix.lower() in (ANIMATION_SUFFIX, ".json"):
                animation = read_animation(path)
                keyed = key_performance(scene, the_rig, animation, **options)
                for w in keyed.warnings:
                    self.report({"WARNING"}, w)
                self.report({"INFO"}, self._message(keyed, the_rig, path.name, animation))
                return {"FINISHED"}
            task = self._track(context, path, the_rig, options)
        except Next3DError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        return self._finish_or_watch(context, task, [], "Import Performance: stopped; nothing was keyed",
                                     lambda: task.status)

    def _track(self, context, path: Path, the_rig: rig.Rig, options: dict) -> runner.Task:
        """Track the clip in the engine; the rig is keyed from the written animation when the job ends."""
        scene = context.scene
        prefs = get_preferences(context)
        spec = head_spec(prefs)
        cache = cache_dir()
        if path.suffix.lower() == LIVE_LINK_SUFFIX and spec.kind != "default":
            raise InputError("A Live Link Face recording is mapped onto the built-in head's named expressions; set "
                             "the model to Bundled Default (Next3D > Model) and animate a built-in head.")
        check_head_matches(the_rig, spec)
        out = Path(bpy.path.abspath(self.animation_path)) if self.animation_path else default_animation_path(path)
        if out.suffix.lower() != ANIMATION_SUFFIX:
            out = out.with_suffix(ANIMATION_SUFFIX)
        check_writable(out.parent)
        fps = scene.render.fps / (scene.render.fps_base or 1.0)
        job = TrackJob(head=spec, cache_dir=cache, source_path=str(path), out_path=str(out), face=int(self.face),
                       fps=fps if path.is_dir() else 0.0, smoothing=float(self.smoothing), threads=int(prefs.threads))
        scene_name, mesh_name = scene.name, the_rig.mesh.name
        arm_name = the_rig.armature.name if the_rig.armature is not None else ""
        message = self._message

        def on_done(task: runner.Task) -> None:
            # On the main thread when the job ends (at once under -b, from the timer with a UI).
            if task.cancelled:
                task.status = "Import Performance: stopped; nothing was written or keyed"
            if task.error or task.cancelled or not task.summary.get("out_path"):
                return
            try:
                target_scene, mesh = bpy.data.scenes.get(scene_name), bpy.data.objects.get(mesh_name)
                if target_scene is None or mesh is None:
                    raise InputError(f"The rig {mesh_name!r} or its scene is gone; the animation is in "
                                     f"{task.summary['out_path']}: import that file.")
                keyed_rig = rig.Rig(mesh=mesh, armature=bpy.data.objects.get(arm_name) if arm_name else None)
                animation = read_animation(task.summary["out_path"])
                keyed = key_performance(target_scene, keyed_rig, animation, **options)
            except Next3DError as exc:
                task.error, task.error_is_user = str(exc), True
                return
            if task.summary.get("faces"):
                task.warnings.append(task.summary["faces"])
            task.warnings.extend(keyed.warnings)
            task.status = message(keyed, keyed_rig, Path(task.summary["out_path"]).name, animation)
            if not bpy.app.background:      # keyed after the operator returned: an undo step of its own
                try:
                    bpy.ops.ed.undo_push(message="Import Performance")
                except RuntimeError:
                    pass

        task = runner.Task(job, {}, "Track performance", on_done=on_done)
        runner.start(task, prefs, synchronous(self.mode))
        return task


class NEXT3D_PT_performance(Panel):
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Next3D"
    bl_label = "Performance"

    def draw(self, context):
        layout = self.layout
        layout.operator(NEXT3D_OT_import_performance.bl_idname, icon="ARMATURE_DATA")
        task = runner.active_task()
        if task is not None and task.kind == TrackJob.kind:
            if not task.finished:
                layout.label(text=task.status, icon="TIME")
                layout.operator("next3d.cancel_job", icon="CANCEL")
            elif task.error:
                layout.label(text=task.error[:120], icon="ERROR")


CLASSES = (NEXT3D_OT_import_performance, NEXT3D_PT_performance)
