"""Rendering an animation sequence of one avatar to numbered PNGs (and a video), resumably.

- Frame sources give, per 0-based position i, the generator input v [5091, 3] and the camera label [25]; frame
  *numbers* (file names, --frames ranges) are `first_number + i` (1-based by default, like Blender).
- Each frame is written atomically as frame_00001.png. A re-run skips frames already on disk, so an interrupted
  render resumes, and a frame range can be split across processes or machines.
- Determinism: the renderer's random depth samples of frame n come from their own torch.Generator seeded with
  seed * 1_000_003 + n, drawn per frame and concatenated for a batch, so a frame does not depend on which run
  renders it. Batches are fixed groups of `batch_size` consecutive positions (0..B-1, B..2B-1, ...): a resumed or
  split run renders whole groups (and writes only the frames it owns), so frames are byte-identical whatever the
  interruption, with any batch size. (Different batch sizes give frames equal only to float rounding.)
- Ctrl-C stops between frames: the frame being rendered is finished and written, then SequenceInterrupted (a
  KeyboardInterrupt) is raised; a second Ctrl-C abandons the frame at once. No partial or temporary file remains.
- One folder, one render: the folder is locked for the whole render (core.io.folder_lock). Renders with the same
  settings share it (a --frames range each); any other is refused, naming the pid and command of the holder. A
  damaged settings record is refused rather than replaced, a frame on disk that is not a whole PNG is rendered
  again, temporaries of a killed run are removed, and a failed write is an OutputError saying what was kept.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import signal
import sys
import threading
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ..errors import InputError, OutputError
from ..io.atomic import write_bytes_atomic
from ..io.bounded_read import (READ_ERRORS, ZIP_ERRORS, BoundedReadError, json_loads, read_error_text, read_npy_header,
                               read_npz)
from ..io.folder_lock import FolderBusy, FolderLock
from ..io.images import ensure_writable_dir, png_is_whole, to_uint8, write_png
from ..io.mesh_files import read_mesh_input
from ..networks.next3d import AvatarIdentity, Next3DGenerator
from ..rendering.volume import RandomDraws
from .cameras import CameraTrack, FixedCamera, LabelCamera

PathLike = Union[str, os.PathLike]
IMAGE_MODES = ("image", "image_raw", "image_depth")
SEED_STRIDE = 1_000_003
SETTINGS_NAME = "next3d_sequence.json"  # what the frames in a folder were rendered with
STALE_TEMP_S = 60.0  # write_png's temporary files live for milliseconds; older ones are left by a killed run
MAX_RECORD_BYTES = 1 << 20  # a settings record is a few hundred bytes
# Temporaries that a killed run leaves in a sequence folder: frames and the record (core.io.atomic's
# `.<stem>-XXXXXXXX<suffix>`) and videos (core.sequence.video's, the same form).
_TEMPORARY = re.compile(r"\.(frame_\d+|next3d_sequence|video(_\d+-\d+)?)-[a-z0-9_]{8}\.(png|json|mp4|mkv|mov)$"
                        r"|\.next3d-write-test-[a-z0-9_]{8}$")


def frame_name(number: int) -> str:
    return f"frame_{number:05d}.png"


def frame_seed(seed: int, number: int) -> int:
    """Seed of the renderer's random draws for frame `number`."""
    return int(seed) * SEED_STRIDE + int(number)


def parse_frame_range(text: str) -> Tuple[int, int]:
    """'100-199' -> (100, 199) (inclusive frame numbers); '7' -> (7, 7)."""
    m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", str(text))
    if not m:
        raise InputError(f"--frames expects A-B with A <= B (frame numbers, e.g. 100-199), got {text!r}.")
    first = int(m.group(1))
    last = int(m.group(2)) if m.group(2) is not None else first
    if first > last:
        raise InputError(f"--frames expects A-B with A <= B, got {text!r}; write {last}-{first}.")
    return first, last


# ------------------------------------------------------------------------------------------------ frame sources


