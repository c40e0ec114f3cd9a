"""The opt-in precisions of the convolution networks (core/networks/precision.py): the fast path computes the same
formulas as the exact one, bf16 really runs in bfloat16 and stays within a stated tolerance of float32 on the narrow
reference weights, and fp32 stays the default and comes back bit for bit. Speed is measured by bench/precision.py."""

import numpy as np
import pytest
import torch

from core.default_model import TINY_CONFIG, random_generator
from core.errors import InputError
from core.networks.precision import FP32, PRECISIONS, Precision
from core.networks.stylegan2 import Conv2dLayer, SynthesisLayer, ToRGBLayer
import reference_model  # tests/core is on sys.path

# bf16 against fp32 on case 1 of the reference weights, measured: image max 0.034, mean 0.0053; image_raw max
# 0.0074; depth max 0.0058 (bench/precision.py). The tolerances leave about 3x room.
BF16_TOLERANCE = {"image": (0.1, 0.015), "image_raw": (0.03, 0.002), "image_depth": (0.02, 0.002)}


@pytest.fixture(scope="module")
def reference_generator(reference_dir):
    return reference_model.reference_generator(reference_dir).requires_grad_(False)


def render_case1(g, reference_dir):
    d, _, out, _ = reference_model.run_case(g, reference_dir, "case1")
    return out, d


def test_fp32_is_the_default_and_set_precision_reaches_every_layer():
    g = random_generator(TINY_CONFIG)
    holders = [m for m in g.modules() if isinstance(getattr(m, "precision", None), Precision)]
    # every modulated layer, block, plain conv and style-UNet, besides the generator itself
    assert len(holders) > 50 and all(m.precision is FP32 for m in holders)
    assert g.set_precision("bf16") is g
    assert all(m.precision is PRECISIONS["bf16"] for m in holders)
    with pytest.raises(InputError, match="fp16.*fp32, fp32-fast, bf16"):
        g.set_precision("fp16")
    assert g.precision is PRECISIONS["bf16"]  # a refused name changes nothing


