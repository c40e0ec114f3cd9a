"""What the operators read from Blender for a job: the preferences' model and head, the scene's avatar settings,
camera and output folder, and the head frame by frame (`prepare`), as engine/job_specs.py's typed fields and the
per-frame arrays engine/jobs.py takes.

What the viewport shows is what is rendered: the head's geometry is its evaluated mesh (shape keys of any name,
drivers, the armature with its constraints, modifiers that keep the vertex count), read from the depsgraph frame
by frame, once as posed and once with its armatures in their rest position. core/flame/mesh_pose.py turns the two
into the generator's input: the rest-to-posed fit of the skull is the head's rigid motion, folded into the camera
with the object's world matrix (docs/flame.md#head-pose), and the landmarks are read off the canonical mesh. The
rendered head is found without the active object (`find_head`): the scene's Head setting, else the only head in
the view layer.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple, Type, TypeVar

import bpy
import numpy as np

from ..core.errors import InputError
from ..core.flame.mesh_pose import MeshHead
from ..engine import convert
from ..engine.heads import HeadSpec, head_arrays, topology_mismatch
from ..engine.job_specs import AvatarJob, ModelSpec
from . import ADDON_PACKAGE, rig
from .preferences import get_preferences

AVATAR_MODEL, AVATAR_LATENT = "avatar.safetensors", "latent.npy"
J = TypeVar("J", bound=AvatarJob)
# A skull that the fit leaves further than this (FLAME units, metres) from the posed one was deformed non-rigidly.
SKULL_WARNING = 0.002


# ------------------------------------------------------------------------------------------------ settings

def head_spec(prefs) -> HeadSpec:
    """The official model (and a project model given a FLAME file) is driven by the user's FLAME model; the
    bundled default by the default head. Empty landmark fields: the embedding is found beside the model."""
    if prefs.model_source == "OFFICIAL" or (prefs.model_source == "PROJECT" and prefs.flame_model_path):
        def path(p: str) -> str:
            return bpy.path.abspath(p) if p else ""

        return HeadSpec("flame", path(prefs.flame_model_path), path(prefs.flame_landmark_path),
                        path(prefs.flame_dynamic_path))
    return HeadSpec("default")


def model_label(prefs) -> str:
    """How messages name the chosen model."""
    if prefs.model_source == "DEFAULT":
        return "The bundled default model"
    path = prefs.official_path if prefs.model_source == "OFFICIAL" else prefs.project_path
    return f"The model {Path(bpy.path.abspath(path)).name}" if path else "The chosen model"


def model_spec(prefs) -> ModelSpec:
    source = prefs.model_source.lower()
    path = {"official": prefs.official_path, "project": prefs.project_path}.get(source, "")
    path = bpy.path.abspath(path) if path else ""
    if source != "default" and (not path or not os.path.isfile(path)):
        what = "next3d_ffhq_512.pkl" if source == "official" else "the .safetensors model"
        raise InputError(f"The model file {path or '(none)'!r} does not exist. Choose {what} in Next3D > Model "
                         "(add-on preferences), or switch the model to Bundled Default.")
    return ModelSpec(source=source, path=path, device=prefs.device.lower(), precision=prefs.precision.lower())


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


# ------------------------------------------------------------------------------------------------ the head

def find_head(context) -> rig.Rig:
    """The head to render, whichever object is active: the scene's Head (Next3D > Render), else the only head mesh
    the view layer shows."""
    return scene_head(context.scene, context.view_layer)


def render_heads(scene, view_layer) -> List[rig.Rig]:
    """The heads the render engine renders, whichever object is active: every mesh of the view layer marked as a
    Next3D head (Object > Next3D Head, set by Add FLAME Head) that renders (not hidden in renders), and the scene's
    Head setting; when neither names one, the only head of the view layer (files made before the mark)."""
    marked = [obj for obj in view_layer.objects if obj.type == "MESH" and obj.next3d.is_head and not obj.hide_render]
    chosen = scene.next3d.head
    if chosen is not None and chosen not in marked:
        return [scene_head(scene, view_layer)] + [rig.rig_of_mesh(obj) for obj in sorted(marked, key=lambda o: o.name)]
    if marked:
        return [rig.rig_of_mesh(obj) for obj in sorted(marked, key=lambda o: o.name)]
    return [scene_head(scene, view_layer)]


def scene_head(scene, view_layer) -> rig.Rig:
    """The scene's Head setting, else the only head mesh the view layer shows."""
    chosen = scene.next3d.head
    if chosen is not None:
        if chosen.type != "MESH":
            raise InputError(f"The scene's Head {chosen.name!r} is a {chosen.type.lower()}; choose the head's mesh "
                             "in Next3D > Render > Head.")
        return rig.rig_of_mesh(chosen)
    heads = rig.scene_heads(scene, view_layer)
    if not heads:
        raise InputError("The scene has no FLAME head to render. Add one with Next3D > Rig > Add FLAME Head, or "
                         "choose the head's mesh in Next3D > Render > Head.")
    if len(heads) > 1:
        names = ", ".join(repr(h.name) for h in heads[:4]) + (" ..." if len(heads) > 4 else "")
        raise InputError(f"The scene has {len(heads)} heads ({names}); choose the one to render in Next3D > Render "
                         "> Head.")
    return rig.rig_of_mesh(heads[0])