class FrameSource:
    """Frames at positions 0..len-1: `mesh(i)` -> v [n_vertices + n_landmarks, 3] (FLAME units), `camera(i)` ->
    label [25], and optionally `ws(i)` -> [num_ws, w_dim] when the avatar changes per frame (None: the caller's
    identity). `index_to_number(i)` names the files."""

    first_number: int = 1
    description: str = "frames"
    cameras: CameraTrack
    fps: Optional[float] = None          # the source's own frame rate, when it has one
    has_own_cameras: bool = False        # cameras came with the data (e.g. a FLAME animation's labels)

    def __len__(self) -> int:
        raise NotImplementedError

    def mesh(self, i: int) -> torch.Tensor:
        raise NotImplementedError

    def camera(self, i: int) -> torch.Tensor:
        return self.cameras.label(i)

    def ws(self, i: int) -> Optional[torch.Tensor]:
        return None

    def index_to_number(self, i: int) -> int:
        return self.first_number + i

    def number_to_index(self, number: int) -> int:
        return number - self.first_number

    @property
    def last_number(self) -> int:
        return self.first_number + len(self) - 1

    def set_cameras(self, cameras: CameraTrack) -> "FrameSource":
        """Use `cameras` (checked against the number of frames); returns self."""
        cameras.check_length(len(self))
        self.cameras = cameras
        return self

    def _init_common(self, cameras: Optional[CameraTrack], first_number: int) -> None:
        if first_number < 0:
            raise InputError(f"Frame numbers start at 0 or above; got first number {first_number}.")
        self.first_number = int(first_number)
        self.cameras = cameras if cameras is not None else FixedCamera()
        if len(self) < 1:
            raise InputError(f"The {self.description} has no frames.")
        self.cameras.check_length(len(self))


def _natural_key(name: str):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


class MeshFolderSource(FrameSource):
    """A folder of `<id>.obj` + `<id>_kpt2d.txt` pairs (the official reenactment layout), in natural name order."""

    def __init__(self, folder: PathLike, cameras: Optional[CameraTrack] = None, first_number: int = 1,
                 n_vertices: int = 5023, n_landmarks: int = 68):
        folder = Path(folder)
        if not folder.is_dir():
            raise InputError(f"Sequence folder {str(folder)!r} does not exist.")
        objs = sorted((p for p in folder.iterdir() if p.suffix.lower() == ".obj" and p.is_file()),
                      key=lambda p: _natural_key(p.stem))
        if not objs:
            raise InputError(f"{folder} has no <id>.obj meshes; a sequence folder holds one <id>.obj and one "
                             "<id>_kpt2d.txt (68 3-D landmarks) per frame, as in the official reenactment data.")
        missing = [p.name for p in objs if not p.with_name(p.stem + "_kpt2d.txt").is_file()]
        if missing:
            raise InputError(f"{len(missing)} meshes in {folder} have no landmark file (first: {missing[0]} needs "
                             f"{Path(missing[0]).stem}_kpt2d.txt); add them or remove those meshes.")
        self.folder, self.objs = folder, objs
        self.n_vertices, self.n_landmarks = n_vertices, n_landmarks
        self.description = f"mesh folder {folder.name}"
        self._init_common(cameras, first_number)

    def __len__(self) -> int:
        return len(self.objs)

    def mesh(self, i: int) -> torch.Tensor:
        obj = self.objs[i]
        return read_mesh_input(obj, obj.with_name(obj.stem + "_kpt2d.txt"), self.n_vertices, self.n_landmarks)[0]


