"""Running the engine's jobs: `run_job` in the worker process (worker.py) or, in background mode, in Blender's own
process. No bpy here; torch and core are imported inside the functions.

A job is a typed description (job_specs.py: its fields and defaults) plus named numpy arrays (the per-frame rig
state); both cross a process boundary unchanged (worker.py's wire format). Job kinds:

  "neural"   frames seen by virtual cameras -> emits "image" per frame with the generator's rgb and depth at the
             square side, from the frame cache (frame_cache.py) when nothing they are made of changed; the render
             engine (blender/render_engine.py) places, mattes and composites them, and Blender writes the files.
  "mesh"     one mesh per frame (core.mesh.extract_mesh, FLAME units) -> emits "mesh" per frame with vertices,
             faces and colours.
  "invert"   a portrait photo -> a one-shot avatar folder (core.portrait + core.inversion: crop, FLAME fit, pivotal
             tuning). Emits "begin", "step" per optimisation step, then "done" with the folder and the fitted FLAME
             shape (or "cancelled": nothing is written).
  "ping"     emits "pong" (worker start-up check).

Per-frame arrays, N frames, all from the rig's evaluated mesh (blender/scene.py, core/flame/mesh_pose.py):
numbers [N] (Blender frame numbers), vertices [N, V, 3] and landmarks [N, 68, 3] float32 (the head in FLAME space
with its rigid pose removed: the generator's mesh input), cam2world [N, 4, 4] (OpenCV camera in that head's frame,
the head pose folded in, see convert.py) and intrinsics [N, 3, 3] (normalized by the square side; for "neural"
the virtual camera's, framing.py). Beside them, once: faces [T, 3] int32, the rig's triangles, checked against the
generator's own (a generator rasterizes its triangles with the vertices it is given). A FLAME-sized frame is 61 kB
on the wire (worker.py streams array bytes after a small JSON header, so the length of a render is no limit).
"""

from __future__ import annotations

import math
from typing import Callable, Dict, List, Optional, Sequence, Union

import numpy as np

from ..core import session
from ..core.errors import InputError, Next3DError
from .heads import HeadSpec, head_arrays, topology_mismatch
from .job_specs import AvatarJob, InvertJob, Job, MeshJob, ModelSpec, NeuralJob, PingJob, job_from_dict
from .performance_job import track_job     # also registers the "track" job kind (TrackJob)

Emit = Callable[[str, dict, Optional[Dict[str, np.ndarray]]], None]
StopFn = Callable[[], bool]

FRAME_ARRAYS = ("numbers", "vertices", "landmarks", "cam2world", "intrinsics")
TOPOLOGY_ARRAY = "faces"
# How far a camera may stray from the training cameras before we warn (ratios to the training values).
RADIUS_RANGE = (0.6, 1.6)
FOCAL_RANGE = (0.5, 2.0)
MAX_OFF_AXIS_DEG = 25.0
TRAINING_FOCAL = 4.2647


# ------------------------------------------------------------------------------------------------ model cache

_CACHE: dict = {}


def _cache_get(key, build):
    if key not in _CACHE:
        _CACHE[key] = build()
    return _CACHE[key]


def clear_cache() -> None:
    _CACHE.clear()


def _device(requested: str, warnings: List[str]) -> str:
    import torch

    requested = (requested or "cpu").lower()
    if requested == "cuda" and not torch.cuda.is_available():
        warnings.append("CUDA was chosen but is not available to this Python's torch; rendering on the CPU.")
        return "cpu"
    return "cuda" if requested == "cuda" else "cpu"


def model_path(model: ModelSpec) -> Optional[str]:
    """The model file a spec names, None for the bundled default (core.session's convention)."""
    return None if model.source == "default" else model.path


def model_cache_key(model: ModelSpec, device: str) -> tuple:
    """What a model spec's generator is cached under, and the identities made with it: source, path, weights digest
    (weights replaced in place are reloaded), device and precision."""
    return ("model", model.source, model.path, session.file_digest(model_path(model)), device, model.precision)