_MESH_HEADS: Dict[Tuple, Tuple[MeshHead, Tuple[int, np.ndarray]]] = {}


def mesh_head(spec: HeadSpec, cache: str) -> Tuple[MeshHead, Tuple[int, np.ndarray]]:
    """The head model's posing data and topology (vertex count, faces), cached per head spec and file dates."""
    stamps = tuple(os.stat(p).st_mtime_ns if os.path.isfile(p) else 0
                   for p in (spec.model_path,) + spec.landmark_files)
    key = (spec, cache, stamps)
    if key not in _MESH_HEADS:
        arrays = head_arrays(spec, cache_dir=cache or None)
        _MESH_HEADS.clear()
        _MESH_HEADS[key] = (MeshHead.from_arrays(arrays), (int(arrays["v_template"].shape[0]), arrays["faces"]))
    return _MESH_HEADS[key]


# ------------------------------------------------------------------------------------------------ frames

def _evaluated_mesh(obj, depsgraph, triangles: bool = True) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """The evaluated mesh's vertices in its own coordinates [N, 3] and, when asked, its triangles [T, 3] (Blender's
    triangulation of its polygons), from one evaluated copy of the mesh."""
    evaluated = obj.evaluated_get(depsgraph)
    mesh = evaluated.to_mesh()
    try:
        co = np.empty(len(mesh.vertices) * 3, dtype=np.float32)
        mesh.vertices.foreach_get("co", co)
        tris = None
        if triangles:
            tris = np.empty(len(mesh.loop_triangles) * 3, dtype=np.int32)
            mesh.loop_triangles.foreach_get("vertices", tris)
            tris = tris.reshape(-1, 3)
    finally:
        evaluated.to_mesh_clear()
    return co.reshape(-1, 3).astype(np.float64), tris


def _basis(obj) -> np.ndarray:
    """The mesh's own rest shape: its Basis key, or its vertices when it has no keys."""
    keys = obj.data.shape_keys
    points = keys.reference_key.data if keys is not None else obj.data.vertices
    co = np.empty(len(points) * 3, dtype=np.float32)
    points.foreach_get("co", co)
    return co.reshape(-1, 3).astype(np.float64)


def _check_topology(obj, vertices: np.ndarray, faces: np.ndarray, model_topology: Tuple[int, np.ndarray],
                    label: str, mesh_label: str) -> None:
    """InputError naming both topologies when the evaluated mesh is not of the model's."""
    own = len(obj.data.vertices)
    if len(vertices) != own:
        raise InputError(f"The modifiers of {mesh_label} change its vertex count ({own} -> {len(vertices)}); the "
                         "generator needs the head's own vertices. Disable the modifiers that add or remove vertices "
                         "(Subdivision, Remesh, Decimate, ...) in the viewport, or apply them to another copy.")
    problem = topology_mismatch(label, model_topology, mesh_label, (len(vertices), faces))
    if problem:
        raise InputError(problem)


