"""`next3d stylize`: text-driven 3D-aware stylization (StyleGAN-NADA) of a generator."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import click

from .loaders import load_model, set_threads
from .options import device_option, model_option, threads_option

CLIP_HELP = ("Stylization needs CLIP weights to judge the images, and next3d never downloads them. Give a ViT CLIP "
             "state dict with --clip PATH: for example OpenAI's ViT-B/32 (github.com/openai/CLIP; its .pt is a "
             "TorchScript archive to convert once to a state dict) or an open_clip ViT model's "
             "open_clip_pytorch_model.bin / open_clip_model.safetensors (github.com/mlfoundations/open_clip, "
             "Hugging Face hub), with bpe_simple_vocab_16e6.txt.gz from the same repositories beside it or given "
             "with --clip-vocab.")


@click.command("stylize")
@click.option("--source", required=True, help="Text describing the generator's current domain, e.g. 'photo'.")
@click.option("--target", required=True, help="Text describing the wanted style, e.g. 'pixar character'.")
@click.option("--clip", "clip_path", type=click.Path(dir_okay=False),
              help="ViT CLIP weights in OpenAI CLIP / open_clip state-dict format (.safetensors, .pt, .pth, .bin).")
@click.option("--clip-vocab", type=click.Path(dir_okay=False),
              help="CLIP's BPE merges file (default: bpe_simple_vocab_16e6.txt.gz next to the --clip file).")
@click.option("--clip-gelu", type=click.Choice(["quick", "exact"]), default="quick", show_default=True,
              help="The CLIP model's activation: quick for OpenAI's weights (and open_clip's 'openai' and "
                   "*-quickgelu models), exact for open_clip's LAION/DataComp ViT models.")
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="Output .safetensors of the stylized generator; OUT stem + _preview.png shows before/after.")
@model_option
@click.option("--steps", default=300, show_default=True, type=click.IntRange(min=1), help="Optimization steps.")
@click.option("--batch", default=2, show_default=True, type=click.IntRange(min=1), help="Avatars per step.")
@click.option("--lr", default=0.002, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Adam learning rate.")
@click.option("--seed", default=0, show_default=True, help="Seed of the latents, cameras and depth samples.")
@device_option
@threads_option()
@click.option("--quiet", is_flag=True, help="No progress bar.")
def stylize_command(source: str, target: str, clip_path: Optional[str], clip_vocab: Optional[str], clip_gelu: str,
                    out: str, model: Optional[str], steps: int, batch: int, lr: float, seed: int, device: str,
                    threads: Optional[int], quiet: bool) -> None:
    """Stylize a generator with a text direction (StyleGAN-NADA's directional CLIP loss): the texture, static and
    mouth generators are tuned; mapping, decoder, neural blending and super-resolution stay frozen, so the result
    animates like the original. Ctrl-C stops the run; nothing is written then.

    \b
    Example: next3d stylize --model next3d_ffhq_512.pkl --source "photo" --target "pixar character"
             --clip ViT-B-32.safetensors --out pixar.safetensors --device cuda
    """
    import torch

    from ..io.generator_io import save_generator
    from ..io.images import ensure_writable_dir, write_png
    from ..stylize.clip_model import load_clip
    from ..stylize.nada import preview_grid, stylize
    from ..stylize.tokenizer import default_vocab_path, load_tokenizer

    set_threads(threads)
    if not clip_path:
        raise click.UsageError(CLIP_HELP)
    out_path = Path(out)
    if out_path.suffix != ".safetensors":
        raise click.BadParameter("the output name must end in .safetensors", param_hint="--out")
    ensure_writable_dir(out_path.resolve().parent)
    clip = load_clip(clip_path, device, activation="quick_gelu" if clip_gelu == "quick" else "gelu")
    vocab = Path(clip_vocab) if clip_vocab else default_vocab_path(clip_path)
    tokenizer = load_tokenizer(vocab, clip.config.vocab_size, clip.config.context_length,
                               weights_path=None if clip_vocab else clip_path)
    loaded = load_model(model, device)
    generator = loaded.generator
    mesh_input = loaded.default_mesh()

    bar = None
    if not quiet:
        from tqdm import tqdm
        bar = tqdm(total=steps, desc="stylizing", dynamic_ncols=True, file=sys.stderr)

    def progress(done: int, total: int) -> None:
        if bar is not None:
            bar.update(done - bar.n)

    try:
        result = stylize(generator, clip, tokenizer, source, target, steps=steps, batch=batch, lr=lr, seed=seed,
                         mesh_input=mesh_input, progress=progress)
    except KeyboardInterrupt:
        raise KeyboardInterrupt(f"Interrupted: the stylization stopped; {out_path} was not written.") from None
    finally:
        if bar is not None:
            bar.close()
    preview = out_path.with_name(out_path.stem + "_preview.png")
    # The model first, then its preview: each file is written atomically, so an interruption leaves whole files.
    save_generator(out_path, result.generator)
    with torch.no_grad():
        write_png(preview, preview_grid(generator, result.generator, mesh_input))
    click.echo(f"wrote {out_path} ({result.steps} steps, {len(result.trainable)} tuned tensors, directional loss "
               f"{result.history[0]:.4f} -> {result.history[-1]:.4f}) and {preview} (top: before, bottom: after)")
