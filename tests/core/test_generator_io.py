"""Generators through real checkpoint files: an official-format pickle written byte by byte, our safetensors
format, and the `next3d` command line on them."""

from collections import OrderedDict

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from core.cli import main as cli
from core.default_model import SMALL_CONFIG, TINY_CONFIG, random_generator
from core.errors import CheckpointError
from core.geometry.ellipsoid_head import ellipsoid_head
from core.io.generator_io import load_generator, save_generator
from core.rendering.camera import ffhq_camera
from core.rendering.volume import RandomDraws
from core.sampling import latent_from_seed

from official_pickle_writer import official_attributes, write_official_pickle  # tests/core is on sys.path

# A tiny configuration keeps these file round trips fast; the reference test below uses the official layout.
TINY = TINY_CONFIG
BUFFER_SUFFIXES = ("resample_filter", "noise_const", "w_avg")
TOP_BUFFERS = {"dense_faces", "faces", "raw_uvcoords", "uvcoords", "uvfaces", "face_uvcoords"}


def official_kwargs(config):
    rendering = official_attributes()["rendering_kwargs"]
    return {"z_dim": 512, "w_dim": 512, "c_dim": 25, "img_resolution": config.image_resolution, "img_channels": 3,
            "topology_path": "data/demo/head_template.obj", "sr_num_fp16_res": 4,
            "mapping_kwargs": {"num_layers": 2}, "rendering_kwargs": rendering,
            "channel_base": config.channel_base, "channel_max": config.channel_max, "num_fp16_res": 0,
            "conv_clamp": None, "fused_modconv_default": "inference_only"}


def write_pickle_of(path, state_dict, uv_face_mask, config, location="cuda:0", drop=()):
    sd = OrderedDict((k, v) for k, v in state_dict.items() if k not in drop)
    buffers = [k for k in sd if k in TOP_BUFFERS or k.endswith(BUFFER_SUFFIXES)]
    attributes = official_attributes()
    attributes["uv_face_mask"] = uv_face_mask
    attributes["neural_rendering_resolution"] = config.neural_rendering_resolution
    write_official_pickle(path, sd, buffers, official_kwargs(config), attributes, storage_location=location)


@pytest.fixture(scope="module")
def head():
    return ellipsoid_head()


@pytest.fixture(scope="module")
def generator(head):
    return random_generator(TINY, seed=11, head=head)


def render(g, head, seed=3):
    rays = g.config.neural_rendering_resolution ** 2
    draws = RandomDraws(torch.rand(1, rays, 48, 1, generator=torch.Generator().manual_seed(seed)),
                        torch.rand(rays, 48, generator=torch.Generator().manual_seed(seed + 1)))
    with torch.no_grad():
        ws = g.mapping(latent_from_seed(2), ffhq_camera()[None], truncation_psi=0.7, truncation_cutoff=14)
        return g.synthesis(ws, ffhq_camera(0.3, -0.1)[None], head.mesh_input(), draws=draws).image


def test_official_pickle_with_cuda_storages_loads_and_renders_the_same(tmp_path, generator, head):
    path = tmp_path / "next3d_small.pkl"
    write_pickle_of(path, generator.state_dict(), generator.uv_face_mask, TINY)
    loaded = load_generator(path)
    assert loaded.config.channel_base == 512 and loaded.config.n_faces == SMALL_CONFIG.n_faces
    torch.testing.assert_close(loaded.plane_axes, generator.plane_axes)
    torch.testing.assert_close(render(loaded, head), render(generator, head), rtol=0, atol=0)


def test_safetensors_round_trip_is_exact(tmp_path, generator, head):
    path = tmp_path / "model.safetensors"
    save_generator(path, generator)
    loaded = load_generator(path)
    assert loaded.config == generator.config
    torch.testing.assert_close(loaded.uv_face_mask, generator.uv_face_mask, rtol=0, atol=0)
    torch.testing.assert_close(render(loaded, head), render(generator, head), rtol=0, atol=0)
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]


