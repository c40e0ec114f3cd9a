"""Training: synthetic data, the dataset reader's errors, the discriminator's official layout, one training step,
and exact resume. Everything runs on a tiny network at 32 px so the file stays fast on a 2-core CPU."""

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors import safe_open

from core.errors import InputError
from core.training.dataset import FolderDataset
from core.training.discriminator import DualDiscriminator
from core.training.loop import Trainer, TrainingOptions, train
from core.training.mesh_render import render_mesh_condition
from core.training.metrics import FRECHET_NOT_COMPUTED, frechet_distance
from core.training.appearance_code import appearance_codes
from core.training.synthetic import StandInHeadSampler, generate_dataset, mesh_is_closed, sample_appearance

RES = 32


@pytest.fixture(scope="module")
def sampler():
    return StandInHeadSampler()


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory, sampler):
    root = tmp_path_factory.mktemp("heads") / "data"
    generate_dataset(root, count=3, resolution=RES, seed=7, sampler=sampler)
    return root


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------------------ synthetic data

def test_synthetic_dataset_is_deterministic(tmp_path, dataset_dir, sampler):
    again = generate_dataset(tmp_path / "again", count=3, resolution=RES, seed=7, sampler=sampler)
    a, b = _files(dataset_dir), _files(again)
    assert sorted(a) == ["dataset.json", "images/img00000000.png", "images/img00000001.png",
                         "images/img00000002.png", "meshes.npz", "synthetic.json", "topology.npz"]
    assert a == b                                   # same seed -> the same bytes, file by file
    other = generate_dataset(tmp_path / "other", count=1, resolution=RES, seed=8, sampler=sampler)
    assert (other / "images/img00000000.png").read_bytes() != a["images/img00000000.png"]


def test_synthetic_dataset_reads_back_with_labels_and_meshes(dataset_dir):
    ds = FolderDataset(dataset_dir)
    assert len(ds) == 3 and ds.resolution == RES
    assert ds.labels.shape == (3, 25) and ds.meshes.shape == (3, 5023 + 68, 3)
    cam2world = ds.labels[:, :16].reshape(-1, 4, 4)
    radius = cam2world[:, :3, 3].norm(dim=1)
    torch.testing.assert_close(radius, torch.full((3,), 2.7), rtol=0, atol=1e-4)   # FFHQ camera radius
    assert set(ds.extras) >= {"shape", "expression", "jaw", "eyes", "camera_yaw_pitch"}
    image = ds.image(0)
    assert image.shape == (3, RES, RES) and image.dtype == torch.uint8 and image.float().std() > 5


def test_mesh_condition_shows_the_head_facing_the_camera(dataset_dir):
    ds = FolderDataset(dataset_dir)
    assert mesh_is_closed(ds.topology.faces)      # the stand-in head has no holes
    cond = render_mesh_condition(ds.meshes[:2], ds.topology.faces, ds.labels[:2], RES, n_vertices=5023,
                                 inner_pass=False)
    assert cond.shape == (2, 3, RES, RES)
    covered = cond.abs().sum(1) > 0
    assert 0.2 < covered.float().mean() < 0.9
    assert cond[:, 2][covered].mean() > 0.5        # normals point towards the camera
    assert cond[:, :, 0, 0].abs().sum() == 0       # background corner is empty


# ------------------------------------------------------------------------------------------------ dataset errors

@pytest.fixture
def broken_copy(tmp_path, dataset_dir):
    root = tmp_path / "copy"
    shutil.copytree(dataset_dir, root)
    return root


def test_missing_label_names_the_image(broken_copy):
    path = broken_copy / "dataset.json"
    data = json.loads(path.read_text())
    data["labels"] = [e for e in data["labels"] if e[0] != "img00000002.png"]
    path.write_text(json.dumps(data))
    with pytest.raises(InputError, match=r"img00000002\.png has no camera label"):
        FolderDataset(broken_copy)


def test_label_without_image_and_short_label_name_the_file(broken_copy):
    (broken_copy / "images" / "img00000001.png").unlink()
    with pytest.raises(InputError, match=r"img00000001\.png.*does not exist"):
        FolderDataset(broken_copy)
    path = broken_copy / "dataset.json"
    data = json.loads(path.read_text())
    data["labels"] = [e for e in data["labels"] if e[0] != "img00000001.png"]
    data["labels"][0][1] = data["labels"][0][1][:16]
    path.write_text(json.dumps(data))
    with pytest.raises(InputError, match=r"img00000000\.png.*16 numbers, expected 25"):
        FolderDataset(broken_copy)