class VertexArraySource(FrameSource):
    """Vertices + landmarks of every frame in one array [T, n_vertices + n_landmarks, 3]: an .npy file (memory-
    mapped), an .npz with `v` (or `vertices` [T, 5023, 3] and `landmarks` [T, 68, 3]), or an array in memory."""

    def __init__(self, data: Union[PathLike, np.ndarray, torch.Tensor], cameras: Optional[CameraTrack] = None,
                 first_number: int = 1, n_vertices: int = 5023, n_landmarks: int = 68):
        want = n_vertices + n_landmarks
        name = "vertex array"
        if isinstance(data, torch.Tensor):
            array = data.detach().cpu().numpy()
        elif isinstance(data, np.ndarray):
            array = data
        else:
            path = Path(data)
            name = path.name
            if not path.is_file():
                raise InputError(f"Sequence file {str(path)!r} does not exist.")
            try:
                if path.suffix.lower() == ".npy":
                    with open(path, "rb") as fh:   # its header checked against its size, then memory-mapped
                        read_npy_header(fh)
                    array = np.load(path, mmap_mode="r", allow_pickle=False)
                elif path.suffix.lower() == ".npz":
                    npz = read_npz(path)
                    if "v" in npz:
                        array = npz["v"]
                    elif "vertices" in npz and "landmarks" in npz:
                        array = np.concatenate([npz["vertices"], npz["landmarks"]], axis=1)
                    else:
                        raise InputError(f"{name} has arrays {sorted(npz)}; it needs 'v' [frames, {want}, 3], or "
                                         f"'vertices' [frames, {n_vertices}, 3] and 'landmarks' [frames, "
                                         f"{n_landmarks}, 3].")
                else:
                    raise InputError(f"Sequence file {name} must be .npy or .npz (or a folder of .obj meshes).")
            except InputError:
                raise
            except READ_ERRORS as exc:
                raise InputError(f"{name} cannot be read as a numeric array ({read_error_text(exc)}).") from None
        if array.ndim != 3 or array.shape[1:] != (want, 3):
            raise InputError(f"{name} has shape {tuple(array.shape)}; a vertex sequence must be [frames, {want}, 3]: "
                             f"{n_vertices} FLAME vertices then {n_landmarks} 3-D landmarks per frame.")
        self.array = array
        self.description = name
        self._init_common(cameras, first_number)

    def __len__(self) -> int:
        return int(self.array.shape[0])

    def mesh(self, i: int) -> torch.Tensor:
        v = np.array(self.array[i], dtype=np.float32)
        if not np.isfinite(v).all():
            raise InputError(f"Frame {self.index_to_number(i)} of {self.description} has NaN or infinite "
                             "coordinates.")
        return torch.from_numpy(v)


class StaticMeshSource(FrameSource):
    """One mesh for every frame (the camera or the avatar moves): e.g. the orbit video of gen_videos. `ws`, when
    given, is a callable i -> ws [num_ws, w_dim] (a latent interpolation); the identity is then built per frame."""

    def __init__(self, v: torch.Tensor, n_frames: int, cameras: Optional[CameraTrack] = None,
                 ws: Optional[Callable[[int], torch.Tensor]] = None, first_number: int = 1):
        v = torch.as_tensor(v, dtype=torch.float32)
        if v.ndim == 3 and v.shape[0] == 1:
            v = v[0]
        if v.ndim != 2 or v.shape[1] != 3:
            raise InputError(f"The mesh must be [vertices + landmarks, 3]; got {list(v.shape)}.")
        self.v, self.n_frames, self._ws = v, int(n_frames), ws
        self.description = "static mesh"
        self._init_common(cameras, first_number)

    def __len__(self) -> int:
        return self.n_frames

    def mesh(self, i: int) -> torch.Tensor:
        return self.v

    def ws(self, i: int) -> Optional[torch.Tensor]:
        return None if self._ws is None else self._ws(i)


class FlameSequenceSource(FrameSource):
    """FLAME parameters per frame (a core.flame FlameSequence, or an animation .npz/.json read with load_sequence),
    evaluated by a core.flame FlameModel into the generator's mesh input.

    The generator was trained with the global head rotation zeroed (docs/flame.md#head-pose), so the vertices
    leave it out and, with `fold_head_pose`, each frame's camera is moved instead
    (core.flame.conversions.fold_head_pose_into_label, about the FLAME root joint). Cameras: the given track, else
    the animation's own labels, else the fixed camera."""

    def __init__(self, sequence, flame, cameras: Optional[CameraTrack] = None, first_number: int = 1,
                 fold_head_pose: bool = True):
        from ..flame.animation import FlameSequence, load_sequence

        if not isinstance(sequence, FlameSequence):
            path = Path(sequence)
            sequence = load_sequence(path)
            self.description = f"FLAME animation {path.name}"
        else:
            self.description = "FLAME animation"
        self.sequence, self.flame, self.fold_head_pose = sequence, flame, bool(fold_head_pose)
        self.fps = float(sequence.fps)
        if cameras is None and sequence.cameras is not None:
            cameras = LabelCamera(sequence.cameras, source=f"cameras of the {self.description}")
            self.has_own_cameras = True
        self._outputs = {}
        self._init_common(cameras, first_number)

    def __len__(self) -> int:
        return len(self.sequence)

    def _output(self, i: int):
        if i not in self._outputs:
            if len(self._outputs) >= 64:
                self._outputs.clear()
            with torch.no_grad():
                self._outputs[i] = self.flame(self.sequence.frames[i])  # global rotation left out
        return self._outputs[i]

    def mesh(self, i: int) -> torch.Tensor:
        return self._output(i).mesh_input()[0].detach().to("cpu", torch.float32)

    def camera(self, i: int) -> torch.Tensor:
        label = self.cameras.label(i)
        rotation = self.sequence.frames.global_rotation[i:i + 1].detach().to("cpu", torch.float32)
        if not self.fold_head_pose or not bool((rotation != 0).any()):
            return label
        from ..flame.conversions import fold_head_pose_into_label

        pivot = self._output(i).joints[:, 0].detach().to("cpu", torch.float32)
        return fold_head_pose_into_label(label[None], rotation, pivot=pivot)[0]


