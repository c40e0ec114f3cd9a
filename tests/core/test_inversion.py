"""One-shot avatars by pivotal tuning inversion (core/inversion): recovery of a generator's own render, the avatar
folder and its reload, the perceptual loss files, and the `next3d invert` / `render --latent` commands.

All on real generators (random weights, built-in head topology) and real files; CPU sizes are kept tiny except for
one short run on the bundled default model."""

import json
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from core.cli import main as cli
from core.default_model import builtin_head_mesh_input, default_model, tiny_builtin_generator
from core.errors import CheckpointError, InputError
from core.inversion.avatar_files import AVATAR_FILES, load_avatar, load_latent, save_avatar
from core.inversion.perceptual import (LPIPS_CHANNELS, LpipsDistance, VGG16Features, load_lpips_weights,
                                       load_perceptual, load_vgg16, ssim)
from core.inversion.pti import NO_PERCEPTUAL_WARNING, invert, psnr
from core.io.generator_io import load_generator, save_generator
from core.io.images import read_image, to_uint8, write_png
from core.rendering.camera import ffhq_camera
from core.sampling import latent_from_seed


@pytest.fixture(scope="module")
def mesh_input() -> torch.Tensor:
    return builtin_head_mesh_input()


def render_target(generator, z_seed: int, camera: torch.Tensor, mesh: torch.Tensor) -> torch.Tensor:
    """The generator's own image of a random avatar (truncation 0.7, as the render command draws them)."""
    with torch.no_grad():
        ws = generator.mapping(latent_from_seed(z_seed, generator.config.z_dim), camera, truncation_psi=0.7,
                               truncation_cutoff=14)
        return generator.synthesis(ws, camera, mesh, generator=torch.Generator().manual_seed(0)).image


def state_copy(generator):
    return {k: v.detach().clone() for k, v in generator.state_dict().items()}


# ----------------------------------------------------------------------------------------------- recovery


def test_inverting_own_render_recovers_it(mesh_input):
    """A 64 px generator of the default's family inverts one of its own renders (60 latent + 60 tuning steps).

    Measured (2 threads): PSNR 7.2 dB from the average w, 21.9 dB after phase 1, 33.6 dB after phase 2 (another
    generator/target seed pair: 11.0 / 26.0 / 38.8). Thresholds, with margin:
    - tuned >= 30 dB: an RMS error of 2 / 10^1.5 = 0.063 on [-1, 1], i.e. 8 of 255 grey levels on average, which
      is the same picture to the eye at 64 px (blank/unrelated images score 7-11 dB here);
    - tuned >= start + 15 dB and latent >= start + 8 dB: each phase did the work, not a lucky start;
    - tuned >= latent + 5 dB: pivotal tuning improved on the latent alone, as PTI should."""
    generator = tiny_builtin_generator(64, seed=1)
    before = state_copy(generator)
    camera = ffhq_camera(0.2, -0.1)[None]
    target = render_target(generator, 5, camera, mesh_input)
    result = invert(generator, target, camera, mesh_input, latent_steps=60, tune_steps=60, seed=0)
    assert result.latent_steps == 60 and result.tune_steps == 60 and not result.stopped
    assert len(result.history) == 120
    assert result.psnr_tuned >= 30.0, result
    assert result.psnr_tuned >= result.psnr_start + 15.0
    assert result.psnr_latent >= result.psnr_start + 8.0
    assert result.psnr_tuned >= result.psnr_latent + 5.0
    assert result.ws.shape == (1, generator.num_ws, 512)
    assert result.warnings == (NO_PERCEPTUAL_WARNING,) and not result.perceptual
    # The input generator was not touched; the tuned copy was.
    after = generator.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    tuned = result.generator.state_dict()
    assert not torch.equal(tuned["superresolution.block0.conv0.weight"], before["superresolution.block0.conv0.weight"])
    # ... but not its mapping networks, which an avatar never uses.
    assert all(torch.equal(tuned[k], before[k]) for k in before if ".mapping." in f".{k}")
    assert not any(p.requires_grad for p in result.generator.parameters())
    # The recorded image is what the tuned generator renders with the same sample seed.
    with torch.no_grad():
        again = result.generator.synthesis(result.ws, camera, mesh_input,
                                           generator=torch.Generator().manual_seed(0)).image
    assert torch.allclose(again, result.image, atol=1e-5)
    assert math.isclose(psnr(again, target), result.psnr_tuned, abs_tol=1e-3)


