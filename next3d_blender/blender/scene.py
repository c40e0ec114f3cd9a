"""What the operators read from Blender for a job: the preferences' model and head, the scene's avatar settings,
camera and output folder, and the rig's state frame by frame (`prepare`), as engine/job_specs.py's typed fields and
the per-frame arrays engine/jobs.py takes."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Type, TypeVar

import bpy
import numpy as np

from ..core.errors import InputError
from ..engine import convert
from ..engine.heads import HeadSpec, head_info
from ..engine.job_specs import AvatarJob, FramedJob, ModelSpec
from . import ADDON_PACKAGE, rig
from .preferences import get_preferences

AVATAR_MODEL, AVATAR_LATENT = "avatar.safetensors", "latent.npy"
J = TypeVar("J", bound=AvatarJob)


# ------------------------------------------------------------------------------------------------ settings

def head_spec(prefs) -> HeadSpec:
    """The official model (and a project model given a FLAME file) is driven by the user's FLAME model; the
    bundled default by the default head."""
    if prefs.model_source == "OFFICIAL" or (prefs.model_source == "PROJECT" and prefs.flame_model_path):
        return HeadSpec("flame", bpy.path.abspath(prefs.flame_model_path),
                        bpy.path.abspath(prefs.flame_landmark_path))
    return HeadSpec("default")


def model_spec(prefs) -> ModelSpec:
    source = prefs.model_source.lower()
    path = {"official": prefs.official_path, "project": prefs.project_path}.get(source, "")
    path = bpy.path.abspath(path) if path else ""
    if source != "default" and (not path or not os.path.isfile(path)):
        what = "next3d_ffhq_512.pkl" if source == "official" else "the .safetensors model"
        raise InputError(f"The model file {path or '(none)'!r} does not exist. Choose {what} in Next3D > Model "
                         "(add-on preferences), or switch the model to Bundled Default.")
    return ModelSpec(source=source, path=path, device=prefs.device.lower())


def photo_avatar_folder(settings) -> Path:
    """The folder of the scene's photo avatar, checked to hold the tuned model and the latent."""
    raw = settings.avatar_folder
    folder = Path(bpy.path.abspath(raw)) if raw else None
    if folder is None or not (folder / AVATAR_MODEL).is_file() or not (folder / AVATAR_LATENT).is_file():
        raise InputError(f"The avatar folder {str(folder) if folder else '(none)'!r} does not hold {AVATAR_MODEL} "
                         f"and {AVATAR_LATENT}. Make one with 'Avatar from Photo', or set Avatar to Seed.")
    return folder


def default_avatar_folder(image_path: str) -> Path:
    """Beside the .blend (//next3d_avatars/<photo name>) when it is saved, else in the extension's user folder."""
    stem = Path(image_path).stem or "avatar"
    if bpy.data.filepath:
        return Path(bpy.path.abspath("//next3d_avatars")) / stem
    try:
        return Path(bpy.utils.extension_path_user(ADDON_PACKAGE, path="avatars", create=True)) / stem
    except (ValueError, RuntimeError, TypeError, AttributeError):
        import tempfile

        return Path(tempfile.gettempdir()) / "next3d_avatars" / stem


def cache_dir() -> str:
    try:
        return bpy.utils.extension_path_user(ADDON_PACKAGE, path="cache", create=True)
    except (ValueError, RuntimeError, TypeError, AttributeError):
        # Not installed as an extension (development checkout): the engine's default cache folder.
        return ""


def output_dir(scene) -> Path:
    """The scene's output folder (Output properties > Output path), relative paths resolved against the .blend."""
    raw = scene.render.filepath or "//"
    path = bpy.path.abspath(raw)
    if not path:
        raise InputError("The scene's output path is empty; set Output properties > Output.")
    return Path(path)


def check_writable(folder: Path) -> None:
    """Fail early, without creating anything, when the output folder cannot be written."""
    probe = folder
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise InputError(f"Cannot write to the output folder {str(folder)!r} ({str(probe)!r} is not writable). "
                         "Set a folder you can write to in Output properties > Output.")


# ------------------------------------------------------------------------------------------------ camera

def scene_camera(scene):
    cam = scene.camera
    if cam is None:
        raise InputError("The scene has no camera. Add one (Add > Camera) and make it the scene camera, or let "
                         "'Add FLAME Head' add one framed on the head.")
    return cam


def render_size(scene) -> Tuple[int, int]:
    """Scene render size in pixels, resolution_percentage applied (as Blender rounds it)."""
    r = scene.render
    scale = r.resolution_percentage / 100.0
    return max(1, int(r.resolution_x * scale)), max(1, int(r.resolution_y * scale))