class ReadOnlyArmature(Exception):
    """An armature whose rest position cannot be switched on."""


@contextlib.contextmanager
def rest_position(armatures) -> Iterator[None]:
    """The armatures in their rest position (Armature > Rest Position) for the duration, then as they were.
    ReadOnlyArmature when one cannot be switched (armature data linked from a library is read-only)."""
    before = [(arm.data, arm.data.pose_position) for arm in armatures]
    try:
        for data, _ in before:
            try:
                data.pose_position = "REST"
            except AttributeError as exc:
                raise ReadOnlyArmature(str(exc)) from None
        yield
    finally:
        for data, position in before:
            data.pose_position = position


def collect_frames(context, head: rig.Rig, numbers: List[int], model: MeshHead, mesh_label: str,
                   model_topology: Tuple[int, np.ndarray], label: str
                   ) -> Tuple[Dict[str, np.ndarray], Dict[int, np.ndarray], convert.SquareFraming, List[str]]:
    """Per-frame job arrays (engine/jobs.py) for `numbers`, the canonical head's world matrix per frame (where
    extracted meshes go), the framing (of the first frame) and warnings; the scene's frame and the armatures'
    positions are restored afterwards. InputError when the mesh is not of the model's topology."""
    scene = context.scene
    original = (scene.frame_current, scene.frame_subframe)
    posed, worlds, c2w_world, intrinsics, rest = [], [], [], [], []
    framing, faces, warnings = None, None, []
    armatures = rig.deforming_armatures(head.mesh)
    try:
        for number in numbers:
            scene.frame_set(int(number))
            depsgraph = context.evaluated_depsgraph_get()
            vertices, triangles = _evaluated_mesh(head.mesh, depsgraph, triangles=faces is None)
            if faces is None:
                faces = triangles
                _check_topology(head.mesh, vertices, faces, model_topology, label, mesh_label)
            elif len(vertices) != len(posed[0]):
                raise InputError(f"{mesh_label} has {len(vertices)} vertices at frame {number} but "
                                 f"{len(posed[0])} at frame {numbers[0]}: something changes its vertex count. The "
                                 "generator needs the head's own vertices at every frame.")
            posed.append(vertices)
            worlds.append(convert.matrix_to_numpy(head.mesh.evaluated_get(depsgraph).matrix_world))
            cam = scene_camera(scene)
            params = camera_params(cam, scene)
            frame_framing = convert.square_framing(convert.intrinsics_pixels(params), params.width, params.height)
            framing = framing or frame_framing
            c2w_world.append(convert.opencv_cam2world(convert.matrix_to_numpy(
                cam.evaluated_get(depsgraph).matrix_world)))
            intrinsics.append(frame_framing.intrinsics)
        try:
            with rest_position(armatures):
                for number in numbers if armatures else ():
                    scene.frame_set(int(number))
                    rest.append(_evaluated_mesh(head.mesh, context.evaluated_depsgraph_get(), triangles=False)[0])
        except ReadOnlyArmature:
            rest = []
            warnings.append(f"The armature of {mesh_label} cannot be put in its rest position (linked from a "
                            "library?), so its pose stays in the mesh the generator sees instead of moving into the "
                            "camera; make the armature local or a library override for the best results.")
        rest = rest or posed
    finally:
        scene.frame_set(original[0], subframe=original[1])
    to_flame = model.data_frame(_basis(head.mesh))
    rows = {k: [] for k in ("vertices", "landmarks", "cam2world")}
    heads: Dict[int, np.ndarray] = {}
    bent = []
    for number, p, r, world, c2w in zip(numbers, posed, rest, worlds, c2w_world):
        frame = model.frame(p, r, to_flame)
        head_to_world = world @ frame.head_to_mesh
        rows["vertices"].append(frame.vertices)
        rows["landmarks"].append(frame.landmarks)
        rows["cam2world"].append(convert.camera_in_head_space(c2w, head_to_world))
        heads[int(number)] = head_to_world
        if frame.residual > SKULL_WARNING:
            bent.append(int(number))
    arrays = {k: np.asarray(v, dtype=np.float32) for k, v in rows.items()}
    arrays["intrinsics"] = np.asarray(intrinsics, dtype=np.float32)
    arrays["numbers"] = np.asarray(numbers, dtype=np.int64)
    arrays["faces"] = np.ascontiguousarray(faces, dtype=np.int32)
    if bent:
        shown = ", ".join(str(n) for n in bent[:5]) + (f" and {len(bent) - 5} more" if len(bent) > 5 else "")
        warnings.append(f"The skull of {mesh_label} is deformed, not only moved, at frame(s) {shown} (beyond "
                        f"{SKULL_WARNING * 1000:g} mm); the head pose is the best rigid fit.")
    return arrays, heads, framing, warnings


