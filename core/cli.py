"""The `next3d` command line. Heavy imports happen inside the commands so `--help` stays fast."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional, Tuple

import click
from click.core import ParameterSource

from .errors import Next3DError


def _fail(exc: Exception) -> None:
    click.echo(f"error: {exc}", err=True)
    sys.exit(2)


class _Group(click.Group):
    """Turns Next3DError into a one-line message and exit code 2 instead of a traceback, and Ctrl-C into a short
    note (what was written, how to resume) and exit code 130."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except Next3DError as exc:
            _fail(exc)
        except KeyboardInterrupt as exc:
            click.echo(f"\n{exc}" if str(exc) else "\nInterrupted.", err=True)
            sys.exit(130)


@click.group(cls=_Group)
@click.version_option(package_name="next3d-blender")
def main() -> None:
    """Next3D neural head avatars: render frames, sequences, orbit videos and meshes; convert and inspect models.

    \b
    Example: next3d render --model next3d_ffhq_512.pkl --sequence drive/ --out-dir frames/
    """


@main.command()
@click.argument("path", type=click.Path(dir_okay=False))
def info(path: str) -> None:
    """Describe a model file (official .pkl or next3d .safetensors).

    \b
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

    \b
    Example: next3d convert next3d_ffhq_512.pkl next3d_ffhq_512.safetensors
    """
    from .io.generator_io import convert_official

    if not dst.endswith(".safetensors"):
        raise click.BadParameter("the output name must end in .safetensors", param_hint="DST")
    config, n = convert_official(src, dst)
    click.echo(f"wrote {dst}: {n} tensors, image {config.image_resolution}px, channel_base {config.channel_base}")


def _load_model(model: Optional[str], device: str):
    """-> (generator, a function giving the default mesh input [1, 5091, 3]: the head the generator was built on)."""
    from .default_model import default_mesh_input, default_model
    from .io.generator_io import load_generator

    if model is None:
        default = default_model()
        click.echo(f"model: {default.description}", err=True)
        return default.generator.to(device), lambda: default.mesh_input
    generator = load_generator(model, device)
    return generator, lambda: default_mesh_input(generator)


def _threads_option(f):
    return click.option("--threads", type=click.IntRange(min=1), default=None,
                        help="CPU threads for torch (default: torch's choice). Sequence frames are byte-identical "
                             "across runs and processes only with the same thread count (and machine type).")(f)


def _set_threads(threads: Optional[int]) -> None:
    if threads:
        import torch
        torch.set_num_threads(threads)


def _given(name: str) -> bool:
    """Whether the option was typed on the command line (not a default)."""
    return click.get_current_context().get_parameter_source(name) == ParameterSource.COMMANDLINE


def _parse_frames(ctx, param, value: Optional[str]) -> Optional[Tuple[int, int]]:
    from .sequence.render import parse_frame_range

    if value is None:
        return None
    try:
        return parse_frame_range(value)
    except Next3DError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None


def _parse_seeds(ctx, param, value: str) -> List[int]:
    import re

    seeds: List[int] = []
    for part in str(value).split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not m or (m.group(2) is not None and int(m.group(1)) > int(m.group(2))):
            raise click.BadParameter(f"--seeds expects a comma-separated list of seeds or ranges A-B with A <= B "
                                     f"(e.g. 0,3,10-12), got {value!r}.", ctx=ctx, param=param)
        first = int(m.group(1))
        seeds.extend(range(first, int(m.group(2) or first) + 1))
    if any(s >= 2 ** 32 for s in seeds):
        raise click.BadParameter("seeds must be below 2**32.", ctx=ctx, param=param)
    return seeds


def _mesh_input(mesh: Optional[str], landmarks: Optional[str], default_v):
    from .io.mesh_files import read_mesh_input

    if landmarks and not mesh:
        raise click.BadParameter("--landmarks belongs to an .obj given with --mesh; add --mesh.",
                                 param_hint="--landmarks")
    return read_mesh_input(mesh, landmarks) if mesh else default_v()


