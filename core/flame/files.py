"""Which FLAME files belong together: the model users downloaded and its landmark embedding, found beside it under
the official names or given explicitly, loaded (converted once, cached) and checked.

Users have the FLAME 2020 `generic_model.pkl` (or a FLAME 2023 pickle) and one of two landmark embeddings
(docs/flame.md, ../shared/spec/flame_files.md): DECA's `landmark_embedding.npy`, or FLAME's
`flame_static_embedding.pkl` + `flame_dynamic_embedding.npy`. The embedding is not inside the model file, so a
command taking the model needs both; `load_flame_data` finds the embedding beside the model when it is not given,
and refuses an embedding whose 68 landmarks do not land on a face of that model (another topology's).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from ..errors import CheckpointError, InputError
from .model_data import FlameModelData, load_model_data
from .official import load_or_convert, read_pickled_file

__all__ = ["DECA_EMBEDDING", "STATIC_EMBEDDING", "DYNAMIC_EMBEDDING", "LandmarkFiles", "landmark_file_kind",
           "find_landmark_files", "load_flame_data", "load_flame_files", "check_landmark_layout", "model_notes"]

PathLike = Union[str, os.PathLike]

DECA_EMBEDDING = "landmark_embedding.npy"
STATIC_EMBEDDING = "flame_static_embedding.pkl"
DYNAMIC_EMBEDDING = "flame_dynamic_embedding.npy"
_BOTH_NAMES = (f"{DECA_EMBEDDING} (DECA's) or {STATIC_EMBEDDING} + {DYNAMIC_EMBEDDING} (FLAME's)")
_KIND_NAMES = {"deca": DECA_EMBEDDING, "static": STATIC_EMBEDDING, "dynamic": DYNAMIC_EMBEDDING}


@dataclass(frozen=True)
class LandmarkFiles:
    """A landmark embedding: DECA's one file, or FLAME's two. `searched` is the folder they were found in (None
    when they were given)."""

    deca: Optional[Path] = None
    static: Optional[Path] = None
    dynamic: Optional[Path] = None
    searched: Optional[Path] = None

    @property
    def paths(self) -> list:
        return [p for p in (self.deca, self.static, self.dynamic) if p is not None]

    def describe(self) -> str:
        return " + ".join(str(p) for p in self.paths)


def landmark_file_kind(path: PathLike) -> str:
    """'deca', 'static' or 'dynamic': what a landmark embedding file holds, read from its content (the restricted
    reader of core.flame.official; nothing in it runs), so renamed files are recognised too."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"The landmark embedding {str(path)!r} does not exist; give {_BOTH_NAMES}.")
    raw = read_pickled_file(path)
    if isinstance(raw, dict):
        if "static_lmk_faces_idx" in raw or "full_lmk_faces_idx" in raw:
            return "deca"
        if "lmk_face_idx" in raw:
            try:
                ndim = np.asarray(raw["lmk_face_idx"]).ndim
            except (TypeError, ValueError):
                ndim = 0
            if ndim in (1, 2):
                return "static" if ndim == 1 else "dynamic"
    raise InputError(f"{path} is not a FLAME landmark embedding (it holds neither DECA's static/dynamic landmark "
                     f"arrays nor FLAME's lmk_face_idx); give {_BOTH_NAMES}.")


def _from_given(given: Sequence[PathLike], option: str) -> LandmarkFiles:
    found: dict = {}
    for p in given:
        kind = landmark_file_kind(p)
        if kind in found:
            raise InputError(f"{option} was given two {_KIND_NAMES[kind]} files ({found[kind]} and {p}); give "
                             f"one DECA {DECA_EMBEDDING}, or FLAME's {STATIC_EMBEDDING} and {DYNAMIC_EMBEDDING}.")
        found[kind] = Path(p)
    if "deca" in found and len(found) > 1:
        raise InputError(f"{option} was given DECA's embedding and FLAME's; give one of them: {_BOTH_NAMES}.")
    if ("static" in found) != ("dynamic" in found):
        have, need = ("static", "dynamic") if "static" in found else ("dynamic", "static")
        raise InputError(f"{option} gave FLAME's {have} landmark embedding ({found[have]}) without the {need} one; "
                         f"add {_KIND_NAMES[need]} ({option} twice), or give DECA's {DECA_EMBEDDING} instead.")
    return LandmarkFiles(found.get("deca"), found.get("static"), found.get("dynamic"))