def test_broken_png_names_the_file(broken_copy):
    (broken_copy / "images" / "img00000000.png").write_bytes(b"this is not a png")
    with pytest.raises(InputError, match=r"img00000000\.png is broken"):
        FolderDataset(broken_copy)


def test_truncated_png_names_the_file_when_read(broken_copy):
    path = broken_copy / "images" / "img00000001.png"
    path.write_bytes(path.read_bytes()[:60])       # the header survives, the pixel data does not
    ds = FolderDataset(broken_copy)
    with pytest.raises(InputError, match=r"img00000001\.png is broken"):
        ds.check(full=True)


def test_wrong_size_names_the_file(broken_copy):
    import imageio.v3 as iio

    iio.imwrite(broken_copy / "images" / "img00000002.png", np.zeros((RES, 2 * RES, 3), np.uint8))
    with pytest.raises(InputError, match=rf"img00000002\.png is {2 * RES}x{RES}"):
        FolderDataset(broken_copy)


def test_missing_mesh_names_the_image(broken_copy):
    z = dict(np.load(broken_copy / "meshes.npz"))
    keep = z["names"] != "img00000002.png"
    np.savez(broken_copy / "meshes.npz", names=z["names"][keep], v=z["v"][keep])
    with pytest.raises(InputError, match=r"img00000002\.png has no mesh"):
        FolderDataset(broken_copy)


# ------------------------------------------------------------------------------------------------ discriminator

def _appendix_b(c_dim):
    """The official DualDiscriminator state dict (docs/training.md#discriminator), without the resample_filter
    buffers."""
    keys = {"b512.fromrgb.weight": (64, 6, 1, 1), "b512.fromrgb.bias": (64,)}
    chans = {512: 64, 256: 128, 128: 256, 64: 512, 32: 512, 16: 512, 8: 512, 4: 512}
    for res in (512, 256, 128, 64, 32, 16, 8):
        tmp, out = chans[res], chans[res // 2]
        keys.update({f"b{res}.conv0.weight": (tmp, tmp, 3, 3), f"b{res}.conv0.bias": (tmp,),
                     f"b{res}.conv1.weight": (out, tmp, 3, 3), f"b{res}.conv1.bias": (out,),
                     f"b{res}.skip.weight": (out, tmp, 1, 1)})
    keys.update({"mapping.embed.weight": (512, c_dim), "mapping.embed.bias": (512,)})
    for k in range(8):
        keys.update({f"mapping.fc{k}.weight": (512, 512), f"mapping.fc{k}.bias": (512,)})
    keys.update({"b4.conv.weight": (512, 513, 3, 3), "b4.conv.bias": (512,), "b4.fc.weight": (512, 8192),
                 "b4.fc.bias": (512,), "b4.out.weight": (512, 512), "b4.out.bias": (512,)})
    return keys


def test_discriminator_has_the_official_names_and_shapes():
    with torch.device("meta"):
        D = DualDiscriminator(c_dim=25, img_resolution=512)
        D9 = DualDiscriminator(c_dim=25, img_resolution=512, mesh_channels=3)
    sd = D.state_dict()
    ours = {k: tuple(v.shape) for k, v in sd.items() if not k.endswith("resample_filter")}
    assert ours == _appendix_b(25)
    filters = [k for k in sd if k.endswith("resample_filter")]
    assert "resample_filter" in filters and all(tuple(sd[k].shape) == (4, 4) for k in filters)
    assert "b512.conv1.resample_filter" in filters and "b4.conv.resample_filter" in filters
    assert D9.state_dict()["b512.fromrgb.weight"].shape == (64, 9, 1, 1)  # image + raw + mesh rendering


def test_discriminator_runs_at_a_small_resolution_and_needs_its_mesh_channels():
    torch.manual_seed(0)
    D = DualDiscriminator(c_dim=25, img_resolution=RES, mesh_channels=3, channel_base=256, channel_max=16)
    image, raw, mesh = torch.randn(2, 3, RES, RES), torch.randn(2, 3, 8, 8), torch.randn(2, 3, RES, RES)
    c = torch.randn(2, 25)
    assert D(image, raw, c, mesh).shape == (2, 1)
    with pytest.raises(InputError, match="mesh rendering"):
        D(image, raw, c)


# ------------------------------------------------------------------------------------------------ training

def _options(data, outdir, total_steps, **kw):
    kw.setdefault("snapshot_kimg", 1000.0)
    return TrainingOptions(data=str(data), outdir=str(outdir), cfg="tiny", batch_size=2,
                           total_kimg=total_steps * 2 / 1000, seed=3, g_reg_interval=2, d_reg_interval=2,
                           sample_grid=(0, 0), progress=False, keep_states=4, **kw)


def _state(path):
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def _log(run):
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, dataset_dir):
    """Run A: 2 steps in one go, with a snapshot after every step. Run B: a new run folder that starts from A's
    snapshot after step 1 and trains 1 more step."""
    base = tmp_path_factory.mktemp("runs")
    a = train(_options(dataset_dir, base / "a", 2, snapshot_kimg=0.002))
    (base / "b").mkdir()
    shutil.copy(base / "a" / "state-00000001.safetensors", base / "b")
    b = train(_options(dataset_dir, base / "b", 2))
    return base, a, b