def test_input_generator_unchanged_even_when_trainable(mesh_input):
    """A generator whose weights require grad (e.g. one being trained) keeps its weights and gets no .grad."""
    generator = tiny_builtin_generator(32).requires_grad_(True)
    before = state_copy(generator)
    camera = ffhq_camera()[None]
    target = render_target(generator, 3, camera, mesh_input)
    invert(generator, target, camera, mesh_input, latent_steps=1, tune_steps=1)
    after = generator.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in generator.parameters())


def test_should_stop_ends_early_and_nothing_is_saved(mesh_input, tmp_path):
    generator = tiny_builtin_generator(32)
    camera = ffhq_camera()[None]
    target = render_target(generator, 3, camera, mesh_input)
    calls = []
    seen = []

    def should_stop():
        calls.append(1)
        return len(calls) > 2

    result = invert(generator, target, camera, mesh_input, latent_steps=5, tune_steps=5, should_stop=should_stop,
                    progress=lambda done, total: seen.append((done, total)))
    assert result.stopped and result.latent_steps == 2 and result.tune_steps == 0
    assert seen == [(1, 10), (2, 10)]
    with pytest.raises(InputError, match="stopped"):
        save_avatar(tmp_path / "avatar", result)
    assert not (tmp_path / "avatar" / "avatar.json").exists()


def test_invert_checks_inputs(mesh_input):
    generator = tiny_builtin_generator(32)
    camera = ffhq_camera()[None]
    with pytest.raises(InputError, match="target has shape"):
        invert(generator, torch.zeros(1, 3, 64, 64), camera, mesh_input, latent_steps=1, tune_steps=0)
    with pytest.raises(InputError, match="v must be"):
        invert(generator, torch.zeros(1, 3, 32, 32), camera, mesh_input[:, :100], latent_steps=1, tune_steps=0)


# --------------------------------------------------------------------------------------- default model


def test_default_model_short_run_saves_and_reloads(tmp_path):
    """The bundled default model with 1 latent + 2 tuning steps: the loss falls in both phases, the avatar folder
    is written, and the reloaded generator + latent render the saved reconstruction."""
    model = default_model()
    generator, mesh = model.generator, model.mesh_input
    camera = ffhq_camera(0.1, 0.0)[None]
    target = render_target(generator, 3, camera, mesh)
    result = invert(generator, target, camera, mesh, latent_steps=1, tune_steps=2, seed=4)
    losses = [h.loss for h in result.history] + [result.loss_final]
    assert [h.phase for h in result.history] == ["latent", "tune", "tune"]
    assert losses[1] < losses[0], losses   # the latent step helped
    assert losses[3] < losses[2] < losses[1], losses  # so did each tuning step
    assert result.psnr_tuned > result.psnr_start

    folder = save_avatar(tmp_path / "avatar", result, source_image=tmp_path / "portrait.png",
                         extra_info={"model": model.description})
    for name in AVATAR_FILES:
        assert (folder / name).is_file(), name
    info = json.loads((folder / "avatar.json").read_text())
    assert info["latent_steps"] == 1 and info["tune_steps"] == 2 and info["perceptual_loss"] is False
    assert info["warnings"] == [NO_PERCEPTUAL_WARNING] and info["sample_seed"] == 4
    assert math.isclose(info["psnr_tuned"], result.psnr_tuned)

    reloaded = load_generator(folder / "avatar.safetensors")
    ws = load_latent(folder / "latent.npy", reloaded)
    assert torch.equal(ws, result.ws)
    cam = torch.from_numpy(np.load(folder / "camera.npy"))[None]
    v = torch.from_numpy(np.load(folder / "mesh.npy"))[None]
    assert torch.equal(cam, camera) and torch.equal(v, mesh)
    with torch.no_grad():
        image = reloaded.synthesis(ws, cam, v, generator=torch.Generator().manual_seed(4)).image
    assert torch.allclose(image, result.image, atol=1e-4)
    saved = read_image(folder / "reconstruction.png").astype(int)
    assert np.abs(saved - to_uint8(image[0]).astype(int)).max() <= 1
    assert np.array_equal(read_image(folder / "target.png"), to_uint8(target[0]))

    avatar = load_avatar(folder)
    assert torch.equal(avatar.ws, ws) and avatar.info["format"] == "next3d-avatar"
    # A second save into the same folder is refused unless asked for.
    with pytest.raises(InputError, match="already holds an avatar"):
        save_avatar(folder, result)
    save_avatar(folder, result, overwrite=True)


