"""`next3d make-dataset`: synthetic training heads."""

from __future__ import annotations

import click


@click.command("make-dataset")
@click.option("--outdir", required=True, type=click.Path(file_okay=False), help="Folder to write the dataset to.")
@click.option("--count", required=True, type=int, help="Number of images.")
@click.option("--resolution", default=128, show_default=True, help="Image size (power of two).")
@click.option("--seed", default=0, show_default=True, help="Image i is drawn from (seed, i): same seed, same bytes.")
@click.option("--head", type=click.Choice(["auto", "builtin", "standin"]), default="auto", show_default=True,
              help="builtin: the FLAME-format head asset; standin: the procedural ellipsoid; auto: builtin if "
                   "installed.")
@click.option("--supersample", default=2, show_default=True, help="Anti-aliasing factor of the rasterizer.")
def make_dataset_command(outdir: str, count: int, resolution: int, seed: int, head: str, supersample: int) -> None:
    """Render synthetic training heads: random FLAME shape, expression, jaw and gaze, procedural skin, hair, eye
    and lip colours and lighting, FFHQ-like cameras. Writes images/, dataset.json (EG3D labels), meshes.npz
    (mesh inputs and FLAME parameters) and topology.npz.

    Example: next3d make-dataset --outdir data/heads128 --count 20000 --resolution 128 --seed 0
    """
    from tqdm import tqdm

    from ..training.synthetic import generate_dataset, head_sampler_by_name

    sampler = head_sampler_by_name(head)
    click.echo(f"head: {sampler.name}")
    with tqdm(total=count, unit="img") as bar:
        root = generate_dataset(outdir, count=count, resolution=resolution, seed=seed, sampler=sampler,
                                supersample=supersample, progress=lambda n: bar.update(n - bar.n))
    click.echo(f"wrote {count} images to {root}")