def is_flame_animation(path: PathLike) -> bool:
    """A FLAME-parameter animation file (.json, or an .npz with a `format` entry / FLAME parameter arrays) rather
    than a vertex array."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        return True
    if path.suffix.lower() != ".npz" or not path.is_file():
        return False
    try:   # the member names only: a damaged archive is reported by the reader that then opens it
        with zipfile.ZipFile(path) as archive:
            names = {n[:-4] if n.endswith(".npy") else n for n in archive.namelist()}
    except (OSError, ValueError) + ZIP_ERRORS:
        return False
    return "format" in names or ("v" not in names and "vertices" not in names
                                 and bool(names & {"expression", "jaw", "shape", "eyes", "neck"}))


def sequence_source(path: PathLike, cameras: Optional[CameraTrack] = None, n_vertices: int = 5023,
                    n_landmarks: int = 68, flame=None) -> FrameSource:
    """A folder of obj + kpt2d pairs, an .npy / .npz vertex array, or a FLAME animation (.npz / .json, which needs
    `flame`, a core.flame FlameModel)."""
    path = Path(path)
    if is_flame_animation(path):
        if flame is None:
            raise InputError(f"{path.name} holds FLAME parameters; give the FLAME model that turns them into meshes "
                             "(--flame-model generic_model.pkl, or its converted .npz).")
        return FlameSequenceSource(path, flame, cameras)
    if path.is_dir():
        return MeshFolderSource(path, cameras, n_vertices=n_vertices, n_landmarks=n_landmarks)
    if path.suffix.lower() in (".npy", ".npz"):
        return VertexArraySource(path, cameras, n_vertices=n_vertices, n_landmarks=n_landmarks)
    if not path.exists():
        raise InputError(f"Sequence {str(path)!r} does not exist. Give a folder of <id>.obj + <id>_kpt2d.txt files, "
                         "an .npy/.npz array of vertices [frames, 5091, 3], or a FLAME animation (.npz/.json).")
    raise InputError(f"Sequence {path.name} is neither a folder of <id>.obj + <id>_kpt2d.txt files, an .npy/.npz "
                     "array of vertices [frames, 5091, 3], nor a FLAME animation (.npz/.json).")


# --------------------------------------------------------------------------------------------------- rendering


@dataclass
class SequenceResult:
    out_dir: Path
    frame_range: Tuple[int, int]          # the numbers this call was asked for, inclusive
    frame_paths: List[Path]               # every frame of the range, in order (on disk unless interrupted)
    written: List[int] = field(default_factory=list)   # frame numbers rendered and written by this call
    skipped: List[int] = field(default_factory=list)   # already on disk
    redone: List[int] = field(default_factory=list)    # on disk but not whole PNGs: rendered again
    interrupted: bool = False
    video: Optional[Path] = None
    seconds: float = 0.0

    @property
    def missing(self) -> List[int]:
        first, last = self.frame_range
        return [n for n, p in zip(range(first, last + 1), self.frame_paths) if not p.is_file()]

    @property
    def frames_per_second(self) -> float:
        return len(self.written) / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        first, last = self.frame_range
        text = (f"wrote {len(self.written)} frames to {self.out_dir} in {self.seconds:.1f} s"
                + (f" ({self.frames_per_second:.2f} frames/s)" if self.written else "")
                + (f"; {len(self.skipped)} of frames {first}-{last} were already there" if self.skipped else "")
                + (f"; {len(self.redone)} damaged frames were rendered again" if self.redone else ""))
        if self.video is not None:
            text += f"; video {self.video}"
        return text

    def resume_hint(self) -> str:
        missing = len(self.missing)
        return (f"Stopped: {len(self.written)} frames written by this run, {missing} of frames "
                f"{self.frame_range[0]}-{self.frame_range[1]} still to render. Run the same command again to "
                "resume (leave out --overwrite): frames already on disk are skipped.")


class SequenceInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped a sequence render between frames; `result` says what was written."""

    def __init__(self, result: SequenceResult):
        super().__init__(result.resume_hint())
        self.result = result


