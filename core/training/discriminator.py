"""EG3D's DualDiscriminator (resnet blocks, minibatch-stddev epilogue, camera-label mapping), generalized to any
power-of-two image resolution, any width, and extra input channels for the deformation-aware discriminator.

Module and buffer names are the official ones (docs/training.md#discriminator): `b<res>.{fromrgb,conv0,conv1,skip}`
down to b8, `mapping.{embed,fc0..fc7}`, `b4.{conv,fc,out}` and a top-level `resample_filter`. With the official settings
(img_resolution 512, mesh_channels 0, channel_base 32768, channel_max 512, c_dim 25) the state dict has the
official keys and shapes.

Input: cat(image, image_raw upsampled to the image size, mesh rendering). EG3D's dual discrimination gives D the
final image and the raw neural rendering; the deformation-aware discriminator of the Next3D paper (supplement
§1.1) also shows D a synthetic rendering of the FLAME mesh that drove the image, so D can judge whether the face
follows the mesh. `mesh_channels=0` is plain EG3D.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..checks import check_tensor
from ..errors import InputError
from ..networks.stylegan2 import Conv2dLayer, FullyConnectedLayer, MappingNetwork
from ..ops.resample import setup_filter

__all__ = ["DualDiscriminator", "DiscriminatorBlock", "DiscriminatorEpilogue", "MinibatchStdLayer",
           "upsample_raw"]


def upsample_raw(image_raw: torch.Tensor, size: int) -> torch.Tensor:
    """The raw rendering resized to the final image size: bilinear with antialiasing (EG3D's 'antialiased'
    filtered resizing; antialiasing only matters when shrinking)."""
    if image_raw.shape[-1] == size and image_raw.shape[-2] == size:
        return image_raw
    return F.interpolate(image_raw, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


class DiscriminatorBlock(nn.Module):
    """Resnet block: [fromrgb (first block only)] -> conv0 3x3 -> conv1 3x3 down 2, plus a 1x1 down-2 skip;
    both branches scaled by sqrt(0.5)."""

    def __init__(self, in_channels: int, tmp_channels: int, out_channels: int, *, img_channels: int,
                 conv_clamp: Optional[float] = None):
        super().__init__()
        self.in_channels = in_channels
        self.register_buffer("resample_filter", setup_filter())
        if in_channels == 0:
            self.fromrgb = Conv2dLayer(img_channels, tmp_channels, 1, activation="lrelu", conv_clamp=conv_clamp)
        self.conv0 = Conv2dLayer(tmp_channels, tmp_channels, 3, activation="lrelu", conv_clamp=conv_clamp)
        self.conv1 = Conv2dLayer(tmp_channels, out_channels, 3, activation="lrelu", down=2, conv_clamp=conv_clamp)
        self.skip = Conv2dLayer(tmp_channels, out_channels, 1, bias=False, down=2)

    def forward(self, x: Optional[torch.Tensor], img: Optional[torch.Tensor]) -> torch.Tensor:
        if self.in_channels == 0:
            y = self.fromrgb(img)
            x = y if x is None else x + y
        gain = math.sqrt(0.5)
        y = self.skip(x, gain=gain)
        x = self.conv1(self.conv0(x), gain=gain)
        return y + x


class MinibatchStdLayer(nn.Module):
    """Appends the standard deviation over groups of `group_size` samples as extra feature map(s)."""

    def __init__(self, group_size: int, num_channels: int = 1):
        super().__init__()
        self.group_size = group_size
        self.num_channels = num_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g = min(self.group_size, n)
        if n % g:
            raise InputError(f"The discriminator's minibatch-stddev layer groups {g} images, but the batch has {n}; "
                             f"use a batch size that is a multiple of {g} (or a smaller mbstd group).")
        f = self.num_channels
        y = x.reshape(g, -1, f, c // f, h, w)
        y = y - y.mean(dim=0)
        y = y.square().mean(dim=0)
        y = (y + 1e-8).sqrt()
        y = y.mean(dim=[2, 3, 4])
        y = y.reshape(-1, f, 1, 1).repeat(g, 1, h, w)
        return torch.cat([x, y], dim=1)


class DiscriminatorEpilogue(nn.Module):
    """4x4 head: minibatch stddev, conv 3x3, fc, out; projected onto the camera-label embedding (cmap)."""

    def __init__(self, in_channels: int, *, cmap_dim: int, resolution: int = 4, mbstd_group_size: int = 4,
                 mbstd_num_channels: int = 1, conv_clamp: Optional[float] = None):
        super().__init__()
        self.cmap_dim = cmap_dim
        self.mbstd = MinibatchStdLayer(mbstd_group_size, mbstd_num_channels) if mbstd_num_channels > 0 else None
        self.conv = Conv2dLayer(in_channels + mbstd_num_channels, in_channels, 3, activation="lrelu",
                                conv_clamp=conv_clamp)
        self.fc = FullyConnectedLayer(in_channels * resolution ** 2, in_channels, activation="lrelu")
        self.out = FullyConnectedLayer(in_channels, 1 if cmap_dim == 0 else cmap_dim)

    def forward(self, x: torch.Tensor, cmap: Optional[torch.Tensor]) -> torch.Tensor:
        x = x.to(torch.float32)
        if self.mbstd is not None:
            x = self.mbstd(x)
        x = self.conv(x)
        x = self.fc(x.flatten(1))
        x = self.out(x)
        if cmap is not None:
            x = (x * cmap).sum(dim=1, keepdim=True) * (1 / math.sqrt(self.cmap_dim))
        return x


class DualDiscriminator(nn.Module):
    """D(image, image_raw, c, mesh) -> logits [B, 1].

    Args:
        c_dim: camera label size (25), 0 for an unconditional D.
        img_resolution: side of the final image (power of two >= 8).
        img_channels: channels of one image (3); the input has 2 * img_channels + mesh_channels channels.
        mesh_channels: channels of the mesh rendering (0 = plain EG3D dual discrimination).
        channel_base, channel_max: width at resolution r is min(channel_base // r, channel_max).
        conv_clamp: activation clamp of the convolutions (EG3D: 256, because the top blocks run in fp16 on GPUs).
        mbstd_group_size, mbstd_num_channels: minibatch-stddev settings (EG3D: 4, 1).
        mapping_layers: depth of the camera-label mapping network (EG3D's D: 8).
        disc_c_noise: Gaussian noise added to the label during training, in units of its batch std (EG3D and the
            Next3D FFHQ recipe: 1).
    """

    def __init__(self, *, c_dim: int = 25, img_resolution: int = 512, img_channels: int = 3, mesh_channels: int = 0,
                 channel_base: int = 32768, channel_max: int = 512, conv_clamp: Optional[float] = 256,
                 cmap_dim: Optional[int] = None, mbstd_group_size: int = 4, mbstd_num_channels: int = 1,
                 mapping_layers: int = 8, disc_c_noise: float = 0.0):
        super().__init__()
        if img_resolution < 8 or img_resolution & (img_resolution - 1):
            raise InputError(f"The discriminator's img_resolution must be a power of two >= 8, got {img_resolution}.")
        self.c_dim = c_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.mesh_channels = mesh_channels
        self.disc_c_noise = disc_c_noise
        self.block_resolutions = [2 ** i for i in range(int(math.log2(img_resolution)), 2, -1)]
        channels = {res: min(channel_base // res, channel_max) for res in self.block_resolutions + [4]}
        if cmap_dim is None:
            cmap_dim = channels[4]
        if c_dim == 0:
            cmap_dim = 0
        self.cmap_dim = cmap_dim
        in_total = 2 * img_channels + mesh_channels
        for res in self.block_resolutions:
            block = DiscriminatorBlock(channels[res] if res < img_resolution else 0, channels[res], channels[res // 2],
                                       img_channels=in_total, conv_clamp=conv_clamp)
            setattr(self, f"b{res}", block)
        if c_dim > 0:
            self.mapping = MappingNetwork(z_dim=0, c_dim=c_dim, w_dim=cmap_dim, num_ws=None, w_avg_beta=None,
                                          num_layers=mapping_layers)
        self.b4 = DiscriminatorEpilogue(channels[4], cmap_dim=cmap_dim, resolution=4,
                                        mbstd_group_size=mbstd_group_size, mbstd_num_channels=mbstd_num_channels,
                                        conv_clamp=conv_clamp)
        self.register_buffer("resample_filter", setup_filter())

    def config(self) -> dict:
        """The constructor arguments that fix the shapes (stored with training snapshots)."""
        return dict(c_dim=self.c_dim, img_resolution=self.img_resolution, img_channels=self.img_channels,
                    mesh_channels=self.mesh_channels)

    def forward(self, image: torch.Tensor, image_raw: torch.Tensor, c: Optional[torch.Tensor],
                mesh: Optional[torch.Tensor] = None) -> torch.Tensor:
        res = self.img_resolution
        check_tensor("image", image, [None, self.img_channels, res, res])
        n = image.shape[0]
        check_tensor("image_raw", image_raw, [n, self.img_channels, None, None])
        parts = [image, upsample_raw(image_raw, res)]
        if self.mesh_channels:
            if mesh is None:
                raise InputError(f"This discriminator is deformation-aware and needs the mesh rendering "
                                 f"([B, {self.mesh_channels}, {res}, {res}]) of the FLAME mesh behind each image.")
            check_tensor("mesh rendering", mesh, [n, self.mesh_channels, res, res])
            parts.append(mesh.to(image.dtype))
        img = torch.cat(parts, dim=1)
        x = None
        for r in self.block_resolutions:
            block = getattr(self, f"b{r}")
            x = block(x, img if block.in_channels == 0 else None)
        cmap = None
        if self.c_dim > 0:
            check_tensor("c (camera label)", c, [n, self.c_dim])
            if self.disc_c_noise > 0 and self.training and n > 1:
                c = c + torch.randn_like(c) * c.std(0) * self.disc_c_noise
            cmap = self.mapping(None, c)
        return self.b4(x, cmap)