def key_mix(obj, depsgraph) -> np.ndarray:
    """The mesh with its shape keys applied and nothing else (no skeleton, no modifiers) [N, 3], the key values as
    `depsgraph` evaluates them (keyframes, drivers): the unposed mesh core/flame/mesh_pose.py fits the pose against.
    The render engine reads it this way because it may not change the scene (rest_position) while rendering.
    Relative keys only (absolute keys: the Basis), muted keys skipped, a key's vertex group weighting its offset."""
    keys = obj.data.shape_keys
    if keys is None:
        return _basis(obj)
    evaluated = keys.evaluated_get(depsgraph)
    values = {kb.name: (kb.value, kb.mute) for kb in evaluated.key_blocks}
    reference = keys.reference_key
    coords: Dict[str, np.ndarray] = {}

    def co(kb) -> np.ndarray:
        if kb.name not in coords:
            a = np.empty(len(kb.data) * 3, dtype=np.float32)
            kb.data.foreach_get("co", a)
            coords[kb.name] = a.reshape(-1, 3).astype(np.float64)
        return coords[kb.name]

    out = co(reference).copy()
    if not keys.use_relative:
        return out
    for kb in keys.key_blocks:
        value, mute = values.get(kb.name, (0.0, True))
        if kb.name == reference.name or mute or value == 0.0:
            continue
        offset = co(kb) - co(kb.relative_key)
        if kb.vertex_group and kb.vertex_group in obj.vertex_groups:
            offset = offset * _group_weights(obj, obj.vertex_groups[kb.vertex_group].index)[:, None]
        out += value * offset
    return out


def _group_weights(obj, index: int) -> np.ndarray:
    w = np.zeros(len(obj.data.vertices))
    for v in obj.data.vertices:
        for g in v.groups:
            if g.group == index:
                w[v.index] = g.weight
    return w


@dataclass
class HeadInputs:
    """One head at the depsgraph's frame, as the render engine needs it: the one-frame job arrays (engine/jobs.py;
    cam2world is the scene camera in head space, intrinsics normalized by the square framing), the scene camera's
    projection, the head's scale (Blender units per head unit) and warnings."""

    rig: rig.Rig
    arrays: Dict[str, np.ndarray]
    params: convert.CameraParams
    head_scale: float
    warnings: List[str]