def _latent_option(f):
    return click.option("--latent", type=click.Path(dir_okay=False),
                        help="The avatar's ws (.npy [1, 28, 512]) that `next3d invert` wrote (DIR/latent.npy), "
                             "instead of drawing them from the seed (--trunc is then unused). Use it with that "
                             "avatar's --model DIR/avatar.safetensors.")(f)


def _check_latent_seed(latent: Optional[str], seed_default: bool, flag: str) -> None:
    """--latent fixes the avatar; a seed other than the default would ask for another one."""
    if latent and not seed_default:
        raise click.BadParameter(f"--latent gives the avatar's ws, and {flag} would draw different ones; give "
                                 f"either --latent or {flag}, not both.", param_hint=f"--latent / {flag}")


def _load_latent(latent: str, generator):
    from .inversion.avatar_files import load_latent

    try:
        return load_latent(latent, generator)
    except Next3DError as exc:
        raise click.BadParameter(str(exc), param_hint="--latent") from None


def _identity(generator, seed: int, psi: float, trunc_cutoff: int, device: str, cond=None,
              latent: Optional[str] = None):
    import torch

    from .rendering.camera import ffhq_camera
    from .sampling import latent_from_seed

    if latent:
        ws = _load_latent(latent, generator)
        with torch.no_grad():
            return ws, generator.make_identity(ws)
    cond = ffhq_camera() if cond is None else cond
    with torch.no_grad():
        z = latent_from_seed(seed, generator.config.z_dim).to(device)
        ws = generator.mapping(z, cond[None].to(device), truncation_psi=psi, truncation_cutoff=trunc_cutoff)
        return ws, generator.make_identity(ws)


def _model_key(model: Optional[str]) -> str:
    """How a file (model, FLAME model, latent) is named in a render's recorded settings: its path and a digest of its
    content (for no model, the bundled default's), so that weights retrained in place never mix with the old."""
    from .default_model import weights_digest

    name = "default" if model is None else str(Path(model).resolve())
    digest = weights_digest(None if model is None else Path(name))
    return f"{name} ({digest})" if digest else name


def _set_sample_mult(generator, mult: float) -> None:
    """Scale the depth samples per ray (gen_videos --sample_mult)."""
    import dataclasses

    if mult == 1:
        return
    cfg = generator.config
    r = cfg.rendering
    rendering = dataclasses.replace(r, depth_resolution=max(2, int(r.depth_resolution * mult)),
                                    depth_resolution_importance=int(r.depth_resolution_importance * mult))
    generator.config = dataclasses.replace(cfg, rendering=rendering)


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
@click.option("--sample-seed", default=0, show_default=True,
              help="Seed of the renderer's random depth samples (per frame in sequence mode).")
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda.")
@click.option("--out", type=click.Path(dir_okay=False), help="Output PNG (one frame).")
@click.option("--sequence", type=click.Path(),
              help="Render a sequence: a folder of <id>.obj + <id>_kpt2d.txt (the official reenactment layout) or "
                   "an .npy/.npz of vertices + landmarks [frames, 5091, 3].")
@click.option("--out-dir", type=click.Path(file_okay=False),
              help="Sequence mode: folder for frame_00001.png, ... and video.mp4.")
@click.option("--frames", "frame_range", callback=_parse_frames, metavar="A-B",
              help="Sequence mode: only frames A to B (numbered from 1, inclusive), e.g. 100-199, to split a render "
                   "across processes or machines.")
@click.option("--batch", default=1, show_default=True, type=click.IntRange(min=1),
              help="Sequence mode: frames rendered together (faster on a GPU).")
