"""The model used when the user names none: the bundled trained weights when they exist, else a small generator
with seeded random weights on the built-in head (so every command works out of the box, and says which it used).

Also the default mesh of a generator: a generator rasterizes its own triangles with the vertices it is given, so
the mesh must be of the head it was built on (the built-in head, the stand-in ellipsoid, or FLAME for the official
model, which users bring)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from .errors import InputError
from .geometry.ellipsoid_head import N_FACES, N_UVS, EllipsoidHead, ellipsoid_head
from .networks.next3d import Next3DConfig, Next3DGenerator, Topology

# addon_assets/ sits beside core/ in the repository and inside the built extension.
BUNDLED_WEIGHTS = Path(__file__).resolve().parent.parent / "addon_assets" / "default_model.safetensors"

# The narrow width of the official reference numbers on the stand-in head: fast on a CPU, same structure as
# FFHQ-512. Tests build their generators from it.
SMALL_CONFIG = Next3DConfig(channel_base=2048, channel_max=32, n_faces=N_FACES, n_uvcoords=N_UVS)
# Smaller still (64 px planes and images) on the stand-in head: for tests of the machinery around the generator.
TINY_CONFIG = Next3DConfig(channel_base=512, channel_max=16, texture_resolution=64, plane_resolution=64,
                           neural_rendering_resolution=16, image_resolution=64, n_faces=N_FACES, n_uvcoords=N_UVS)


def weights_digest(path: Optional[Path] = None) -> str:
    """The content digest of a file a render depends on (weights, a FLAME model, a latent), or of the bundled
    default weights when no path is given; '' when there is no such file. Renders record it, so files replaced in
    place are never mixed with the old."""
    from .io.fingerprint import file_fingerprint

    path = BUNDLED_WEIGHTS if path is None else Path(path)
    return file_fingerprint(path) if path.is_file() else ""


@dataclass(frozen=True)
class DefaultModel:
    generator: Next3DGenerator
    mesh_input: torch.Tensor  # [1, 5091, 3]: the built-in head at zero parameters
    trained: bool
    description: str


def random_generator(config: Next3DConfig = SMALL_CONFIG, seed: int = 0, head: Optional[EllipsoidHead] = None,
                     topology: Optional[Topology] = None) -> Next3DGenerator:
    """A generator with seeded random weights on the given topology (default: the stand-in head), in eval mode."""
    topology = topology if topology is not None else (head or ellipsoid_head()).topology
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        generator = Next3DGenerator(config, topology)
    return generator.eval().requires_grad_(False)


def tiny_builtin_generator(image_resolution: int = 64, seed: int = 1) -> Next3DGenerator:
    """A generator of a few M parameters with seeded random weights on the built-in head (64 px planes, 16 px
    neural rendering, 8 + 8 samples per ray): for tests and checks that need the real head, quickly."""
    from .flame.builtin_head import builtin_head_topology
    from .rendering.volume import RenderingOptions

    topology = builtin_head_topology()
    config = Next3DConfig(channel_base=512, channel_max=16, mapping_layers=1, n_faces=int(topology.faces.shape[0]),
                          n_uvcoords=int(topology.uvs.shape[0]), texture_resolution=64, plane_resolution=64,
                          neural_rendering_resolution=16, image_resolution=image_resolution, mouth_input_size=16,
                          blend_final_size=8, rendering=RenderingOptions(depth_resolution=8,
                                                                         depth_resolution_importance=8))
    return random_generator(config, seed=seed, topology=topology)


def builtin_head_mesh_input() -> torch.Tensor:
    """The built-in head at zero parameters as generator input [1, 5091, 3]."""
    from .flame.builtin_head import BUILTIN_HEAD_PATH
    from .flame.model import FlameModel
    from .flame.model_data import FlameModelData
    from .flame.params import FlameParams

    model = FlameModel(FlameModelData.load(BUILTIN_HEAD_PATH))
    with torch.no_grad():
        return model.mesh_input(FlameParams.zeros(1, model.n_shape, model.n_expr))


def default_model() -> DefaultModel:
    from .flame.builtin_head import builtin_head_topology
    from .io.generator_io import load_generator

    if BUNDLED_WEIGHTS.is_file():
        return DefaultModel(load_generator(BUNDLED_WEIGHTS), builtin_head_mesh_input(), True,
                            f"bundled model {BUNDLED_WEIGHTS.name}")
    topology = builtin_head_topology()
    config = Next3DConfig(channel_base=2048, channel_max=32, n_faces=int(topology.faces.shape[0]),
                          n_uvcoords=int(topology.uvs.shape[0]))
    return DefaultModel(random_generator(config, topology=topology), builtin_head_mesh_input(), False,
                        "random weights on the built-in head (no trained default model is bundled yet): the images "
                        "show the pipeline, not a face")


def default_mesh_input(generator: Next3DGenerator) -> torch.Tensor:
    """The rest mesh of the head a generator was built on: the built-in head or the stand-in ellipsoid. A generator
    on another topology (the official model is built on FLAME) needs the user's own mesh."""
    from .flame.builtin_head import builtin_head_topology

    faces = generator.faces[0].cpu()
    builtin = builtin_head_topology().faces
    if faces.shape == builtin.shape and torch.equal(faces, builtin):
        return builtin_head_mesh_input()
    standin = ellipsoid_head()
    if faces.shape == standin.topology.faces.shape and torch.equal(faces, standin.topology.faces):
        return standin.mesh_input()
    raise InputError("This model was built on another head topology (the official model uses FLAME's): give the "
                     "mesh to render with --mesh (a FLAME .obj with its landmarks, or a [5091, 3] array).")
