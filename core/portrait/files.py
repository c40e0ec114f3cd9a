"""Portrait files: the preprocessing result as a folder, and the camera files a user can give.

A portrait folder holds:
    crop.png            the aligned crop
    landmarks.txt       68 iBUG landmarks in crop pixels (x y per line)
    irises.txt          10 iris points in crop pixels, when they were detected
    camera.npy          [25] camera label of the crop
    mesh.npy            [V + 68, 3] the generator's mesh input
    portrait.json       the FLAME parameters, fit errors, crop square in the source photo, warnings
Every file is written atomically (core.io.atomic), so an interrupted save leaves no half-written file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Union

import numpy as np
import torch

from ..errors import InputError
from ..flame.params import FlameParams
from ..io.atomic import npy_bytes, write_bytes_atomic
from ..io.bounded_read import READ_ERRORS, json_loads, load_npy, read_error_text, read_text_array
from ..io.images import read_image, write_png
from .crop import Crop

__all__ = ["save_portrait", "load_portrait", "read_camera_file"]

PathLike = Union[str, os.PathLike]


def _txt(points: np.ndarray) -> bytes:
    return "".join(f"{x:.3f} {y:.3f}\n" for x, y in np.asarray(points).reshape(-1, 2)).encode("ascii")


def save_portrait(folder: PathLike, portrait) -> Path:
    """Write a Portrait (core.portrait.preprocess) to `folder` (created when missing)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_png(folder / "crop.png", portrait.image)
    write_bytes_atomic(folder / "landmarks.txt", _txt(portrait.landmarks))
    if portrait.eye_landmarks is not None:
        write_bytes_atomic(folder / "irises.txt", _txt(portrait.eye_landmarks))
    camera = portrait.camera.detach().cpu().reshape(-1).numpy().astype(np.float32)
    write_bytes_atomic(folder / "camera.npy", npy_bytes(camera))
    write_bytes_atomic(folder / "mesh.npy", npy_bytes(portrait.mesh_input.detach().cpu()[0].numpy().astype(np.float32)))
    info = {
        "flame": {k: v[0].tolist() for k, v in portrait.flame.to_dict().items()},
        "fit_error_px": portrait.fit_error_px, "eye_error_px": portrait.eye_error_px,
        "resolution": int(portrait.image.shape[0]),
        "crop": portrait.crop.to_dict() if portrait.crop is not None else None,
        "warnings": list(portrait.warnings),
    }
    write_bytes_atomic(folder / "portrait.json", (json.dumps(info, indent=2) + "\n").encode("utf-8"))
    return folder


def load_portrait(folder: PathLike):
    """Read a folder written by save_portrait back into a Portrait."""
    from .preprocess import Portrait

    folder = Path(folder)
    needed = ("crop.png", "landmarks.txt", "camera.npy", "mesh.npy", "portrait.json")
    missing = [name for name in needed if not (folder / name).is_file()]
    if missing:
        raise InputError(f"{folder} is not a portrait folder: {', '.join(missing)} missing. Preprocess the photo "
                         "again (next3d invert writes one under AVATAR/portrait/).")
    name = "portrait.json"
    try:  # each file within bounds (core/io/bounded_read.py); any failure names the file
        with open(folder / name, "rb") as fh:
            info = json_loads(fh.read())
        irises = folder / "irises.txt"
        crop = info.get("crop")
        name = "landmarks.txt"
        landmarks = read_text_array(folder / name)
        name = "irises.txt"
        eyes = read_text_array(irises).reshape(2, 5, 2) if irises.is_file() else None
        name = "camera.npy"
        camera = torch.from_numpy(load_npy(folder / name).copy())
        name = "mesh.npy"
        mesh_input = torch.from_numpy(load_npy(folder / name).copy())[None]
        name = "portrait.json"
        return Portrait(
            image=read_image(folder / "crop.png"), landmarks=landmarks, eye_landmarks=eyes, camera=camera,
            flame=FlameParams.from_dict(info["flame"]), mesh_input=mesh_input,
            fit_error_px=float(info["fit_error_px"]), eye_error_px=info.get("eye_error_px"),
            crop=Crop(np.array(crop["centre"]), np.array(crop["x_axis"])) if crop else None,
            warnings=list(info.get("warnings", [])))
    except InputError:
        raise
    except READ_ERRORS + (KeyError, TypeError, AttributeError) as exc:
        raise InputError(f"{folder / name} cannot be read ({read_error_text(exc)}); preprocess the photo again "
                         "(next3d invert writes the portrait folder under AVATAR/portrait/).") from None


def read_camera_file(path: PathLike) -> torch.Tensor:
    """A camera label [25] from .npy (25 values, or a [4, 4] cam2world with the FFHQ intrinsics added) or .json:
    a list of 25, {"camera": [...]}, or an EG3D dataset.json {"labels": [[name, [25]]]} with one image."""
    from ..rendering.camera import FFHQ_FOV_DEG, camera_label, fov_to_intrinsics

    p = Path(path)
    fix = ("give a camera label as .npy (25 values: cam2world 4x4 then normalized intrinsics 3x3, or a 4x4 "
           "cam2world) or .json ([25 values], {\"camera\": [...]}, or a dataset.json with one label)")
    if not p.is_file():
        raise InputError(f"The camera file {str(p)!r} does not exist; {fix}.")
    try:
        if p.suffix.lower() == ".npy":
            data = load_npy(p)
        else:
            data = json_loads(p.read_bytes())
            if isinstance(data, dict) and "labels" in data:
                labels = data["labels"]
                if not isinstance(labels, list) or len(labels) != 1:
                    raise InputError(f"The camera file {p} is a dataset.json with {len(labels)} labels; a portrait "
                                     f"needs one camera. {fix[0].upper() + fix[1:]}.")
                data = labels[0][1]
            elif isinstance(data, dict):
                data = data.get("camera")
        values = np.asarray(data, dtype=np.float32)
    except (OSError, ValueError, TypeError, IndexError, MemoryError) as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(f"The camera file {p} cannot be read ({read_error_text(exc)}); {fix}.") from None
    if values.shape == (4, 4):
        values = camera_label(torch.from_numpy(values), fov_to_intrinsics(FFHQ_FOV_DEG)).numpy()
    values = values.reshape(-1)
    if values.size != 25 or not np.isfinite(values).all():
        raise InputError(f"The camera file {p} holds {values.size} values; {fix}.")
    return torch.from_numpy(values.astype(np.float32))
