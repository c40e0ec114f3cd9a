"""`next3d mesh`: the avatar's surface for one expression, as a triangle mesh with vertex colours."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import click

from .loaders import avatar_identity, check_output_dir, head_mesh, load_model, set_threads
from .options import (THREADS_NOTE, Avatar, FlameFiles, MeshFiles, avatar_options, device_option, flame_options,
                      mesh_options, model_option, threads_option)


@click.command("mesh")
@model_option
@avatar_options()
@mesh_options("FLAME mesh (the expression)")
@flame_options("makes the head: its neutral head, or the first frame of a --mesh animation (in the head's frame: its "
               "global rotation is not used)")
@click.option("--resolution", default=256, show_default=True, type=click.IntRange(min=16),
              help="Lattice points per side of the density grid (official: 512).")
@click.option("--level", type=float, default=None,
              help="Raw density of the surface [default: the official 10 when the model's density reaches it, "
                   "else its 0.9 quantile (random weights)].")
@click.option("--units", type=click.Choice(["flame", "world"]), default="flame", show_default=True,
              help="Vertex coordinates: the FLAME head frame (lines up with the rig) or EG3D world units.")
@click.option("--keep-background", is_flag=True,
              help="Keep the whole box: also the background the model puts beside and behind the head (by default "
                   "only the density within --margin of the head is kept).")
@click.option("--margin", type=click.FloatRange(min=0.0, max=1.0), default=None,
              help="Metres kept around the head's bounding shape [default: 0.02]; more keeps more hair, and more of "
                   "the background.")
@device_option
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Output mesh: .ply, .obj or .glb.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@threads_option(THREADS_NOTE)
def mesh_command(model: Optional[str], avatar: Avatar, mesh: MeshFiles, flame: FlameFiles, resolution: int,
                 level: Optional[float], units: str, keep_background: bool, margin: Optional[float], device: str,
                 out: str, quiet: bool, threads: Optional[int]) -> None:
    """Extract the avatar's surface, for one expression, as a triangle mesh with vertex colours (marching cubes
    on the density field).

    \b
    Example: next3d mesh --model next3d_ffhq_512.pkl --mesh demo.obj --seed 4 --resolution 256 --out head.ply

    \b
    Example: next3d mesh --model next3d_ffhq_512.pkl --flame-model FLAME2020/generic_model.pkl --out head.glb
    """
    import torch

    from ..errors import InputError
    from ..io.images import ensure_writable_dir

    try:
        from ..mesh.export import SUFFIXES, save_mesh
        from ..mesh.extract import DEFAULT_MARGIN, extract_mesh, surface_level
    except ImportError as exc:
        raise InputError(f"Mesh extraction is not available in this installation ({exc}); update next3d-blender "
                         "to a version that has core/mesh.") from None
    if Path(out).suffix.lower() not in SUFFIXES:
        raise click.BadParameter(f"the mesh name must end in {', '.join(SUFFIXES)}, e.g. head.ply.",
                                 param_hint="--out")
    if keep_background and margin is not None:
        raise click.BadParameter("--margin sets what is kept around the head; with --keep-background everything is "
                                 "kept. Drop one of them.", param_hint="--margin")
    set_threads(threads)
    check_output_dir(Path(out).resolve().parent)
    loaded = load_model(model, device)
    generator = loaded.generator
    v = head_mesh(mesh, flame, loaded).v
    _, identity = avatar_identity(generator, avatar, device)
    bar = None
    if not quiet:
        from tqdm import tqdm
        bar = tqdm(desc="extracting", dynamic_ncols=True, file=sys.stderr,
                   bar_format="{l_bar}{bar}| [{elapsed}<{remaining}]")

    def progress(done, total):
        bar.total = total
        bar.update(done - bar.n)

    try:
        with torch.no_grad():
            planes = generator.build_planes(identity, v.to(device))
            if level is None:
                level = surface_level(generator, planes)
            # the head region: the mesh input's own points, in FLAME units like the mesh (vertices, landmarks)
            near = None if keep_background else v.detach().cpu().numpy().reshape(-1, 3)
            result = extract_mesh(generator, planes, resolution=resolution, level=level, units=units,
                                  progress=progress if bar is not None else None, near=near,
                                  margin=DEFAULT_MARGIN if margin is None else margin)
    finally:
        if bar is not None:
            bar.close()
    ensure_writable_dir(Path(out).resolve().parent)
    save_mesh(out, result)
    click.echo(f"wrote {out} ({len(result.vertices)} vertices, {len(result.faces)} faces, {units} units, level "
               f"{level:.3g})")