def load_model(model: ModelSpec, warnings: List[str]):
    """(generator, description) for a model spec (core.session.load_model); cached per model_cache_key."""
    source, path = model.source, model.path
    device = _device(model.device, warnings)

    def build():
        if source in ("official", "project") and not path:
            what = "next3d_ffhq_512.pkl" if source == "official" else "a .safetensors model"
            raise InputError(f"No model file is set. Choose {what} in Next3D > Model (add-on preferences).")
        if source not in ("default", "official", "project"):
            raise InputError(f"Unknown model source {source!r}; use default, official or project.")
        loaded = session.load_model(model_path(model), device)
        return loaded.generator.set_precision(model.precision), loaded.description

    return _cache_get(model_cache_key(model, device), build)


def load_head_model(head: HeadSpec, cache_dir: str):
    """core.flame.FlameModel for a head spec (cached); cache_dir "" is the engine's default cache folder."""

    def build():
        from ..core.flame import FlameModel, FlameModelData

        arrays = head_arrays(head, cache_dir=cache_dir or None)
        return FlameModel(FlameModelData(**arrays, name=head.kind, source=head.model_path or "the default head"))

    return _cache_get(("head", head.kind, head.model_path, head.landmark_files), build)


def job_avatar(job: AvatarJob) -> session.Avatar:
    """The job's avatar: drawn from its seed (cutoff 0: every layer truncated), or a photo avatar's latent."""
    return session.Avatar(int(job.seed), float(job.truncation_psi), int(job.truncation_cutoff) or None,
                          job.latent_path or None)


def avatar_identity(generator, model_key: tuple, avatar: session.Avatar):
    """What the generator builds once from the avatar (core.session.avatar_identity); cached per model and avatar,
    and per latent file content (a folder inverted again into the same path is read again)."""
    latent = session.file_digest(avatar.latent) if avatar.latent else ""
    return _cache_get(("identity", model_key, avatar, latent),
                      lambda: session.avatar_identity(generator, avatar)[1])


# ------------------------------------------------------------------------------------------------ per frame

def check_frame_arrays(arrays: Dict[str, np.ndarray]) -> int:
    missing = [k for k in FRAME_ARRAYS + (TOPOLOGY_ARRAY,) if k not in arrays]
    if missing:
        raise InputError(f"The job lacks the per-frame arrays {missing}.")
    n = len(arrays["numbers"])
    for k in FRAME_ARRAYS:
        if len(arrays[k]) != n:
            raise InputError(f"The job's array {k!r} has {len(arrays[k])} rows for {n} frames.")
        if arrays[k].dtype.kind == "f" and not np.isfinite(arrays[k]).all():
            raise InputError(f"The rig gives non-finite values ({k}) at some frame; check its keyframes.")
    if n == 0:
        raise InputError("There are no frames to render.")
    shapes = {"vertices": (None, 3), "landmarks": (68, 3), "cam2world": (4, 4), "intrinsics": (3, 3)}
    for k, tail in shapes.items():
        a = arrays[k]
        if a.ndim != 3 or any(w is not None and w != s for w, s in zip(tail, a.shape[1:])):
            raise InputError(f"The job's array {k!r} has shape {list(a.shape)}; expected [{n}, "
                             f"{', '.join('V' if w is None else str(w) for w in tail)}].")
    faces = arrays[TOPOLOGY_ARRAY]
    if faces.ndim != 2 or faces.shape[1] != 3 or faces.dtype.kind not in "iu":
        raise InputError(f"The job's faces have shape {list(faces.shape)} ({faces.dtype}); expected [T, 3] integers.")
    return n


def check_topology(generator, description: str, arrays: Dict[str, np.ndarray], rig_name: str = "") -> None:
    """The rig's mesh must be of the head the generator was built on: its vertex count and its triangles."""
    faces = generator.faces[0].cpu().numpy()
    mesh = f"the mesh {rig_name!r}" if rig_name else "the rig's mesh"
    problem = topology_mismatch(f"The model ({description})", (int(generator.config.n_vertices), faces), mesh,
                                (int(arrays["vertices"].shape[1]), np.asarray(arrays[TOPOLOGY_ARRAY])))
    if problem:
        raise InputError(problem)


def camera_labels(arrays: Dict[str, np.ndarray], config) -> np.ndarray:
    """[N, 25] generator labels for the job's frames: the cameras placed in the model's world like its meshes
    (docs/flame.md#placement-in-the-generator-world)."""
    from ..core.flame import conversions   # imports torch: not at module level (the worker imports jobs.py first)

    c2w = conversions.camera_to_world(arrays["cam2world"], config)
    k = np.asarray(arrays["intrinsics"], dtype=np.float64)
    return np.concatenate([c2w.reshape(len(c2w), 16), k.reshape(len(k), 9)], axis=1).astype(np.float32)


