"""Running the engine's jobs: `run_job` in the worker process (worker.py) or, in background mode, in Blender's own
process. No bpy here; torch and core are imported inside the functions.

A job is a typed description (job_specs.py: its fields and defaults) plus named numpy arrays (the per-frame rig
state); both cross a process boundary unchanged (worker.py's wire format). Job kinds:

  "render"   frames -> PNGs in out_dir (core.sequence.render_sequence: atomic, resumable, settings-checked), then
             a video of them. Emits "begin", one "frame" per written frame, then "done" (or "cancelled").
  "preview"  one frame -> emits "image" with the pixels (no file).
  "mesh"     one mesh per frame (core.mesh.extract_mesh, FLAME units) -> emits "mesh" per frame with vertices,
             faces and colours.
  "invert"   a portrait photo -> a one-shot avatar folder (core.portrait + core.inversion: crop, FLAME fit, pivotal
             tuning). Emits "begin", "step" per optimisation step, then "done" with the folder and the fitted FLAME
             shape (or "cancelled": nothing is written).
  "ping"     emits "pong" (worker start-up check).

Per-frame arrays, N frames, all from the rig's evaluated mesh (blender/scene.py, core/flame/mesh_pose.py):
numbers [N] (Blender frame numbers), vertices [N, V, 3] and landmarks [N, 68, 3] float32 (the head in FLAME space
with its rigid pose removed: the generator's mesh input), cam2world [N, 4, 4] (OpenCV camera in that head's frame,
the head pose folded in, see convert.py) and intrinsics [N, 3, 3] (normalized by the square side, see
convert.square_framing). Beside them, once: faces [T, 3] int32, the rig's triangles, checked against the
generator's own (a generator rasterizes its triangles with the vertices it is given). A FLAME-sized frame is 61 kB
on the wire (worker.py streams array bytes after a small JSON header, so the length of a render is no limit).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..core import session
from ..core.errors import InputError, Next3DError
from .heads import HeadSpec, head_arrays, topology_mismatch
from .job_specs import (AvatarJob, InvertJob, Job, MeshJob, ModelSpec, PingJob, PreviewJob, RenderJob,
                        job_from_dict)
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
    (weights replaced in place are reloaded) and device."""
    return ("model", model.source, model.path, session.file_digest(model_path(model)), device)


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
        return loaded.generator, loaded.description

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


def frame_source(inputs: FrameInputs, first: int, last: int):
    """A core.sequence FrameSource over Blender frame numbers first..last (only the job's frames are evaluated;
    render_sequence asks only for the frames it renders)."""
    from ..core.sequence.render import FrameSource

    class RigFrameSource(FrameSource):
        description = "Blender animation"

        def __init__(self):
            self.first_number = int(first)
            self._n = int(last) - int(first) + 1

        def __len__(self) -> int:
            return self._n

        def mesh(self, i: int):
            return inputs.mesh_input(self.index_to_number(i))

        def camera(self, i: int):
            return inputs.label(self.index_to_number(i))

    return RigFrameSource()


# ------------------------------------------------------------------------------------------------ framing

class FramedGenerator:
    """The generator with its square output resized to the render's square side and centre-cropped to W x H
    (core.sequence.render_sequence writes what `render_frame` returns)."""

    def __init__(self, generator, side: int, x0: int, y0: int, width: int, height: int):
        self.generator = generator
        self.config = generator.config
        self.side, self.x0, self.y0, self.width, self.height = int(side), int(x0), int(y0), int(width), int(height)

    def parameters(self):
        return self.generator.parameters()

    def make_identity(self, *args, **kwargs):
        return self.generator.make_identity(*args, **kwargs)

    def frame(self, image):
        import torch.nn.functional as F

        res = image.shape[-1]
        if res != self.side:
            image = F.interpolate(image.float(), size=(self.side, self.side), mode="bilinear", align_corners=False,
                                  antialias=self.side < res)
        return image[..., self.y0:self.y0 + self.height, self.x0:self.x0 + self.width]

    def render_frame(self, *args, **kwargs):
        from dataclasses import replace

        out = self.generator.render_frame(*args, **kwargs)
        return replace(out, image=self.frame(out.image))


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


def _runs(numbers: Sequence[int]) -> List[Tuple[int, int]]:
    """Consecutive runs of sorted frame numbers: [1, 2, 3, 10, 20, 21] -> [(1, 3), (10, 10), (20, 21)]."""
    runs: List[Tuple[int, int]] = []
    for n in sorted(set(int(x) for x in numbers)):
        if runs and n == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], n)
        else:
            runs.append((n, n))
    return runs


