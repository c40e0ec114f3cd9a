"""The default model's head and mesh, and the demo animation."""

import pytest
import torch

from core.default_model import builtin_head_mesh_input, default_mesh_input, random_generator
from core.demo import demo_animation
from core.errors import InputError
from core.flame.builtin_head import builtin_head_topology, load_builtin_head_data
from core.geometry.ellipsoid_head import N_FACES, N_UVS, ellipsoid_head
from core.networks.next3d import Next3DConfig, Topology

TINY = dict(channel_base=256, channel_max=8, texture_resolution=32, plane_resolution=64,
            neural_rendering_resolution=16, image_resolution=64, mouth_input_size=16, blend_final_size=8)


def test_default_mesh_is_the_head_the_generator_was_built_on():
    topology = builtin_head_topology()
    sizes = dict(n_faces=int(topology.faces.shape[0]), n_uvcoords=int(topology.uvs.shape[0]))
    on_builtin = random_generator(Next3DConfig(**dict(TINY, texture_resolution=64), **sizes), topology=topology)
    torch.testing.assert_close(default_mesh_input(on_builtin), builtin_head_mesh_input())
    on_standin = random_generator(Next3DConfig(**dict(TINY, texture_resolution=64), n_faces=N_FACES, n_uvcoords=N_UVS))
    torch.testing.assert_close(default_mesh_input(on_standin), ellipsoid_head().mesh_input())
    shuffled = Topology(faces=topology.faces.flip(0), uv_faces=topology.uv_faces, uvs=topology.uvs,
                        uv_face_mask=topology.uv_face_mask)
    other = random_generator(Next3DConfig(**dict(TINY, texture_resolution=64), **sizes), topology=shuffled)
    with pytest.raises(InputError, match="--mesh"):
        default_mesh_input(other)


def test_builtin_mesh_input_has_the_generator_layout():
    v = builtin_head_mesh_input()
    assert v.shape == (1, 5023 + 68, 3) and torch.isfinite(v).all()


def test_demo_animation_opens_the_jaw_smiles_looks_and_turns():
    names = load_builtin_head_data()["expression_names"]
    seq = demo_animation(26, 16, names, n_frames=16)
    frames = seq.frames
    assert frames.jaw[:, 0].max() > 0.25 and frames.jaw[0, 0] == 0
    smile = [list(names).index("smile_left"), list(names).index("smile_right")]
    assert frames.expression[:, smile].max() > 0.9
    assert frames.eyes.abs().max() > 0.2                  # gaze moves
    assert frames.global_rotation[:, 1].max() > 0.3       # head turn
