"""StyleGAN2 layer maths against direct formulas written independently of the implementation."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from core.networks.stylegan2 import (Conv2dLayer, FullyConnectedLayer, MappingNetwork, SynthesisLayer, ToRGBLayer,
                                     modulated_conv2d, normalize_2nd_moment)
from core.ops.bias_act import bias_act
from core.ops.resample import conv2d_resample, downsample2d, setup_filter, upfirdn2d, upsample2d

FIR = np.outer([1, 3, 3, 1], [1, 3, 3, 1]) / 64.0


def direct_upfirdn(x, f, up, down, pad, gain):
    """Loop-based upfirdn2d on numpy: y[i, j] = sum_{a, b} xp[i*down + a, j*down + b] * f[k-1-a, k-1-b]."""
    n, c, h, w = x.shape
    xu = np.zeros((n, c, h * up, w * up))
    xu[:, :, ::up, ::up] = x
    p0, p1 = pad
    xp = np.pad(xu, ((0, 0), (0, 0), (p0, p1), (p0, p1)))
    k = f.shape[0]
    fk = f[::-1, ::-1] * gain
    oh = (xp.shape[2] - k) // down + 1
    ow = (xp.shape[3] - k) // down + 1
    out = np.zeros((n, c, oh, ow))
    for i in range(oh):
        for j in range(ow):
            out[:, :, i, j] = (xp[:, :, i * down:i * down + k, j * down:j * down + k] * fk).sum((2, 3))
    return out


def test_setup_filter_is_normalized_outer_product():
    np.testing.assert_allclose(setup_filter().numpy(), FIR, rtol=1e-7)


@pytest.mark.parametrize("up,down,pad,gain", [(2, 1, (2, 1), 4.0), (1, 2, (1, 1), 1.0), (1, 1, (1, 2), 1.0)])
def test_upfirdn2d_matches_direct_formula(up, down, pad, gain):
    x = torch.randn(2, 3, 7, 7, dtype=torch.float64)
    ours = upfirdn2d(x, torch.from_numpy(FIR), up=up, down=down, padding=[pad[0], pad[1], pad[0], pad[1]], gain=gain)
    np.testing.assert_allclose(ours.numpy(), direct_upfirdn(x.numpy(), FIR, up, down, pad, gain), atol=1e-12)


def test_resampling_keeps_constant_images_constant_inside():
    x = torch.full((1, 2, 8, 8), 3.0)
    up = upsample2d(x, setup_filter())
    down = downsample2d(x, setup_filter())
    assert up.shape[-1] == 16 and down.shape[-1] == 4
    torch.testing.assert_close(up[..., 2:-2, 2:-2], torch.full_like(up[..., 2:-2, 2:-2], 3.0))
    torch.testing.assert_close(down[..., 1:-1, 1:-1], torch.full_like(down[..., 1:-1, 1:-1], 3.0))


def test_conv2d_resample_up_equals_zero_insert_then_conv_then_filter():
    """Transposed conv + FIR == zero insertion, 'full' convolution with the 3x3 kernel, then the filter."""
    x = torch.randn(1, 3, 5, 5, dtype=torch.float64)
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64)
    f = setup_filter().double()
    ours = conv2d_resample(x, w, f=f, up=2, padding=1, flip_weight=False)
    xu = torch.zeros(1, 3, 10, 10, dtype=torch.float64)
    xu[:, :, ::2, ::2] = x
    # A true convolution (flipped correlation) over the zero-inserted image, padded by 2 so the output is 'full'.
    y = F.conv2d(F.pad(xu, [2, 1, 2, 1]), w.flip([2, 3]))
    ref = upfirdn2d(y, f, padding=[1, 1, 1, 1], gain=4)
    assert ours.shape == (1, 4, 10, 10)
    np.testing.assert_allclose(ours.numpy(), ref.numpy(), atol=1e-10)


def test_conv2d_resample_down_is_filter_then_strided_conv():
    x = torch.randn(1, 2, 8, 8, dtype=torch.float64)
    w = torch.randn(3, 2, 3, 3, dtype=torch.float64)
    f = setup_filter().double()
    ours = conv2d_resample(x, w, f=f, down=2, padding=1)
    ref = F.conv2d(torch.from_numpy(direct_upfirdn(x.numpy(), f.numpy(), 1, 1, (2, 2), 1.0)), w, stride=2)
    np.testing.assert_allclose(ours.numpy(), ref.numpy(), atol=1e-10)


def test_bias_act_lrelu_gain_then_clamp():
    x = torch.tensor([[-3.0, -1.0, 0.5, 200.0]])
    b = torch.tensor([1.0, 1.0, 1.0, 1.0])
    y = bias_act(x.T.reshape(1, 4, 1, 1), b, act="lrelu", gain=2 * math.sqrt(2), clamp=256.0).reshape(-1)
    pre = (x + 1).reshape(-1)
    expect = torch.where(pre > 0, pre, 0.2 * pre) * 2 * math.sqrt(2)
    torch.testing.assert_close(y, expect.clamp(-256, 256))
    assert y[-1] == 256.0


def test_fully_connected_equalized_learning_rate():
    torch.manual_seed(0)
    layer = FullyConnectedLayer(8, 5, lr_multiplier=0.01, bias_init=0.5)
    with torch.no_grad():
        layer.bias.normal_()
    x = torch.randn(3, 8)
    expect = x @ (layer.weight * 0.01 / math.sqrt(8)).T + layer.bias * 0.01
    torch.testing.assert_close(layer(x), expect)
    lrelu = FullyConnectedLayer(8, 5, activation="lrelu")
    pre = x @ (lrelu.weight / math.sqrt(8)).T + lrelu.bias
    torch.testing.assert_close(lrelu(x), F.leaky_relu(pre, 0.2) * math.sqrt(2))


def test_conv2d_layer_gain_and_activation():
    torch.manual_seed(0)
    layer = Conv2dLayer(3, 4, 3, activation="lrelu")
    with torch.no_grad():
        layer.bias.normal_()
    x = torch.randn(2, 3, 6, 6)
    pre = F.conv2d(x, layer.weight / math.sqrt(3 * 9), layer.bias, padding=1)
    torch.testing.assert_close(layer(x), F.leaky_relu(pre, 0.2) * math.sqrt(2), rtol=1e-5, atol=1e-5)


def test_modulated_conv_fused_equals_unfused_and_per_sample_formula():
    torch.manual_seed(0)
    x = torch.randn(3, 4, 6, 6, dtype=torch.float64)
    weight = torch.randn(5, 4, 3, 3, dtype=torch.float64)
    styles = torch.randn(3, 4, dtype=torch.float64)
    fused = modulated_conv2d(x, weight, styles, padding=1, fused_modconv=True)
    unfused = modulated_conv2d(x, weight, styles, padding=1, fused_modconv=False)
    np.testing.assert_allclose(fused.numpy(), unfused.numpy(), atol=1e-10)
    for i in range(3):
        w = weight * styles[i].reshape(1, -1, 1, 1)
        w = w / torch.sqrt((w ** 2).sum(dim=(1, 2, 3), keepdim=True) + 1e-8)
        np.testing.assert_allclose(fused[i].numpy(), F.conv2d(x[i:i + 1], w, padding=1)[0].numpy(), atol=1e-10)


def test_synthesis_layer_noise_modes_and_upsampling():
    torch.manual_seed(0)
    layer = SynthesisLayer(4, 6, w_dim=8, resolution=8, up=2).eval()
    with torch.no_grad():
        layer.noise_strength.fill_(0.5)
    x, w = torch.randn(2, 4, 4, 4), torch.randn(2, 8)
    const = layer(x, w, noise_mode="const")
    none = layer(x, w, noise_mode="none")
    assert const.shape == (2, 6, 8, 8)
    assert not torch.allclose(const, none)
    torch.testing.assert_close(layer(x, w, noise_mode="const"), const)


def test_torgb_has_no_demodulation():
    torch.manual_seed(0)
    layer = ToRGBLayer(4, 3, w_dim=8)
    x, w = torch.randn(1, 4, 5, 5), torch.randn(1, 8)
    styles = layer.affine(w) / math.sqrt(4)
    expect = F.conv2d(x, layer.weight * styles.reshape(1, -1, 1, 1)) + layer.bias.reshape(1, -1, 1, 1)
    torch.testing.assert_close(layer(x, w), expect, rtol=1e-5, atol=1e-5)


def test_mapping_normalizes_and_truncates_only_cutoff():
    torch.manual_seed(0)
    mapping = MappingNetwork(z_dim=16, c_dim=25, w_dim=16, num_ws=6, num_layers=2)
    with torch.no_grad():
        mapping.w_avg.normal_()
    z, c = torch.randn(2, 16), torch.randn(2, 25)
    full = mapping(z, c)
    cut = mapping(z, c, truncation_psi=0.5, truncation_cutoff=3)
    torch.testing.assert_close(cut[:, :3], mapping.w_avg.lerp(full[:, :3], 0.5))
    torch.testing.assert_close(cut[:, 3:], full[:, 3:])
    torch.testing.assert_close(normalize_2nd_moment(z * 7.0), normalize_2nd_moment(z), rtol=1e-5, atol=1e-6)