def read_head(depsgraph, head: rig.Rig, model: MeshHead, model_topology: Tuple[int, np.ndarray],
              label: str, camera: Optional[Tuple[np.ndarray, convert.CameraParams]] = None) -> HeadInputs:
    """`head` at the frame `depsgraph` is evaluated for (the render engine's depsgraph: nothing in the scene is
    changed, no frame is set), seen by the scene's camera, or by `camera` (OpenCV cam2world in Blender's world,
    projection: the viewport's view). InputError when the mesh is not of the model's topology or the scene has no
    usable camera."""
    scene = depsgraph.scene
    mesh_label = f"the mesh {head.mesh.name!r}"
    posed, faces = _evaluated_mesh(head.mesh, depsgraph)
    _check_topology(head.mesh, posed, faces, model_topology, label, mesh_label)
    rest = key_mix(head.mesh, depsgraph) if rig.deforming_armatures(head.mesh) else posed
    world = convert.matrix_to_numpy(head.mesh.evaluated_get(depsgraph).matrix_world)
    if camera is None:
        cam_eval = scene_camera(scene).evaluated_get(depsgraph)
        params = camera_params(cam_eval, scene)
        c2w = convert.opencv_cam2world(convert.matrix_to_numpy(cam_eval.matrix_world))
    else:
        c2w, params = camera
    framing = convert.square_framing(convert.intrinsics_pixels(params), params.width, params.height)
    frame = model.frame(posed, rest, model.data_frame(_basis(head.mesh)))
    head_to_world = world @ frame.head_to_mesh
    warnings = []
    if frame.residual > SKULL_WARNING:
        warnings.append(f"The skull of {mesh_label} is deformed, not only moved, at frame {scene.frame_current} "
                        f"(beyond {SKULL_WARNING * 1000:g} mm); the head pose is the best rigid fit.")
    arrays = {"numbers": np.asarray([scene.frame_current], dtype=np.int64),
              "vertices": frame.vertices[None].astype(np.float32),
              "landmarks": frame.landmarks[None].astype(np.float32),
              "cam2world": convert.camera_in_head_space(c2w, head_to_world)[None].astype(np.float32),
              "intrinsics": framing.intrinsics[None].astype(np.float32),
              "faces": np.ascontiguousarray(faces, dtype=np.int32)}
    head_scale = float(abs(np.linalg.det(head_to_world[:3, :3])) ** (1.0 / 3.0))
    return HeadInputs(rig=head, arrays=arrays, params=params, head_scale=head_scale, warnings=warnings)


def avatar_job(scene, prefs, rig_name: str) -> AvatarJob:
    """The settings every job over a head shares: the preferences' model and head, the scene's avatar."""
    spec = head_spec(prefs)
    model = model_spec(prefs)
    s = scene.next3d
    latent_path = ""
    if s.avatar_source == "PHOTO":
        folder = photo_avatar_folder(s)
        model = ModelSpec(source="project", path=str(folder / AVATAR_MODEL), device=model.device,
                          precision=model.precision)
        latent_path = str(folder / AVATAR_LATENT)
    return AvatarJob(model=model, head=spec, cache_dir=cache_dir(), seed=int(s.seed),
                     truncation_psi=float(s.truncation_psi), sample_seed=int(s.sample_seed),
                     latent_path=latent_path, threads=int(prefs.threads), rig_name=rig_name)


@dataclass
class SceneFrames:
    """What a job over the rig's frames takes from Blender (`prepare`)."""

    rig: rig.Rig
    avatar: AvatarJob                  # the model, head and avatar settings every such job shares
    framing: convert.SquareFraming     # the scene's render in the generator's square
    arrays: Dict[str, np.ndarray]      # the per-frame job arrays
    heads: Dict[int, np.ndarray]       # the canonical head's world matrix per frame (where extracted meshes go)
    warnings: List[str]                # about the head
    prefs: object

    def job(self, job_type: Type[J], **settings) -> J:
        """A job of `job_type` over these frames: the shared settings and the job's own `settings`."""
        shared = {f.name: getattr(self.avatar, f.name) for f in fields(self.avatar)}
        return job_type(**shared, **settings)


def prepare(context, numbers: Optional[List[int]] = None, head: Optional[rig.Rig] = None) -> SceneFrames:
    """Everything a job over the head's frames (default: the current frame; the head: `find_head`) needs from
    Blender; InputError when the preferences, the head or the scene cannot make one."""
    prefs = get_preferences(context)
    spec = head_spec(prefs)
    model_spec(prefs)       # a missing model file is reported before the frames are read
    the_rig = head if head is not None else find_head(context)
    scene_camera(context.scene)
    posing, topology = mesh_head(spec, cache_dir())
    numbers = numbers if numbers is not None else [context.scene.frame_current]
    arrays, heads, framing, warnings = collect_frames(context, the_rig, numbers, posing,
                                                      f"the mesh {the_rig.mesh.name!r}", topology,
                                                      model_label(prefs))
    avatar = avatar_job(context.scene, prefs, the_rig.mesh.name)
    return SceneFrames(rig=the_rig, avatar=avatar, framing=framing, arrays=arrays, heads=heads, warnings=warnings,
                       prefs=prefs)
