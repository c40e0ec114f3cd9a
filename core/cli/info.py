"""`next3d info`: describe a model file."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.command("info")
@click.argument("path", type=click.Path(dir_okay=False))
def info_command(path: str) -> None:
    """Describe a model file (official .pkl or next3d .safetensors).

    \b
    Example: next3d info next3d_ffhq_512.pkl
    """
    from ..io.generator_io import memory_guard
    from ..io.official_pickle import describe_official_pickle
    from ..io.safetensors_format import checkpoint_kind, load_checkpoint

    p = Path(path)
    if not p.is_file():
        raise click.BadParameter(f"{path} does not exist", param_hint="PATH")
    kind = checkpoint_kind(p)
    if kind == "official-pickle":
        with memory_guard(p):
            summary = describe_official_pickle(p)
    elif kind == "next3d-safetensors":
        with memory_guard(p):
            config, state_dict, extra = load_checkpoint(p)
        summary = {"format": "next3d safetensors", "tensors": len(state_dict),
                   "parameters": int(sum(v.numel() for v in state_dict.values())), "extras": sorted(extra),
                   "config": config}
    else:
        raise click.BadParameter(f"{path} is neither an official Next3D pickle nor a next3d .safetensors file",
                                 param_hint="PATH")
    click.echo(json.dumps(summary, indent=2, default=str))
