"""StyleGAN2 building blocks with EG3D's semantics (docs/architecture.md#stylegan2-building-blocks), attribute
names matching the official state dict.

Equalized learning rate: weights are stored unscaled and multiplied by their gain at run time, exactly as the
official layers do, so official weights load unchanged.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.nn as nn

from ..ops.bias_act import DEFAULT_GAIN, bias_act
from ..ops.resample import conv2d_resample, setup_filter, upsample2d
from .precision import FP32

NOISE_MODES = ("const", "random", "none")

# Feature maps flow through the synthesis blocks in channels-last layout: oneDNN's transposed and depthwise
# convolutions (2x upsampling, FIR filters) run several times faster on the CPU that way, with the same arithmetic.
MEMORY_FORMAT = torch.channels_last


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


class FullyConnectedLayer(nn.Module):
    """Linear layer with equalized learning rate: weight * lr_mul/sqrt(in), bias * lr_mul."""

    def __init__(self, in_features: int, out_features: int, *, bias: bool = True, activation: str = "linear",
                 lr_multiplier: float = 1.0, bias_init: float = 0.0):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.activation = activation
        self.weight = nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias
        if b is not None:
            b = b.to(x.dtype)
            if self.bias_gain != 1:
                b = b * self.bias_gain
        if self.activation == "linear" and b is not None:
            return torch.addmm(b.unsqueeze(0), x, w.t())
        return bias_act(x.matmul(w.t()), b, act=self.activation)


class Conv2dLayer(nn.Module):
    """Plain (non-modulated) conv with equalized learning rate, optional FIR up/down-sampling and clamp."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, bias: bool = True,
                 activation: str = "linear", up: int = 1, down: int = 1, conv_clamp: Optional[float] = None):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.activation = activation
        self.up = up
        self.down = down
        self.conv_clamp = conv_clamp
        self.register_buffer("resample_filter", setup_filter())
        self.padding = kernel_size // 2
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size ** 2)
        self.act_gain = DEFAULT_GAIN[activation]
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        self.bias = nn.Parameter(torch.zeros([out_channels])) if bias else None
        self.precision = FP32

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        resample = dict(f=self.resample_filter, up=self.up, down=self.down, padding=self.padding,
                        flip_weight=(self.up == 1))
        if self.precision.fast:
            # Gain and bias inside the convolution (lrelu and linear commute with a positive gain).
            g = self.act_gain * gain
            b = (self.bias * g).to(x.dtype) if self.bias is not None else None
            x = conv2d_resample(x, (self.weight * (self.weight_gain * g)).to(x.dtype), bias=b, **resample)
            return bias_act(x, act=self.activation, gain=1, clamp=clamp, fresh=True)
        w = (self.weight * self.weight_gain).to(x.dtype)
        b = self.bias.to(x.dtype) if self.bias is not None else None
        x = conv2d_resample(x, w, **resample)
        return bias_act(x, b, act=self.activation, gain=self.act_gain * gain, clamp=clamp)