class _StopRequest:
    """SIGINT handler for the duration of a render (main thread only): the first Ctrl-C asks to stop after the
    current frame, a second one raises KeyboardInterrupt at once, except while a PNG is being written."""

    def __init__(self):
        self.requested = False
        self.writing = False
        self._previous = None
        self._installed = False

    def _handler(self, signum, frame):
        if self.requested and not self.writing:
            raise KeyboardInterrupt
        if not self.requested:
            try:  # a raw write: buffered streams may be mid-write (the progress bar) when the signal arrives
                os.write(2, b"\nCtrl-C: stopping after the current frame (press Ctrl-C again to stop at once).\n")
            except OSError:
                pass
        self.requested = True

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            try:
                self._previous = signal.signal(signal.SIGINT, self._handler)
                self._installed = True
            except (ValueError, OSError):
                self._installed = False
        return self

    def __exit__(self, *exc):
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)
        return False

    @contextlib.contextmanager
    def writing_file(self):
        self.writing = True
        try:
            yield
        finally:
            self.writing = False


def _frame_pixels(out, k: int, image_mode: str) -> np.ndarray:
    if image_mode == "image":
        return to_uint8(out.image[k])
    if image_mode == "image_raw":
        return to_uint8(out.image_raw[k])
    depth = -out.image_depth[k].float()  # near = bright, normalized per frame as gen_videos does
    lo, hi = depth.min(), depth.max()
    depth = (depth - lo) / (hi - lo).clamp_min(1e-12) * 2 - 1
    return to_uint8(depth.expand(3, -1, -1))


def _draws(generator: Next3DGenerator, numbers: Sequence[int], seed: int, device) -> RandomDraws:
    """Per-frame renderer draws (on the CPU, so a frame does not depend on the device's generator), concatenated
    in the order render_planes expects: stratified [B, R, S, 1], importance [B*R, S_importance]."""
    cfg = generator.config
    rays = cfg.neural_rendering_resolution ** 2
    s, s_imp = cfg.rendering.depth_resolution, cfg.rendering.depth_resolution_importance
    strat, imp = [], []
    for n in numbers:
        g = torch.Generator().manual_seed(frame_seed(seed, n))
        strat.append(torch.rand(1, rays, s, 1, generator=g))
        imp.append(torch.rand(rays, max(s_imp, 0), generator=g))
    return RandomDraws(torch.cat(strat).to(device), torch.cat(imp).to(device))


def _read_record(out_dir: Path) -> Tuple[str, Optional[dict], str]:
    """('none' | 'ok' | 'damaged', the recorded settings, why it is damaged)."""
    path = out_dir / SETTINGS_NAME
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_RECORD_BYTES + 1)
    except FileNotFoundError:
        return "none", None, ""
    except OSError as exc:
        return "damaged", None, f"it cannot be read: {exc.strerror or exc}"
    if len(data) > MAX_RECORD_BYTES:
        return "damaged", None, f"it is larger than {MAX_RECORD_BYTES:,} bytes"
    try:
        value = json_loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, BoundedReadError) as exc:
        return "damaged", None, f"it is not valid JSON: {' '.join(str(exc).split())[:120]}"
    if not isinstance(value, dict):
        return "damaged", None, f"it holds a JSON {type(value).__name__}, not a record of settings"
    return "ok", value, ""