def test_missing_weights_are_named(tmp_path, generator):
    path = tmp_path / "broken.pkl"
    write_pickle_of(path, generator.state_dict(), generator.uv_face_mask, TINY,
                    drop=("neural_blending.synthesis.fusion.0.weight",))
    with pytest.raises(CheckpointError, match=r"missing 1 weights \(neural_blending.synthesis.fusion.0.weight\)"):
        load_generator(path)


def test_a_network_without_neural_texture_is_not_next3d(tmp_path, generator):
    path = tmp_path / "eg3d.pkl"
    sd = OrderedDict((k, v) for k, v in generator.state_dict().items() if not k.startswith("texture_backbone."))
    write_pickle_of(path, sd, generator.uv_face_mask, TINY)
    with pytest.raises(CheckpointError, match="Only the released Next3D generator"):
        load_generator(path)


def test_missing_and_foreign_files_get_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_generator(tmp_path / "nope.pkl")
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"<html>not a model</html>")
    with pytest.raises(CheckpointError, match="neither"):
        load_generator(junk)


def test_official_weights_in_a_pickle_reproduce_the_reference(tmp_path, reference_dir):
    """The reference weights, written as the official training loop pickles them, give the official image."""
    from core.networks.next3d import Next3DConfig

    weights = np.load(reference_dir / "state_dict.npz")
    sd = OrderedDict((k, torch.from_numpy(weights[k])) for k in weights.files if k != "uv_face_mask")
    path = tmp_path / "reference.pkl"
    write_pickle_of(path, sd, torch.from_numpy(weights["uv_face_mask"]), Next3DConfig(channel_base=2048,
                                                                                          channel_max=32))
    g = load_generator(path)
    d = np.load(reference_dir / "case0.npz")
    t = lambda k: torch.from_numpy(d[k])  # noqa: E731
    with torch.no_grad():
        out = g.synthesis(g.mapping(t("z"), t("c_cond")), t("c"), t("v"),
                          draws=RandomDraws(t("rand_stratified"), t("rand_pdf")))
    assert np.abs(out.image_raw.numpy() - d["image_raw"]).max() <= 1e-4
    assert np.abs(out.image.numpy() - d["image"]).max() <= 1e-3


def test_cli_convert_info_and_render(tmp_path, generator):
    pkl = tmp_path / "small.pkl"
    write_pickle_of(pkl, generator.state_dict(), generator.uv_face_mask, TINY)
    runner = CliRunner()
    out = tmp_path / "small.safetensors"
    result = runner.invoke(cli, ["convert", str(pkl), str(out)])
    assert result.exit_code == 0, result.output
    assert out.is_file()
    result = runner.invoke(cli, ["info", str(out)])
    assert result.exit_code == 0 and '"channel_base": 512' in result.output
    result = runner.invoke(cli, ["info", str(pkl)])
    assert result.exit_code == 0 and "TriPlaneGenerator" in result.output
    png = tmp_path / "frame.png"
    result = runner.invoke(cli, ["render", "--model", str(out), "--yaw", "0.2", "--out", str(png)])
    assert result.exit_code == 0, result.output
    import imageio.v3 as iio
    image = iio.imread(png)
    assert image.shape == (64, 64, 3) and image.std() > 0


def test_cli_errors_name_the_problem(tmp_path):
    runner = CliRunner()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = runner.invoke(cli, ["render", "--out", str(blocker / "sub" / "frame.png")])
    assert result.exit_code == 2 and "Cannot write to the output folder" in result.output
    result = runner.invoke(cli, ["render", "--model", str(tmp_path / "missing.pkl"), "--out",
                                 str(tmp_path / "f.png")])
    assert result.exit_code == 2 and "does not exist" in result.output
    result = runner.invoke(cli, ["convert", str(tmp_path / "a.pkl"), str(tmp_path / "b.bin")])
    assert result.exit_code == 2 and ".safetensors" in result.output
