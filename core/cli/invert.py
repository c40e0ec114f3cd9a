"""`next3d invert`: a one-shot avatar from a portrait (preprocessing, then pivotal tuning inversion)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import click

from .loaders import check_head, load_head, load_model, set_threads
from .options import FlameFiles, device_option, flame_options, model_option, threads_option


def _aligned_target(pixels, resolution: int, source: str):
    """An already aligned portrait [H, W, 3] uint8 -> [1, 3, R, R] in [-1, 1] (antialiased resize)."""
    import torch.nn.functional as F

    from ..errors import InputError
    from ..io.images import from_uint8

    h, w = pixels.shape[:2]
    if abs(h - w) > 0.01 * max(h, w):
        raise InputError(f"{source} is {w}x{h} pixels; an aligned portrait (given with --camera and --mesh) must be "
                         "a square crop. Crop it, or leave out --mesh to let preprocessing align it.")
    x = from_uint8(pixels)[None]
    if (h, w) != (resolution, resolution):
        x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False, antialias=True)
    return x


@click.command("invert")
@click.argument("portrait", type=click.Path(dir_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Avatar folder: avatar.safetensors, latent.npy, camera.npy, mesh.npy, reconstruction.png, "
                   "target.png, avatar.json.")
@model_option
@flame_options("is fitted to the portrait's landmarks; it must be the head the model was trained on (the "
               "official model: FLAME)")
@click.option("--landmarks", type=click.Path(dir_okay=False),
              help="68 landmarks of the portrait in image pixels (.npy/.txt/.json) instead of detecting them.")
@click.option("--face", type=click.IntRange(min=1),
              help="Which face of a photo with several, numbered from 1 left to right (default: the largest).")
@click.option("--camera", type=click.Path(dir_okay=False),
              help="Camera label of the portrait (.npy [25], .json) instead of estimating it. With --mesh too, the "
                   "image is taken as already aligned and only resized.")
@click.option("--mesh", type=click.Path(dir_okay=False),
              help="Generator mesh input of the portrait ([5091, 3] .npy/.txt, or .obj + _kpt2d.txt); needs --camera.")
@click.option("--vgg16", type=click.Path(dir_okay=False),
              help="torchvision VGG16 state dict (.pth/.safetensors) for the perceptual (LPIPS) loss. Without it "
                   "the pixel and SSIM losses are used.")
@click.option("--lpips", type=click.Path(dir_okay=False),
              help="LPIPS lin weights for VGG (vgg.pth of the LPIPS release); needs --vgg16.")
@click.option("--latent-steps", default=450, show_default=True, type=click.IntRange(min=0),
              help="Steps of phase 1 (optimize the 28 ws).")
@click.option("--tune-steps", default=500, show_default=True, type=click.IntRange(min=0),
              help="Steps of phase 2 (fine-tune the generator at those ws).")
@click.option("--seed", default=0, show_default=True, help="Seed of the renderer's depth samples and the ws noise.")
@device_option
@threads_option()
@click.option("--overwrite", is_flag=True, help="Replace an avatar already in --out.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def invert_command(portrait: str, out: str, model: Optional[str], flame: FlameFiles,
                   landmarks: Optional[str], face: Optional[int], camera: Optional[str], mesh: Optional[str],
                   vgg16: Optional[str], lpips: Optional[str], latent_steps: int, tune_steps: int, seed: int,
                   device: str, threads: Optional[int], overwrite: bool, quiet: bool) -> None:
    """One-shot avatar from a portrait photo by pivotal tuning inversion: detect and fit the face, optimize the
    avatar's ws (phase 1), then fine-tune the generator at those ws (phase 2). The result animates like any avatar.

    Ctrl-C stops the inversion; nothing is saved then.

    \b
    Example: next3d invert photo.jpg --out avatars/me --model next3d_ffhq_512.pkl --flame-model generic_model.pkl
             --vgg16 vgg16.pth --lpips vgg.pth
    """
    from ..errors import Next3DError
    from ..inversion.avatar_files import check_avatar_folder, save_avatar
    from ..inversion.perceptual import load_perceptual
    from ..inversion.pti import invert
    from ..io.images import from_uint8, read_image
    from ..io.mesh_files import read_mesh_input
    from ..portrait import preprocess_portrait, read_camera_file, read_landmarks_file

    set_threads(threads)
    if lpips and not vgg16:
        raise click.BadParameter("the LPIPS weights work on a VGG16; add --vgg16 PATH.", param_hint="--lpips")
    if mesh and not camera:
        raise click.BadParameter("--mesh gives an aligned portrait's mesh; add its --camera too, or drop --mesh to "
                                 "fit the mesh to the photo.", param_hint="--mesh")
    if landmarks and camera and mesh:
        raise click.BadParameter("--landmarks are not used when --camera and --mesh describe an aligned portrait; "
                                 "drop one of them.", param_hint="--landmarks")
    out_dir = check_avatar_folder(out, overwrite)
    pixels = read_image(portrait)
    perceptual = None
    if vgg16:
        try:
            perceptual = load_perceptual(vgg16, lpips, device)
        except Next3DError as exc:
            raise click.BadParameter(str(exc), param_hint="--lpips" if lpips and Path(lpips).name in str(exc)
                                     else "--vgg16") from None
    loaded = load_model(model, device)
    generator = loaded.generator
    res = generator.config.image_resolution

    portrait_result = None
    if camera and mesh:
        target = _aligned_target(pixels, res, portrait)
        cam = read_camera_file(camera)[None]
        mesh_input = read_mesh_input(mesh, n_vertices=generator.config.n_vertices,
                                     n_landmarks=generator.config.n_landmarks)
        if Path(mesh).suffix.lower() == ".obj":
            from ..session import read_obj_faces

            check_head(loaded, read_obj_faces(mesh), generator.config.n_vertices, f"the mesh {Path(mesh).name}", flame,
                       mesh_file=True)
    else:
        head = load_head(flame, loaded)
        click.echo("preprocessing the portrait (landmarks, crop, camera, FLAME fit)", err=True)
        portrait_result = preprocess_portrait(pixels, head.flame, resolution=res,
                                              landmarks=read_landmarks_file(landmarks) if landmarks else None,
                                              camera=read_camera_file(camera) if camera else None,
                                              source=str(portrait), face=face)
        if portrait_result.faces_note:
            click.echo(portrait_result.faces_note, err=True)
        click.echo(f"landmark fit error {portrait_result.fit_error_px:.2f} px", err=True)
        for warning in portrait_result.warnings:
            click.echo(f"warning: {warning}", err=True)
        target = from_uint8(portrait_result.image)[None]
        cam = portrait_result.camera[None]
        mesh_input = portrait_result.mesh_input
    generator.split_mesh(mesh_input)  # a mesh of another head fails here, before the long part

    bar = None
    if not quiet:
        from tqdm import tqdm
        bar = tqdm(total=latent_steps + tune_steps, desc="inverting", dynamic_ncols=True, file=sys.stderr)

    def on_step(entry) -> None:
        if bar is not None:
            bar.set_postfix_str(f"{entry.phase} psnr {entry.psnr:.2f} dB", refresh=False)
            bar.update(1)

    try:
        result = invert(generator, target, cam, mesh_input, latent_steps=latent_steps, tune_steps=tune_steps,
                        perceptual=perceptual, seed=seed, on_step=on_step)
    except KeyboardInterrupt:
        raise KeyboardInterrupt(f"Interrupted: the inversion stopped; nothing was saved in {out_dir}.") from None
    finally:
        if bar is not None:
            bar.close()
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    save_avatar(out_dir, result, portrait=portrait_result, source_image=portrait, overwrite=overwrite,
                extra_info=_model_info(model))
    click.echo(f"wrote {out_dir}: PSNR {result.psnr_start:.2f} dB at the start, {result.psnr_latent:.2f} dB after "
               f"{result.latent_steps} latent steps, {result.psnr_tuned:.2f} dB after {result.tune_steps} tuning "
               "steps")
    d = out_dir
    click.echo(f"animate it: next3d render --model {d / 'avatar.safetensors'} --latent {d / 'latent.npy'} "
               f"--mesh {d / 'mesh.npy'} --sample-seed {seed} --out frame.png   (or --sequence DRIVE --out-dir "
               "frames/)")


def _model_info(model: Optional[str]) -> dict:
    """What avatar.json records of the model the avatar was tuned from: its file and weights digest."""
    from ..session import model_record

    record = model_record(model)
    return {"model": f"{record['model']} ({record['weights']})" if record["weights"] else record["model"]}
