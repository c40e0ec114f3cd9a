"""What a job asks of the engine: typed descriptions of the jobs (neural, mesh, invert, ping; track:
performance_job.py), with their defaults written once, and their wire form.

The operators (blender/operators.py) build these; jobs.py runs them, in Blender's process or in the worker. To the
worker a job travels as a flat JSON object beside the per-frame arrays (worker.py's wire format): `to_dict` writes
it, `kind` naming the type, and `job_from_dict` reads it back, filling what is missing with the defaults below and
refusing values of the wrong type with an InputError. Unknown keys are ignored. Construction checks and converts
the values the same way (a float for an int field becomes an int, ...), so a job built in Blender's process runs
exactly as its wire form does in the worker.
"""

from __future__ import annotations

import functools
import numbers
import typing
from dataclasses import MISSING, dataclass, field, fields
from typing import ClassVar, Dict, Optional, Type, Union

from ..core.errors import InputError
from .heads import HeadSpec


@dataclass(frozen=True)
class ModelSpec:
    """Which generator, on which device."""

    source: str = "default"    # default (the bundled model) | official (a .pkl) | project (a .safetensors)
    path: str = ""             # the file, for official and project
    device: str = "cpu"        # cpu | cuda (the CPU, with a warning, when the worker's torch sees no GPU)
    precision: str = "fp32"    # how the networks compute: fp32 | fp32-fast | bf16 (core/networks/precision.py)

    def __post_init__(self) -> None:
        _check_fields(self)

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: dict) -> "ModelSpec":
        return cls(**_present_fields(cls, d, "model"))


@dataclass(frozen=True, kw_only=True)
class EngineJob:
    """What every engine job names: the generator, the head that drives it, where converted FLAME files are cached
    and how many CPU threads torch may use."""

    kind: ClassVar[str] = ""
    missing_message: ClassVar[str] = "The {kind} job lacks {names}."

    model: ModelSpec = field(default_factory=ModelSpec)
    head: HeadSpec = field(default_factory=HeadSpec)
    cache_dir: str = ""        # "": the engine's default cache folder
    threads: int = 0           # 0: torch's default

    def __post_init__(self) -> None:
        _check_fields(self)

    def to_dict(self) -> dict:
        out = {"kind": self.kind}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = value.to_dict() if isinstance(value, (ModelSpec, HeadSpec)) else value
        return out

    @classmethod
    def from_dict(cls, d: dict):
        return cls(**_present_fields(cls, d, cls.kind))


@dataclass(frozen=True, kw_only=True)
class AvatarJob(EngineJob):
    """A job over the rig's frames: the avatar is drawn from `seed`, or is a photo avatar's latent."""

    seed: int = 0
    truncation_psi: float = 0.7
    truncation_cutoff: int = 14    # 0: every layer truncated
    latent_path: str = ""          # a photo avatar's ws (latent.npy), which replace the seed's
    sample_seed: int = 0           # the renderer's depth-sample noise (each frame derives its own)
    rig_name: str = ""             # the rendered mesh object, for messages


@dataclass(frozen=True, kw_only=True)
class NeuralJob(AvatarJob):
    """The generator's frames for the render engine (blender/render_engine.py): per frame an "image" reply with
    `rgb` [S, S, 3] at the square side S and `depth` [R, R] (ray distance, as volume-rendered), seen by the
    virtual camera of the job's arrays; frames whose digest (engine/frame_cache.py) is in `frame_cache` are read
    back instead of rendered. No files besides the cache: placing, matting and writing are Blender's side."""

    kind: ClassVar[str] = "neural"

    side: int = 512
    frame_cache: str = ""              # the cache folder ("": no cache)


@dataclass(frozen=True, kw_only=True)
class MeshJob(AvatarJob):
    """One mesh per frame, in FLAME units, with vertex colours."""

    kind: ClassVar[str] = "mesh"

    resolution: int = 128              # lattice points per axis
    level: Optional[float] = None      # the density of the surface (None: core.mesh.surface_level picks it)
    keep_background: bool = False      # the whole box, backdrop included (docs/mesh_extraction.md#head-region)