def camera_warnings(labels: np.ndarray, numbers: Sequence[int], config) -> List[str]:
    """Warnings (not errors) for cameras far from the training distribution: distance to the head, field of view,
    and how far off the head the camera points."""
    pivot = np.asarray(config.avg_camera_pivot, dtype=np.float64)
    radius = float(config.avg_camera_radius)
    far, fov, aim = [], [], []
    for number, label in zip(numbers, labels):
        c2w = label[:16].reshape(4, 4).astype(np.float64)
        k = label[16:].reshape(3, 3)
        origin, forward = c2w[:3, 3], c2w[:3, 2]
        ratio = np.linalg.norm(origin - pivot) / radius
        if not RADIUS_RANGE[0] <= ratio <= RADIUS_RANGE[1]:
            far.append((number, ratio))
        focal = float(k[0, 0])
        if not FOCAL_RANGE[0] <= focal / TRAINING_FOCAL <= FOCAL_RANGE[1]:
            fov.append((number, focal))
        to_head = pivot - origin
        cos = float(forward @ to_head / max(np.linalg.norm(to_head), 1e-9))
        if math.degrees(math.acos(max(-1.0, min(1.0, cos)))) > MAX_OFF_AXIS_DEG:
            aim.append(number)
    out = []

    def frames(items):
        shown = ", ".join(str(i[0] if isinstance(i, tuple) else i) for i in items[:5])
        return shown + (f" and {len(items) - 5} more" if len(items) > 5 else "")

    if far:
        out.append(f"The camera is {far[0][1]:.2f}x the training distance from the head at frame(s) {frames(far)}; "
                   "the generator was trained with cameras about 1.08 m (FLAME units) from the head, so expect "
                   "artefacts.")
    if fov:
        fov_deg = math.degrees(2 * math.atan(0.5 / max(fov[0][1], 1e-9)))
        out.append(f"The camera's field of view ({fov_deg:.1f} degrees) at frame(s) {frames(fov)} is far from the "
                   "training cameras' 13.4 degrees (normalized focal 4.26); expect artefacts.")
    if aim:
        out.append(f"The camera does not point at the head at frame(s) {frames(aim)}; the generator only models "
                   "the head.")
    return out


class FrameInputs:
    """The generator inputs of the job's frames by Blender frame number: the mesh input (vertices then landmarks)
    and the camera label."""

    def __init__(self, arrays: Dict[str, np.ndarray], labels: np.ndarray):
        self.arrays, self.labels = arrays, labels
        self.row = {int(n): i for i, n in enumerate(arrays["numbers"])}

    def _row(self, number: int) -> int:
        try:
            return self.row[int(number)]
        except KeyError:
            raise InputError(f"Frame {number} is not part of this job.") from None

    def mesh_input(self, number: int):
        """[V + 68, 3] float32 tensor: vertices then landmarks of frame `number` (head pose in the camera)."""
        import torch

        i = self._row(number)
        v = np.concatenate([self.arrays["vertices"][i], self.arrays["landmarks"][i]]).astype(np.float32)
        return torch.from_numpy(v)

    def label(self, number: int):
        import torch

        return torch.from_numpy(self.labels[self._row(number)])


# ------------------------------------------------------------------------------------------------ jobs

def _prepare(job: AvatarJob, arrays: Dict[str, np.ndarray], emit: Emit):
    warnings: List[str] = []
    n = check_frame_arrays(arrays)
    generator, description = load_model(job.model, warnings)
    cfg = generator.config
    check_topology(generator, description, arrays, job.rig_name)
    labels = camera_labels(arrays, cfg)
    warnings += camera_warnings(labels, [int(x) for x in arrays["numbers"]], cfg)
    model_key = model_cache_key(job.model, str(next(generator.parameters()).device))
    identity = avatar_identity(generator, model_key, job_avatar(job))
    for w in warnings:
        emit("warning", {"message": w}, None)
    return n, generator, description, labels, identity