@click.option("--overwrite", is_flag=True, help="Sequence mode: re-render frames already on disk.")
@click.option("--fps", default=30.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Sequence mode: frame rate of the video.")
@click.option("--camera", default=None,
              help="Sequence mode: 'fixed' (the --yaw/--pitch/--fov camera; the default, except that a FLAME "
                   "animation with cameras uses its own), 'orbit' (the official gen_videos orbit) or a file with one "
                   "label per frame: .npy [frames, 25] or the official dataset.json.")
@click.option("--flame-model", type=click.Path(dir_okay=False),
              help="Sequence mode: the FLAME model (generic_model.pkl or its converted .npz) that turns a FLAME "
                   "animation (.npz/.json of parameters) into meshes (default: the built-in head).")
@click.option("--smooth-camera", is_flag=True,
              help="Average each label of a camera file with its neighbours, as the official reenactment does.")
@click.option("--no-video", is_flag=True, help="Sequence mode: write the frames only.")
@click.option("--image-mode", type=click.Choice(["image", "image_raw", "image_depth"]), default="image",
              show_default=True, help="Sequence mode: final image, raw 64px render, or normalized depth.")
@click.option("--quiet", is_flag=True, help="Sequence mode: no progress bar.")
@_latent_option
@_threads_option
def render(model, seed, psi, trunc_cutoff, yaw, pitch, fov, mesh, landmarks, sample_seed, device, out, sequence,
           out_dir, frame_range, batch, overwrite, fps, camera, flame_model, smooth_camera, no_video, image_mode,
           quiet, latent, threads) -> None:
    """Render one frame of an avatar (--out), or every frame of an animation (--sequence + --out-dir).

    Sequences resume: frames already in --out-dir are skipped, so run the same command again after an
    interruption, or give each process its own --frames range. Ctrl-C stops after the current frame.

    \b
    Example: next3d render --model next3d_ffhq_512.pkl --mesh demo.obj --seed 4 --yaw 0.3 --out frame.png

    \b
    Example: next3d render --model next3d_ffhq_512.pkl --sequence drive/ --camera drive/dataset.json --out-dir frames/

    \b
    Example (an avatar from `next3d invert`):
             next3d render --model me/avatar.safetensors --latent me/latent.npy --mesh me/mesh.npy --out frame.png
    """
    from .io.images import ensure_writable_dir

    _set_threads(threads)
    _check_latent_seed(latent, seed == 0, "--seed")
    if sequence is None:
        if out is None:
            raise click.UsageError("Give --out frame.png for one frame, or --sequence PATH --out-dir DIR for an "
                                   "animation.")
        for name in ("out_dir", "frame_range", "batch", "overwrite", "fps", "camera", "flame_model", "smooth_camera",
                     "no_video", "image_mode", "quiet"):
            if _given(name):
                flag = "--" + {"frame_range": "frames"}.get(name, name).replace("_", "-")
                raise click.BadParameter(f"{flag} applies to sequences only; add --sequence PATH --out-dir DIR, or "
                                         f"drop {flag}.", param_hint=flag)
        ensure_writable_dir(Path(out).resolve().parent)
        _render_single(model, seed, psi, trunc_cutoff, yaw, pitch, fov, mesh, landmarks, sample_seed, device, out,
                       latent)
        return

    if out is not None:
        raise click.BadParameter("--out names a single frame; with --sequence give --out-dir DIR instead.",
                                 param_hint="--out")
    if out_dir is None:
        raise click.BadParameter("--sequence needs --out-dir DIR for the frames.", param_hint="--out-dir")
    if mesh or landmarks:
        raise click.BadParameter("--mesh/--landmarks give one mesh; a sequence brings its own meshes. Drop them.",
                                 param_hint="--mesh")
    from .sequence.cameras import camera_track
    from .sequence.render import is_flame_animation, render_sequence, sequence_source

    # The FLAME model is needed only to turn parameters into meshes; mesh folders and arrays bring their own.
    flame = _load_flame(flame_model) if flame_model or is_flame_animation(Path(sequence)) else None
    try:
        source = sequence_source(sequence, flame=flame)
    except Next3DError as exc:
        raise click.BadParameter(str(exc), param_hint="--sequence") from None
    if camera is None and source.has_own_cameras:
        track = source.cameras
    else:
        try:
            track = camera_track(camera or "fixed", len(source), yaw=yaw, pitch=pitch, fov_deg=fov,
                                 smooth=smooth_camera)
            source.set_cameras(track)
        except Next3DError as exc:
            raise click.BadParameter(str(exc), param_hint="--camera") from None
    if not _given("fps") and source.fps:
        fps = source.fps
    if frame_range is not None and (frame_range[0] < source.first_number or frame_range[1] > source.last_number):
        raise click.BadParameter(f"frames {frame_range[0]}-{frame_range[1]} are outside the sequence, whose frames "
                                 f"are numbered {source.first_number}-{source.last_number}; choose a range inside "
                                 "it.", param_hint="--frames")
    ensure_writable_dir(out_dir)

    generator, _ = _load_model(model, device)
    _, identity = _identity(generator, seed, psi, trunc_cutoff, device, latent=latent)
    settings = {"kind": "render --sequence", "model": _model_key(model), "seed": seed, "trunc": psi,
                "trunc_cutoff": trunc_cutoff, "sequence": str(Path(sequence).resolve()), "camera": camera or "auto",
                "flame_model": _model_key(flame_model) if flame_model else None,
                "smooth_camera": smooth_camera, "yaw": yaw, "pitch": pitch, "fov": fov, "sample_seed": sample_seed,
                "image_mode": image_mode}
    if latent:  # only then, so settings of renders from seeds stay as they were (resume compares them)
        settings["latent"] = _model_key(latent)
    click.echo(f"{source.description}: {len(source)} frames, {track.description}", err=True)
    result = render_sequence(generator, identity, source, out_dir, frame_range=frame_range, batch_size=batch,
                             overwrite=overwrite, seed=sample_seed, progress=not quiet, write_video=not no_video,
                             fps=fps, image_mode=image_mode, settings=settings)
    click.echo(result.summary())


def _load_flame(path: Optional[str]):
    """A core.flame FlameModel from the official generic_model.pkl (converted once, cached), a converted .npz, or
    (None) the built-in head."""
    from .flame import FlameModel, load_model_data, load_or_convert
    from .flame.builtin_head import BUILTIN_HEAD_PATH

    p = Path(path) if path else BUILTIN_HEAD_PATH
    try:
        data = load_model_data(p) if p.suffix.lower() == ".npz" else load_or_convert(p)
        return FlameModel(data)
    except Next3DError as exc:
        raise click.BadParameter(str(exc), param_hint="--flame-model") from None


def _render_single(model, seed, psi, trunc_cutoff, yaw, pitch, fov, mesh, landmarks, sample_seed, device, out,
                   latent=None):
    import torch

    from .io.images import to_uint8, write_png
    from .rendering.camera import ffhq_camera

    generator, default_v = _load_model(model, device)
    v = _mesh_input(mesh, landmarks, default_v)
    _, identity = _identity(generator, seed, psi, trunc_cutoff, device, latent=latent)
    with torch.no_grad():
        rng = torch.Generator(device=device).manual_seed(sample_seed)
        out_frame = generator.render_frame(identity, v.to(device), ffhq_camera(yaw, pitch, fov)[None].to(device),
                                           generator=rng)
    write_png(out, to_uint8(out_frame.image[0]))
    click.echo(f"wrote {out}")


@main.command()
@click.option("--model", type=click.Path(dir_okay=False), help="Official .pkl or .safetensors (default: bundled).")
@click.option("--seeds", default="0", show_default=True, callback=_parse_seeds,
              help="Avatar seeds, e.g. 0,3,10-12. Several seeds: the video interpolates between them (cubic, "
                   "looping), as gen_videos does.")
@click.option("--frames", default=240, show_default=True, type=click.IntRange(min=1),
              help="Frames per seed (gen_videos --w-frames); the orbit period is half the video.")
@click.option("--trunc", "psi", default=0.7, show_default=True, help="Truncation psi.")
@click.option("--trunc-cutoff", default=14, show_default=True, help="Number of ws truncated.")
@click.option("--mesh", type=click.Path(dir_okay=False),
              help="FLAME mesh: .obj (+ --landmarks) or a (5091, 3) .npy/.txt array (default: the stand-in head).")
@click.option("--landmarks", type=click.Path(dir_okay=False), help="68 x 3 landmark text file for an .obj mesh.")
@click.option("--fps", default=60.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Video frame rate (gen_videos: 60).")
@click.option("--image-mode", type=click.Choice(["image", "image_raw", "image_depth"]), default="image",
              show_default=True, help="Final image, raw 64px render, or normalized depth.")
@click.option("--sample-mult", default=1.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Multiply the depth samples per ray (gen_videos uses 2: better, twice as slow).")
@click.option("--sample-seed", default=0, show_default=True, help="Seed of the renderer's random depth samples.")
@click.option("--batch", default=1, show_default=True, type=click.IntRange(min=1), help="Frames rendered together.")
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Output video (.mp4).")
@click.option("--frames-dir", type=click.Path(file_okay=False),
              help="Folder for the frame PNGs (default: <out>_frames beside the video); a re-run resumes there.")
@click.option("--keep-frames", is_flag=True, help="Keep the frame PNGs after the video is written.")
@click.option("--overwrite", is_flag=True, help="Re-render frames left in --frames-dir by an earlier run.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@_latent_option
@_threads_option
def video(model, seeds, frames, psi, trunc_cutoff, mesh, landmarks, fps, image_mode, sample_mult, sample_seed, batch,
          device, out, frames_dir, keep_frames, overwrite, quiet, latent, threads) -> None:
    """Orbit video of avatars on one fixed mesh, as the official gen_videos script (camera yaw 0.35 and pitch
    0.25 radians about the frontal view, two orbits per video).

    Frames go to --frames-dir first, so an interrupted video resumes when the same command is run again.

    \b
    Example: next3d video --model next3d_ffhq_512.pkl --mesh demo.obj --seeds 0 --frames 120 --out orbit.mp4
    """
    import numpy as np
    import torch

    from .io.images import ensure_writable_dir
    from .sequence.cameras import OrbitCamera, video_conditioning_label
    from .sequence.render import SETTINGS_NAME, StaticMeshSource, frame_name, render_sequence
    from .sequence.video import VIDEO_SUFFIXES

    _set_threads(threads)
    _check_latent_seed(latent, seeds == [0], "--seeds")
    out_path = Path(out)
    if out_path.suffix.lower() not in VIDEO_SUFFIXES:
        raise click.BadParameter(f"the video name must end in {' or '.join(VIDEO_SUFFIXES)}, e.g. orbit.mp4.",
                                 param_hint="--out")
    ensure_writable_dir(out_path.resolve().parent)
    frames_dir = Path(frames_dir) if frames_dir else out_path.with_name(out_path.stem + "_frames")
    ensure_writable_dir(frames_dir)

    generator, default_v = _load_model(model, device)
    v = _mesh_input(mesh, landmarks, default_v)
    _set_sample_mult(generator, sample_mult)
    cfg = generator.config
    cond = video_conditioning_label(radius=cfg.avg_camera_radius, pivot=cfg.avg_camera_pivot)
    n_frames = len(seeds) * frames
    cameras = OrbitCamera(n_frames, radius=cfg.avg_camera_radius, pivot=cfg.avg_camera_pivot)
    if len(seeds) == 1:
        _, identity = _identity(generator, seeds[0], psi, trunc_cutoff, device, cond, latent=latent)
        ws_of = None
    else:
        import scipy.interpolate

        with torch.no_grad():
            z = torch.cat([_latent(s, cfg.z_dim) for s in seeds]).to(device)
            ws = generator.mapping(z, cond[None].expand(len(seeds), -1).to(device), truncation_psi=psi,
                                   truncation_cutoff=trunc_cutoff).cpu().numpy()
        wraps, k = 2, len(seeds)
        interp = scipy.interpolate.interp1d(np.arange(-k * wraps, k * (wraps + 1)),
                                            np.tile(ws, [2 * wraps + 1, 1, 1]), kind="cubic", axis=0)
        identity = None

        def ws_of(i):
            return torch.from_numpy(np.asarray(interp(i / frames), dtype=np.float32))
    source = StaticMeshSource(v[0], n_frames, cameras, ws=ws_of)
    settings = {"kind": "video", "model": _model_key(model), "seeds": seeds, "frames": frames, "trunc": psi,
                "trunc_cutoff": trunc_cutoff, "mesh": str(Path(mesh).resolve()) if mesh else None,
                "image_mode": image_mode, "sample_mult": sample_mult, "sample_seed": sample_seed}
    if latent:
        settings["latent"] = _model_key(latent)
    click.echo(f"{n_frames} frames ({len(seeds)} seeds x {frames}) into {frames_dir}", err=True)
    result = render_sequence(generator, identity, source, frames_dir, batch_size=batch, seed=sample_seed,
                             overwrite=overwrite,
                             progress=not quiet, write_video=True, fps=fps, image_mode=image_mode,
                             video_path=out_path, settings=settings)
    if not keep_frames:
        for n in range(source.first_number, source.last_number + 1):
            (frames_dir / frame_name(n)).unlink(missing_ok=True)
        (frames_dir / SETTINGS_NAME).unlink(missing_ok=True)
        try:
            frames_dir.rmdir()
        except OSError:
            pass  # other files are in it
    click.echo(f"wrote {out_path} ({n_frames} frames at {fps:g} fps; {len(result.written)} rendered now, "
               f"{len(result.skipped)} from an earlier run)")


def _latent(seed: int, z_dim: int):
    from .sampling import latent_from_seed
    return latent_from_seed(seed, z_dim)


@main.command()
@click.option("--model", type=click.Path(dir_okay=False), help="Official .pkl or .safetensors (default: bundled).")
@click.option("--seed", default=0, show_default=True, help="Avatar seed.")
@click.option("--trunc", "psi", default=0.7, show_default=True, help="Truncation psi.")
@click.option("--trunc-cutoff", default=14, show_default=True, help="Number of ws truncated.")
@click.option("--mesh", type=click.Path(dir_okay=False),
              help="FLAME mesh (the expression): .obj (+ --landmarks) or a (5091, 3) .npy/.txt array (default: the "
                   "stand-in head).")
@click.option("--landmarks", type=click.Path(dir_okay=False), help="68 x 3 landmark text file for an .obj mesh.")
@click.option("--resolution", default=256, show_default=True, type=click.IntRange(min=16),
              help="Lattice points per side of the density grid (official: 512).")
@click.option("--level", type=float, default=None,
              help="Raw density of the surface [default: the official 10 when the model's density reaches it, "
                   "else its 0.9 quantile (random weights)].")
@click.option("--units", type=click.Choice(["flame", "world"]), default="flame", show_default=True,
              help="Vertex coordinates: the FLAME head frame (lines up with the rig) or EG3D world units.")
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Output mesh: .ply, .obj or .glb.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@_latent_option
@_threads_option
def mesh(model, seed, psi, trunc_cutoff, mesh, landmarks, resolution, level, units, device, out, quiet, latent,
         threads) -> None:
    """Extract the avatar's surface, for one expression, as a triangle mesh with vertex colours (marching cubes
    on the density field).

    \b
    Example: next3d mesh --model next3d_ffhq_512.pkl --mesh demo.obj --seed 4 --resolution 256 --out head.ply
    """
    import torch

    from .errors import InputError
    from .io.images import ensure_writable_dir

    try:
        from .mesh.export import SUFFIXES, save_mesh
        from .mesh.extract import extract_mesh, surface_level
    except ImportError as exc:
        raise InputError(f"Mesh extraction is not available in this installation ({exc}); update next3d-blender "
                         "to a version that has core/mesh.") from None
    if Path(out).suffix.lower() not in SUFFIXES:
        raise click.BadParameter(f"the mesh name must end in {', '.join(SUFFIXES)}, e.g. head.ply.",
                                 param_hint="--out")
    _check_latent_seed(latent, seed == 0, "--seed")
    _set_threads(threads)
    ensure_writable_dir(Path(out).resolve().parent)
    generator, default_v = _load_model(model, device)
    v = _mesh_input(mesh, landmarks, default_v)
    _, identity = _identity(generator, seed, psi, trunc_cutoff, device, latent=latent)
    bar = None
    if not quiet:
        from tqdm import tqdm
        bar = tqdm(desc="extracting", dynamic_ncols=True, file=sys.stderr,
                   bar_format="{l_bar}{bar}| [{elapsed}<{remaining}]")

    def progress(done, total):
        bar.total = total
        bar.update(done - bar.n)

    try:
        with torch.no_grad():
            planes = generator.build_planes(identity, v.to(device))
            if level is None:
                level = surface_level(generator, planes)
            result = extract_mesh(generator, planes, resolution=resolution, level=level, units=units,
                                  progress=progress if bar is not None else None)
    finally:
        if bar is not None:
            bar.close()
    save_mesh(out, result)
    click.echo(f"wrote {out} ({len(result.vertices)} vertices, {len(result.faces)} faces, {units} units, level "
               f"{level:.3g})")


@main.command()
@click.option("--out", default="out", show_default=True, type=click.Path(file_okay=False))
@click.option("--seed", default=0, show_default=True)
@click.option("--frames", "n_frames", default=16, show_default=True, type=click.IntRange(min=2))
def demo(out: str, seed: int, n_frames: int) -> None:
    """Animate the built-in head with the default model (jaw, smile, gaze, head turn) into OUT/frames and
    OUT/video.mp4, save the animation as OUT/demo_animation.json, and extract a mesh at the open-jaw frame.

    Example: next3d demo --out out
    """
    import numpy as np
    import torch

    from .default_model import default_model
    from .demo import demo_animation
    from .flame.animation import save_sequence
    from .flame.builtin_head import load_builtin_head_data
    from .io.images import ensure_writable_dir
    from .mesh import extract_mesh, save_mesh, surface_level
    from .rendering.camera import ffhq_camera
    from .sampling import latent_from_seed
    from .sequence.cameras import camera_track
    from .sequence.render import FlameSequenceSource, frame_name, render_sequence, settings_differ

    out_dir = ensure_writable_dir(out)
    model = default_model()
    click.echo(f"model: {model.description}")
    generator = model.generator
    flame = _load_flame(None)
    names = load_builtin_head_data()["expression_names"]
    animation = demo_animation(flame.n_shape, flame.n_expr, names, n_frames=n_frames)
    save_sequence(out_dir / "demo_animation.json", animation)
    source = FlameSequenceSource(animation, flame)
    source.set_cameras(camera_track("fixed", len(source), yaw=0.0, pitch=-0.05))
    with torch.no_grad():
        ws = generator.mapping(latent_from_seed(seed, generator.config.z_dim), ffhq_camera()[None],
                               truncation_psi=0.7, truncation_cutoff=14)
        identity = generator.make_identity(ws)
    settings = {"kind": "demo", "seed": seed, "frames": n_frames, "model": model.description,
                "weights": _model_key(None)}
    # The demo's folder holds only the demo's own frames: made with other settings (another seed, a new bundled
    # model), they are rendered again rather than refused.
    overwrite = settings_differ(out_dir / "frames", settings)
    if overwrite:
        click.echo(f"{out_dir / 'frames'} holds demo frames made with other settings; rendering them again")
        # A longer earlier demo left frames past this one's end; they would sit beside the new ones.
        ours = {frame_name(n) for n in range(source.first_number, source.last_number + 1)}
        for path in (out_dir / "frames").glob("frame_*.png"):
            if path.name not in ours:
                path.unlink()
    result = render_sequence(generator, identity, source, out_dir / "frames", seed=seed, fps=animation.fps,
                             settings=settings, overwrite=overwrite)
    click.echo(result.summary())
    jaw_frame = int(np.argmax(animation.frames.jaw[:, 0].numpy()))
    with torch.no_grad():
        planes = generator.build_planes(identity, source.mesh(jaw_frame)[None])
        level = surface_level(generator, planes)
        mesh = extract_mesh(generator, planes, resolution=128, level=level)
    path = save_mesh(out_dir / "demo_mesh.glb", mesh)
    click.echo(f"wrote {path} ({mesh.n_vertices} vertices, level {level:.3g}, frame {jaw_frame + 1})")


def _register_training_commands() -> None:
    """`train`, `make-dataset` and `evaluate` live in core/training/cli.py with the training code."""
    from .training.cli import evaluate_command, make_dataset_command, train_command

    main.add_command(train_command, "train")
    main.add_command(make_dataset_command, "make-dataset")
    main.add_command(evaluate_command, "evaluate")


_register_training_commands()


def _register_application_commands() -> None:
    """`invert` (core/inversion/cli.py) and `stylize` (core/stylize/cli.py) live beside their code."""
    from .inversion.cli import invert_command
    from .stylize.cli import stylize_command

    main.add_command(invert_command, "invert")
    main.add_command(stylize_command, "stylize")


_register_application_commands()


if __name__ == "__main__":
    main()
