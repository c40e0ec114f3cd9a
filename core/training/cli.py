"""Command-line entry points of the training code: `train`, `make-dataset` and `evaluate`.

core/cli.py registers them on the `next3d` group: main.add_command(train_command, "train"),
main.add_command(make_dataset_command, "make-dataset"), main.add_command(evaluate_command, "evaluate").
Heavy imports happen inside the commands so `--help` stays fast. Engine errors (Next3DError) are turned into a
one-line message by the group.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

__all__ = ["train_command", "make_dataset_command", "evaluate_command"]


@click.command("train")
@click.option("--data", required=True, type=click.Path(file_okay=False),
              help="Dataset folder: images/, dataset.json, meshes.npz, topology.npz (see `next3d make-dataset`).")
@click.option("--outdir", required=True, type=click.Path(file_okay=False),
              help="Run folder. Running the same command again resumes from the newest snapshot in it.")
@click.option("--cfg", type=click.Choice(["tiny", "lite", "small", "ffhq"]), default="small", show_default=True,
              help="Network size: tiny (smoke tests), lite (the bundled default, trains on a CPU), small (a GPU-sized "
                   "small model), ffhq (the official network).")
@click.option("--batch", "batch_size", default=4, show_default=True, help="Images per step.")
@click.option("--kimg", "total_kimg", default=1000.0, show_default=True,
              help="Stop after this many thousand real images (counting from the start of the run).")
@click.option("--seed", default=0, show_default=True, help="Seed of the weights, the data order and the noise.")
@click.option("--gamma", "r1_gamma", default=4.0, show_default=True, help="R1 regularization weight.")
@click.option("--glr", default=0.0025, show_default=True, help="Generator learning rate.")
@click.option("--dlr", default=0.002, show_default=True, help="Discriminator learning rate.")
@click.option("--density-reg", default=0.25, show_default=True, help="Density regularization weight (0 = off).")
@click.option("--blur-sigma", "blur_init_sigma", default=10.0, show_default=True,
              help="Initial sigma (pixels) of the Gaussian blur of real and fake images (EG3D: 10).")
@click.option("--blur-fade-kimg", default=None, type=float,
              help="Fade out the blur of real and fake images over this many kimg [default: 200 * batch / 32].")
@click.option("--gpc-reg-prob", default=0.5, show_default=True,
              help="Probability of conditioning the mapping on another image's camera (generator pose "
                   "conditioning).")
@click.option("--recon-weight", default=0.0, show_default=True,
              help="Reconstruction warm-up (not in the paper): also pull G's image for each mesh and camera toward "
                   "the dataset image they came from (L1, this weight), fading to 0 over --recon-fade-kimg.")
@click.option("--recon-fade-kimg", default=0.0, show_default=True,
              help="Length of the reconstruction warm-up; 0 keeps the weight constant.")
@click.option("--recon-appearance", is_flag=True,
              help="Give the reconstruction's z the target's appearance code (from the `appearance` records "
                   "next3d make-dataset writes), so G is pulled toward that image, not the average appearance.")
@click.option("--d-warmup-kimg", default=0.0, show_default=True,
              help="Train only D for the first this many kimg of the run, so a fresh D (as when --resume starts "
                   "from a generator) catches up before G follows its gradients.")
@click.option("--disc-c-noise", default=1.0, show_default=True, help="Noise on D's camera label (x its batch std).")
@click.option("--mesh-cond/--no-mesh-cond", default=True, show_default=True,
              help="Deformation-aware discriminator: show D a rendering of the FLAME mesh behind each image.")
@click.option("--snap", "snapshot_kimg", default=50.0, show_default=True,
              help="Write a snapshot (state, network, sample grid) every this many kimg.")
@click.option("--resume", default="auto", show_default=True,
              help="'auto' (newest snapshot in --outdir, if any), 'none', a state-*.safetensors file, a generator "
                   ".safetensors, or the official next3d_ffhq_512.pkl. A generator or the official pickle starts "
                   "G and G_ema from those weights (read without running pickled code) with a fresh D and no blur "
                   "fade (unless --resume-blur).")
@click.option("--resume-blur", is_flag=True, help="Keep the blur fade when starting from a generator checkpoint.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
@click.option("--no-progress", is_flag=True, help="No progress bar (the log file is written anyway).")
def train_command(data, outdir, cfg, batch_size, total_kimg, seed, r1_gamma, glr, dlr, density_reg, blur_init_sigma,
                  blur_fade_kimg, gpc_reg_prob, recon_weight, recon_fade_kimg, recon_appearance, d_warmup_kimg,
                  disc_c_noise, mesh_cond, snapshot_kimg, resume, resume_blur, device, no_progress) -> None:
    """Train a Next3D generator on a dataset of images, cameras and FLAME meshes.

    Uses EG3D's recipe (Adam betas (0, 0.99), non-saturating loss, lazy R1, density regularization, blur fade,
    generator pose conditioning, dual discrimination, G_ema) with the deformation-aware discriminator of the
    Next3D paper. Writes log.jsonl, snapshots (state-*.safetensors resume exactly; network-*.safetensors are
    generators for `next3d render`) and sample grids to OUTDIR. Ctrl-C stops after the current step and saves.

    Example: next3d make-dataset --outdir data/heads128 --count 20000 --resolution 128 --seed 0 &&
    next3d train --data data/heads128 --outdir runs/small128 --cfg small --batch 8 --kimg 2000
    """
    from .loop import TrainingOptions, train

    options = TrainingOptions(data=data, outdir=outdir, cfg=cfg, batch_size=batch_size, total_kimg=total_kimg,
                              seed=seed, r1_gamma=r1_gamma, glr=glr, dlr=dlr, density_reg=density_reg,
                              blur_init_sigma=blur_init_sigma, blur_fade_kimg=blur_fade_kimg,
                              gpc_reg_prob=gpc_reg_prob, recon_weight=recon_weight,
                              recon_fade_kimg=recon_fade_kimg, recon_appearance=recon_appearance,
                              d_warmup_kimg=d_warmup_kimg, disc_c_noise=disc_c_noise,
                              mesh_cond=mesh_cond, snapshot_kimg=snapshot_kimg,
                              resume=None if resume == "none" else resume, resume_blur=resume_blur, device=device,
                              progress=not no_progress)
    result = train(options)
    verb = "stopped" if result.stopped_early else "finished"
    click.echo(f"{verb} at step {result.step} ({result.cur_nimg / 1000:.3f} kimg); state {result.state_path}, "
               f"generator {result.network_path}")


@click.command("make-dataset")
@click.option("--outdir", required=True, type=click.Path(file_okay=False), help="Folder to write the dataset to.")
@click.option("--count", required=True, type=int, help="Number of images.")
@click.option("--resolution", default=128, show_default=True, help="Image size (power of two).")
@click.option("--seed", default=0, show_default=True, help="Image i is drawn from (seed, i): same seed, same bytes.")
@click.option("--head", type=click.Choice(["auto", "builtin", "standin"]), default="auto", show_default=True,
              help="builtin: the FLAME-format head asset; standin: the procedural ellipsoid; auto: builtin if "
                   "installed.")
@click.option("--supersample", default=2, show_default=True, help="Anti-aliasing factor of the rasterizer.")
def make_dataset_command(outdir, count, resolution, seed, head, supersample) -> None:
    """Render synthetic training heads: random FLAME shape, expression, jaw and gaze, procedural skin, hair, eye
    and lip colours and lighting, FFHQ-like cameras. Writes images/, dataset.json (EG3D labels), meshes.npz
    (mesh inputs and FLAME parameters) and topology.npz.

    Example: next3d make-dataset --outdir data/heads128 --count 20000 --resolution 128 --seed 0
    """
    from tqdm import tqdm

    from .synthetic import generate_dataset, head_sampler_by_name

    sampler = head_sampler_by_name(head)
    click.echo(f"head: {sampler.name}")
    with tqdm(total=count, unit="img") as bar:
        root = generate_dataset(outdir, count=count, resolution=resolution, seed=seed, sampler=sampler,
                                supersample=supersample, progress=lambda n: bar.update(n - bar.n))
    click.echo(f"wrote {count} images to {root}")


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
@click.option("--device", default="cpu", show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), help="Also write the figures to this JSON file.")
def evaluate_command(network, head, count, seed, feature_net, feature_size, device, out) -> None:
    """Measure 3-D consistency, expression/gaze control and (optionally) Fréchet distance on held-out synthetic
    heads.

    Example: next3d evaluate --network runs/small128 --count 32 --out runs/small128/metrics.json
    """
    from ..io.generator_io import load_generator
    from .metrics import HELDOUT_SEED, MetricOptions, evaluate_generator
    from .synthetic import head_sampler_by_name

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
