"""The `next3d` command line. Heavy imports happen inside the commands so `--help` stays fast."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import click

from .errors import Next3DError


def _fail(exc: Exception) -> None:
    click.echo(f"error: {exc}", err=True)
    sys.exit(2)


class _Group(click.Group):
    """Turns Next3DError into a one-line message and exit code 2 instead of a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except Next3DError as exc:
            _fail(exc)


@click.group(cls=_Group)
@click.version_option(package_name="next3d-blender")
def main() -> None:
    """Next3D neural head avatars: render, convert and inspect models."""


@main.command()
@click.argument("path", type=click.Path(dir_okay=False))
def info(path: str) -> None:
    """Describe a model file (official .pkl or next3d .safetensors).

    Example: next3d info next3d_ffhq_512.pkl
    """
    from .io.official_pickle import describe_official_pickle
    from .io.safetensors_format import checkpoint_kind, load_checkpoint

    p = Path(path)
    if not p.is_file():
        raise click.BadParameter(f"{path} does not exist", param_hint="PATH")
    kind = checkpoint_kind(p)
    if kind == "official-pickle":
        summary = describe_official_pickle(p)
    elif kind == "next3d-safetensors":
        config, state_dict, extra = load_checkpoint(p)
        summary = {"format": "next3d safetensors", "tensors": len(state_dict),
                   "parameters": int(sum(v.numel() for v in state_dict.values())), "extras": sorted(extra),
                   "config": config}
    else:
        raise click.BadParameter(f"{path} is neither an official Next3D pickle nor a next3d .safetensors file",
                                 param_hint="PATH")
    click.echo(json.dumps(summary, indent=2, default=str))


@main.command()
@click.argument("src", type=click.Path(dir_okay=False))
@click.argument("dst", type=click.Path(dir_okay=False))
def convert(src: str, dst: str) -> None:
    """Convert the official pickle to a .safetensors checkpoint (no code from the pickle is run).

    Example: next3d convert next3d_ffhq_512.pkl next3d_ffhq_512.safetensors
    """
    from .io.generator_io import convert_official

    if not dst.endswith(".safetensors"):
        raise click.BadParameter("the output name must end in .safetensors", param_hint="DST")
    config, n = convert_official(src, dst)
    click.echo(f"wrote {dst}: {n} tensors, image {config.image_resolution}px, channel_base {config.channel_base}")


def _load_model(model: Optional[str], device: str):
    from .default_model import default_model
    from .io.generator_io import load_generator

    default = default_model()
    if model is None:
        click.echo(f"model: {default.description}", err=True)
        return default.generator.to(device), default
    return load_generator(model, device), default


@main.command()
@click.option("--model", type=click.Path(dir_okay=False), help="Official .pkl or .safetensors (default: bundled).")
@click.option("--seed", default=0, show_default=True, help="Avatar seed (z drawn as in the official scripts).")
@click.option("--trunc", "psi", default=0.7, show_default=True, help="Truncation psi.")
@click.option("--trunc-cutoff", default=14, show_default=True, help="Number of ws truncated.")
@click.option("--yaw", default=0.0, show_default=True, help="Camera yaw offset from frontal, radians.")
@click.option("--pitch", default=0.0, show_default=True, help="Camera pitch offset from frontal, radians.")
@click.option("--fov", default=18.837, show_default=True, help="Field of view, degrees.")
@click.option("--mesh", type=click.Path(dir_okay=False),
              help="FLAME mesh: .obj (+ --landmarks) or a (5091, 3) .npy/.txt array (default: the stand-in head).")
@click.option("--landmarks", type=click.Path(dir_okay=False), help="68 x 3 landmark text file for an .obj mesh.")
@click.option("--sample-seed", default=0, show_default=True, help="Seed of the renderer's random depth samples.")
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Output PNG.")
def render(model, seed, psi, trunc_cutoff, yaw, pitch, fov, mesh, landmarks, sample_seed, device, out) -> None:
    """Render one frame of an avatar.

    Example: next3d render --model next3d_ffhq_512.pkl --mesh demo.obj --seed 4 --yaw 0.3 --out frame.png
    """
    import torch

    from .io.images import ensure_writable_dir, to_uint8, write_png
    from .io.mesh_files import read_mesh_input
    from .rendering.camera import ffhq_camera
    from .sampling import latent_from_seed

    ensure_writable_dir(Path(out).resolve().parent)
    generator, default = _load_model(model, device)
    v = read_mesh_input(mesh, landmarks) if mesh else default.head.mesh_input()
    with torch.no_grad():
        z = latent_from_seed(seed, generator.config.z_dim).to(device)
        ws = generator.mapping(z, ffhq_camera()[None].to(device), truncation_psi=psi, truncation_cutoff=trunc_cutoff)
        identity = generator.make_identity(ws)
        rng = torch.Generator(device=device).manual_seed(sample_seed)
        out_frame = generator.render_frame(identity, v.to(device), ffhq_camera(yaw, pitch, fov)[None].to(device),
                                           generator=rng)
    write_png(out, to_uint8(out_frame.image[0]))
    click.echo(f"wrote {out}")


@main.command()
@click.option("--out", default="out", show_default=True, type=click.Path(file_okay=False))
@click.option("--seed", default=0, show_default=True)
def demo(out: str, seed: int) -> None:
    """Render the default model on the built-in head from five yaw angles into OUT.

    Example: next3d demo --out out
    """
    import time

    import torch

    from .default_model import default_model
    from .io.images import ensure_writable_dir, to_uint8, write_png
    from .rendering.camera import ffhq_camera
    from .sampling import latent_from_seed

    out_dir = ensure_writable_dir(out)
    model = default_model()
    click.echo(f"model: {model.description}")
    generator = model.generator
    v = model.head.mesh_input()
    with torch.no_grad():
        z = latent_from_seed(seed, generator.config.z_dim)
        ws = generator.mapping(z, ffhq_camera()[None], truncation_psi=0.7, truncation_cutoff=14)
        start = time.perf_counter()
        identity = generator.make_identity(ws)
        for k, yaw in enumerate((-0.5, -0.25, 0.0, 0.25, 0.5)):
            rng = torch.Generator().manual_seed(k)
            frame = generator.render_frame(identity, v, ffhq_camera(yaw, -0.1)[None], generator=rng)
            path = out_dir / f"demo_yaw{k}.png"
            write_png(path, to_uint8(frame.image[0]))
            click.echo(f"wrote {path}")
    click.echo(f"5 frames in {time.perf_counter() - start:.1f} s")