class MappingNetwork(nn.Module):
    """z (+ camera label c) -> w, broadcast to `num_ws` copies, with truncation towards `w_avg`."""

    def __init__(self, *, z_dim: int, c_dim: int, w_dim: int, num_ws: Optional[int], num_layers: int = 8,
                 lr_multiplier: float = 0.01, w_avg_beta: Optional[float] = 0.998):
        super().__init__()
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.num_ws = num_ws
        self.num_layers = num_layers
        self.w_avg_beta = w_avg_beta
        embed_features = w_dim if c_dim > 0 else 0
        features = [z_dim + embed_features] + [w_dim] * num_layers
        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed_features)
        for idx in range(num_layers):
            setattr(self, f"fc{idx}", FullyConnectedLayer(features[idx], features[idx + 1], activation="lrelu",
                                                          lr_multiplier=lr_multiplier))
        if num_ws is not None and w_avg_beta is not None:
            self.register_buffer("w_avg", torch.zeros([w_dim]))

    def forward(self, z: Optional[torch.Tensor], c: Optional[torch.Tensor], truncation_psi: float = 1.0,
                truncation_cutoff: Optional[int] = None, update_emas: bool = False) -> torch.Tensor:
        x = None
        if self.z_dim > 0:
            x = normalize_2nd_moment(z.to(torch.float32))
        if self.c_dim > 0:
            y = normalize_2nd_moment(self.embed(c.to(torch.float32)))
            x = torch.cat([x, y], dim=1) if x is not None else y
        for idx in range(self.num_layers):
            x = getattr(self, f"fc{idx}")(x)
        if update_emas and self.w_avg_beta is not None:
            self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        if self.num_ws is not None:
            x = x.unsqueeze(1).repeat([1, self.num_ws, 1])
        if truncation_psi != 1:
            if self.num_ws is None or truncation_cutoff is None:
                x = self.w_avg.lerp(x, truncation_psi)
            else:
                x = x.clone()
                x[:, :truncation_cutoff] = self.w_avg.lerp(x[:, :truncation_cutoff], truncation_psi)
        return x


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, *,
                     noise: Optional[torch.Tensor] = None, up: int = 1, padding: int = 0,
                     resample_filter: Optional[torch.Tensor] = None, demodulate: bool = True,
                     flip_weight: bool = True, fused_modconv: bool = True) -> torch.Tensor:
    """Style-modulated convolution with optional demodulation (StyleGAN2 §2.2).

    fused: one grouped convolution with per-sample weights (inference); unfused: scale the activations before and
    after a shared convolution (training). The two are mathematically equal.
    """
    n = x.shape[0]
    out_ch, in_ch, kh, kw = weight.shape
    w = None
    dcoefs = None
    if demodulate or fused_modconv:
        w = weight.unsqueeze(0) * styles.reshape(n, 1, -1, 1, 1)
    if demodulate:
        dcoefs = (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()
    if not fused_modconv:
        x = x * styles.to(x.dtype).reshape(n, -1, 1, 1)
        x = conv2d_resample(x, weight.to(x.dtype), f=resample_filter, up=up, padding=padding,
                            flip_weight=flip_weight)
        if demodulate:
            x = x * dcoefs.to(x.dtype).reshape(n, -1, 1, 1)
        if noise is not None:
            x = x + noise.to(x.dtype)
        return x
    if demodulate:
        w = w * dcoefs.reshape(n, -1, 1, 1, 1)
    if n > 1:  # a batch of 1 is already a single group; skipping the reshape keeps its memory format
        x = x.reshape(1, -1, *x.shape[2:])
    w = w.reshape(-1, in_ch, kh, kw)
    x = conv2d_resample(x, w.to(x.dtype), f=resample_filter, up=up, padding=padding, groups=n,
                        flip_weight=flip_weight)
    x = x.reshape(n, -1, *x.shape[2:])  # for a batch of 1 this view has odd strides (precision.Precision.fast)
    if noise is not None:
        x = x + noise.to(x.dtype)
    return x


def fast_modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, *,
                          noise: Optional[torch.Tensor] = None, up: int = 1, padding: int = 0,
                          resample_filter: Optional[torch.Tensor] = None, demodulate: bool = True,
                          flip_weight: bool = True, bias: Optional[torch.Tensor] = None,
                          gain: float = 1.0) -> torch.Tensor:
    """gain * (modulated_conv2d(fused) + bias) in fewer passes over memory (precision.Precision.fast).

    The demodulation coefficients come from sum_k weight^2 @ styles^2, without the per-sample weights; those are
    written once, in x's dtype, with styles, coefficients and gain in one product; the bias is added by the
    convolution and the noise in place; a batch of 1 keeps its channels-last strides.
    """
    n = x.shape[0]
    out_ch, in_ch, kh, kw = weight.shape
    scale = styles.reshape(n, 1, in_ch)
    if demodulate:
        dcoefs = (styles.square() @ weight.square().sum(dim=[2, 3]).t() + 1e-8).rsqrt()  # [n, out]
        scale = scale * (dcoefs * gain).reshape(n, out_ch, 1)
    elif gain != 1:
        scale = scale * gain
    scale = scale.reshape(n, -1, in_ch, 1, 1)
    if torch.is_grad_enabled() and (weight.requires_grad or scale.requires_grad):
        w = (weight.unsqueeze(0) * scale).to(x.dtype)  # out= below has no autograd
    else:
        w = torch.empty([n, out_ch, in_ch, kh, kw], dtype=x.dtype, device=x.device)
        torch.mul(weight.unsqueeze(0), scale, out=w)
    if n > 1:
        x = x.reshape(1, -1, *x.shape[2:])
    if bias is not None:
        bias = (bias * gain).to(x.dtype).repeat(n)
    x = conv2d_resample(x, w.reshape(-1, in_ch, kh, kw), f=resample_filter, up=up, padding=padding, groups=n,
                        flip_weight=flip_weight, bias=bias)
    if n > 1:
        x = x.reshape(n, -1, *x.shape[2:])
    if noise is not None:
        noise = (noise * gain if gain != 1 else noise).to(x.dtype)
        x = x + noise if torch.is_grad_enabled() else x.add_(noise)
    return x


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv (+ optional 2x upsampling), per-pixel noise, bias and lrelu."""

    def __init__(self, in_channels: int, out_channels: int, *, w_dim: int, resolution: int, up: int = 1,
                 conv_clamp: Optional[float] = None, kernel_size: int = 3):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.resolution = resolution
        self.up = up
        self.conv_clamp = conv_clamp
        self.register_buffer("resample_filter", setup_filter())
        self.padding = kernel_size // 2
        self.act_gain = DEFAULT_GAIN["lrelu"]
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        self.register_buffer("noise_const", torch.randn([resolution, resolution]))
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.precision = FP32

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "const", fused_modconv: bool = True,
                gain: float = 1.0) -> torch.Tensor:
        styles = self.affine(w)
        noise = None
        if noise_mode == "random":
            noise = torch.randn([x.shape[0], 1, self.resolution, self.resolution], device=x.device) * \
                self.noise_strength
        elif noise_mode == "const":
            noise = self.noise_const * self.noise_strength
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        common = dict(noise=noise, up=self.up, padding=self.padding, resample_filter=self.resample_filter,
                      flip_weight=(self.up == 1))
        if self.precision.fast and fused_modconv:
            # lrelu(g * y) = g * lrelu(y) for g > 0: the gain goes into the convolution.
            x = fast_modulated_conv2d(x, self.weight, styles, bias=self.bias, gain=self.act_gain * gain, **common)
            return bias_act(x, act="lrelu", gain=1, clamp=clamp, fresh=True)
        x = modulated_conv2d(x, self.weight, styles, fused_modconv=fused_modconv, **common)
        return bias_act(x, self.bias.to(x.dtype), act="lrelu", gain=self.act_gain * gain, clamp=clamp)


class ToRGBLayer(nn.Module):
    """Modulated 1x1 conv without demodulation, to the block's output channels."""

    def __init__(self, in_channels: int, out_channels: int, *, w_dim: int, conv_clamp: Optional[float] = None):
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, 1, 1]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / math.sqrt(in_channels)
        self.precision = FP32

    def forward(self, x: torch.Tensor, w: torch.Tensor, fused_modconv: bool = True) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        if self.precision.fast and fused_modconv:
            x = fast_modulated_conv2d(x, self.weight, styles, demodulate=False, bias=self.bias)
            return bias_act(x, clamp=self.conv_clamp, fresh=True)
        x = modulated_conv2d(x, self.weight, styles, demodulate=False, fused_modconv=fused_modconv)
        return bias_act(x, self.bias.to(x.dtype), clamp=self.conv_clamp)