def camera_params(camera_object, scene) -> convert.CameraParams:
    """Read a camera object's projection; InputError for cameras the generator cannot use."""
    if camera_object is None or camera_object.type != "CAMERA":
        raise InputError("The scene has no camera. Add one (Add > Camera) and make it the scene camera "
                         "(Scene properties > Camera); 'Add FLAME head' can add one framed on the head.")
    cam = camera_object.data
    if cam.type != "PERSP":
        raise InputError(f"The camera {camera_object.name!r} is {cam.type.lower()}; the generator needs a "
                         "perspective camera. Set Camera properties > Lens > Type to Perspective.")
    w, h = render_size(scene)
    return convert.CameraParams(lens=cam.lens, sensor_width=cam.sensor_width, sensor_height=cam.sensor_height,
                                sensor_fit=cam.sensor_fit, shift_x=cam.shift_x, shift_y=cam.shift_y, width=w,
                                height=h, pixel_aspect_x=scene.render.pixel_aspect_x,
                                pixel_aspect_y=scene.render.pixel_aspect_y)


# ------------------------------------------------------------------------------------------------ frames

def collect_frames(context, the_rig: rig.Rig, numbers: List[int], n_shape: int, n_expr: int
                   ) -> Tuple[Dict[str, np.ndarray], Dict[int, np.ndarray], convert.SquareFraming]:
    """Per-frame job arrays (engine/jobs.py) for `numbers`, the head's world matrix per frame, and the framing (of
    the first frame); the scene's current frame is restored afterwards."""
    scene = context.scene
    original = (scene.frame_current, scene.frame_subframe)
    rows = {k: [] for k in ("shape", "expression", "jaw", "eyes", "cam2world", "intrinsics")}
    heads: Dict[int, np.ndarray] = {}
    framing = None
    try:
        for number in numbers:
            scene.frame_set(int(number))
            depsgraph = context.evaluated_depsgraph_get()
            state = rig.read_frame(the_rig, n_shape, n_expr, depsgraph)
            cam = scene_camera(scene)
            params = camera_params(cam, scene)
            frame_framing = convert.square_framing(convert.intrinsics_pixels(params), params.width, params.height)
            framing = framing or frame_framing
            cam_world = convert.matrix_to_numpy(cam.evaluated_get(depsgraph).matrix_world)
            c2w = convert.camera_in_head_space(convert.opencv_cam2world(cam_world), state.head_to_world)
            rows["shape"].append(state.shape)
            rows["expression"].append(state.expression)
            rows["jaw"].append(state.jaw)
            rows["eyes"].append(state.eyes)
            rows["cam2world"].append(c2w)
            rows["intrinsics"].append(frame_framing.intrinsics)
            heads[int(number)] = state.head_to_world
    finally:
        scene.frame_set(original[0], subframe=original[1])
    arrays = {k: np.asarray(v, dtype=np.float32) for k, v in rows.items()}
    arrays["numbers"] = np.asarray(numbers, dtype=np.int64)
    return arrays, heads, framing


@dataclass
class SceneFrames:
    """What a job over the rig's frames takes from Blender (`prepare`)."""

    rig: rig.Rig
    avatar: AvatarJob                  # the model, head and avatar settings every such job shares
    framing: convert.SquareFraming     # the scene's render in the generator's square
    arrays: Dict[str, np.ndarray]      # the per-frame job arrays
    heads: Dict[int, np.ndarray]       # the head's world matrix per frame (where extracted meshes go)
    warnings: List[str]                # about the rig
    prefs: object

    def job(self, job_type: Type[J], **settings) -> J:
        """A job of `job_type` over these frames: the shared settings, the framing for jobs that render images,
        and the job's own `settings`."""
        shared = {f.name: getattr(self.avatar, f.name) for f in fields(self.avatar)}
        if issubclass(job_type, FramedJob):
            f = self.framing
            shared.update(width=f.width, height=f.height, side=f.side, x0=f.x0, y0=f.y0)
        return job_type(**shared, **settings)


def prepare(context, numbers: Optional[List[int]] = None) -> SceneFrames:
    """Everything a job over the active rig's frames (default: the current frame) needs from Blender; InputError
    when the preferences, the rig or the scene cannot make one."""
    prefs = get_preferences(context)
    spec = head_spec(prefs)
    model = model_spec(prefs)
    the_rig = rig.find_rig(context.active_object)
    n_vertices, n_shape, n_expr = head_info(spec)
    warnings = rig.check_rig(the_rig, n_vertices, n_shape, n_expr)
    scene_camera(context.scene)
    numbers = numbers if numbers is not None else [context.scene.frame_current]
    arrays, heads, framing = collect_frames(context, the_rig, numbers, n_shape, n_expr)
    s = context.scene.next3d
    latent_path = ""
    if s.avatar_source == "PHOTO":
        folder = photo_avatar_folder(s)
        model = ModelSpec(source="project", path=str(folder / AVATAR_MODEL), device=model.device)
        latent_path = str(folder / AVATAR_LATENT)
    avatar = AvatarJob(model=model, head=spec, cache_dir=cache_dir(), seed=int(s.seed),
                       truncation_psi=float(s.truncation_psi), sample_seed=int(s.sample_seed),
                       latent_path=latent_path, threads=int(prefs.threads))
    return SceneFrames(rig=the_rig, avatar=avatar, framing=framing, arrays=arrays, heads=heads, warnings=warnings,
                       prefs=prefs)
