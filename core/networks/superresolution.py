"""EG3D's SuperresolutionHybrid8XDC: the 64x64 neural rendering -> 512x512 image
(docs/architecture.md#super-resolution)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .stylegan2 import SynthesisBlock


class SuperresolutionHybrid8XDC(nn.Module):
    """Two StyleGAN2 blocks (128 -> 256 -> 512) driven by one w repeated; its widths are fixed by the class.

    The official config sets sr_num_fp16_res=4, which turns on a +-256 activation clamp; the blocks still compute in
    float32 off CUDA, and so do we everywhere (the clamp is kept, it is part of the trained network)."""

    def __init__(self, *, channels: int = 32, w_dim: int = 512, antialias: bool = True, conv_clamp: float = 256,
                 input_resolution: int = 128, output_resolution: int = 512):
        super().__init__()
        # The official class is fixed at 128 -> 512; smaller configs keep the same two-block, 4x structure.
        if output_resolution != 4 * input_resolution:
            raise ValueError("super-resolution upsamples 4x in two blocks: output must be 4 * input resolution")
        self.antialias = antialias
        self.input_resolution = input_resolution
        self.block0 = SynthesisBlock(channels, 256, w_dim=w_dim, resolution=output_resolution // 2, img_channels=3,
                                     conv_clamp=conv_clamp)
        self.block1 = SynthesisBlock(256, 128, w_dim=w_dim, resolution=output_resolution, img_channels=3,
                                     conv_clamp=conv_clamp)

    def forward(self, rgb: torch.Tensor, x: torch.Tensor, ws: torch.Tensor, noise_mode: str = "none",
                fused_modconv=None) -> torch.Tensor:
        ws = ws[:, -1:, :].repeat(1, 3, 1)
        size = (self.input_resolution, self.input_resolution)
        if x.shape[-1] != self.input_resolution:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=self.antialias)
            rgb = F.interpolate(rgb, size=size, mode="bilinear", align_corners=False, antialias=self.antialias)
        x, rgb = self.block0(x, rgb, ws, noise_mode=noise_mode, fused_modconv=fused_modconv)
        x, rgb = self.block1(x, rgb, ws, noise_mode=noise_mode, fused_modconv=fused_modconv)
        return rgb.contiguous()