class SynthesisBlock(nn.Module):
    """One resolution of the 'skip' generator: (const or 2x-upsampling conv0), conv1, toRGB added to the upsampled
    running image. Uses num_conv + 1 ws; the toRGB w is shared with the next block's conv0."""

    def __init__(self, in_channels: int, out_channels: int, *, w_dim: int, resolution: int, img_channels: int,
                 conv_clamp: Optional[float] = None):
        super().__init__()
        self.in_channels = in_channels
        self.resolution = resolution
        self.img_channels = img_channels
        self.register_buffer("resample_filter", setup_filter())
        self.num_conv = 0
        self.num_torgb = 1
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn([out_channels, resolution, resolution]))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim=w_dim, resolution=resolution, up=2,
                                        conv_clamp=conv_clamp)
            self.num_conv += 1
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim=w_dim, resolution=resolution,
                                    conv_clamp=conv_clamp)
        self.num_conv += 1
        self.torgb = ToRGBLayer(out_channels, img_channels, w_dim=w_dim, conv_clamp=conv_clamp)
        self.precision = FP32

    def forward(self, x: Optional[torch.Tensor], img: Optional[torch.Tensor], ws: torch.Tensor,
                noise_mode: str = "const", fused_modconv: Optional[bool] = None
                ) -> Tuple[torch.Tensor, torch.Tensor]:
        if fused_modconv is None:
            fused_modconv = not self.training  # EG3D's 'inference_only'
        w_iter = iter(ws.unbind(dim=1))
        if self.in_channels == 0:
            x = self.const.unsqueeze(0).repeat([ws.shape[0], 1, 1, 1])
        x = self.precision.inside(x).contiguous(memory_format=MEMORY_FORMAT)
        if self.in_channels != 0:
            x = self.conv0(x, next(w_iter), noise_mode=noise_mode, fused_modconv=fused_modconv)
        x = self.conv1(x, next(w_iter), noise_mode=noise_mode, fused_modconv=fused_modconv)
        if img is not None:
            img = upsample2d(img, self.resample_filter)
        # The skip image is summed in float32 in every precision: it is the network's output.
        y = self.precision.outside(self.torgb(x, next(w_iter), fused_modconv=fused_modconv))
        img = img + y if img is not None else y
        return x, img