def test_one_step_changes_G_and_D_and_keeps_losses_finite(runs, dataset_dir):
    base = runs[0]
    log = _log(base / "a")
    first = next(r for r in log if r.get("step") == 1 and "event" not in r)
    assert first["kimg"] == 0.002
    # Step 0 runs all four phases (G main, density reg, D main, R1), and every loss is finite.
    for key in ("loss_G", "loss_density", "loss_D_real", "loss_D_fake", "r1_penalty"):
        assert key in first and np.isfinite(first[key]), key
    fresh = Trainer(_options(dataset_dir, base / "fresh", 1))
    with torch.random.fork_rng():
        fresh.build()
    state = _state(base / "a" / "state-00000001.safetensors")
    g_changed = [n for n, p in fresh.G.named_parameters() if not torch.equal(p, state[f"G.{n}"])]
    d_changed = [n for n, p in fresh.D.named_parameters() if not torch.equal(p, state[f"D.{n}"])]
    assert len(g_changed) > 50 and len(d_changed) == len(list(fresh.D.parameters()))
    assert any(n.startswith("texture_backbone.synthesis") for n in g_changed)
    assert any(n.startswith("superresolution") for n in g_changed)
    assert all(torch.isfinite(v).all() for k, v in state.items() if v.is_floating_point())
    ema_moved = [n for n, p in fresh.G.named_parameters() if not torch.equal(p, state[f"G_ema.{n}"])]
    assert ema_moved and not torch.equal(state["G_ema.decoder.net.0.weight"], state["G.decoder.net.0.weight"])
    assert [r["event"] for r in log if "event" in r] == ["start", "snapshot", "snapshot", "done"]


def test_resume_gives_the_same_state_as_an_uninterrupted_run(runs):
    base, a, b = runs
    assert a.step == b.step == 2 and b.cur_nimg == 4
    log = _log(base / "b")
    assert log[0]["event"] == "resume" and log[0]["step"] == 1
    sa = _state(base / "a" / "state-00000002.safetensors")
    sb = _state(base / "b" / "state-00000002.safetensors")
    assert sorted(sa) == sorted(sb)
    assert any(k.startswith("opt_G.") and k.endswith(".exp_avg_sq") for k in sa)
    assert "extra/rng.torch_cpu" in sa
    different = [k for k in sa if not torch.equal(sa[k], sb[k])]
    assert different == []                           # bit-exact: weights, G_ema, Adam moments, RNG
    # The stand-alone generator written with the snapshot loads like any checkpoint.
    from core.io.generator_io import load_generator
    G = load_generator(base / "b" / "network-00000002.safetensors")
    torch.testing.assert_close(G.decoder.net[0].weight, sb["G_ema.decoder.net.0.weight"], rtol=0, atol=0)


def test_start_from_a_generator_with_a_D_warm_up_trains_D_before_G(runs, dataset_dir, tmp_path):
    from core.io.generator_io import load_generator
    network = runs[0] / "a" / "network-00000002.safetensors"
    out = tmp_path / "from_generator"
    train(_options(dataset_dir, out, 2, resume=str(network), d_warmup_kimg=0.002, snapshot_kimg=0.002))
    log = _log(out)
    assert log[0]["event"] == "init_from_generator" and log[0]["blur_init_sigma"] == 0.0
    steps = [r for r in log if "event" not in r]
    assert "loss_G" not in steps[0] and np.isfinite(steps[0]["loss_D_real"])   # step 0: D only
    assert np.isfinite(steps[1]["loss_G"])                                      # step 1: G follows
    start = dict(load_generator(network).named_parameters())
    s1, s2 = _state(out / "state-00000001.safetensors"), _state(out / "state-00000002.safetensors")
    assert all(torch.equal(p, s1[f"G.{n}"]) and torch.equal(p, s1[f"G_ema.{n}"]) for n, p in start.items())
    assert any(not torch.equal(p, s2[f"G.{n}"]) for n, p in start.items())
    d_keys = [k for k in s1 if k.startswith("D.")]
    assert d_keys and any(not torch.equal(s1[k], s2[k]) for k in d_keys)