def neural_job(job: NeuralJob, arrays: Dict[str, np.ndarray], emit: Emit, should_stop: StopFn) -> dict:
    """The generator's square frames (rgb at job.side, depth as volume-rendered) for the render engine, from the
    frame cache where the frame's digest is there (engine/frame_cache.py). Emits "begin", per frame "image" (arrays
    rgb, depth; header number, digest, cached) then "frame", then "done" with how many were kept and rendered."""
    import torch
    import torch.nn.functional as F

    from ..core.sequence.render import frame_seed
    from .frame_cache import FrameCache, frame_digest

    warnings: List[str] = []
    n = check_frame_arrays(arrays)
    side = int(job.side)
    if not 16 <= side <= 4096:
        raise InputError(f"The generator image side {side} px is not usable; use 16 to 4096.")
    generator, description = load_model(job.model, warnings)
    check_topology(generator, description, arrays, job.rig_name)
    # Virtual cameras are near the training ones by construction (engine/framing.py warns about the direction).
    labels = camera_labels(arrays, generator.config)
    for w in warnings:
        emit("warning", {"message": w}, None)
    device = next(generator.parameters()).device
    model_key = model_cache_key(job.model, str(device))
    avatar = job_avatar(job)
    cache = FrameCache(job.frame_cache) if job.frame_cache else None
    numbers = [int(x) for x in arrays["numbers"]]
    emit("begin", {"total": n, "skipped": 0, "description": description}, None)
    identity = None
    kept = rendered = 0
    for i, number in enumerate(numbers):
        if should_stop():
            summary = {"kept": kept, "rendered": rendered, "missing": numbers[i:]}
            emit("cancelled", summary, None)
            return summary
        seed = frame_seed(job.sample_seed, number)
        digest = frame_digest(vertices=arrays["vertices"][i], landmarks=arrays["landmarks"][i], label=labels[i],
                              model=[job.model.source, model_key[3], job.model.precision], avatar=avatar.record(),
                              seed=seed, side=side, description=description)
        cached = cache.load(digest) if cache is not None else None
        if cached is None:
            if identity is None:
                identity = avatar_identity(generator, model_key, avatar)
            with torch.no_grad():
                rng = torch.Generator(device=device).manual_seed(seed)
                out = generator.render_frame(identity, torch.from_numpy(np.concatenate(
                    [arrays["vertices"][i], arrays["landmarks"][i]]).astype(np.float32))[None].to(device),
                    torch.from_numpy(labels[i])[None].to(device), generator=rng)
                image = ((out.image.float() + 1.0) / 2.0).clamp(0.0, 1.0)
                if image.shape[-1] != side:
                    image = F.interpolate(image, size=(side, side), mode="bilinear", align_corners=False,
                                          antialias=side < image.shape[-1])
            # Depth stays at the volume renderer's resolution (engine/framing.py depth_to_scene takes any size).
            frame = {"rgb": image[0].permute(1, 2, 0).cpu().numpy().astype(np.float32),
                     "depth": out.image_depth[0, 0].float().cpu().numpy().astype(np.float32)}
            if cache is not None:
                cache.store(digest, frame["rgb"], frame["depth"])
            rendered += 1
        else:
            frame = cached
            kept += 1
        emit("image", {"number": number, "digest": digest, "cached": cached is not None, "index": i}, frame)
        emit("frame", {"number": number, "done": i + 1, "total": n}, None)
    summary = {"kept": kept, "rendered": rendered, "missing": []}
    emit("done", summary, None)
    return summary


def mesh_job(job: MeshJob, arrays: Dict[str, np.ndarray], emit: Emit, should_stop: StopFn) -> dict:
    import torch

    from ..core.mesh import extract_mesh, surface_level

    n, generator, description, labels, identity = _prepare(job, arrays, emit)
    numbers = [int(x) for x in arrays["numbers"]]
    src = FrameInputs(arrays, labels)
    resolution, level = job.resolution, job.level
    emit("begin", {"total": len(numbers), "skipped": 0, "description": description}, None)
    for k, number in enumerate(numbers):
        if should_stop():
            emit("cancelled", {"done": k}, None)
            return {"done": k}
        device = next(generator.parameters()).device
        with torch.no_grad():
            planes = generator.build_planes(identity, src.mesh_input(number)[None].to(device))
        used_level = float(level) if level is not None else surface_level(generator, planes)
        # only the density near this frame's head (docs/mesh_extraction.md#head-region), unless asked for all
        near = None if job.keep_background else src.mesh_input(number).numpy()
        mesh = extract_mesh(generator, planes, resolution=resolution, level=used_level, units="flame", near=near)
        colors = mesh.colors if mesh.colors is not None else np.full((mesh.n_vertices, 3), 200, np.uint8)
        emit("mesh", {"number": number, "done": k + 1, "total": len(numbers), "level": used_level},
             {"vertices": mesh.vertices.astype(np.float32), "faces": mesh.faces.astype(np.int64),
              "colors": colors.astype(np.uint8)})
    emit("done", {"count": len(numbers)}, None)
    return {"count": len(numbers)}


