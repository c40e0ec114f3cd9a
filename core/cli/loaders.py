"""What the commands load from their options: the generator, the FLAME model, the mesh to render, the avatar's ws
and identity; the thread count; how a file is named in a render's recorded settings. The engine is imported inside
the functions, so `next3d --help` stays fast."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import click

from ..errors import Next3DError
from .options import Avatar, MeshFiles

__all__ = ["load_model", "load_flame", "set_threads", "mesh_input", "avatar_identity", "model_key"]


def load_model(model: Optional[str], device: str):
    """-> (generator, a function giving the default mesh input [1, 5091, 3]: the head the generator was built on)."""
    from ..default_model import default_mesh_input, default_model
    from ..io.generator_io import load_generator

    if model is None:
        default = default_model()
        click.echo(f"model: {default.description}", err=True)
        return default.generator.to(device), lambda: default.mesh_input
    generator = load_generator(model, device)
    return generator, lambda: default_mesh_input(generator)


def load_flame(path: Optional[str]):
    """A core.flame FlameModel from the official generic_model.pkl (converted once, cached), a converted .npz, or
    (None) the built-in head."""
    from ..flame import FlameModel, load_model_data, load_or_convert
    from ..flame.builtin_head import BUILTIN_HEAD_PATH

    p = Path(path) if path else BUILTIN_HEAD_PATH
    try:
        data = load_model_data(p) if p.suffix.lower() == ".npz" else load_or_convert(p)
        return FlameModel(data)
    except Next3DError as exc:
        raise click.BadParameter(str(exc), param_hint="--flame-model") from None


def set_threads(threads: Optional[int]) -> None:
    if threads:
        import torch
        torch.set_num_threads(threads)


def mesh_input(files: MeshFiles, default: Callable):
    """The mesh input [1, 5091, 3] of --mesh (+ --landmarks), or default() without --mesh."""
    from ..io.mesh_files import read_mesh_input

    if files.landmarks and not files.mesh:
        raise click.BadParameter("--landmarks belongs to an .obj given with --mesh; add --mesh.",
                                 param_hint="--landmarks")
    return read_mesh_input(files.mesh, files.landmarks) if files.mesh else default()


def avatar_identity(generator, avatar: Avatar, device: str, cond=None):
    """-> (ws, identity) of the avatar's first seed mapped at camera label `cond` (default: the frontal FFHQ
    camera), or of its --latent."""
    import torch

    from ..rendering.camera import ffhq_camera
    from ..sampling import latent_from_seed

    if avatar.latent:
        from ..inversion.avatar_files import load_latent

        try:
            ws = load_latent(avatar.latent, generator)
        except Next3DError as exc:
            raise click.BadParameter(str(exc), param_hint="--latent") from None
        with torch.no_grad():
            return ws, generator.make_identity(ws)
    cond = ffhq_camera() if cond is None else cond
    with torch.no_grad():
        z = latent_from_seed(avatar.seed, generator.config.z_dim).to(device)
        ws = generator.mapping(z, cond[None].to(device), truncation_psi=avatar.psi,
                               truncation_cutoff=avatar.trunc_cutoff)
        return ws, generator.make_identity(ws)


def model_key(model: Optional[str]) -> str:
    """How a file (model, FLAME model, latent) is named in a render's recorded settings: its path and a digest of its
    content (for no model, the bundled default's), so that weights retrained in place never mix with the old."""
    from ..default_model import weights_digest

    name = "default" if model is None else str(Path(model).resolve())
    digest = weights_digest(None if model is None else Path(name))
    return f"{name} ({digest})" if digest else name
