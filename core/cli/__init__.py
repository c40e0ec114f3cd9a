"""The `next3d` command line: this module only assembles the group from the commands, one module each.

The commands share options.py (option bundles: --model, --device, --threads, the avatar, the mesh) and loaders.py
(model, FLAME model, threads, avatar identity); no command module imports another, or this one. Heavy imports
happen inside the commands so `next3d --help` stays fast.
"""

from __future__ import annotations

import click

from .convert import convert_command
from .demo import demo_command
from .evaluate import evaluate_command
from .group import Next3DGroup
from .info import info_command
from .invert import invert_command
from .make_dataset import make_dataset_command
from .mesh import mesh_command
from .render import render_command
from .stylize import stylize_command
from .track import track_command
from .train import train_command
from .video import video_command

__all__ = ["main"]


@click.group(cls=Next3DGroup)
@click.version_option(package_name="next3d-blender")
def main() -> None:
    """Next3D neural head avatars: render frames, sequences, orbit videos and meshes; track face videos; convert and
    inspect models.

    \b
    Example: next3d render --model next3d_ffhq_512.pkl --sequence drive/ --out-dir frames/
    """


for _command in (info_command, convert_command, render_command, video_command, mesh_command, demo_command,
                 train_command, make_dataset_command, evaluate_command, invert_command, stylize_command,
                 track_command):
    main.add_command(_command)