def test_load_latent_errors(tmp_path):
    generator = tiny_builtin_generator(32)  # 20 ws (64 px planes)
    n = generator.num_ws
    good = tmp_path / "good.npy"
    np.save(good, np.zeros((n, 512), np.float32))  # [num_ws, w_dim] is accepted too
    assert load_latent(good, generator).shape == (1, n, 512)
    cases = {"wrong_count.npy": np.zeros((1, 28, 512), np.float32), "wrong_dim.npy": np.zeros((1, n, 256)),
             "batch.npy": np.zeros((2, n, 512))}
    for name, array in cases.items():
        np.save(tmp_path / name, array)
        with pytest.raises(InputError, match=rf"{name}.*shape.*\[1, {n}, 512\]"):
            load_latent(tmp_path / name, generator)
    nan = np.zeros((1, n, 512), np.float32)
    nan[0, 3, 7] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    with pytest.raises(InputError, match="nan.npy contains NaN"):
        load_latent(tmp_path / "nan.npy", generator)
    with pytest.raises(InputError, match="does not exist"):
        load_latent(tmp_path / "missing.npy", generator)
    (tmp_path / "text.npy").write_text("not an array")
    with pytest.raises(InputError, match="text.npy is not a plain .npy"):
        load_latent(tmp_path / "text.npy", generator)


# ------------------------------------------------------------------------------------------- perceptual


@pytest.fixture(scope="module")
def vgg_files(tmp_path_factory):
    """A randomly initialised VGG16 saved as torchvision would (.pth, with a classifier) and as .safetensors."""
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("vgg")
    torch.manual_seed(0)
    state = VGG16Features().state_dict()
    save_file(state, str(root / "vgg16.safetensors"))
    torch.save({**state, "classifier.0.weight": torch.zeros(4, 3), "classifier.0.bias": torch.zeros(4)},
               root / "vgg16.pth")
    lin = {f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1) for k, c in enumerate(LPIPS_CHANNELS)}
    torch.save(lin, root / "vgg.pth")
    return root, state, lin


def test_vgg16_loads_from_safetensors_and_pth(vgg_files):
    root, state, _ = vgg_files
    for name in ("vgg16.safetensors", "vgg16.pth"):
        model = load_vgg16(root / name)
        assert all(torch.equal(model.state_dict()[k], state[k]) for k in state)
        assert not any(p.requires_grad for p in model.parameters())
    feats = model(torch.zeros(1, 3, 32, 32))
    assert [tuple(f.shape[1:]) for f in feats] == [(64, 32, 32), (128, 16, 16), (256, 8, 8), (512, 4, 4),
                                                    (512, 2, 2)]