def test_resume_refuses_a_different_batch_size(runs, dataset_dir):
    base = runs[0]
    opts = _options(dataset_dir, base / "b", 3)
    opts = TrainingOptions(**{**opts.__dict__, "batch_size": 4})
    with pytest.raises(InputError, match="batch_size"):
        train(opts)


def test_fresh_run_refuses_to_overwrite_an_existing_run(runs, dataset_dir):
    base = runs[0]
    with pytest.raises(InputError, match="already holds a training run"):
        train(_options(dataset_dir, base / "a", 3, resume=None))


def test_frechet_distance_without_a_network_says_so():
    result = frechet_distance(None, None, None)
    assert result["frechet_distance"] is None and result["frechet_note"] == FRECHET_NOT_COMPUTED
    assert "no weights are downloaded" in FRECHET_NOT_COMPUTED


def test_train_command_reports_a_missing_dataset(tmp_path):
    from click.testing import CliRunner

    from core.cli.evaluate import evaluate_command
    from core.cli.make_dataset import make_dataset_command
    from core.cli.train import train_command

    for command in (train_command, make_dataset_command, evaluate_command):
        assert CliRunner().invoke(command, ["--help"]).exit_code == 0
    result = CliRunner().invoke(train_command, ["--data", str(tmp_path / "nowhere"), "--outdir",
                                                str(tmp_path / "run"), "--no-progress"])
    assert isinstance(result.exception, InputError)
    assert "nowhere" in str(result.exception) and "make-dataset" in str(result.exception)


def test_reconstruction_warm_up_pulls_G_toward_the_dataset_images_and_fades(dataset_dir, tmp_path):
    options = _options(dataset_dir, tmp_path / "warm", 1, recon_weight=10.0, recon_fade_kimg=0.1)
    trainer = Trainer(options)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        trainer.build()
        loss = trainer.loss
        assert loss.recon_weight(0) == 10.0 and loss.recon_weight(50) == 5.0 and loss.recon_weight(100) == 0.0
        fake = trainer.fake_batch(torch.tensor([0, 1]), torch.randn(2, trainer.G.config.z_dim), with_target=True)
        assert fake.target.shape == (2, 3, 32, 32) and fake.target.min() >= -1 and fake.target.max() <= 1
        recon = []
        trainer.G.requires_grad_(True)
        for _ in range(12):
            trainer.opt_G.zero_grad(set_to_none=True)
            stats = loss.accumulate_gradients("Gmain", None, fake, gain=1.0, cur_nimg=0)
            trainer.opt_G.step()
            recon.append(stats["loss_recon"])
        assert all(np.isfinite(recon)) and stats["recon_weight"] == 10.0
        assert recon[-1] < 0.8 * recon[0], recon
        # Once faded out, Gmain is EG3D's loss alone, and needs no target image.
        fake.target = None
        late = loss.accumulate_gradients("Gmain", None, fake, gain=1.0, cur_nimg=100)
        assert "loss_recon" not in late and np.isfinite(late["loss_G"])
        with pytest.raises(ValueError, match="target"):
            loss.accumulate_gradients("Gmain", None, fake, gain=1.0, cur_nimg=0)


# ------------------------------------------------------------------------------------------------ appearance codes

def test_appearance_codes_are_standard_normal_uncorrelated_and_drop_dependent_fields():
    rng = np.random.default_rng(0)
    records = np.stack([sample_appearance(rng).as_array() for _ in range(600)])
    codes = appearance_codes(records)
    assert codes.dtype == np.float32 and codes.shape[0] == 600
    np.testing.assert_array_equal(codes, appearance_codes(records.copy()))       # deterministic
    np.testing.assert_allclose(codes.mean(0), 0, atol=1e-6)
    np.testing.assert_allclose(codes.std(0), 1, atol=0.02)
    assert np.abs(codes).max() < 4.5                                            # never where a random z cannot go
    corr = np.corrcoef(codes.T)
    assert np.abs(corr - np.eye(len(corr))).max() < 0.2
    # A field that is an exact copy of another adds no direction; equal records get equal codes.
    widened = np.concatenate([records, records[:, :1]], axis=1)
    assert appearance_codes(widened).shape[1] == codes.shape[1]
    twice = appearance_codes(np.concatenate([records, records[:5]]))
    np.testing.assert_array_equal(twice[:5], twice[600:])
    # The codes say which appearance an image has: a linear read-out recovers the skin colour from them.
    skin = records[:, 0]
    fit = np.linalg.lstsq(np.c_[codes, np.ones(600)], skin, rcond=None)[0]
    residual = skin - np.c_[codes, np.ones(600)] @ fit
    assert residual.std() < 0.35 * skin.std()
    for bad, message in ((np.full((4, 3), np.nan), "NaN"), (np.ones((4, 3)), "do not vary")):
        with pytest.raises(InputError, match=message):
            appearance_codes(bad)


