"""`next3d convert`: the official pickle to a .safetensors checkpoint."""

from __future__ import annotations

import click


@click.command("convert")
@click.argument("src", type=click.Path(dir_okay=False))
@click.argument("dst", type=click.Path(dir_okay=False))
def convert_command(src: str, dst: str) -> None:
    """Convert the official pickle to a .safetensors checkpoint (no code from the pickle is run).

    \b
    Example: next3d convert next3d_ffhq_512.pkl next3d_ffhq_512.safetensors
    """
    from ..io.generator_io import convert_official

    if not dst.endswith(".safetensors"):
        raise click.BadParameter("the output name must end in .safetensors", param_hint="DST")
    config, n = convert_official(src, dst)
    click.echo(f"wrote {dst}: {n} tensors, image {config.image_resolution}px, channel_base {config.channel_base}")
