"""The model used when the user names none: the bundled trained weights when they exist, else a small generator
with seeded random weights on the stand-in head (so every command works out of the box, and says which it used)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from .geometry.ellipsoid_head import N_FACES, N_UVS, EllipsoidHead, ellipsoid_head
from .networks.next3d import Next3DConfig, Next3DGenerator

# addon_assets/ sits beside core/ in the repository and inside the built extension.
BUNDLED_WEIGHTS = Path(__file__).resolve().parent.parent / "addon_assets" / "default_model.safetensors"

# The narrow width of the official reference numbers: fast on a CPU, same structure as FFHQ-512.
SMALL_CONFIG = Next3DConfig(channel_base=2048, channel_max=32, n_faces=N_FACES, n_uvcoords=N_UVS)


@dataclass(frozen=True)
class DefaultModel:
    generator: Next3DGenerator
    head: EllipsoidHead
    trained: bool
    description: str


def random_generator(config: Next3DConfig = SMALL_CONFIG, seed: int = 0,
                     head: Optional[EllipsoidHead] = None) -> Next3DGenerator:
    """A generator with seeded random weights on the stand-in head topology, in eval mode."""
    head = head or ellipsoid_head()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        generator = Next3DGenerator(config, head.topology)
    return generator.eval().requires_grad_(False)


def default_model() -> DefaultModel:
    head = ellipsoid_head()
    if BUNDLED_WEIGHTS.is_file():
        from .io.generator_io import load_generator
        return DefaultModel(load_generator(BUNDLED_WEIGHTS), head, True, f"bundled model {BUNDLED_WEIGHTS.name}")
    return DefaultModel(random_generator(head=head), head, False,
                        "random weights (no trained default model is bundled yet): the images show the pipeline, "
                        "not a face")