def test_lpips_distance(vgg_files):
    root, _, lin = vgg_files
    torch.manual_seed(1)
    a = torch.rand(2, 3, 32, 32) * 2 - 1
    b = (a + 0.3 * torch.randn_like(a)).clamp(-1, 1)
    for distance in (load_perceptual(root / "vgg16.pth"),
                     load_perceptual(root / "vgg16.safetensors", root / "vgg.pth")):
        assert torch.equal(distance(a, a), torch.zeros(2))
        d = distance(a, b)
        assert d.shape == (2,) and bool((d > 0).all())
        x = a.clone().requires_grad_(True)
        distance(x, b).sum().backward()
        assert torch.isfinite(x.grad).all() and float(x.grad.abs().sum()) > 0
    uniform, weighted = load_perceptual(root / "vgg16.pth"), load_perceptual(root / "vgg16.pth", root / "vgg.pth")
    assert not uniform.calibrated and weighted.calibrated
    assert not torch.allclose(uniform(a, b), weighted(a, b))
    weights = load_lpips_weights(root / "vgg.pth")
    assert all(torch.equal(w, lin[f"lin{k}.model.1.weight"]) for k, w in enumerate(weights))
    # Images above 256 px are compared at 256 px.
    big = torch.zeros(1, 3, 512, 512)
    assert float(LpipsDistance(load_vgg16(root / "vgg16.pth"))(big, big)) == 0.0