def _plain(settings: dict) -> dict:
    return json.loads(json.dumps(settings, default=str, sort_keys=True))


def settings_differ(out_dir: PathLike, settings: dict) -> bool:
    """True if `out_dir` holds frames recorded with settings other than these, or a damaged record (a render there
    would be refused without overwrite)."""
    state, old, _ = _read_record(Path(out_dir))
    return state == "damaged" or (state == "ok" and old != _plain(settings))


def _damaged_record(out_dir: Path, why: str) -> InputError:
    return InputError(f"The settings record {out_dir / SETTINGS_NAME} is damaged ({why}), so the frames in {out_dir} "
                      "cannot be matched to this render. Delete the folder to start over, or delete only "
                      f"{SETTINGS_NAME} if its frames were made with these very settings, then run the command again.")


def _other_settings(out_dir: Path, old: dict, settings: dict, running: str = "") -> InputError:
    diffs = [f"{k}: {old.get(k)!r} there, {settings.get(k)!r} now" for k in sorted(set(old) | set(settings))
             if old.get(k) != settings.get(k)]
    return InputError(f"{out_dir} holds frames rendered with other settings ({'; '.join(diffs[:4])}){running}. Use "
                      "--overwrite (overwrite=True) to replace them, or choose another output folder.")


def _check_settings(out_dir: Path, settings: Optional[dict], overwrite: bool) -> None:
    """Refuse to mix frames of different renders in one folder: the settings of the frames on disk are kept in
    next3d_sequence.json and must equal this run's unless `overwrite`. The caller holds the folder alone."""
    if settings is None:
        return
    settings = _plain(settings)
    state, old, why = _read_record(out_dir)
    if state == "ok" and old == settings:
        return
    if state == "damaged" and not overwrite:
        raise _damaged_record(out_dir, why)
    if state == "ok" and not overwrite:
        raise _other_settings(out_dir, old, settings)
    try:
        write_bytes_atomic(out_dir / SETTINGS_NAME, json.dumps(settings, indent=1, sort_keys=True).encode("utf-8"))
    except OSError as exc:
        raise OutputError(f"Cannot write the settings record {out_dir / SETTINGS_NAME} ({exc.strerror or exc}); "
                          "nothing was rendered. Free some disk space or make the folder writable, then run the "
                          "command again.") from None


def _check_settings_shared(out_dir: Path, settings: dict, overwrite: bool, lock: FolderLock) -> None:
    """Join renders running in the folder: only with their very settings, and without --overwrite (which would
    render their frames again under them)."""
    settings = _plain(settings)
    state, old, why = _read_record(out_dir)
    if state == "damaged":
        raise _damaged_record(out_dir, why)
    running = f" by a render running now ({lock.describe_holders()})"
    if state == "ok" and old != settings and not overwrite:
        raise _other_settings(out_dir, old, settings, running)
    if state != "ok" or old != settings or overwrite:
        raise lock.busy()


def _lock_folder(out_dir: Path, settings: Optional[dict], overwrite: bool) -> FolderLock:
    """Hold `out_dir` for this render: alone while the settings record is checked (and written) and a killed run's
    temporaries are removed, then shared with renders of the same settings (without settings, alone throughout)."""
    lock = FolderLock(out_dir, "render")
    try:
        lock.acquire(shared=False)
    except FolderBusy:
        if settings is None:
            raise
        # Others render here: join them if the settings are theirs. A holder alone keeps the folder only while it
        # writes the record, so wait a moment for its shared hold.
        lock.acquire(shared=True, wait=5.0)
    try:
        if lock.exclusive:
            _check_settings(out_dir, settings, overwrite)
            _remove_temporaries(out_dir, min_age_s=0)
            if settings is not None:
                lock.downgrade()
        else:
            _check_settings_shared(out_dir, settings, overwrite, lock)
            _remove_temporaries(out_dir, min_age_s=STALE_TEMP_S)
    except BaseException:
        lock.release()
        raise
    return lock


def _remove_temporaries(out_dir: Path, min_age_s: float) -> None:
    """Delete the temporaries of killed runs (frames, the record, videos) not touched for `min_age_s` seconds (0:
    all, when no other render uses the folder; a write in progress touches its file every few milliseconds)."""
    now = time.time()
    try:
        entries = list(out_dir.iterdir())
    except OSError:
        return
    for p in entries:
        if _TEMPORARY.match(p.name):
            try:
                if now - p.stat().st_mtime >= min_age_s:
                    p.unlink()
            except OSError:
                pass