@pytest.mark.parametrize("batch", [1, 2])
def test_fast_path_computes_the_same_formulas(batch):
    """In float64 the reordering (gain and bias inside the convolution, noise, activation and clamp in place) must
    agree with the exact path to rounding, with the clamp reached, noise on, and a resampling in each layer kind."""
    torch.manual_seed(0)
    up = SynthesisLayer(4, 6, w_dim=8, resolution=8, up=2, conv_clamp=0.5).double().eval()
    same = SynthesisLayer(6, 6, w_dim=8, resolution=8, conv_clamp=0.5).double().eval()
    torgb = ToRGBLayer(6, 3, w_dim=8, conv_clamp=0.5).double().eval()
    down = Conv2dLayer(6, 5, 3, activation="lrelu", down=2, conv_clamp=0.5).double()
    layers = (up, same, torgb, down)
    with torch.no_grad():
        for layer in layers:
            layer.bias.normal_()
        up.noise_strength.fill_(0.3)
        same.noise_strength.fill_(-0.2)
    x = torch.randn(batch, 4, 4, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(batch, 8, dtype=torch.float64)

    def run(grad):
        # Without autograd the fast path works in place; with it, out of place.
        with torch.set_grad_enabled(grad):
            h = up(x, w, gain=0.7)
            h2 = same(h, w, noise_mode="const")
            outputs = (h, h2, torgb(h2, w), down(h2, gain=1.3))
        if not grad:
            return outputs, None
        (gx,) = torch.autograd.grad(sum(o.square().sum() for o in outputs), x)
        return outputs, gx

    exact, exact_grad = run(grad=True)
    assert (exact[0].abs() == 0.5 * 0.7).any() and (exact[1].abs() == 0.5).any()  # the clamps bite
    for layer in layers:
        layer.precision = PRECISIONS["fp32-fast"]
    for grad in (False, True):
        fast, fast_grad = run(grad)
        for e, f in zip(exact, fast):
            assert f.dtype == torch.float64
            torch.testing.assert_close(f, e, rtol=0, atol=1e-12)
    torch.testing.assert_close(fast_grad, exact_grad, rtol=0, atol=1e-10)


def test_bf16_runs_in_bfloat16_and_stays_close_to_fp32_on_the_reference_weights(reference_generator, reference_dir):
    g = reference_generator
    exact, d = render_case1(g.set_precision("fp32"), reference_dir)
    seen = {}
    hooks = [getattr(g, name).get_submodule(path).register_forward_pre_hook(
        lambda m, args, n=name: seen.__setitem__(n, args[0].dtype))
        for name, path in (("superresolution", "block1.conv1"), ("neural_blending", "synthesis.b256.conv1"),
                           ("mouth_backbone", "synthesis.encoder.0.conv1"), ("backbone", "synthesis.b64.conv0"))]
    try:
        bf16, _ = render_case1(g.set_precision("bf16"), reference_dir)
    finally:
        for hook in hooks:
            hook.remove()
    assert len(seen) == 4 and all(dtype == torch.bfloat16 for dtype in seen.values()), seen
    for key, (max_tol, mean_tol) in BF16_TOLERANCE.items():
        ours, ref = getattr(bf16, key), getattr(exact, key)
        assert ours.dtype == torch.float32
        diff = (ours - ref).abs()
        assert diff.max() <= max_tol and diff.mean() <= mean_tol, (key, diff.max().item(), diff.mean().item())
    assert (bf16.image - exact.image).abs().max() > 1e-4  # it is not the float32 path under another name
    # Resumed sequences rely on a frame being reproducible: so is a bf16 frame.
    assert torch.equal(render_case1(g, reference_dir)[0].image, bf16.image)

    fast, _ = render_case1(g.set_precision("fp32-fast"), reference_dir)
    for key in ("image", "image_raw", "image_depth"):
        torch.testing.assert_close(getattr(fast, key), getattr(exact, key), rtol=0, atol=1e-4)
    assert np.abs(fast.image.numpy() - d["image"]).max() <= 1e-3  # the reference parity tolerance

    again, _ = render_case1(g.set_precision("fp32"), reference_dir)
    for key in ("image", "image_raw", "image_depth"):
        assert torch.equal(getattr(again, key), getattr(exact, key)), key


def test_the_command_line_offers_every_precision():
    from core.cli.options import PRECISION_NAMES

    assert PRECISION_NAMES == tuple(PRECISIONS)


def test_render_precision_from_the_command_line(tmp_path):
    """--precision reaches the generator: bf16 gives another but close frame; a sequence folder rendered in fp32
    refuses to be continued in bf16 (its record names the precision), and fp32 records nothing new."""
    import json

    from click.testing import CliRunner

    from core.cli import main as cli
    from core.geometry.ellipsoid_head import ellipsoid_head
    from core.io.generator_io import save_generator
    from core.io.images import read_image

    head = ellipsoid_head()
    model = tmp_path / "tiny.safetensors"
    save_generator(model, random_generator(TINY_CONFIG, seed=2, head=head))
    np.save(tmp_path / "seq.npy", np.stack([head.mesh_input()[0].numpy()] * 2))
    runner = CliRunner()
    frames = {}
    for name in ("fp32", "bf16"):
        out = tmp_path / f"{name}.png"
        result = runner.invoke(cli, ["render", "--model", str(model), "--out", str(out), "--precision", name])
        assert result.exit_code == 0, result.output
        frames[name] = read_image(out).astype(np.float64)
    difference = np.abs(frames["fp32"] - frames["bf16"])
    assert 0 < difference.mean() < 2.0, difference.mean()  # 8-bit levels

    sequence = ["render", "--model", str(model), "--sequence", str(tmp_path / "seq.npy"), "--out-dir",
                str(tmp_path / "o"), "--quiet", "--no-video"]
    assert runner.invoke(cli, sequence).exit_code == 0
    record = json.loads((tmp_path / "o" / "next3d_sequence.json").read_text())
    assert "precision" not in record, record
    result = runner.invoke(cli, sequence + ["--precision", "bf16"])
    assert result.exit_code != 0 and "other settings" in result.output, result.output