@dataclass(frozen=True, kw_only=True)
class InvertJob(EngineJob):
    """A portrait photo -> a one-shot avatar folder (crop, FLAME fit, pivotal tuning)."""

    kind: ClassVar[str] = "invert"

    image_path: str = ""
    out_dir: str = ""
    face: int = 0                      # which face of a photo with several, 1 = leftmost; 0: the largest
    seed: int = 0
    latent_steps: int = 450            # the paper's
    tune_steps: int = 500              # the paper's
    overwrite: bool = False
    vgg16_path: str = ""               # "": pixel and structural losses only
    lpips_path: str = ""               # "": equal weights per VGG layer


@dataclass(frozen=True)
class PingJob:
    """The worker's start-up check: replies "pong" with torch's version."""

    kind: ClassVar[str] = "ping"

    def to_dict(self) -> dict:
        return {"kind": self.kind}

    @classmethod
    def from_dict(cls, d: dict) -> "PingJob":
        return cls()


Job = Union[NeuralJob, MeshJob, InvertJob, PingJob]
JOB_TYPES: Dict[str, Type] = {t.kind: t for t in (NeuralJob, MeshJob, InvertJob, PingJob)}
# engine/performance_job.py adds TrackJob ("track") here when imported (jobs.py imports it).


def job_from_dict(d: dict) -> Job:
    """The typed job a wire dict describes; InputError for an unknown kind or a value of the wrong type."""
    kind = d.get("kind")
    job_type = JOB_TYPES.get(kind) if isinstance(kind, str) else None
    if job_type is None:
        raise InputError(f"Unknown job kind {kind!r}.")
    return job_type.from_dict(d)


# ------------------------------------------------------------------------------------------------ checking

def _present_fields(cls, d: dict, what: str) -> dict:
    """The values `d` gives for the fields of dataclass `cls`: absent or null ones are left to the defaults."""
    if not isinstance(d, dict):
        raise InputError(f"The {what} description should be a JSON object, not {type(d).__name__}.")
    present = {f.name: d[f.name] for f in fields(cls) if d.get(f.name) is not None}
    missing = [f.name for f in fields(cls)
               if f.name not in present and f.default is MISSING and f.default_factory is MISSING]
    if missing:
        raise InputError(getattr(cls, "missing_message", "The {kind} lacks {names}.").format(
            kind=what, names=", ".join(missing)))
    return present


@functools.lru_cache(maxsize=None)
def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def _check_fields(obj) -> None:
    """Check every field of the frozen dataclass `obj` against its type, converting where that loses nothing a
    JSON round trip keeps (numbers to the field's number type, dicts to the spec they describe)."""
    hints = _hints(type(obj))
    for f in fields(obj):
        value = getattr(obj, f.name)
        hint = hints[f.name]
        if typing.get_origin(hint) is Union:               # Optional[X]: None stays None
            if value is None:
                continue
            hint = next(a for a in typing.get_args(hint) if a is not type(None))
        object.__setattr__(obj, f.name, _value(f.name, hint, value))


def _value(name: str, hint, value):
    if hint is bool:
        return bool(value)
    if hint in (int, float) and isinstance(value, numbers.Real) and not isinstance(value, bool):
        return hint(value)
    if hint is str and isinstance(value, str):
        return value
    if hint in (ModelSpec, HeadSpec):
        if isinstance(value, hint):
            return value
        if isinstance(value, dict):
            return hint.from_dict(value)
    raise InputError(f"The job's {name!r} should be {getattr(hint, '__name__', hint)}, not {value!r}.")


__all__ = ["ModelSpec", "HeadSpec", "EngineJob", "AvatarJob", "NeuralJob", "MeshJob", "InvertJob", "PingJob", "Job",
           "JOB_TYPES", "job_from_dict"]
