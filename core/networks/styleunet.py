"""The style-UNet of Next3D's mouth module (G_teeth) and neural blending (docs/architecture.md#per-frame-planes).

A StyleGAN2 'skip' decoder whose first blocks are replaced by features of a convolutional encoder of a condition
image: the encoder downsamples the condition from `in_size` to `final_size`, and fusion convolutions inject its
features into the decoder at every resolution below `num_cond_res`.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.nn as nn

from ..ops.resample import downsample2d, setup_filter
from .precision import FP32
from .stylegan2 import MEMORY_FORMAT, Conv2dLayer, MappingNetwork, SynthesisNetwork, channels_for


class EncoderResBlock(nn.Module):
    """fromrgb(condition) + previous features -> conv 3x3 -> conv 3x3 with 2x downsampling.

    Every block but the first also FIR-downsamples the condition image it passes on."""

    def __init__(self, img_channels: int, in_channels: int, out_channels: int, *, downsample: bool):
        super().__init__()
        self.fromrgb = Conv2dLayer(img_channels, in_channels, 1, bias=False)
        self.conv1 = Conv2dLayer(in_channels, in_channels, 3, activation="lrelu")
        self.conv2 = Conv2dLayer(in_channels, out_channels, 3, down=2, activation="lrelu")
        self.register_buffer("resample_filter", setup_filter())
        self.downsample = downsample

    def forward(self, image: torch.Tensor, skip: Optional[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
        if self.downsample:
            image = downsample2d(image, self.resample_filter)
        out = self.fromrgb(image)
        if skip is not None:
            out = out + skip
        return image, self.conv2(self.conv1(out))


class StyleUNetSynthesis(SynthesisNetwork):
    """Decoder b4..b<img_resolution> (the blocks below 2*final_size are built, as in the official network, but
    never run), encoder blocks and fusion convolutions."""

    def __init__(self, *, w_dim: int, img_resolution: int, img_channels: int, channel_base: int, channel_max: int,
                 cond_channels: int, in_size: int, final_size: int, num_cond_res: int,
                 conv_clamp: Optional[float] = None):
        super().__init__(w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels,
                         channel_base=channel_base, channel_max=channel_max, conv_clamp=conv_clamp)
        self.in_size = in_size
        self.final_size = final_size
        self.num_cond_res = num_cond_res
        ch = lambda res: channels_for(res, channel_base, channel_max)  # noqa: E731
        # Encoder resolutions in_size, in_size/2, ..., final_size; one block per step down.
        self.encoder_res = [2 ** i for i in range(int(math.log2(in_size)), int(math.log2(final_size)) - 1, -1)]
        self.encoder = nn.ModuleList(
            EncoderResBlock(cond_channels, ch(res), ch(res // 2), downsample=(res < in_size))
            for res in self.encoder_res[:-1])
        # One fusion conv per encoder resolution, coarsest first; only the coarsest has no decoder input to concat.
        self.fusion = nn.ModuleList(
            Conv2dLayer(ch(res) * (2 if res > final_size else 1), ch(res), 3)
            for res in self.encoder_res[::-1])
        self.precision = FP32

    def forward(self, condition: torch.Tensor, ws: torch.Tensor, noise_mode: str = "const",
                fused_modconv: Optional[bool] = None) -> torch.Tensor:
        block_ws = self.split_ws(ws.to(torch.float32))
        features = []
        image, feat = self.precision.inside(condition).contiguous(memory_format=MEMORY_FORMAT), None
        for block in self.encoder:
            image, feat = block(image, feat)
            features.append(feat)
        features = features[::-1]  # coarsest (final_size) first
        first = int(math.log2(self.final_size)) - 1  # decoding starts at block 2*final_size
        x = img = None
        for index, (res, cur_ws) in enumerate(zip(self.block_resolutions[first:], block_ws[first:])):
            if 2 ** (index + first + 1) < self.num_cond_res:
                x = features[index] if index == 0 else torch.cat([x, features[index]], dim=1)
                x = self.fusion[index](x)
            x, img = getattr(self, f"b{res}")(x, img, cur_ws, noise_mode=noise_mode, fused_modconv=fused_modconv)
        return img.contiguous()


class StyleUNetGenerator(nn.Module):
    """Style-UNet synthesis + a mapping network (present in the official state dict, never called: Next3D feeds
    this network the ws of the static backbone)."""

    def __init__(self, *, z_dim: int, c_dim: int, w_dim: int, img_resolution: int, img_channels: int,
                 channel_base: int, channel_max: int, cond_channels: int, in_size: int, final_size: int,
                 num_cond_res: int, mapping_layers: int = 2, conv_clamp: Optional[float] = None):
        super().__init__()
        self.synthesis = StyleUNetSynthesis(w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels,
                                            channel_base=channel_base, channel_max=channel_max,
                                            cond_channels=cond_channels, in_size=in_size, final_size=final_size,
                                            num_cond_res=num_cond_res, conv_clamp=conv_clamp)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, num_ws=self.num_ws,
                                      num_layers=mapping_layers)
