"""`next3d render`: one frame of an avatar (--out), or every frame of an animation (--sequence + --out-dir).

One command with two modes, as users know it; `_check_mode` holds the rules of which options go with which mode,
and each mode has its own function."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

import click

from ..errors import Next3DError
from .loaders import (avatar_identity, check_head, check_output_dir, head_mesh, load_head, load_model,
                      precision_record, render_record, set_threads)
from .options import (THREADS_NOTE, Avatar, FlameFiles, MeshFiles, avatar_options, bundle, device_option, flame_options,
                      given, mesh_options, model_option, precision_option, threads_option)


@dataclass(frozen=True)
class SequenceOptions:
    """The options that apply to sequences only (named as their values on the command line)."""

    out_dir: Optional[str]
    frame_range: Optional[Tuple[int, int]]
    batch: int
    overwrite: bool
    fps: float
    camera: Optional[str]
    smooth_camera: bool
    no_video: bool
    image_mode: str
    quiet: bool


def _parse_frames(ctx, param, value: Optional[str]) -> Optional[Tuple[int, int]]:
    """--frames A-B -> (A, B), inclusive frame numbers."""
    from ..sequence.render import parse_frame_range

    if value is None:
        return None
    try:
        return parse_frame_range(value)
    except Next3DError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None


sequence_options = bundle(
    "seq", SequenceOptions,
    click.option("--out-dir", type=click.Path(file_okay=False),
                 help="Sequence mode: folder for frame_00001.png, ... and video.mp4."),
    click.option("--frames", "frame_range", callback=_parse_frames, metavar="A-B",
                 help="Sequence mode: only frames A to B (numbered from 1, inclusive), e.g. 100-199, to split a "
                      "render across processes or machines."),
    click.option("--batch", default=1, show_default=True, type=click.IntRange(min=1),
                 help="Sequence mode: frames rendered together (faster on a GPU)."),
    click.option("--overwrite", is_flag=True, help="Sequence mode: re-render frames already on disk."),
    click.option("--fps", default=30.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
                 help="Sequence mode: frame rate of the video."),
    click.option("--camera", default=None,
                 help="Sequence mode: 'fixed' (the --yaw/--pitch/--fov camera; the default, except that a FLAME "
                      "animation with cameras uses its own), 'orbit' (the official gen_videos orbit) or a file with "
                      "one label per frame: .npy [frames, 25] or the official dataset.json."),
    click.option("--smooth-camera", is_flag=True,
                 help="Average each label of a camera file with its neighbours, as the official reenactment does."),
    click.option("--no-video", is_flag=True, help="Sequence mode: write the frames only."),
    click.option("--image-mode", type=click.Choice(["image", "image_raw", "image_depth"]), default="image",
                 show_default=True, help="Sequence mode: final image, raw 64px render, or normalized depth."),
    click.option("--quiet", is_flag=True, help="Sequence mode: no progress bar."))


@click.command("render")
@model_option
@avatar_options("Avatar seed (z drawn as in the official scripts).")
@click.option("--yaw", default=0.0, show_default=True, help="Camera yaw offset from frontal, radians.")
@click.option("--pitch", default=0.0, show_default=True, help="Camera pitch offset from frontal, radians.")
@click.option("--fov", default=18.837, show_default=True, help="Field of view, degrees.")
@mesh_options()
@flame_options("turns FLAME parameters (a --sequence animation, a --mesh animation) into meshes; without --mesh, "
               "its neutral head is rendered")
@click.option("--sample-seed", default=0, show_default=True,
              help="Seed of the renderer's random depth samples (per frame in sequence mode).")
@device_option
@click.option("--out", type=click.Path(dir_okay=False), help="Output PNG (one frame).")
@click.option("--sequence", type=click.Path(),
              help="Render a sequence: a FLAME animation (.json/.npz of parameters, through --flame-model), a folder "
                   "of <id>.obj + <id>_kpt2d.txt (the official reenactment layout) or an .npy/.npz of vertices + "
                   "landmarks [frames, 5091, 3].")
@sequence_options
@threads_option(THREADS_NOTE)
@precision_option
def render_command(model: Optional[str], avatar: Avatar, yaw: float, pitch: float, fov: float, mesh: MeshFiles,
                   flame: FlameFiles, sample_seed: int, device: str, out: Optional[str], sequence: Optional[str],
                   seq: SequenceOptions, threads: Optional[int], precision: str) -> None:
    """Render one frame of an avatar (--out), or every frame of an animation (--sequence + --out-dir).

    Sequences resume: frames already in --out-dir are skipped, so run the same command again after an
    interruption, or give each process its own --frames range. Ctrl-C stops after the current frame.

    \b
    Example: next3d render --model next3d_ffhq_512.pkl --mesh demo.obj --seed 4 --yaw 0.3 --out frame.png

    \b
    Example: next3d render --model next3d_ffhq_512.pkl --sequence drive/ --camera drive/dataset.json --out-dir frames/

    \b
    Example (the official FLAME model, its landmark embedding beside it):
             next3d render --model next3d_ffhq_512.pkl --flame-model FLAME2020/generic_model.pkl
                           --sequence anim.json --out-dir frames/

    \b
    Example (an avatar from `next3d invert`):
             next3d render --model me/avatar.safetensors --latent me/latent.npy --mesh me/mesh.npy --out frame.png
    """
    set_threads(threads)
    _check_mode(out, sequence, mesh, seq)
    if sequence is None:
        _render_frame(model, avatar, yaw, pitch, fov, mesh, flame, sample_seed, device, out, precision)
    else:
        _render_sequence(model, avatar, yaw, pitch, fov, flame, sample_seed, device, sequence, seq, precision)


def _check_mode(out: Optional[str], sequence: Optional[str], mesh: MeshFiles, seq: SequenceOptions) -> None:
    """One frame takes --out and no sequence option; a sequence takes --out-dir and brings its own meshes."""
    if sequence is None:
        if out is None:
            raise click.UsageError("Give --out frame.png for one frame, or --sequence PATH --out-dir DIR for an "
                                   "animation.")
        for name in (f.name for f in dataclasses.fields(SequenceOptions)):
            if given(name):
                flag = "--" + {"frame_range": "frames"}.get(name, name).replace("_", "-")
                raise click.BadParameter(f"{flag} applies to sequences only; add --sequence PATH --out-dir DIR, or "
                                         f"drop {flag}.", param_hint=flag)
        return
    if out is not None:
        raise click.BadParameter("--out names a single frame; with --sequence give --out-dir DIR instead.",
                                 param_hint="--out")
    if seq.out_dir is None:
        raise click.BadParameter("--sequence needs --out-dir DIR for the frames.", param_hint="--out-dir")
    if mesh.given:
        raise click.BadParameter("--mesh/--landmarks give one mesh; a sequence brings its own meshes. Drop them.",
                                 param_hint="--mesh")


def _render_frame(model: Optional[str], avatar: Avatar, yaw: float, pitch: float, fov: float, mesh: MeshFiles,
                  flame: FlameFiles, sample_seed: int, device: str, out: str, precision: str) -> None:
    import torch

    from ..flame.conversions import Placement, fold_head_pose_into_label
    from ..io.images import ensure_writable_dir, to_uint8, write_png
    from ..rendering.camera import ffhq_camera

    check_output_dir(Path(out).resolve().parent)
    loaded = load_model(model, device, precision)
    head = head_mesh(mesh, flame, loaded)
    _, identity = avatar_identity(loaded.generator, avatar, device)
    camera = ffhq_camera(yaw, pitch, fov)[None]
    if head.rotation is not None and bool((head.rotation != 0).any()):  # a FLAME frame's head pose
        camera = fold_head_pose_into_label(camera, head.rotation, pivot=head.pivot,
                                           placement=Placement.of(loaded.generator))
    with torch.no_grad():
        rng = torch.Generator(device=device).manual_seed(sample_seed)
        out_frame = loaded.generator.render_frame(identity, head.v.to(device), camera.to(device), generator=rng)
    ensure_writable_dir(Path(out).resolve().parent)
    write_png(out, to_uint8(out_frame.image[0]))
    click.echo(f"wrote {out}")


def _render_sequence(model: Optional[str], avatar: Avatar, yaw: float, pitch: float, fov: float, flame: FlameFiles,
                     sample_seed: int, device: str, sequence: str, seq: SequenceOptions, precision: str) -> None:
    from ..sequence.cameras import camera_track
    from ..sequence.render import is_flame_animation, render_sequence, sequence_source

    # The FLAME model is needed only to turn parameters into meshes; mesh folders and arrays bring their own.
    if flame.model and not is_flame_animation(Path(sequence)):
        raise click.BadParameter(f"{Path(sequence).name} holds meshes already; --flame-model turns a FLAME animation "
                                 "(.json/.npz of parameters) into meshes. Drop --flame-model.",
                                 param_hint="--flame-model")
    head = load_head(flame) if is_flame_animation(Path(sequence)) else None
    try:
        source = sequence_source(sequence, flame=head.flame if head else None)
    except Next3DError as exc:
        raise click.BadParameter(str(exc), param_hint="--sequence") from None
    if seq.camera is None and source.has_own_cameras:
        track = source.cameras
    else:
        try:
            track = camera_track(seq.camera or "fixed", len(source), yaw=yaw, pitch=pitch, fov_deg=fov,
                                 smooth=seq.smooth_camera)
            source.set_cameras(track)
        except Next3DError as exc:
            raise click.BadParameter(str(exc), param_hint="--camera") from None
    fps = source.fps if not given("fps") and source.fps else seq.fps
    frame_range = seq.frame_range
    if frame_range is not None and (frame_range[0] < source.first_number or frame_range[1] > source.last_number):
        raise click.BadParameter(f"frames {frame_range[0]}-{frame_range[1]} are outside the sequence, whose frames "
                                 f"are numbered {source.first_number}-{source.last_number}; choose a range inside "
                                 "it.", param_hint="--frames")
    check_output_dir(seq.out_dir)

    loaded = load_model(model, device, precision)
    _check_sequence_head(loaded, head, sequence, flame)
    _, identity = avatar_identity(loaded.generator, avatar, device)
    settings = render_record(model, avatar, head, kind="render --sequence", sequence=str(Path(sequence).resolve()),
                             camera=seq.camera or "auto", smooth_camera=seq.smooth_camera, yaw=yaw, pitch=pitch,
                             fov=fov, sample_seed=sample_seed, image_mode=seq.image_mode,
                             **precision_record(precision))
    click.echo(f"{source.description}: {len(source)} frames, {track.description}", err=True)
    result = render_sequence(loaded.generator, identity, source, seq.out_dir, frame_range=frame_range,
                             batch_size=seq.batch, overwrite=seq.overwrite, seed=sample_seed, progress=not seq.quiet,
                             write_video=not seq.no_video, fps=fps, image_mode=seq.image_mode, settings=settings)
    click.echo(result.summary())


def _check_sequence_head(loaded, head, sequence: str, flame: FlameFiles) -> None:
    """The sequence's head against the model's topology before any frame: the FLAME model of an animation, or the
    first OBJ of a mesh folder (arrays carry no faces; their vertex count is checked per frame)."""
    if head is not None:
        check_head(loaded, head.faces, head.n_vertices,
                   f"the FLAME model {head.description}" if flame.model else "the built-in head", flame)
        return
    if Path(sequence).is_dir():
        from ..flame.animation import list_obj_sequence
        from ..session import read_obj_faces

        pairs = list_obj_sequence(sequence)
        if pairs:
            first = pairs[0][0]
            check_head(loaded, read_obj_faces(first), loaded.generator.config.n_vertices, f"the mesh {first.name}",
                       flame, mesh_file=True)