def test_reconstruction_with_appearance_codes_gives_the_targets_code_and_keeps_its_weight(dataset_dir, tmp_path):
    options = _options(dataset_dir, tmp_path / "codes", 1, recon_weight=4.0, recon_fade_kimg=0.0,
                       recon_appearance=True)
    trainer = Trainer(options)
    trainer.build()
    assert trainer.loss.recon_weight(0) == 4.0 == trainer.loss.recon_weight(10 ** 7)     # fade 0: no fade
    codes = torch.as_tensor(appearance_codes(FolderDataset(dataset_dir).extras["appearance"]))
    torch.testing.assert_close(trainer.codes, codes)
    k = codes.shape[1]
    z = torch.randn(2, trainer.G.config.z_dim)
    fake = trainer.fake_batch(torch.tensor([2, 0]), z, with_target=True)
    torch.testing.assert_close(fake.z[:, :k], codes[[2, 0]])
    torch.testing.assert_close(fake.z[:, k:], z[:, k:])
    assert fake.target is not None
    assert torch.equal(trainer.fake_batch(torch.tensor([2, 0]), z).z, z)   # D's fakes keep a random z
    trainer.G.requires_grad_(True)
    stats = trainer.loss.accumulate_gradients("Gmain", None, fake, gain=1.0, cur_nimg=10 ** 7)
    assert stats["recon_weight"] == 4.0 and np.isfinite(stats["loss_recon"])


def test_reconstruction_with_appearance_codes_needs_records_and_a_weight(dataset_dir, tmp_path):
    with pytest.raises(InputError, match="recon_weight"):
        Trainer(_options(dataset_dir, tmp_path / "a", 1, recon_appearance=True))
    root = tmp_path / "plain"
    shutil.copytree(dataset_dir, root)
    with np.load(root / "meshes.npz") as z:
        arrays = {k: z[k] for k in z.files if k != "appearance"}
    np.savez(root / "meshes.npz", **arrays)
    with pytest.raises(InputError, match="appearance.*make-dataset"):
        Trainer(_options(root, tmp_path / "b", 1, recon_weight=1.0, recon_appearance=True))


def test_log_has_one_record_per_step_after_resumes_and_leftovers_are_removed(dataset_dir, tmp_path):
    """A run killed between snapshots logged steps past its newest state; the resumed run trains them again. Here
    the kill is reproduced by its outcome: the newest state removed (as if the process died before writing it), a
    half-written last log line and a snapshot temporary left behind. Two resumes later, every step is logged once."""
    out = tmp_path / "run"
    train(_options(dataset_dir, out, 2, snapshot_kimg=0.002))          # states after steps 1 and 2
    for resume in range(2):
        (out / "state-00000002.safetensors").unlink()
        with open(out / "log.jsonl", "a", encoding="utf-8") as fh:
            fh.write('{"step": 2, "kimg": 0.0')                       # cut short by the kill
        leftover = out / f".state-00000002.safetensors.abc{resume}defg.tmp"
        leftover.write_bytes(b"\0" * 1000)
        result = train(_options(dataset_dir, out, 2, snapshot_kimg=0.002))
        assert result.step == 2 and not leftover.exists()
        log = _log(out)   # every line parses
        steps = [r["step"] for r in log if "event" not in r]
        assert steps == [1, 2], steps
        assert [r["event"] for r in log if r.get("event") == "resume"] == ["resume"] * (resume + 1)
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]


def test_a_second_run_in_the_same_folder_is_refused_naming_the_first(dataset_dir, tmp_path):
    from core.io.folder_lock import FolderBusy
    import subprocess
    import sys
    import time
    from pathlib import Path

    out = tmp_path / "held"
    out.mkdir()
    root = Path(__file__).resolve().parents[2]
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom core.io.folder_lock import FolderLock\n"
                               f"FolderLock({str(out)!r}, 'training', command='next3d train (test)').acquire()\n"
                               "print('held', flush=True)\ntime.sleep(60)"], cwd=root, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        start = time.monotonic()
        with pytest.raises(FolderBusy, match=rf"is in use \(pid {holder.pid}: next3d train \(test\)\)"):
            train(_options(dataset_dir, out, 1))
        assert time.monotonic() - start < 10
        assert not (out / "log.jsonl").exists()
    finally:
        holder.kill()
        holder.wait()
