"""The avatar folder an inversion writes, and reading its latent back.

Layout (every file written atomically; avatar.json, written last, marks a complete avatar):
    avatar.safetensors   the tuned generator (a project checkpoint: `next3d render --model` loads it)
    latent.npy           the pivot ws [1, num_ws, w_dim] float32 (`next3d render --latent`)
    camera.npy           [25] EG3D camera label of the portrait
    mesh.npy             [V + 68, 3] the generator mesh input of the portrait (FLAME vertices + landmarks)
    reconstruction.png   the tuned generator's render of the portrait
    target.png           the aligned portrait it was fitted to
    avatar.json          steps, PSNR, warnings, whether the perceptual loss was used, source
    portrait/            the preprocessing result (crop, landmarks, FLAME fit), when there was one
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Union

import numpy as np
import torch

from ..errors import InputError
from ..io.atomic import npy_bytes, write_bytes_atomic
from ..io.bounded_read import READ_ERRORS, json_loads, load_npy, read_error_text
from ..io.images import ensure_writable_dir, to_uint8, write_png
from ..networks.next3d import Next3DGenerator
from .pti import InversionResult

__all__ = ["AVATAR_FILES", "Avatar", "check_avatar_folder", "save_avatar", "load_latent", "load_avatar"]

PathLike = Union[str, os.PathLike]
AVATAR_FILES = ("avatar.safetensors", "latent.npy", "camera.npy", "mesh.npy", "reconstruction.png", "target.png",
                "avatar.json")
FORMAT = "next3d-avatar"


@dataclass(frozen=True)
class Avatar:
    generator: Next3DGenerator
    ws: torch.Tensor          # [1, num_ws, w_dim]
    camera: torch.Tensor      # [25]
    mesh_input: torch.Tensor  # [1, V + 68, 3]
    info: Dict[str, Any]      # avatar.json


def check_avatar_folder(folder: PathLike, overwrite: bool = False) -> Path:
    """Create `folder` if needed, check it is writable and that it holds no avatar yet (unless `overwrite`); call
    this before a long inversion so a wrong folder fails at once."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"The avatar folder {str(folder)!r} is a file; give a folder name.")
    existing = [name for name in AVATAR_FILES if (folder / name).exists()]
    if existing and not overwrite:
        raise InputError(f"{folder} already holds an avatar ({', '.join(existing)}); choose another folder or "
                         "pass --overwrite to replace it.")
    return ensure_writable_dir(folder)


def save_avatar(folder: PathLike, result: InversionResult, *, portrait: Any = None,
                source_image: Optional[PathLike] = None, overwrite: bool = False,
                extra_info: Optional[Dict[str, Any]] = None) -> Path:
    """Write the avatar folder (layout in the module docstring); returns the folder.

    `portrait`: the core.portrait Portrait the target came from, saved under portrait/. `extra_info` is merged
    into avatar.json (e.g. the model the inversion started from). Refuses a folder that already holds an avatar
    unless `overwrite`; a stopped inversion is refused (an avatar is only written whole)."""
    from ..io.generator_io import save_generator

    if result.stopped:
        raise InputError("The inversion was stopped before the end; an incomplete avatar is not saved. Run it again "
                         "(fewer --latent-steps/--tune-steps for a quicker result).")
    folder = check_avatar_folder(folder, overwrite)
    # avatar.json goes first out and last in, so a folder interrupted while saving never looks complete.
    (folder / "avatar.json").unlink(missing_ok=True)
    save_generator(folder / "avatar.safetensors", result.generator)
    write_bytes_atomic(folder / "latent.npy", npy_bytes(result.ws.detach().cpu().numpy().astype(np.float32)))
    write_bytes_atomic(folder / "camera.npy", npy_bytes(result.camera.detach().cpu().reshape(-1)[:25].numpy()
                                                   .astype(np.float32)))
    write_bytes_atomic(folder / "mesh.npy", npy_bytes(result.mesh_input.detach().cpu()[0].numpy().astype(np.float32)))
    write_png(folder / "reconstruction.png", to_uint8(result.image[0]))
    write_png(folder / "target.png", to_uint8(result.target[0]))
    if portrait is not None:
        from ..portrait import save_portrait

        if overwrite and (folder / "portrait").is_dir():
            shutil.rmtree(folder / "portrait")
        save_portrait(folder / "portrait", portrait)
    info: Dict[str, Any] = {
        "format": FORMAT, "version": 1,
        "source": str(Path(source_image).resolve()) if source_image is not None else None,
        "latent_steps": result.latent_steps, "tune_steps": result.tune_steps,
        "psnr_start": result.psnr_start, "psnr_latent": result.psnr_latent, "psnr_tuned": result.psnr_tuned,
        "loss_final": result.loss_final, "perceptual_loss": result.perceptual,
        "losses": "mse + lpips" if result.perceptual else "mse + (1 - ssim)",
        "warnings": list(result.warnings), "sample_seed": result.seed,
        "image_resolution": int(result.image.shape[-1]), "num_ws": int(result.ws.shape[1]),
        "fit_error_px": float(portrait.fit_error_px) if portrait is not None else None,
    }
    info.update(extra_info or {})
    write_bytes_atomic(folder / "avatar.json", (json.dumps(info, indent=2, default=str) + "\n").encode("utf-8"))
    return folder


