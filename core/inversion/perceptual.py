"""Image distances for GAN inversion: an LPIPS-style perceptual distance on a VGG16 the user supplies, and SSIM.

LPIPS (Zhang et al., CVPR 2018) compares the activations of five VGG16 stages (relu1_2, relu2_2, relu3_3, relu4_3,
relu5_3): each stage's feature vectors are unit-normalized over channels, the squared differences are weighted per
channel (learned "lin" weights), averaged over the image and summed over stages. Nothing is downloaded: the VGG16
weights (a torchvision `vgg16` state dict, keys features.0.weight ... features.28.bias; the classifier is ignored)
and, optionally, the LPIPS lin weights (keys lin0.model.1.weight ... lin4.model.1.weight) come from paths the user
gives. Without lin weights every channel weighs 1 (LPIPS' uncalibrated "baseline" variant).

SSIM (Wang et al. 2004; 11-tap Gaussian window, sigma 1.5) is the structural loss used when no VGG16 is given.
"""

from __future__ import annotations

import os
from typing import List, Optional, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import CheckpointError, InputError
from ..io.weights_file import read_state_dict_file

__all__ = ["VGG16Features", "LpipsDistance", "load_vgg16", "load_lpips_weights", "load_perceptual", "ssim",
           "VGG16_CONV_INDICES", "LPIPS_CHANNELS"]

PathLike = Union[str, os.PathLike]

# torchvision's vgg16 `features` layout: channel counts, "M" = 2x2 max pool. Index i of the Sequential below is
# index i of torchvision's, so its state dict loads under the same keys.
_VGG16_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
VGG16_CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
_STAGE_ENDS = (3, 8, 15, 22, 29)  # the ReLUs after conv1_2, conv2_2, conv3_3, conv4_3, conv5_3
LPIPS_CHANNELS = (64, 128, 256, 512, 512)
# LPIPS' ScalingLayer: images in [-1, 1] are shifted and scaled to the ImageNet statistics VGG16 was trained on.
_LPIPS_SHIFT = (-0.030, -0.088, -0.188)
_LPIPS_SCALE = (0.458, 0.448, 0.450)
LPIPS_MAX_SIZE = 256  # larger images are downsampled first (as the StyleGAN2/EG3D projectors do)


class VGG16Features(nn.Module):
    """VGG16's convolutional part up to relu5_3, returning the five LPIPS stages.

    forward(x [B, 3, H, W], ImageNet-normalized) -> list of 5 tensors [B, C_k, H / 2^k, W / 2^k]."""

    def __init__(self):
        super().__init__()
        layers: List[nn.Module] = []
        in_ch = 3
        for item in _VGG16_LAYOUT:
            if item == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(in_ch, int(item), kernel_size=3, padding=1), nn.ReLU(inplace=False)]
                in_ch = int(item)
        self.features = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in _STAGE_ENDS:
                out.append(x)
        return out


