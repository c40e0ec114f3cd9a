"""The generator as a whole: official key layout, a small CPU forward, determinism, batching, bad input."""

import time

import pytest
import torch

from core.default_model import SMALL_CONFIG, TINY_CONFIG, random_generator
from core.errors import InputError
from core.geometry.ellipsoid_head import ellipsoid_head
from core.networks.next3d import Next3DConfig, Next3DGenerator
from core.rendering.camera import ffhq_camera
from core.sampling import latent_from_seed

TINY = TINY_CONFIG


def test_state_dict_equals_official_keys_shapes_and_order(official_key_list):
    with torch.device("meta"):
        generator = Next3DGenerator(Next3DConfig())
    ours = [(k, tuple(v.shape), str(v.dtype).replace("torch.", "")) for k, v in generator.state_dict().items()]
    official = []
    for line in official_key_list.read_text().splitlines():
        name, shape, dtype = line.split("\t")
        official.append((name, tuple(int(s) for s in shape.strip("()").split(",") if s.strip()), dtype))
    assert len(official) == 674
    assert ours == official
    assert sum(p.numel() for p in generator.parameters()) == 172_815_807


@pytest.fixture(scope="module")
def head():
    return ellipsoid_head()


@pytest.fixture(scope="module")
def small(head):
    return random_generator(SMALL_CONFIG, seed=0, head=head)


def test_small_forward_on_cpu_in_seconds(small, head):
    z = latent_from_seed(1)
    start = time.perf_counter()
    with torch.no_grad():
        out = small(z, ffhq_camera(0.3, 0.0)[None], head.mesh_input(), truncation_psi=0.7, truncation_cutoff=14,
                    generator=torch.Generator().manual_seed(0))
    elapsed = time.perf_counter() - start
    assert out.image.shape == (1, 3, 512, 512)
    assert out.image_raw.shape == (1, 3, 64, 64) and out.image_depth.shape == (1, 1, 64, 64)
    assert torch.isfinite(out.image).all()
    depth = out.image_depth
    assert depth.min() >= 2.25 - 1e-4 and depth.max() <= 3.3 + 1e-4
    assert elapsed < 60, f"a small forward took {elapsed:.1f} s"


def test_seeded_renderer_is_deterministic_and_seed_matters(head):
    g = random_generator(TINY, seed=3, head=head)
    v, c = head.mesh_input(), ffhq_camera(0.2, 0.1)[None]
    with torch.no_grad():
        identity = g.make_identity(g.mapping(latent_from_seed(0), ffhq_camera()[None]))
        a = g.render_frame(identity, v, c, generator=torch.Generator().manual_seed(7))
        b = g.render_frame(identity, v, c, generator=torch.Generator().manual_seed(7))
        other = g.render_frame(identity, v, c, generator=torch.Generator().manual_seed(8))
    torch.testing.assert_close(a.image, b.image, rtol=0, atol=0)
    assert not torch.equal(a.image_depth, other.image_depth)


def test_random_init_is_reproducible_and_weights_matter(head):
    v, c = head.mesh_input(), ffhq_camera()[None]
    images = []
    for seed in (1, 1, 2):
        g = random_generator(TINY, seed=seed, head=head)
        with torch.no_grad():
            images.append(g(latent_from_seed(0), c, v, generator=torch.Generator().manual_seed(0)).image)
    torch.testing.assert_close(images[0], images[1], rtol=0, atol=0)
    assert not torch.allclose(images[0], images[2])


def test_one_identity_many_frames_equals_frame_by_frame(head):
    g = random_generator(TINY, seed=0, head=head)
    v = head.mesh_input()
    v2 = v.clone()
    v2[:, :, 1] += 0.01  # a second frame with the head moved up a little
    cams = torch.stack([ffhq_camera(0.3, 0.0), ffhq_camera(-0.3, 0.1)])
    with torch.no_grad():
        identity = g.make_identity(g.mapping(latent_from_seed(5), ffhq_camera()[None]))
        stratified = torch.rand(2, 16 * 16, 48, 1, generator=torch.Generator().manual_seed(0))
        importance = torch.rand(2 * 16 * 16, 48, generator=torch.Generator().manual_seed(1))
        from core.rendering.volume import RandomDraws
        both = g.render_frame(identity, torch.cat([v, v2]), cams, draws=RandomDraws(stratified, importance))
        singles = [g.render_frame(identity, vv, cams[i:i + 1],
                                  draws=RandomDraws(stratified[i:i + 1], importance[i * 256:(i + 1) * 256]))
                   for i, vv in enumerate((v, v2))]
    for i in range(2):
        torch.testing.assert_close(both.image[i], singles[i].image[0], rtol=1e-4, atol=1e-4)
    assert not torch.allclose(both.image[0], both.image[1])


@pytest.mark.parametrize("bad, message", [
    (lambda v: v[:, :5000], "5023 FLAME vertices"),
    (lambda v: v.to(torch.int64), "floating-point"),
    (lambda v: torch.where(torch.arange(v.shape[1])[None, :, None] == 10, float("nan"), v), "NaN"),
    (lambda v: v[0], "v must be"),
])
def test_bad_mesh_input_is_refused_with_a_clear_message(small, head, bad, message):
    with torch.no_grad():
        identity = small.make_identity(small.mapping(latent_from_seed(0), ffhq_camera()[None]))
        with pytest.raises(InputError, match=message):
            small.render_frame(identity, bad(head.mesh_input()), ffhq_camera()[None])


def test_bad_camera_and_latent_are_refused(small, head):
    c = ffhq_camera()[None]
    with pytest.raises(InputError, match="NaN"):
        small.mapping(latent_from_seed(0), c * float("nan"))
    with pytest.raises(InputError, match=r"z has shape"):
        small.mapping(torch.zeros(1, 7), c)
    with torch.no_grad():
        identity = small.make_identity(small.mapping(latent_from_seed(0), c))
        with pytest.raises(InputError, match="expected 25"):
            small.render_frame(identity, head.mesh_input(), c[:, :16])
        bad = c.clone()
        bad[0, 3] = float("inf")
        with pytest.raises(InputError, match="NaN or infinite"):
            small.render_frame(identity, head.mesh_input(), bad)


def test_mouth_outside_the_front_view_is_refused(small, head):
    v = head.mesh_input().clone()
    v[:, 5023 + 48:5023 + 60, 0] += 1.0  # lips far to the side, outside the orthographic view
    with torch.no_grad():
        identity = small.make_identity(small.mapping(latent_from_seed(0), ffhq_camera()[None]))
        with pytest.raises(InputError, match="mouth"):
            small.render_frame(identity, v, ffhq_camera()[None])


def test_config_round_trips_and_rejects_unknown_fields():
    cfg = Next3DConfig(channel_base=1024)
    assert Next3DConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(InputError, match="Unknown"):
        Next3DConfig.from_dict({"channel_bass": 3})
    with pytest.raises(InputError, match="power of two"):
        Next3DConfig(plane_resolution=100)