def _write_failure(result: "SequenceResult", path: Path, exc: OSError) -> OutputError:
    full = exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
    fix = "free some disk space" if full else "make the folder writable again"
    redone_left = set(result.redone) - set(result.written)
    first, last = result.frame_range
    kept = sum(1 for n, p in zip(range(first, last + 1), result.frame_paths) if p.is_file() and n not in redone_left)
    return OutputError(f"Could not write {path} ({exc.strerror or exc}). Kept: {kept} whole frames of {first}-{last} "
                       f"in {result.out_dir} ({len(result.written)} written by this run); {fix}, then run the same "
                       "command again to resume (frames on disk are skipped).")


def render_sequence(generator: Next3DGenerator, identity: Optional[AvatarIdentity], frames: FrameSource,
                    out_dir: PathLike, *, frame_range: Optional[Tuple[int, int]] = None, batch_size: int = 1,
                    overwrite: bool = False, seed: int = 0, progress: bool = True, write_video: bool = True,
                    fps: float = 30, image_mode: str = "image", video_path: Optional[PathLike] = None,
                    noise_mode: str = "const", settings: Optional[dict] = None,
                    should_stop: Optional[Callable[[], bool]] = None,
                    on_frame: Optional[Callable[[int, Path], None]] = None) -> SequenceResult:
    """Render the frames of `frame_range` (inclusive frame numbers; default all) of one avatar into `out_dir`.

    `identity` is computed once by the caller (`generator.make_identity(ws)`); it may be None when the source gives
    ws per frame. Frames already on disk are skipped unless `overwrite`. When every frame of the sequence is on
    disk at the end, the video `video.mp4` (or `video_path`) is written; when only a sub-range was asked for and it
    is complete, `video_<first>-<last>.mp4` covering it. `settings` (a JSON-able dict of what determines the
    pixels: seed, model, camera, ...) is recorded in the folder, and a run with other settings is refused unless
    `overwrite`, so frames of two different renders never mix. `should_stop()` is polled between batches (returns a
    result with interrupted=True); `on_frame(number, path)` is called after each written frame.

    Raises SequenceInterrupted (a KeyboardInterrupt) on Ctrl-C, after the current frame."""
    if image_mode not in IMAGE_MODES:
        raise InputError(f"image_mode must be one of {IMAGE_MODES}; got {image_mode!r}.")
    if int(batch_size) < 1:
        raise InputError(f"The batch size must be at least 1; got {batch_size}.")
    batch_size = int(batch_size)
    if write_video:
        from .video import check_fps

        fps = check_fps(fps)
    n_total = len(frames)
    first_all, last_all = frames.first_number, frames.last_number
    first, last = frame_range if frame_range is not None else (first_all, last_all)
    if first > last:
        raise InputError(f"The frame range {first}-{last} is empty; give first <= last.")
    if first < first_all or last > last_all:
        raise InputError(f"Frames {first}-{last} are outside the sequence, whose frames are numbered "
                         f"{first_all}-{last_all} ({n_total} frames); choose a range inside it.")
    if identity is None and frames.ws(frames.number_to_index(first)) is None:
        raise InputError("render_sequence needs the avatar identity (generator.make_identity(ws)) unless the frame "
                         "source gives ws per frame.")
    out_dir = ensure_writable_dir(out_dir)
    lock = _lock_folder(out_dir, settings, overwrite)
    try:
        return _render_locked(generator, identity, frames, out_dir, first, last, batch_size, overwrite, seed,
                              progress, write_video, fps, image_mode, video_path, noise_mode, should_stop, on_frame)
    finally:
        lock.release()