def load_latent(path: PathLike, generator: Next3DGenerator) -> torch.Tensor:
    """ws [1, num_ws, w_dim] float32 from an .npy file ([1, num_ws, w_dim] or [num_ws, w_dim]) that fits
    `generator`, with errors naming the file and what was expected."""
    path = Path(path)
    want = (generator.num_ws, generator.config.w_dim)
    shape_text = f"[1, {want[0]}, {want[1]}]"
    if not path.is_file():
        raise InputError(f"The latent file {str(path)!r} does not exist; give the latent.npy that `next3d invert` "
                         "wrote.")
    try:
        data = load_npy(path)
    except READ_ERRORS as exc:
        raise InputError(f"{path} is not a plain .npy array ({read_error_text(exc)}); give the latent.npy that "
                         "`next3d invert` wrote.") from None
    if data.dtype.kind not in "fiu":
        raise InputError(f"{path} holds {data.dtype} values; a latent is a float array {shape_text}.")
    if data.ndim == 2:
        data = data[None]
    if data.ndim != 3 or data.shape[0] != 1 or data.shape[1:] != want:
        raise InputError(f"{path} holds an array of shape {list(data.shape)}, but this model needs ws of shape "
                         f"{shape_text} ({want[0]} ws of {want[1]} values). Was it made for another model?")
    if not np.isfinite(data).all():
        raise InputError(f"{path} contains NaN or infinite values; the latent is damaged. Run `next3d invert` "
                         "again.")
    device = next(generator.parameters()).device
    return torch.from_numpy(data.astype(np.float32)).to(device)


def load_avatar(folder: PathLike, device: Union[str, torch.device] = "cpu") -> Avatar:
    """Read an avatar folder written by save_avatar."""
    from ..io.generator_io import load_generator

    folder = Path(folder)
    info_path = folder / "avatar.json"
    if not info_path.is_file():
        raise InputError(f"{folder} holds no complete avatar (avatar.json is missing); run `next3d invert` into it.")
    try:
        info = json_loads(info_path.read_bytes())
    except READ_ERRORS as exc:
        raise InputError(f"{info_path} cannot be read ({read_error_text(exc)}); run `next3d invert` again.") from None
    generator = load_generator(folder / "avatar.safetensors", device)
    ws = load_latent(folder / "latent.npy", generator)
    name = "camera.npy"
    try:
        camera = load_npy(folder / name).astype(np.float32).reshape(-1)
        name = "mesh.npy"
        mesh = load_npy(folder / name).astype(np.float32)
    except READ_ERRORS as exc:
        raise InputError(f"{folder / name} cannot be read ({read_error_text(exc)}); run `next3d invert` "
                         "again.") from None
    if camera.shape != (25,):
        raise InputError(f"{folder / 'camera.npy'} holds {camera.size} values; expected 25.")
    mesh_input = torch.from_numpy(mesh)[None].to(device)
    generator.split_mesh(mesh_input)
    return Avatar(generator=generator, ws=ws, camera=torch.from_numpy(camera).to(device), mesh_input=mesh_input,
                  info=info)
