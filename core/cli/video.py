"""`next3d video`: an orbit video of avatars on one fixed mesh, as the official gen_videos script."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

import click

from .loaders import (avatar_identity, check_output_dir, head_mesh, load_model, precision_record, render_record,
                      set_threads)
from .options import (THREADS_NOTE, Avatar, FlameFiles, MeshFiles, avatar_seeds_options, device_option, flame_options,
                      mesh_options, model_option, precision_option, threads_option)


@click.command("video")
@model_option
@avatar_seeds_options
@click.option("--frames", default=240, show_default=True, type=click.IntRange(min=1),
              help="Frames per seed (gen_videos --w-frames); the orbit period is half the video.")
@mesh_options()
@flame_options("makes the head: its neutral head, or the first frame of a --mesh animation (the head's global "
               "rotation is not used: the orbit moves the camera)")
@click.option("--fps", default=60.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Video frame rate (gen_videos: 60).")
@click.option("--image-mode", type=click.Choice(["image", "image_raw", "image_depth"]), default="image",
              show_default=True, help="Final image, raw 64px render, or normalized depth.")
@click.option("--sample-mult", default=1.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Multiply the depth samples per ray (gen_videos uses 2: better, twice as slow).")
@click.option("--sample-seed", default=0, show_default=True, help="Seed of the renderer's random depth samples.")
@click.option("--batch", default=1, show_default=True, type=click.IntRange(min=1), help="Frames rendered together.")
@device_option
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Output video (.mp4).")
@click.option("--frames-dir", type=click.Path(file_okay=False),
              help="Folder for the frame PNGs (default: <out>_frames beside the video); a re-run resumes there.")
@click.option("--keep-frames", is_flag=True, help="Keep the frame PNGs after the video is written.")
@click.option("--overwrite", is_flag=True, help="Re-render frames left in --frames-dir by an earlier run.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@threads_option(THREADS_NOTE)
@precision_option
def video_command(model: Optional[str], avatar: Avatar, frames: int, mesh: MeshFiles, flame: FlameFiles, fps: float,
                  image_mode: str, sample_mult: float, sample_seed: int, batch: int, device: str, out: str,
                  frames_dir: Optional[str], keep_frames: bool, overwrite: bool, quiet: bool,
                  threads: Optional[int], precision: str) -> None:
    """Orbit video of avatars on one fixed mesh, as the official gen_videos script (camera yaw 0.35 and pitch
    0.25 radians about the frontal view, two orbits per video).

    Frames go to --frames-dir first, so an interrupted video resumes when the same command is run again.

    \b
    Example: next3d video --model next3d_ffhq_512.pkl --mesh demo.obj --seeds 0 --frames 120 --out orbit.mp4

    \b
    Example: next3d video --model next3d_ffhq_512.pkl --flame-model FLAME2020/generic_model.pkl --out orbit.mp4
    """
    import numpy as np
    import torch

    from ..io.folder_lock import FolderLock
    from ..io.images import ensure_writable_dir
    from ..sampling import latent_from_seed
    from ..sequence.cameras import OrbitCamera, video_conditioning_label
    from ..sequence.render import SETTINGS_NAME, StaticMeshSource, frame_name, render_sequence
    from ..sequence.video import VIDEO_SUFFIXES

    set_threads(threads)
    out_path = Path(out)
    if out_path.suffix.lower() not in VIDEO_SUFFIXES:
        raise click.BadParameter(f"the video name must end in {' or '.join(VIDEO_SUFFIXES)}, e.g. orbit.mp4.",
                                 param_hint="--out")
    check_output_dir(out_path.resolve().parent)
    frames_dir = Path(frames_dir) if frames_dir else out_path.with_name(out_path.stem + "_frames")
    check_output_dir(frames_dir)

    loaded = load_model(model, device, precision)
    generator = loaded.generator
    head = head_mesh(mesh, flame, loaded)
    v = head.v
    _set_sample_mult(generator, sample_mult)
    cfg = generator.config
    cond = video_conditioning_label(radius=cfg.avg_camera_radius, pivot=cfg.avg_camera_pivot)
    seeds = list(avatar.seeds)
    n_frames = len(seeds) * frames
    cameras = OrbitCamera(n_frames, radius=cfg.avg_camera_radius, pivot=cfg.avg_camera_pivot)
    if len(seeds) == 1:
        _, identity = avatar_identity(generator, avatar, device, cond)
        ws_of = None
    else:
        import scipy.interpolate

        with torch.no_grad():
            z = torch.cat([latent_from_seed(s, cfg.z_dim) for s in seeds]).to(device)
            ws = generator.mapping(z, cond[None].expand(len(seeds), -1).to(device), truncation_psi=avatar.psi,
                                   truncation_cutoff=avatar.trunc_cutoff).cpu().numpy()
        wraps, k = 2, len(seeds)
        interp = scipy.interpolate.interp1d(np.arange(-k * wraps, k * (wraps + 1)),
                                            np.tile(ws, [2 * wraps + 1, 1, 1]), kind="cubic", axis=0)
        identity = None

        def ws_of(i):
            return torch.from_numpy(np.asarray(interp(i / frames), dtype=np.float32))
    source = StaticMeshSource(v[0], n_frames, cameras, ws=ws_of)
    settings = render_record(model, avatar, head.head, kind="video", seeds=seeds, frames=frames,
                             mesh=str(Path(mesh.mesh).resolve()) if mesh.mesh else None, image_mode=image_mode,
                             sample_mult=sample_mult, sample_seed=sample_seed, **precision_record(precision))
    click.echo(f"{n_frames} frames ({len(seeds)} seeds x {frames}) into {frames_dir}", err=True)
    ensure_writable_dir(out_path.resolve().parent)
    # The command holds the frames' folder alone from the first frame until the frames are deleted.
    with FolderLock(ensure_writable_dir(frames_dir), "video"):
        result = render_sequence(generator, identity, source, frames_dir, batch_size=batch, seed=sample_seed,
                                 overwrite=overwrite, progress=not quiet, write_video=True, fps=fps,
                                 image_mode=image_mode, video_path=out_path, settings=settings)
        if not keep_frames:
            for n in range(source.first_number, source.last_number + 1):
                (frames_dir / frame_name(n)).unlink(missing_ok=True)
            (frames_dir / SETTINGS_NAME).unlink(missing_ok=True)
    if not keep_frames:
        try:
            frames_dir.rmdir()
        except OSError:
            pass  # other files are in it
    click.echo(f"wrote {out_path} ({n_frames} frames at {fps:g} fps; {len(result.written)} rendered now, "
               f"{len(result.skipped)} from an earlier run)")


def _set_sample_mult(generator, mult: float) -> None:
    """Scale the depth samples per ray (gen_videos --sample_mult)."""
    if mult == 1:
        return
    cfg = generator.config
    r = cfg.rendering
    rendering = dataclasses.replace(r, depth_resolution=max(2, int(r.depth_resolution * mult)),
                                    depth_resolution_importance=int(r.depth_resolution_importance * mult))
    generator.config = dataclasses.replace(cfg, rendering=rendering)