def _render_locked(generator, identity, frames, out_dir, first, last, batch_size, overwrite, seed, progress,
                   write_video, fps, image_mode, video_path, noise_mode, should_stop, on_frame) -> SequenceResult:
    n_total = len(frames)
    numbers = list(range(first, last + 1))
    paths = [out_dir / frame_name(n) for n in numbers]
    result = SequenceResult(out_dir=out_dir, frame_range=(first, last), frame_paths=paths)
    # A frame cut short (a full disk, a damaged copy) is not whole: rendered again, not skipped.
    on_disk = {n for n, p in zip(numbers, paths) if not overwrite and p.is_file()}
    result.redone = [n for n, p in zip(numbers, paths) if n in on_disk and not png_is_whole(p)]
    todo = [n for n in numbers if n not in on_disk or n in result.redone]
    todo_set = set(todo)
    result.skipped = [n for n in numbers if n not in todo_set]
    groups = sorted({frames.number_to_index(n) // batch_size for n in todo})
    device = next(generator.parameters()).device
    start = time.perf_counter()
    stopped_by_caller = False

    bar = None
    if progress and todo:
        from tqdm import tqdm
        bar = tqdm(total=len(todo), unit="frame", desc="rendering", dynamic_ncols=True, file=sys.stderr,
                   smoothing=0.1)
    try:
        with _StopRequest() as stop, torch.no_grad():
            for g in groups:
                if stop.requested:
                    break
                if should_stop is not None and should_stop():
                    stopped_by_caller = True
                    break
                indices = list(range(g * batch_size, min((g + 1) * batch_size, n_total)))
                group_numbers = [frames.index_to_number(i) for i in indices]
                try:   # a frame's file found bad partway through: what is on disk stays, and says so
                    v = torch.stack([frames.mesh(i).to(torch.float32) for i in indices]).to(device)
                    c = torch.stack([frames.camera(i).to(torch.float32)[:25] for i in indices]).to(device)
                    ws = [frames.ws(i) for i in indices]
                except InputError as exc:
                    if not (result.written or result.skipped):
                        raise
                    raise InputError(f"{str(exc).rstrip('.')}. The {len(result.written) + len(result.skipped)} "
                                     "frames on disk are kept: fix the file and run the same command again to "
                                     "resume.") from None
                if ws[0] is not None:
                    ident = generator.make_identity(torch.stack([w.reshape(w.shape[-2:]) for w in ws]).to(device),
                                                    noise_mode=noise_mode)
                else:
                    ident = identity
                out = generator.render_frame(ident, v, c, noise_mode=noise_mode,
                                             draws=_draws(generator, group_numbers, seed, device))
                for k, number in enumerate(group_numbers):
                    if number not in todo_set:
                        continue  # outside the range or already on disk: rendered only to keep batches fixed
                    path = out_dir / frame_name(number)
                    pixels = _frame_pixels(out, k, image_mode)
                    with stop.writing_file():
                        try:
                            write_png(path, pixels)
                        except OSError as exc:  # a full disk, a folder made read-only: say what is kept
                            raise _write_failure(result, path, exc) from None
                    result.written.append(number)
                    if bar is not None:
                        bar.update(1)
                    if on_frame is not None:
                        on_frame(number, path)
                del out, v, c, ident
            interrupted_by_user = stop.requested
    except KeyboardInterrupt:  # a second Ctrl-C: the frame in progress is abandoned (write_png leaves nothing)
        interrupted_by_user = True
    finally:
        if bar is not None:
            bar.close()
    result.seconds = time.perf_counter() - start
    if interrupted_by_user:
        result.interrupted = True
        raise SequenceInterrupted(result)
    if stopped_by_caller:
        result.interrupted = True
        return result

    if write_video:
        result.video = _maybe_write_video(frames, out_dir, (first, last), fps, video_path)
    return result


def _maybe_write_video(frames: FrameSource, out_dir: Path, frame_range: Tuple[int, int], fps: float,
                       video_path: Optional[PathLike]) -> Optional[Path]:
    from .video import write_video

    first, last = frame_range
    whole = [out_dir / frame_name(n) for n in range(frames.first_number, frames.last_number + 1)]
    if all(p.is_file() for p in whole):
        target, paths = Path(video_path) if video_path else out_dir / "video.mp4", whole
    else:
        part = [out_dir / frame_name(n) for n in range(first, last + 1)]
        if not all(p.is_file() for p in part):
            return None
        target = out_dir / f"video_{first:05d}-{last:05d}.mp4"
        paths = part
    return write_video(paths, target, fps)  # always (re)written: cheap next to rendering, and --fps may differ
