"""`next3d demo`: the built-in head animated by the default model, and a mesh of it."""

from __future__ import annotations

import click

from .loaders import load_head
from .options import FlameFiles


@click.command("demo")
@click.option("--out", default="out", show_default=True, type=click.Path(file_okay=False))
@click.option("--seed", default=0, show_default=True)
@click.option("--frames", "n_frames", default=16, show_default=True, type=click.IntRange(min=2))
def demo_command(out: str, seed: int, n_frames: int) -> None:
    """Animate the built-in head with the default model (jaw, smile, gaze, head turn) into OUT/frames and
    OUT/video.mp4, save the animation as OUT/demo_animation.json, and extract a mesh at the open-jaw frame.

    Example: next3d demo --out out
    """
    import numpy as np
    import torch

    from ..default_model import default_model
    from ..demo import demo_animation
    from ..flame.animation import save_sequence
    from ..flame.builtin_head import load_builtin_head_data
    from ..io.folder_lock import FolderLock
    from ..io.images import ensure_writable_dir
    from ..mesh import extract_mesh, save_mesh, surface_level
    from ..rendering.camera import ffhq_camera
    from ..sampling import latent_from_seed
    from ..sequence.cameras import camera_track
    from ..sequence.render import FlameSequenceSource, frame_name, render_sequence, settings_differ
    from ..session import file_digest

    out_dir = ensure_writable_dir(out)
    model = default_model()
    click.echo(f"model: {model.description}")
    generator = model.generator
    flame = load_head(FlameFiles(None)).flame
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
                "weights": file_digest(None)}
    # The demo's folder holds only the demo's own frames: made with other settings (another seed, a new bundled
    # model), they are rendered again rather than refused.
    with FolderLock(ensure_writable_dir(out_dir / "frames"), "demo"):  # alone from the check to the last frame
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