def render_job(job: RenderJob, arrays: Dict[str, np.ndarray], emit: Emit, should_stop: StopFn) -> dict:
    from ..core.sequence.render import SequenceInterrupted, frame_name, render_sequence
    from ..core.sequence.video import write_video

    n, generator, description, labels, identity = _prepare(job, arrays, emit)
    side, x0, y0, w, h = job.framing()
    out_dir = Path(job.out_dir)
    if not job.out_dir:
        raise InputError("No output folder is set; set the scene's output path (Output properties > Output).")
    numbers = sorted(int(x) for x in arrays["numbers"])
    first_all = job.sequence_first if job.sequence_first is not None else numbers[0]
    last_all = job.sequence_last if job.sequence_last is not None else numbers[-1]
    framed = FramedGenerator(generator, side, x0, y0, w, h)
    source = frame_source(FrameInputs(arrays, labels), min(first_all, numbers[0]), max(last_all, numbers[-1]))
    # The rig's meshes arrive per frame, so no FLAME file is recorded (as `next3d render` for mesh sequences).
    settings = session.render_record(model_path(job.model), job_avatar(job), sample_seed=job.sample_seed,
                                     width=w, height=h, head=job.head.kind)
    on_disk = [k for k in numbers if (out_dir / frame_name(k)).is_file()] if not job.overwrite else []
    emit("begin", {"total": len(numbers), "skipped": len(on_disk), "out_dir": str(out_dir),
                   "description": description}, None)
    done = {"count": len(on_disk)}
    written: List[int] = []

    def on_frame(number: int, path: Path) -> None:
        done["count"] += 1
        written.append(number)
        emit("frame", {"number": number, "path": str(path), "done": done["count"], "total": len(numbers)}, None)

    start = time.perf_counter()
    interrupted = False
    for first, last in _runs(numbers):
        try:
            result = render_sequence(framed, identity, source, out_dir, frame_range=(first, last),
                                     overwrite=job.overwrite, seed=job.sample_seed,
                                     progress=False, write_video=False, settings=settings,
                                     should_stop=should_stop, on_frame=on_frame)
        except SequenceInterrupted:
            interrupted = True
            break
        if result.interrupted:
            interrupted = True
            break
    paths = [out_dir / frame_name(k) for k in numbers]
    summary = {"written": written, "out_dir": str(out_dir), "seconds": time.perf_counter() - start,
               "missing": [k for k, p in zip(numbers, paths) if not p.is_file()], "video": None,
               "description": description}
    if interrupted:
        emit("cancelled", summary, None)
        return summary
    if job.write_video and not summary["missing"]:
        seq = [out_dir / frame_name(k) for k in range(first_all, last_all + 1)]
        whole = job.keyframes_only or all(p.is_file() for p in seq)
        if whole:
            video_frames, target = (paths if job.keyframes_only else seq), out_dir / "video.mp4"
        else:
            video_frames, target = paths, out_dir / f"video_{numbers[0]:05d}-{numbers[-1]:05d}.mp4"
        summary["video"] = str(write_video(video_frames, target, fps=job.fps))
    emit("done", summary, None)
    return summary


def preview_job(job: PreviewJob, arrays: Dict[str, np.ndarray], emit: Emit, should_stop: StopFn) -> dict:
    import torch

    from ..core.io.images import to_uint8
    from ..core.sequence.render import frame_seed

    n, generator, description, labels, identity = _prepare(job, arrays, emit)
    side, x0, y0, w, h = job.framing()
    framed = FramedGenerator(generator, side, x0, y0, w, h)
    number = int(arrays["numbers"][0])
    src = FrameInputs(arrays, labels)
    device = next(generator.parameters()).device
    with torch.no_grad():
        v = src.mesh_input(number)[None].to(device)
        c = src.label(number)[None].to(device)
        rng = torch.Generator(device=device).manual_seed(frame_seed(job.sample_seed, number))
        out = framed.render_frame(identity, v, c, generator=rng)
    pixels = to_uint8(out.image[0])
    emit("image", {"number": number, "width": w, "height": h, "description": description}, {"pixels": pixels})
    return {"number": number}


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
    portrait = preprocess_portrait(image, flame, resolution=generator.config.image_resolution, source=image_path)
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


JOBS = {"render": render_job, "preview": preview_job, "mesh": mesh_job, "invert": invert_job}
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


__all__ = ["run_job", "render_job", "preview_job", "mesh_job", "invert_job", "camera_labels", "camera_warnings",
           "check_topology", "FramedGenerator", "FrameInputs", "frame_source",
           "Next3DError", "clear_cache"]