def load_vgg16(path: PathLike, device: Union[str, torch.device] = "cpu") -> VGG16Features:
    """VGG16 features from a torchvision `vgg16` state dict (.pth/.pt or .safetensors), frozen, in eval mode."""
    data = read_state_dict_file(path, "VGG16")
    model = VGG16Features()
    own = model.state_dict()
    # A whole torchvision vgg16 also holds the classifier; only the convolutions matter here.
    given = {k: v for k, v in data.items() if not k.startswith("classifier.")}
    missing = [k for k in own if k not in given]
    unexpected = [k for k in given if k not in own]
    wrong = [f"{k} {tuple(given[k].shape)} (expected {tuple(own[k].shape)})" for k in own
             if k in given and given[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        problems = []
        if missing:
            problems.append(f"missing {', '.join(missing[:4])}" + (" ..." if len(missing) > 4 else ""))
        if unexpected:
            problems.append(f"unexpected {', '.join(unexpected[:4])}" + (" ..." if len(unexpected) > 4 else ""))
        if wrong:
            problems.append("wrong shapes " + ", ".join(wrong[:4]))
        raise CheckpointError(f"{path} is not a torchvision VGG16 state dict ({'; '.join(problems)}). Expected the "
                              "keys features.0.weight ... features.28.bias of torchvision.models.vgg16, e.g. "
                              "torch.save(vgg16(weights=...).state_dict(), 'vgg16.pth').")
    model.load_state_dict({k: given[k].to(torch.float32) for k in own})
    return model.eval().requires_grad_(False).to(device)


def load_lpips_weights(path: PathLike) -> List[torch.Tensor]:
    """LPIPS' per-channel weights for VGG (vgg.pth of the LPIPS release): five tensors [1, C_k, 1, 1]."""
    data = read_state_dict_file(path, "LPIPS weights")
    out = []
    for k, channels in enumerate(LPIPS_CHANNELS):
        key = f"lin{k}.model.1.weight"
        w = data.get(key)
        if w is None or tuple(w.shape) != (1, channels, 1, 1):
            got = "missing" if w is None else f"of shape {tuple(w.shape)}"
            raise CheckpointError(f"{path} is not an LPIPS VGG weights file: {key} is {got}, expected shape "
                                  f"[1, {channels}, 1, 1] (keys lin0.model.1.weight ... lin4.model.1.weight).")
        if not bool(torch.isfinite(w).all()):
            raise CheckpointError(f"{path}: {key} contains NaN or infinite values.")
        out.append(w.detach().to(torch.float32).clone())
    return out


class LpipsDistance(nn.Module):
    """LPIPS-style distance between images in [-1, 1]: forward(a, b [B, 3, H, W]) -> [B], differentiable.

    `lin_weights`: five [1, C_k, 1, 1] tensors (the LPIPS release's); None weighs every channel 1."""

    def __init__(self, vgg: VGG16Features, lin_weights: Optional[List[torch.Tensor]] = None):
        super().__init__()
        self.vgg = vgg.eval().requires_grad_(False)
        self.calibrated = lin_weights is not None
        for k, channels in enumerate(LPIPS_CHANNELS):
            w = lin_weights[k] if lin_weights is not None else torch.ones(1, channels, 1, 1)
            self.register_buffer(f"lin{k}", w.reshape(1, channels, 1, 1).to(torch.float32))
        self.register_buffer("shift", torch.tensor(_LPIPS_SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(_LPIPS_SCALE).view(1, 3, 1, 1))

    def _features(self, x: torch.Tensor) -> List[torch.Tensor]:
        if x.shape[-1] > LPIPS_MAX_SIZE or x.shape[-2] > LPIPS_MAX_SIZE:
            x = F.interpolate(x, size=(LPIPS_MAX_SIZE, LPIPS_MAX_SIZE), mode="area")
        feats = self.vgg((x - self.shift) / self.scale)
        # Unit length over channels; the epsilon keeps all-zero (dead ReLU) vectors finite.
        return [f / (f.square().sum(1, keepdim=True).sqrt() + 1e-10) for f in feats]

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if a.ndim != 4 or a.shape[1] != 3 or a.shape != b.shape:
            raise InputError(f"LPIPS compares two [B, 3, H, W] images of the same shape; got {list(a.shape)} and "
                             f"{list(b.shape)}.")
        total = a.new_zeros(a.shape[0])
        for k, (fa, fb) in enumerate(zip(self._features(a), self._features(b))):
            total = total + ((fa - fb).square() * getattr(self, f"lin{k}")).sum(1).mean((1, 2))
        return total


def load_perceptual(vgg_path: PathLike, lpips_path: Optional[PathLike] = None,
                    device: Union[str, torch.device] = "cpu") -> LpipsDistance:
    """The LPIPS-style distance from a VGG16 state dict and (optionally) the LPIPS lin weights."""
    lin = load_lpips_weights(lpips_path) if lpips_path is not None else None
    return LpipsDistance(load_vgg16(vgg_path), lin).to(device)


def _gaussian_window(size: int, sigma: float, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    x = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-x.square() / (2 * sigma ** 2))
    return g / g.sum()


def ssim(a: torch.Tensor, b: torch.Tensor, *, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Mean SSIM of images in [-1, 1], per image: a, b [B, C, H, W] -> [B] (1 = identical). Differentiable.

    Gaussian-weighted local statistics over the valid region (no padding), constants K1 = 0.01, K2 = 0.03 for
    the data range 1 (images are mapped to [0, 1]). The window shrinks for images smaller than it."""
    if a.ndim != 4 or a.shape != b.shape:
        raise InputError(f"SSIM compares two [B, C, H, W] images of the same shape; got {list(a.shape)} and "
                         f"{list(b.shape)}.")
    size = min(window, a.shape[-1], a.shape[-2])
    x, y = (a + 1) / 2, (b + 1) / 2
    c = x.shape[1]
    g = _gaussian_window(size, sigma, x.device, x.dtype)

    def blur(t: torch.Tensor) -> torch.Tensor:
        t = F.conv2d(t, g.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
        return F.conv2d(t, g.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x.square()
    var_y = blur(y * y) - mu_y.square()
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x.square() + mu_y.square() + c1) * (var_x + var_y + c2))
    return s.mean((1, 2, 3))
