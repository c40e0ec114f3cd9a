"""What the commands load from their options, through core.session (the layer the Blender extension shares): the
generator, the FLAME head and the mesh to render, checked against each other; the avatar's ws and identity; the
thread count; the settings a render records. The engine is imported inside the functions, so `next3d --help`
stays fast."""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import click

from ..errors import InputError, Next3DError
from .options import Avatar, FlameFiles, MeshFiles

__all__ = ["load_model", "load_head", "check_head", "HeadMesh", "head_mesh", "set_threads", "avatar_identity",
           "render_record", "precision_record", "check_output_dir"]


def load_model(model: Optional[str], device: str, precision: str = "fp32"):
    """core.session.LoadedModel of --model (None: the bundled default, which is named on stderr), computing in
    `precision` (--precision)."""
    from ..session import load_model as load

    loaded = load(model, device)
    loaded.generator.set_precision(precision)
    if model is None:
        click.echo(f"model: {loaded.description}", err=True)
    return loaded


def _fix(generator, flame: FlameFiles) -> str:
    """What to do when the head does not fit the model, in command-line terms."""
    from ..session import model_is_builtin_head

    if model_is_builtin_head(generator):
        return ("leave out --flame-model to animate the built-in head, or use a model trained on FLAME's topology "
                "(--model next3d_ffhq_512.pkl).")
    if flame.model is None:
        return ("give the FLAME model it was trained with (--flame-model generic_model.pkl, its landmark embedding "
                "beside it), or use a model trained on the built-in head (leave out --model for the bundled one).")
    return "give a FLAME model of the model's topology, or a model trained on this head."


def load_head(flame: FlameFiles, loaded=None):
    """core.session.Head of --flame-model / --flame-landmarks (the built-in head without them), checked against the
    loaded model's topology when one is given. A FLAME 2023 model gets a note on stderr."""
    from ..session import load_head as load

    head = load(flame.model, flame.landmarks)
    for note in head.notes:
        click.echo(f"note: {note}", err=True)
    if loaded is not None:
        check_head(loaded, head.faces, head.n_vertices,
                   f"the FLAME model {head.description}" if flame.model else "the built-in head", flame)
    return head


def check_head(loaded, faces, n_vertices: int, what: str, flame: FlameFiles, mesh_file: bool = False) -> None:
    """InputError naming both topologies and the fix when a head (faces, or None when only the vertex count is
    known; `mesh_file`: a mesh the user gave, not a FLAME model) does not fit the model."""
    from ..session import check_head as check

    fix = ("give a mesh with the model's faces (FLAME's for the official model), or --flame-model with a FLAME "
           "animation instead of a mesh.") if mesh_file else _fix(loaded.generator, flame)
    check(loaded.generator, faces, n_vertices, what, fix)


@dataclass
class HeadMesh:
    """The mesh input [1, V + 68, 3] a command renders, and the head rotation of a FLAME frame (axis-angle [1, 3]
    about `pivot` [1, 3], FLAME space), which belongs in the camera (docs/flame.md#head-pose)."""

    v: object
    rotation: object = None
    pivot: object = None
    head: object = None      # the core.session.Head that made it, if a FLAME model did


def head_mesh(mesh: MeshFiles, flame: FlameFiles, loaded) -> HeadMesh:
    """The mesh of --mesh (an .obj + landmarks, a [5091, 3] array, or the first frame of a FLAME animation through
    --flame-model), else the neutral head of --flame-model, else the head the model was built on; checked against
    the model's topology."""
    from ..io.mesh_files import read_mesh_input
    from ..sequence.render import is_flame_animation

    cfg = loaded.generator.config
    if mesh.landmarks and not mesh.mesh:
        raise click.BadParameter("--landmarks belongs to an .obj given with --mesh; add --mesh.",
                                 param_hint="--landmarks")
    if mesh.mesh and is_flame_animation(Path(mesh.mesh)):
        import torch

        from ..flame.animation import load_sequence

        if mesh.landmarks:
            raise click.BadParameter("--landmarks belongs to an .obj mesh; a FLAME animation gets its landmarks from "
                                     "the FLAME model. Drop --landmarks.", param_hint="--landmarks")
        params = load_sequence(mesh.mesh).frames[0:1]
        head = load_head(flame, loaded)
        with torch.no_grad():
            out = head.flame(params)
        return HeadMesh(out.mesh_input().cpu(), params.global_rotation.detach().cpu(), out.joints[:, 0].cpu(), head)
    if mesh.mesh:
        from ..session import read_obj_faces

        if flame.model:
            raise click.BadParameter(f"{Path(mesh.mesh).name} is a mesh already; --flame-model turns FLAME "
                                     "parameters into one. Drop --flame-model, or give a FLAME animation (.json/.npz) "
                                     "as --mesh.", param_hint="--flame-model")
        v = read_mesh_input(mesh.mesh, mesh.landmarks, n_vertices=cfg.n_vertices, n_landmarks=cfg.n_landmarks)
        if Path(mesh.mesh).suffix.lower() == ".obj":
            check_head(loaded, read_obj_faces(mesh.mesh), cfg.n_vertices, f"the mesh {Path(mesh.mesh).name}", flame,
                       mesh_file=True)
        return HeadMesh(v)
    if flame.model:
        head = load_head(flame, loaded)
        return HeadMesh(head.neutral_mesh(), head=head)
    try:
        return HeadMesh(loaded.default_mesh())
    except InputError:
        raise InputError("This model was not trained on the built-in head (the official model uses FLAME's "
                         "topology): give its FLAME model with --flame-model generic_model.pkl (its neutral head is "
                         "rendered, or the first frame of --mesh anim.json), or a mesh with --mesh.") from None


def set_threads(threads: Optional[int]) -> None:
    if threads:
        import torch
        torch.set_num_threads(threads)


def avatar_identity(generator, avatar: Avatar, device: str, cond=None, seed: Optional[int] = None):
    """-> (ws, identity) of the avatar (its first seed, or `seed`) mapped at camera label `cond` (default: the
    frontal FFHQ camera), or of its --latent (core.session.avatar_identity)."""
    from ..session import avatar_identity as identity

    try:
        return identity(generator, avatar.session(seed), cond)
    except Next3DError as exc:
        if avatar.latent:
            raise click.BadParameter(str(exc), param_hint="--latent") from None
        raise


def render_record(model: Optional[str], avatar: Avatar, flame=None, **settings) -> dict:
    """The settings a render records (core.session.render_record), for the avatar's first seed."""
    from ..session import render_record as record

    return record(model, avatar.session(), flame, **settings)


def precision_record(precision: str) -> dict:
    """What a sequence's settings record says of --precision: nothing for fp32, so folders rendered before the
    option existed still resume; the name otherwise, so frames of two precisions never share a folder."""
    return {} if precision == "fp32" else {"precision": precision}


def check_output_dir(path) -> Path:
    """Refuse an output folder that cannot be made or written to, before any work, without creating it (so a
    command that fails later leaves nothing behind)."""
    path = Path(path)
    probe = path
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        problem = os.strerror(errno.ENOTDIR)
    elif not os.access(probe, os.W_OK | os.X_OK):
        problem = os.strerror(errno.EACCES)
    else:
        return path
    raise InputError(f"Cannot write to the output folder {str(path)!r} ({problem}). Choose a folder you can write "
                     "to, or fix its permissions.")
