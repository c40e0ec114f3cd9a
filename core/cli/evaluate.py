"""`next3d evaluate`: quality figures of a generator on held-out synthetic heads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import click

from .options import device_option


@click.command("evaluate")
@click.option("--network", required=True, type=click.Path(),
              help="Generator checkpoint (.safetensors or official .pkl), or a run folder (its newest network).")
@click.option("--head", type=click.Choice(["auto", "builtin", "standin"]), default="auto", show_default=True,
              help="Head to draw held-out meshes from; must be the one the network was trained on.")
@click.option("--count", default=16, show_default=True, help="Held-out heads per figure.")
@click.option("--seed", default=None, type=int, help="Held-out seed [default: 1000003].")
@click.option("--feature-net", type=click.Path(dir_okay=False),
              help="TorchScript feature network for the Fréchet distance ([N,3,S,S] RGB 0..255 -> [N,D]). "
                   "Without it the distance is reported as not computed; nothing is downloaded.")
@click.option("--feature-size", default=299, show_default=True, help="Input size of the feature network.")
@device_option
@click.option("--out", type=click.Path(dir_okay=False), help="Also write the figures to this JSON file.")
def evaluate_command(network: str, head: str, count: int, seed: Optional[int], feature_net: Optional[str],
                     feature_size: int, device: str, out: Optional[str]) -> None:
    """Measure 3-D consistency, expression/gaze control and (optionally) Fréchet distance on held-out synthetic
    heads.

    Example: next3d evaluate --network runs/small128 --count 32 --out runs/small128/metrics.json
    """
    from ..io.generator_io import load_generator
    from ..training.metrics import HELDOUT_SEED, MetricOptions, evaluate_generator
    from ..training.synthetic import head_sampler_by_name

    path = Path(network)
    if path.is_dir():
        networks = sorted(path.glob("network-*.safetensors"))
        if not networks:
            raise click.BadParameter(f"{path} holds no network-*.safetensors", param_hint="--network")
        path = networks[-1]
    G = load_generator(path, device)
    options = MetricOptions(count=count, seed=HELDOUT_SEED if seed is None else seed, feature_size=feature_size)
    results = evaluate_generator(G, head_sampler_by_name(head), options=options, feature_net=feature_net,
                                 device=device, progress=lambda msg: click.echo(msg, err=True))
    results["network"] = str(path)
    text = json.dumps(results, indent=2)
    click.echo(text)
    if out:
        Path(out).write_text(text + "\n")