def find_landmark_files(model: PathLike, given: Sequence[PathLike] = (), *,
                        option: str = "--flame-landmarks FILE") -> LandmarkFiles:
    """The landmark embedding for the FLAME model file `model`: the files `given` (DECA's one or FLAME's two, in any
    order), else the official names in the model's folder (FLAME's pair first, then DECA's file). `option` says
    in messages how the user gives the files (the CLI option, or the Blender preference)."""
    if given:
        return _from_given(given, option.split()[0])
    folder = Path(model).absolute().parent   # the folder the user named (a linked model's own folder is not searched)
    static, dynamic, deca = folder / STATIC_EMBEDDING, folder / DYNAMIC_EMBEDDING, folder / DECA_EMBEDDING
    if static.is_file() and dynamic.is_file():
        return LandmarkFiles(static=static, dynamic=dynamic, searched=folder)
    if deca.is_file():
        return LandmarkFiles(deca=deca, searched=folder)
    half = f"; {static.name if static.is_file() else dynamic.name} is there without its partner" \
        if static.is_file() or dynamic.is_file() else ""
    raise InputError(f"No landmark embedding for {Path(model).name}: looked in {folder} for {_BOTH_NAMES}{half}. "
                     f"Put them beside the model, or give them with {option}.")


def load_flame_data(model: PathLike, landmarks: Sequence[PathLike] = (), *, cache_dir: Optional[PathLike] = None,
                    option: str = "--flame-landmarks FILE") -> FlameModelData:
    """A FLAME model ready for core.flame.FlameModel: a converted .npz as it is (it holds its embedding), or an
    official pickle (FLAME 2020 generic_model.pkl, FLAME 2023) with its landmark embedding (`landmarks`, else
    found beside it), converted once into the cache (core.flame.official.load_or_convert). The embedding's
    landmarks are checked against the model (check_landmark_layout)."""
    return load_flame_files(model, landmarks, cache_dir=cache_dir, option=option)[0]


def load_flame_files(model: PathLike, landmarks: Sequence[PathLike] = (), *, cache_dir: Optional[PathLike] = None,
                     option: str = "--flame-landmarks FILE") -> tuple:
    """load_flame_data, and the LandmarkFiles it used (empty for a converted .npz)."""
    model = Path(model)
    if model.suffix.lower() == ".npz":
        if landmarks:
            raise InputError(f"{model.name} is a converted FLAME model, which holds its landmark embedding already; "
                             f"drop {option.split()[0]}, or give the official .pkl model it was converted from.")
        return load_model_data(model), LandmarkFiles()
    if not model.is_file():
        raise InputError(f"The FLAME model {str(model)!r} does not exist. Download FLAME 2020 (generic_model.pkl) "
                         "from https://flame.is.tue.mpg.de and give its path.")
    files = find_landmark_files(model, landmarks, option=option)
    try:
        data = load_or_convert(model, static_embedding=files.static, dynamic_embedding=files.dynamic,
                               deca_embedding=files.deca, cache_dir=cache_dir)
    except CheckpointError as exc:
        if "lmk_" in str(exc):   # the embedding names faces the model does not have: another topology's
            raise InputError(f"The landmark embedding {files.describe()} does not fit {model.name}: it names faces "
                             "this model does not have, so it belongs to another head topology. Use the embedding "
                             f"that comes with the FLAME model: {_BOTH_NAMES}.") from None
        raise
    check_landmark_layout(data, files.describe())
    return data, files


def check_landmark_layout(data: FlameModelData, embedding: str = "the landmark embedding") -> None:
    """Refuse an embedding whose 68 landmarks, on the model's template, are not laid out like a face in iBUG order
    (FLAME axes: x to the subject's left, y up, z forward). An embedding made for another topology indexes faces
    that exist but lie anywhere, and fails these checks."""
    v = data.v_template
    lmk = np.einsum("lk,lkd->ld", data.lmk_bary_coords, v[data.faces[data.lmk_faces_idx]])
    eyes, mouth = lmk[36:48, 1].mean(), lmk[48:68, 1].mean()
    checks = (
        (lmk[0, 0] < lmk[16, 0], "the jaw contour runs the wrong way"),
        (lmk[36, 0] < lmk[45, 0], "the eye corners are swapped"),
        (lmk[48, 0] < lmk[54, 0], "the mouth corners are swapped"),
        (eyes > lmk[30, 1] > mouth > lmk[8, 1], "eyes, nose tip, mouth and chin are not in that order from the top"),
        (lmk[30, 2] > 0.5 * (lmk[0, 2] + lmk[16, 2]), "the nose tip is not in front of the jaw contour"),
    )
    bad = [what for ok, what in checks if not ok]
    if bad:
        raise InputError(f"The landmark embedding {embedding} does not fit {Path(data.source).name}: its landmarks "
                         f"do not land on a face ({bad[0]}), so it belongs to another head topology. Use the "
                         f"embedding that comes with the FLAME model: {_BOTH_NAMES}.")


def model_notes(data: FlameModelData) -> list:
    """What a user should know about a FLAME model that loads fine but differs from what Next3D was trained on."""
    if data.name == "FLAME2023":
        return ["FLAME 2023 has other shape and expression bases than FLAME 2020, which the official Next3D model "
                "was trained with (through DECA): parameters made for FLAME 2020 give other faces."]
    return []
