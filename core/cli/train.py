"""`next3d train`: train a Next3D generator. Its options are the fields of TrainingOptions
(core/training/options.py, torch-free): the table below gives each field its flag and help, the dataclass its
default (and so its type)."""

from __future__ import annotations

import dataclasses
from typing import List

import click

from ..training.options import PRESETS, TrainingOptions

# (flag, TrainingOptions field, help[, click attributes beyond the default]); a bool field is a flag.
_OPTIONS = (
    ("--data", "data", "Dataset folder: images/, dataset.json, meshes.npz, topology.npz (see `next3d make-dataset`).",
     {"type": click.Path(file_okay=False)}),
    ("--outdir", "outdir", "Run folder. Running the same command again resumes from the newest snapshot in it.",
     {"type": click.Path(file_okay=False)}),
    ("--cfg", "cfg", "Network size: tiny (smoke tests), lite (the bundled default, trains on a CPU), small (a "
                     "GPU-sized small model), ffhq (the official network)."),
    ("--batch", "batch_size", "Images per step: the global batch (under torchrun each process takes batch / "
                              "processes)."),
    ("--kimg", "total_kimg", "Stop after this many thousand real images (counting from the start of the run)."),
    ("--seed", "seed", "Seed of the weights, the data order and the noise."),
    ("--gamma", "r1_gamma", "R1 regularization weight."),
    ("--glr", "glr", "Generator learning rate."),
    ("--dlr", "dlr", "Discriminator learning rate."),
    ("--density-reg", "density_reg", "Density regularization weight (0 = off)."),
    ("--blur-sigma", "blur_init_sigma", "Initial sigma (pixels) of the Gaussian blur of real and fake images (EG3D: "
                                        "10)."),
    ("--blur-fade-kimg", "blur_fade_kimg", "Fade out the blur of real and fake images over this many kimg [default: "
                                           "200 * batch / 32].", {"type": float}),
    ("--gpc-reg-prob", "gpc_reg_prob", "Probability of conditioning the mapping on another image's camera (generator "
                                       "pose conditioning)."),
    ("--recon-weight", "recon_weight", "Reconstruction warm-up (not in the paper): also pull G's image for each mesh "
                                       "and camera toward the dataset image they came from (L1, this weight), fading "
                                       "to 0 over --recon-fade-kimg."),
    ("--recon-fade-kimg", "recon_fade_kimg", "Length of the reconstruction warm-up; 0 keeps the weight constant."),
    ("--recon-appearance", "recon_appearance", "Give the reconstruction's z the target's appearance code (from the "
                                               "`appearance` records next3d make-dataset writes), so G is pulled "
                                               "toward that image, not the average appearance."),
    ("--d-warmup-kimg", "d_warmup_kimg", "Train only D for the first this many kimg of the run, so a fresh D (as when "
                                         "--resume starts from a generator) catches up before G follows its "
                                         "gradients."),
    ("--disc-c-noise", "disc_c_noise", "Noise on D's camera label (x its batch std)."),
    ("--mesh-cond/--no-mesh-cond", "mesh_cond", "Deformation-aware discriminator: show D a rendering of the FLAME "
                                                "mesh behind each image."),
    ("--snap", "snapshot_kimg", "Write a snapshot (state, network, sample grid) every this many kimg."),
    ("--resume", "resume", "'auto' (newest snapshot in --outdir, if any), 'none', a state-*.safetensors file, a "
                           "generator .safetensors, or the official next3d_ffhq_512.pkl. A generator or the official "
                           "pickle starts G and G_ema from those weights (read without running pickled code) with a "
                           "fresh D and no blur fade (unless --resume-blur).",
     {"callback": lambda ctx, param, value: None if value == "none" else value}),
    ("--resume-blur", "resume_blur", "Keep the blur fade when starting from a generator checkpoint."),
    ("--device", "device", "auto, cpu or cuda."),
    ("--dist-timeout", "dist_timeout_s", "Under torchrun: seconds a process waits for the others (a crashed or "
                                         "stuck one) before the job stops with an error."),
    ("--no-progress", "progress", "No progress bar (the log file is written anyway)."),
)


def _training_params() -> List[click.Option]:
    defaults = {f.name: f.default for f in dataclasses.fields(TrainingOptions)}
    params = []
    for flag, field, help_text, *extra in _OPTIONS:
        attrs = dict(extra[0]) if extra else {}
        default = defaults[field]
        if field == "cfg":
            attrs["type"] = click.Choice(PRESETS)
        if default is dataclasses.MISSING:
            attrs["required"] = True
        elif isinstance(default, bool):  # --x (off by default), --no-x (on by default) or --x/--no-x
            attrs.update(is_flag=True, default=default, show_default="/" in flag)
            if "/" not in flag:
                attrs["flag_value"] = not default
        else:
            attrs.update(default=default, show_default=default is not None)
        params.append(click.Option([flag, field], help=help_text, **attrs))
    return params


@click.command("train", params=_training_params())
def train_command(**options) -> None:
    """Train a Next3D generator on a dataset of images, cameras and FLAME meshes.

    Uses EG3D's recipe (Adam betas (0, 0.99), non-saturating loss, lazy R1, density regularization, blur fade,
    generator pose conditioning, dual discrimination, G_ema) with the deformation-aware discriminator of the
    Next3D paper. Writes log.jsonl, snapshots (state-*.safetensors resume exactly; network-*.safetensors are
    generators for `next3d render`) and sample grids to OUTDIR. Ctrl-C stops after the current step and saves.

    Example: next3d make-dataset --outdir data/heads128 --count 20000 --resolution 128 --seed 0 &&
    next3d train --data data/heads128 --outdir runs/small128 --cfg small --batch 8 --kimg 2000
    """
    from ..training.loop import train

    result = train(TrainingOptions(**options))
    if result.rank != 0:   # under torchrun only rank 0 reports, as only it writes the run folder
        return
    verb = "stopped" if result.stopped_early else "finished"
    click.echo(f"{verb} at step {result.step} ({result.cur_nimg / 1000:.3f} kimg); state {result.state_path}, "
               f"generator {result.network_path}")
