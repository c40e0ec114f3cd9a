"""The README's pictures of the bundled default model: a grid of avatars under camera, jaw, expression and gaze
changes, and an animation.

    .venv/bin/python scripts/make_default_model_figures.py [--model PATH] [--out docs/images]

Writes default_model_grid.png (rows: avatars of latent seeds 0..5; columns: front, camera 0.4 rad left and right,
jaw open, smile, gaze left, gaze right) and default_model_animation.gif (three avatars side by side playing the
`make demo` animation: the jaw opens, they smile, look left and right, and the head turns). Tiles are the model's
own output, enlarged 2x with nearest-neighbour so the pixels stay honest.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.default_model import BUNDLED_WEIGHTS  # noqa: E402
from core.demo import demo_animation  # noqa: E402
from core.flame.builtin_head import BUILTIN_HEAD_PATH, load_builtin_head_data  # noqa: E402
from core.flame.model import FlameModel  # noqa: E402
from core.flame.model_data import FlameModelData  # noqa: E402
from core.flame.params import FlameParams, gaze_to_eyes  # noqa: E402
from core.io.generator_io import load_generator  # noqa: E402
from core.io.images import to_uint8  # noqa: E402
from core.rendering.camera import ffhq_camera  # noqa: E402
from core.sampling import latent_from_seed  # noqa: E402
from core.sequence.cameras import camera_track  # noqa: E402
from core.sequence.render import FlameSequenceSource  # noqa: E402

PITCH = -0.05


def pose(flame: FlameModel, *, jaw: float = 0.0, smile: float = 0.0, gaze: float = 0.0) -> torch.Tensor:
    """The built-in head's mesh input [1, 5091, 3] with the jaw opened (radians), both smile expressions at `smile`
    and both eyes turned by `gaze` (radians, positive = towards the subject's left)."""
    names = [str(n) for n in load_builtin_head_data()["expression_names"]]
    expression = torch.zeros(1, flame.n_expr)
    for name in ("smile_left", "smile_right"):
        expression[0, names.index(name)] = smile
    yaw = torch.tensor([gaze])
    zero = torch.zeros(1)
    params = FlameParams(shape=torch.zeros(1, flame.n_shape), expression=expression,
                         jaw=torch.tensor([[jaw, 0.0, 0.0]]), neck=torch.zeros(1, 3),
                         global_rotation=torch.zeros(1, 3), eyes=gaze_to_eyes(yaw, zero, yaw, zero))
    with torch.no_grad():
        return flame.mesh_input(params)


def enlarge(image: np.ndarray, factor: int = 2) -> np.ndarray:
    return image.repeat(factor, axis=0).repeat(factor, axis=1)


class Avatars:
    def __init__(self, generator, seeds):
        self.G = generator
        with torch.no_grad():
            self.identities = [generator.make_identity(generator.mapping(
                latent_from_seed(s, generator.config.z_dim), ffhq_camera()[None], truncation_psi=0.7,
                truncation_cutoff=generator.num_ws)) for s in seeds]

    def render(self, k: int, v: torch.Tensor, camera: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            frame = self.G.render_frame(self.identities[k], v, camera[None], generator=torch.Generator().manual_seed(k))
        return enlarge(to_uint8(frame.image[0]))


def make_grid(avatars: Avatars, flame: FlameModel, n: int) -> np.ndarray:
    rest = pose(flame)
    columns = [(rest, 0.0), (rest, 0.4), (rest, -0.4), (pose(flame, jaw=0.3), 0.0), (pose(flame, smile=1.0), 0.0),
               (pose(flame, gaze=0.35), 0.0), (pose(flame, gaze=-0.35), 0.0)]
    rows = [np.concatenate([avatars.render(k, v, ffhq_camera(yaw=yaw, pitch=PITCH)) for v, yaw in columns], axis=1)
            for k in range(n)]
    return np.concatenate(rows, axis=0)


def make_animation(avatars: Avatars, flame: FlameModel, n_frames: int) -> list:
    """The `make demo` animation (core.demo), head turn folded into the camera as `next3d demo` renders it."""
    names = load_builtin_head_data()["expression_names"]
    source = FlameSequenceSource(demo_animation(flame.n_shape, flame.n_expr, names, n_frames=n_frames), flame)
    source.set_cameras(camera_track("fixed", len(source), yaw=0.0, pitch=PITCH))
    frames = []
    for i in range(len(source)):
        v, camera = source.mesh(i)[None], source.camera(i)
        tiles = [avatars.render(k, v, camera) for k in range(len(avatars.identities))]
        frames.append(Image.fromarray(np.concatenate(tiles, axis=1)))
    return frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(BUNDLED_WEIGHTS), help="generator .safetensors")
    parser.add_argument("--out", default="docs/images")
    parser.add_argument("--rows", type=int, default=6)
    parser.add_argument("--frames", type=int, default=48)
    args = parser.parse_args()
    torch.set_num_threads(2)
    generator = load_generator(args.model)
    flame = FlameModel(FlameModelData.load(BUILTIN_HEAD_PATH))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    grid = make_grid(Avatars(generator, range(args.rows)), flame, args.rows)
    Image.fromarray(grid).save(out / "default_model_grid.png", optimize=True)
    print(f"wrote {out / 'default_model_grid.png'} {grid.shape[1]}x{grid.shape[0]}")
    frames = make_animation(Avatars(generator, range(3)), flame, args.frames)
    frames[0].save(out / "default_model_animation.gif", save_all=True, append_images=frames[1:], duration=80,
                   loop=0, optimize=True)
    print(f"wrote {out / 'default_model_animation.gif'} ({len(frames)} frames)")


if __name__ == "__main__":
    main()