def test_perceptual_file_errors(vgg_files, tmp_path):
    root, state, lin = vgg_files
    torch.save({"foo.weight": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match=r"other\.pth is not a torchvision VGG16.*features\.0\.weight"):
        load_vgg16(tmp_path / "other.pth")
    bad = dict(state)
    bad["features.0.weight"] = torch.zeros(64, 3, 5, 5)
    torch.save(bad, tmp_path / "badshape.pth")
    with pytest.raises(CheckpointError, match=r"badshape\.pth.*features\.0\.weight \(64, 3, 5, 5\)"):
        load_vgg16(tmp_path / "badshape.pth")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_vgg16(tmp_path / "missing.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="junk.pth cannot be read"):
        load_vgg16(tmp_path / "junk.pth")
    torch.save({k: v for k, v in lin.items() if not k.startswith("lin3")}, tmp_path / "lin.pth")
    with pytest.raises(CheckpointError, match=r"lin\.pth is not an LPIPS.*lin3\.model\.1\.weight is missing"):
        load_lpips_weights(tmp_path / "lin.pth")


def test_ssim():
    torch.manual_seed(2)
    a = torch.rand(2, 3, 24, 24) * 2 - 1
    assert torch.allclose(ssim(a, a), torch.ones(2))
    noisy = (a + 0.2 * torch.randn_like(a)).clamp(-1, 1)
    s = ssim(a, noisy)
    assert bool((s < 0.99).all()) and bool((s > -1).all())
    assert float(ssim(a, noisy[:, :, :8, :8].repeat(1, 1, 3, 3))[0]) < float(s[0])
    with pytest.raises(InputError):
        ssim(a, a[:1])


def test_invert_with_perceptual_loss(vgg_files, mesh_input):
    root, _, _ = vgg_files
    generator = tiny_builtin_generator(32)
    camera = ffhq_camera()[None]
    target = render_target(generator, 3, camera, mesh_input)
    result = invert(generator, target, camera, mesh_input, latent_steps=2, tune_steps=2,
                    perceptual=load_perceptual(root / "vgg16.pth", root / "vgg.pth"))
    assert result.perceptual and result.warnings == ()
    assert result.loss_final < result.history[0].loss


# ------------------------------------------------------------------------------------------------- CLI


@pytest.fixture(scope="module")
def cli_files(tmp_path_factory, mesh_input):
    """A tiny 32 px model saved as a normal checkpoint, an aligned portrait it rendered, its camera and mesh."""
    root = tmp_path_factory.mktemp("invert_cli")
    generator = tiny_builtin_generator(32, seed=2)
    save_generator(root / "tiny.safetensors", generator)
    camera = ffhq_camera()  # the render command's default camera, so its frame can be compared
    np.save(root / "camera.npy", camera.numpy())
    np.save(root / "mesh.npy", mesh_input[0].numpy())
    write_png(root / "portrait.png", to_uint8(render_target(generator, 6, camera[None], mesh_input)[0]))
    return root


def test_cli_invert_then_render_with_latent(cli_files, tmp_path):
    root = cli_files
    out = tmp_path / "me"
    args = ["invert", str(root / "portrait.png"), "--out", str(out), "--model", str(root / "tiny.safetensors"),
            "--camera", str(root / "camera.npy"), "--mesh", str(root / "mesh.npy"), "--latent-steps", "2",
            "--tune-steps", "2", "--quiet"]
    runner = CliRunner()
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    for name in AVATAR_FILES:
        assert (out / name).is_file(), name
    assert "warning: No perceptual-loss weights" in result.output
    assert f"next3d render --model {out / 'avatar.safetensors'} --latent {out / 'latent.npy'}" in result.output
    info = json.loads((out / "avatar.json").read_text())
    assert info["latent_steps"] == 2 and info["tune_steps"] == 2
    assert info["model"].startswith(str((root / "tiny.safetensors").resolve()))

    # Again into the same folder: refused before any work, unless --overwrite.
    again = runner.invoke(cli, args)
    assert again.exit_code == 2 and "already holds an avatar" in again.output

    frame = tmp_path / "frame.png"
    rendered = runner.invoke(cli, ["render", "--model", str(out / "avatar.safetensors"), "--latent",
                                   str(out / "latent.npy"), "--mesh", str(out / "mesh.npy"), "--out", str(frame)])
    assert rendered.exit_code == 0, rendered.output
    # Same camera, mesh and sample seed as the inversion: the frame is the saved reconstruction.
    diff = np.abs(read_image(frame).astype(int) - read_image(out / "reconstruction.png").astype(int))
    assert diff.max() <= 1


def test_cli_latent_errors(cli_files, tmp_path):
    root = cli_files
    runner = CliRunner()
    model = str(root / "tiny.safetensors")
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((1, 5, 512), np.float32))
    result = runner.invoke(cli, ["render", "--model", model, "--latent", str(wrong), "--out",
                                 str(tmp_path / "x.png")])
    assert result.exit_code == 2
    assert "--latent" in result.output and "wrong.npy holds an array of shape [1, 5, 512]" in result.output
    assert not (tmp_path / "x.png").exists()
    latent = tmp_path / "ok.npy"
    np.save(latent, np.zeros((1, 20, 512), np.float32))
    for command in (["render", "--seed", "3", "--out", str(tmp_path / "x.png")],
                    ["mesh", "--seed", "3", "--out", str(tmp_path / "x.ply")]):
        result = runner.invoke(cli, command + ["--model", model, "--latent", str(latent)])
        assert result.exit_code == 2 and "--latent" in result.output and "--seed" in result.output, result.output
    result = runner.invoke(cli, ["video", "--seeds", "1,2", "--model", model, "--latent", str(latent), "--out",
                                 str(tmp_path / "x.mp4")])
    assert result.exit_code == 2 and "--latent" in result.output and "--seeds" in result.output


def test_cli_invert_argument_errors(cli_files, tmp_path):
    root = cli_files
    runner = CliRunner()
    base = ["invert", str(root / "portrait.png"), "--model", str(root / "tiny.safetensors"), "--quiet"]
    result = runner.invoke(cli, base + ["--out", str(tmp_path / "a"), "--mesh", str(root / "mesh.npy")])
    assert result.exit_code == 2 and "--camera" in result.output
    result = runner.invoke(cli, base + ["--out", str(tmp_path / "b"), "--lpips", str(root / "camera.npy")])
    assert result.exit_code == 2 and "--vgg16" in result.output
    (tmp_path / "bad.pth").write_bytes(b"junk")
    result = runner.invoke(cli, base + ["--out", str(tmp_path / "c"), "--camera", str(root / "camera.npy"),
                                        "--mesh", str(root / "mesh.npy"), "--vgg16", str(tmp_path / "bad.pth")])
    assert result.exit_code == 2 and "bad.pth cannot be read" in result.output
    result = runner.invoke(cli, ["invert", "--help"])
    assert result.exit_code == 0 and "Example: next3d invert" in result.output
