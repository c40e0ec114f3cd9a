"""`next3d track`: performance capture, a face video (or a folder of images) -> a FLAME animation."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import click

from .loaders import load_head, set_threads
from .options import FlameFiles, flame_options, threads_option


@click.command("track")
@click.argument("video", type=click.Path())
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="The animation: .npz or .json (the project's FLAME animation format). A report, "
                   "NAME.track.json, is written beside it.")
@click.option("--face", type=click.IntRange(min=1),
              help="Which face when there are several: numbered from 1 left to right in the first frame with a "
                   "face (default: the largest).")
@click.option("--fps", type=click.FloatRange(min=0, min_open=True, max=1000),
              help="Frame rate of a folder of images (default 30). For a video: resample the animation to this "
                   "rate (default: the video's own).")
@flame_options("is fitted to the face (the animation's parameters are this model's)")
@click.option("--smoothing", default=1.0, show_default=True, type=click.FloatRange(min=0),
              help="Strength of the temporal terms against jitter; 0 fits every frame on its own.")
@click.option("--keep-translation", is_flag=True,
              help="Also write per-frame cameras that move the head across the picture as it moved in the video "
                   "(default: it stays centred and only turns).")
@threads_option("The fit uses one thread unless this is given (its tensors are small).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def track_command(video: str, out: str, face: Optional[int], fps: Optional[float], flame: FlameFiles,
                  smoothing: float, keep_translation: bool, threads: Optional[int], quiet: bool) -> None:
    """Track the face in VIDEO (a video file, a folder of images or one image) and fit FLAME to the whole clip:
    one shape, and per frame the expression, jaw, head pose and eyes, smoothed over time. Frames without a face are
    filled in and named. Ctrl-C stops; nothing is written then.

    VIDEO may also be a Live Link Face recording (.csv of ARKit blend shapes): it is mapped onto the built-in
    head's named expressions, jaw, eyes and head pose instead.

    \b
    Example: next3d track performance.mp4 --out anim.npz
             next3d render --sequence anim.npz --out-dir frames/            (the built-in head)
             next3d render --model me/avatar.safetensors --latent me/latent.npy --sequence anim.npz --out-dir frames/
    """
    from ..capture.fit import FitOptions
    from ..capture.output import report_path, write_result
    from ..capture.pipeline import track_clip
    from ..io.images import ensure_writable_dir

    set_threads(threads)
    out_path = Path(out)
    if out_path.suffix.lower() not in (".npz", ".json"):
        raise click.BadParameter(f"{out_path.name} is neither .npz nor .json; name the animation anim.npz or "
                                 "anim.json.", param_hint="--out")
    ensure_writable_dir(out_path.resolve().parent)
    if Path(video).suffix.lower() == ".csv":
        _live_link(video, out_path, fps, flame)
        return
    head = load_head(flame)
    bars = {}

    def progress(stage: str, done: int, total: int) -> None:
        if quiet:
            return
        if stage not in bars:
            from tqdm import tqdm

            for bar in bars.values():
                bar.close()
            label = {"landmarks": "landmarks", "fit": "fitting"}[stage]
            bars[stage] = tqdm(total=total, desc=label, unit="frame" if stage == "landmarks" else "step",
                               dynamic_ncols=True, file=sys.stderr)
        bar = bars[stage]
        if total != bar.total:
            bar.total = total
        bar.update(done - bar.n)

    try:
        options = FitOptions(smoothing=smoothing, **({"threads": threads} if threads else {}))
        result = track_clip(video, head.flame, face=face, fps=fps, options=options,
                            keep_translation=keep_translation, progress=progress,
                            on_open=lambda text: click.echo(text, err=True))
    except KeyboardInterrupt:
        raise KeyboardInterrupt(f"Interrupted: tracking stopped; {out_path} was not written.") from None
    finally:
        for bar in bars.values():
            bar.close()
    report = result.report
    if result.faces_note:
        click.echo(result.faces_note, err=True)
    for message in result.messages:
        click.echo(f"warning: {message}", err=True)
    write_result(out_path, result)
    seq = result.sequence
    error = report["landmark_error_px"]["mean"]
    frames = f"{seq.n_frames} frame{'s' if seq.n_frames != 1 else ''}"
    click.echo(f"wrote {out_path} ({frames} at {seq.fps:g} fps, {seq.duration:.1f} s; mean landmark "
               f"error {error:.2f} px) and {report_path(out_path).name}")
    click.echo(f"render it: next3d render --sequence {out_path} --out-dir frames/", err=True)


def _live_link(csv_path: str, out_path: Path, fps: Optional[float], flame: FlameFiles) -> None:
    """An ARKit / Live Link Face CSV -> the built-in head's animation."""
    from ..capture.arkit import live_link_sequence
    from ..flame.animation import save_sequence

    if flame.model:
        raise click.BadParameter("a Live Link Face recording is mapped onto the built-in head's named expressions; "
                                 "leave out --flame-model.", param_hint="--flame-model")
    seq = live_link_sequence(csv_path, fps)
    save_sequence(out_path, seq)
    click.echo(f"wrote {out_path} ({seq.n_frames} frames at {seq.fps:g} fps, {seq.duration:.1f} s) from the ARKit "
               f"curves of {Path(csv_path).name}")