def channels_for(resolution: int, channel_base: int, channel_max: int) -> int:
    """Feature width at a resolution: min(channel_base // res, channel_max)."""
    return min(channel_base // resolution, channel_max)


class SynthesisNetwork(nn.Module):
    """The 'skip' StyleGAN2 synthesis network from 4x4 to `img_resolution`."""

    def __init__(self, *, w_dim: int, img_resolution: int, img_channels: int, channel_base: int,
                 channel_max: int, conv_clamp: Optional[float] = None):
        super().__init__()
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.block_resolutions = [2 ** i for i in range(2, int(math.log2(img_resolution)) + 1)]
        self.num_ws = 0
        for res in self.block_resolutions:
            in_ch = channels_for(res // 2, channel_base, channel_max) if res > 4 else 0
            block = SynthesisBlock(in_ch, channels_for(res, channel_base, channel_max), w_dim=w_dim,
                                   resolution=res, img_channels=img_channels, conv_clamp=conv_clamp)
            self.num_ws += block.num_conv
            setattr(self, f"b{res}", block)
        self.num_ws += 1  # the last block's toRGB

    def split_ws(self, ws: torch.Tensor):
        """Per-block windows of ws (conv ws + the toRGB w that the next block's conv0 also reads)."""
        out, idx = [], 0
        for res in self.block_resolutions:
            block = getattr(self, f"b{res}")
            out.append(ws.narrow(1, idx, block.num_conv + block.num_torgb))
            idx += block.num_conv
        return out

    def forward(self, ws: torch.Tensor, noise_mode: str = "const", fused_modconv: Optional[bool] = None
                ) -> torch.Tensor:
        x = img = None
        for res, cur_ws in zip(self.block_resolutions, self.split_ws(ws.to(torch.float32))):
            x, img = getattr(self, f"b{res}")(x, img, cur_ws, noise_mode=noise_mode, fused_modconv=fused_modconv)
        return img.contiguous()


class StyleGAN2Generator(nn.Module):
    """Synthesis network + its mapping network. `mapping_ws` lets the mapping emit more ws than the synthesis
    uses (Next3D's `backbone` maps to 28 ws shared by all sub-networks)."""

    def __init__(self, *, z_dim: int, c_dim: int, w_dim: int, img_resolution: int, img_channels: int,
                 channel_base: int, channel_max: int, mapping_layers: int = 2, mapping_ws: Optional[int] = None,
                 conv_clamp: Optional[float] = None):
        super().__init__()
        self.synthesis = SynthesisNetwork(w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels,
                                          channel_base=channel_base, channel_max=channel_max,
                                          conv_clamp=conv_clamp)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, num_ws=mapping_ws or self.num_ws,
                                      num_layers=mapping_layers)