def invert_job(job: InvertJob, arrays: Dict[str, np.ndarray], emit: Emit, should_stop: StopFn) -> dict:
    """A portrait photo -> an avatar folder (avatar.safetensors + latent.npy + the fit), by pivotal tuning."""
    from ..core.inversion.avatar_files import save_avatar
    from ..core.inversion.perceptual import load_perceptual
    from ..core.inversion.pti import invert
    from ..core.io.images import from_uint8, read_image
    from ..core.portrait import preprocess_portrait

    warnings: List[str] = []
    image_path, out_dir = job.image_path, job.out_dir
    if not out_dir:
        raise InputError("No folder is set for the avatar; choose one in the Avatar from Photo dialog.")
    generator, description = load_model(job.model, warnings)
    flame = load_head_model(job.head, job.cache_dir)
    for w in warnings:
        emit("warning", {"message": w}, None)
    image = read_image(image_path)
    emit("begin", {"total": 0, "description": "detecting the face and fitting FLAME"}, None)
    portrait = preprocess_portrait(image, flame, resolution=generator.config.image_resolution, source=image_path,
                                   face=job.face or None)
    if portrait.faces_note:
        emit("warning", {"message": portrait.faces_note}, None)
    for w in portrait.warnings:
        emit("warning", {"message": w}, None)
    perceptual = None
    if job.vgg16_path:
        perceptual = load_perceptual(job.vgg16_path, job.lpips_path or None)
    latent_steps, tune_steps = job.latent_steps, job.tune_steps
    total = latent_steps + tune_steps
    emit("begin", {"total": total, "description": description}, None)

    def progress(done: int, total_steps: int) -> None:
        emit("step", {"done": done, "total": total_steps}, None)

    device = next(generator.parameters()).device
    target = from_uint8(portrait.image)[None].to(device)
    result = invert(generator, target, portrait.camera[None].to(device), portrait.mesh_input.to(device),
                    latent_steps=latent_steps, tune_steps=tune_steps, perceptual=perceptual,
                    seed=job.seed, progress=progress, should_stop=should_stop)
    for w in result.warnings:
        emit("warning", {"message": w}, None)
    if result.stopped:
        summary = {"out_dir": out_dir, "missing": []}
        emit("cancelled", summary, None)
        return summary
    save_avatar(out_dir, result, portrait=portrait, source_image=image_path, overwrite=job.overwrite)
    summary = {"out_dir": out_dir, "psnr": float(result.psnr_tuned),
               "shape": portrait.flame.shape[0].tolist(), "expression": portrait.flame.expression[0].tolist(),
               "fit_error_px": float(portrait.fit_error_px)}
    emit("done", summary, None)
    return summary


JOBS = {"neural": neural_job, "mesh": mesh_job, "invert": invert_job}
JOBS["track"] = track_job             # engine/performance_job.py: a clip -> an animation file


def run_job(job: Union[Job, dict], arrays: Dict[str, np.ndarray], emit: Emit,
            should_stop: Optional[StopFn] = None) -> dict:
    """Run one job (typed, or as it came over the wire); user errors raise Next3DError (the caller reports them),
    everything else propagates."""
    if isinstance(job, dict):
        job = job_from_dict(job)
    if isinstance(job, PingJob):
        import torch

        emit("pong", {"torch": torch.__version__, "cuda": bool(torch.cuda.is_available())}, None)
        return {}
    if job.threads > 0:
        import torch

        torch.set_num_threads(job.threads)
    return JOBS[job.kind](job, arrays, emit, should_stop or (lambda: False))


__all__ = ["run_job", "neural_job", "mesh_job", "invert_job", "camera_labels", "camera_warnings", "check_topology",
           "FrameInputs", "Next3DError", "clear_cache"]
